"""The Redis client: one pool per process, timeouts, redis-py's retry, a breaker.

The seed's client gives up reconnecting after one retry, has no command
timeout, and makes every request wait the 2 s connect timeout while Redis is
down. Here a :class:`ResilientRedis` bundles:

* a ``redis.asyncio.Redis`` on one connection pool, with a connect timeout, a
  command (socket) timeout and redis-py's own asyncio ``Retry`` with
  exponential backoff and jitter for a lost or refused connection (not for a
  timeout: see :func:`create_async_client`);
* a :class:`~cachelab.resilience.CircuitBreaker` every pattern calls through;
* a bounded :class:`~cachelab.resilience.BackgroundTasks` for refreshes and
  fire-and-forget writes;
* a round-trip counter (each ``send_packed_command`` is one round trip; a
  pipeline is one), which the cost meter reads.

Lua scripts are loaded from ``.lua`` files and run with EVALSHA, falling back
to loading the script on NOSCRIPT, as redis-py's ``Script`` does.

Redis Cluster: a ``redis+cluster://host:port`` (or ``rediss+cluster://``) URL
names one node of a cluster; the client is then a
``redis.asyncio.RedisCluster`` that discovers the others and routes each
command by its key's slot. Plain ``redis://`` stays a single server, because
guessing (sending CLUSTER INFO to every server at start-up) would make a
proxy or a managed endpoint behave differently from the server behind it.
Differences to know: redis-py's cluster client has no blocking pool (past
``max_connections`` per node a call fails at once, and the breaker counts
it), and multi-key commands need keys of one slot (every pattern builds its
keys with a ``{scope}`` hash tag for that reason).

This module is the bottom layer: it takes :class:`ClientOptions`, never the
app's settings. :meth:`cachelab.config.Settings.redis_client` builds a client
from the environment.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import math
import threading
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
import redis.asyncio
from redis.asyncio.connection import Connection as AsyncConnection
from redis.asyncio.connection import SSLConnection as AsyncSSLConnection
from redis.asyncio.connection import UnixDomainSocketConnection as AsyncUnixConnection
from redis.asyncio.connection import parse_url as async_parse_url
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from cachelab import request_cost
from cachelab.errors import ConfigError
from cachelab.pool import BoundedConnectionPool
from cachelab.resilience import BackgroundTasks, CircuitBreaker

T = TypeVar("T")

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)

#: What :func:`create_async_client` returns: one server, or a cluster.
AsyncRedisClient = redis.asyncio.Redis | redis.asyncio.RedisCluster


def is_cluster_url(url: str) -> bool:
    """True for ``redis+cluster://`` and ``rediss+cluster://`` URLs."""
    return urllib.parse.urlparse(url).scheme in CLUSTER_SCHEMES


