"""An at-least-once job queue: leases, a reaper, retries with backoff, a dead-letter set.

**The seed's version** (kept as :mod:`cachelab.patterns.naive_queue` for
comparison) LPUSHes JSON onto a list and has workers ``BRPOP`` it in an endless
loop. ``BRPOP`` removes the job *before* it is processed, so a worker that
crashes, is OOM-killed or is redeployed mid-job loses that job without a trace.
Only an exception sends a job to the dead-letter list (a crash does not), there
are no retries, the loop cannot be stopped, and on the guide's ``allkeys-lru``
Redis the queue itself can be evicted under memory pressure.

**The fix.** A job stays in Redis until a worker acknowledges it:

* ``reserve`` leases the job (a *visibility timeout*) instead of removing it;
  ``ack`` deletes the lease and marks it completed; ``fail`` schedules a retry
  after exponential backoff with full jitter, or dead-letters it (keeping the
  last error and the delivery count) after ``max_deliveries`` deliveries;
  ``extend_lease`` keeps a long job's lease; ``release`` hands a job back on
  shutdown, or from a worker that cannot handle its type, without counting
  the delivery.
* The reaper (run inside every ``reserve`` and on a worker tick, bounded work
  per call) puts jobs whose lease expired back in line. Every delivery counts,
  so a job that always crashes its worker ends in the dead-letter set too.
* Every lease carries a token; a reaped job's token changes, so a worker that
  lost its lease (hung, partitioned) cannot ack or fail the new delivery.
* An idempotency key (kept 24 h) maps to the first job's id: enqueueing twice
  returns that id and enqueues nothing.
* ``status(job_id)`` reads the per-job record (queued | running | completed |
  failed | dead, deliveries, last error, result); a completed job's record
  expires after ``status_ttl``. ``failed`` means "the last attempt failed, a
  retry is scheduled at ``next_attempt_at``"; ``dead`` is final.
* ``check_eviction_policy`` refuses an ``allkeys-*`` Redis, which may evict
  queue keys, unless told otherwise.

**Why sorted sets + Lua, not Streams consumer groups.** (The other design is
built too, :class:`~cachelab.patterns.stream_queue.StreamQueue`, selected with
``CACHELAB_QUEUE_BACKEND=streams``; notebook 10 measures the two and RQ side
by side: the stream needs far less memory per waiting job.) Streams give
at-least-once delivery and ``XAUTOCLAIM``, but the rest of what a job queue
needs would be bolted on beside them: a per-job lease (a consumer group claims
by one idle threshold for every message; a long job stays unclaimed only by
resetting its idle time, ``XCLAIM ... JUSTID``, which ``StreamQueue`` does),
delayed retries (streams have no delay: a sorted set is needed anyway),
idempotency and a status record (extra keys anyway), a dead-letter entry with
the last error (``XPENDING`` counts deliveries but keeps no error), and the
oldest job's age (needs the entry id of the first *unread* entry). Acked
entries must also be trimmed separately. Here one sorted set ``pending``
holds ready *and* delayed jobs, scored by the time they become due, so
"promoting" a due retry costs nothing: the clock passes its score. ``leases``
is a sorted set scored by lease expiry, which is exactly the reaper's index.
Every state change is one Lua script, so a job is always in exactly one of
pending / leases / dead, never in none (no window for loss) and never in two.

**Redis Cluster.** All keys of a queue share the hash tag ``{queue name}``
(``cl:queue:{reports}:pending``...). The scripts build a job's hash key from
its id and a prefix passed in ARGV; that key has the same hash tag, so it lives
in the same slot as the declared keys.

**Draining a backlog.** A worker that finishes a job and takes the next
one calls ``ack_and_reserve``: one script (``queue_reserve.lua``, which also
serves ``reserve``, ``ack`` and ``reap``) acks job N exactly as ``ack`` does,
runs the reaper and leases job N+1 exactly as ``reserve`` does, so a busy
worker pays **one round trip and 12 Redis commands per job** (EVALSHA, TIME;
ack: HGET token, ZREM lease, HSET, PEXPIRE, HINCRBY; reap: ZRANGEBYSCORE;
lease: ZPOPMIN, HMGET, HSET, ZADD). It used to be two (``reserve`` then
``ack``) and 18 commands: two scripts each paid EVALSHA and TIME, the lease
took the head with ZRANGEBYSCORE + ZREM where ZPOPMIN does (a head not yet
due goes back with its own score), and checked EXISTS, bumped deliveries and
token with two HINCRBYs, set status with HSET and read the payload with
HMGET, where one HMGET and one HSET do the same. No guarantee changed: the
token check, the lease set, the status record and its TTL, the counters and
the reaper's dead-lettering are the same commands on the same keys. A
worker's jobs in hand share one lease extender: ``extend_leases`` pushes all
their leases in one round trip.

**Round trips per call:** ``enqueue`` 1; ``reserve`` 1 when a job is due
(more only while waiting: the worker blocks on a small notify list between
attempts); ``ack_and_reserve`` 1 (it never waits); ``ack`` / ``fail`` /
``extend_lease`` / ``extend_leases`` (any number of jobs) / ``release`` /
``reap`` / ``stats`` / ``status`` 1 each; ``dead_letters`` 2.

Eviction: queue keys carry no TTL, so ``noeviction`` and ``volatile-*`` never
evict them (under ``volatile-*`` the TTL'd idempotency records and completed
status records may go first: that weakens deduplication, it loses no job).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio
import redis.exceptions

from cachelab.client import ResilientRedis
from cachelab.patterns.keys import make_key

log = logging.getLogger("cachelab.queue")

_NOTIFY_CAP = 64
_REAP_BATCH = 100
_MAX_ERROR_CHARS = 4000
_SAFE_POLICIES = ("noeviction",)


class EvictingRedisError(RuntimeError):
    """The server's maxmemory-policy can evict keys without a TTL, i.e. queued jobs."""


