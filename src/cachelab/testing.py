"""pytest fixtures shared by ``tests/`` and ``bench/`` (loaded from the root conftest).

Every fixture talks to a real redis-server: the session's own, launched on a
free loopback port, or the one named by ``REDIS_URL``. Tests flush the
database between tests, so point ``REDIS_URL`` only at a throwaway database.
Fault tests use :func:`private_redis`, which always launches a fresh server:
a server the suite did not start is never killed or paused.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from cachelab.client import ClientOptions, ResilientRedis
from cachelab.harness.cost import CostMeter
from cachelab.servers.redis_server import RedisServer, RedisServerConfig


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer | None]:
    """The session's launched server, or None when ``REDIS_URL`` names one."""
    if os.environ.get("REDIS_URL"):
        yield None
        return
    with RedisServer(RedisServerConfig()) as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer | None) -> str:
    return redis_server.url if redis_server is not None else os.environ["REDIS_URL"]


@pytest.fixture
def redis_admin(redis_url: str) -> Iterator[redis.Redis]:
    """A plain sync client on a flushed database."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
async def rredis(redis_url: str, redis_admin: redis.Redis) -> AsyncIterator[ResilientRedis]:
    """A :class:`ResilientRedis` (breaker, background budget, round-trip counter) on a clean db."""
    client = ResilientRedis.from_url(redis_url, options=ClientOptions(command_timeout=2.0))
    yield client
    await client.aclose()


@pytest.fixture
def cost_meter(redis_url: str, rredis: ResilientRedis) -> Iterator[CostMeter]:
    meter = CostMeter(redis_url, rredis.round_trips)
    yield meter
    meter.close()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A fresh redis-server for this test alone: safe to kill, pause and restart."""
    with RedisServer(RedisServerConfig()) as server:
        yield server