def validate_redis_url(url: str) -> None:
    """Raise :class:`ConfigError` with a readable reason if ``url`` cannot be a Redis URL."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in SCHEMES:
        raise ConfigError(
            "REDIS_URL must start with redis://, rediss://, unix://, or redis+cluster:// / "
            f"rediss+cluster:// for Redis Cluster (got {_redact(url)!r})"
        )
    if parsed.scheme != "unix" and not parsed.hostname:
        raise ConfigError(f"REDIS_URL has no host: {_redact(url)!r}")
    try:
        parsed.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigError(f"REDIS_URL has an invalid port: {_redact(url)!r}") from None
    db = parsed.path.lstrip("/")
    if parsed.scheme != "unix" and db and not db.isdigit():
        raise ConfigError(f"REDIS_URL database must be a number, got {db!r}")
    if parsed.scheme in CLUSTER_SCHEMES and db not in ("", "0"):
        raise ConfigError(f"REDIS_URL: Redis Cluster has only database 0, got {db!r}")


def _redact(url: str) -> str:
    """The URL with any password replaced, safe for logs and error messages."""
    parsed = urllib.parse.urlparse(url)
    if parsed.password:
        netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
        return parsed._replace(netloc=netloc).geturl()
    return url


redact_url = _redact


#: Commands whose INFO commandstats entry is per subcommand (``client|setinfo``) on Redis >= 7.
SUBCOMMAND_FAMILIES = frozenset(
    {"acl", "client", "cluster", "command", "config", "function", "latency", "memory", "module",
     "object", "pubsub", "script", "slowlog", "xgroup", "xinfo"}
)


#: ``"EVALSHA"`` → ``"evalsha"``: names of one-word commands seen so far (bounded).
_SIMPLE_NAMES: dict[str, str] = {}


def command_name(args: tuple[Any, ...]) -> str:
    """The commandstats name of a packed command: ``get``, ``evalsha``, ``client|setinfo``."""
    if not args:
        return ""
    first = args[0]
    if type(first) is str and (name := _SIMPLE_NAMES.get(first)) is not None:
        return name  # the common case, on every command sent: one dict lookup
    words = _word(first).split()
    if type(first) is str and len(words) == 1 and words[0] not in SUBCOMMAND_FAMILIES:
        if len(_SIMPLE_NAMES) < 1024:
            _SIMPLE_NAMES[first] = words[0]
        return words[0]
    if not words:
        return ""
    if words[0] not in SUBCOMMAND_FAMILIES:
        return words[0]
    if len(words) == 1 and len(args) > 1:
        words.append(_word(args[1]))
    return "|".join(words[:2])


def _word(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("latin-1").lower()
    return str(value).lower()


class RoundTripCounter:
    """What a client wrote to the server: round trips, and commands by name.

    Round trips are counted per ``send_packed_command`` (a pipeline is one).
    Commands are counted as they are packed; those between MULTI and EXEC are
    also counted in ``queued``, because the server runs them inside EXEC and
    books their time under EXEC as well as under their own name. Knowing
    what the client sent is what lets :class:`~cachelab.harness.cost.CostMeter`
    tell top-level commands from those a script or a transaction ran.
    Thread-safe and cheap (a lock and a dict update per command).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0
        self.commands: dict[str, int] = {}
        self.queued: dict[str, int] = {}

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.value += n

    def record(self, name: str, *, queued: bool) -> None:
        with self._lock:
            self.commands[name] = self.commands.get(name, 0) + 1
            if queued:
                self.queued[name] = self.queued.get(name, 0) + 1

    def snapshot(self) -> tuple[int, dict[str, int], dict[str, int]]:
        """(round trips, commands by name, queued by name), copied under the lock."""
        with self._lock:
            return self.value, dict(self.commands), dict(self.queued)


class _CommandTally:
    """Mixed into a connection class: tells its counter the name of every command it packs."""

    _counter: RoundTripCounter | None = None
    _in_multi = False

    def _tally(self, args: tuple[Any, ...]) -> None:
        if (scoped := request_cost.current.get()) is not None:
            scoped.redis_commands += 1
        counter = self._counter
        if counter is None or not args:
            return
        name = command_name(args)
        if name == "multi":
            self._in_multi = True
        elif name in ("exec", "discard"):
            self._in_multi = False
        counter.record(name, queued=self._in_multi and name not in ("multi", "exec", "discard"))

    # Single commands are counted in each connection class's ``send_command`` (redis-py's sync
    # client packs them without calling ``pack_command``); pipelines and transactions here.
    def pack_commands(self, commands: Any) -> Any:
        commands = [tuple(c) for c in commands]
        for args in commands:
            self._tally(args)
        return super().pack_commands(commands)  # type: ignore[misc]


try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # hiredis is a dependency (redis[hiredis]); redis-py packs without it
    _hiredis_pack = None

#: ``read_response(timeout=math.inf)``: no timer of its own (the caller holds one for the batch).
_NO_READ_TIMER = math.inf


def _counting_async(base: type[AsyncConnection], counter: RoundTripCounter | None) -> type:
    class CountingConnection(_CommandTally, base):  # type: ignore[misc, valid-type]
        _counter = counter

        async def send_command(self, *args: Any, **kwargs: Any) -> None:
            self._tally(args)
            await super().send_command(*args, **kwargs)

        def pack_command(self, *args: Any) -> list[bytes]:
            # hiredis packs in C (redis-py's sync client uses it; its asyncio client packs in
            # Python): ~1 µs instead of ~9 for a rate-limit EVALSHA. Anything it would treat
            # differently goes to redis-py: a multi-word or bytes command name (redis-py splits those),
            # types it refuses (bool, None, bytearray: redis-py's DataError), and a connection
            # whose encoder is not plain UTF-8.
            name = args[0]
            if (
                _hiredis_pack is not None
                and type(name) is str
                and " " not in name
                and self.encoder.encoding == "utf-8"
                and self.encoder.encoding_errors == "strict"
            ):
                try:
                    return [_hiredis_pack(args)]
                except TypeError:
                    pass
            return super().pack_command(*args)

        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            if self._counter is not None:
                self._counter.add()
            if (scoped := request_cost.current.get()) is not None:
                scoped.redis_round_trips += 1
            try:
                await super().send_packed_command(command, check_health)
            except RuntimeError as exc:
                # uvloop raises RuntimeError ("the handler is closed") when the peer reset the
                # connection under us; it is a lost connection, and must reach the retry and
                # the breaker as one rather than surface as a 500.
                await self.disconnect(nowait=True)
                raise RedisConnectionError(f"connection lost: {exc}") from exc

    CountingConnection.__name__ = f"Counting{base.__name__}"
    return CountingConnection


