"""Fixtures for the microbenchmarks: one loop, one target, one cost meter, short helpers.

A pattern benchmark should be a few lines::

    def test_cache_hit(bench_async, bench_rredis, arun):
        cache = ...(bench_rredis)
        arun(cache.set("k", 1))
        bench_async(lambda: cache.get("k"), group="cache", ops=200)

``bench_async``/``bench_sync`` time the operation per op and record its
server cost (see :mod:`cachelab.harness.bench`). The target is the session's
launched redis-server, or ``REDIS_URL`` (a throwaway database: it is flushed
before every benchmark); its address and version go into every result.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from cachelab.client import (
    ClientOptions,
    ResilientRedis,
    RoundTripCounter,
    create_async_client,
    create_sync_client,
)
from cachelab.harness.bench import AsyncBench, BenchConfig, BenchTarget, SyncBench
from cachelab.harness.cost import CostMeter

# Generous command timeout: 1 MB values on a busy 2-core machine must not trip the breaker.
BENCH_CLIENT_OPTIONS = ClientOptions(command_timeout=5.0, connect_timeout=2.0)


@pytest.fixture(scope="session")
def bench_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The one event loop every async benchmark runs on (not pytest-asyncio's per-test loops)."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


@pytest.fixture(scope="session")
def arun(bench_loop: asyncio.AbstractEventLoop) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """``arun(coro)``: run setup code on the benchmark loop, where the clients' connections live."""
    return bench_loop.run_until_complete


@pytest.fixture(scope="session")
def bench_round_trips() -> RoundTripCounter:
    """Shared by every counted bench client, so the meter sees their round trips."""
    return RoundTripCounter()


@pytest.fixture(scope="session")
def bench_target(redis_url: str) -> BenchTarget:
    return BenchTarget.probe(redis_url)


@pytest.fixture(scope="session")
def bench_meter(redis_url: str, bench_round_trips: RoundTripCounter) -> Iterator[CostMeter]:
    meter = CostMeter(redis_url, bench_round_trips)
    yield meter
    meter.close()


@pytest.fixture(scope="session")
def _bench_rredis_session(
    redis_url: str, bench_loop: asyncio.AbstractEventLoop, bench_round_trips: RoundTripCounter
) -> Iterator[ResilientRedis]:
    client = create_async_client(redis_url, BENCH_CLIENT_OPTIONS, bench_round_trips)
    rredis = ResilientRedis(client, round_trips=bench_round_trips, url=redis_url)
    yield rredis
    bench_loop.run_until_complete(rredis.aclose())


@pytest.fixture(scope="session")
def _bench_sync_session(redis_url: str, bench_round_trips: RoundTripCounter) -> Iterator[redis.Redis]:
    client = create_sync_client(redis_url, BENCH_CLIENT_OPTIONS, bench_round_trips)
    yield client
    client.close()


@pytest.fixture
def bench_admin(redis_admin: redis.Redis) -> redis.Redis:
    """An uncounted sync client for setup, on a database flushed for this benchmark."""
    return redis_admin


@pytest.fixture
def bench_rredis(_bench_rredis_session: ResilientRedis, bench_admin: redis.Redis) -> ResilientRedis:
    """The session's :class:`ResilientRedis` (on ``bench_loop``, round trips counted), db flushed."""
    return _bench_rredis_session


@pytest.fixture
def bench_sync_redis(_bench_sync_session: redis.Redis, bench_admin: redis.Redis) -> redis.Redis:
    """A counted sync redis-py client on the same target, db flushed."""
    return _bench_sync_session


@pytest.fixture
def make_sync_client(
    redis_url: str, bench_round_trips: RoundTripCounter
) -> Iterator[Callable[..., redis.Redis]]:
    """Factory for extra counted sync clients (closed after the test)."""
    made: list[redis.Redis] = []

    def make(**connection_kwargs: Any) -> redis.Redis:
        client = create_sync_client(redis_url, BENCH_CLIENT_OPTIONS, bench_round_trips)
        client.connection_pool.connection_kwargs.update(connection_kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def make_async_client(
    redis_url: str, bench_round_trips: RoundTripCounter, bench_loop: asyncio.AbstractEventLoop
) -> Iterator[Callable[..., redis.asyncio.Redis]]:
    """Factory for extra counted redis.asyncio clients, used and closed on ``bench_loop``."""
    made: list[redis.asyncio.Redis] = []

    def make(**connection_kwargs: Any) -> redis.asyncio.Redis:
        client = create_async_client(redis_url, BENCH_CLIENT_OPTIONS, bench_round_trips)
        client.connection_pool.connection_kwargs.update(connection_kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        bench_loop.run_until_complete(client.aclose())


@pytest.fixture(scope="session")
def async_bench(
    bench_loop: asyncio.AbstractEventLoop, bench_meter: CostMeter, bench_target: BenchTarget
) -> AsyncBench:
    return AsyncBench(bench_loop, meter=bench_meter, target=bench_target, config=BenchConfig.from_env())


@pytest.fixture(scope="session")
def sync_bench(bench_meter: CostMeter, bench_target: BenchTarget) -> SyncBench:
    return SyncBench(meter=bench_meter, target=bench_target, config=BenchConfig.from_env())


@pytest.fixture
def bench_async(benchmark: Any, async_bench: AsyncBench, bench_admin: redis.Redis) -> Callable[..., Any]:
    """``bench_async(lambda: coro, group=..., ops=200, batch=1, extra=..., memory_key=..., cost=True)``."""
    return functools.partial(async_bench, benchmark)


@pytest.fixture
def bench_sync(benchmark: Any, sync_bench: SyncBench, bench_admin: redis.Redis) -> Callable[..., Any]:
    """``bench_sync(lambda: value, group=..., ops=200, ...)``: the sync twin of ``bench_async``."""
    return functools.partial(sync_bench, benchmark)


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own table
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """After measured benchmarks: how to compare two runs without being fooled by one median."""
    if getattr(config.option, "benchmark_disable", True):  # smoke mode, or pytest-benchmark absent
        return
    terminalreporter.write_line(
        "cachelab: to compare runs, use `cachelab report --against <ref>` (interleaved trials, one run) or "
        "`cachelab compare A B` on two result folders; one median per benchmark (--benchmark-compare-fail) "
        "flags noise on a shared machine. See bench/README.md."
    )
