"""Job queue per operation: ours (leases, acks) beside the seed's LPUSH/BRPOP.

* ``queue-enqueue`` — ours: one ``EVALSHA`` (job hash, pending set, counters,
  notify list); the seed: one ``LPUSH``.
* ``queue-cycle`` — a job's whole life, one op: ours is enqueue + reserve
  (lease) + ack, three ``EVALSHA``; the seed is ``LPUSH`` + ``BRPOP``, two
  round trips, and the job has left Redis before it is processed (a crash
  loses it). Reserve+ack alone is the cycle minus enqueue.

``memory_per_key`` on the enqueue rows: ours is one queued job's hash; the
seed keeps jobs as list elements, so its row carries ``bytes_per_job`` (the
list's memory over its length) instead.
"""

from __future__ import annotations

from typing import Any

import redis

from cachelab.client import ResilientRedis
from cachelab.harness.payloads import REPORT_JOB
from cachelab.patterns.naive_queue import NaiveQueue
from cachelab.patterns.queue import JobQueue


def _queue(rr: ResilientRedis) -> JobQueue:
    return JobQueue(rr, "reports", lease_seconds=30)


def test_enqueue(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    queue = _queue(bench_rredis)
    first = arun(queue.enqueue(REPORT_JOB))  # also runs the one-time eviction-policy check
    bench_async(
        lambda: queue.enqueue(REPORT_JOB),
        group="queue-enqueue",
        memory_key=queue.job_key(first),
        extra={"variant": "ours"},
    )


def test_naive_enqueue(bench_async: Any, bench_rredis: ResilientRedis, bench_admin: redis.Redis):
    queue = NaiveQueue(bench_rredis, "reports")
    info = bench_async(
        lambda: queue.naive_enqueue(REPORT_JOB), group="queue-enqueue", extra={"variant": "naive"}
    )
    length = bench_admin.llen(queue.list_key)
    info["bytes_per_job"] = (bench_admin.memory_usage(queue.list_key, samples=0) or 0) / max(length, 1)


def test_enqueue_reserve_ack(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    queue = _queue(bench_rredis)

    async def cycle() -> None:
        await queue.enqueue(REPORT_JOB)
        job = await queue.reserve("worker-1")
        assert job is not None
        assert await queue.ack(job, {"pages": 3})

    arun(cycle())
    bench_async(cycle, group="queue-cycle", extra={"variant": "ours"})
    assert arun(queue.stats()).in_flight == 0


def test_naive_enqueue_dequeue(bench_async: Any, bench_rredis: ResilientRedis):
    """The seed's ``LPUSH`` and one turn of its ``while (true) BRPOP`` loop."""
    queue = NaiveQueue(bench_rredis, "reports")
    rr = bench_rredis

    async def cycle() -> None:
        await queue.naive_enqueue(REPORT_JOB)
        item = await rr.call(rr.client.brpop, [queue.list_key], timeout=1)
        assert item is not None

    bench_async(cycle, group="queue-cycle", extra={"variant": "naive"})
