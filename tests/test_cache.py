"""Cache-aside, write-through, refresh and stampede behaviour on real redis-server."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import decimal
import enum
import math
import uuid
from typing import Any

import pytest

from cachelab.client import ClientOptions, ResilientRedis
from cachelab.experiments.stampede import run_stampede
from cachelab.harness import CostMeter
from cachelab.patterns.aggregation import DailyAggregate, seconds_until_end_of_day
from cachelab.patterns.cache import Cache, CachePolicy, CacheStatus
from cachelab.patterns.envelope import MISSING
from cachelab.patterns.keys import request_key
from cachelab.patterns.naive import naive_cache_aside, naive_refresh_ahead
from cachelab.resilience import BreakerState, CircuitBreaker
from cachelab.servers import RedisServer


class CountingLoader:
    def __init__(self, value: object, delay: float = 0.0) -> None:
        self.value = value
        self.delay = delay
        self.calls = 0

    async def __call__(self) -> object:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.value


@pytest.mark.parametrize("value", [0, "", [], {}, False, None, 0.0])
async def test_falsy_cached_values_are_hits(rredis, value):
    cache = Cache(rredis, "kpi")
    key = cache.key("t1", "kpis")
    loader = CountingLoader(value)
    first = await cache.fetch(key, loader)
    second = await cache.fetch(key, loader)
    assert (first.status, second.status) == (CacheStatus.MISS, CacheStatus.HIT)
    assert second.value == value and type(second.value) is type(value)
    assert loader.calls == 1


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Mode(enum.StrEnum):
    FAST = "fast"


class Name(str):
    pass


# Each would come back as another type or value: orjson writes the first group
# natively (as str, object, array, the enum's value or null); the rest it refuses.
NOT_PLAIN_JSON = [
    pytest.param(dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC), TypeError, "datetime.datetime", id="datetime"),
    pytest.param(dt.datetime(2026, 1, 2, 3, 4, 5), TypeError, "datetime.datetime", id="naive-datetime"),
    pytest.param(dt.date(2026, 1, 2), TypeError, "datetime.date", id="date"),
    pytest.param(dt.time(3, 4), TypeError, "datetime.time", id="time"),
    pytest.param(uuid.UUID(int=7), TypeError, "uuid.UUID", id="uuid"),
    pytest.param(Point(1, 2), TypeError, "Point", id="dataclass"),
    pytest.param(math.nan, ValueError, "nan", id="nan"),
    pytest.param(math.inf, ValueError, "inf", id="inf"),
    pytest.param(-math.inf, ValueError, "-inf", id="-inf"),
    pytest.param((1, 2), TypeError, "tuple", id="tuple"),
    pytest.param(Colour.RED, TypeError, "Colour", id="enum"),
    pytest.param(Level.HIGH, TypeError, "Level", id="int-enum"),
    pytest.param(Mode.FAST, TypeError, "Mode", id="str-enum"),
    pytest.param(Name("x"), TypeError, "Name", id="str-subclass"),
    pytest.param({1: "a"}, TypeError, "int", id="int-dict-key"),
    pytest.param({"a": [1, {"when": dt.date(2026, 1, 2)}]}, TypeError,
                 r"datetime\.date at value\['a'\]\[1\]\['when'\]", id="nested-date"),
    pytest.param([1.0, math.nan], ValueError, r"nan at value\[1\]", id="nested-nan"),
    pytest.param({1, 2}, TypeError, "set", id="set"),
    pytest.param(b"x", TypeError, "bytes", id="bytes"),
    pytest.param(decimal.Decimal("1.5"), TypeError, "Decimal", id="decimal"),
]


@pytest.mark.parametrize(("value", "error", "names"), NOT_PLAIN_JSON)
async def test_values_json_would_change_are_refused_by_fetch_naming_the_type_and_nothing_written(
    rredis, redis_admin, value, error, names
):
    cache = Cache(rredis, "kpi")
    key = cache.key("t1", "kpis")
    loader = CountingLoader(value)
    with pytest.raises(error, match=names):
        await cache.fetch(key, loader)
    assert loader.calls == 1
    assert redis_admin.dbsize() == 0


@pytest.mark.parametrize(("value", "error", "names"), NOT_PLAIN_JSON)
async def test_values_json_would_change_are_refused_by_set_and_warm_with_nothing_written(
    rredis, redis_admin, value, error, names
):
    cache = Cache(rredis, "kpi")
    with pytest.raises(error, match=names):
        await cache.set(cache.key("t1", "a"), value)
    with pytest.raises(error, match=names):  # the refused value is last: nothing before it is written either
        await cache.warm([(cache.key("t1", i), {"i": i}) for i in range(3)] + [(cache.key("t1", "z"), value)])
    assert redis_admin.dbsize() == 0


@pytest.mark.parametrize(("value", "error", "names"), NOT_PLAIN_JSON)
async def test_a_refused_write_through_raises_and_invalidates_the_older_cached_row(
    rredis, redis_admin, value, error, names
):
    cache = Cache(rredis, "initiative")
    key = cache.key("t1", "row", 1)
    assert await cache.write_through(key, {"v": 1}, version=1)
    with pytest.raises(error, match=names):
        await cache.write_through(key, value, version=2)
    assert redis_admin.exists(key) == 0  # not the refused value, and not the stale version 1
    assert not await cache.write_through(key, {"v": 1}, version=1)  # the guard saw version 2


async def test_plain_json_round_trips_with_exact_types(rredis):
    cache = Cache(rredis, "kpi")
    key = cache.key("t1", "plain")
    value = {
        "int": 1, "float": 1.0, "neg_zero": -0.0, "tiny": 5e-324, "big": 2**63 - 1, "small": -(2**63),
        "bool": True, "none": None, "text": "ü\x00🙂", "list": [1, 1.5, "x", [], {}],
        "nested": {"a": {"b": [0]}},
    }
    await cache.set(key, value)
    got = await cache.get(key)
    assert got == value

    def types(v):
        if isinstance(v, dict):
            return {k: types(x) for k, x in v.items()}
        if isinstance(v, list):
            return [types(x) for x in v]
        return type(v)

    assert types(got) == types(value)
    assert math.copysign(1, got["neg_zero"]) == -1


async def test_str_subclass_dict_keys_are_accepted_and_come_back_as_equal_str(rredis):
    # SQLAlchemy row mappings key columns by quoted_name, a str subclass: lookups are unchanged.
    cache = Cache(rredis, "kpi")
    key = cache.key("t1", "row")
    await cache.set(key, {Name("id"): 1, Mode.FAST: 2})
    got = await cache.get(key)
    assert got == {"id": 1, "fast": 2} and got[Name("id")] == 1 and got[Mode.FAST] == 2
    assert {type(k) for k in got} == {str}


async def test_naive_cache_aside_reloads_falsy_values_every_time(rredis):
    loader = CountingLoader(0)
    for _ in range(3):
        assert await naive_cache_aside(rredis.client, "item:1", loader) == 0
    assert loader.calls == 3


@pytest.mark.parametrize("garbage", [b"not json", b"\xc1\x01\x00{broken", b"\xc1\x09\x00[1]", b"\x00"])
async def test_corrupt_bytes_are_a_miss_that_gets_repaired(rredis, redis_admin, garbage):
    cache = Cache(rredis, "kpi")
    key = cache.key("t1", "kpis")
    redis_admin.set(key, garbage)
    result = await cache.fetch(key, CountingLoader({"total": 3}))
    assert result == (result.__class__({"total": 3}, CacheStatus.MISS))
    assert cache.stats.corrupt == 1
    assert (await cache.fetch(key, CountingLoader("unused"))).status is CacheStatus.HIT


async def test_negative_results_are_cached_with_their_own_ttl(rredis, redis_admin):
    cache = Cache(rredis, "user", CachePolicy(ttl=300, negative_ttl=5, jitter=0))
    key = cache.key("t1", "missing-user")
    loader = CountingLoader(None)
    assert (await cache.fetch(key, loader)).value is None
    assert (await cache.fetch(key, loader)).status is CacheStatus.HIT
    assert loader.calls == 1
    assert 0 < redis_admin.pttl(key) <= 5000


async def test_ttl_jitter_spreads_expiry(rredis, redis_admin):
    cache = Cache(rredis, "kpi", CachePolicy(ttl=100, jitter=0.2))
    keys = [cache.key("t1", i) for i in range(50)]
    await cache.warm({k: i for i, k in enumerate(keys)})
    ttls = [redis_admin.pttl(k) for k in keys]
    assert all(80_000 - 100 <= t <= 120_000 for t in ttls)
    assert len({t // 1000 for t in ttls}) > 10  # not all in the same second


async def test_oversized_value_is_served_but_not_cached(redis_url, redis_admin):
    rr = ResilientRedis.from_url(redis_url)
    from cachelab.patterns.envelope import EntryCodec

    cache = Cache(rr, "big", codec=EntryCodec(max_bytes=1000, compress_min_bytes=None))
    key = cache.key("t1", "blob")
    result = await cache.fetch(key, CountingLoader("x" * 5000))
    assert result.value == "x" * 5000
    assert cache.stats.oversize == 1 and redis_admin.exists(key) == 0
    await rr.aclose()


async def test_200_concurrent_callers_on_a_cold_key_load_once_with_single_flight(rredis):
    protected = Cache(rredis, "hot", CachePolicy(ttl=60))
    loader = CountingLoader({"kpi": 1}, delay=0.1)
    results = await asyncio.gather(*(protected.fetch(protected.key("t", "k"), loader) for _ in range(200)))
    assert loader.calls == 1
    assert {r.value["kpi"] for r in results} == {1}

    unprotected = Cache(rredis, "hot2", CachePolicy(ttl=60, single_flight=False))
    loader2 = CountingLoader({"kpi": 1}, delay=0.1)
    await asyncio.gather(*(unprotected.fetch(unprotected.key("t", "k"), loader2) for _ in range(200)))
    print(f"\nloader calls, 200 tasks on one cold key: single-flight {loader.calls}, none {loader2.calls}")
    assert loader2.calls == 200


async def test_lock_loads_once_when_an_expired_entry_is_still_in_redis(rredis, redis_admin):
    """Between an entry's TTL and Redis deleting it, a reader must take the miss lock.

    Two ``Cache`` instances stand for two processes (each has its own
    single-flight). Reader A sees the entry past its TTL but still present;
    Redis then deletes it and reader B misses. Both must share one load.
    """
    policy = CachePolicy(ttl=30, lock=True, jitter=0)
    process_a, process_b = Cache(rredis, "dash", policy), Cache(rredis, "dash", policy)
    key = process_a.key("t1", "dashboard")
    # An entry whose own expiry has passed while its Redis TTL has not.
    await process_a.set(key, {"v": 1}, policy=CachePolicy(ttl=30, soft_ttl=0.01, jitter=0))
    await asyncio.sleep(0.05)

    loader_a, loader_b = CountingLoader({"v": 2}, delay=0.3), CountingLoader({"v": 3})
    reader_a = asyncio.create_task(process_a.fetch(key, loader_a))
    await asyncio.sleep(0.1)  # A holds the miss lock and is loading
    redis_admin.delete(key)  # Redis's own expiry catches up
    result_b = await process_b.fetch(key, loader_b)
    result_a = await reader_a
    await rredis.background.drain()

    assert (result_a.status, result_a.value) == (CacheStatus.MISS, {"v": 2})
    assert result_b.value == {"v": 2}
    assert loader_a.calls + loader_b.calls == 1


@pytest.mark.slow
def test_lock_loads_once_per_lease_across_processes(redis_url, redis_admin):
    locked = run_stampede(
        redis_url,
        CachePolicy(ttl=60, lock=True, lock_lease=10),
        processes=4,
        tasks_per_process=50,
        loader_delay=0.3,
        scope="locked",
    )
    flight_only = run_stampede(
        redis_url,
        CachePolicy(ttl=60),
        processes=4,
        tasks_per_process=50,
        loader_delay=0.3,
        scope="flight",
    )
    print(
        f"\nloader calls, 4 processes x 50 tasks: lock {locked.loader_calls}, "
        f"single-flight only {flight_only.loader_calls}"
    )
    assert locked.callers == 200
    assert locked.loader_calls == 1
    assert 1 <= flight_only.loader_calls <= 4


async def test_slow_loader_that_started_before_a_write_through_never_overwrites_it(rredis):
    cache = Cache(rredis, "initiative")
    key = cache.key("t1", "initiative", 7)
    loader_has_read_db = asyncio.Event()
    write_committed = asyncio.Event()

    async def slow_loader() -> dict:
        snapshot = {"progress": 10, "version": 1}  # what the database said when we read it
        loader_has_read_db.set()
        await write_committed.wait()  # ...and we are slow to return it
        return snapshot

    reader = asyncio.create_task(cache.fetch(key, slow_loader))
    await loader_has_read_db.wait()
    assert await cache.write_through(key, {"progress": 90, "version": 2}, version=2)
    write_committed.set()
    stale = await reader
    assert stale.value == {"progress": 10, "version": 1}  # the caller gets what it loaded...
    assert await cache.get(key) == {"progress": 90, "version": 2}  # ...but Redis keeps the newer one
    assert cache.stats.fills_rejected == 1


async def test_write_through_ignores_an_older_version_arriving_late(rredis):
    cache = Cache(rredis, "initiative")
    key = cache.key("t1", "initiative", 1)
    assert await cache.write_through(key, {"v": 3}, version=3)
    assert not await cache.write_through(key, {"v": 2}, version=2)
    assert await cache.get(key) == {"v": 3}


async def test_invalidation_during_a_load_drops_the_stale_fill(rredis):
    cache = Cache(rredis, "kpi")
    key = cache.key("t1", "kpis")
    started, release = asyncio.Event(), asyncio.Event()

    async def loader() -> dict:
        started.set()
        await release.wait()
        return {"total": "old"}

    task = asyncio.create_task(cache.fetch(key, loader))
    await started.wait()
    await cache.invalidate(key)
    release.set()
    await task
    assert await cache.get(key) is MISSING


async def test_stale_while_revalidate_serves_stale_and_refreshes_once(rredis):
    cache = Cache(rredis, "dash", CachePolicy(ttl=30, soft_ttl=0.2, jitter=0))
    key = cache.key("t1", "dashboard", "u1")
    await cache.fetch(key, CountingLoader({"v": 1}))
    await asyncio.sleep(0.3)
    # The refresh outlasts the 50 reads even on a busy machine: none of them can see its result.
    refresher = CountingLoader({"v": 2}, delay=1.0)
    results = await asyncio.gather(*(cache.fetch(key, refresher) for _ in range(50)))
    assert {r.status for r in results} == {CacheStatus.STALE}
    assert {r.value["v"] for r in results} == {1}
    await rredis.background.drain()
    assert refresher.calls == 1
    fresh = await cache.fetch(key, refresher)
    assert (fresh.status, fresh.value) == (CacheStatus.HIT, {"v": 2})


async def test_refresh_ahead_has_exactly_one_refresher_across_clients(redis_url, rredis):
    # Refresh-ahead after 10 % of a 5 s lifetime; the entry stays valid, and the refresh (1 s)
    # outlasts the 100 reads, however slow the machine: every read is a HIT, one refreshes.
    policy = CachePolicy(ttl=5.0, refresh_ahead=0.9, jitter=0)
    others = [ResilientRedis.from_url(redis_url) for _ in range(3)]
    caches = [Cache(rr, "ra", policy) for rr in [rredis, *others]]
    key = caches[0].key("t1", "kpis")
    await caches[0].fetch(key, CountingLoader(1))
    await asyncio.sleep(0.7)  # inside the refresh-ahead window
    refresher = CountingLoader(2, delay=1.0)
    results = await asyncio.gather(*(c.fetch(key, refresher) for c in caches for _ in range(25)))
    assert {r.status for r in results} == {CacheStatus.HIT}
    for rr in [rredis, *others]:
        await rr.background.drain()
    assert refresher.calls == 1
    for rr in others:
        await rr.aclose()


async def test_naive_refresh_ahead_starts_one_refresh_per_reader(rredis, redis_admin):
    redis_admin.set("k", '"v"', ex=10)
    loader = CountingLoader(None)
    await asyncio.gather(*(naive_refresh_ahead(rredis.client, "k", 300, loader) for _ in range(20)))
    await asyncio.sleep(0.01)
    assert loader.calls == 20


class FixedRandom:
    """XFetch's U drawn as a constant: tiny U means "refresh now", 1.0 means "never early"."""

    def __init__(self, u: float) -> None:
        self.u = u

    def random(self) -> float:
        return self.u

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