def _counting_sync(base: type[redis.Connection], counter: RoundTripCounter) -> type:
    class CountingConnection(_CommandTally, base):  # type: ignore[misc, valid-type]
        _counter = counter

        def send_command(self, *args: Any, **kwargs: Any) -> None:
            self._tally(args)
            super().send_command(*args, **kwargs)

        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            counter.add()
            if (scoped := request_cost.current.get()) is not None:
                scoped.redis_round_trips += 1
            super().send_packed_command(command, check_health)

    return CountingConnection


@dataclass(frozen=True)
class ClientOptions:
    """Pool size, timeouts and retries of one client (``Settings.client_options()`` reads them)."""

    connect_timeout: float = 1.0
    command_timeout: float = 0.5
    retries: int = 1
    max_connections: int = 100
    pool_timeout: float = 2.0

    def retry(self, *, for_asyncio: bool = False) -> Retry | AsyncRetry:
        """redis-py's retry with backoff; an asyncio client needs redis-py's asyncio ``Retry``.

        The class matters: given the synchronous one, an asyncio connection calls
        ``call_with_retry`` without awaiting inside it, so no error is ever retried (until
        2026-12 the app's client ran that way: a pooled connection from before a Redis
        restart failed its one try, and that request answered 503 seconds after recovery).
        """
        backoff = ExponentialWithJitterBackoff(base=0.01, cap=0.2)
        if for_asyncio:  # the errors it retries are the client's ``retry_on_error``
            return AsyncRetry(backoff, self.retries, supported_errors=())
        return Retry(backoff, self.retries)

    def connection_kwargs(self, *, for_asyncio: bool = False) -> dict[str, Any]:
        """What every client built here passes redis-py: pool size, timeouts, retry."""
        return {
            "max_connections": self.max_connections,
            "socket_connect_timeout": self.connect_timeout,
            "socket_timeout": self.command_timeout,
            "retry": self.retry(for_asyncio=for_asyncio),
        }


def _cluster_url_options(url: str) -> dict[str, Any]:
    """What redis-py parses from the ``redis://`` twin of a cluster URL (host, port, auth, TLS)."""
    options = redis.connection.parse_url(url.replace("+cluster://", "://", 1))
    options.pop("db", None)  # a cluster has only database 0
    return options


def create_async_cluster_client(
    url: str, options: ClientOptions | None = None, counter: RoundTripCounter | None = None
) -> redis.asyncio.RedisCluster:
    """A ``redis.asyncio.RedisCluster`` from a ``redis+cluster://`` URL, configured like the single client."""
    validate_redis_url(url)
    options = options or ClientOptions()
    url_options = _cluster_url_options(url)
    ssl = url_options.pop("connection_class", None) is redis.SSLConnection
    client = redis.asyncio.RedisCluster(
        host=url_options.pop("host"),
        port=url_options.pop("port", 6379),
        ssl=ssl,
        **options.connection_kwargs(for_asyncio=True),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=0,
        **url_options,
    )
    # redis-py's cluster client has no connection_class parameter: swap the class in the
    # kwargs every node is built from (shared with its NodesManager) and in the startup node.
    base = AsyncSSLConnection if ssl else AsyncConnection
    conn_cls = _counting_async(base, counter)
    client.connection_kwargs["connection_class"] = conn_cls
    for node in client.startup_nodes:
        node.connection_class = conn_cls
    return client


