"""Date-keyed aggregations that expire at the end of their day.

Seed version: ``stats:${tenantId}:${getDateKey()}`` cached for one hour. The
date in the key is right (yesterday's totals never change), but a fixed one-hour
TTL means today's entry can outlive its day by up to an hour while a second
entry for the new day is already being built, and yesterday's entries linger.

Here :class:`DailyAggregate` keys an entry by its date and sets its hard TTL to
the time left until the end of that day (in a fixed time zone, UTC unless
given), capped by the cache policy's TTL, so today's figure refreshes during
the day and an entry never survives its date. Round trips: as :class:`Cache`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from cachelab.patterns.cache import Cache, CacheResult, Loader


def seconds_until_end_of_day(now: dt.datetime) -> float:
    """Seconds from ``now`` (aware) to the next midnight in ``now``'s time zone (at least 1)."""
    tomorrow = (now + dt.timedelta(days=1)).date()
    midnight = dt.datetime.combine(tomorrow, dt.time.min, tzinfo=now.tzinfo)
    return max(1.0, (midnight - now).total_seconds())


class DailyAggregate:
    def __init__(self, cache: Cache, *, tz: dt.tzinfo = dt.UTC) -> None:
        self.cache = cache
        self.tz = tz

    def key(self, scope: object, name: str, day: dt.date) -> str:
        return self.cache.key(scope, name, day.isoformat())

    async def fetch(
        self, scope: object, name: str, loader: Loader, *, now: dt.datetime | None = None
    ) -> tuple[CacheResult, dt.date]:
        """Today's entry for ``(scope, name)``; the TTL ends when the day does."""
        now = (now or dt.datetime.now(self.tz)).astimezone(self.tz)
        day = now.date()
        ttl = min(self.cache.policy.ttl, seconds_until_end_of_day(now))
        # No jitter upwards past midnight: jitter only shortens a day-bounded TTL.
        policy = self.cache.with_policy(ttl=ttl, soft_ttl=None, jitter=0.0)
        result = await self.cache.fetch(self.key(scope, name, day), loader, policy=policy)
        return result, day

    async def get_or_load(self, scope: object, name: str, loader: Loader) -> Any:
        return (await self.fetch(scope, name, loader))[0].value