@pytest.mark.parametrize(("u", "expect_refresh"), [(1e-300, True), (1.0, False)])
async def test_xfetch_refreshes_early_by_its_draw_with_one_refresher(rredis, u, expect_refresh):
    cache = Cache(rredis, "xf", CachePolicy(ttl=2, xfetch_beta=1.0), rng=FixedRandom(u))
    key = cache.key("t1", "hot")
    await cache.fetch(key, CountingLoader(1, delay=0.01))
    refresher = CountingLoader(2, delay=0.05)
    results = await asyncio.gather(*(cache.fetch(key, refresher) for _ in range(20)))
    assert {r.status for r in results} == {CacheStatus.HIT}
    await rredis.background.drain()
    assert refresher.calls == (1 if expect_refresh else 0)
    assert await cache.get(key) == (2 if expect_refresh else 1)


def test_xfetch_probability_rises_towards_expiry_and_with_compute_time():
    from cachelab.patterns.stampede import xfetch_should_refresh

    def rate(remaining_ms: float, compute_ms: float) -> float:
        import random

        rng = random.Random(7)
        hits = sum(xfetch_should_refresh(0, remaining_ms, compute_ms, 1.0, rng.random) for _ in range(4000))
        return hits / 4000

    assert rate(1000, 100) < rate(100, 100) < rate(10, 100)
    assert rate(100, 10) < rate(100, 100)
    assert rate(100, 100) == pytest.approx(math.exp(-1), abs=0.03)


