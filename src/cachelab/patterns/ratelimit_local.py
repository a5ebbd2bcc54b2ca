"""The in-process fallback limiter used by the ``"local"`` failure policy, and the limits' checks.

When Redis is unavailable a rate limiter must pick between admitting everyone
(``"open"``: the limit is gone exactly when something is already wrong),
refusing everyone (``"closed"``: an outage of a cache becomes an outage of the
API), or keeping a limit per process. This module is the third option: a GCRA
(one integer per key, as ``lua/ratelimit_gcra.lua``) on ``time.monotonic``.
It has no Redis round trips at all.

Its limit is per process: with N processes (workers, pods) behind a load
balancer the effective limit during an outage is up to N × ``limit``. Size
``limit`` accordingly, or choose ``"closed"`` where that is unacceptable.

Integer ticks
-------------
The first version kept the theoretical arrival time (TAT) as a float and added
``period / limit`` to it per admit. Repeated float addition does not land
exactly on ``burst × interval``, so at a fixed clock ``LocalGCRA(10, 1.0,
burst=5)`` admitted 4, not 5 (41–55 of 240 limit/burst/clock combinations were
off by one), and the Lua script had the same tie in microsecond doubles. Now,
as in redis-cell (which counts nanoseconds in integers), every time is a whole
number of **microseconds** (the resolution of Redis ``TIME``): the emission
interval is computed once, ``period_us / limit`` rounded *up* to a whole µs,
the tolerance is exactly ``burst`` intervals and the TAT only ever moves by
whole intervals, so the ties are exact in both implementations: ``burst``
units at once, then one per interval.

Rounding up keeps the limiter from ever being faster than nominal, so the
catalogue's bounds hold exactly (at most ``burst + limit·d/period`` in any
interval ``d``; with ``burst=1``, at most ``limit`` in any period; truncating
would let a ``3/1s`` pacer admit 4 within one second). The price is a
sustained rate up to 1 µs per interval slower than nominal: one part in
10 000 at 100 per second, one in a million at 1 per second. Rates above one
unit per µs per identifier are capped there (one Redis serves far fewer
checks per second than that, so the cap is never reached in practice).

:func:`validate_rate` is where every limiter checks its arguments: ``limit``
and ``burst`` are integers in [1, 10⁹]; ``period`` is a finite number of
seconds in [1 ms, 366 days]; a full burst must refill within ten years. Each
refusal is a :class:`ValueError` naming the argument (``period=inf`` used to
surface as an ``OverflowError`` from ``round``).

Memory is bounded: an entry whose TAT has passed is equivalent to no entry and
is pruned (from the least recently touched end, so pruning stays cheap); past
``max_keys`` the least recently touched entry is dropped (which admits that
identifier again: the bound is on memory, not on leniency).
"""

from __future__ import annotations

import math
import numbers
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

US_PER_S: Final = 1_000_000
MAX_COUNT: Final = 1_000_000_000
MIN_PERIOD: Final = 0.001
MAX_PERIOD: Final = 366 * 86_400.0
#: The longest a full burst may take to refill; keeps every TAT far below 2**53 µs (Lua doubles).
MAX_REFILL_US: Final = 10 * 366 * 86_400 * US_PER_S


def _count(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_COUNT:
        raise ValueError(f"{name} must be an integer in [1, {MAX_COUNT:_}], got {value!r}")
    return value


def period_to_us(period: object) -> int:
    """``period`` seconds as whole microseconds; ValueError naming ``period`` if unusable."""
    if (
        not isinstance(period, numbers.Real)
        or isinstance(period, bool)
        or not math.isfinite(period)
        or not MIN_PERIOD <= period <= MAX_PERIOD
    ):
        raise ValueError(
            f"period must be a finite number of seconds in [{MIN_PERIOD}, {MAX_PERIOD:.0f}] "
            f"(1 ms to 366 days), got {period!r}"
        )
    return round(float(period) * US_PER_S)


def emission_interval_us(limit: int, period_us: int) -> int:
    """The GCRA's interval between units at the sustained rate: ``period_us / limit`` rounded up."""
    return max(1, -(-period_us // limit))


def validate_rate(limit: object, period: object, burst: object | None = None) -> tuple[int, int, int]:
    """``(limit, period_us, burst)`` checked once; ValueError naming the bad argument.

    ``burst`` defaults to ``limit``. Used by every Redis limiter and by :class:`LocalGCRA`.
    """
    limit = _count("limit", limit)
    period_us = period_to_us(period)
    burst = limit if burst is None else _count("burst", burst)
    refill_us = burst * emission_interval_us(limit, period_us)
    if refill_us > MAX_REFILL_US:
        raise ValueError(
            f"burst {burst} at {limit} per {period}s takes {refill_us / US_PER_S / 86_400 / 365.25:.1f} "
            f"years to refill; at most 10 are supported: lower burst or period, or raise limit"
        )
    return limit, period_us, burst


@dataclass(frozen=True)
class LocalDecision:
    allowed: bool
    remaining: int
    reset_after: float
    retry_after: float


class LocalGCRA:
    """Per-key GCRA in process memory. Not thread-safe; meant for one event loop.

    ``clock`` returns seconds (monotonic); it is read once per check and
    rounded to whole microseconds, the tick every other quantity is kept in.
    """

    def __init__(
        self,
        limit: int,
        period: float,
        *,
        burst: int | None = None,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.period_us, self.burst = validate_rate(limit, period, burst)
        self.period = float(period)
        self.interval_us = emission_interval_us(self.limit, self.period_us)
        self.tolerance_us = self.burst * self.interval_us
        self.max_keys = max_keys
        self._clock = clock
        self._tat: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tat)

    def check(self, key: str, cost: int = 1) -> LocalDecision:
        now = round(self._clock() * US_PER_S)
        self._prune(now)
        interval = self.interval_us
        tat = max(self._tat.get(key, now), now)
        new_tat = tat + cost * interval
        allow_at = new_tat - self.tolerance_us
        if now < allow_at:
            remaining = max(0, (self.tolerance_us - (tat - now)) // interval)
            return LocalDecision(False, remaining, (tat - now) / US_PER_S, (allow_at - now) / US_PER_S)
        self._tat[key] = new_tat
        self._tat.move_to_end(key)
        while len(self._tat) > self.max_keys:
            self._tat.popitem(last=False)
        reset_after = new_tat - now
        remaining = (self.tolerance_us - reset_after) // interval
        return LocalDecision(True, max(0, remaining), reset_after / US_PER_S, 0.0)

    def _prune(self, now: int) -> None:
        # Amortised O(1): drop idle entries from the least recently touched end.
        tats = self._tat
        while tats:
            key, tat = next(iter(tats.items()))
            if tat > now:
                return
            del tats[key]
