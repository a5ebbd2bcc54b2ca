"""The same at-least-once job queue, built on a Redis Streams consumer group.

:class:`~cachelab.patterns.queue.JobQueue` keeps jobs in sorted sets moved by
Lua; Redis also has its own at-least-once primitive, the consumer group
(``XADD``, ``XREADGROUP``, ``XACK``, a pending-entries list per consumer,
``XAUTOCLAIM`` for messages whose consumer went silent). Users ask how the
two compare, so :class:`StreamQueue` has ``JobQueue``'s public shape (enqueue,
reserve, ack, fail with backoff and dead letters, extend_lease, release, reap,
status, stats, dead_letters, requeue_dead, idempotency keys) and runs under
the same :class:`~cachelab.worker.Worker` (``CACHELAB_QUEUE_BACKEND=streams``).
The seed's version is the same as for ``JobQueue`` (see
:mod:`cachelab.patterns.naive_queue`): BRPOP loses the job a crashed worker held.

**What the stream gives.** A job is a stream entry whose id is the job's id
(the entry holds only the payload: no per-job key while it waits, which is the
memory difference from ``JobQueue``). ``reserve`` delivers with
``XREADGROUP ... >`` into the consumer's pending list; the entry stays there,
with a delivery count, until ``XACK``. A consumer that dies leaves its entry
pending; once it has been idle for ``lease_seconds``, the next ``reserve``
claims it with ``XAUTOCLAIM`` (which counts the delivery), so abandoned jobs
come back without a reaper that moves anything. ``extend_lease`` resets the
idle time (``XCLAIM ... JUSTID``, not a delivery).

**What had to be added beside it** (the reasons ``JobQueue`` did not start
here, measured now rather than argued):

* *Delays.* Streams have none: a retry after backoff (and a delayed enqueue)
  waits in a sorted set with a job hash holding its payload, and ``reserve``
  promotes due ones with a fresh ``XADD`` (fields ``j`` job id, ``d``
  deliveries so far). A released job also goes to the end of the stream: an
  entry cannot be put back in its place.
* *Dead letters with the last error.* The pending list counts deliveries but
  keeps no error: ``fail`` and the claim path write the job hash (payload,
  deliveries, last error) and a dead-letter sorted set, as ``JobQueue`` does.
  A message that always kills its worker is dead-lettered when its deliveries
  are used up, like any other.
* *Ownership.* ``XACK`` accepts an ack from any consumer of the group. Every
  state change here is a Lua script that first checks the pending entry's
  consumer and delivery count (the job's token), so a worker that lost its
  message to a claim cannot ack, fail or extend the new delivery.
* *Status and idempotency.* A completed job gets a status record (result,
  payload, TTL ``status_ttl``); an idempotency key maps to the first job's id.
* *Trimming.* Acked entries stay in the stream until trimmed. ``trim`` (every
  ``trim_every`` acks and on each reaper tick) runs ``XTRIM MINID ~`` at the
  oldest entry still pending or not yet delivered, so it **never removes an
  unacknowledged message** (a ``MAXLEN`` cap would). The stream then holds the
  unacknowledged messages plus the acknowledged ones after the oldest pending
  one (bounded by ``lease_seconds × max_deliveries``, the longest a message can
  stay pending unless its lease is extended) and at most a node of already
  acknowledged entries.
* *Depth.* "Ready" (added, not yet delivered) is counted by the scripts that
  add and read (``XINFO GROUPS`` has ``lag`` only from Redis 7); the oldest
  ready job's age is the entry after the group's last-delivered id.

**Consumer group.** ``workers``, created on first need (``XGROUP CREATE ... 0
MKSTREAM``: it sees entries added before it existed). Consumers are named per
worker slot (``host:pid:slot``); names of dead processes stay in the group
until deleted (``XGROUP DELCONSUMER``), harmless but listed by ``XINFO``.

**Redis ≥ 6.2** (``XAUTOCLAIM``, ``XPENDING ... IDLE``, ``XTRIM MINID``).
**Cluster:** every key shares the hash tag ``{queue name}``.

**Round trips per call:** ``enqueue`` 1; ``reserve`` 1 when a job is there
(while waiting, a ``BLPOP`` on a notify list between attempts, as ``JobQueue``);
``ack`` 1 (plus one ``trim`` every ``trim_every`` acks); ``ack_and_reserve`` 1
(the ack and the next delivery in one script, ``squeue_reserve.lua``, as in
``JobQueue``; plus the same periodic ``trim``); ``fail`` / ``extend_lease`` /
``extend_leases`` (any number of jobs) / ``release`` / ``status`` / ``stats`` /
``trim`` 1 each; ``reap`` 2 (dead-letter pass, trim); ``dead_letters`` 2.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import redis.exceptions

from cachelab.client import ResilientRedis
from cachelab.patterns.queue import (
    _MAX_ERROR_CHARS,
    _NOTIFY_CAP,
    _REAP_BATCH,
    Job,
    JobQueue,
    JobStatus,
    QueueBase,
    QueueStats,
    _ms,
    _s,
    _text,
    backoff_delay,
)

GROUP = "workers"
_ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")

#: ``CACHELAB_QUEUE_BACKEND`` values and what they build.
BACKENDS: tuple[str, ...] = ("list", "streams")


@dataclass(frozen=True)
class StreamQueueStats(QueueStats):
    """:class:`QueueStats` plus the stream's length (acked entries not yet trimmed included)."""

    stream_length: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "stream_length": self.stream_length}


