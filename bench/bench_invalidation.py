"""Invalidation: the seed's KEYS and SMEMBERS+DEL beside SCAN+UNLINK and generation bumps.

* ``invalidate-pattern`` — one tenant's 100 keys among 10 000: the seed's
  ``KEYS`` + ``DEL`` (one command that walks the whole keyspace while every
  other client waits) against :func:`invalidate_scope` (``SCAN`` pages of 500
  + ``UNLINK``, ~21 round trips, each page a short stop).
  ``server_usec_per_call_by_command`` shows the longest single stop: the
  ``KEYS`` call versus one ``SCAN`` page.
* ``invalidate-tag`` — 100 entries carrying one tag: the seed's ``SMEMBERS`` +
  ``DEL`` of every member + ``DEL`` of the set, against
  :meth:`Cache.invalidate_tag` (one ``INCR`` of the tag's generation; the
  entries become misses on their next read, which already fetches that
  generation in its ``MGET``).

These operations destroy what they measure, so each row times one operation
per round and restores the 100 victims before every round, untimed
(pytest-benchmark's ``setup``). That costs one ``run_until_complete`` per
operation (~9 µs, see the ``harness`` group) on both sides of each group. The
cost pass measures a few operations one at a time, each right after its
restore, so the restore's own commands are never counted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import fields
from typing import Any

import orjson
import pytest
import redis

from cachelab.client import ResilientRedis
from cachelab.harness.bench import AsyncBench, cost_info, measure_cost
from cachelab.harness.cost import Cost
from cachelab.harness.payloads import dashboard
from cachelab.patterns.cache import Cache, CacheStatus
from cachelab.patterns.invalidation import invalidate_scope
from cachelab.patterns.keys import make_key
from cachelab.patterns.naive import naive_invalidate_pattern, naive_invalidate_tag, naive_tag

KPI = dashboard(20, tenant_id="acme")["kpis"]
TENANT = "acme"
OTHER_TENANTS = 99
KEYS_PER_TENANT = 100  # 99 other tenants + acme = 10 000 keys, 100 of them acme's
TAGGED = 100
TAG = "initiatives"
COST_OPS = 5
MAX_ROUNDS = 200


def _add(total: Cost, part: Cost) -> Cost:
    """Sum two measured blocks (counts and dicts add up field by field)."""
    merged = Cost()
    for f in fields(Cost):
        a, b = getattr(total, f.name), getattr(part, f.name)
        if isinstance(a, dict):
            setattr(merged, f.name, {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()})
        else:
            setattr(merged, f.name, a + b)
    return merged


def bench_with_restore(
    benchmark: Any,
    harness: AsyncBench,
    op: Callable[[], Awaitable[Any]],
    restore: Callable[[], None],
    *,
    group: str,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Like ``bench_async`` for an operation that consumes its own input: ``restore()`` between ops."""
    assert harness.meter is not None and harness.target is not None
    loop = harness.loop

    def run() -> None:
        loop.run_until_complete(op())

    benchmark.group = group
    info = benchmark.extra_info
    info.update({"ops_per_round": 1, "calls_per_round": 1, "batch": 1})
    info.update({"redis_version": harness.target.version, "redis_target": harness.target.address})
    restore()
    run()  # warm: connections, script cache
    total = Cost()
    for _ in range(COST_OPS):
        restore()
        total = _add(total, measure_cost(harness.meter, run))
    info.update(cost_info(total, COST_OPS))
    info["server_usec_per_call_by_command"] = {
        name: total.server_usec_by_command[name] / calls for name, calls in sorted(total.commands.items())
    }
    info["timing"] = "one op per round, victims restored untimed before each round"
    info.update(extra)
    if benchmark.disabled:
        benchmark.pedantic(run, setup=restore, rounds=1, iterations=1)
        info["time_unit"] = "not measured"
        return info
    restore()
    started = time.perf_counter()
    run()
    once = time.perf_counter() - started
    max_time = float(getattr(benchmark, "_max_time", 0.3))
    min_rounds = int(getattr(benchmark, "_min_rounds", 5))
    rounds = max(min_rounds, min(MAX_ROUNDS, math.ceil(max_time / max(once, 1e-6))))
    benchmark.pedantic(run, setup=restore, rounds=rounds, iterations=1, warmup_rounds=1)
    info["time_unit"] = "op"
    return info


# -- invalidate-pattern ----------------------------------------------------------------


def _tenant_keys(tenant: str) -> list[str]:
    return [make_key("cl", tenant, "kpi", i) for i in range(KEYS_PER_TENANT)]


