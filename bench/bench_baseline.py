"""The floor: raw commands on the same connection every pattern uses.

A pattern's time means little alone on a shared, noisy machine; its ratio to
PING and GET measured in the same run does. These are the cheapest things one
round trip can do (PING, GET hit/miss, SET, EVALSHA of a script that does
nothing), async and sync, plus SET+GET at value sizes from 100 B to 1 MB,
where ``bytes_in_per_op``/``bytes_out_per_op`` and ``memory_per_key`` show
what size costs the server; and the floor of rows that make no round trip, a
fixed slice of interpreter work.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from cachelab.client import ResilientRedis
from cachelab.harness.payloads import value_of_size
from cachelab.patterns.keys import make_key

HIT = make_key("bench", "baseline", "hit")
MISS = make_key("bench", "baseline", "absent")
WRITTEN = make_key("bench", "baseline", "written")
VALUE = value_of_size(100)
# The cheapest script there is: measures EVALSHA's fixed cost, not any pattern's Lua.
# Kept inline because it is a measuring stick, not a pattern.
TRIVIAL_LUA = "return 1"

COMMANDS = ["ping", "get_hit", "get_miss", "set", "evalsha"]


@pytest.fixture
def seeded(bench_admin: redis.Redis) -> None:
    bench_admin.set(HIT, VALUE)


@pytest.mark.parametrize("command", COMMANDS)
def test_async_floor(command: str, bench_async: Any, bench_rredis: ResilientRedis, arun: Any, seeded: None):
    client = bench_rredis.client
    script = client.register_script(TRIVIAL_LUA)
    arun(script(keys=[HIT]))  # load it now so the cost pass sees EVALSHA alone
    ops = {
        "ping": lambda: client.ping(),
        "get_hit": lambda: client.get(HIT),
        "get_miss": lambda: client.get(MISS),
        "set": lambda: client.set(WRITTEN, VALUE),
        "evalsha": lambda: script(keys=[HIT]),
    }
    bench_async(
        ops[command],
        group="baseline",
        extra={"client": "redis.asyncio"},
        memory_key=WRITTEN if command == "set" else None,
    )


def test_async_ping_through_breaker(bench_async: Any, bench_rredis: ResilientRedis):
    """PING via ``ResilientRedis.call``: the circuit breaker's own overhead per call."""
    client = bench_rredis.client
    bench_async(
        lambda: bench_rredis.call(client.ping), group="baseline", extra={"client": "ResilientRedis.call"}
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_sync_floor(command: str, bench_sync: Any, bench_sync_redis: redis.Redis, seeded: None):
    client = bench_sync_redis
    script = client.register_script(TRIVIAL_LUA)
    script(keys=[HIT])
    ops = {
        "ping": client.ping,
        "get_hit": lambda: client.get(HIT),
        "get_miss": lambda: client.get(MISS),
        "set": lambda: client.set(WRITTEN, VALUE),
        "evalsha": lambda: script(keys=[HIT]),
    }
    bench_sync(
        ops[command],
        group="baseline",
        extra={"client": "redis-py sync"},
        memory_key=WRITTEN if command == "set" else None,
    )


def _interpreter_work() -> int:
    """A fixed slice of what the CPU-only rows are made of: calls, f-strings, dict updates."""
    seen: dict[str, int] = {}
    for i in range(16):
        key = f"bench:cpu:{i}"
        seen[key] = seen.get(key, 0) + i
    return len(seen)


def test_cpu_floor(bench_sync: Any):
    """The floor of rows with no round trip (key building, leased limits, in-process requests): a
    round trip's time moves with how deeply the CPUs idle, interpreter work with how busy they are,
    so each is divided by the floor that moves with it."""
    bench_sync(_interpreter_work, group="baseline", extra={"client": "none: interpreter work"})


# Fewer calls per round for big values: a round stays a few milliseconds to tens of them.
SIZES = {
    "100B": (100, 200),
    "1KB": (1_000, 200),
    "10KB": (10_000, 100),
    "100KB": (100_000, 30),
    "1MB": (1_000_000, 5),
}


@pytest.mark.parametrize("size", list(SIZES))
def test_async_set_get_value_size(size: str, bench_async: Any, bench_rredis: ResilientRedis):
    """One op = SET then GET of the same value: 2 round trips, ~2×size bytes over the wire."""
    nbytes, ops = SIZES[size]
    client = bench_rredis.client
    key = make_key("bench", "size", size)
    value = value_of_size(nbytes)

    async def set_get() -> None:
        await client.set(key, value)
        await client.get(key)

    bench_async(set_get, group="value-size", ops=ops, memory_key=key, extra={"value_bytes": nbytes})