def _split_token(job: Job) -> tuple[str, str]:
    """A delivery's token is ``<entry id>/<delivery count of that entry>``."""
    entry, _, count = job.token.partition("/")
    return entry, count


class StreamQueue(QueueBase):
    """A named at-least-once queue on a Streams consumer group (see the module docstring)."""

    key_parts = ("streams",)

    def __init__(self, rr: ResilientRedis, name: str, *, trim_every: int = 100, **kwargs: Any) -> None:
        super().__init__(rr, name, **kwargs)
        if trim_every < 1:
            raise ValueError("trim_every must be >= 1")
        self.trim_every = trim_every
        self.group = GROUP
        self.stream_key = self._key("stream")
        self.delayed_key = self._key("delayed")
        self.cursor_key = self._key("claim-cursor")

    async def _run(self, script: str, keys: list[Any], args: list[Any]) -> Any:
        """EVALSHA ``script``; if the group does not exist yet (or the stream was deleted), create
        it and try once more. Nothing extra is sent while the group exists."""
        try:
            return await self.rr.run_script(script, keys, args)
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
        await self.create_group()
        return await self.rr.run_script(script, keys, args)

    async def create_group(self) -> None:
        """``XGROUP CREATE <stream> workers 0 MKSTREAM``; an existing group is left as it is."""
        try:
            await self.rr.call(self.rr.client.xgroup_create, self.stream_key, self.group, id="0",
                               mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- producer ----------------------------------------------------------
    async def enqueue(
        self, payload: dict[str, Any], *, idempotency_key: str | None = None, delay: float = 0
    ) -> str:
        """Add a job; return its id (the entry id, or a random id for a delayed job). One round trip.

        With ``idempotency_key``, a second enqueue within ``idempotency_ttl`` returns the first
        job's id and adds nothing.
        """
        await self._ensure_safe()
        body = orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
        idem_key = self.idempotency_key(idempotency_key) if idempotency_key is not None else self.stream_key
        result = await self.rr.run_script(
            "squeue_enqueue",
            [self.stream_key, self.delayed_key, self.stats_key, self.notify_key, idem_key],
            [body, _ms(delay), 1 if idempotency_key is not None else 0, _ms(self.idempotency_ttl),
             _NOTIFY_CAP, self.job_prefix, uuid.uuid4().hex],
        )
        return _text(result[0]) or ""

    # -- consumer ----------------------------------------------------------
    async def _consume(self, mode: int, consumer_id: str = "", done: Job | None = None,
                       result: Any = None) -> tuple[Job | None, int, list[Any]]:
        """One ``squeue_reserve`` call: ack ``done`` (if given), then reap (mode 0) or deliver
        (mode 1) as asked; mode 2 only acks. Returns (the delivered job or None, the completed
        count after ``done``'s ack or 0 when its delivery was lost, the reply)."""
        ack: list[Any] = ["", "", "", "", 0]
        if done is not None:
            entry, count = _split_token(done)
            ack = [entry, done.consumer, count, orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS),
                   _ms(self.status_ttl)]
        reply = await self._run(
            "squeue_reserve",
            [self.stream_key, self.delayed_key, self.dead_key, self.stats_key, self.cursor_key,
             self.notify_key],
            [self.job_prefix, self.group, consumer_id, _ms(self.lease_seconds), self.max_deliveries,
             _REAP_BATCH, mode, _NOTIFY_CAP, *ack],
        )
        completed = int(reply[-1])
        if done is not None and completed and completed % self.trim_every == 0:
            await self.trim()
        if int(reply[0]) != 1:
            return None, completed, reply
        _, entry, payload, deliveries, enqueued_at, count, job_id, _ = reply
        job = Job(
            id=_text(job_id) or "",
            payload=orjson.loads(payload) if payload else {},
            deliveries=int(deliveries),
            enqueued_at=_s(enqueued_at) or 0.0,
            token=f"{_text(entry)}/{int(count)}",
            consumer=consumer_id,
        )
        return job, completed, reply

    async def reserve(self, consumer_id: str, timeout: float = 0) -> Job | None:
        """Deliver a job to ``consumer_id``: an abandoned one first (XAUTOCLAIM), else a new one.

        The job stays pending on ``consumer_id`` until :meth:`ack`, :meth:`fail` or
        :meth:`release`; if none comes within ``lease_seconds`` of its last delivery (or
        :meth:`extend_lease`), another consumer's ``reserve`` claims it.
        """
        return await self._reserve_until(consumer_id, timeout)

    async def ack(self, job: Job, result: Any = None) -> bool:
        """Mark ``job`` completed (keeping ``result``). False if the delivery was lost to a claim."""
        _, completed, _ = await self._consume(2, done=job, result=result)
        return completed > 0

    async def ack_and_reserve(
        self, job: Job, result: Any = None, consumer_id: str | None = None
    ) -> tuple[bool, Job | None]:
        """:meth:`ack` ``job``, then deliver the next job to ``consumer_id`` (default: the job's
        consumer) without waiting: (acked, next job or None). One round trip (plus the ``trim``
        every ``trim_every`` acks), as :meth:`JobQueue.ack_and_reserve
        <cachelab.patterns.queue.JobQueue.ack_and_reserve>`."""
        await self._ensure_safe()
        nxt, completed, _ = await self._consume(1, consumer_id or job.consumer, job, result)
        return completed > 0, nxt

    async def fail(self, job: Job, error: str, *, retry: bool = True) -> str:
        """Record a failed attempt: ``"retry"`` (after backoff), ``"dead"``, or ``"lost"``."""
        entry, count = _split_token(job)
        backoff = backoff_delay(job.deliveries, self.backoff_base, self.backoff_cap)
        outcome = await self._run(
            "squeue_fail",
            [self.stream_key, self.delayed_key, self.dead_key, self.stats_key],
            [self.group, entry, job.consumer, count, error[:_MAX_ERROR_CHARS], _ms(backoff),
             self.max_deliveries, 1 if retry else 0, self.job_prefix],
        )
        return {1: "retry", 2: "dead"}.get(int(outcome), "lost")

    async def extend_lease(self, job: Job) -> bool:
        """Reset the message's idle time so no one claims it for another lease. False if lost."""
        return (await self.extend_leases([job]))[0]

    async def extend_leases(self, jobs: list[Job]) -> list[bool]:
        """:meth:`extend_lease` for every job in ``jobs``, in one round trip (none if empty)."""
        if not jobs:
            return []
        args: list[Any] = [self.group]
        for job in jobs:
            entry, count = _split_token(job)
            args += [entry, job.consumer, count]
        return [bool(int(ok)) for ok in await self._run("squeue_extend", [self.stream_key], args)]

    async def release(self, job: Job, delay: float = 0.0) -> bool:
        """Hand ``job`` back without counting this delivery (due at once, or after ``delay``)."""
        entry, count = _split_token(job)
        return bool(await self._run(
            "squeue_release",
            [self.stream_key, self.delayed_key, self.stats_key, self.notify_key],
            [self.group, entry, job.consumer, count, _ms(delay), _NOTIFY_CAP, self.job_prefix],
        ))

    async def reap(self) -> tuple[int, int]:
        """Reaper tick: promote due retries, dead-letter idle messages out of deliveries, trim.

        Returns ``(0, dead-lettered)``: abandoned messages are not re-queued here but claimed
        by the next :meth:`reserve` (a claim is a delivery).
        """
        reply = await self._run(
            "squeue_reserve",
            [self.stream_key, self.delayed_key, self.dead_key, self.stats_key, self.cursor_key,
             self.notify_key],
            [self.job_prefix, self.group, "", _ms(self.lease_seconds), self.max_deliveries, _REAP_BATCH, 0,
             _NOTIFY_CAP, "", "", "", "", 0],
        )
        await self.trim()
        return 0, int(reply[3])

    async def trim(self) -> int:
        """Trim acknowledged entries from the head of the stream; never an unacknowledged one."""
        return int(await self.rr.run_script("squeue_trim", [self.stream_key], [self.group]))

    # -- observation -------------------------------------------------------
    async def status(self, job_id: str) -> JobStatus | None:
        """The job's record, or None if unknown (or expired after completion). One round trip."""
        is_entry = bool(_ENTRY_ID.match(job_id))
        flat = await self.rr.run_script(
            "squeue_status", [self.stream_key, self.job_key(job_id)], [self.group, job_id, int(is_entry)]
        )
        if not flat:
            return None
        h = {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
        status = _text(h.get("status")) or "unknown"
        return JobStatus(
            id=job_id,
            status=status,
            deliveries=int(h.get("deliveries") or 0),
            enqueued_at=_s(h.get("enqueued_at")),
            last_error=_text(h.get("last_error")),
            result=orjson.loads(h["result"]) if h.get("result") else None,
            payload=orjson.loads(h["payload"]) if h.get("payload") else None,
            next_attempt_at=_s(h.get("ready_at")) if status == "failed" else None,
            completed_at=_s(h.get("completed_at")),
        )

    async def stats(self) -> StreamQueueStats:
        """Ready, delayed, in flight, dead, oldest ready age, stream length, counters: one round trip."""
        reply = await self.rr.run_script(
            "squeue_stats", [self.stream_key, self.delayed_key, self.dead_key, self.stats_key], [self.group]
        )
        ready, delayed, in_flight, dead, age_ms, length, *flat = reply
        counters = {_text(flat[i]) or "": int(flat[i + 1]) for i in range(0, len(flat), 2)}
        return StreamQueueStats(
            ready=int(ready),
            delayed=int(delayed),
            in_flight=int(in_flight),
            dead=int(dead),
            oldest_ready_age=int(age_ms) / 1000.0,
            counters=counters,
            stream_length=int(length),
        )

    async def requeue_dead(self, job_id: str) -> bool:
        """Give a dead-lettered job a fresh delivery budget: a new message at the end of the stream."""
        return bool(await self.rr.run_script(
            "squeue_requeue_dead",
            [self.stream_key, self.dead_key, self.job_key(job_id), self.stats_key, self.notify_key],
            [job_id, _NOTIFY_CAP],
        ))


def create_queue(backend: str, rr: ResilientRedis, name: str, **kwargs: Any) -> JobQueue | StreamQueue:
    """The queue for ``CACHELAB_QUEUE_BACKEND``: ``"list"`` (:class:`JobQueue`) or ``"streams"``.

    The two keep their keys apart (``cl:queue:{name}:…`` and ``cl:queue:{name}:streams:…``),
    so switching backends strands jobs queued in the other one: drain it first.
    """
    if backend == "list":
        return JobQueue(rr, name, **kwargs)
    if backend == "streams":
        return StreamQueue(rr, name, **kwargs)
    raise ValueError(f"unknown queue backend {backend!r}; choose one of {', '.join(BACKENDS)}")
