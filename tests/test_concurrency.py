"""The concurrency limiter on a real redis-server: the bound holds across processes, and a
holder that dies gives its slot back when its lease expires, not before.

The naive INCR/DECR counter is run beside it once, to show the leak the leases fix.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cachelab.client import ClientOptions, ResilientRedis
from cachelab.patterns.concurrency import (
    ConcurrencyLimiter,
    ConcurrencyLimitExceeded,
    naive_acquire,
    naive_release,
)
from cachelab.resilience import BreakerState, CircuitBreaker
from cachelab.servers import RedisServer

TESTS_DIR = Path(__file__).resolve().parent


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CACHELAB_REDIS_URL")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH", "")) if p)
    return env


# -- one process --------------------------------------------------------------------------
async def test_at_most_limit_slots_then_a_refusal_that_says_when_and_release_frees_one(rredis, redis_admin):
    limiter = ConcurrencyLimiter(rredis, 2, lease_seconds=30, name="exports")
    a = await limiter.try_acquire("acme")
    b = await limiter.try_acquire("acme")
    full = await limiter.try_acquire("acme")
    assert a.acquired and b.acquired and (a.in_flight, b.in_flight) == (1, 2)
    assert not full.acquired and full.in_flight == 2 and full.remaining == 0
    assert 29 < full.retry_after <= 30  # the worst case: the earliest lease's expiry
    assert full.headers(retry_hint=1.0) == {
        "X-Concurrency-Limit": "2", "X-Concurrency-Remaining": "0", "Retry-After": "1"}
    assert (await limiter.try_acquire("other-tenant")).acquired  # per key
    assert await limiter.release(a) is True
    assert await limiter.release(a) is False  # twice is harmless: it frees nobody else's slot
    c = await limiter.try_acquire("acme")
    assert c.acquired and c.in_flight == 2
    assert redis_admin.zcard(limiter.key("acme")) == 2
    ttl = redis_admin.pttl(limiter.key("acme"))
    assert 29_000 < ttl <= 30_000  # the key outlives its leases, and no more
    with pytest.raises(ConcurrencyLimitExceeded, match=r"'acme' reached: 2 of 2 slots in use"):
        await limiter.acquire("acme")
    assert limiter.stats.snapshot()["refused"] == 2


async def test_acquire_and_release_are_one_evalsha_round_trip_each(rredis, cost_meter):
    limiter = ConcurrencyLimiter(rredis, 5)
    await limiter.release(await limiter.acquire("warm"))  # loads both scripts
    with cost_meter.measure() as acquire_cost:
        lease = await limiter.acquire("t")
    with cost_meter.measure() as release_cost:
        assert await limiter.release(lease)
    for cost in (acquire_cost, release_cost):
        assert cost.round_trips == 1 and cost.commands["evalsha"] == 1  # (inner commands by name too)
        assert not {"eval", "script|load"} & cost.commands.keys()


async def test_a_retried_acquire_with_the_same_lease_id_holds_one_slot(rredis, redis_admin):
    limiter = ConcurrencyLimiter(rredis, 1)
    first = await limiter.try_acquire("t", "lease-1")
    again = await limiter.try_acquire("t", "lease-1")  # as if the first reply had been lost
    assert first.acquired and again.acquired and again.in_flight == 1
    assert not (await limiter.try_acquire("t", "lease-2")).acquired
    assert redis_admin.zrange(limiter.key("t"), 0, -1) == [b"lease-1"]


@pytest.mark.parametrize("hostile", ["a*", "x:y", "{t}", "", "t[1]", "%", "a b\nc"])
async def test_hostile_identifiers_get_their_own_escaped_key(rredis, redis_admin, hostile):
    limiter = ConcurrencyLimiter(rredis, 1)
    assert (await limiter.try_acquire(hostile)).acquired
    assert not (await limiter.try_acquire(hostile)).acquired
    for neighbour in ("a", "x", "t", "%25", "y"):
        assert (await limiter.try_acquire(neighbour)).acquired, neighbour  # no shared slot
    key = limiter.key(hostile)
    assert key.count("{") == 1 and "*" not in key and " " not in key and "\n" not in key
    assert redis_admin.zcard(key) == 1


async def test_an_expired_lease_is_reclaimed_on_acquire_and_its_late_release_says_so(rredis, redis_admin):
    limiter = ConcurrencyLimiter(rredis, 1, lease_seconds=0.2)
    held = await limiter.acquire("t")
    assert not (await limiter.try_acquire("t")).acquired
    await asyncio.sleep(0.25)
    taken = await limiter.try_acquire("t")
    assert taken.acquired  # the dead holder's slot came back
    assert await limiter.release(held) is False  # ...and its late release frees nothing
    assert limiter.stats.expired_before_release == 0  # (held's lease was reclaimed, not released)
    assert redis_admin.zrange(limiter.key("t"), 0, -1) == [taken.id.encode()]


async def test_keep_alive_holds_a_slot_longer_than_one_lease(rredis):
    limiter = ConcurrencyLimiter(rredis, 1, lease_seconds=0.15)
    async with limiter.slot("t", keep_alive=True) as lease:
        await asyncio.sleep(0.5)
        assert not (await limiter.try_acquire("t")).acquired  # still ours after three leases
    assert lease.acquired and (await limiter.try_acquire("t")).acquired  # released on exit


async def test_a_bounded_wait_gets_a_slot_freed_in_time_and_is_refused_clearly_otherwise(rredis):
    limiter = ConcurrencyLimiter(rredis, 1, lease_seconds=30)
    held = await limiter.acquire("t")

    async def release_later() -> None:
        await asyncio.sleep(0.15)
        await limiter.release(held)

    started = time.monotonic()
    with pytest.raises(ConcurrencyLimitExceeded) as refused:
        await limiter.acquire("t", wait=0.05)
    assert refused.value.waited >= 0.05 and "after waiting" in str(refused.value)
    releaser = asyncio.create_task(release_later())
    lease = await limiter.acquire("t", wait=2.0)
    await releaser
    assert lease.acquired and 0.1 < time.monotonic() - started < 1.5


async def test_the_slot_is_released_when_the_block_raises(rredis):
    limiter = ConcurrencyLimiter(rredis, 1)
    with pytest.raises(RuntimeError):
        async with limiter.slot("t"):
            raise RuntimeError("handler failed")
    assert (await limiter.try_acquire("t")).acquired


async def test_failure_policies_open_and_closed_when_redis_is_lost(private_redis: RedisServer):
    rr = ResilientRedis.from_url(
        private_redis.url,
        options=ClientOptions(connect_timeout=0.2, command_timeout=0.2),
        breaker=CircuitBreaker(failure_threshold=2, reset_timeout=60),
    )
    try:
        open_ = ConcurrencyLimiter(rr, 1, failure_policy="open", name="open")
        closed = ConcurrencyLimiter(rr, 1, failure_policy="closed", name="closed")
        held = await open_.acquire("t")
        assert held.source == "redis"
        private_redis.kill()
        admitted = [await open_.try_acquire("t") for _ in range(3)]
        assert rr.breaker.state is BreakerState.OPEN
        refused = [await closed.try_acquire("t") for _ in range(3)]
        assert all(a.acquired and a.source == "fallback-open" for a in admitted)
        assert all(not r.acquired and r.source == "fallback-closed" and r.retry_after > 0 for r in refused)
        with pytest.raises(ConcurrencyLimitExceeded, match="fails closed"):
            await closed.acquire("t", wait=5)  # the policy answers at once: no waiting on a dead Redis
        assert await open_.release(held) is False  # logged, not raised: the lease expires by itself
        async with open_.slot("t") as lease:
            assert lease.source == "fallback-open"
        assert rr.breaker.stats.short_circuited >= 4
    finally:
        await rr.aclose()


async def test_the_naive_incr_decr_counter_leaks_a_crashed_holders_slot_forever(rredis, redis_admin):
    assert await naive_acquire(rredis, "t", 1)
    # The holder crashes here: no DECR. The count never comes down, and nothing expires it.
    assert not await naive_acquire(rredis, "t", 1)
    assert redis_admin.pttl(next(iter(redis_admin.scan_iter("*naive*")))) == -1
    await naive_release(rredis, "t")  # only a release that never comes would fix it


# -- many processes -----------------------------------------------------------------------
@pytest.mark.slow  # ~10 s on 2 cores: eight interpreters start, then 400 tasks contend for 5 slots
def test_eight_processes_of_fifty_tasks_never_exceed_a_limit_of_five(redis_url, redis_admin):
    processes, tasks, limit = 8, 50, 5
    counter = "test:cc:inflight"
    cmd = [sys.executable, "-m", "concurrency_helpers", "hammer", redis_url, str(limit), str(tasks), "20",
           counter]
    procs = [subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(processes)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    ran = sum(r["ran"] for r in results)
    refused = sum(r["refused"] for r in results)
    max_seen = max(r["max_seen"] for r in results)
    print(f"\n{processes} processes x {tasks} tasks, limit {limit}: ran {ran}, refused {refused}, "
          f"most in flight at once {max_seen}")
    assert ran + refused == processes * tasks  # every task ran or was refused
    assert all("slots in use" in m or "unavailable" in m.lower() for r in results for m in r["messages"])
    sources = [r["stats"]["by_source"] for r in results]
    assert not any(s.get("fallback-open") for s in sources), sources  # no slot was ever assumed
    expired = sum(r["stats"]["expired_before_release"] for r in results)
    jumps = [r["clock_jump_s"] for r in results]
    assert max_seen <= limit, (max_seen, expired, [r["longest_hold"] for r in results], jumps)
    assert max_seen == limit  # the limit was reached: the test exercised contention
    assert int(redis_admin.get(counter)) == 0
    assert redis_admin.zcard("cl:{tenant-7}:cc:hammer") == 0  # every slot given back


def test_a_sigkilled_holder_frees_its_slot_when_its_lease_expires_and_not_before(redis_url, redis_admin):
    lease = 1.5
    cmd = [sys.executable, "-m", "concurrency_helpers", "hold", redis_url, "1", str(lease)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("held "), proc.stderr.read() if proc.stderr else line
        expires_ms = int(line.split()[2])
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)

    async def probe() -> list[tuple[int, bool]]:
        rr = ResilientRedis.from_url(redis_url)
        limiter = ConcurrencyLimiter(rr, 1, lease_seconds=lease, name="held")
        seen: list[tuple[int, bool]] = []
        try:
            for _ in range(200):  # every 20 ms, for at most ~4 s
                got = await limiter.try_acquire("tenant-7")
                assert got.server_time_ms is not None
                seen.append((got.server_time_ms, got.acquired))
                if got.acquired:
                    break
                await asyncio.sleep(0.02)
        finally:
            await rr.aclose()
        return seen

    seen = asyncio.run(probe())
    refused_times = [t for t, ok in seen if not ok]
    granted = [t for t, ok in seen if ok]
    assert refused_times, "the killed holder's slot must stay taken until its lease expires"
    assert all(t < expires_ms for t in refused_times)  # refused only while the lease was live
    assert granted and granted[0] >= expires_ms  # ...and given again once it expired
    assert granted[0] - expires_ms < 500  # promptly: the next acquire after expiry reclaims it
