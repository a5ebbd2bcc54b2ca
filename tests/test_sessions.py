"""Sessions on a real redis-server: ids, expiry, rotation, log-out-everywhere, concurrency."""

from __future__ import annotations

import ast
import asyncio
import datetime
import inspect
import itertools
import time
from pathlib import Path

import orjson
import pytest
import redis

import cachelab.patterns.sessions as sessions_module
from cachelab.client import ClientOptions, ResilientRedis
from cachelab.patterns.sessions import SessionStore, is_valid_session_id, new_session_id
from cachelab.resilience import CircuitBreaker, RedisUnavailable
from cachelab.servers import RedisServer


def store(rr: ResilientRedis, **kw) -> SessionStore:
    kw.setdefault("idle_timeout", 60)
    kw.setdefault("absolute_lifetime", 600)
    return SessionStore(rr, **kw)


def live_session_keys(admin: redis.Redis) -> list[bytes]:
    return [k for k in admin.scan_iter(match="cl:*:session", count=1000) if admin.type(k) == b"hash"]


async def test_ids_are_256_bit_random_and_unknown_ids_are_refused_without_creating_keys(
    rredis, redis_admin, cost_meter
):
    s = store(rredis)
    sid = new_session_id()
    assert is_valid_session_id(sid) and len(sid) == 43 and sid != new_session_id()
    hostile = ["", "short", sid + "x", sid[:-1] + "*", sid[:-1] + "}", "../" + sid[3:], None, 42]
    with cost_meter.measure() as cost:
        for bad in hostile:
            assert await s.get(bad) is None
            assert await s.update(bad, {"x": 1}) is False
            assert await s.rotate(bad) is None
            assert await s.destroy(bad) is False
    assert cost.round_trips == 0  # malformed ids never reach Redis
    # A well-formed id the server never issued: a miss, and nothing is created by any call.
    planted = new_session_id()
    assert await s.get(planted) is None
    assert await s.update(planted, {"role": "admin"}) is False
    assert await s.rotate(planted) is None
    assert await s.destroy(planted) is False
    assert redis_admin.dbsize() == 0


async def test_get_reads_and_slides_the_idle_timeout_in_exactly_one_round_trip(
    rredis, redis_admin, cost_meter
):
    s = store(rredis, idle_timeout=30, absolute_lifetime=3600)
    created = await s.create("alice", {"cart": [1, 2], "n": 0, "flag": False, "none": None})
    key = s.session_key(created.id)
    redis_admin.pexpire(key, 5000)  # pretend time passed: the read must slide it back up
    await s.get(created.id)  # load the script outside the measured block
    with cost_meter.measure() as cost:
        got = await s.get(created.id)
    assert cost.round_trips == 1
    # One EVALSHA; commandstats also counts the commands the script ran inside the server.
    assert cost.commands == {
        "evalsha": 1,
        "type": 1,
        "hget": 1,
        "time": 1,
        "hset": 1,
        "pexpire": 1,
        "hgetall": 1,
    }
    assert got is not None
    assert got.data == {"cart": [1, 2], "n": 0, "flag": False, "none": None}
    assert got.user_id == "alice" and got.created_at == created.created_at
    assert 25_000 < redis_admin.pttl(key) <= 30_000


async def test_idle_timeout_and_absolute_lifetime_are_both_enforced(rredis, redis_admin):
    """idle 1 s, absolute 2.5 s: a session read every 0.3 s dies at 2.5 s; an unread one after 1 s."""
    s = store(rredis, idle_timeout=1.0, absolute_lifetime=2.5)
    t0 = time.monotonic()
    busy = await s.create("u", {"k": "busy"})
    idle = await s.create("u", {"k": "idle"})
    t_created = time.monotonic() - t0
    idle_key = s.session_key(idle.id)
    assert busy.absolute_expires_at - busy.created_at == pytest.approx(2.5)
    assert redis_admin.exists(idle_key)
    idle_gone_while_busy_alive = False
    reads: list[tuple[float, float, bool]] = []  # (start, end, alive), seconds since t0
    while time.monotonic() - t0 < 3.5:
        start = time.monotonic() - t0
        alive = await s.get(busy.id) is not None
        reads.append((start, time.monotonic() - t0, alive))
        if not alive:
            break
        assert redis_admin.pttl(s.session_key(busy.id)) <= 1000  # the TTL never exceeds the idle timeout
        if 1.3 < start < 2.3 and not redis_admin.exists(idle_key):
            idle_gone_while_busy_alive = True
        await asyncio.sleep(0.3)
    assert idle_gone_while_busy_alive, "the unread session must die of idleness, before the deadline"
    assert await s.get(idle.id) is None
    assert max(end for _start, end, alive in reads if alive) > 1.5, "reads must slide the idle timeout"
    # Dead at the absolute deadline: no read that started after created + 2.5 s succeeded ...
    assert all(start < t_created + 2.5 for start, _end, alive in reads if alive)
    assert not reads[-1][2]
    # ... and not before it, unless (busy machine) two reads were further apart than the idle timeout.
    if all(b[1] - a[0] < 0.95 for a, b in itertools.pairwise(reads)):
        assert reads[-1][1] > 2.45
    assert redis_admin.dbsize() <= 1  # only the user index is left


