"""Near cache: an in-process L1 in front of :class:`~cachelab.patterns.cache.Cache`, kept coherent
by the server (``CLIENT TRACKING``).

The seed has no such layer: every cache hit is a network round trip (about
1.45× a raw GET on loopback, the whole RTT to a managed Redis in another
zone), although a tenant's KPIs or its area list are read thousands of times
per write. Redis ≥ 6 (and Valkey) can tell a client when a key it read
changes. A naive client-side cache built on that has two holes:

1. **The read/insert race.** Reads and invalidations travel on different
   connections. A write that lands on the server just after our read sends
   its invalidation at once, and this process can handle it *before* the
   read's reply — finding nothing to drop. The reply (the old value) then goes
   into the L1, and nothing will ever invalidate it: the server forgets a key
   for a client once it has sent that client its invalidation.
2. **Silent loss of tracking.** With RESP2 redirection, when the invalidation
   connection dies the server drops the invalidations meant for it without a
   word; when a tracked read connection dies, the server forgets what it read.
   Either way the L1 keeps serving values nobody will ever invalidate.

**How it works.** One :class:`NearCacheStore` per process and Redis holds the
L1 (LRU, bounded by entries and bytes), one *invalidation connection*
subscribed to ``__redis__:invalidate`` (RESP2) and a few *tracked*
connections that ``CLIENT TRACKING ON REDIRECT <its id>`` (default mode: the
server remembers exactly the keys we read, so we hear about those only). A
:class:`NearCache` is a :class:`Cache` whose reads look in the L1 first and,
on a miss, send the usual one ``MGET`` (value, generation, tag generations)
on a tracked connection; a Redis HIT is kept in the L1 (misses are not: the
fill that follows would invalidate itself). Every key of that ``MGET`` is
tracked, so a write of the value, an invalidation (generation bump), a tag
invalidation (tag generation bump), an expiry, an eviction or a ``FLUSHDB``
reaches the entry; ``FLUSHDB``/``FLUSHALL`` arrive as one "flush everything".

**The fixes.** (1) *Track before read, poison on invalidation*: a read
registers its keys before its command leaves; an invalidation of any of them
that arrives while the read is in flight poisons it, and a poisoned read is
returned to its caller but never kept. Since the server sends an
invalidation while it executes the write, any write after our read either
poisons it (arrives first) or drops the entry it made (arrives later). (2)
*Tracking health decides whether the L1 exists*: the invalidation connection
is watched (a read loop, a PING when silent, declared dead after
``health_timeout``); when it is lost the L1 is flushed, reads bypass it (they
go to Redis as without a near cache) until a new connection is subscribed,
and every tracked connection re-enables tracking towards the new one. Each
entry remembers the tracked connection that read it and is dropped if that
socket has closed or been replaced. Nothing relies on a message arriving:
an entry is never served past ``max_age`` after its read, nor past the
entry's soft TTL.

We chose RESP2 redirection over RESP3 push: redis-py's asyncio client only
sees a RESP3 push when it next reads a reply on that connection, so an idle
pooled connection would sit on its invalidations; a dedicated subscriber reads
them as they come, and RESP2 redirection works the same on Redis 6, 7 and
Valkey. Default (per-key) mode rather than BCAST because our keys start with
the tenant (``cl:{tenant}:kpi``): no prefix selects the cached namespaces, and
BCAST on ``cl:`` would send every process every write of every tenant.

**Consistency model.** A value served from the L1 was the value in Redis when
this process last read it, and no invalidation of it (or of its generation,
or its tags' generations) had been handled since. After a write elsewhere is
acknowledged, a reader in another process may still get the old value until
it has handled the invalidation: the message's one-way trip plus the time
its event loop takes to get to it. On loopback, with the writer in another
process (``bench/bench_near_cache.py``), that was 0.25 ms at p50 and 0.75 ms
at p99 after the write was sent, 0.2 ms at p99 after the writer had its
reply; a busy event loop adds its own delay. The writing process itself
never sees its old value once its write returns: :class:`NearCache`'s writes
drop the local entry and poison reads in flight before and after the Redis
write. No entry outlives ``max_age``
(default 10 s) after its read, whatever happens to messages. While the
breaker is open, entries within ``max_age`` are still served, as
``STALE-L1``: writers cannot reach Redis then, so their invalidations never
happen and ``max_age`` is the only bound. When the invalidation connection is
lost the L1 is flushed and bypassed until tracking is back.

Limits: not for Redis Cluster (tracking would need an invalidation connection
per primary); behind a proxy that keeps our connections open while it switches
the server behind them, the new server knows nothing of what we read, sends no
invalidations, and ``max_age`` is the bound. Near
caching makes hot keys look cold to Redis's LRU (their reads stop reaching
it); an eviction is invalidated like any write, so the cost is a refill.

Round trips per call: L1 hit 0; L1 miss as :meth:`Cache.fetch` (a hit is one
``MGET``), plus one ``CLIENT TRACKING`` when a tracked connection is (re)opened;
invalidations are pushed by the server (no polling); writes as :class:`Cache`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.exceptions

from cachelab.client import ResilientRedis
from cachelab.patterns.cache import Cache, CachePolicy, CacheResult, CacheStatus, Loader
from cachelab.patterns.envelope import CorruptEntry, EntryCodec
from cachelab.patterns.keys import DEFAULT_PREFIX
from cachelab.resilience import BreakerState

log = logging.getLogger("cachelab.near_cache")

INVALIDATE_CHANNEL = "__redis__:invalidate"
#: Python's own bytes per L1 entry beside the value's bytes (the entry, its keys, dict and set slots),
#: and per tag it depends on. Measured with tracemalloc over 2 000 KPI entries (476 B each): 827 B
#: more per untagged entry, 508 B more again with one tag of its own (a shared tag costs less).
#: Counted against ``max_bytes``, so the budget is what the process pays, not just the payload.
ENTRY_OVERHEAD_BYTES = 850
TAG_OVERHEAD_BYTES = 500

# Pool-level parameters redis-py keeps in ``connection_kwargs``; our own connections take none of them.
_POOL_ONLY_KWARGS = frozenset(
    {"maint_notifications_pool_handler", "maint_notifications_config", "himport_registry",
     "orig_host_address", "orig_socket_timeout", "orig_socket_connect_timeout", "max_connections",
     "connection_pool", "client_name", "protocol", "redis_connect_func"}
)


class TrackingUnavailable(redis.exceptions.RedisError):
    """A tracked connection could not enable tracking (no invalidation connection right now)."""


@dataclass
class NearCacheStats:
    """What one store did (the per-namespace L1 hits are on each :class:`NearCache`)."""

    fills: int = 0  # Redis hits kept in the L1
    fills_refused: int = 0  # a read poisoned by an invalidation in flight, or tracking changed under it
    untracked_reads: int = 0  # read on the ordinary pool (tracking down, or every tracked connection busy)
    invalidation_messages: int = 0
    keys_invalidated: int = 0  # keys named by the server's messages
    entries_invalidated: int = 0  # L1 entries those (and local writes) dropped
    evicted: int = 0  # LRU, over max_entries or max_bytes
    expired: int = 0  # past max_age or the entry's soft TTL when looked up
    dead_connection_drops: int = 0  # the tracked connection that read it closed
    flushes: int = 0
    flush_reasons: Counter[str] = field(default_factory=Counter)
    tracking_connects: int = 0  # invalidation connections subscribed (1 + reconnects)


@dataclass
class L1Stats:
    """One namespace's L1 outcomes (its :class:`~.cache.CacheStats` count the Redis side)."""

    hits: int = 0
    stale_served: int = 0  # served while the breaker was open (X-Cache: STALE-L1)


