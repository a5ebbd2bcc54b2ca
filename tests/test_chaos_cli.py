"""cachelab chaos: a scheduled fault proxy in front of a Redis we must not touch."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import redis

from cachelab.harness.faults import parse_fault


def test_fault_specs_parse_and_bad_ones_say_why():
    spec = parse_fault("slow@2.5+10:rtt=0.02")
    assert (spec.kind, spec.start, spec.duration, spec.rtt) == ("slow", 2.5, 10.0, 0.02)
    with pytest.raises(ValueError, match="kind@start"):
        parse_fault("slow for a while")
    with pytest.raises(ValueError, match="unknown fault"):
        parse_fault("meteor@1+1")


def test_chaos_proxy_applies_its_schedule_then_exits(redis_url, redis_admin):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cachelab",
            "chaos",
            "proxy",
            "--target",
            redis_url,
            "--fault",
            "slow@0+3:rtt=0.1",
            "--duration",
            "4",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("proxy: redis://127.0.0.1:")
        client = redis.Redis.from_url(line.split()[1], socket_timeout=5)
        time.sleep(0.2)
        started = time.perf_counter()
        client.set("through-the-proxy", "1")
        assert time.perf_counter() - started >= 0.1
        assert redis_admin.get("through-the-proxy") == b"1"
        client.close()
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_chaos_proxy_refuses_process_faults():
    code = subprocess.call(
        [
            sys.executable,
            "-m",
            "cachelab",
            "chaos",
            "proxy",
            "--target",
            "redis://127.0.0.1:1/0",
            "--fault",
            "kill@0+1",
        ],
        stderr=subprocess.DEVNULL,
    )
    assert code == 2
