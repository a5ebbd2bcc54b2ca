"""Every pattern against a real 3-primary Redis Cluster (``RedisClusterServer``).

A cluster rejects what a single server forgives: a multi-key command or a
script over keys of two slots (CROSSSLOT), a SCAN that only sees one node's
keys, a pipeline of keyless commands. Each test drives a pattern end to end
through a ``redis+cluster://`` URL (so through ``redis.asyncio.RedisCluster``)
with scopes chosen to land on *different* primaries, so a hash-tag mistake or
a one-node scan shows up as an error or a leftover key.

One cluster serves the module (forming it takes ~2 s); each test starts on
empty primaries.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from redis.cluster import key_slot

from cachelab.client import ClientOptions, ResilientRedis, create_sync_client, validate_redis_url
from cachelab.config import ConfigError
from cachelab.harness.cost import ClusterCostMeter
from cachelab.patterns.cache import Cache, CachePolicy, CacheStatus
from cachelab.patterns.envelope import MISSING
from cachelab.patterns.health import redis_health
from cachelab.patterns.invalidation import invalidate_matching, invalidate_scope
from cachelab.patterns.keys import make_key
from cachelab.patterns.leaderboard import Leaderboard
from cachelab.patterns.queue import EvictingRedisError, JobQueue
from cachelab.patterns.ratelimit import ALGORITHMS, create_limiter
from cachelab.patterns.sessions import SessionStore
from cachelab.servers.cluster import RedisClusterServer, slot_ranges

pytestmark = pytest.mark.cluster

PRIMARIES = 3


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServer]:
    with RedisClusterServer(PRIMARIES) as server:
        yield server


@pytest.fixture
async def crr(cluster: RedisClusterServer) -> AsyncIterator[ResilientRedis]:
    """A ResilientRedis on the cluster, every primary flushed first."""
    cluster.flushall()
    rr = ResilientRedis.from_url(cluster.url, options=ClientOptions(command_timeout=2.0))
    yield rr
    await rr.aclose()


def _owner(cluster: RedisClusterServer, key: str) -> int:
    """Index of the primary that serves ``key``'s slot (slots were split in node order)."""
    slot = key_slot(key.encode())
    return next(i for i, (lo, hi) in enumerate(slot_ranges(len(cluster.nodes))) if lo <= slot <= hi)


def spread_scopes(cluster: RedisClusterServer, build, count_per_node: int = 1) -> list[str]:
    """Scope ids whose keys (``build(scope)``) land on each primary, ``count_per_node`` per node."""
    chosen: dict[int, list[str]] = {i: [] for i in range(len(cluster.nodes))}
    i = 0
    while any(len(v) < count_per_node for v in chosen.values()):
        scope = f"t{i}"
        owner = _owner(cluster, build(scope))
        if len(chosen[owner]) < count_per_node:
            chosen[owner].append(scope)
        i += 1
    return [s for scopes in chosen.values() for s in scopes]


# -- the launcher and the client ----------------------------------------------------------


def test_launcher_forms_a_cluster_whose_slots_and_keys_cover_every_primary(cluster):
    admin = cluster.client()
    try:
        info = admin.cluster_info()
        assert info["cluster_state"] == "ok" and int(info["cluster_slots_ok"]) == 16384
        assert len(admin.get_primaries()) == PRIMARIES
        assert sorted(n.port for n in admin.get_primaries()) == sorted(cluster.ports)
        for i in range(300):
            admin.set(make_key("cl", f"tenant-{i}", "kpi"), i)
        assert all(size > 0 for size in cluster.dbsizes()) and sum(cluster.dbsizes()) == 300
    finally:
        admin.close()
    assert cluster.url.startswith("redis+cluster://127.0.0.1:")
    with pytest.raises(ConfigError, match="only database 0"):
        validate_redis_url(cluster.url + "/3")


def test_stopping_the_launcher_stops_every_node_and_removes_its_files():
    with RedisClusterServer(2) as small:
        procs = [node.proc for node in small.nodes]
        directories = [node.directory for node in small.nodes]
        assert small.client().ping()
    assert all(p is not None and p.poll() is not None for p in procs)
    assert not any(d.exists() for d in directories)


