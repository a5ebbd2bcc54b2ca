"""The bounded pool: never more than its bound, waiters served in order, a bounded wait, no leaks.

Against the session's real redis-server: the pool's job is to hand out
working connections, so its tests send real commands through them.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from cachelab.client import ClientOptions, ResilientRedis, create_async_client
from cachelab.pool import BoundedConnectionPool


def make_pool(redis_url: str, max_connections: int, timeout: float = 2.0) -> BoundedConnectionPool:
    options = ClientOptions(max_connections=max_connections, pool_timeout=timeout)
    client = create_async_client(redis_url, options)
    pool = client.connection_pool
    assert isinstance(pool, BoundedConnectionPool)
    return pool


async def test_concurrent_commands_never_open_more_connections_than_the_bound(redis_url: str):
    rr = ResilientRedis(create_async_client(redis_url, ClientOptions(max_connections=3, pool_timeout=5.0)))
    pool = rr.client.connection_pool
    peak = 0

    async def one(i: int) -> bytes:
        nonlocal peak
        peak = max(peak, len(pool._in_use_connections))
        await rr.client.set(f"pool:{i}", i)
        return await rr.client.get(f"pool:{i}")

    try:
        values = await asyncio.gather(*(one(i) for i in range(200)))
        assert values == [str(i).encode() for i in range(200)]
        assert len(pool._in_use_connections) + len(pool._available_connections) <= 3
        assert pool._in_use_connections == set()  # everything came back
        assert pool.waiting == 0
    finally:
        await rr.aclose()


async def test_a_released_connection_goes_to_the_oldest_waiter(redis_url: str):
    pool = make_pool(redis_url, max_connections=1)
    held = await pool.get_connection()
    order: list[int] = []

    async def wait(i: int) -> None:
        conn = await pool.get_connection()
        order.append(i)
        await asyncio.sleep(0)
        await pool.release(conn)

    waiters = [asyncio.create_task(wait(i)) for i in range(5)]
    await asyncio.sleep(0.01)
    assert pool.waiting == 5
    await pool.release(held)
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2, 3, 4]
    assert len(pool._available_connections) == 1 and not pool._in_use_connections
    await pool.disconnect()


async def test_waiting_past_the_bound_ends_with_a_connection_error_after_the_timeout(redis_url: str):
    pool = make_pool(redis_url, max_connections=1, timeout=0.1)
    held = await pool.get_connection()
    with pytest.raises(RedisConnectionError, match="all 1 were busy"):
        await pool.get_connection()
    assert pool.waiting == 0
    await pool.release(held)
    conn = await pool.get_connection()  # the pool still works
    await pool.release(conn)
    await pool.disconnect()


async def test_a_waiter_cancelled_after_being_handed_a_connection_passes_it_on(redis_url: str):
    pool = make_pool(redis_url, max_connections=1)
    held = await pool.get_connection()
    first = asyncio.create_task(pool.get_connection())
    second = asyncio.create_task(pool.get_connection())
    await asyncio.sleep(0.01)
    await pool.release(held)  # handed to `first`, which has not resumed yet...
    first.cancel()  # ...and is cancelled before it does
    with pytest.raises(asyncio.CancelledError):
        await first
    conn = await asyncio.wait_for(second, 1.0)  # the connection reached the next waiter
    await conn.send_command("PING")
    assert await conn.read_response() in (b"PONG", "PONG")
    await pool.release(conn)
    assert len(pool._available_connections) == 1 and not pool._in_use_connections
    await pool.disconnect()


def test_a_pool_without_a_positive_wait_is_refused():
    with pytest.raises(ValueError, match="timeout"):
        BoundedConnectionPool(timeout=0)