@dataclass(slots=True)
class _Entry:
    raw: bytes  # the entry's bytes as Redis returned them: decoded per hit, so no caller shares a value
    deps: tuple[str, ...]  # the keys of the MGET that read it: value, generation, tag generations
    tag_keys: tuple[str, ...]
    expires_at: float  # monotonic: min(read + max_age, soft expiry)
    size: int
    conn: Any  # the tracked connection that read it ...
    session: int  # ... and which of its sockets
    epoch: int
    derived: Any = None  # (what NearCache.l1_derived made of the value, its created_ms): made once per entry


class _Ticket:
    """One read through a tracked connection, from before its command leaves until it is kept or not."""

    __slots__ = ("channel", "epoch", "keys", "poisoned", "raw", "store")

    def __init__(self, store: NearCacheStore) -> None:
        self.store = store
        self.epoch = store.epoch
        self.keys: tuple[str, ...] = ()
        self.poisoned = False
        self.channel: tuple[Any, int] | None = None
        self.raw: bytes | None = None

    async def mget(self, keys: list[str]) -> list[Any]:
        return await self.store._tracked_mget(self, keys)

    def close(self) -> None:
        self.store._unregister(self)


def _socket_open(conn: Any) -> bool:
    """Is this redis-py connection's socket still open, as far as the event loop has seen?

    The loop reads EOF (a server-side ``CLIENT KILL``, a restart) into the
    stream as soon as it arrives, so a closed socket shows here without any I/O
    of ours; redis-py has no public flag for it.
    """
    reader, writer = getattr(conn, "_reader", None), getattr(conn, "_writer", None)
    if reader is None or writer is None or reader.at_eof() or reader.exception() is not None:
        return False
    return not writer.transport.is_closing()