@dataclass(frozen=True)
class Job:
    """One delivery of a job. ``token`` identifies this lease; a re-delivery gets a new one."""

    id: str
    payload: dict[str, Any]
    deliveries: int
    enqueued_at: float  # epoch seconds (server clock)
    token: str
    consumer: str = ""

    @property
    def type(self) -> str | None:
        value = self.payload.get("type")
        return str(value) if value is not None else None


@dataclass(frozen=True)
class JobStatus:
    """The per-job record ``GET /api/jobs/{id}`` shows."""

    id: str
    status: str  # queued | running | completed | failed | dead
    deliveries: int
    enqueued_at: float | None
    last_error: str | None = None
    result: Any = None
    payload: dict[str, Any] | None = None
    next_attempt_at: float | None = None
    completed_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class DeadLetter:
    id: str
    payload: dict[str, Any] | None
    deliveries: int
    last_error: str | None
    dead_at: float | None


@dataclass(frozen=True)
class QueueStats:
    ready: int  # due now, waiting for a worker (the depth)
    delayed: int  # retries waiting out their backoff, and scheduled jobs
    in_flight: int  # leased to a worker
    dead: int  # dead-letter set size
    oldest_ready_age: float  # seconds the longest-waiting due job has waited
    counters: dict[str, int] = field(default_factory=dict)  # enqueued, completed, retries, reaped...

    @property
    def completed(self) -> int:
        return self.counters.get("completed", 0)

    @property
    def retries(self) -> int:
        return self.counters.get("retries", 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "delayed": self.delayed,
            "in_flight": self.in_flight,
            "dead": self.dead,
            "oldest_ready_age": self.oldest_ready_age,
            **self.counters,
        }