async def test_cluster_url_gives_a_cluster_client_that_counts_round_trips_and_the_cost_meter_sums_nodes(
    cluster, crr
):
    assert crr.is_cluster and isinstance(crr.client, redis.asyncio.RedisCluster)
    cache = Cache(crr, "kpi")
    tenants = spread_scopes(cluster, lambda t: cache.key(t, "all"))
    for t in tenants:
        await cache.set(cache.key(t, "all"), {"t": t})  # warm: topology discovery happens here
    meter = ClusterCostMeter(cluster.node_urls, crr.round_trips)
    try:
        with meter.measure() as cost:
            for t in tenants:
                assert (await cache.fetch(cache.key(t, "all"), _never)).status is CacheStatus.HIT
        assert cost.round_trips == len(tenants)  # one MGET per hit, on whichever primary owns it
        assert cost.commands == {"mget": len(tenants)}
        assert cost.keyspace_hits == len(tenants)
    finally:
        meter.close()
    sync = create_sync_client(cluster.url)
    try:
        assert sync.get(make_key("cl", "x", "y")) is None
    finally:
        sync.close()


async def test_cluster_urls_carry_credentials_and_tls_to_every_node_without_connecting():
    from cachelab.client import create_async_client

    client = create_async_client("rediss+cluster://app:s3cret@node-1.example:7000")
    try:
        assert isinstance(client, redis.asyncio.RedisCluster)
        kwargs = client.connection_kwargs  # what every discovered node is built from
        assert (kwargs["username"], kwargs["password"]) == ("app", "s3cret")
        assert issubclass(kwargs["connection_class"], redis.asyncio.SSLConnection)
        [node] = client.startup_nodes
        assert (node.host, node.port) == ("node-1.example", 7000)
    finally:
        await client.aclose()
    with pytest.raises(ConfigError, match="REDIS_URL"):
        validate_redis_url("redis-cluster://node:7000")


async def _never():
    raise AssertionError("the loader must not run on a hit")


# -- caching -----------------------------------------------------------------------------


async def test_cache_fetch_fill_invalidate_and_tags_work_per_tenant_across_primaries(cluster, crr):
    cache = Cache(crr, "kpi", CachePolicy(ttl=60))
    tenants = spread_scopes(cluster, lambda t: cache.key(t, "all"))
    loads: dict[str, int] = {}

    def loader(t: str):
        async def load():
            loads[t] = loads.get(t, 0) + 1
            return {"tenant": t, "n": loads[t]}

        return load

    for t in tenants:
        key = cache.key(t, "all")
        assert (await cache.fetch(key, loader(t), tags=["initiatives"])).status is CacheStatus.MISS
        hit = await cache.fetch(key, loader(t), tags=["initiatives"])
        assert hit.status is CacheStatus.HIT and hit.value == {"tenant": t, "n": 1}
    # Per-key invalidation (value + generation, one script, one slot).
    assert await cache.invalidate(cache.key(tenants[0], "all"))
    assert (await cache.fetch(cache.key(tenants[0], "all"), loader(tenants[0]), tags=["initiatives"])).value[
        "n"
    ] == 2
    # Tag invalidation hits one tenant's entries only, wherever the others live.
    await cache.invalidate_tag(tenants[1], "initiatives")
    assert await cache.get(cache.key(tenants[1], "all"), tags=["initiatives"]) is MISSING
    for t in (tenants[0], tenants[2]):
        assert await cache.get(cache.key(t, "all"), tags=["initiatives"]) != MISSING
    # Cross-process lock path: SET NX + compare-and-delete script on the lock's slot.
    locked = Cache(crr, "dash", CachePolicy(ttl=60, lock=True))
    for t in tenants:
        assert (await locked.fetch(locked.key(t), loader(t))).status is CacheStatus.MISS
        assert (await locked.fetch(locked.key(t), loader(t))).status is CacheStatus.HIT
    # Bulk reads and warming span slots (and nodes).
    keys = [cache.key(t, "bulk") for t in tenants]
    assert await cache.warm({k: i for i, k in enumerate(keys)}) == len(keys)
    assert await cache.get_many([*keys, cache.key("nobody", "bulk")]) == [0, 1, 2, MISSING]


async def test_write_through_guard_keeps_the_newest_version_on_every_primary(cluster, crr):
    cache = Cache(crr, "initiative")
    tenants = spread_scopes(cluster, lambda t: cache.key(t, 1))
    for t in tenants:
        key = cache.key(t, 1)
        assert await cache.write_through(key, {"v": 2}, version=2)
        assert not await cache.write_through(key, {"v": 1}, version=1)  # late, older: refused
        assert await cache.get(key) == {"v": 2}
        await cache.invalidate(key, version=3)
        assert not await cache.write_through(key, {"v": 3}, version=3)
        assert await cache.write_through(key, {"v": 4}, version=4)
        assert await cache.get(key) == {"v": 4}


