"""Concurrency limiter per operation: a slot taken and given back, a refusal, and the naive counter.

* ``concurrency-cycle`` — one op is an acquire and its release: ours is two
  ``EVALSHA`` (lease in a sorted set scored by expiry, reclaim of expired
  leases, key TTL); the naive version is ``INCR`` + ``DECR`` (two round trips
  too, but a holder that dies leaks its slot forever).
* ``concurrency-refused`` — an acquire when every slot is taken: one
  ``EVALSHA`` that reclaims nothing and answers with the earliest expiry.

``memory_per_key`` on the refused row is the sorted set of a key with all its
slots (``limit`` = 5) taken.
"""

from __future__ import annotations

from typing import Any

from cachelab.client import ResilientRedis
from cachelab.patterns.concurrency import ConcurrencyLimiter, naive_acquire, naive_release

TENANT = "acme"


def test_acquire_release(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    limiter = ConcurrencyLimiter(bench_rredis, 5, lease_seconds=30, name="reports")
    held = [arun(limiter.acquire(TENANT)) for _ in range(2)]  # others in flight: a realistic set

    async def cycle() -> None:
        lease = await limiter.acquire(TENANT)
        assert await limiter.release(lease)

    bench_async(cycle, group="concurrency-cycle", extra={"variant": "ours", "in_flight_besides": len(held)})


def test_naive_incr_decr(bench_async: Any, bench_rredis: ResilientRedis):
    async def cycle() -> None:
        assert await naive_acquire(bench_rredis, TENANT, 5)
        await naive_release(bench_rredis, TENANT)

    bench_async(cycle, group="concurrency-cycle", extra={"variant": "naive"})


def test_acquire_refused(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    limiter = ConcurrencyLimiter(bench_rredis, 5, lease_seconds=300, name="reports")
    for _ in range(5):
        arun(limiter.acquire(TENANT))

    async def refused() -> None:
        assert not (await limiter.try_acquire(TENANT)).acquired

    bench_async(refused, group="concurrency-refused", memory_key=limiter.key(TENANT),
                extra={"variant": "ours", "limit": 5})