def backoff_delay(deliveries: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**(deliveries-1))].

    Full jitter spreads retries of jobs that failed together (e.g. a downstream
    outage) instead of having them hammer the dependency in lock-step.
    """
    exp = min(cap, base * (2 ** max(0, min(deliveries - 1, 62))))
    return (rng or random).uniform(0, exp)


def _ms(seconds: float) -> int:
    return max(0, int(seconds * 1000))


def _s(ms: Any) -> float | None:
    if ms is None or ms == b"" or ms == "":
        return None
    return int(ms) / 1000.0


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _per_node(reply: Any, name: str) -> list[str]:
    """The values of ``name`` in a CONFIG GET / INFO reply: one server's, or a cluster's by node."""
    if not isinstance(reply, dict):
        return []
    replies = reply.values() if reply and all(isinstance(v, dict) for v in reply.values()) else [reply]
    out = []
    for one in replies:
        value = one.get(name) or one.get(name.encode())
        if value:
            out.append(_text(value) or "")
    return out


def _riskiest(policies: list[str]) -> str | None:
    """An evicting policy if any node has one, else the first (they usually agree)."""
    for policy in policies:
        if policy not in _SAFE_POLICIES and not policy.startswith("volatile-"):
            return policy
    return policies[0] if policies else None


class QueueBase:
    """What both queues share: settings, key naming, the eviction check, waiting for work,
    and dead-letter listing. :class:`JobQueue` (sorted sets + Lua) and
    :class:`~cachelab.patterns.stream_queue.StreamQueue` (a Streams consumer group) build on it,
    and :class:`~cachelab.worker.Worker` runs either."""

    #: Key parts after the queue's name, before each key's own part (keeps two backends apart).
    key_parts: tuple[str, ...] = ()

    def __init__(
        self,
        rr: ResilientRedis,
        name: str,
        *,
        lease_seconds: float = 30,
        max_deliveries: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 300,
        prefix: str = "cl",
        status_ttl: float = 86400,
        idempotency_ttl: float = 86400,
        allow_evicting: bool = False,
        check_eviction: bool = True,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be > 0")
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be >= 1")
        self.rr = rr
        self.name = name
        self.lease_seconds = lease_seconds
        self.max_deliveries = max_deliveries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.status_ttl = status_ttl
        self.idempotency_ttl = idempotency_ttl
        self.allow_evicting = allow_evicting
        self._eviction_checked = not check_eviction
        self._eviction_lock = asyncio.Lock()
        self._scope = f"{prefix}:queue"
        self.dead_key = self._key("dead")
        self.stats_key = self._key("stats")
        self.notify_key = self._key("notify")
        self.job_prefix = self._key("job") + ":"

    def _key(self, *parts: object) -> str:
        return make_key(self._scope, self.name, *self.key_parts, *parts)

    # -- keys --------------------------------------------------------------
    def job_key(self, job_id: str) -> str:
        return self._key("job", job_id)

    def idempotency_key(self, key: str) -> str:
        return self._key("idem", key)

    # -- eviction safety ---------------------------------------------------
    async def eviction_policy(self) -> str | None:
        """The server's maxmemory-policy: CONFIG GET, else INFO memory, else None.

        On Redis Cluster every primary is asked (any of them may own the queue's
        slot, now or after a reshard) and the riskiest answer is returned.
        """
        # A flag, not node objects: redis-py resolves it to the current primaries.
        target = {"target_nodes": redis.asyncio.RedisCluster.PRIMARIES} if self.rr.is_cluster else {}
        try:
            conf = await self.rr.call(self.rr.client.config_get, "maxmemory-policy", **target)
            value = _riskiest(_per_node(conf, "maxmemory-policy"))
            if value:
                return value
        except redis.exceptions.ResponseError as exc:  # disabled, renamed, or denied by ACL
            log.debug("CONFIG GET refused (%s); falling back to INFO memory", exc)
        try:
            info = await self.rr.call(self.rr.client.info, "memory", **target)
            value = _riskiest(_per_node(info, "maxmemory_policy"))
            if value:
                return value
        except redis.exceptions.ResponseError as exc:
            log.debug("INFO memory refused: %s", exc)
        return None

    async def check_eviction_policy(self, allow_evicting: bool | None = None) -> str | None:
        """Raise :class:`EvictingRedisError` if Redis may evict queue keys; return the policy.

        ``allkeys-*`` may evict any key, including the pending set: queued jobs
        vanish silently. ``volatile-*`` only evicts keys with a TTL, and queue
        keys have none. With ``allow_evicting`` the check logs a warning instead.
        """
        allow = self.allow_evicting if allow_evicting is None else allow_evicting
        policy = await self.eviction_policy()
        self._eviction_checked = True
        if policy is None:
            log.warning(
                "queue %s: could not read maxmemory-policy (CONFIG and INFO refused); make sure the "
                "server does not use an allkeys-* policy, or queued jobs can be evicted",
                self.name,
            )
            return None
        if policy in _SAFE_POLICIES or policy.startswith("volatile-"):
            return policy
        message = (
            f"Redis maxmemory-policy is {policy!r}: under memory pressure it can evict queue "
            f"{self.name!r} and lose jobs. Use 'noeviction' (or a volatile-* policy) for the queue's "
            "Redis, or run with allow_evicting / --allow-evicting-redis to accept the risk."
        )
        if not allow:
            raise EvictingRedisError(message)
        log.warning("%s (allowed)", message)
        return policy

    async def _ensure_safe(self) -> None:
        if self._eviction_checked:
            return
        async with self._eviction_lock:
            if not self._eviction_checked:
                await self.check_eviction_policy()

    # -- shared consumer and observation helpers -------------------------
    def _max_block(self) -> float:
        """How long one blocking wait may last: well inside the client's socket timeout."""
        pool = getattr(self.rr.client, "connection_pool", None)  # a RedisCluster has none
        kwargs = pool.connection_kwargs if pool is not None else self.rr.client.connection_kwargs
        socket_timeout = kwargs.get("socket_timeout")
        if not socket_timeout:
            return 1.0
        return max(0.01, min(1.0, float(socket_timeout) / 2))

    async def _reserve_until(self, consumer_id: str, timeout: float) -> Job | None:
        """Both backends' reserve: take a due job now (``_consume``), else wait on the notify list
        (at most until the next job is due) and try again, until ``timeout`` seconds have passed."""
        await self._ensure_safe()
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            job, _, reply = await self._consume(1, consumer_id)  # type: ignore[attr-defined]
            if job is not None:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            next_due = int(reply[1])
            wait = min(remaining, self._max_block())
            if next_due >= 0:
                wait = min(wait, max(next_due / 1000.0, 0.001))
            await self._wait_for_work(wait)

    async def _wait_for_work(self, seconds: float) -> None:
        """Block on the notify list (a hint that a job became due), at most ``seconds``."""
        if seconds < 0.01:
            await asyncio.sleep(seconds)
            return
        await self.rr.call(self.rr.client.blpop, [self.notify_key], timeout=round(seconds, 3))

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead-lettered jobs with their last error. Two round trips."""
        ids = await self.rr.call(self.rr.client.zrange, self.dead_key, 0, max(0, limit - 1))
        if not ids:
            return []

        async def fetch() -> list[Any]:
            pipe = self.rr.client.pipeline(transaction=False)
            for raw_id in ids:
                pipe.hmget(self.job_key(_text(raw_id) or ""), "payload", "deliveries", "last_error",
                           "dead_at")
            return await pipe.execute()

        rows = await self.rr.call(fetch)
        out = []
        for raw_id, (payload, deliveries, error, dead_at) in zip(ids, rows, strict=True):
            out.append(
                DeadLetter(
                    id=_text(raw_id) or "",
                    payload=orjson.loads(payload) if payload else None,
                    deliveries=int(deliveries or 0),
                    last_error=_text(error),
                    dead_at=_s(dead_at),
                )
            )
        return out


class JobQueue(QueueBase):
    """A named at-least-once queue on one Redis (see the module docstring)."""

    def __init__(self, rr: ResilientRedis, name: str, **kwargs: Any) -> None:
        super().__init__(rr, name, **kwargs)
        self.pending_key = self._key("pending")
        self.leases_key = self._key("leases")

    # -- producer ----------------------------------------------------------
    async def enqueue(
        self, payload: dict[str, Any], *, idempotency_key: str | None = None, delay: float = 0
    ) -> str:
        """Add a job; return its id. One round trip (after the one-time eviction check).

        With ``idempotency_key``, a second enqueue within ``idempotency_ttl``
        returns the first job's id and adds nothing.
        """
        await self._ensure_safe()
        body = orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
        job_id = uuid.uuid4().hex
        job_key = self.job_key(job_id)
        idem_key = self.idempotency_key(idempotency_key) if idempotency_key is not None else job_key
        result = await self.rr.run_script(
            "queue_enqueue",
            [self.pending_key, job_key, self.stats_key, self.notify_key, idem_key],
            [
                job_id,
                body,
                _ms(delay),
                1 if idempotency_key is not None else 0,
                _ms(self.idempotency_ttl),
                _NOTIFY_CAP,
            ],
        )
        return _text(result[0]) or job_id

    # -- consumer ----------------------------------------------------------
    async def _consume(self, mode: int, consumer_id: str = "", done: Job | None = None,
                       result: Any = None) -> tuple[Job | None, int, list[Any]]:
        """One ``queue_reserve`` call: ack ``done`` (if given), reap, lease (mode 1), as asked.

        Returns (the leased job or None, 1 if ``done`` was acked else 0, the rest of the reply).
        """
        ack = ["", "", "", 0]
        if done is not None:
            ack = [done.id, done.token, orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS),
                   _ms(self.status_ttl)]
        reply = await self.rr.run_script(
            "queue_reserve",
            [self.pending_key, self.leases_key, self.dead_key, self.stats_key],
            [self.job_prefix, _ms(self.lease_seconds), consumer_id, self.max_deliveries, _REAP_BATCH,
             mode, *ack],
        )
        if done is not None and not int(reply[-1]):
            log.warning("queue %s: ack of job %s refused: its lease was lost", self.name, done.id)
        if int(reply[0]) != 1:
            return None, int(reply[-1]), reply
        _, job_id, payload, deliveries, enqueued_at, token, acked = reply
        job = Job(
            id=_text(job_id) or "",
            payload=orjson.loads(payload) if payload else {},
            deliveries=int(deliveries),
            enqueued_at=_s(enqueued_at) or 0.0,
            token=_text(token) or "",
            consumer=consumer_id,
        )
        return job, int(acked), reply

    async def reserve(self, consumer_id: str, timeout: float = 0) -> Job | None:
        """Lease the longest-due job to ``consumer_id``, waiting up to ``timeout`` seconds.

        The job stays in Redis (in the leases set) until :meth:`ack`,
        :meth:`fail` or :meth:`release`; if none comes before the lease
        expires, the reaper makes it due again.
        """
        return await self._reserve_until(consumer_id, timeout)

    async def ack(self, job: Job, result: Any = None) -> bool:
        """Mark ``job`` completed (keeping ``result`` in its status record). False if the lease was lost."""
        _, acked, _ = await self._consume(2, done=job, result=result)
        return bool(acked)

    async def ack_and_reserve(
        self, job: Job, result: Any = None, consumer_id: str | None = None
    ) -> tuple[bool, Job | None]:
        """:meth:`ack` ``job``, then lease the next due job to ``consumer_id`` (default: the
        job's consumer) without waiting: (acked, next job or None). One round trip.

        Exactly :meth:`ack` followed by ``reserve(consumer_id, timeout=0)``, in one script: the
        ack is refused the same way when the lease was lost (the next job is leased anyway),
        and the reaper runs as in every reserve.
        """
        await self._ensure_safe()
        nxt, acked, _ = await self._consume(1, consumer_id or job.consumer, job, result)
        return bool(acked), nxt

    async def fail(self, job: Job, error: str, *, retry: bool = True) -> str:
        """Record a failed attempt: ``"retry"`` (after backoff), ``"dead"``, or ``"lost"`` (lease lost)."""
        backoff = backoff_delay(job.deliveries, self.backoff_base, self.backoff_cap)
        outcome = await self.rr.run_script(
            "queue_fail",
            [self.pending_key, self.leases_key, self.dead_key, self.job_key(job.id), self.stats_key],
            [job.id, job.token, error[:_MAX_ERROR_CHARS], _ms(backoff), self.max_deliveries,
             1 if retry else 0],
        )
        return {1: "retry", 2: "dead"}.get(int(outcome), "lost")

    async def extend_lease(self, job: Job) -> bool:
        """Push the lease ``lease_seconds`` into the future. False if it was already lost."""
        return (await self.extend_leases([job]))[0]

    async def extend_leases(self, jobs: list[Job]) -> list[bool]:
        """:meth:`extend_lease` for every job in ``jobs``, in one round trip (none if empty)."""
        if not jobs:
            return []
        pairs = [part for job in jobs for part in (job.id, job.token)]
        reply = await self.rr.run_script(
            "queue_extend", [self.leases_key], [_ms(self.lease_seconds), self.job_prefix, *pairs]
        )
        return [bool(int(ok)) for ok in reply]

    async def release(self, job: Job, delay: float = 0.0) -> bool:
        """Hand ``job`` back without counting this delivery.

        ``delay=0`` (graceful shutdown): due at once, in its place in line. ``delay>0`` (a
        worker with no handler for the job's type): due ``delay`` seconds from now, counted
        as ``deferred``, so that worker moves on and one that can handle the job takes it.
        """
        ok = await self.rr.run_script(
            "queue_release",
            [self.pending_key, self.leases_key, self.job_key(job.id), self.stats_key, self.notify_key],
            [job.id, job.token, _NOTIFY_CAP, _ms(delay)],
        )
        return bool(ok)

    async def reap(self) -> tuple[int, int]:
        """Re-queue up to 100 jobs whose lease expired; return (re-queued, dead-lettered)."""
        reply = await self.rr.run_script(
            "queue_reserve",
            [self.pending_key, self.leases_key, self.dead_key, self.stats_key],
            [self.job_prefix, _ms(self.lease_seconds), "", self.max_deliveries, _REAP_BATCH, 0,
             "", "", "", 0],
        )
        return int(reply[2]), int(reply[3])

    # -- observation -------------------------------------------------------
    async def status(self, job_id: str) -> JobStatus | None:
        """The job's record, or None if unknown (or expired after completion)."""
        raw = await self.rr.call(self.rr.client.hgetall, self.job_key(job_id))
        if not raw:
            return None
        h = {_text(k): v for k, v in raw.items()}
        status = _text(h.get("status")) or "unknown"
        result = orjson.loads(h["result"]) if h.get("result") else None
        return JobStatus(
            id=job_id,
            status=status,
            deliveries=int(h.get("deliveries") or 0),
            enqueued_at=_s(h.get("enqueued_at")),
            last_error=_text(h.get("last_error")),
            result=result,
            payload=orjson.loads(h["payload"]) if h.get("payload") else None,
            next_attempt_at=_s(h.get("ready_at")) if status == "failed" else None,
            completed_at=_s(h.get("completed_at")),
        )

    async def stats(self) -> QueueStats:
        """Depth, delayed, in flight, dead-letter size, oldest ready age and counters: one round trip."""
        reply = await self.rr.run_script(
            "queue_stats", [self.pending_key, self.leases_key, self.dead_key, self.stats_key], []
        )
        ready, delayed, in_flight, dead, age_ms, *flat = reply
        counters = {_text(flat[i]) or "": int(flat[i + 1]) for i in range(0, len(flat), 2)}
        return QueueStats(
            ready=int(ready),
            delayed=int(delayed),
            in_flight=int(in_flight),
            dead=int(dead),
            oldest_ready_age=int(age_ms) / 1000.0,
            counters=counters,
        )

    async def requeue_dead(self, job_id: str) -> bool:
        """Give a dead-lettered job a fresh delivery budget and make it due now."""
        ok = await self.rr.run_script(
            "queue_requeue_dead",
            [self.pending_key, self.dead_key, self.job_key(job_id), self.stats_key, self.notify_key],
            [job_id, _NOTIFY_CAP],
        )
        return bool(ok)
