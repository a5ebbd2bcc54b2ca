"""The in-process fallback limiter used by the ``"local"`` failure policy.

When Redis is unavailable a rate limiter must pick between admitting everyone
(``"open"``: the limit is gone exactly when something is already wrong),
refusing everyone (``"closed"``: an outage of a cache becomes an outage of the
API), or keeping a limit per process. This module is the third option: a GCRA
(one float per key, see ``lua/ratelimit_gcra.lua``) on ``time.monotonic``.

Its limit is per process: with N processes (workers, pods) behind a load
balancer the effective limit during an outage is up to N × ``limit``. Size
``limit`` accordingly, or choose ``"closed"`` where that is unacceptable.

Memory is bounded: an entry whose TAT has passed is equivalent to no entry and
is pruned (from the least recently touched end, so pruning stays cheap); past
``max_keys`` the least recently touched entry is dropped (which admits that
identifier again: the bound is on memory, not on leniency).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LocalDecision:
    allowed: bool
    remaining: int
    reset_after: float
    retry_after: float


class LocalGCRA:
    """Per-key GCRA in process memory. Not thread-safe; meant for one event loop."""

    def __init__(
        self,
        limit: int,
        period: float,
        *,
        burst: int | None = None,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or period <= 0:
            raise ValueError("limit must be >= 1 and period > 0")
        self.limit = limit
        self.period = period
        self.burst = burst if burst is not None else limit
        if self.burst < 1:
            raise ValueError("burst must be >= 1")
        self.interval = period / limit
        self.tolerance = self.burst * self.interval
        self.max_keys = max_keys
        self._clock = clock
        self._tat: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tat)

    def check(self, key: str, cost: int = 1) -> LocalDecision:
        now = self._clock()
        self._prune(now)
        tat = max(self._tat.get(key, now), now)
        new_tat = tat + cost * self.interval
        allow_at = new_tat - self.tolerance
        if now < allow_at:
            remaining = max(0, math.floor((self.tolerance - (tat - now)) / self.interval + 1e-9))
            return LocalDecision(False, remaining, tat - now, allow_at - now)
        self._tat[key] = new_tat
        self._tat.move_to_end(key)
        while len(self._tat) > self.max_keys:
            self._tat.popitem(last=False)
        reset_after = new_tat - now
        remaining = max(0, math.floor((self.tolerance - reset_after) / self.interval + 1e-9))
        return LocalDecision(True, remaining, reset_after, 0.0)

    def _prune(self, now: float) -> None:
        # Amortised O(1): drop idle entries from the least recently touched end.
        tats = self._tat
        while tats:
            key, tat = next(iter(tats.items()))
            if tat > now:
                return
            del tats[key]
