"""Job handlers and a naive worker for ``tests/test_queue.py``'s worker subprocesses.

The worker subprocesses load ``queue_helpers:HANDLERS`` through ``cachelab
worker --handlers`` (the tests put this directory on ``PYTHONPATH``).
``python -m queue_helpers naive QUEUE COUNTER BUSY`` runs the seed's
LPUSH/BRPOP loop instead, for the same kill storm.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import redis.asyncio

_client: redis.asyncio.Redis | None = None


def _redis() -> redis.asyncio.Redis:
    global _client
    if _client is None:
        _client = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=5)
    return _client


async def record(payload: dict[str, Any]) -> Any:
    """Work ``ms`` milliseconds, then count the completion, *before* the worker acks."""
    await asyncio.sleep(float(payload.get("ms", 100)) / 1000)
    await _redis().hincrby(payload["counter"], str(payload["n"]), 1)
    return payload["n"]


async def always_fail(payload: dict[str, Any]) -> Any:
    raise RuntimeError(f"always fails (job {payload.get('n')})")


HANDLERS = {"record": record, "always_fail": always_fail}


async def _naive_main(queue_name: str, counter: str, busy: str) -> None:
    from cachelab.client import ClientOptions, ResilientRedis
    from cachelab.patterns.naive_queue import NaiveQueue

    rr = ResilientRedis.from_url(os.environ["REDIS_URL"], options=ClientOptions(command_timeout=2.0))
    queue = NaiveQueue(rr, queue_name)
    pid = str(os.getpid())

    async def processor(job: dict[str, Any]) -> None:
        await rr.client.sadd(busy, pid)  # lets the test pick victims that hold a job
        await asyncio.sleep(float(job["ms"]) / 1000)
        await rr.client.hincrby(counter, str(job["n"]), 1)
        await rr.client.srem(busy, pid)

    await queue.naive_process(processor)


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "naive":
        sys.exit("usage: python -m queue_helpers naive QUEUE COUNTER BUSY")
    asyncio.run(_naive_main(*sys.argv[2:]))
