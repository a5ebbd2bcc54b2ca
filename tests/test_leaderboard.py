"""Per-tenant leaderboards on a real redis-server: isolation, one-round-trip reads, bulk loads."""

from __future__ import annotations

import asyncio
import math

import pytest

from cachelab.patterns.leaderboard import Leaderboard


async def test_tenants_are_isolated_even_with_hostile_ids(rredis, redis_admin):
    lb = Leaderboard(rredis)
    tenants = ["acme", "acme*", "acme}:{globex", "globex", "acme:leaderboard", "", "[a-z]"]
    for i, tenant in enumerate(tenants):
        await lb.update(tenant, f"member-of-{i}", i + 1)
    for i, tenant in enumerate(tenants):
        assert await lb.top(tenant, 10) == [(f"member-of-{i}", float(i + 1))]
    assert len({lb.key(t) for t in tenants}) == len(tenants)
    assert redis_admin.dbsize() == len(tenants)
    assert await lb.remove("acme*", "member-of-0") == 0  # another tenant's member is not reachable
    assert await lb.size("acme") == 1


async def test_top_with_member_is_one_round_trip_with_rank_and_score(rredis, cost_meter):
    lb = Leaderboard(rredis)
    await lb.bulk_update("t", {f"p{i:02d}": float(i) for i in range(50)})
    await lb.top_with_member("t", 1, "p00")  # load the script outside the measured block
    with cost_meter.measure() as cost:
        top, rank, score = await lb.top_with_member("t", 3, "p10")
    assert cost.round_trips == 1
    assert cost.commands["evalsha"] == 1
    assert top == [("p49", 49.0), ("p48", 48.0), ("p47", 47.0)]
    assert (rank, score) == (39, 10.0)
    assert await lb.top_with_member("t", 2, "nobody") == ([("p49", 49.0), ("p48", 48.0)], None, None)
    assert await lb.top_with_member("t", 0, "p49") == ([], 0, 49.0)
    assert await lb.top_with_member("empty", 5, "p1") == ([], None, None)


async def test_bulk_update_of_10000_members_takes_ceil_n_over_batch_round_trips(rredis, cost_meter):
    lb = Leaderboard(rredis, batch_size=500)
    scores = {f"user-{i}": float(i % 997) for i in range(10_000)}
    await lb.size("t")  # open the pooled connection outside the measured block (HELLO etc.)
    with cost_meter.measure() as cost:
        written = await lb.bulk_update("t", scores)
    assert written == 10_000
    assert cost.round_trips <= math.ceil(10_000 / 500)
    assert cost.commands == {"zadd": 20}
    assert await lb.size("t") == 10_000
    top, rank, score = await lb.top_with_member("t", 1, "user-996")
    assert top[0][1] == 996.0 and rank is not None and score == 996.0


async def test_ties_are_ordered_by_member_ascending_and_rank_agrees_with_top(rredis):
    lb = Leaderboard(rredis)
    await lb.bulk_update("t", {"carol": 5, "alice": 5, "bob": 5, "zed": 9, "amy": 0, "ann": -0.0})
    top = await lb.top("t", 10)
    assert top == [("zed", 9.0), ("alice", 5.0), ("bob", 5.0), ("carol", 5.0), ("amy", 0.0), ("ann", 0.0)]
    for expected_rank, (member, member_score) in enumerate(top):
        _top, rank, score = await lb.top_with_member("t", 0, member)
        assert (rank, score) == (expected_rank, member_score)
    assert all(math.copysign(1.0, s) == 1.0 for _m, s in top)  # no -0.0 leaks out of the negation


async def test_concurrent_increments_are_not_lost_and_remove_works(rredis):
    lb = Leaderboard(rredis)
    await lb.update("t", "a", 10)
    results = await asyncio.gather(*(lb.increment("t", "a", 1.5) for _ in range(40)))
    assert max(results) == 70.0
    assert await lb.increment("t", "new", -2) == -2.0
    assert await lb.top("t", 5) == [("a", 70.0), ("new", -2.0)]
    assert await lb.remove("t", "a", "ghost") == 1
    assert await lb.remove("t") == 0
    assert await lb.top("t", 5) == [("new", -2.0)]


async def test_bad_input_is_refused_before_anything_is_written(rredis, redis_admin):
    lb = Leaderboard(rredis, batch_size=2, max_n=100)
    with pytest.raises(ValueError, match="finite"):
        await lb.bulk_update("t", {"a": 1, "b": 2, "c": 3, "d": float("nan")})
    with pytest.raises(TypeError):
        await lb.bulk_update("t", {"a": 1, "b": "2"})
    with pytest.raises(TypeError):
        await lb.update("t", "a", True)
    with pytest.raises(ValueError):
        await lb.increment("t", "a", float("inf"))
    for n in (-1, 101):
        with pytest.raises(ValueError, match="n"):
            await lb.top("t", n)
    assert redis_admin.dbsize() == 0