async def test_pattern_invalidation_scans_every_primary_and_stays_inside_its_scope(cluster, crr):
    cache = Cache(crr, "list")
    tenants = sorted({*spread_scopes(cluster, lambda t: cache.key(t, "p"), count_per_node=3), "t1", "t10"})
    for t in tenants:
        for page in range(20):
            await cache.set(cache.key(t, "p", page), page)
        await cache.set(cache.key(t, "keep"), "x")
    hostile = "t1*"  # escaped: must not reach t1, t10, t11...
    await cache.set(cache.key(hostile, "p", 0), 0)
    assert all(size > 0 for size in cluster.dbsizes())

    assert await invalidate_scope(crr, hostile, "list") == 1
    for t in tenants:
        assert await cache.get(cache.key(t, "p", 0)) == 0

    # One glob over every tenant: only scanning all three primaries can find them all.
    deleted = await invalidate_matching(crr, "cl:{*}:list:p:*", batch=7)
    assert deleted == 20 * len(tenants)
    assert sum(cluster.dbsizes()) == len(tenants)  # the "keep" keys
    assert await invalidate_scope(crr, tenants[0], "list") == 1


# -- rate limiting -------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
async def test_every_rate_limiter_admits_exactly_its_limit_per_identifier_on_any_primary(
    cluster, crr, algorithm
):
    limiter = create_limiter(crr, algorithm, 10, 3600)
    ids = spread_scopes(cluster, limiter.key)
    results = await asyncio.gather(*(limiter.check(i) for i in ids for _ in range(15)))
    per_id = {i: sum(r.allowed for r in results[n * 15 : (n + 1) * 15]) for n, i in enumerate(ids)}
    assert per_id == dict.fromkeys(ids, 10)
    assert all(r.source == "redis" for r in results)


# -- sessions ---------------------------------------------------------------------------------


async def test_sessions_create_get_update_rotate_and_log_out_everywhere(cluster, crr):
    store = SessionStore(crr, idle_timeout=60, absolute_lifetime=600)
    sessions = [await store.create("alice", {"i": i}) for i in range(6)]  # six ids: several slots
    assert len({_owner(cluster, store.session_key(s.id)) for s in sessions}) > 1
    got = await store.get(sessions[0].id)
    assert got is not None and got.data == {"i": 0}
    assert await store.update(sessions[0].id, {"role": "admin"})
    rotated = await store.rotate(sessions[0].id)
    assert rotated is not None and rotated.data == {"i": 0, "role": "admin"}
    assert await store.get(sessions[0].id) is None
    bob = await store.create("bob", {})
    assert await store.destroy_all_for_user("alice") == 6  # tombstones across slots, in one pipeline
    for s in [*sessions[1:], rotated]:
        assert await store.get(s.id) is None
        assert not await store.update(s.id, {"x": 1})
    assert await store.get(bob.id) is not None
    assert await store.destroy(bob.id)
    assert await store.prune_user_index("bob") == 0


# -- the job queue ------------------------------------------------------------------------------


async def test_queue_enqueue_reserve_ack_fail_and_dead_letters_on_a_cluster(cluster, crr):
    queues = [JobQueue(crr, name, max_deliveries=1, lease_seconds=5) for name in
              spread_scopes(cluster, lambda n: make_key("cl:queue", n, "pending"))]
    for queue in queues:
        assert await queue.check_eviction_policy() == "noeviction"
        first = await queue.enqueue({"n": 1}, idempotency_key="once")
        assert await queue.enqueue({"n": 1}, idempotency_key="once") == first
        second = await queue.enqueue({"n": 2})
        jobs = {job.payload["n"]: job for job in [await queue.reserve("w1", timeout=0.5) for _ in range(2)]}
        assert {jobs[1].id, jobs[2].id} == {first, second}  # same-millisecond jobs: either order
        assert await queue.ack(jobs[1], {"ok": True})
        assert await queue.fail(jobs[2], "boom") == "dead"
        assert await queue.reserve("w1", timeout=0.05) is None  # blocks on the notify list, then gives up
        [dead] = await queue.dead_letters()
        assert dead.id == second and dead.last_error == "boom"
        assert (await queue.status(first)).result == {"ok": True}
        stats = await queue.stats()
        assert (stats.completed, stats.dead, stats.ready) == (1, 1, 0)


