"""Real redis-server vs fakeredis, to show what an in-process fake hides.

fakeredis is a Python emulation running **in this process**: no socket, no
server, no round trip. Its numbers measure Python code, not Redis, so they are
labelled ``server: in-process fakeredis`` and carry no server cost fields.
This benchmark exists so nobody quotes fakeredis timings as Redis timings.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import pytest
import redis

from cachelab.client import ResilientRedis
from cachelab.harness.payloads import value_of_size
from cachelab.patterns.keys import make_key

fakeredis = pytest.importorskip("fakeredis")

KEY = make_key("bench", "fake", "k")
VALUE = value_of_size(1_000)
FAKE_LABEL = {
    "server": "in-process fakeredis (Python emulation, no network, not a Redis server)",
    "redis_target": "in-process",
    "redis_version": f"fakeredis {version('fakeredis')}",
}
REAL_LABEL = {"server": "redis-server over loopback TCP"}


def _op(client: Any, command: str) -> Any:
    return (lambda: client.get(KEY)) if command == "get" else (lambda: client.set(KEY, VALUE))


@pytest.mark.parametrize("command", ["get", "set"])
def test_sync_real(command: str, bench_sync: Any, bench_sync_redis: redis.Redis):
    bench_sync_redis.set(KEY, VALUE)
    bench_sync(_op(bench_sync_redis, command), group=f"fakeredis-{command}", extra=REAL_LABEL)


@pytest.mark.parametrize("command", ["get", "set"])
def test_sync_fakeredis(command: str, bench_sync: Any):
    fake = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    fake.set(KEY, VALUE)
    bench_sync(_op(fake, command), group=f"fakeredis-{command}", extra=FAKE_LABEL, cost=False)


@pytest.mark.parametrize("command", ["get", "set"])
def test_async_real(command: str, bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    arun(bench_rredis.client.set(KEY, VALUE))
    bench_async(_op(bench_rredis.client, command), group=f"fakeredis-{command}", extra=REAL_LABEL)


@pytest.mark.parametrize("command", ["get", "set"])
def test_async_fakeredis(command: str, bench_async: Any, arun: Any):
    fake = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    arun(fake.set(KEY, VALUE))
    try:
        bench_async(_op(fake, command), group=f"fakeredis-{command}", extra=FAKE_LABEL, cost=False)
    finally:
        arun(fake.aclose())
