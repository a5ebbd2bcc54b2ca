"""Concurrent-requests limiting: at most N in flight per key, with leases that expire.

A rate limiter bounds requests per window; it does not stop one tenant from
holding every worker with slow requests (report generation, big exports).
Stripe runs a concurrent-requests limiter beside its rate limiter for exactly
this. This module is that limiter.

The naive version
-----------------
``INCR inflight:<key>`` when a request starts (refuse if the result is over
the limit, and ``DECR`` back), ``DECR`` when it ends. Its flaws:

* a process that crashes, is OOM-killed or redeployed between INCR and DECR
  never gives its slot back: the count only grows, and once it reaches the
  limit that key is refused forever (the same leak as the seed's rate limiter
  without a TTL, but with no expiry that could fix it: a TTL on the counter
  would reset *live* requests too);
* a DECR after a refused INCR, or a retried DECR after a lost reply, drifts the
  count below the truth, and then the limit admits more than N;
* nobody can tell which requests hold the slots.

The fix
-------
* A slot is a **lease**: a random id in a sorted set scored by its expiry on
  the server's clock (``TIME``; all processes share one clock). A holder that
  dies stops renewing, its lease expires, and the next acquire reclaims the
  slot (``ZREMRANGEBYSCORE -inf now``) before counting. Nothing is ever leaked
  for longer than one lease.
* **Acquire is one EVALSHA** (``lua/concurrency_acquire.lua``): reclaim,
  count, add, and keep the key's TTL at least the latest lease (an idle key
  disappears by itself), atomically. The caller picks the lease id, so a call
  retried after a lost reply finds its own lease and does not take a second
  slot. **Release is one EVALSHA** that removes only that lease id (a
  release can never free somebody else's slot, and releasing twice is
  harmless). :meth:`ConcurrencyLimiter.extend` pushes a long holder's expiry;
  :meth:`ConcurrencyLimiter.slot` can do it in the background (``keep_alive``).
* :meth:`ConcurrencyLimiter.acquire` may wait a bounded time for a slot,
  polling with capped, jittered backoff (one round trip per poll; waiting is
  not FIFO: under sustained overload a waiter may be refused after its wait
  while a newcomer gets in). Refusal is :class:`ConcurrencyLimitExceeded`,
  which says what was full and when the worst case frees a slot.
* The **failure policy** is explicit, as for the rate limiters: ``"open"``
  (admit without a slot) or ``"closed"`` (refuse). Calls go through the
  breaker, so during an outage the policy answers at once. A release while
  Redis is down is logged and dropped: the lease expires by itself.
* Keys are ``make_key(prefix, identifier, "cc"[, name])``: the identifier
  (tenant, user, route) is escaped and is the hash tag, so a hostile id can
  neither collide with another's key nor glob, and Redis Cluster routes each
  key to one slot.

Choosing ``lease_seconds``: longer than the slowest legitimate hold (or use
``keep_alive``), because a lease that expires under a live holder lets one
more in; shorter means a dead holder's slot comes back sooner. Leases are
measured on the server's wall clock, like key expiry: if that clock jumps
forward (a stepped clock, a VM resumed after a pause), live leases expire
early and the bound can be exceeded until their holders finish.

Cost: acquire 1 round trip (one EVALSHA; one more per poll while waiting),
release 1, extend 1. Memory: one sorted-set member per slot in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from cachelab.client import ResilientRedis
from cachelab.patterns.keys import DEFAULT_PREFIX, make_key
from cachelab.resilience import RedisUnavailable

log = logging.getLogger("cachelab.concurrency")

ConcurrencyFailurePolicy = Literal["open", "closed"]
FAILURE_POLICIES: tuple[str, ...] = ("open", "closed")
SOURCES: tuple[str, ...] = ("redis", "fallback-open", "fallback-closed")


@dataclass(frozen=True, slots=True)
class Lease:
    """One acquire decision. ``retry_after`` (seconds, 0 when acquired) is the *worst case*:
    when the earliest lease expires if no holder releases; holders usually release sooner."""

    acquired: bool
    identifier: str
    key: str
    id: str
    limit: int
    in_flight: int  # leases held right after this decision (this one included when acquired)
    retry_after: float
    source: str  # redis | fallback-open | fallback-closed
    expires_at_ms: int | None = None  # server clock; None when Redis was not consulted
    server_time_ms: int | None = None

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.in_flight)

    def headers(self, retry_hint: float = 1.0) -> dict[str, str]:
        """``X-Concurrency-Limit``/``-Remaining``, and ``Retry-After`` on a refusal.

        ``Retry-After`` is ``retry_hint`` (how long a typical holder keeps a slot), capped by
        the worst case: telling a client to wait out a 30 s lease when requests take 200 ms
        would turn a momentary peak into a 30 s outage for it.
        """
        headers = {"X-Concurrency-Limit": str(self.limit), "X-Concurrency-Remaining": str(self.remaining)}
        if not self.acquired:
            wait = min(retry_hint, self.retry_after) if self.retry_after > 0 else retry_hint
            headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return headers


class ConcurrencyLimitExceeded(Exception):
    """Every slot for the key was taken (for the whole wait, if there was one)."""

    def __init__(self, lease: Lease, waited: float = 0.0) -> None:
        self.lease = lease
        self.waited = waited
        if lease.source == "fallback-closed":
            why = "Redis is unavailable and this limiter fails closed"
        else:
            why = f"{lease.in_flight} of {lease.limit} slots in use"
        waited_text = f" after waiting {waited:.2f}s" if waited > 0 else ""
        super().__init__(
            f"concurrency limit for {lease.identifier!r} reached{waited_text}: {why}; a slot frees when a "
            f"holder finishes, at the latest in {lease.retry_after:.1f}s (lease expiry)"
        )


@dataclass
class ConcurrencyStats:
    """Decisions and releases, for a metrics endpoint."""

    acquired: int = 0
    refused: int = 0
    released: int = 0  # released while live
    expired_before_release: int = 0  # the holder outlived its lease: one more may have been let in
    by_source: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))

    def record(self, lease: Lease) -> None:
        if lease.acquired:
            self.acquired += 1
        else:
            self.refused += 1
        self.by_source[lease.source] = self.by_source.get(lease.source, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "acquired": self.acquired,
            "refused": self.refused,
            "released": self.released,
            "expired_before_release": self.expired_before_release,
            "by_source": dict(self.by_source),
        }


class ConcurrencyLimiter:
    """At most ``limit`` leases in flight per identifier (see the module docstring)."""

    def __init__(
        self,
        rr: ResilientRedis,
        limit: int,
        *,
        lease_seconds: float = 30.0,
        failure_policy: ConcurrencyFailurePolicy = "open",
        prefix: str = DEFAULT_PREFIX,
        name: str | None = None,
        poll_min: float = 0.005,
        poll_max: float = 0.1,
    ) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1_000_000:
            raise ValueError(f"limit must be an integer in 1..1000000, got {limit!r}")
        if not (isinstance(lease_seconds, int | float) and math.isfinite(lease_seconds)
                and 0.001 <= lease_seconds <= 86400):
            raise ValueError(f"lease_seconds must be seconds in 0.001..86400, got {lease_seconds!r}")
        if failure_policy not in FAILURE_POLICIES:
            raise ValueError(f"failure_policy must be one of {FAILURE_POLICIES}, got {failure_policy!r}")
        if not 0 < poll_min <= poll_max:
            raise ValueError("poll intervals must satisfy 0 < poll_min <= poll_max")
        self.rr = rr
        self.limit = limit
        self.lease_seconds = float(lease_seconds)
        self.lease_ms = max(1, round(lease_seconds * 1000))
        self.failure_policy = failure_policy
        self.prefix = prefix
        self.name = name
        self.poll_min = poll_min
        self.poll_max = poll_max
        self.stats = ConcurrencyStats()

    def key(self, identifier: object) -> str:
        """``prefix:{identifier}:cc[:name]``, every part escaped (see :mod:`~cachelab.patterns.keys`)."""
        parts: tuple[object, ...] = ("cc",) if self.name is None else ("cc", self.name)
        return make_key(self.prefix, identifier, *parts)

    # -- acquire -----------------------------------------------------------
    async def try_acquire(self, identifier: object, lease_id: str | None = None) -> Lease:
        """One attempt, one round trip: a slot now, or a refusal (never waits, never raises when full)."""
        key = self.key(identifier)
        lease_id = lease_id or uuid.uuid4().hex
        try:
            reply = await self.rr.run_script(
                "concurrency_acquire", [key], [self.limit, self.lease_ms, lease_id]
            )
        except RedisUnavailable:
            lease = self._fallback(identifier, key, lease_id)
        else:
            ok, in_flight, value, now = (int(v) for v in reply)
            lease = Lease(
                acquired=bool(ok),
                identifier=str(identifier),
                key=key,
                id=lease_id,
                limit=self.limit,
                in_flight=in_flight,
                retry_after=0.0 if ok else max(0, value) / 1000.0,
                source="redis",
                expires_at_ms=value if ok else None,
                server_time_ms=now,
            )
        self.stats.record(lease)
        return lease

    def _fallback(self, identifier: object, key: str, lease_id: str) -> Lease:
        if self.failure_policy == "open":
            return Lease(True, str(identifier), key, lease_id, self.limit, 0, 0.0, "fallback-open")
        # Closed: suggest coming back when the breaker next probes Redis.
        wait = min(self.lease_seconds, self.rr.breaker.reset_timeout)
        return Lease(False, str(identifier), key, lease_id, self.limit, self.limit, wait, "fallback-closed")

    async def acquire(self, identifier: object, *, wait: float = 0.0) -> Lease:
        """A slot, waiting up to ``wait`` seconds for one; else :class:`ConcurrencyLimitExceeded`.

        Waiting polls (capped, jittered backoff from ``poll_min`` to ``poll_max``); each poll
        is one round trip and reuses the lease id, so it can never hold two slots.
        """
        if not (math.isfinite(wait) and wait >= 0):
            raise ValueError(f"wait must be a finite number of seconds >= 0, got {wait!r}")
        started = time.monotonic()
        deadline = started + wait
        lease_id = uuid.uuid4().hex
        delay = self.poll_min
        while True:
            lease = await self.try_acquire(identifier, lease_id)
            if lease.acquired:
                return lease
            remaining = deadline - time.monotonic()
            if remaining <= 0 or lease.source != "redis":
                raise ConcurrencyLimitExceeded(lease, waited=time.monotonic() - started if wait else 0.0)
            await asyncio.sleep(min(remaining, delay * random.uniform(0.5, 1.0)))
            delay = min(self.poll_max, delay * 2)

    # -- release and extend ------------------------------------------------
    async def release(self, lease: Lease) -> bool:
        """Give the slot back; True if the lease was still live. Never raises for Redis being down.

        False means the lease had expired first (its holder outlived ``lease_seconds``, so one
        more request may have been admitted meanwhile: lengthen the lease or use ``keep_alive``),
        or it was already released, or it was never a Redis lease (admitted by the open failure
        policy), or Redis could not be reached (then the lease expires by itself).
        """
        if not lease.acquired or lease.source != "redis":
            return False
        try:
            outcome = int(await self.rr.run_script("concurrency_release", [lease.key], [lease.id]))
        except RedisUnavailable as exc:
            log.warning("could not release concurrency lease on %s (%s); it frees itself within %.1fs",
                        lease.key, exc, self.lease_seconds)
            return False
        if outcome == 1:
            self.stats.released += 1
        elif outcome == 0:
            self.stats.expired_before_release += 1
            log.warning("concurrency lease on %s had expired before its release: the holder ran longer "
                        "than lease_seconds=%.1f", lease.key, self.lease_seconds)
        else:
            log.info("concurrency lease on %s was not held at release (released twice, or it expired "
                     "and its slot was reclaimed)", lease.key)
        return outcome == 1

    async def extend(self, lease: Lease) -> bool:
        """Push a live lease's expiry ``lease_seconds`` from now. False if it had already expired.

        Raises :class:`~cachelab.resilience.RedisUnavailable` when Redis cannot be asked.
        """
        if not lease.acquired or lease.source != "redis":
            return False
        return bool(await self.rr.run_script("concurrency_extend", [lease.key], [lease.id, self.lease_ms]))

    async def _keep_alive(self, lease: Lease) -> None:
        interval = max(0.01, self.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self.extend(lease):
                    log.warning("concurrency lease on %s expired while held", lease.key)
                    return
            except RedisUnavailable as exc:
                log.warning("could not extend concurrency lease on %s: %s", lease.key, exc)

    @contextlib.asynccontextmanager
    async def slot(
        self, identifier: object, *, wait: float = 0.0, keep_alive: bool = False
    ) -> AsyncIterator[Lease]:
        """``async with limiter.slot(tenant):`` hold one slot for the block; released on any exit.

        Raises :class:`ConcurrencyLimitExceeded` (before the block runs) when no slot came
        within ``wait``. ``keep_alive`` extends the lease every ``lease_seconds / 3`` while the
        block runs (one round trip each), for holds that may outlast one lease.
        """
        lease = await self.acquire(identifier, wait=wait)
        keeper = asyncio.create_task(self._keep_alive(lease)) if keep_alive and lease.source == "redis" \
            else None
        try:
            yield lease
        finally:
            if keeper is not None:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
            await self.release(lease)


# -- the naive version, for comparison only ----------------------------------


async def naive_acquire(rr: ResilientRedis, identifier: object, limit: int, *,
                        prefix: str = DEFAULT_PREFIX) -> bool:
    """``INCR``, and ``DECR`` back when over the limit. Do not use: a holder that dies leaks its slot."""
    key = make_key(prefix, identifier, "cc", "naive")
    if int(await rr.call(rr.client.incr, key)) <= limit:
        return True
    await rr.call(rr.client.decr, key)
    return False


async def naive_release(rr: ResilientRedis, identifier: object, *, prefix: str = DEFAULT_PREFIX) -> None:
    """The naive version's ``DECR`` when a request ends."""
    await rr.call(rr.client.decr, make_key(prefix, identifier, "cc", "naive"))
