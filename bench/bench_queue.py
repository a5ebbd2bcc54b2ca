"""Job queue per operation: ours (leases, acks) beside the seed's LPUSH/BRPOP, the Streams
queue and RQ.

* ``queue-enqueue`` — ours: one ``EVALSHA`` (job hash, pending set, counters,
  notify list); the Streams queue: one ``EVALSHA`` (``XADD`` of the payload,
  counters, notify list; no per-job key); the seed: one ``LPUSH``.
* ``queue-cycle`` — a job's whole life, one op: ours is enqueue + reserve
  (lease) + ack, three ``EVALSHA``, and so is the Streams queue's (reserve:
  ``XAUTOCLAIM`` of abandoned messages, then ``XREADGROUP``; ack: ``XACK`` and
  the status record, plus one ``XTRIM`` every 100 acks); the seed is ``LPUSH``
  + ``BRPOP``, two round trips, and the job has left Redis before it is
  processed (a crash loses it).
* ``queue-drain`` — one job taken off a backlog and finished, one op: list
  and Streams queues (reserve + ack, two ``EVALSHA``), the list queue as the
  worker drains it (``list-ack-and-reserve``: the job in hand acked by the
  call that leases the next, one ``EVALSHA``) beside RQ's worker loop
  body (dequeue, execute in-process with ``SimpleWorker``, heartbeat; RQ rows
  skip without the ``peers`` extra). The backlog is enqueued before timing;
  when a long run uses it up, 500 more are enqueued inside the op that found
  it empty (counted in that round's time, never in the cost pass).

``memory_per_key`` on the list queue's enqueue row is one queued job's hash;
the seed keeps jobs as list elements, so its row carries ``bytes_per_job`` (the
list's memory over its length) instead. The drain rows carry
``bytes_per_queued_job``: ``used_memory`` grown by their backlog over its size,
every structure a queued job needs included (hash and sorted-set member,
stream entry, RQ's job hash and list element).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from cachelab.client import ResilientRedis
from cachelab.harness.payloads import REPORT_JOB
from cachelab.patterns.naive_queue import NaiveQueue
from cachelab.patterns.queue import JobQueue
from cachelab.patterns.stream_queue import StreamQueue

BACKLOG = 1000  # the cost pass takes at most 201 of them; timed rounds refill when needed
REFILL = 500
RESULT = {"pages": 3}


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


# -- the Streams queue beside the list queue ----------------------------------------------
def _stream_queue(rr: ResilientRedis) -> StreamQueue:
    return StreamQueue(rr, "reports", lease_seconds=30)


def test_stream_enqueue(bench_async: Any, bench_rredis: ResilientRedis, bench_admin: redis.Redis, arun: Any):
    queue = _stream_queue(bench_rredis)
    arun(queue.enqueue(REPORT_JOB))  # also runs the one-time eviction-policy check
    info = bench_async(lambda: queue.enqueue(REPORT_JOB), group="queue-enqueue", extra={"variant": "streams"})
    length = bench_admin.xlen(queue.stream_key)
    info["bytes_per_job"] = (bench_admin.memory_usage(queue.stream_key, samples=0) or 0) / max(length, 1)


def test_stream_enqueue_reserve_ack(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    queue = _stream_queue(bench_rredis)

    async def cycle() -> None:
        await queue.enqueue(REPORT_JOB)
        job = await queue.reserve("worker-1")
        assert job is not None
        assert await queue.ack(job, RESULT)

    arun(cycle())
    bench_async(cycle, group="queue-cycle", extra={"variant": "streams"})
    assert arun(queue.stats()).in_flight == 0


# -- drain: one job off a backlog, list vs streams vs RQ ---------------------------------------
def _used_memory(admin: redis.Redis) -> int:
    return int(admin.info("memory")["used_memory"])


def _backlog(
    queue: JobQueue | StreamQueue, admin: redis.Redis, arun: Any
) -> tuple[Callable[..., Awaitable[None]], float]:
    """Queue ``BACKLOG`` jobs (after one through, for the eviction check and the scripts):
    ``fill(n, at_once=1)`` to top it up, and the memory per queued job."""

    async def fill(n: int, at_once: int = 1) -> None:
        for start in range(0, n, at_once):
            await asyncio.gather(*(queue.enqueue(REPORT_JOB) for _ in range(min(at_once, n - start))))

    arun(queue.enqueue(REPORT_JOB))
    arun(queue.ack(arun(queue.reserve("worker-1")), RESULT))
    before = _used_memory(admin)
    arun(fill(BACKLOG))  # one at a time: new pool connections' buffers would count as job memory
    return fill, (_used_memory(admin) - before) / BACKLOG


@pytest.mark.parametrize("backend", ["list", "streams"])
def test_drain(backend: str, bench_async: Any, bench_rredis: ResilientRedis, bench_admin: redis.Redis,
               arun: Any):
    queue: JobQueue | StreamQueue = _queue(bench_rredis) if backend == "list" else _stream_queue(bench_rredis)
    fill, per_job = _backlog(queue, bench_admin, arun)

    async def drain_one() -> None:
        job = await queue.reserve("worker-1")
        if job is None:
            await fill(REFILL, at_once=20)
            job = await queue.reserve("worker-1")
        assert job is not None and await queue.ack(job, RESULT)

    bench_async(drain_one, group="queue-drain", extra={"variant": backend, "bytes_per_queued_job": per_job})


def test_drain_ack_and_reserve(bench_async: Any, bench_rredis: ResilientRedis, bench_admin: redis.Redis,
                               arun: Any):
    """The list queue's drain as :class:`~cachelab.worker.Worker` runs it: the job in hand is acked
    by the call that leases the next one (``ack_and_reserve``), one ``EVALSHA`` per job."""
    queue = _queue(bench_rredis)
    fill, per_job = _backlog(queue, bench_admin, arun)
    held = [arun(queue.reserve("worker-1"))]

    async def drain_one() -> None:
        acked, job = await queue.ack_and_reserve(held[0], RESULT)
        if job is None:
            await fill(REFILL, at_once=20)
            job = await queue.reserve("worker-1")
        assert acked and job is not None
        held[0] = job

    bench_async(drain_one, group="queue-drain",
                extra={"variant": "list-ack-and-reserve", "bytes_per_queued_job": per_job})
    arun(queue.ack(held[0], RESULT))


def test_rq_drain(bench_sync: Any, bench_sync_redis: redis.Redis, bench_admin: redis.Redis):
    """One job through RQ's worker loop body on a backlog: dequeue, execute in-process, heartbeat."""
    rq = pytest.importorskip("rq")
    queue = rq.Queue("reports", connection=bench_sync_redis)
    worker = rq.SimpleWorker([queue], connection=bench_sync_redis)
    worker.bootstrap(logging_level="WARNING")  # registers the worker once, as `rq worker` does
    data = rq.Queue.prepare_data("json.dumps", args=(REPORT_JOB,))
    left = [0]

    def fill(n: int) -> None:
        queue.enqueue_many([data] * n)
        left[0] += n

    before = _used_memory(bench_admin)
    fill(BACKLOG)
    per_job = (_used_memory(bench_admin) - before) / BACKLOG

    def drain_one() -> Any:
        if left[0] == 0:  # RQ's dequeue blocks on an empty queue: refill first
            fill(REFILL)
        left[0] -= 1
        job, job_queue = worker.dequeue_job_and_maintain_ttl(None)
        worker.execute_job(job, job_queue)
        worker.heartbeat()
        return job

    try:
        bench_sync(drain_one, group="queue-drain", ops=50, extra={
            "variant": "rq", "bytes_per_queued_job": per_job,
            "fairness": "RQ is synchronous and pickles its jobs; its loop also keeps registries, a "
                        "heartbeat and a result record",
            # 6 166.9-6 167.8 B/op over eight trials: a trial rounds to either whole byte.
            "bytes_vary": "RQ's records carry timestamps and durations whose text changes length"})
    finally:
        worker.teardown()