@pytest.fixture
def keyspace(bench_admin: redis.Redis) -> Callable[[], None]:
    """10 000 small entries, 100 tenants × 100; returns the restore of acme's 100."""
    value = orjson.dumps(KPI)
    pipe = bench_admin.pipeline(transaction=False)
    for t in range(OTHER_TENANTS):
        for key in _tenant_keys(f"t{t:03d}"):
            pipe.set(key, value)
    pipe.execute()
    victims = dict.fromkeys(_tenant_keys(TENANT), value)

    def restore() -> None:
        bench_admin.mset(victims)

    restore()
    assert bench_admin.dbsize() == (OTHER_TENANTS + 1) * KEYS_PER_TENANT
    return restore


def test_naive_keys_invalidation(
    benchmark: Any, async_bench: AsyncBench, bench_rredis: ResilientRedis, keyspace: Callable[[], None]
):
    client = bench_rredis.client
    pattern = f"cl:{{{TENANT}}}:*"  # the seed's raw pattern (braces are not glob characters)
    assert async_bench.run(naive_invalidate_pattern(client, pattern)) == KEYS_PER_TENANT
    bench_with_restore(
        benchmark,
        async_bench,
        lambda: naive_invalidate_pattern(client, pattern),
        keyspace,
        group="invalidate-pattern",
        extra={"variant": "naive", "keyspace": 10_000, "matching": KEYS_PER_TENANT},
    )


@pytest.mark.parametrize("batch", [500, 2000])
def test_scan_unlink_invalidation(
    batch: int,
    benchmark: Any,
    async_bench: AsyncBench,
    bench_rredis: ResilientRedis,
    keyspace: Callable[[], None],
):
    """``batch`` is the SCAN COUNT and UNLINK batch: fewer round trips against longer stops."""
    assert async_bench.run(invalidate_scope(bench_rredis, TENANT, batch=batch)) == KEYS_PER_TENANT
    bench_with_restore(
        benchmark,
        async_bench,
        lambda: invalidate_scope(bench_rredis, TENANT, batch=batch),
        keyspace,
        group="invalidate-pattern",
        extra={"variant": "ours", "keyspace": 10_000, "matching": KEYS_PER_TENANT, "scan_count": batch,
               # SCAN's page count depends on the hash table's size and rehashing at the time
               "cost_varies": "SCAN pages depend on the server's hash table"},
    )


# -- invalidate-tag --------------------------------------------------------------------


def test_naive_tag_invalidation(
    benchmark: Any, async_bench: AsyncBench, bench_rredis: ResilientRedis, bench_admin: redis.Redis
):
    client = bench_rredis.client
    keys = [make_key("naive", TENANT, "initiative", i) for i in range(TAGGED)]
    value = orjson.dumps(KPI)

    def restore() -> None:
        pipe = bench_admin.pipeline(transaction=False)
        pipe.mset(dict.fromkeys(keys, value))
        pipe.sadd(f"tag:{TAG}", *keys)
        pipe.execute()

    async def tag_one() -> None:  # the seed's own tagging call, used once to check the layout
        await naive_tag(client, TAG, keys[0])

    restore()
    async_bench.run(tag_one())
    assert async_bench.run(naive_invalidate_tag(client, TAG)) == TAGGED
    bench_with_restore(
        benchmark,
        async_bench,
        lambda: naive_invalidate_tag(client, TAG),
        restore,
        group="invalidate-tag",
        extra={"variant": "naive", "tagged_entries": TAGGED},
    )


def test_generation_tag_invalidation(benchmark: Any, async_bench: AsyncBench, bench_rredis: ResilientRedis):
    cache = Cache(bench_rredis, "initiative")
    keys = [cache.key(TENANT, i) for i in range(TAGGED)]

    async def fill() -> None:
        for key in keys:
            await cache.set(key, KPI, tags=(TAG,))

    async def invalidate_and_check() -> CacheStatus:
        await cache.invalidate_tag(TENANT, TAG)
        return (await cache.fetch(keys[0], _load, tags=(TAG,))).status

    async_bench.run(fill())
    assert async_bench.run(invalidate_and_check()) is CacheStatus.MISS  # entries really are invalid
    bench_with_restore(
        benchmark,
        async_bench,
        lambda: cache.invalidate_tag(TENANT, TAG),
        lambda: None,  # nothing to restore: entries stay, their tag generation moves on
        group="invalidate-tag",
        extra={"variant": "ours", "tagged_entries": TAGGED},
    )


async def _load() -> dict[str, Any]:
    return KPI
