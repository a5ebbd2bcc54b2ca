"""Per-tenant leaderboard per operation on a board of 10 000 members (group ``leaderboard``).

``update`` is one ``ZADD``, ``increment`` one ``ZINCRBY``, ``top`` one
``ZRANGE``; ``top_with_member`` is one ``EVALSHA`` returning the top 10, a
member's rank and score from one snapshot (the seed needs separate calls that
can disagree). ``memory_per_key`` is the whole board; ``bytes_per_member``
divides it by the member count.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
import redis

from cachelab.client import ResilientRedis
from cachelab.harness.cost import settled_memory_usage
from cachelab.patterns.leaderboard import Leaderboard

TENANT = "acme"
MEMBERS = 10_000
TOP = 10


def member(i: int) -> str:
    return f"user-{i:05d}"


@pytest.fixture
def board(bench_rredis: ResilientRedis, arun: Any, bench_admin: redis.Redis) -> Leaderboard:
    lb = Leaderboard(bench_rredis)
    rng = random.Random(7)
    scores = {member(i): float(rng.randint(0, 100_000)) for i in range(MEMBERS)}
    assert arun(lb.bulk_update(TENANT, scores)) == MEMBERS
    return lb


def _extra(lb: Leaderboard, admin: redis.Redis) -> dict[str, Any]:
    used = settled_memory_usage(admin, lb.key(TENANT)) or 0
    return {"members": MEMBERS, "bytes_per_member": used / MEMBERS}


def test_leaderboard_update(bench_async: Any, board: Leaderboard, bench_admin: redis.Redis):
    rng = random.Random(1)
    bench_async(
        lambda: board.update(TENANT, member(rng.randrange(MEMBERS)), float(rng.randint(0, 100_000))),
        group="leaderboard",
        memory_key=board.key(TENANT),
        extra=_extra(board, bench_admin),
    )


def test_leaderboard_increment(bench_async: Any, board: Leaderboard):
    members = itertools.cycle([member(i) for i in range(0, MEMBERS, 97)])
    bench_async(lambda: board.increment(TENANT, next(members), 5), group="leaderboard")


def test_leaderboard_top10(bench_async: Any, board: Leaderboard, arun: Any):
    assert len(arun(board.top(TENANT, TOP))) == TOP
    bench_async(lambda: board.top(TENANT, TOP), group="leaderboard", extra={"n": TOP})


def test_leaderboard_top10_with_member(bench_async: Any, board: Leaderboard, arun: Any):
    me = member(4242)
    top, rank, score = arun(board.top_with_member(TENANT, TOP, me))
    assert len(top) == TOP and rank is not None and score is not None
    bench_async(lambda: board.top_with_member(TENANT, TOP, me), group="leaderboard", extra={"n": TOP})
