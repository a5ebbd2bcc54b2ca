"""The near cache (:mod:`cachelab.patterns.near_cache`) against one round trip.

Groups (read the rows of a group as ratios to each other: they run side by side in one session):

* ``near-cache-read`` — one KPI entry (~480 bytes) read three ways: from the in-process L1
  (:class:`NearCache` ``fetch``, ``HIT-L1``: no round trip, the bytes decoded per hit), from Redis
  (:class:`Cache` ``fetch``, ``HIT``: one ``MGET`` of value and generation), and a raw ``GET`` of
  the same bytes on the same pool (no decoding). ``round_trips_per_op`` shows 0, 1, 1.
* ``near-cache-invalidation`` — a write by another client, until this process has dropped its L1
  entry, then the refill (a Redis hit, kept): the cost of one invalidation cycle.
  Its ``extra_info`` carries the **invalidation latency across processes** as a distribution: a
  writer *process* stamps ``time.monotonic()`` before and after its ``SET``; this process stamps
  the moment it handles the invalidation (``CLOCK_MONOTONIC`` is one clock for every process on
  Linux). ``invalidation_us_p50``/``p90``/``p99``/``max`` are from before the write was sent;
  ``after_ack_us_*`` from when the writer had its acknowledgement (negative: handled before the
  writer even saw its reply) — the window in which another process may still serve the old value.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cachelab.client import ResilientRedis
from cachelab.harness.payloads import dashboard
from cachelab.patterns.cache import Cache, CachePolicy, CacheStatus
from cachelab.patterns.near_cache import NearCache, NearCacheStore
from cachelab.servers.children import spawn

KPI = dashboard(20, tenant_id="acme")["kpis"]
POLICY = CachePolicy(ttl=3600, jitter=0)

WRITER = """
import sys, time, redis
client = redis.Redis.from_url(sys.argv[1])
key, payload = sys.argv[2], bytes.fromhex(sys.argv[3])
client.ping()
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() != "write":
        break
    t0 = time.monotonic()
    client.set(key, payload)
    t1 = time.monotonic()
    print(f"{t0!r} {t1!r}", flush=True)
"""


async def load_kpi() -> dict[str, Any]:
    return KPI


@pytest.fixture
def store(bench_rredis: ResilientRedis, arun: Any) -> Iterator[NearCacheStore]:
    s = NearCacheStore(bench_rredis, max_age=3600)
    assert arun(s.start(wait=5.0)), "tracking not established"
    yield s
    arun(s.aclose())


async def kept(near: NearCache, key: str) -> None:
    """Fetch until the entry is served from the L1 (a fill's own invalidation may cost one more read)."""
    for _ in range(20):
        if (await near.fetch(key, load_kpi)).status is CacheStatus.HIT_L1:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the entry was never kept in the L1")


def test_near_cache_l1_hit(bench_async, bench_rredis, store, arun):
    near = NearCache(bench_rredis, "kpi", POLICY, store=store)
    key = near.key("acme", "kpis")
    arun(near.fetch(key, load_kpi))
    arun(kept(near, key))
    info = bench_async(lambda: near.fetch(key, load_kpi), group="near-cache-read", ops=2000)
    assert info["round_trips_per_op"] == 0
    assert arun(near.fetch(key, load_kpi)).status is CacheStatus.HIT_L1


def test_near_cache_redis_hit(bench_async, bench_rredis, arun):
    cache = Cache(bench_rredis, "kpi", POLICY)
    key = cache.key("acme", "kpis")
    arun(cache.fetch(key, load_kpi))
    assert arun(cache.fetch(key, load_kpi)).status is CacheStatus.HIT
    info = bench_async(lambda: cache.fetch(key, load_kpi), group="near-cache-read", ops=500)
    assert info["round_trips_per_op"] == pytest.approx(1)


def test_near_cache_raw_get(bench_async, bench_rredis, bench_admin, arun):
    cache = Cache(bench_rredis, "kpi", POLICY)
    key = cache.key("acme", "kpis")
    arun(cache.fetch(key, load_kpi))
    raw = bench_admin.get(key)
    bench_admin.set("raw:kpi", raw)
    client = bench_rredis.client
    bench_async(lambda: client.get("raw:kpi"), group="near-cache-read", ops=500)


def _percentiles(values: list[float], prefix: str) -> dict[str, float]:
    ordered = sorted(values)
    out = {}
    for q in (50, 90, 99):
        out[f"{prefix}_p{q}"] = round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 1)
    out[f"{prefix}_max"] = round(ordered[-1], 1)
    return out


async def cross_process_latency(
    near: NearCache, store: NearCacheStore, key: str, url: str, payload: bytes, samples: int, seconds: float
) -> dict[str, Any]:
    """Invalidation latency, writer in another process: µs from its write (and from its ack) to ours."""
    proc = spawn([sys.executable, "-c", WRITER, url, key, payload.hex()],
                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    from_write: list[float] = []
    from_ack: list[float] = []
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + seconds
        loop = asyncio.get_running_loop()
        while len(from_write) < samples and time.monotonic() < deadline:
            await kept(near, key)
            handled: asyncio.Future[float] = loop.create_future()

            def on_invalidate(k: str, handled: asyncio.Future[float] = handled) -> None:
                if k == key and not handled.done():
                    handled.set_result(time.monotonic())

            store.on_invalidate = on_invalidate
            proc.stdin.write("write\n")
            proc.stdin.flush()
            at = await asyncio.wait_for(handled, 5.0)
            sent, acked = (float(x) for x in proc.stdout.readline().split())
            from_write.append((at - sent) * 1e6)
            from_ack.append((at - acked) * 1e6)
    finally:
        store.on_invalidate = None
        proc.stdin.write("stop\n")
        proc.stdin.close()
        proc.wait(timeout=10)
        proc.stdout.close()
    return {
        "invalidation_samples": len(from_write),
        **_percentiles(from_write, "invalidation_us"),
        **_percentiles(from_ack, "after_ack_us"),
    }


def test_near_cache_invalidation_cycle(bench_async, bench_rredis, store, make_async_client, redis_url, arun,
                                       benchmark):
    near = NearCache(bench_rredis, "kpi", POLICY, store=store)
    key = near.key("acme", "kpis")
    arun(near.fetch(key, load_kpi))
    arun(kept(near, key))
    payload = arun(bench_rredis.client.get(key))
    samples = 20 if benchmark.disabled else 400
    latency = arun(cross_process_latency(near, store, key, redis_url, payload, samples, seconds=8.0))
    arun(kept(near, key))  # read (so tracked) again after the last sample's invalidation

    other = Cache(ResilientRedis(make_async_client(), round_trips=bench_rredis.round_trips), "kpi", POLICY)
    versions = itertools.count(1)

    async def write_elsewhere_then_refill() -> None:
        dropped = asyncio.Event()
        store.on_invalidate = lambda k: dropped.set() if k == key else None
        await other.write_through(key, KPI, version=next(versions))
        await asyncio.wait_for(dropped.wait(), 5.0)
        await near.fetch(key, load_kpi)  # a Redis hit, kept again (and the key tracked again)

    try:
        bench_async(write_elsewhere_then_refill, group="near-cache-invalidation", ops=100, extra=latency)
    finally:
        store.on_invalidate = None
    assert latency["invalidation_samples"] >= 10