def create_async_client(
    url: str, options: ClientOptions | None = None, counter: RoundTripCounter | None = None
) -> AsyncRedisClient:
    """A ``redis.asyncio.Redis`` with timeouts, retry and (optionally) round-trip counting.

    A ``redis+cluster://`` URL gives a ``redis.asyncio.RedisCluster`` instead
    (:func:`create_async_cluster_client`).
    """
    if is_cluster_url(url):
        return create_async_cluster_client(url, options, counter)
    validate_redis_url(url)
    options = options or ClientOptions()
    url_options = async_parse_url(url)
    base = url_options.pop("connection_class", None) or AsyncConnection
    if base not in (AsyncConnection, AsyncSSLConnection, AsyncUnixConnection):
        base = AsyncConnection
    conn_cls = _counting_async(base, counter)
    # Bounded pool: past max_connections a caller waits (bounded) for a free
    # connection instead of failing at once and tripping the breaker; below it,
    # a checkout costs no lock or timer (cachelab.pool).
    # Retried: a lost or refused connection (a pooled connection from before a restart, a
    # failover), after a jittered backoff. Not retried: a timeout. The command may have run (a
    # rate-limit count, an enqueue would then happen twice) and a server too slow to answer is
    # not helped by twice the load; the breaker and the caller's failure policy handle it.
    pool = BoundedConnectionPool(
        connection_class=conn_cls,
        timeout=options.pool_timeout,
        **options.connection_kwargs(for_asyncio=True),
        retry_on_error=[RedisConnectionError],
        health_check_interval=0,
        **url_options,
    )
    return redis.asyncio.Redis(connection_pool=pool)