async def test_each_hot_path_costs_the_catalogued_round_trips(rredis, cost_meter: CostMeter):
    cache = Cache(rredis, "rt")
    key = cache.key("t1", "kpis")
    await rredis.client.ping()
    with cost_meter.measure() as miss:
        await cache.fetch(key, CountingLoader({"a": 1}))
    with cost_meter.measure() as hit:
        await cache.fetch(key, CountingLoader({"a": 1}))
    with cost_meter.measure() as write:
        await cache.write_through(key, {"a": 2}, version=5)
    with cost_meter.measure() as inval:
        await cache.invalidate(key)
    locked = Cache(rredis, "rt2", CachePolicy(lock=True))
    with cost_meter.measure() as lock_miss:
        await locked.fetch(locked.key("t1", "x"), CountingLoader(1))
    assert (hit.round_trips, hit.commands) == (1, {"mget": 1})
    assert miss.round_trips == 2 and miss.commands["mget"] == 1
    assert write.round_trips == 1 and inval.round_trips == 1
    assert lock_miss.round_trips == 4
    assert "keys" not in {**miss.commands, **hit.commands, **lock_miss.commands}


async def test_tag_invalidation_is_constant_round_trips_for_10000_keys(rredis, cost_meter):
    cache = Cache(rredis, "list")
    await cache.invalidate_tag("t0", "warm-up")  # load the script once

    async def tag_and_invalidate(scope: str, n: int):
        keys = [cache.key(scope, "page", i) for i in range(n)]
        for start in range(0, n, 1000):
            await asyncio.gather(*(cache.set(k, 1, tags=["initiatives"]) for k in keys[start : start + 1000]))
        assert await cache.get(keys[-1], tags=["initiatives"]) == 1
        with cost_meter.measure() as cost:
            await cache.invalidate_tag(scope, "initiatives")
        assert await cache.get(keys[-1], tags=["initiatives"]) is MISSING
        assert await cache.get(keys[0], tags=["initiatives"]) is MISSING
        return cost

    few, many = await tag_and_invalidate("t1", 3), await tag_and_invalidate("t2", 10_000)
    assert few.round_trips == many.round_trips == 1
    assert few.total_commands == many.total_commands
    # Another tenant's entries under the same tag name are untouched.
    other = cache.key("t3", "page", 1)
    await cache.set(other, "x", tags=["initiatives"])
    await cache.invalidate_tag("t4", "initiatives")
    assert await cache.get(other, tags=["initiatives"]) == "x"