async def test_a_batch_of_scripts_and_reads_spans_every_primary_and_reloads_flushed_scripts(cluster, crr):
    """The app's auth round on a cluster: rate checks, the session read and a cache read of keys on
    different primaries, in one batch; after SCRIPT FLUSH on every node it loads them and resends."""
    sessions = SessionStore(crr, idle_timeout=60, absolute_lifetime=600)
    session = await sessions.create("u1", {"tenant_id": "t"})
    limiter = create_limiter(crr, "sliding_window", 100, 60)
    cache = Cache(crr, "kpi")
    scopes = spread_scopes(cluster, lambda s: limiter.key(s))
    for flush in (False, True):
        if flush:
            for node in cluster.nodes:
                node.client().script_flush()
        calls = [limiter.check_call(s) for s in scopes]
        calls += [sessions.get_call(session.id), ("MGET", *cache.read_keys(cache.key(scopes[0], "kpis")))]
        replies = await crr.batch(calls)
        results = [limiter.result_from_reply(r) for r in replies[: len(scopes)]]
        assert all(r.allowed and r.remaining == 99 - flush for r in results), results
        assert sessions.session_from_reply(session.id, replies[-2]).data == {"tenant_id": "t"}
        assert replies[-1] == [None, None]


async def test_queue_refuses_a_cluster_where_any_primary_may_evict(cluster, crr):
    # Any primary may own the queue's slot (now or after a reshard): one allkeys-* node is enough.
    for node in cluster.nodes:
        admin = node.client()
        admin.config_set("maxmemory-policy", "allkeys-lru")
        try:
            with pytest.raises(EvictingRedisError, match="allkeys-lru"):
                await JobQueue(crr, "evictable").check_eviction_policy()
        finally:
            admin.config_set("maxmemory-policy", "noeviction")
            admin.close()


# -- leaderboard and health ------------------------------------------------------------------------


async def test_leaderboard_ranks_per_tenant_on_every_primary(cluster, crr):
    board = Leaderboard(crr)
    tenants = spread_scopes(cluster, board.key)
    for n, t in enumerate(tenants):
        await board.bulk_update(t, {f"m{i}": i * (n + 1) for i in range(50)})
        await board.increment(t, "m0", 1000)
        top, rank, score = await board.top_with_member(t, 3, "m10")
        assert [m for m, _ in top] == ["m0", "m49", "m48"]
        assert rank == 40 and score == 10 * (n + 1)
        assert await board.size(t) == 50


async def test_health_sums_the_counters_of_every_primary(cluster, crr):
    before = await redis_health(crr)
    keys = [make_key("cl", t, "x") for t in spread_scopes(cluster, lambda t: make_key("cl", t, "x"), 10)]
    for i, key in enumerate(keys):
        await crr.call(crr.client.set, key, i)
        await crr.call(crr.client.get, key)
    after = await redis_health(crr)
    assert after["status"] == "ok" and after["role"] == "master" and after["nodes"] == PRIMARIES
    assert after["keyspace_hits"] - before["keyspace_hits"] == len(keys) == 30  # 10 on each primary


def test_inspect_counts_the_keys_of_every_primary(cluster, capsys):
    from cachelab.cli import main

    cluster.flushall()
    client = create_sync_client(cluster.url)
    try:
        for scope in spread_scopes(cluster, lambda t: make_key("cl", t, "kpi", "kpis"), 4):
            client.set(make_key("cl", scope, "kpi", "kpis"), "x", ex=600)
    finally:
        client.close()
    assert main(["inspect", "--url", cluster.url]) == 0
    out = capsys.readouterr().out
    assert "cl:{*}:kpi" in out and "scanned 12 of 12 keys" in out  # 4 on each of 3 primaries


# -- the whole app ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_app_and_its_job_worker_serve_every_user_type_on_a_cluster_without_failures(cluster, tmp_path):
    from cachelab.harness.app_server import AppServer
    from cachelab.loadtest import run_scenario

    cluster.flushall()
    env = {"CACHELAB_RATE_LIMIT": "100000/60s"}
    mix = "viewer=1,browser=1,editor=1,reporter=1,leaderboard=1"
    with AppServer(redis_url=cluster.url, env=env, tenants=2, initiatives_per_tenant=100,
                   job_workers=1) as app:
        result = run_scenario(base_url=app.base_url, mix=mix, users=5, duration=4, think_time="0.05,0.15",
                              results_dir=tmp_path, timeout=60)
    assert result.exit_code == 0 and result.failures == 0, result.table() + result.output_tail
    assert {"POST /api/login", "GET /api/tenants/{t}/kpis", "PATCH /api/tenants/{t}/initiatives/{id}",
            "POST /api/tenants/{t}/reports", "GET /api/tenants/{t}/leaderboard"} <= set(result.endpoints)
    assert result.hit_ratio is not None and result.hit_ratio > 0
    assert all(size > 0 for size in cluster.dbsizes())  # the app's keys spread over every primary