def create_sync_client(
    url: str, options: ClientOptions | None = None, counter: RoundTripCounter | None = None
) -> redis.Redis | redis.RedisCluster:
    """The synchronous twin of :func:`create_async_client` (benchmarks, admin, Locust)."""
    validate_redis_url(url)
    options = options or ClientOptions()
    if is_cluster_url(url):
        if counter is not None:
            # redis-py's sync cluster client builds a Redis per node with no way to pass a
            # connection class; refusing beats silently reporting zero round trips.
            raise ValueError("round-trip counting is not supported on a synchronous cluster client")
        url_options = _cluster_url_options(url)
        base = url_options.pop("connection_class", None)
        return redis.RedisCluster(
            ssl=base is redis.SSLConnection,
            **options.connection_kwargs(),
            **url_options,
        )
    url_options = redis.connection.parse_url(url)
    base = url_options.pop("connection_class", None) or redis.Connection
    conn_cls = _counting_sync(base, counter) if counter is not None else base
    pool = redis.BlockingConnectionPool(
        connection_class=conn_cls,
        timeout=options.pool_timeout,
        **options.connection_kwargs(),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        **url_options,
    )
    return redis.Redis(connection_pool=pool)


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One EVALSHA of a named ``.lua`` script, to send alone or in a :meth:`ResilientRedis.batch`."""

    script: str
    keys: list[Any]
    args: list[Any]


#: What a batch may hold: a script call, or a plain command as its words (``("MGET", k1, k2)``).
BatchCall = ScriptCall | tuple[Any, ...]


def read_lua(name: str) -> str:
    """The text of ``cachelab/patterns/lua/<name>.lua``."""
    return importlib.resources.files("cachelab.patterns").joinpath("lua", f"{name}.lua").read_text()


class ResilientRedis:
    """A Redis client, its breaker and its background-task budget: what patterns call through."""

    def __init__(
        self,
        client: AsyncRedisClient,
        *,
        breaker: CircuitBreaker | None = None,
        background: BackgroundTasks | None = None,
        round_trips: RoundTripCounter | None = None,
        url: str | None = None,
    ) -> None:
        self.client = client
        self.breaker = breaker or CircuitBreaker()
        self.background = background or BackgroundTasks()
        self.round_trips = round_trips or RoundTripCounter()
        self.url = url
        self._scripts: dict[str, AsyncScript] = {}
        self.is_cluster = isinstance(client, redis.asyncio.RedisCluster)
        # redis-py's cluster client discovers its slot map lazily, and commands sent
        # concurrently before that go to random primaries: the MOVED storm that follows
        # closes connections under in-flight commands, whose retries then run twice
        # (50 concurrent INCRs on a fresh client counted up to 60). So the first call
        # initialises the client once, and everyone waits for it.
        self._cluster_ready = not self.is_cluster

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        options: ClientOptions | None = None,
        breaker: CircuitBreaker | None = None,
        background_max: int = 256,
    ) -> ResilientRedis:
        counter = RoundTripCounter()
        client = create_async_client(url, options, counter)
        return cls(
            client,
            breaker=breaker,
            background=BackgroundTasks(background_max),
            round_trips=counter,
            url=url,
        )

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run one Redis operation through the breaker."""
        if not self._cluster_ready:
            await self.breaker.call(self.client.initialize)  # type: ignore[union-attr]
            self._cluster_ready = True
        return await self.breaker.call(fn, *args, **kwargs)

    def script(self, name: str) -> AsyncScript:
        """The registered Lua script ``name`` (EVALSHA with NOSCRIPT fallback)."""
        script = self._scripts.get(name)
        if script is None:
            script = self.client.register_script(read_lua(name))
            self._scripts[name] = script
        return script

    async def run_script(self, name: str, keys: list[Any], args: list[Any]) -> Any:
        """EVALSHA the named script through the breaker: one round trip when cached."""
        script = self.script(name)
        return await self.call(script, keys=keys, args=args)

    async def batch(self, calls: Sequence[BatchCall]) -> list[Any]:
        """Send independent calls in one round trip (a pipeline, no transaction); their replies.

        A call that failed on the server (a script error, a wrong type) has its exception
        in its place instead of a reply, so one refused call does not hide the others'
        results; losing the connection raises, through the breaker, as any call does. A
        script the server does not have yet (NOSCRIPT: first use, or a restarted or failed
        over server) is loaded and its call resent, in a second round trip that happens
        once per script and server. Calls on a cluster's different slots are split by
        redis-py into one pipeline per node.
        """
        replies = await self.call(self._send_batch, calls)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            for name in {calls[i].script for i in missing}:  # type: ignore[union-attr]
                await self.call(self.client.script_load, self.script(name).script)
            retried = await self.call(self._send_batch, [calls[i] for i in missing])
            for i, reply in zip(missing, retried, strict=True):
                replies[i] = reply
        return replies

    def _words(self, call: BatchCall) -> tuple[Any, ...]:
        if isinstance(call, ScriptCall):
            return ("EVALSHA", self.script(call.script).sha, len(call.keys), *call.keys, *call.args)
        return call

    async def _send_batch(self, calls: Sequence[BatchCall]) -> list[Any]:
        if self.is_cluster:
            # redis-py's cluster pipeline splits the calls by node. execute_command, not
            # pipe.evalsha: a cluster pipeline refuses the latter by name but routes an EVALSHA
            # by its keys' slot.
            pipe = self.client.pipeline(transaction=False)
            for call in calls:
                pipe.execute_command(*self._words(call))
            return await pipe.execute(raise_on_error=False)
        return await self._exchange([self._words(call) for call in calls])

    async def _exchange(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """One server's batch on one pooled connection: write every command, read every reply.

        What redis-py's ``Pipeline.execute`` does for a batch without MULTI or WATCH, minus
        what the app's every request paid for and did not use: a pipeline object and its
        command stack per call, redis-py 8's per-pipeline hooks (HIMPORT preparation,
        telemetry), and a timer per reply. Kept from it: the connection's retry (reconnect and
        resend after a lost connection, like any command of this client; never after a
        timeout), the socket timeout (here for the whole batch), redis-py's reply callbacks,
        and a reply the server refused is an exception in its place. A connection left
        mid-reply (cancelled, timed out) is closed, never reused.
        """
        pool = self.client.connection_pool
        callbacks = self.client.response_callbacks
        conn = await pool.get_connection()

        async def send_and_read() -> list[Any]:
            await conn.send_packed_command(conn.pack_commands(commands))
            replies: list[Any] = []
            try:
                # One timer for the batch instead of one per reply: the socket timeout bounds
                # the whole exchange. A reply cut short closes the connection (redis-py does
                # that on any error inside ``read_response``).
                async with asyncio.timeout(conn.socket_timeout):
                    for words in commands:
                        try:
                            reply = await conn.read_response(timeout=_NO_READ_TIMER)
                        except redis.ResponseError as exc:
                            reply = exc
                        else:
                            if (callback := callbacks.get(words[0])) is not None:
                                reply = callback(reply)
                        replies.append(reply)
            except TimeoutError as exc:  # asyncio's, from the timer above: redis-py's kind
                raise RedisTimeoutError(f"Timeout reading a batch of {len(commands)} replies") from exc
            return replies

        async def reconnect(_error: Exception) -> None:
            await conn.disconnect()

        try:
            return await conn.retry.call_with_retry(send_and_read, reconnect)
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        finally:
            await pool.release(conn)

    async def aclose(self) -> None:
        await self.background.drain()
        await self.client.aclose()
