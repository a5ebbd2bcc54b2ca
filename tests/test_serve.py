"""`cachelab serve` as a new user runs it: nothing configured, then Ctrl-C / SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from cachelab.servers import free_port

pytestmark = pytest.mark.slow


def _env(tmp_path) -> dict[str, str]:
    """Nothing configured, and the generated seed password kept under tmp_path, not in $HOME."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "DATABASE_URL") and not k.startswith("CACHELAB_SEED_PASSWORD")
    }
    return {**env, "XDG_STATE_HOME": str(tmp_path / "state")}


def test_serve_launches_redis_and_sqlite_then_stops_everything_it_started(tmp_path):
    port = free_port()
    env = _env(tmp_path)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cachelab",
            "serve",
            "--port",
            str(port),
            "--tenants",
            "1",
            "--initiatives-per-tenant",
            "50",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        seeded = proc.stdout.readline()  # the database first: a bad path fails before any launch
        assert seeded.startswith("database sqlite:///") and "1 tenants" in seeded, seeded
        password = proc.stdout.readline()
        assert password.startswith("seed password"), password
        launched = proc.stdout.readline()
        assert re.match(r"launched (redis|valkey)-server redis://127\.0\.0\.1:", launched), launched
        redis_port = int(launched.split("redis://127.0.0.1:")[1].split("/")[0])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/api/tenants", timeout=5).status_code == 401
        # The password was generated (never a fixed one) into a private file, where Locust finds it.
        password = (tmp_path / "state" / "cachelab" / "seed-password").read_text().strip()
        with httpx.Client(base_url=base, timeout=10) as http:
            login = http.post("/api/login", json={"email": "user1@acme-01.example", "password": password})
            assert login.status_code == 200
            tenants = http.get("/api/tenants")
        assert tenants.status_code == 200 and [t["id"] for t in tenants.json()] == ["acme-01"]
        assert (tmp_path / "cachelab.db").exists()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", redis_port)) != 0, "the launched redis-server outlived serve"


def test_serve_on_a_reachable_address_without_a_seed_password_refuses_to_start(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cachelab", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "CACHELAB_SEED_PASSWORD" in proc.stderr
    assert not (tmp_path / "cachelab.db").exists() and not (tmp_path / "state").exists()
