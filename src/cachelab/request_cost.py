"""What one unit of work cost: Redis round trips and commands, SQL statements.

A load test can time a request, but the time depends on the machine; what the
request *did* does not. The app opens a :class:`RequestCost` scope per request
(:func:`scope`), the Redis connections (:mod:`cachelab.client`) and the
database layer add to whatever scope is current, and the response can carry
the totals (``X-Request-Cost``, see :mod:`cachelab.app.cost_header`). For a
fixed code path these counts are exact — a hit on the KPI cache costs the
same round trips every time — which is what lets a report call "one more
round trip on the hot path" a change without any statistics.

Work a request hands to the background (a refresh-ahead, a fire-and-forget
write) runs outside its scope (:class:`~cachelab.resilience.BackgroundTasks`
starts it in an empty context): it is not on that request's bill, and would
otherwise land on it or not depending on timing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class RequestCost:
    redis_round_trips: int = 0
    redis_commands: int = 0
    db_statements: int = 0

    def header(self) -> str:
        """``redis-rt=2, redis-cmd=3, db=1``: compact, and parseable by :func:`parse_header`."""
        return f"redis-rt={self.redis_round_trips}, redis-cmd={self.redis_commands}, db={self.db_statements}"


#: Header names the figures travel under, as :func:`parse_header` returns them.
FIELDS = ("redis-rt", "redis-cmd", "db")

current: ContextVar[RequestCost | None] = ContextVar("cachelab_request_cost", default=None)


@contextlib.contextmanager
def scope() -> Iterator[RequestCost]:
    """Count everything done in this context (and tasks started from it) into a new :class:`RequestCost`."""
    cost = RequestCost()
    token = current.set(cost)
    try:
        yield cost
    finally:
        current.reset(token)


def parse_header(value: str) -> dict[str, int]:
    """``"redis-rt=2, redis-cmd=3, db=1"`` → ``{"redis-rt": 2, ...}``; unknown or malformed parts skipped."""
    out: dict[str, int] = {}
    for part in value.split(","):
        name, _, number = part.strip().partition("=")
        if name in FIELDS and number.strip().isdigit():
            out[name] = int(number)
    return out
