"""Subprocesses for ``tests/test_concurrency.py`` (run as ``python -m concurrency_helpers ...``).

``hammer URL LIMIT TASKS WAIT COUNTER`` runs ``TASKS`` concurrent tasks against
one limiter key; each holds a slot for 5-20 ms and, while holding it, counts
itself in a shared Redis counter (``INCR`` after the acquire, ``DECR`` before
the release), so the counter's largest value is the most holders any process
saw at once. Prints one JSON line: tasks run, refused, the largest count seen,
and the refusal messages.

``hold URL LIMIT LEASE`` takes one slot, prints ``held <lease id> <expiry ms>``
and sleeps until killed.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

import redis.asyncio

from cachelab.client import ClientOptions, ResilientRedis
from cachelab.patterns.concurrency import ConcurrencyLimiter, ConcurrencyLimitExceeded

KEY = "tenant-7"


async def hammer(url: str, limit: int, tasks: int, wait: float, counter: str) -> dict[str, object]:
    # 400 connections open at once on a busy machine: generous timeouts, and "closed", so that a
    # Redis that is slow to answer refuses a task instead of admitting it without a slot (which is
    # what "open" means, and would count as a breach of the bound here).
    rr = ResilientRedis.from_url(url, options=ClientOptions(command_timeout=5.0, connect_timeout=5.0))
    plain = redis.asyncio.Redis.from_url(url, socket_timeout=5)
    limiter = ConcurrencyLimiter(rr, limit, lease_seconds=10, name="hammer", failure_policy="closed")
    rng = random.Random()
    seen: list[int] = []
    refused: list[str] = []
    longest = 0.0

    async def one() -> None:
        nonlocal longest
        await asyncio.sleep(rng.uniform(0, 0.05))
        try:
            async with limiter.slot(KEY, wait=wait):
                began = time.monotonic()
                seen.append(int(await plain.incr(counter)))
                await asyncio.sleep(rng.uniform(0.005, 0.02))
                await plain.decr(counter)
                longest = max(longest, time.monotonic() - began)
        except ConcurrencyLimitExceeded as exc:
            refused.append(str(exc))

    sec, usec = await plain.time()
    began_server, began_local = sec + usec / 1e6, time.monotonic()
    try:
        await asyncio.gather(*(one() for _ in range(tasks)))
        sec, usec = await plain.time()
        # Leases live on the server's wall clock: a jump of it (a VM resumed, a clock stepped)
        # expires them early. Reported so that a failure can be told from one.
        clock_jump = (sec + usec / 1e6 - began_server) - (time.monotonic() - began_local)
    finally:
        await plain.aclose()
        await rr.aclose()
    return {"ran": len(seen), "refused": len(refused), "max_seen": max(seen, default=0),
            "messages": refused[:3], "stats": limiter.stats.snapshot(), "longest_hold": longest,
            "clock_jump_s": clock_jump}


async def hold(url: str, limit: int, lease: float) -> None:
    rr = ResilientRedis.from_url(url, options=ClientOptions(command_timeout=5.0))
    limiter = ConcurrencyLimiter(rr, limit, lease_seconds=lease, name="held")
    got = await limiter.acquire(KEY)
    print(f"held {got.id} {got.expires_at_ms}", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "hammer":
        url, limit, tasks, wait, counter = args
        print(json.dumps(asyncio.run(hammer(url, int(limit), int(tasks), float(wait), counter))), flush=True)
    elif mode == "hold":
        url, limit, lease = args
        asyncio.run(hold(url, int(limit), float(lease)))
    else:
        sys.exit("usage: python -m concurrency_helpers hammer|hold ...")
