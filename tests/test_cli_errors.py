"""A new user's first mistakes end in one line on stderr, not a traceback.

Each case runs the real command in an empty folder, in a session of its own,
and checks the same four things: a non-zero exit, exactly one line on stderr,
nothing written to the folder, and no process of that session still running
(no launched redis-server, uvicorn or job worker left behind).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest

from cachelab.servers import free_port

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

SEED_SMALL = ("--tenants", "1", "--initiatives-per-tenant", "20")


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    survivors: list[int]


def _session_members(sid: int) -> list[int]:
    """PIDs of live processes in session ``sid`` (field 6 of /proc/<pid>/stat)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _readline(stream: IO[str], within: float) -> str:
    """The next line of a child's output, or "" if none comes (a regression must not hang the suite)."""
    ready, _, _ = select.select([stream], [], [], within)
    return stream.readline() if ready else ""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CACHELAB_") and k not in ("REDIS_URL", "QUEUE_REDIS_URL", "DATABASE_URL")}
    env.update(extra)
    return env


def run_cli(cwd: Path, *args: str, **env: str) -> Outcome:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cachelab", *args], cwd=cwd, env=_clean_env(**env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    survivors = _session_members(proc.pid)
    for pid in survivors:  # a failing test must not leak them either
        os.kill(pid, signal.SIGKILL)
    return Outcome(proc.returncode, stdout, stderr, survivors)


def assert_one_line_failure(out: Outcome, folder: Path, *expected: str) -> str:
    assert out.code != 0
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert list(folder.iterdir()) == [], "the failed command wrote files"
    assert out.survivors == [], "the failed command left processes running"
    return lines[0]


def test_seed_db_with_an_uncreatable_sqlite_path_is_one_line(tmp_path):
    out = run_cli(tmp_path, "seed-db", *SEED_SMALL, DATABASE_URL="sqlite:////nonexistent/dir/x.db")
    assert_one_line_failure(out, tmp_path, "cachelab seed-db:", "sqlite:////nonexistent/dir/x.db",
                            "no such directory: /nonexistent/dir")
    assert out.stdout == ""


def test_serve_with_an_uncreatable_sqlite_path_fails_before_launching_anything(tmp_path):
    out = run_cli(tmp_path, "serve", "--port", str(free_port()), *SEED_SMALL,
                  DATABASE_URL="sqlite:////nonexistent/dir/x.db")
    assert_one_line_failure(out, tmp_path, "cachelab serve:", "/nonexistent/dir/x.db")
    assert "launched" not in out.stdout and "API on" not in out.stdout


def test_serve_on_a_taken_port_fails_before_launching_anything(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_cli(tmp_path, "serve", "--port", str(port), *SEED_SMALL)
    assert_one_line_failure(out, tmp_path, "cachelab serve:", f"127.0.0.1:{port}", "in use")
    assert out.stdout == ""  # no "API on http://…", no "launched redis-server"


def test_a_bad_setting_stops_serve_with_the_variable_on_one_line(tmp_path):
    out = run_cli(tmp_path, "serve", "--port", str(free_port()), CACHELAB_KPI_TTL="-1")
    assert_one_line_failure(out, tmp_path, "CACHELAB_KPI_TTL='-1'")


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "redis+cluster://127.0.0.1:1"])
def test_inspect_of_an_unreachable_redis_is_one_line(tmp_path, url):
    out = run_cli(tmp_path, "inspect", "--url", url)
    assert_one_line_failure(out, tmp_path, "cachelab inspect:", url, "refused")
    assert out.stdout == ""


def test_inspect_with_a_url_that_is_not_redis_is_one_line_without_the_password(tmp_path):
    out = run_cli(tmp_path, "inspect", "--url", "http://admin:hunter2@127.0.0.1:1/0")
    line = assert_one_line_failure(out, tmp_path, "cachelab inspect:", "--url", "redis://")
    assert "hunter2" not in line


def test_serve_with_an_unreachable_redis_url_warns_in_one_line_and_starts_degraded(tmp_path):
    """Starting degraded is by design (reads fall back to the database); starting silently is not."""
    port, dead_redis = free_port(), f"redis://127.0.0.1:{free_port()}/0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cachelab", "serve", "--port", str(port), "--job-workers", "0", *SEED_SMALL],
        # Its own state folder: the seed password it generates must not land in the user's ~/.local/state.
        cwd=tmp_path, env=_clean_env(REDIS_URL=dead_redis, XDG_STATE_HOME=str(tmp_path / "state")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        warning = _readline(proc.stderr, within=60)
        assert warning.startswith("cachelab serve: warning: Redis unreachable")
        assert dead_redis in warning and "degraded" in warning
        health = None
        deadline = time.monotonic() + 60
        while health is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
            except httpx.HTTPError:
                time.sleep(0.2)
        assert health is not None and health.json()["status"] == "degraded"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert _session_members(proc.pid) == []
