"""`cachelab serve` as a new user runs it: nothing configured, then Ctrl-C / SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from cachelab.harness import free_port

pytestmark = pytest.mark.slow


def test_serve_launches_redis_and_sqlite_then_stops_everything_it_started(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
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
        launched = proc.stdout.readline()
        assert launched.startswith("launched redis-server redis://127.0.0.1:"), launched
        redis_port = int(launched.split("redis://127.0.0.1:")[1].split("/")[0])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        tenants = httpx.get(f"http://127.0.0.1:{port}/api/tenants", timeout=5)
        assert tenants.status_code == 200 and len(tenants.json()) == 1
        assert (tmp_path / "cachelab.db").exists()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", redis_port)) != 0, "the launched redis-server outlived serve"
