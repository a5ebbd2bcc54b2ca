"""Fast reads: leased rate-limit units, trusted sessions, and warm near-cached reads answered in front
of FastAPI — on a real redis-server, through the whole app in process."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
import pytest
import redis

from cachelab.app.fast_reads import BODY_OVERHEAD_BYTES
from cachelab.client import ResilientRedis, RoundTripCounter
from cachelab.config import ConfigError, load_settings
from cachelab.harness.app_inprocess import InProcessApp
from cachelab.patterns.ratelimit import ALGORITHMS, create_limiter
from cachelab.patterns.ratelimit_lease import QuotaLeases, lease_units
from cachelab.patterns.session_trust import TrustedSessions
from cachelab.patterns.sessions import Session, SessionStore
from cachelab.resilience import RedisUnavailable

pytest.importorskip("fastapi")

A, B = "acme-01", "globex-02"
KPIS = f"/api/tenants/{A}/kpis"
FAST = {"near_cache": True, "fast_reads": True}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the parts ------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
async def test_a_refused_lease_spends_nothing_and_a_granted_one_admits_exactly_its_units(
    algorithm: str, rredis: ResilientRedis
):
    limiter = create_limiter(rredis, algorithm, 10, 3600, prefix="cl:lease-test")
    leases = QuotaLeases(limiter, units=4)
    for _ in range(7):
        assert (await limiter.check("u")).allowed
    call = leases.refill_call("u")
    assert call is not None and leases.refill_call("u") is None  # one refill in flight per identifier
    [reply] = await rredis.batch([call])
    assert not leases.refilled("u", reply) and leases.take("u") is None
    # The refused lease of 4 debited nothing: the 3 units left are still there, one by one.
    assert [(await limiter.check("u")).allowed for _ in range(4)] == [True, True, True, False]

    fresh = QuotaLeases(create_limiter(rredis, algorithm, 10, 3600, prefix="cl:lease-test2"), units=4)
    [reply] = await rredis.batch([fresh.refill_call("v")])
    assert fresh.refilled("v", reply)
    taken = [fresh.take("v") for _ in range(5)]
    assert [t is not None for t in taken] == [True, True, True, True, False]
    assert all(t.allowed and t.source == "lease" for t in taken[:4] if t is not None)
    # Paid for in Redis: 6 of the 10 are left there, whoever asks.
    assert [(await fresh.limiter.check("v")).allowed for _ in range(7)] == [True] * 6 + [False]


async def test_a_lease_is_spent_only_within_its_lifetime_and_a_fixed_windows_only_within_its_window(
    rredis: ResilientRedis,
):
    clock = Clock()
    gcra = QuotaLeases(create_limiter(rredis, "gcra", 1000, 60, prefix="cl:l1"), lifetime=1.0, clock=clock)
    assert gcra.units == lease_units(gcra.limiter) == 20
    [reply] = await rredis.batch([gcra.refill_call("x")])
    assert gcra.refilled("x", reply) and gcra.held("x") == 20
    clock.now += 0.999
    assert gcra.take("x") is not None
    clock.now += 0.002
    assert gcra.take("x") is None and gcra.held("x") == 0

    fixed = QuotaLeases(create_limiter(rredis, "fixed_window", 1000, 60, prefix="cl:l2"), lifetime=1e6,
                        clock=clock)  # fmt: skip
    [reply] = await rredis.batch([fixed.refill_call("x")])
    window_left = fixed.limiter.result_from_reply(reply, record=False).reset_after
    fixed.refilled("x", reply)
    clock.now += window_left + 0.001
    assert fixed.take("x") is None  # paid in a window that has ended


async def test_a_lease_at_its_low_water_mark_is_refilled_ahead_and_the_units_in_hand_are_spent_first(
    rredis: ResilientRedis,
):
    clock = Clock()
    limiter = create_limiter(rredis, "gcra", 1000, 3600, prefix="cl:ahead")
    leases = QuotaLeases(limiter, units=8, lifetime=1.0, clock=clock)
    assert leases.low_water == 4
    [reply] = await rredis.batch([leases.refill_call("x")])
    assert leases.refilled("x", reply)
    for _ in range(3):
        assert leases.take("x") is not None and not leases.top_up("x")  # above the mark: nothing sent
    assert leases.take("x") is not None and leases.held("x") == 4
    assert leases.top_up("x") and not leases.top_up("x")  # sent once, in the background
    assert not await leases.arrival("nobody")  # nothing on its way: no wait
    await rredis.background.drain()
    clock.now += 0.5
    # The 4 in hand go first; then the 8 granted ahead; then nothing without Redis.
    taken = [leases.take("x") for _ in range(13)]
    assert [t is not None for t in taken] == [True] * 12 + [False]
    # Exactly 16 units were paid for in Redis, and every one was spent here.
    assert (await limiter.check("x")).remaining == 1000 - 16 - 1

    # A lease granted ahead keeps its own lifetime: it is not spent past it, nor lost before it.
    [reply] = await rredis.batch([leases.refill_call("y")])
    leases.refilled("y", reply)
    clock.now += 0.5
    for _ in range(4):
        leases.take("y")
    assert leases.top_up("y")
    await rredis.background.drain()
    clock.now += 0.6  # the first lease expires with 4 units unspent: lost, the strict direction
    assert leases.held("y") == 8
    clock.now += 0.5  # ... and the one granted ahead 1 s after it was granted
    assert leases.take("y") is None


async def test_a_request_finding_its_lease_dry_while_the_next_is_in_flight_waits_for_it(
    rredis: ResilientRedis,
):
    leases = QuotaLeases(create_limiter(rredis, "gcra", 1000, 3600, prefix="cl:arrival"), units=8)
    [reply] = await rredis.batch([leases.refill_call("x")])
    leases.refilled("x", reply)
    for _ in range(4):
        leases.take("x")
    assert leases.top_up("x")
    for _ in range(4):  # spent before the loop ran the refill: dry, with the next lease in flight
        assert leases.take("x") is not None
    assert leases.held("x") == 0
    assert await leases.arrival("x") and leases.held("x") == 8


async def test_a_refill_sent_ahead_that_fails_releases_its_waiters_and_does_not_block_the_next(
    rredis: ResilientRedis, monkeypatch: pytest.MonkeyPatch
):
    limiter = create_limiter(rredis, "gcra", 1000, 3600, prefix="cl:ahead-down")
    leases = QuotaLeases(limiter, units=8, lifetime=3600)
    [reply] = await rredis.batch([leases.refill_call("x")])
    leases.refilled("x", reply)
    for _ in range(4):
        leases.take("x")

    async def down(calls: Any) -> Any:
        raise RedisUnavailable("injected: Redis is down")

    monkeypatch.setattr(rredis, "batch", down)
    assert leases.top_up("x")
    # Released by the failure (a lease lifetime is an hour here): the waiter goes on to the route.
    async with asyncio.timeout(10):
        assert await leases.arrival("x")
    assert leases.held("x") == 4 and rredis.background.stats.failed == 1
    monkeypatch.undo()
    assert leases.top_up("x")  # the failed refill no longer blocks the next one
    await rredis.background.drain()
    assert leases.held("x") == 4 and sum(leases.take("x") is not None for _ in range(13)) == 12


def test_a_session_is_trusted_for_its_seconds_never_past_its_deadline_and_forgotten_on_demand():
    clock = Clock()
    trusted = TrustedSessions(1.0, max_sessions=2, clock=clock)

    def session(sid: str, user: str = "1", deadline: float = 0.0) -> Session:
        return Session(sid, user, {"tenant_id": A}, 0.0, 100.0, 200.0, deadline)

    trusted.remember(session("a"))
    trusted.remember(session("b", deadline=100.25))  # 0.25 s before its absolute deadline
    clock.now += 0.5
    assert trusted.get("a") is not None and trusted.get("b") is None
    clock.now += 0.6
    assert trusted.get("a") is None
    trusted.remember(session("c", user="7"))
    trusted.remember(session("d", user="7"))
    trusted.remember(session("e"))  # past max_sessions: the oldest goes
    assert trusted.get("c") is None and len(trusted) == 2
    trusted.forget_user("7")
    assert trusted.get("d") is None and trusted.get("e") is not None
    trusted.forget("e")
    assert len(trusted) == 0


def test_fast_reads_without_the_near_cache_are_refused_with_the_variables_names(monkeypatch):
    monkeypatch.setenv("CACHELAB_FAST_READS", "on")
    monkeypatch.delenv("CACHELAB_NEAR_CACHE", raising=False)
    with pytest.raises(ConfigError, match="CACHELAB_FAST_READS=on needs CACHELAB_NEAR_CACHE=on"):
        load_settings()


# -- the whole app ------------------------------------------------------------
async def _start(redis_url: str, **settings: Any) -> InProcessApp:
    return await InProcessApp.start(redis_url, tenants=2, initiatives_per_tenant=5, **settings)


async def test_a_warm_read_is_answered_without_redis_exactly_as_the_route_answers_it(
    redis_url: str, redis_admin: redis.Redis
):
    fast = await _start(redis_url, rate_limit="100000/60s", session_trust=60, **FAST)
    route = await _start(redis_url, rate_limit="100000/60s", near_cache=True)
    try:
        session = await fast.login(A)
        for _ in range(2):  # a miss, then a Redis hit that fills the L1
            await fast.get(KPIS, session)
            await route.get(KPIS, session)
        status, by_route, body = await route.get(KPIS, session)
        assert (status, by_route["x-cache"]) == (200, "HIT-L1")
        # The first fast answer makes the body once and keeps it with the entry, on the budget.
        near = fast.state.caches.near
        before = near.bytes
        assert (await fast.get(KPIS, session))[2] == body
        assert near.bytes == before + len(body) + BODY_OVERHEAD_BYTES

        counter = RoundTripCounter()
        fast.count_round_trips_in(counter)
        limiters = fast.state.limiters
        before = {name: limiters[name].stats.allowed for name in ("ip", "session")}
        answers = [await fast.get(KPIS, session) for _ in range(50)]
        assert counter.value <= 1  # at most one lease refill in 50 requests (units: 100)
        decided = {name: limiters[name].stats.allowed - n for name, n in before.items()}
        assert decided == {"ip": 50, "session": 50}  # each request decided once per limit
        for status, headers, fast_body in answers:
            assert (status, fast_body, headers["x-cache"]) == (200, body, "HIT-L1")
            assert {k: v for k, v in headers.items() if not k.startswith("x-ratelimit-r")} == {
                k: v for k, v in by_route.items() if not k.startswith("x-ratelimit-r")
            }
        status, headers, empty = await fast.request("GET", KPIS, session=session,
                                                    headers={"If-None-Match": by_route["etag"]})  # fmt: skip
        assert (status, empty, headers["etag"]) == (304, b"", by_route["etag"])

        # The metrics count the answers under the route, as they would the route's own.
        _, _, metrics = await fast.get("/metrics")
        route_label = rb'method="GET",route="/api/tenants/\{tenant_id\}/kpis",status="200"'
        served = re.search(rb"cachelab_http_requests_total\{" + route_label + rb"\} (\d+)", metrics)
        assert served is not None and int(served.group(1)) == 3 + 50
        # ... and say how many the fast path answered: the body-making read and the 50, less at most one
        # sent to the route for a lease refill.
        fast_count = re.search(rb'cachelab_fast_reads_total\{outcome="answered"\} (\d+)', metrics)
        assert fast_count is not None and int(fast_count.group(1)) == fast.state.fast_reads["answered"] >= 50
        assert fast.state.fast_reads["not_modified"] == 1

        # A write in this process: the next read is the new value, not the L1's old one.
        row = orjson.loads((await fast.get(f"/api/tenants/{A}/initiatives", session))[2])["items"][0]
        patch = orjson.dumps({"progress": (row["progress"] + 50) % 101})
        status, _, _ = await fast.request("PATCH", f"/api/tenants/{A}/initiatives/{row['id']}",
                                          session=session, body=patch)  # fmt: skip
        assert status == 200
        allowed = limiters["session"].stats.allowed
        status, headers, changed = await fast.get(KPIS, session)  # not in the L1: the route answers
        assert status == 200 and changed != body and headers["etag"] != by_route["etag"]
        assert limiters["session"].stats.allowed == allowed + 1  # decided once, by the route
    finally:
        await fast.aclose()
        await route.aclose()


async def test_a_warm_dashboard_keyed_by_its_caller_and_tagged_is_answered_as_the_route_answers_it(
    redis_url: str, redis_admin: redis.Redis
):
    fast = await _start(redis_url, rate_limit="100000/60s", session_trust=60, **FAST)
    route = await _start(redis_url, rate_limit="100000/60s", near_cache=True)
    try:
        admin, member = await fast.login(A), await fast.login(A, "member")
        for _ in range(2):
            for session in (admin, member):
                await fast.get("/api/dashboard", session)
                await route.get("/api/dashboard", session)
        by_route = {s: await route.get("/api/dashboard", s) for s in (admin, member)}
        assert by_route[admin][2] != by_route[member][2]  # one dashboard per user and role
        counter = RoundTripCounter()
        fast.count_round_trips_in(counter)
        answered = fast.state.fast_reads["answered"]
        for _ in range(10):
            for session in (admin, member):
                status, headers, body = await fast.get("/api/dashboard", session)
                route_status, route_headers, route_body = by_route[session]
                assert (status, body, headers["x-cache"]) == (route_status, route_body, "HIT-L1")
                assert {k: v for k, v in headers.items() if not k.startswith("x-ratelimit-r")} == {
                    k: v for k, v in route_headers.items() if not k.startswith("x-ratelimit-r")
                }
        assert counter.value <= 2  # a lease refill or two, not a round trip per request
        assert fast.state.fast_reads["answered"] - answered >= 18

        # A write invalidates the "dashboards" tag: this process's next read is not the old dashboard.
        row = orjson.loads((await fast.get(f"/api/tenants/{A}/initiatives", admin))[2])["items"][0]
        patch = orjson.dumps({"progress": (row["progress"] + 50) % 101})
        status, _, _ = await fast.request("PATCH", f"/api/tenants/{A}/initiatives/{row['id']}",
                                          session=admin, body=patch)  # fmt: skip
        assert status == 200
        status, headers, body = await fast.get("/api/dashboard", admin)
        assert status == 200 and headers["x-cache"] != "HIT-L1" and body != by_route[admin][2]
    finally:
        await fast.aclose()
        await route.aclose()


async def test_a_fast_read_never_answers_for_another_tenant_a_hostile_cookie_or_a_logged_out_session(
    redis_url: str, redis_admin: redis.Redis
):
    app = await _start(redis_url, rate_limit="100000/60s", session_trust=60, **FAST)
    try:
        session, theirs = await app.login(A), await app.login(B)
        for _ in range(3):
            await app.get(KPIS, session)
            await app.get(f"/api/tenants/{B}/kpis", theirs)
        assert (await app.get(KPIS, session))[1]["x-cache"] == "HIT-L1"
        status, headers, body = await app.get(f"/api/tenants/{B}/kpis", session)
        assert status == 403 and "etag" not in headers and B.encode() not in body
        for cookie in (f"session={session[:-1]}*", "session=", f"other={session}"):
            status, _, _ = await app.request("GET", KPIS, headers={"Cookie": cookie})
            assert status == 401
        status, _, _ = await app.request("POST", "/api/logout", session=session)
        assert status == 200
        assert (await app.get(KPIS, session))[0] == 401  # at once, in the process that logged out
        outcomes = app.state.fast_reads  # each refusal was left to the route, and counted with why
        assert outcomes["other_tenant"] == 1 and outcomes["no_session"] == 3
        assert outcomes["session_not_trusted"] >= 1
    finally:
        await app.aclose()


async def test_a_session_ended_by_another_process_is_refused_once_its_trust_runs_out(
    redis_url: str, redis_admin: redis.Redis
):
    app = await _start(redis_url, rate_limit="100000/60s", session_trust=0.3, **FAST)
    elsewhere = ResilientRedis.from_url(redis_url)
    try:
        session = await app.login(A)
        for _ in range(3):
            await app.get(KPIS, session)
        await SessionStore(elsewhere, idle_timeout=1800, absolute_lifetime=3600).destroy(session)
        await asyncio.sleep(0.35)
        assert (await app.get(KPIS, session))[0] == 401
    finally:
        await elsewhere.aclose()
        await app.aclose()


async def test_two_processes_leasing_one_limit_never_admit_more_than_it(
    redis_url: str, redis_admin: redis.Redis
):
    # GCRA, 200 per hour, burst 200: over a test of seconds nothing refills, so exactly 200 may pass.
    limit = {"rate_limit": "200/3600s", "rate_limit_algorithm": "gcra", "session_trust": 60}
    apps = [await _start(redis_url, **limit, **FAST) for _ in range(2)]
    try:
        assert apps[0].state.leases["session"].units == 4
        session = await apps[0].login(A)
        statuses = []
        for i in range(300):
            status, headers, _ = await apps[i % 2].get(KPIS, session)
            statuses.append(status)
            if status == 429:
                assert int(headers["retry-after"]) >= 1
        assert set(statuses) == {200, 429}
        # Units leased by one process and stranded there are lost, never spent twice: at most a lease
        # and the low-water units before it, per limit and process.
        held = 4 + apps[0].state.leases["session"].low_water
        assert 199 - 2 * 2 * held <= statuses.count(200) <= 199  # the login spent one of the address's 200
    finally:
        for app in apps:
            await app.aclose()
