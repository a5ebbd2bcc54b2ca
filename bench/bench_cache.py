"""Cache-aside and friends per operation, each beside the seed's version where one exists.

Groups (read every row as a ratio to the ``baseline`` PING of the same run):

* ``cache-hit`` — :meth:`Cache.fetch` on a fresh entry (one ``MGET`` of value
  and generation), :meth:`Cache.get`, a hit with one tag (the tag's generation
  rides in the same ``MGET``), a hit with XFetch on, the stale-while-revalidate
  path (value past its soft TTL, its refresh already in flight), a
  :class:`DailyAggregate` hit, and the seed's ``naive_cache_aside`` on the same
  value — plus the seed on a cached ``0``, which it takes for a miss every time.
* ``cache-miss`` — a fresh key per operation: ours (``MGET`` + fill
  ``EVALSHA``), ours with the cross-process lock (+ ``SET NX`` + release), ours
  as invalidate-then-fetch, and the seed's ``GET`` + ``SET``.
* ``refresh-ahead`` — a read inside the refresh window: ours is one round trip
  and at most one refresh per key; the seed's is ``GET`` + ``TTL`` and starts a
  refresh per reader (``refreshes_started_per_op``).
* ``cache-write`` — ``set``, ``write_through`` (version-guarded, one ``EVALSHA``),
  ``invalidate`` (generation bump + ``UNLINK``).
* ``cache-bulk`` — ``get_many`` of 100 keys and ``warm`` of 100 entries, per call.
* ``cache-keys`` — building keys (no Redis): ``request_key``, ``make_key``.
* ``health`` — the health probe behind the app's health endpoint and hit-ratio
  metrics: ``PING`` + one pipelined batch of five ``INFO`` sections.

Loaders return a constant, so miss rows measure the pattern's own cost, not a
database's. Refresh loaders used on the refresh paths wait on an event that is
set only after timing, so every timed read sees the same state: a refresh in
flight, which is what readers see while a real one runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from cachelab.client import ResilientRedis
from cachelab.harness.payloads import dashboard
from cachelab.patterns.aggregation import DailyAggregate
from cachelab.patterns.cache import Cache, CachePolicy, CacheStatus
from cachelab.patterns.envelope import MISSING
from cachelab.patterns.health import redis_health
from cachelab.patterns.keys import make_key, request_key
from cachelab.patterns.naive import naive_cache_aside, naive_refresh_ahead

#: A tenant's KPI block (~430 bytes of JSON): what the dashboard caches most.
KPI = dashboard(20, tenant_id="acme")["kpis"]
TENANT = "acme"


async def load_kpi() -> dict[str, Any]:
    return KPI


class Gate:
    """A loader that blocks until released: keeps one refresh in flight while we time readers."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        await self.event.wait()
        return KPI


@pytest.fixture
def gate(bench_rredis: ResilientRedis, arun: Any) -> Iterator[Gate]:
    """Release the blocked refresh after the benchmark and let it finish (fill, lock release)."""
    g = Gate()
    yield g
    g.event.set()
    arun(bench_rredis.background.drain(timeout=5.0))


def fresh_keys(cache: Cache, name: str) -> Callable[[], str]:
    counter = itertools.count()
    return lambda: cache.key(TENANT, name, next(counter))


def settle(arun: Any) -> None:
    """Let background work started by a setup call reach its first wait before timing."""
    arun(asyncio.sleep(0.05))


# -- cache-hit -------------------------------------------------------------------------


