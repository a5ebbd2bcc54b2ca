"""The seed's job queue, kept only to show what it loses. Do not use it.

The seed LPUSHes JSON onto ``queue:<name>`` and runs ``while (true) BRPOP``:
BRPOP *removes* the job before the processor runs, so a worker killed mid-job
(OOM, deploy, SIGKILL) loses it; only an exception reaches the dead-letter
list; there are no retries and no way to stop the loop. The tests kill naive
workers mid-job and count the jobs that never complete; the reference queue
is :class:`cachelab.patterns.queue.JobQueue`.

Round trips: enqueue 1; each processed job 1 (BRPOP) plus 1 on failure.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from cachelab.client import ResilientRedis
from cachelab.patterns.keys import make_key


class NaiveQueue:
    """LPUSH / BRPOP with a dead-letter list on exceptions only: the seed's design."""

    def __init__(self, rr: ResilientRedis, name: str, *, prefix: str = "cl") -> None:
        self.rr = rr
        self.name = name
        self.list_key = make_key(f"{prefix}:naivequeue", name, "jobs")
        self.dlq_key = make_key(f"{prefix}:naivequeue", name, "dlq")

    async def naive_enqueue(self, job: dict[str, Any]) -> str:
        job_id = uuid.uuid4().hex
        body = orjson.dumps({**job, "timestamp": int(time.time() * 1000), "id": job_id})
        await self.rr.call(self.rr.client.lpush, self.list_key, body)
        return job_id

    async def naive_process(
        self,
        processor: Callable[[dict[str, Any]], Awaitable[Any]],
        *,
        stop: asyncio.Event | None = None,
        block: float = 0.2,
    ) -> int:
        """The seed's loop (with a stop event added so tests can end it); returns jobs popped."""
        popped = 0
        while stop is None or not stop.is_set():
            item = await self.rr.call(self.rr.client.brpop, [self.list_key], timeout=block)
            if item is None:
                continue
            popped += 1
            # The job has left Redis: from here to the end of the processor, a crash loses it.
            try:
                await processor(orjson.loads(item[1]))
            except Exception:
                await self.rr.call(self.rr.client.lpush, self.dlq_key, item[1])
        return popped

    async def depth(self) -> int:
        return int(await self.rr.call(self.rr.client.llen, self.list_key))
