"""Client choice: redis-py sync vs redis.asyncio, hiredis vs the pure-Python parser.

Same target, same command, same value; only the client differs. The server
cost columns are identical by construction (same bytes on the wire), so every
difference in time is client-side: the asyncio machinery per await, and reply
parsing in C (hiredis) or Python. redis-py 5+ speaks RESP3 here (HELLO 3),
so the pure-Python parser is its RESP3 one.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
import redis.asyncio

from cachelab.harness.payloads import value_of_size
from cachelab.patterns.keys import make_key

try:
    from redis._parsers import _AsyncHiredisParser, _AsyncRESP3Parser, _HiredisParser, _RESP3Parser
    from redis.utils import HIREDIS_AVAILABLE
except ImportError:  # pragma: no cover - a redis-py that moved its parsers
    _AsyncHiredisParser = _AsyncRESP3Parser = _HiredisParser = _RESP3Parser = None
    HIREDIS_AVAILABLE = False

KEY = make_key("bench", "clients", "k")
VALUE = value_of_size(1_000)

PARSERS = {
    "hiredis": (_HiredisParser, _AsyncHiredisParser),
    "python": (_RESP3Parser, _AsyncRESP3Parser),
}


def _parser(name: str, index: int) -> Any:
    parser = PARSERS[name][index]
    if parser is None or (name == "hiredis" and not HIREDIS_AVAILABLE):
        pytest.skip(f"parser {name!r} is not available in this redis-py")
    return parser


@pytest.fixture
def seeded(bench_admin: redis.Redis) -> None:
    bench_admin.set(KEY, VALUE)


@pytest.mark.parametrize("parser", list(PARSERS))
@pytest.mark.parametrize("command", ["get", "set"])
def test_sync_client(command: str, parser: str, bench_sync: Any, make_sync_client: Any, seeded: None):
    client = make_sync_client(parser_class=_parser(parser, 0))
    op = (lambda: client.get(KEY)) if command == "get" else (lambda: client.set(KEY, VALUE))
    bench_sync(op, group=f"clients-{command}", extra={"client": "redis-py sync", "parser": parser})


@pytest.mark.parametrize("parser", list(PARSERS))
@pytest.mark.parametrize("command", ["get", "set"])
def test_async_client(command: str, parser: str, bench_async: Any, make_async_client: Any, seeded: None):
    client = make_async_client(parser_class=_parser(parser, 1))
    op = (lambda: client.get(KEY)) if command == "get" else (lambda: client.set(KEY, VALUE))
    bench_async(op, group=f"clients-{command}", extra={"client": "redis.asyncio", "parser": parser})


# -- the connection pool under the async client ----------------------------------------
#: pool → (pool class, what it does at the bound)
POOLS = {
    "bounded": "cachelab.pool.BoundedConnectionPool: free connection popped with no lock or timer; "
               "a bounded wait only at the bound (what cachelab's client uses)",
    "blocking": "redis-py BlockingConnectionPool: a Condition, a timeout and the pool lock on every "
                "checkout and release (cachelab's client before issue 16)",
    "plain": "redis-py ConnectionPool: the pool lock on every checkout and release; fails at once at the "
             "bound instead of waiting",
}  # fmt: skip


@pytest.mark.parametrize("pool", list(POOLS))
def test_async_pool(pool: str, bench_async: Any, make_async_client: Any, seeded: None):
    """One GET through the same counted client on three pools: only the checkout/release differs."""
    client = make_async_client()
    if pool != "bounded":
        old = client.connection_pool
        cls = redis.asyncio.BlockingConnectionPool if pool == "blocking" else redis.asyncio.ConnectionPool
        kwargs = {"timeout": old.timeout} if pool == "blocking" else {}
        client.connection_pool = cls(
            connection_class=old.connection_class,
            max_connections=old.max_connections,
            **kwargs,
            **old.connection_kwargs,
        )
    bench_async(lambda: client.get(KEY), group="clients-pool", extra={"pool": pool, "fairness": POOLS[pool]})