def test_fetch_hit(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    cache = Cache(bench_rredis, "kpi")
    key = cache.key(TENANT, "kpis")
    assert arun(cache.fetch(key, load_kpi)).status is CacheStatus.MISS
    assert arun(cache.fetch(key, load_kpi)).status is CacheStatus.HIT
    bench_async(
        lambda: cache.fetch(key, load_kpi), group="cache-hit", memory_key=key, extra={"variant": "ours"}
    )


def test_get_hit(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    """``Cache.get``: the same ``MGET`` without the fetch bookkeeping."""
    cache = Cache(bench_rredis, "kpi")
    key = cache.key(TENANT, "kpis")
    arun(cache.set(key, KPI))
    assert arun(cache.get(key)) == KPI
    bench_async(lambda: cache.get(key), group="cache-hit", extra={"variant": "ours"})


def test_fetch_hit_with_tag(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    """Tag-invalidatable entry: the tag's generation is one more key in the same ``MGET``."""
    cache = Cache(bench_rredis, "kpi")
    key = cache.key(TENANT, "kpis")
    tags = ("initiatives",)
    arun(cache.fetch(key, load_kpi, tags=tags))
    assert arun(cache.fetch(key, load_kpi, tags=tags)).status is CacheStatus.HIT
    bench_async(
        lambda: cache.fetch(key, load_kpi, tags=tags),
        group="cache-hit",
        memory_key=key,
        extra={"variant": "ours", "tags": 1},
    )


def test_fetch_hit_xfetch(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    """XFetch on (beta 1, entry computed in ~5 ms, 300 s left): the early-refresh draw on every hit."""
    cache = Cache(bench_rredis, "kpi", CachePolicy(ttl=300, xfetch_beta=1.0))
    key = cache.key(TENANT, "kpis")

    async def slow_loader() -> dict[str, Any]:
        await asyncio.sleep(0.005)
        return KPI

    arun(cache.fetch(key, slow_loader))
    assert arun(cache.fetch(key, slow_loader)).status is CacheStatus.HIT
    info = bench_async(
        lambda: cache.fetch(key, slow_loader),
        group="cache-hit",
        extra={"variant": "ours", "xfetch_beta": 1.0},
    )
    info["early_refreshes"] = cache.stats.early_refreshes


def test_fetch_stale_while_revalidate(bench_async: Any, bench_rredis: ResilientRedis, arun: Any, gate: Gate):
    """Past the soft TTL: serve the stale value at once; the one refresh is already running."""
    cache = Cache(bench_rredis, "kpi", CachePolicy(ttl=300, soft_ttl=0.001, jitter=0.0))
    key = cache.key(TENANT, "kpis")
    arun(cache.set(key, KPI))
    arun(asyncio.sleep(0.01))
    assert arun(cache.fetch(key, gate)).status is CacheStatus.STALE  # starts the (blocked) refresh
    settle(arun)
    info = bench_async(lambda: cache.fetch(key, gate), group="cache-hit", extra={"variant": "ours"})
    info["refreshes_started"] = gate.calls
    assert gate.calls == 1


def test_daily_aggregate_hit(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    """Today's aggregate: the key carries the date, the TTL ends with the day."""
    daily = DailyAggregate(Cache(bench_rredis, "stats"))
    # Noon today: keeps the row away from a midnight rollover while it runs.
    noon = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    _, day = arun(daily.fetch(TENANT, "daily-kpis", load_kpi, now=noon))
    assert arun(daily.fetch(TENANT, "daily-kpis", load_kpi, now=noon))[0].status is CacheStatus.HIT
    bench_async(
        lambda: daily.fetch(TENANT, "daily-kpis", load_kpi, now=noon),
        group="cache-hit",
        memory_key=daily.key(TENANT, "daily-kpis", day),
        extra={"variant": "ours"},
    )


def test_naive_cache_aside_hit(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    """The seed: ``GET`` + ``json.loads``; no envelope, no generation."""
    client = bench_rredis.client
    key = make_key("naive", TENANT, "kpis")
    arun(naive_cache_aside(client, key, load_kpi))
    bench_async(
        lambda: naive_cache_aside(client, key, load_kpi),
        group="cache-hit",
        memory_key=key,
        extra={"variant": "naive"},
    )


def test_naive_cache_aside_falsy_value(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    """The seed on a cached ``0``: ``if (cached)`` says miss, so every read reloads and rewrites."""
    client = bench_rredis.client
    key = make_key("naive", TENANT, "open-incidents")
    calls = {"loads": 0, "reads": 0}

    async def load_zero() -> int:
        calls["loads"] += 1
        return 0

    def read() -> Awaitable[Any]:
        calls["reads"] += 1
        return naive_cache_aside(client, key, load_zero)

    info = bench_async(read, group="cache-hit", extra={"variant": "naive", "value": 0})
    info["loader_calls_per_op"] = calls["loads"] / calls["reads"]
    assert calls["loads"] == calls["reads"]


# -- cache-miss ------------------------------------------------------------------------


def test_fetch_miss_fresh_key(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    cache = Cache(bench_rredis, "kpi")
    next_key = fresh_keys(cache, "miss")
    assert arun(cache.fetch(next_key(), load_kpi)).status is CacheStatus.MISS
    bench_async(lambda: cache.fetch(next_key(), load_kpi), group="cache-miss", extra={"variant": "ours"})


def test_fetch_miss_after_invalidate(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    """One op = ``invalidate`` then ``fetch`` of the same key: what a write followed by a read costs."""
    cache = Cache(bench_rredis, "kpi")
    key = cache.key(TENANT, "kpis")

    async def invalidate_then_fetch() -> None:
        await cache.invalidate(key)
        result = await cache.fetch(key, load_kpi)
        assert result.status is CacheStatus.MISS

    arun(invalidate_then_fetch())
    bench_async(invalidate_then_fetch, group="cache-miss", extra={"variant": "ours"})


def test_fetch_miss_with_lock(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    """``lock=True``: a ``SET NX`` lease elects one loader across processes; released by ``EVALSHA``."""
    cache = Cache(bench_rredis, "kpi", CachePolicy(lock=True))
    next_key = fresh_keys(cache, "locked")
    assert arun(cache.fetch(next_key(), load_kpi)).status is CacheStatus.MISS
    bench_async(
        lambda: cache.fetch(next_key(), load_kpi), group="cache-miss", extra={"variant": "ours", "lock": True}
    )


def test_naive_cache_aside_miss(bench_async: Any, bench_rredis: ResilientRedis):
    client = bench_rredis.client
    counter = itertools.count()
    bench_async(
        lambda: naive_cache_aside(client, make_key("naive", TENANT, "miss", next(counter)), load_kpi),
        group="cache-miss",
        extra={"variant": "naive"},
    )


# -- refresh-ahead ---------------------------------------------------------------------


def test_refresh_ahead(bench_async: Any, bench_rredis: ResilientRedis, arun: Any, gate: Gate):
    """Inside the refresh window: one ``MGET``; the refresh was elected once (``SET NX``) and runs."""
    cache = Cache(bench_rredis, "kpi", CachePolicy(ttl=60, jitter=0.0, refresh_ahead=0.9999))
    key = cache.key(TENANT, "kpis")
    arun(cache.set(key, KPI))
    arun(asyncio.sleep(0.01))  # 10 ms into a 60 s life: inside the last 99.99 %
    assert arun(cache.fetch(key, gate)).status is CacheStatus.HIT
    settle(arun)
    info = bench_async(lambda: cache.fetch(key, gate), group="refresh-ahead", extra={"variant": "ours"})
    info["refreshes_started_per_op"] = 0.0
    info["refreshes_started"] = gate.calls
    assert gate.calls == 1 and cache.stats.early_refreshes > 1


def test_naive_refresh_ahead(bench_async: Any, bench_rredis: ResilientRedis, bench_admin: Any):
    """The seed: ``GET`` then ``TTL``; below 20 % of the TTL every reader spawns its own refresh.

    The refresh here only counts itself (no Redis work), so the row shows the
    reader's two round trips; ``refreshes_started_per_op`` shows the fan-out.
    """
    client = bench_rredis.client
    key = make_key("naive", TENANT, "kpis")
    bench_admin.set(key, json.dumps(KPI), ex=30)  # 30 s left of a 300 s TTL: inside the window
    started = 0
    reads = 0

    async def refresh() -> None:
        nonlocal started
        started += 1

    def read() -> Awaitable[Any]:
        nonlocal reads
        reads += 1
        return naive_refresh_ahead(client, key, 300, refresh)

    info = bench_async(read, group="refresh-ahead", extra={"variant": "naive"})
    info["refreshes_started_per_op"] = started / max(reads, 1)


# -- cache-write -----------------------------------------------------------------------


def test_set(bench_async: Any, bench_rredis: ResilientRedis):
    cache = Cache(bench_rredis, "kpi")
    key = cache.key(TENANT, "kpis")
    bench_async(lambda: cache.set(key, KPI), group="cache-write", memory_key=key, extra={"variant": "ours"})


def test_write_through(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    """After a commit: store unless a newer version is cached (each op a newer version: stored)."""
    cache = Cache(bench_rredis, "kpi")
    key = cache.key(TENANT, "kpis")
    versions = itertools.count(1)
    assert arun(cache.write_through(key, KPI, next(versions)))
    bench_async(
        lambda: cache.write_through(key, KPI, next(versions)),
        group="cache-write",
        memory_key=key,
        extra={"variant": "ours"},
    )


def test_invalidate(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    """Generation ``INCR`` + ``PEXPIRE`` + ``UNLINK`` in one script (the entry is gone after the first)."""
    cache = Cache(bench_rredis, "kpi")
    key = cache.key(TENANT, "kpis")
    arun(cache.set(key, KPI))
    bench_async(lambda: cache.invalidate(key), group="cache-write", extra={"variant": "ours"})


# -- cache-bulk ------------------------------------------------------------------------

BULK = 100


def test_get_many_100(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    cache = Cache(bench_rredis, "kpi")
    keys = [cache.key(TENANT, "item", i) for i in range(BULK)]
    assert arun(cache.warm({k: KPI for k in keys})) == BULK
    assert MISSING not in arun(cache.get_many(keys))
    extra = {"variant": "ours", "keys_per_call": BULK}
    bench_async(lambda: cache.get_many(keys), group="cache-bulk", ops=50, extra=extra)


def test_warm_100(bench_async: Any, bench_rredis: ResilientRedis):
    cache = Cache(bench_rredis, "kpi")
    items = {cache.key(TENANT, "item", i): KPI for i in range(BULK)}
    extra = {"variant": "ours", "keys_per_call": BULK}
    bench_async(lambda: cache.warm(items), group="cache-bulk", ops=20, extra=extra)


# -- cache-keys (CPU only; the cost pass records zero round trips) ---------------------

QUERY = {"status": ["at_risk", "in_progress"], "area": "Engineering", "page": 2, "sort": "-updated_at"}


def test_request_key(bench_sync: Any):
    bench_sync(lambda: request_key("cl", TENANT, "/api/initiatives", QUERY), group="cache-keys")


def test_make_key(bench_sync: Any):
    bench_sync(lambda: make_key("cl", "tenant:*{evil}", "kpi", "2024-12-31"), group="cache-keys")


# -- health ----------------------------------------------------------------------------


def test_redis_health(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    assert arun(redis_health(bench_rredis))["status"] == "ok"
    bench_async(lambda: redis_health(bench_rredis), group="health", ops=50,
                extra={"bytes_vary": "INFO's reply grows with the server's counters"})  # fmt: skip
