"""The TCP fault proxy against a real redis-server: latency, hang, reset, refuse — always healed."""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time

import pytest
import redis

from cachelab.servers.fault_proxy import FaultProxy


@pytest.fixture
def proxy(redis_url):
    with FaultProxy.for_url(redis_url) as p:
        yield p


def client(proxy: FaultProxy, redis_url: str, timeout: float = 1.0) -> redis.Redis:
    return redis.Redis.from_url(
        proxy.url_for(redis_url),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry_on_timeout=False,
    )


def median_ping(c: redis.Redis, n: int = 9) -> float:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        c.ping()
        samples.append(time.perf_counter() - started)
    return sorted(samples)[n // 2]


def test_proxy_forwards_and_keeps_credentials_and_db_in_the_url(proxy, redis_url, redis_admin):
    c = client(proxy, redis_url)
    c.set("k", "v")
    assert redis_admin.get("k") == b"v"
    assert proxy.url_for("redis://user:pw@10.0.0.1:7000/3").endswith(f"user:pw@127.0.0.1:{proxy.port}/3")
    assert proxy.stats.connections >= 1 and proxy.stats.bytes_up > 0


def test_added_latency_is_at_least_the_requested_round_trip_and_is_undone(proxy, redis_url):
    c = client(proxy, redis_url)
    with proxy.fault("latency", rtt=0.02):
        assert median_ping(c) >= 0.02
    assert proxy._latency == 0


def test_latency_preserves_pipelining(proxy, redis_url):
    c = client(proxy, redis_url, timeout=5)
    proxy.set_latency(0.02)
    pipe = c.pipeline(transaction=False)
    for i in range(200):
        pipe.set(f"k{i}", i)
    started = time.perf_counter()
    pipe.execute()
    elapsed = time.perf_counter() - started
    proxy.heal()
    assert elapsed >= 0.02  # one round trip of latency, not 200 (no upper bound on a busy machine)


def test_hang_stalls_commands_until_healed(proxy, redis_url):
    c = client(proxy, redis_url, timeout=0.3)
    c.ping()
    with proxy.fault("hang"), pytest.raises(redis.TimeoutError):
        c.get("k")
    c2 = client(proxy, redis_url)
    assert c2.ping()


def test_reset_aborts_open_connections_and_refuses_new_ones_while_active(proxy, redis_url):
    c = client(proxy, redis_url)
    c.ping()
    with proxy.fault("reset"):
        assert proxy.stats.resets >= 1
        with pytest.raises(redis.ConnectionError):
            client(proxy, redis_url).ping()
    assert client(proxy, redis_url).ping()


def test_stop_with_bytes_in_flight_cancels_and_awaits_every_connection_task(redis_url, caplog):
    """Closing must leave no task pending: asyncio logs "Task was destroyed but it is pending!"
    when such a task is garbage-collected after its loop closed (seen in `cachelab report`)."""
    proxy = FaultProxy.for_url(redis_url).start()
    clients = [client(proxy, redis_url, timeout=10) for _ in range(4)]
    for c in clients:
        c.ping()
    proxy.set_latency(60)  # every byte from now on sits in the proxy's delivery queue
    sent = proxy.stats.bytes_up
    threads = [threading.Thread(target=_ping_quietly, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while proxy.stats.bytes_up < sent + 4 * len(b"*1\r\n$4\r\nPING\r\n") and time.monotonic() < deadline:
        time.sleep(0.01)
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        proxy.stop()
        for t in threads:
            t.join(timeout=10)
        gc.collect()
    problems = [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert problems == []
    for c in clients:
        c.close()


def _ping_quietly(c: redis.Redis) -> None:
    with contextlib.suppress(redis.RedisError):
        c.ping()