async def test_several_tags_are_invalidated_in_one_round_trip_and_no_others(rredis, cost_meter):
    cache = Cache(rredis, "list")
    pages = {tag: cache.key("t1", "page", tag) for tag in ("all", "area:3", "status:done", "area:4")}
    for tag, key in pages.items():
        await cache.set(key, tag, tags=[tag])
    await cache.invalidate_tag("t0", "warm-up")  # load the script once
    with cost_meter.measure() as cost:
        await cache.invalidate_tag("t1", "all", "area:3", "status:done")
    assert cost.round_trips == 1
    assert {tag: await cache.get(key, tags=[tag]) for tag, key in pages.items()} == {
        "all": MISSING, "area:3": MISSING, "status:done": MISSING, "area:4": "area:4"
    }


async def test_canonical_request_keys_ignore_parameter_order():
    a = request_key("cl", "t1", "/initiatives", {"status": "active", "page": 2, "area_id": 5})
    b = request_key("cl", "t1", "/initiatives", [("page", "2"), ("area_id", "5"), ("status", "active")])
    c = request_key("cl", "t1", "/initiatives", {"status": "active", "page": 3, "area_id": 5})
    assert a == b != c
    assert request_key("cl", "t1", "/x", {"a": ""}) == request_key("cl", "t1", "/x", {})


