"""Per-tenant leaderboards on sorted sets: top N and "where am I" in one round trip.

The seed's version
------------------
``updateLeaderboard(userId, score)`` does ``ZADD leaderboard score userId`` and ``getTopUsers``
a ``ZRANGE ... REV WITHSCORES``. Its flaws: one global set for every tenant (tenants see, and
overwrite, each other's members); showing "top 10 and your own rank" takes separate calls that
can disagree with each other; loading many scores is one round trip per member; ties come out
in reverse byte order of member, which nobody chose.

The fix
-------
* One sorted set per tenant (and board), ``cl:{<tenant>}:leaderboard:<board>``, built with
  :func:`~cachelab.patterns.keys.make_key`, so a hostile tenant id (``*``, ``:``, ``}``) is
  escaped and cannot name another tenant's key.
* :meth:`Leaderboard.top_with_member` is one EVALSHA returning the top N, the member's rank and
  score from one atomic snapshot (``leaderboard_top_with_member.lua``). A non-transactional
  pipeline would also be one round trip, but another client's write could land between its
  commands, so the rank could contradict the list.
* :meth:`Leaderboard.bulk_update` sends one ZADD of up to ``batch_size`` members per round trip:
  bounded request size, bounded time the server spends on one command.
* Ordering is deterministic: highest score first; equal scores by member, ascending by UTF-8
  bytes. To get that from Redis's natural order (ascending score, then ascending member),
  scores are stored **negated**: ``ZRANGE 0 n-1`` is the top N, and ``ZRANK`` is the 0-based
  rank in that same order. Every method negates back, so callers never see it; anyone reading
  the key with redis-cli will.
* Scores must be finite numbers (NaN would be refused by Redis mid-bulk, infinities make
  ``increment`` produce NaN). They are IEEE doubles: integers beyond 2**53 lose precision.

Round trips: ``update``, ``increment``, ``top``, ``top_with_member``, ``remove``, ``size``: 1
each; ``bulk_update``: ``ceil(len(mapping) / batch_size)``. All calls go through the breaker.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from cachelab.client import ResilientRedis
from cachelab.patterns.keys import DEFAULT_PREFIX, make_key

Entry = tuple[str, float]


def _score(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"a score must be a number, got {type(value).__name__}")
    score = float(value)
    if not math.isfinite(score):
        raise ValueError(f"a score must be finite, got {value!r}")
    return score


def _member(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"a member must be a str, got {type(value).__name__}")
    return value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _unnegate(stored: float | bytes | str) -> float:
    return 0.0 - float(stored)  # 0.0 - x turns a stored -0.0 into 0.0


class Leaderboard:
    """Tenant-scoped leaderboards; see the module docstring for ordering and costs."""

    def __init__(
        self,
        rr: ResilientRedis,
        *,
        prefix: str = DEFAULT_PREFIX,
        board: str = "default",
        batch_size: int = 500,
        max_n: int = 1000,
    ) -> None:
        if batch_size < 1 or max_n < 1:
            raise ValueError("batch_size and max_n must be >= 1")
        self.rr = rr
        self.prefix = prefix
        self.board = board
        self.batch_size = batch_size
        self.max_n = max_n

    def key(self, tenant_id: str) -> str:
        return make_key(self.prefix, tenant_id, "leaderboard", self.board)

    def _n(self, n: int) -> int:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        if n > self.max_n:
            raise ValueError(f"n={n} is over max_n={self.max_n}; page through the board instead")
        return n

    async def update(self, tenant_id: str, member: str, score: float) -> None:
        """Set ``member``'s score (replacing any previous one)."""
        await self.rr.call(self.rr.client.zadd, self.key(tenant_id), {_member(member): -_score(score)})

    async def increment(self, tenant_id: str, member: str, delta: float) -> float:
        """Add ``delta`` to ``member``'s score (0 if absent), atomically; returns the new score."""
        stored = await self.rr.call(
            self.rr.client.zincrby, self.key(tenant_id), -_score(delta), _member(member)
        )
        return _unnegate(stored)

    async def top(self, tenant_id: str, n: int) -> list[Entry]:
        """The ``n`` best ``(member, score)``, best first."""
        if self._n(n) == 0:
            return []
        rows = await self.rr.call(self.rr.client.zrange, self.key(tenant_id), 0, n - 1, withscores=True)
        return [(_text(m), _unnegate(s)) for m, s in rows]

    async def top_with_member(
        self, tenant_id: str, n: int, member: str
    ) -> tuple[list[Entry], int | None, float | None]:
        """``(top n, member's 0-based rank or None, member's score or None)``, one round trip."""
        reply = await self.rr.run_script(
            "leaderboard_top_with_member", [self.key(tenant_id)], [self._n(n), _member(member)]
        )
        flat, rank, score = reply[0], reply[1], reply[2]
        top = [(_text(flat[i]), _unnegate(flat[i + 1])) for i in range(0, len(flat), 2)]
        return top, (None if rank is None else int(rank)), (None if score is None else _unnegate(score))

    async def bulk_update(self, tenant_id: str, mapping: Mapping[str, float]) -> int:
        """Set many scores, one ZADD of ``batch_size`` members per round trip; returns how many.

        Every member and score is validated before anything is sent, so bad input writes
        nothing. The batches are not one transaction: readers may see a partly loaded board.
        """
        items = [(_member(m), -_score(s)) for m, s in mapping.items()]
        key = self.key(tenant_id)
        for start in range(0, len(items), self.batch_size):
            batch = dict(items[start : start + self.batch_size])
            await self.rr.call(self.rr.client.zadd, key, batch)
        return len(items)

    async def remove(self, tenant_id: str, *members: str) -> int:
        """Remove members; returns how many were there."""
        if not members:
            return 0
        return int(await self.rr.call(self.rr.client.zrem, self.key(tenant_id), *map(_member, members)))

    async def size(self, tenant_id: str) -> int:
        return int(await self.rr.call(self.rr.client.zcard, self.key(tenant_id)))
