"""Pattern invalidation: SCAN + UNLINK, escaped ids, and what the seed's KEYS version breaks."""

from __future__ import annotations

import pytest

from cachelab.patterns.cache import Cache
from cachelab.patterns.envelope import MISSING
from cachelab.patterns.health import redis_health
from cachelab.patterns.invalidation import invalidate_matching, invalidate_scope
from cachelab.patterns.keys import glob_escape, make_key, safe
from cachelab.patterns.naive import naive_invalidate_pattern

HOSTILE = ["a*", "a?", "a[b]", "a:b", "{a}", "a b", "", "a\\"]


@pytest.mark.parametrize("tenant", HOSTILE)
async def test_hostile_tenant_ids_only_ever_reach_their_own_keys(rredis, redis_admin, tenant):
    cache = Cache(rredis, "kpi")
    victims = ["a", "ab", "aXb", "ab]", "a:b:c", "b", "a%2A"]
    for t in [*victims, tenant]:
        await cache.set(cache.key(t, "kpis"), {"tenant": t})
        await cache.set(cache.key(t, "page", 1), {"tenant": t})
    deleted = await invalidate_scope(rredis, tenant)
    assert deleted == 2
    for t in victims:
        if t != tenant:
            assert await cache.get(cache.key(t, "kpis")) == {"tenant": t}
    assert await cache.get(cache.key(tenant, "kpis")) is MISSING


async def test_the_seeds_keys_pattern_wipes_other_tenants(rredis, redis_admin):
    for t in ["a*", "ab", "abc"]:
        redis_admin.set(f"kpi:{t}", "1")
    await naive_invalidate_pattern(rredis.client, "kpi:a*")  # meant: tenant "a*" only
    assert redis_admin.exists("kpi:ab", "kpi:abc") == 0  # collateral damage


async def test_pattern_invalidation_scans_in_batches_and_never_sends_keys(rredis, redis_admin, cost_meter):
    pipe = redis_admin.pipeline(transaction=False)
    for i in range(5000):
        pipe.set(make_key("cl", "t1", "list", i), "x")
        pipe.set(make_key("cl", "t2", "list", i), "x")
    pipe.execute()
    await rredis.client.ping()
    with cost_meter.measure() as cost:
        deleted = await invalidate_scope(rredis, "t1", "list", batch=500)
    assert deleted == 5000
    assert redis_admin.dbsize() == 5000
    assert "keys" not in cost.commands
    assert cost.commands["unlink"] == 10
    assert cost.commands["scan"] >= 10
    assert cost.round_trips == cost.commands["scan"] + cost.commands["unlink"]


async def test_invalidate_matching_on_an_empty_keyspace_is_a_no_op(rredis):
    assert await invalidate_matching(rredis, "nothing:*") == 0


def test_key_components_are_escaped_and_scoped():
    assert safe("a*?[]:{} b") == "a%2A%3F%5B%5D%3A%7B%7D%20b"
    assert make_key("cl", "t:1", "kpi") == "cl:{t%3A1}:kpi"
    assert glob_escape("a*b?[c]") == "a\\*b\\?\\[c\\]"


async def test_health_reports_latency_role_memory_and_hit_ratio(rredis):
    await rredis.client.set("k", "v")
    await rredis.client.get("k")
    health = await redis_health(rredis)
    assert health["status"] == "ok"
    assert health["role"] == "master"
    assert health["latency_ms"] >= 0
    assert health["used_memory"] > 0
    assert health["keyspace_hits"] >= 1
    assert health["breaker"] == "closed"


async def test_health_says_down_instead_of_raising(private_redis):
    from cachelab.client import ClientOptions, ResilientRedis

    rr = ResilientRedis.from_url(private_redis.url, options=ClientOptions(connect_timeout=0.2, retries=0))
    private_redis.kill()
    health = await redis_health(rr)
    assert health["status"] == "down"
    await rr.aclose()