async def test_script_refuses_and_deletes_a_session_past_its_absolute_deadline(rredis, redis_admin):
    s = store(rredis)
    session = await s.create("u", {"a": 1})
    key = s.session_key(session.id)
    # Someone PERSISTed the key and the deadline passed: the TTL no longer protects us.
    redis_admin.hset(key, "m.abs", int(time.time() * 1000) - 1)
    redis_admin.persist(key)
    assert await s.get(session.id) is None
    assert not redis_admin.exists(key)


async def test_destroyed_session_is_not_brought_back_by_a_late_update(rredis, redis_admin):
    s = store(rredis)
    session = await s.create("u", {"a": 1})
    assert await s.update(session.id, {"b": 2}) is True
    assert await s.destroy(session.id) is True
    assert await s.update(session.id, {"c": 3}) is False
    assert await s.get(session.id) is None
    assert redis_admin.exists(s.session_key(session.id)) == 0
    assert redis_admin.zcard(s.index_key("u")) == 0
    assert await s.destroy(session.id) is False


async def test_rotation_invalidates_the_old_id_and_keeps_data_and_deadlines(rredis, redis_admin):
    s = store(rredis)
    old = await s.create("u", {"role": "guest"})
    await s.update(old.id, {"role": "admin"})
    new = await s.rotate(old.id)
    assert new is not None and new.id != old.id and is_valid_session_id(new.id)
    assert new.data == {"role": "admin"}
    assert new.created_at == old.created_at
    assert new.absolute_expires_at == old.absolute_expires_at  # rotation never extends a session
    assert await s.get(old.id) is None
    assert await s.update(old.id, {"role": "root"}) is False
    assert await s.rotate(old.id) is None
    got = await s.get(new.id)
    assert got is not None and got.data == {"role": "admin"}
    assert [m.decode() for m in redis_admin.zrange(s.index_key("u"), 0, -1)] == [new.id]
    assert await s.destroy_all_for_user("u") == 1
    assert await s.get(new.id) is None


async def test_log_out_everywhere_removes_all_of_a_users_sessions_and_only_theirs(rredis, redis_admin):
    s = store(rredis)
    hostile = "alice}:{bob"  # escaped by make_key: cannot reach bob's or alice's index
    alice = [await s.create("alice", {"i": i}) for i in range(3)]
    alice[0] = await s.rotate(alice[0].id)
    bob = [await s.create("bob", {"i": i}) for i in range(2)]
    other = await s.create(hostile, {})
    assert await s.destroy_all_for_user("alice") == 3
    for session in alice:
        assert await s.get(session.id) is None
        assert await s.update(session.id, {"x": 1}) is False
    for session in [*bob, other]:
        assert await s.get(session.id) is not None
    assert not redis_admin.exists(s.index_key("alice"), s.revoking_key("alice"))
    assert await s.destroy_all_for_user("alice") == 0
    assert await s.destroy_all_for_user(hostile) == 1
    assert len(live_session_keys(redis_admin)) == 2


async def test_concurrent_updates_of_different_fields_all_survive(rredis):
    s = store(rredis)
    session = await s.create("u", {"base": True})
    results = await asyncio.gather(*(s.update(session.id, {f"f{i}": i}) for i in range(50)))
    assert all(results)
    got = await s.get(session.id)
    assert got is not None
    assert got.data == {"base": True, **{f"f{i}": i for i in range(50)}}


async def test_logins_and_rotations_racing_log_out_everywhere_leave_no_unindexed_session(rredis, redis_admin):
    """Every live session must be reachable from the index, whatever the interleaving."""
    s = store(rredis)
    seed = [await s.create("u", {"i": i}) for i in range(20)]

    async def churn() -> None:
        for i in range(20):
            await s.create("u", {"new": i})
            await s.rotate(seed[i].id)

    async def revoke() -> None:
        for _ in range(10):
            await s.destroy_all_for_user("u")
            await asyncio.sleep(0)

    await asyncio.gather(churn(), churn(), revoke())
    indexed = {m.decode() for m in redis_admin.zrange(s.index_key("u"), 0, -1)}
    live = {k.decode().split("{")[1].split("}")[0] for k in live_session_keys(redis_admin)}
    assert live <= indexed
    await s.destroy_all_for_user("u")
    assert live_session_keys(redis_admin) == []