async def test_daily_aggregate_expires_at_the_end_of_its_day(rredis, redis_admin):
    daily = DailyAggregate(Cache(rredis, "stats", CachePolicy(ttl=3600)))
    late = dt.datetime(2026, 11, 27, 23, 59, 30, tzinfo=dt.UTC)
    _result, day = await daily.fetch("t1", "totals", CountingLoader({"n": 1}), now=late)
    assert day == dt.date(2026, 11, 27)
    key = daily.key("t1", "totals", day)
    assert 0 < redis_admin.pttl(key) <= 30_000
    assert seconds_until_end_of_day(dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)) == 12 * 3600


async def test_multi_get_and_warming_batch_their_round_trips(rredis, cost_meter):
    cache = Cache(rredis, "warm")
    items = {cache.key("t1", i): {"i": i} for i in range(1200)}
    await rredis.client.ping()  # connect first: the handshake is round trips too
    with cost_meter.measure() as warm_cost:
        assert await cache.warm(items, batch=500) == 1200
    with cost_meter.measure() as get_cost:
        values = await cache.get_many([*items, cache.key("t1", "absent")], batch=500)
    assert warm_cost.round_trips == 3 and get_cost.round_trips == 3
    assert values[:2] == [{"i": 0}, {"i": 1}] and values[-1] is MISSING


