"""Leased quota: a process takes a few units of a rate limit at once and spends them locally.

The seed's version
------------------
``rateLimit()`` runs ``INCR`` + ``EXPIRE`` on every request: two round trips to a
shared counter before the request does anything (one EVALSHA in
:mod:`cachelab.patterns.ratelimit`). At a high request rate that round trip
costs more client CPU than everything else a warm cached read does.

The flaw, and the fix
---------------------
A per-process limiter (:mod:`cachelab.patterns.ratelimit_local`) has no round
trip but lets N processes admit N × the limit. A **lease** keeps the limit
global and the round trips rare: when an identifier has no units left in this
process, the request's own check (cost 1) goes out with a second check of cost
``units`` in the same pipeline (no extra round trip). If Redis admits that one,
this process holds ``units`` units it already paid for, and the next ``units``
requests of the identifier are admitted without Redis. The lease is an ordinary
check of the limiter's own algorithm with a cost, so every algorithm is
supported, and a refused lease changes nothing: all five scripts only read on a
denial, so an identifier near its limit falls back to exact one-by-one checks.

What it guarantees
------------------
* **Never more than the limit is paid for.** Every admission was paid for by a
  check Redis allowed. A unit that is never spent is lost, which only makes the
  limit stricter (``units + low_water`` per process at most, see below).
* **A unit is spent at most ``lifetime`` after Redis granted it** (1 s by
  default), so admissions move at most that much later than their debit: a
  request counts as if it came up to ``lifetime`` earlier. For the fixed window
  a lease also ends with the window it was paid in, so the per-window limit is
  exact. For the sliding and bucket algorithms the bound of an interval ``d``
  becomes the algorithm's bound for ``d + lifetime``.
* **Headers stay honest but stale**: ``X-RateLimit-Remaining`` of a leased
  admission is what Redis had left when the lease was taken plus the units this
  process still holds. Other processes' spending since is not seen.

Refilling ahead: a lease that runs dry makes every request of the identifier
already in flight go to Redis one by one until the refill lands (measured with
``cachelab hotpath --fast-reads``, 16 connections and 100 units: one request in
seven). So when a take leaves ``low_water`` units (half of ``units``: at a
quarter the refill still landed late under that load), :meth:`QuotaLeases.top_up`
sends the next lease's check in the background, and a lease granted while the
old one still has units waits behind it: the old units are spent first, each
unit still within its own lease's lifetime. A request that finds the lease dry
while the next one is in flight waits for it (:meth:`QuotaLeases.arrival`, at
most ``lifetime``) instead of making a round trip of its own. The price is quota
held unspent: up to ``units + low_water`` per identifier per process instead of
``units``. :meth:`QuotaLeases.check` does not refill ahead: a caller that never
yields to the event loop between checks would spend the units before the
refill could land.

Sizing: ``units`` trades round trips for how much quota one process can hold
unspent. :func:`lease_units` takes 1/50 of the limit (at most 100): with the
default 1000 per minute, one Redis check per 20 requests of an identifier.

Round trips per call: :meth:`QuotaLeases.take` 0. A refill rides in a batch that
is sent anyway (:meth:`refill_call`, one more EVALSHA in it), or goes alone in
the background ahead of need (:meth:`top_up`), once per ``units`` requests;
:meth:`QuotaLeases.check` is 1 round trip per ``units`` requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cachelab.client import ScriptCall
from cachelab.patterns.ratelimit import FixedWindowLimiter, RateLimiter, RateLimitResult
from cachelab.resilience import RedisUnavailable

#: Never hold more than this many units of one identifier, whatever the limit.
MAX_LEASE_UNITS = 100


def lease_units(limiter: RateLimiter) -> int:
    """A lease's size for ``limiter``: 1/50 of its limit, between 1 (no leasing) and 100."""
    return max(1, min(MAX_LEASE_UNITS, limiter.capacity // 50))


@dataclass(slots=True)
class _Lease:
    units: int  # still unspent
    expires: float  # clock time after which no unit of it may be spent
    remaining: int  # what Redis had left for the identifier after granting the lease
    reset_at: float  # clock time when the identifier's quota is whole again (for headers)
    then: _Lease | None = None  # granted ahead of need: spent once this one is spent or expired


class QuotaLeases:
    """Leases of one :class:`RateLimiter`'s quota, per identifier, held by this process.

    Bounded: at most ``max_keys`` identifiers hold a lease; past that the least
    recently refilled one is dropped (its units are lost, which is the strict
    direction). Not thread-safe: one per event loop, like the app's Redis client.
    """

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        units: int | None = None,
        lifetime: float = 1.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        units = lease_units(limiter) if units is None else units
        if not isinstance(units, int) or isinstance(units, bool) or not 1 <= units <= limiter.capacity:
            raise ValueError(f"units must be an integer in [1, {limiter.capacity}], got {units!r}")
        if not lifetime > 0:
            raise ValueError(f"lifetime must be > 0 seconds, got {lifetime!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        self.limiter = limiter
        self.units = units
        self.lifetime = float(lifetime)
        self.max_keys = max_keys
        self._clock = clock
        self._leases: OrderedDict[str, _Lease] = OrderedDict()
        self._pending: dict[str, float] = {}  # identifier -> when its refill stops blocking others
        self._arrivals: dict[str, asyncio.Future[None]] = {}  # identifier -> top_up's refill, landed
        #: A take that leaves this many units sends the next lease's check ahead (:meth:`top_up`).
        self.low_water = max(1, units // 2)
        # A fixed window's lease must not outlive the window it was paid in.
        self._ends_with_window = isinstance(limiter, FixedWindowLimiter)

    @property
    def enabled(self) -> bool:
        """False when the limit is too small to lease (one unit is one check)."""
        return self.units > 1

    def _live(self, identifier: str, now: float) -> _Lease | None:
        """``identifier``'s lease with a unit to spend now, moving on to the one granted ahead (or
        dropping the chain) when the first is spent or expired."""
        lease = self._leases.get(identifier)
        while lease is not None and (lease.units <= 0 or now >= lease.expires):
            lease = lease.then
            if lease is None:
                del self._leases[identifier]
            else:
                self._leases[identifier] = lease
        return lease

    def held(self, identifier: str) -> int:
        """Unspent units of ``identifier``'s live lease in this process (0 if none)."""
        lease = self._live(identifier, self._clock())
        return 0 if lease is None else lease.units

    def take(self, identifier: str) -> RateLimitResult | None:
        """Admit one request from ``identifier``'s lease; None if it has no live unit here."""
        now = self._clock()
        lease = self._live(identifier, now)
        if lease is None:
            return None
        lease.units -= 1
        ahead = lease.then
        # What Redis had left at the latest grant, plus what this process still holds of it.
        remaining = lease.units + (ahead.remaining + ahead.units if ahead is not None else lease.remaining)
        limiter = self.limiter
        result = RateLimitResult(True, limiter.limit, remaining, max(0.0, lease.reset_at - now), 0.0, "lease")
        limiter.stats.record(result)
        return result

    def top_up(self, identifier: str) -> bool:
        """After a :meth:`take`: if ``identifier``'s lease is down to :attr:`low_water` units with no
        lease waiting behind it, send the next one's check in the background (the client's
        bounded :class:`~cachelab.resilience.BackgroundTasks`), so the requests in flight when
        this one runs dry find units instead of going to Redis one by one. True if one was sent."""
        lease = self._leases.get(identifier)
        if lease is None or lease.then is not None or lease.units > self.low_water or not self.enabled:
            return False
        call = self.refill_call(identifier)
        if call is None:
            return False  # one is already on its way
        landed = asyncio.get_running_loop().create_future()
        if not self.limiter.rr.background.submit(lambda: self._refill(identifier, call, landed)):
            self.refill_failed(identifier)
            return False
        self._arrivals[identifier] = landed
        return True

    async def arrival(self, identifier: str) -> bool:
        """Wait (at most ``lifetime``) for the lease :meth:`top_up` sent for ``identifier`` to land;
        False if none was on its way. A request that finds the lease dry while the next one is in
        flight waits the rest of one round trip, instead of making a round trip of its own."""
        landed = self._arrivals.get(identifier)
        if landed is None:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(landed), self.lifetime)
        return True

    async def _refill(self, identifier: str, call: ScriptCall, landed: asyncio.Future[None]) -> None:
        try:
            [reply] = await self.limiter.rr.batch([call])
            if isinstance(reply, Exception):
                raise reply
        except BaseException:
            self.refill_failed(identifier)
            raise  # RedisUnavailable included: the background runner counts it as failed
        else:
            self.refilled(identifier, reply)
        finally:
            if self._arrivals.get(identifier) is landed:
                del self._arrivals[identifier]
            if not landed.done():
                landed.set_result(None)

    async def check(self, identifier: str) -> RateLimitResult:
        """One request's decision: a leased unit, else the request's own check sent with a refill
        (one round trip). :func:`cachelab.app.auth.authenticate` does the same in parts
        (:meth:`take`, :meth:`refill_call`, :meth:`refilled`), to batch them with its other calls."""
        leased = self.take(identifier)
        if leased is not None:
            # No top_up here: a caller that never yields to the loop between checks (a tight loop)
            # would spend the units before a background refill could land, and then pay for both.
            return leased
        limiter = self.limiter
        refill = self.refill_call(identifier)
        calls = [limiter.check_call(identifier)]
        if refill is not None:
            calls.append(refill)
        try:
            replies = await limiter.rr.batch(calls)
        except RedisUnavailable:
            self.refill_failed(identifier)
            return limiter.unavailable_result(identifier)
        for reply in replies:
            if isinstance(reply, Exception):
                self.refill_failed(identifier)
                raise reply
        if refill is not None:
            self.refilled(identifier, replies[1])
        return limiter.result_from_reply(replies[0])

    def refill_call(self, identifier: str) -> ScriptCall | None:
        """A check of cost ``units`` to batch with the request's own check.

        None if leasing is off, or if a refill of ``identifier`` is already on its way (the
        concurrent requests of one client that all found no unit would each pay for a lease,
        and all but one would be lost). Every call that returned one must be answered with
        :meth:`refilled` or :meth:`refill_failed`; a refill never answered stops blocking
        others after ``lifetime``.
        """
        if not self.enabled:
            return None
        now = self._clock()
        if self._pending.get(identifier, 0.0) > now:
            return None
        if len(self._pending) >= self.max_keys:
            self._pending = {k: t for k, t in self._pending.items() if t > now}
        self._pending[identifier] = now + self.lifetime
        return self.limiter.check_call(identifier, self.units)

    def refill_failed(self, identifier: str) -> None:
        """The refill's batch never reached Redis."""
        self._pending.pop(identifier, None)

    def refilled(self, identifier: str, reply: Any) -> bool:
        """Keep the lease :meth:`refill_call`'s reply granted (if it did); True if it did."""
        self._pending.pop(identifier, None)
        result = self.limiter.result_from_reply(reply, record=False)
        if not result.allowed:
            return False
        now = self._clock()
        expires = now + self.lifetime
        if self._ends_with_window:
            expires = min(expires, now + result.reset_after)
        leases = self._leases
        granted = _Lease(self.units, expires, result.remaining, now + result.reset_after)
        current = self._live(identifier, now)
        if current is None:
            leases[identifier] = granted
        else:
            # Spent after the units in hand, each unit within its own lease's lifetime. It replaces a
            # lease a concurrent refill granted ahead: those units are lost (the strict direction).
            current.then = granted
            leases.move_to_end(identifier)
        while len(leases) > self.max_keys:
            leases.popitem(last=False)
        return True

    def forget(self, identifier: str) -> None:
        self._leases.pop(identifier, None)