@pytest.mark.parametrize("step", ["_index_add", "_write"])
async def test_log_out_everywhere_landing_inside_a_login_or_rotation_wins(rredis, redis_admin, step):
    """Force the worst interleavings: log-out-everywhere runs just before each cross-slot step."""
    s = store(rredis)
    victim = await s.create("u", {"role": "user"})
    real = getattr(s, step)
    fired: list[int] = []

    async def revoke_first(*args, **kwargs):
        if not fired:
            fired.append(await s.destroy_all_for_user("u"))
        return await real(*args, **kwargs)

    setattr(s, step, revoke_first)
    assert await s.rotate(victim.id) is None  # the revocation took the session; nothing carried over
    assert live_session_keys(redis_admin) == []
    fired.clear()
    login = await s.create("u", {"fresh": True})  # a login racing it is retried with a new id
    assert fired and await s.get(login.id) is not None
    assert [m.decode() for m in redis_admin.zrange(s.index_key("u"), 0, -1)] == [login.id]
    await s.destroy_all_for_user("u")
    assert live_session_keys(redis_admin) == []


async def test_non_json_values_are_type_errors_and_oversized_sessions_value_errors_writing_nothing(
    rredis, redis_admin
):
    s = store(rredis, max_bytes=1024)
    for bad in [{"when": datetime.datetime.now()}, {"raw": b"bytes"}, {"s": {1, 2}}, {1: "int key"}]:
        with pytest.raises(TypeError, match=r"JSON|str"):
            await s.create("u", bad)
    with pytest.raises(ValueError, match="max_bytes"):
        await s.create("u", {"blob": "x" * 2000})
    assert redis_admin.dbsize() == 0
    session = await s.create("u", {"a": "x" * 300})
    await s.update(session.id, {"b": "y" * 300})
    with pytest.raises(ValueError, match="max_bytes"):  # fine alone, too big together: the server says no
        await s.update(session.id, {"c": "z" * 500})
    with pytest.raises(TypeError, match="JSON"):
        await s.update(session.id, {"c": object()})
    await s.update(session.id, {"a": "x"}, remove=["b"])  # shrinking frees room again
    assert await s.update(session.id, {"c": "z" * 500}) is True
    got = await s.get(session.id)
    assert got is not None and set(got.data) == {"a", "c"}
    # What is stored is JSON, field by field, and nothing else.
    stored = redis_admin.hgetall(s.session_key(session.id))
    assert {k.decode()[2:]: orjson.loads(v) for k, v in stored.items() if k.startswith(b"d.")} == got.data


def test_no_pickle_anywhere_in_sessions():
    tree = ast.parse(inspect.getsource(sessions_module))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {"pickle", "cPickle", "dill", "marshal", "shelve"} & imported
    lua = Path(sessions_module.__file__).parent / "lua"
    assert all("pickle" not in p.read_text() for p in lua.glob("session_*.lua"))


async def test_user_index_is_pruned_and_expires_with_its_last_deadline(rredis, redis_admin):
    s = store(rredis, absolute_lifetime=600, index_prune_threshold=5)
    sessions = [await s.create("u", {}) for _ in range(5)]
    index = s.index_key("u")
    assert 0 < redis_admin.pttl(index) <= 600_000
    for session in sessions[:4]:  # as if they had idled out
        redis_admin.delete(s.session_key(session.id))
    fresh = await s.create("u", {})
    await s.prune_user_index("u")
    assert {m.decode() for m in redis_admin.zrange(index, 0, -1)} == {sessions[4].id, fresh.id}
    assert await s.prune_user_index("u") == 0
    # A pruned id is claimed by a tombstone, so a create that indexed it but has not written it yet
    # cannot write it afterwards.
    assert redis_admin.get(s.session_key(sessions[0].id)) == b"revoked"
    # Past-deadline entries are dropped on every insertion.
    short = store(rredis, idle_timeout=0.2, absolute_lifetime=0.3)
    await short.create("v", {})
    await asyncio.sleep(0.4)
    await short.create("v", {})
    assert redis_admin.zcard(short.index_key("v")) == 1


async def test_get_raises_redis_unavailable_when_redis_is_down(private_redis: RedisServer):
    rr = ResilientRedis.from_url(
        private_redis.url,
        # Generous: the create must not time out on a busy machine. A killed server refuses
        # connections at once, so the reads below fail fast whatever the timeouts are.
        options=ClientOptions(connect_timeout=3.0, command_timeout=3.0, retries=0),
        breaker=CircuitBreaker(failure_threshold=2, reset_timeout=30),
    )
    try:
        s = store(rr)
        session = await s.create("u", {"a": 1})
        private_redis.kill()
        for _ in range(4):  # never "no session" (logs everyone out), never "valid" (fails open)
            with pytest.raises(RedisUnavailable):
                await s.get(session.id)
    finally:
        await rr.aclose()