@pytest.mark.slow
async def test_redis_killed_breaker_fails_fast_fallbacks_run_then_caching_resumes(private_redis: RedisServer):
    options = ClientOptions(connect_timeout=0.25, command_timeout=0.25, retries=0)
    rr = ResilientRedis.from_url(
        private_redis.url, options=options, breaker=CircuitBreaker(failure_threshold=2, reset_timeout=0.5)
    )
    cache = Cache(rr, "kpi")
    key = cache.key("t1", "kpis")
    loader = CountingLoader({"total": 5})
    assert (await cache.fetch(key, loader)).status is CacheStatus.MISS
    assert (await cache.fetch(key, loader)).status is CacheStatus.HIT

    private_redis.kill()
    bypassed = [await cache.fetch(key, loader) for _ in range(20)]
    assert all(r.status is CacheStatus.BYPASS and r.value == {"total": 5} for r in bypassed)
    assert rr.breaker.state is BreakerState.OPEN
    # Only the calls that opened the breaker reached the network.
    assert rr.breaker.stats.failures == 2 and rr.breaker.stats.short_circuited >= 18

    private_redis.start()
    await asyncio.sleep(0.6)
    statuses = [(await cache.fetch(key, loader)).status for _ in range(3)]
    assert rr.breaker.state is BreakerState.CLOSED
    assert statuses == [CacheStatus.MISS, CacheStatus.HIT, CacheStatus.HIT]
    await rr.aclose()