async def _quietly_disconnect(conn: Any) -> None:
    with contextlib.suppress(Exception):
        await conn.disconnect(nowait=True)


class NearCacheStore:
    """The L1 of one process for one Redis, its invalidation connection and its tracked connections.

    Share one store between every :class:`NearCache` of the process (one byte
    budget, one invalidation connection). ``start()`` (or the first read)
    launches the invalidation connection in the background; ``aclose()`` stops it.
    """

    def __init__(
        self,
        rr: ResilientRedis,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 16 * 2**20,
        max_age: float = 10.0,
        tracked_connections: int = 8,
        health_interval: float = 1.0,
        health_timeout: float = 3.0,
        reconnect_delay: tuple[float, float] = (0.05, 1.0),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rr.is_cluster:
            raise ValueError(
                "near cache: Redis Cluster is not supported (tracking would need an invalidation "
                "connection per primary)"
            )
        if max_entries < 1 or max_bytes < 1 or max_age <= 0 or tracked_connections < 1:
            raise ValueError("near cache: max_entries, max_bytes, tracked_connections >= 1 and max_age > 0")
        if not 0 < health_interval < health_timeout:
            raise ValueError("near cache: need 0 < health_interval < health_timeout")
        self.rr = rr
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.tracked_connections = tracked_connections
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.reconnect_delay = reconnect_delay
        self._clock = clock
        self.stats = NearCacheStats()
        #: Called with every key the server invalidates (benchmarks time invalidations with it).
        self.on_invalidate: Callable[[str], None] | None = None

        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._deps: dict[str, set[str]] = {}  # dependency key -> L1 keys that depend on it
        self._inflight: dict[str, set[_Ticket]] = {}  # dependency key -> reads in flight that read it
        self._bytes = 0

        self.epoch = 0  # moves on whenever tracking is established or lost
        self.client_id: int | None = None  # the invalidation connection's id (CLIENT LIST / CLIENT KILL)
        self._ready = False
        self._ready_event = asyncio.Event()
        self._last_heard = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._sessions = itertools.count(1)

        pool = rr.client.connection_pool
        self._kwargs = {k: v for k, v in pool.connection_kwargs.items() if k not in _POOL_ONLY_KWARGS}
        base = pool.connection_class
        self._conn_class = type(f"Tracked{base.__name__}", (base,), {"near_session": 0, "near_epoch": -1})
        self._idle: list[Any] = []
        self._open = 0
        #: Why the server refused tracking (an ACL without CLIENT, say); the L1 then stays unused.
        self.refused: str | None = None

    # -- state -----------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Is tracking established (and the L1 therefore usable)?"""
        return self._ready and self.refused is None

    @property
    def entries(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """Bytes the L1 accounts for: each entry's bytes plus the measured per-entry and per-tag overhead."""
        return self._bytes

    # -- lifecycle -------------------------------------------------------
    def ensure_started(self) -> None:
        """Launch the invalidation connection if it is not running (needs a running event loop)."""
        if self._task is None and not self._closing:
            # An empty context: this connection's commands are on no request's bill.
            self._task = asyncio.get_running_loop().create_task(
                self._supervise(), name="cachelab-near-cache", context=contextvars.Context()
            )

    async def start(self, wait: float = 0.0) -> bool:
        """Start, and wait up to ``wait`` seconds for tracking to be established; True if it is."""
        self.ensure_started()
        if wait > 0 and not self._ready:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready_event.wait(), wait)
        return self._ready

    async def wait_ready(self, timeout: float) -> bool:
        """Wait (bounded) until tracking is established; True if it is."""
        return await self.start(timeout)

    async def aclose(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        self._ready = False
        self.flush("closed")
        idle, self._idle = self._idle, []
        for conn in idle:
            await _quietly_disconnect(conn)
            self._open -= 1

    async def __aenter__(self) -> NearCacheStore:
        await self.start(wait=5.0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the L1 ----------------------------------------------------------
    def lookup(self, key: str, tag_keys: tuple[str, ...] = ()) -> _Entry | None:
        """The live entry for ``key`` read with ``tag_keys``, or None (dropping it if no longer live)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.epoch != self.epoch or entry.tag_keys != tag_keys:
            self._remove(key)
            return None
        if self._clock() >= entry.expires_at:
            self.stats.expired += 1
            self._remove(key)
            return None
        conn = entry.conn
        if conn.near_session != entry.session or not _socket_open(conn):
            self.stats.dead_connection_drops += 1
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def ticket(self) -> _Ticket:
        return _Ticket(self)

    def insert(self, ticket: _Ticket, key: str, deps: tuple[str, ...], tag_keys: tuple[str, ...],
               soft_expires_ms: int) -> bool:
        """Keep what ``ticket`` read for ``key``, unless an invalidation or a tracking change poisoned it."""
        channel, raw = ticket.channel, ticket.raw
        if ticket.poisoned or ticket.epoch != self.epoch or not self._ready or channel is None or raw is None:
            self.stats.fills_refused += 1
            return False
        conn, session = channel
        if conn.near_session != session or conn.near_epoch != self.epoch:
            self.stats.fills_refused += 1
            return False
        remaining = (soft_expires_ms - time.time_ns() // 1_000_000) / 1000
        lifetime = min(self.max_age, remaining)
        size = len(raw) + ENTRY_OVERHEAD_BYTES + TAG_OVERHEAD_BYTES * len(tag_keys)
        if lifetime <= 0 or size > self.max_bytes:
            return False
        self._remove(key)
        expires_at = self._clock() + lifetime
        self._entries[key] = _Entry(raw, deps, tag_keys, expires_at, size, conn, session, self.epoch)
        self._bytes += size
        for dep in deps:
            self._deps.setdefault(dep, set()).add(key)
        self.stats.fills += 1
        self._evict_over_budget()
        return True

    def keep_derived(self, key: str, entry: _Entry, derived: Any, size: int) -> bool:
        """Keep ``derived`` with ``key``'s ``entry`` (see :meth:`NearCache.l1_derived`), its ``size``
        bytes counted against the budget like the entry's own; False if the entry is not kept."""
        if self._entries.get(key) is not entry:
            return False
        entry.derived = derived
        entry.size += size
        self._bytes += size
        self._evict_over_budget()
        return self._entries.get(key) is entry

    def _evict_over_budget(self) -> None:
        while self._entries and (len(self._entries) > self.max_entries or self._bytes > self.max_bytes):
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.stats.evicted += 1

    def discard(self, dependency: str) -> int:
        """Drop every entry that depends on ``dependency`` and poison reads of it in flight.

        What an invalidation message does; :class:`NearCache` also calls it around its own writes.
        Returns the entries dropped.
        """
        for ticket in self._inflight.get(dependency, ()):
            ticket.poisoned = True
        holders = self._deps.get(dependency)
        if not holders:
            return 0
        dropped = list(holders)
        for key in dropped:
            self._remove(key)
        self.stats.entries_invalidated += len(dropped)
        return len(dropped)

    def flush(self, reason: str) -> None:
        """Empty the L1 and poison every read in flight."""
        for tickets in self._inflight.values():
            for ticket in tickets:
                ticket.poisoned = True
        self._entries.clear()
        self._deps.clear()
        self._bytes = 0
        self.stats.flushes += 1
        self.stats.flush_reasons[reason] += 1

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._bytes -= entry.size
        for dep in entry.deps:
            holders = self._deps.get(dep)
            if holders is not None:
                holders.discard(key)
                if not holders:
                    del self._deps[dep]

    def _register(self, ticket: _Ticket, keys: Iterable[str]) -> None:
        ticket.keys = tuple(keys)
        for key in ticket.keys:
            self._inflight.setdefault(key, set()).add(ticket)

    def _unregister(self, ticket: _Ticket) -> None:
        for key in ticket.keys:
            tickets = self._inflight.get(key)
            if tickets is not None:
                tickets.discard(ticket)
                if not tickets:
                    del self._inflight[key]
        ticket.keys = ()

    # -- tracked reads ---------------------------------------------------
    def _connection(self, **extra: Any) -> Any:
        return self._conn_class(**{**self._kwargs, "protocol": 2, "health_check_interval": 0, **extra})

    def _checkout(self) -> Any | None:
        if self._idle:
            return self._idle.pop()
        if self._open >= self.tracked_connections:
            return None  # all busy: read untracked rather than queue behind them
        self._open += 1
        return self._connection(client_name="cachelab-near-tracked", redis_connect_func=self._enable_tracking)

    def _checkin(self, conn: Any) -> None:
        if self._closing:
            self._open -= 1
            asyncio.get_running_loop().create_task(_quietly_disconnect(conn))
        else:
            self._idle.append(conn)

    async def _enable_tracking(self, conn: Any) -> None:
        """redis-py's connect hook for a tracked connection: the usual handshake, then tracking."""
        await conn.on_connect()
        redirect, epoch = self.client_id, self.epoch
        if redirect is None or not self._ready:
            raise TrackingUnavailable("near cache: the invalidation connection is down")
        await conn.send_command("CLIENT", "TRACKING", "ON", "REDIRECT", redirect)
        await conn.read_response()
        conn.near_session = next(self._sessions)
        conn.near_epoch = epoch

    async def _tracked_mget(self, ticket: _Ticket, keys: list[str]) -> list[Any]:
        """``MGET`` on a tracked connection, the keys registered before it is sent (see the module doc)."""
        conn = self._checkout() if self._ready and ticket.epoch == self.epoch else None
        if conn is None:
            return await self._untracked_mget(ticket, keys)
        try:
            for attempt in (1, 2):
                if conn.is_connected and (conn.near_epoch != self.epoch or not _socket_open(conn)):
                    await conn.disconnect(nowait=True)  # redirects to a gone connection, or closed
                try:
                    await conn.connect()  # no-op when connected; else a new socket with tracking on
                except TrackingUnavailable:
                    break  # the invalidation connection is down: read without tracking
                except redis.exceptions.ResponseError as exc:
                    if "redirect" not in str(exc).lower():  # not a gone redirect target: a refusal
                        self._refuse(exc)
                    break
                if conn.near_epoch != ticket.epoch:
                    break
                if not ticket.keys:
                    self._register(ticket, keys)  # before the command leaves: track-before-read
                ticket.channel = (conn, conn.near_session)
                try:
                    await conn.send_command("MGET", *keys)
                    reply = await conn.read_response()
                except redis.exceptions.ConnectionError:
                    await _quietly_disconnect(conn)
                    if attempt == 2:
                        raise
                    continue  # a socket that died idle: once more on a fresh one
                ticket.raw = reply[0]
                return list(reply)
        except BaseException:
            await _quietly_disconnect(conn)
            raise
        finally:
            self._checkin(conn)
        return await self._untracked_mget(ticket, keys)

    def _refuse(self, exc: BaseException) -> None:
        if self.refused is None:
            self.refused = str(exc)
            log.warning("near cache: Redis refused CLIENT TRACKING (%s); the L1 stays unused", exc)
            self.flush("refused")

    async def _untracked_mget(self, ticket: _Ticket, keys: list[str]) -> list[Any]:
        ticket.poisoned = True
        self.stats.untracked_reads += 1
        return list(await self.rr.client.mget(keys))

    # -- the invalidation connection -------------------------------------
    async def _supervise(self) -> None:
        low, high = self.reconnect_delay
        delay = low
        while not self._closing:
            conn = self._connection(client_name="cachelab-near-invalidate", socket_timeout=None)
            try:
                client_id = await asyncio.wait_for(self._subscribe(conn), self.health_timeout)
            except asyncio.CancelledError:
                await _quietly_disconnect(conn)
                raise
            except Exception as exc:
                if isinstance(exc, redis.exceptions.ResponseError):  # e.g. an ACL without SUBSCRIBE
                    self._refuse(exc)
                log.debug("near cache: invalidation connection failed: %r", exc)
                await _quietly_disconnect(conn)
                await asyncio.sleep(delay)
                delay = min(delay * 2, high)
                continue
            delay = low
            self._up(client_id)
            reason = "closed"
            try:
                await self._listen(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = "tracking lost"
                log.warning("near cache: invalidation connection lost (%r); L1 flushed until it is back", exc)
            finally:
                self._down(reason)
                await _quietly_disconnect(conn)

    async def _subscribe(self, conn: Any) -> int:
        await conn.connect()
        await conn.send_command("CLIENT", "ID")
        client_id = int(await conn.read_response())
        await conn.send_command("SUBSCRIBE", INVALIDATE_CHANNEL)
        await conn.read_response()
        return client_id

    def _up(self, client_id: int) -> None:
        self.client_id = client_id
        self.epoch += 1
        self._last_heard = self._clock()
        self._ready = True
        self._ready_event.set()
        self.stats.tracking_connects += 1

    def _down(self, reason: str) -> None:
        self._ready = False
        self._ready_event.clear()
        self.client_id = None
        self.epoch += 1
        self.flush(reason)

    async def _listen(self, conn: Any) -> None:
        """Handle messages until the connection fails or falls silent past ``health_timeout``."""
        reader = asyncio.ensure_future(self._read_messages(conn))
        try:
            while True:
                done, _ = await asyncio.wait({reader}, timeout=self.health_interval)
                if done:
                    reader.result()
                    raise redis.exceptions.ConnectionError("invalidation connection closed")
                silent = self._clock() - self._last_heard
                if silent > self.health_timeout:
                    raise redis.exceptions.TimeoutError(f"invalidation connection silent for {silent:.1f}s")
                if silent >= self.health_interval:
                    await asyncio.wait_for(conn.send_command("PING"), self.health_timeout)
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    async def _read_messages(self, conn: Any) -> None:
        while True:
            message = await conn.read_response()
            self._last_heard = self._clock()
            self._handle(message)

    def _handle(self, message: Any) -> None:
        if not isinstance(message, list) or len(message) < 3 or message[0] not in (b"message", "message"):
            return  # a pong, or a subscription confirmation
        data = message[2]
        self.stats.invalidation_messages += 1
        if data is None:  # FLUSHDB / FLUSHALL (or the server's tracking table was reset)
            self.flush("flush")
            return
        for raw in data if isinstance(data, list) else (data,):
            key = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else str(raw)
            self.stats.keys_invalidated += 1
            self.discard(key)
            if self.on_invalidate is not None:
                self.on_invalidate(key)


def _age(created_ms: int) -> float:
    """Seconds since a value was computed (``Age``), on this machine's clock."""
    return max(0.0, (time.time_ns() // 1_000_000 - created_ms) / 1000)


class NearCache(Cache):
    """A :class:`Cache` namespace whose Redis hits are kept in its store's in-process L1.

    Reads: the L1 first (``HIT-L1``, or ``STALE-L1`` while the breaker is
    open), else :meth:`Cache.fetch` with the ``MGET`` on a tracked connection.
    Writes (``invalidate``, ``write_through``, ``set``, ``warm``,
    ``invalidate_tag``) drop the local entries before and after the Redis write,
    so this process reads its own writes at once; other processes hear of them
    from Redis. Everything else is :class:`Cache`'s.
    """

    def __init__(
        self,
        rr: ResilientRedis,
        namespace: str,
        policy: CachePolicy | None = None,
        *,
        store: NearCacheStore,
        prefix: str = DEFAULT_PREFIX,
        codec: EntryCodec | None = None,
        **kwargs: Any,
    ) -> None:
        if store.rr is not rr:
            raise ValueError("a NearCache must use the same ResilientRedis as its store")
        super().__init__(rr, namespace, policy, prefix=prefix, codec=codec, **kwargs)
        self.store = store
        self.l1_stats = L1Stats()

    def _decode(self, key: str, entry: _Entry) -> Any:
        """The entry's envelope, decoded; None (and the entry dropped) if it no longer decodes."""
        try:
            return self.codec.decode(entry.raw)
        except CorruptEntry:  # it decoded when it was kept; never expected
            self.store.discard(key)
            return None

    def _from_l1(self, key: str, tag_keys: tuple[str, ...]) -> CacheResult | None:
        entry = self.store.lookup(key, tag_keys)
        if entry is None or (decoded := self._decode(key, entry)) is None:
            return None
        age = _age(decoded.created_ms)
        if self.rr.breaker.state is BreakerState.CLOSED:
            self.l1_stats.hits += 1
            return CacheResult(decoded.value, CacheStatus.HIT_L1, age, decoded.soft_expires_ms)
        self.l1_stats.stale_served += 1
        return CacheResult(decoded.value, CacheStatus.STALE_L1, age, decoded.soft_expires_ms)

    def l1_derived(
        self, key: str, derive: Callable[[Any], tuple[Any, int]], *, tags: Sequence[str] = ()
    ) -> tuple[Any, float] | None:
        """``(derived, age)`` for the L1's fresh entry of ``key`` read with ``tags``, or None.

        ``derive(value)`` returns what a caller makes of the value and its size in bytes. It
        runs once per entry; its result is kept with the entry (its size counted against the
        budget) and dropped with it: what a fast read (:mod:`cachelab.app.fast_reads`) serves
        on every hit, the response body, is made once per fill instead of decoded and encoded
        again per request. It must be immutable (bytes): every hit shares it. Only while the
        breaker is closed (a ``HIT-L1``): a ``STALE-L1`` is left to :meth:`fetch`.
        """
        entry = self.store.lookup(key, tuple(self._tag_keys(key, tags)) if tags else ())
        if entry is None or self.rr.breaker.state is not BreakerState.CLOSED:
            return None
        if entry.derived is None:
            if (decoded := self._decode(key, entry)) is None:
                return None
            derived, size = derive(decoded.value)
            if not self.store.keep_derived(key, entry, (derived, decoded.created_ms), size):
                return None  # evicted at once: the budget cannot hold the entry and its body
        derived, created_ms = entry.derived
        self.l1_stats.hits += 1
        return derived, _age(created_ms)

    async def fetch(
        self,
        key: str,
        loader: Loader,
        *,
        tags: Sequence[str] = (),
        policy: CachePolicy | None = None,
        read_via: Any = None,
    ) -> CacheResult:
        """The L1, else :meth:`Cache.fetch` through a tracked read; a Redis HIT is kept in the L1."""
        tag_keys = tuple(self._tag_keys(key, tags))
        served = self._from_l1(key, tag_keys)
        if served is not None:
            return served
        store = self.store
        store.ensure_started()
        if not store.ready or read_via is not None:
            return await super().fetch(key, loader, tags=tags, policy=policy, read_via=read_via)
        ticket = store.ticket()
        try:
            result = await super().fetch(key, loader, tags=tags, policy=policy, read_via=ticket.mget)
            if result.status is CacheStatus.HIT and result.soft_expires_ms is not None:
                deps = (key, self._gen_key(key), *tag_keys)
                store.insert(ticket, key, deps, tag_keys, result.soft_expires_ms)
        finally:
            ticket.close()
        return result

    async def get(self, key: str, *, tags: Sequence[str] = ()) -> Any:
        """The L1's value if it holds one, else :meth:`Cache.get` (which does not fill the L1)."""
        served = self._from_l1(key, tuple(self._tag_keys(key, tags)))
        return served.value if served is not None else await super().get(key, tags=tags)

    # -- writes: drop the local entries on both sides of the Redis write --------------------
    @contextlib.contextmanager
    def _dropping(self, dependencies: Sequence[str]) -> Any:
        for dep in dependencies:
            self.store.discard(dep)
        try:
            yield
        finally:
            for dep in dependencies:
                self.store.discard(dep)

    async def invalidate(self, key: str, *, version: int | None = None) -> bool:
        with self._dropping([key]):
            return await super().invalidate(key, version=version)

    async def write_through(
        self, key: str, value: Any, version: int, *, policy: CachePolicy | None = None
    ) -> bool:
        with self._dropping([key]):
            return await super().write_through(key, value, version, policy=policy)

    async def set(
        self, key: str, value: Any, *, policy: CachePolicy | None = None, tags: Sequence[str] = ()
    ) -> bool:
        with self._dropping([key]):
            return await super().set(key, value, policy=policy, tags=tags)

    async def warm(
        self,
        items: Mapping[str, Any] | Iterable[tuple[str, Any]],
        *,
        policy: CachePolicy | None = None,
        batch: int = 500,
    ) -> int:
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        with self._dropping([key for key, _value in pairs]):
            return await super().warm(pairs, policy=policy, batch=batch)

    async def invalidate_tag(self, scope: object, tag: str, *more: str) -> int | None:
        with self._dropping([self.tag_key(scope, t) for t in (tag, *more)]):
            return await super().invalidate_tag(scope, tag, *more)


__all__ = [
    "ENTRY_OVERHEAD_BYTES",
    "INVALIDATE_CHANNEL",
    "TAG_OVERHEAD_BYTES",
    "L1Stats",
    "NearCache",
    "NearCacheStats",
    "NearCacheStore",
    "TrackingUnavailable",
]