async def test_callers_get_their_data_when_no_redis_is_reachable_at_startup():
    from cachelab.servers import free_port

    rr = ResilientRedis.from_url(
        f"redis://127.0.0.1:{free_port()}/0",
        options=ClientOptions(connect_timeout=0.2, command_timeout=0.2, retries=0),
        breaker=CircuitBreaker(failure_threshold=1, reset_timeout=30),
    )
    cache = Cache(rr, "kpi")
    results = [await cache.fetch(cache.key("t1", "k"), CountingLoader(7)) for _ in range(10)]
    assert [r.value for r in results] == [7] * 10
    assert {r.status for r in results} == {CacheStatus.BYPASS}
    assert rr.breaker.stats.failures == 1
    await rr.aclose()


async def test_a_full_redis_refusing_writes_is_served_around_not_a_500():
    from cachelab.patterns.ratelimit import create_limiter
    from cachelab.servers import RedisServerConfig

    config = RedisServerConfig(maxmemory="3mb", maxmemory_policy="noeviction")
    with RedisServer(config) as server:
        admin = server.client()
        for i in range(2000):  # fill it until it refuses writes
            try:
                admin.set(f"filler:{i}", "x" * 4096)
            except Exception:
                break
        admin.close()
        rr = ResilientRedis.from_url(server.url)
        cache = Cache(rr, "kpi")
        result = await cache.fetch(cache.key("t1", "kpis"), CountingLoader({"total": 1}))
        assert result.value == {"total": 1}  # served from the loader, no exception
        # Redis 7 refuses the fill script's write (counted as an error); 6.2 may let a script
        # that already started write past maxmemory. Either way the caller never sees it.
        assert cache.stats.errors + cache.stats.fills == 1
        limiter = create_limiter(rr, "gcra", 10, 60, failure_policy="open")
        assert (await limiter.check("client")).allowed  # the policy decides, no exception
        assert rr.breaker.state is BreakerState.CLOSED  # reads still work: the breaker stays closed
        await rr.aclose()


async def test_a_miss_that_comes_back_after_another_callers_flight_ended_reads_again_instead_of_loading(
    rredis: ResilientRedis,
):
    cache = Cache(rredis, "late", CachePolicy(ttl=60))
    key = cache.key("t1", "kpis")
    loads = 0
    loading = asyncio.Event()

    async def loader() -> dict[str, int]:
        nonlocal loads
        loads += 1
        loading.set()
        await asyncio.sleep(0.05)
        return {"total": 3}

    leader_done = asyncio.Event()

    async def late_read(keys: list[str]) -> list[Any]:
        reply = await rredis.client.mget(keys)  # sent while the leader is still loading: a miss ...
        await leader_done.wait()  # ... whose reply is handled after the leader's flight has ended
        return reply

    leader = asyncio.create_task(cache.fetch(key, loader))
    await loading.wait()
    late = asyncio.create_task(cache.fetch(key, loader, read_via=late_read))
    assert (await leader).status is CacheStatus.MISS
    leader_done.set()
    result = await late
    assert (result.status, result.value, loads) == (CacheStatus.HIT, {"total": 3}, 1)
    assert cache.stats.late_rereads == 1
