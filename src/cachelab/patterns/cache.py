"""Cache-aside done right: the seed's ``cachedQuery``, KPI and dashboard caches.

Seed version::

    const cached = await getRedisValue(key);
    if (cached) return cached;               // 0, "", [] look like misses
    const result = await queryFn();          // every concurrent miss runs it
    await setRedisValue(key, result, ttl);   // may overwrite a newer value
    return result;

Its flaws: falsy values are misses; nothing stops a stampede on a hot key; a
loader that read the database before a write can store its stale result after
the write's invalidation, where it stays for a whole TTL; a Redis outage turns
every call into an error or a 2 s wait; refresh-ahead needs a second round
trip (``TTL``) and lets every reader near expiry start its own refresh.

:class:`Cache` fixes each:

* values are wrapped in an :mod:`~cachelab.patterns.envelope` entry, so any
  JSON value is a hit and corrupt bytes are a miss that gets repaired;
* values must be plain JSON and anything else is *refused*, not converted: a
  ``datetime``, ``date``, ``UUID``, dataclass, tuple, enum or ``NaN`` raises
  ``TypeError``/``ValueError`` naming its type and place before anything is
  written (orjson would store them as strings, objects, arrays or ``null``, so
  a hit would return a different type than the miss before it). Convert them
  in the loader. (:meth:`Cache.write_through` still invalidates the key first:
  the database has changed, so the old entry must not stay.);
* ``None`` from a loader is cached as a *negative* entry with its own TTL;
* TTLs carry jitter, so keys written together do not expire together;
* misses are coalesced in-process (:class:`~.stampede.SingleFlight`) and, with
  ``lock=True``, across processes (:class:`~.stampede.TokenLock`). A miss whose
  read left before another caller's fill landed, but came back after that
  caller's flight ended, is read once more instead of loaded again (it would
  otherwise start a second flight: a second load per stampede, seen in CI);
* the read fetches the value, the key's *generation* and its tags'
  generations in one ``MGET``; the fill is a Lua compare-and-set on those
  generations, so an invalidation (or a newer write-through) that happened
  while the loader ran wins — the stale result is dropped;
* a soft TTL below the hard TTL gives stale-while-revalidate; ``refresh_ahead``
  and XFetch (``xfetch_beta``) refresh before expiry; every background refresh
  is elected by a ``SET NX`` refresh lock (exactly one refresher per key across
  processes, and one per process without a round trip) and runs in the bounded
  background budget;
* every Redis call goes through the circuit breaker: on failure the loader's
  result is served (``BYPASS``) and nothing is written.

Limit: the guards live in generation keys (``<key>:~gen``, tag keys). Under any
eviction policy but ``noeviction`` Redis may evict one of them (they carry a
TTL, so ``volatile-*`` policies may pick them too); a fill or a late,
older write-through that was in flight across exactly that eviction can then
store a stale value for one TTL. Both windows are a loader's run time, and the
evicted key was written moments before (the last an LRU picks), but the guard
is only absolute on a Redis that does not evict.

Round trips per call: hit 1 (``MGET``); miss 2 (``MGET`` + fill ``EVALSHA``), a
late miss re-read 2 (two ``MGET``);
miss with ``lock=True`` 4 (+ ``SET NX`` + release); refresh triggered: +1 for
the refresh lock, off the caller's path except the lock itself; while the
breaker is open: 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cachelab.client import ResilientRedis
from cachelab.patterns.envelope import MISSING, CorruptEntry, Entry, EntryCodec, ValueTooLarge
from cachelab.patterns.keys import DEFAULT_PREFIX, hash_tag, make_key, safe
from cachelab.patterns.stampede import SingleFlight, TokenLock, xfetch_should_refresh
from cachelab.resilience import RedisUnavailable

Loader = Callable[[], Awaitable[Any]]
#: Sends the read's ``MGET`` (value, generation, tag generations); a near cache passes its tracked one.
MultiGet = Callable[[list[str]], Awaitable[list[Any]]]

#: How long generation keys outlive the values they guard.
GENERATION_TTL_MS = 24 * 3600 * 1000


class CacheStatus(enum.StrEnum):
    HIT = "HIT"
    MISS = "MISS"
    STALE = "STALE"
    BYPASS = "BYPASS"
    # Served from a near cache's in-process L1 (cachelab.patterns.near_cache): no round trip.
    HIT_L1 = "HIT-L1"
    # The same while the breaker is open: invalidations may be missing, so only max age bounds it.
    STALE_L1 = "STALE-L1"


@dataclass(frozen=True)
class CachePolicy:
    """How one cache behaves. All durations in seconds."""

    ttl: float = 300.0
    soft_ttl: float | None = None
    jitter: float = 0.1
    negative_ttl: float | None = 30.0
    single_flight: bool = True
    lock: bool = False
    lock_lease: float = 5.0
    lock_wait: float = 3.0
    refresh_ahead: float = 0.0
    xfetch_beta: float = 0.0
    refresh_lease: float = 10.0

    def __post_init__(self) -> None:
        if self.ttl <= 0:
            raise ValueError("ttl must be > 0 (use cache mode 'off' to disable caching)")
        if self.soft_ttl is not None and not 0 < self.soft_ttl <= self.ttl:
            raise ValueError("soft_ttl must be in (0, ttl]")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if not 0 <= self.refresh_ahead < 1:
            raise ValueError("refresh_ahead must be in [0, 1)")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    stale_served: int = 0
    bypassed: int = 0
    loader_calls: int = 0
    coalesced: int = 0
    lock_waits: int = 0
    early_refreshes: int = 0
    fills: int = 0
    fills_rejected: int = 0
    corrupt: int = 0
    oversize: int = 0
    errors: int = 0
    late_rereads: int = 0  # misses read again because a flight for the key ended meanwhile

    @property
    def hit_ratio(self) -> float:
        served = self.hits + self.misses + self.stale_served
        return (self.hits + self.stale_served) / served if served else 0.0


@dataclass(frozen=True)
class CacheResult:
    value: Any
    status: CacheStatus
    age: float = 0.0  # seconds since the served value was computed (0 for a fresh load)
    soft_expires_ms: int | None = None  # the served entry's soft expiry (HIT, STALE): a near cache's bound


@dataclass
class _Read:
    """What one MGET told us about a key."""

    entry: Entry | None
    generation: str
    tag_generations: tuple[str, ...] = ()
    corrupt: bool = False


@dataclass
class _Refreshing:
    keys: set[str] = field(default_factory=set)


def prefetched(keys: Sequence[str], reply: list[Any]) -> MultiGet:
    """A :data:`MultiGet` that answers a read of exactly ``keys`` with ``reply``, fetched earlier
    in a batch. Asking it for other keys is a bug in the caller (keys not from
    :meth:`Cache.read_keys`), and raises rather than serve another key's bytes."""

    async def mget(asked: list[str]) -> list[Any]:
        if list(asked) != list(keys):
            raise ValueError(f"prefetched reply is for {list(keys)!r}, not {asked!r}")
        return reply

    return mget


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _is_fresh(read: _Read) -> bool:
    """A lock waiter accepts only a value filled after the expiry it is waiting out."""
    return read.entry is not None and read.entry.is_fresh(_now_ms())


def _scope_of(key: str) -> str:
    start, end = key.find("{"), key.find("}")
    if start < 0 or end < start:
        raise ValueError(f"cache key {key!r} has no {{scope}} hash tag; build it with Cache.key()")
    return key[start + 1 : end]


class Cache:
    """A namespace of cached values in Redis (e.g. ``kpi``, ``areas``, ``dashboard``)."""

    def __init__(
        self,
        rr: ResilientRedis,
        namespace: str,
        policy: CachePolicy | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        codec: EntryCodec | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.rr = rr
        self.namespace = namespace
        self.policy = policy or CachePolicy()
        self.prefix = prefix
        self.codec = codec or EntryCodec()
        self.stats = CacheStats()
        self._flight: SingleFlight[Any] = SingleFlight()
        self._refreshing = _Refreshing()
        self._rng = rng or random.Random()

    # -- keys ------------------------------------------------------------
    def key(self, scope: object, *parts: object) -> str:
        """``prefix:{scope}:namespace:parts`` — ids escaped, one hash slot per scope."""
        return make_key(self.prefix, scope, self.namespace, *parts)

    @staticmethod
    def _gen_key(key: str) -> str:
        return f"{key}:~gen"

    @staticmethod
    def _lock_key(key: str) -> str:
        return f"{key}:~lock"

    @staticmethod
    def _refresh_key(key: str) -> str:
        return f"{key}:~refresh"

    def _tag_key(self, tagged_scope: str, tag: str) -> str:
        # "~" cannot appear in a safe() component, so these never collide with data keys.
        return f"{self.prefix}:{tagged_scope}:~tag:{safe(tag)}"

    def tag_key(self, scope: object, tag: str) -> str:
        return self._tag_key(hash_tag(scope), tag)

    def _tag_keys(self, key: str, tags: Sequence[str]) -> list[str]:
        if not tags:
            return []
        tagged_scope = "{" + _scope_of(key) + "}"
        return [self._tag_key(tagged_scope, t) for t in tags]

    # -- reads -----------------------------------------------------------
    def read_keys(self, key: str, tags: Sequence[str] = ()) -> list[str]:
        """What a read of ``key`` fetches in its one ``MGET``: the value, its generation and its
        tags' generations. A caller that batches the read with independent calls sends
        ``("MGET", *read_keys)`` and passes the reply to :meth:`fetch` as
        ``read_via=prefetched(keys, reply)``."""
        return [key, self._gen_key(key), *self._tag_keys(key, tags)]

    async def _read(self, key: str, tag_keys: Sequence[str], via: MultiGet | None = None) -> _Read:
        mget = via or self.rr.client.mget
        raw, gen, *tag_gens = await self.rr.call(mget, [key, self._gen_key(key), *tag_keys])
        gen_s = gen.decode() if gen is not None else "0"
        tags_s = tuple(t.decode() if t is not None else "0" for t in tag_gens)
        if raw is None:
            return _Read(None, gen_s, tags_s)
        try:
            entry = self.codec.decode(raw)
        except CorruptEntry:
            self.stats.corrupt += 1
            return _Read(None, gen_s, tags_s, corrupt=True)
        if tag_keys and entry.tag_generations != tuple(int(t) for t in tags_s):
            return _Read(None, gen_s, tags_s)  # a tag was invalidated since this entry was built
        return _Read(entry, gen_s, tags_s)

    async def get(self, key: str, *, tags: Sequence[str] = ()) -> Any:
        """The cached value, or :data:`MISSING` (also when Redis is unavailable)."""
        try:
            read = await self._read(key, self._tag_keys(key, tags))
        except RedisUnavailable:
            self.stats.errors += 1
            return MISSING
        return read.entry.value if read.entry is not None else MISSING

    async def fetch(
        self,
        key: str,
        loader: Loader,
        *,
        tags: Sequence[str] = (),
        policy: CachePolicy | None = None,
        read_via: MultiGet | None = None,
    ) -> CacheResult:
        """Cache-aside read: the value and how it was served (HIT, MISS, STALE, BYPASS).

        ``read_via`` sends the first ``MGET`` instead of the pool (a near cache
        reads on a connection the server tracks for it); later reads use the pool.
        """
        policy = policy or self.policy
        tag_keys = self._tag_keys(key, tags)
        flights_ended = self._flight.ended
        try:
            read = await self._read(key, tag_keys, read_via)
            served = self._serve(key, loader, policy, tag_keys, read)
            if served is None and policy.single_flight and self._flight.ended_since(key, flights_ended):
                # A flight for this key ended while our read was out: it has just filled the key
                # (our miss left before the fill landed). Read it once more rather than load again.
                self.stats.late_rereads += 1
                read = await self._read(key, tag_keys)
                served = self._serve(key, loader, policy, tag_keys, read)
        except RedisUnavailable:
            self.stats.errors += 1
            self.stats.bypassed += 1
            value = await self._load_coalesced(key, loader, policy)
            return CacheResult(value, CacheStatus.BYPASS)
        if served is not None:
            return served
        self.stats.misses += 1
        value = await self._miss(key, loader, policy, tag_keys, read)
        return CacheResult(value, CacheStatus.MISS)

    def _serve(
        self, key: str, loader: Loader, policy: CachePolicy, tag_keys: Sequence[str], read: _Read
    ) -> CacheResult | None:
        """What ``read`` serves (a HIT, or STALE with a refresh started), or None for a miss."""
        entry = read.entry
        if entry is None:
            return None
        now = _now_ms()
        if entry.is_fresh(now):
            self.stats.hits += 1
            if self._wants_early_refresh(entry, now, policy):
                self.stats.early_refreshes += 1
                self._refresh_in_background(key, loader, policy, tag_keys, read)
            age = max(0.0, (now - entry.created_ms) / 1000)
            return CacheResult(entry.value, CacheStatus.HIT, age, entry.soft_expires_ms)
        if policy.soft_ttl is not None:
            # Past the soft TTL but the key still exists: stale-while-revalidate.
            self.stats.stale_served += 1
            self._refresh_in_background(key, loader, policy, tag_keys, read)
            age = max(0.0, (now - entry.created_ms) / 1000)
            return CacheResult(entry.value, CacheStatus.STALE, age, entry.soft_expires_ms)
        # No soft TTL: the entry is past its TTL and Redis has not deleted it
        # yet (clock drift, lazy expiry). That is a miss, loaded under the miss
        # lock; a background refresh here would run beside the next caller's
        # miss once Redis deletes the key, and the key would load twice.
        return None

    async def get_or_load(
        self, key: str, loader: Loader, *, tags: Sequence[str] = (), policy: CachePolicy | None = None
    ) -> Any:
        """Like :meth:`fetch` but returns just the value."""
        return (await self.fetch(key, loader, tags=tags, policy=policy)).value

    def _wants_early_refresh(self, entry: Entry, now: int, policy: CachePolicy) -> bool:
        if policy.refresh_ahead > 0:
            lifetime = entry.soft_expires_ms - entry.created_ms
            if entry.soft_expires_ms - now <= lifetime * policy.refresh_ahead:
                return True
        return xfetch_should_refresh(
            now, entry.soft_expires_ms, entry.compute_ms, policy.xfetch_beta, self._rng.random
        )

    # -- misses ----------------------------------------------------------
    async def _miss(
        self, key: str, loader: Loader, policy: CachePolicy, tag_keys: Sequence[str], read: _Read
    ) -> Any:
        async def load_and_fill() -> Any:
            if policy.lock:
                return await self._load_under_lock(key, loader, policy, tag_keys, read)
            value, compute_ms = await self._call_loader(loader)
            await self._fill(key, value, compute_ms, policy, tag_keys, read)
            return value

        if not policy.single_flight:
            return await load_and_fill()
        value, shared = await self._flight.do(key, load_and_fill)
        if shared:
            self.stats.coalesced += 1
        return value

    async def _load_coalesced(self, key: str, loader: Loader, policy: CachePolicy) -> Any:
        if not policy.single_flight:
            return (await self._call_loader(loader))[0]
        (value, _ms), shared = await self._flight.do(f"bypass:{key}", lambda: self._call_loader(loader))
        if shared:
            self.stats.coalesced += 1
        return value

    async def _call_loader(self, loader: Loader) -> tuple[Any, int]:
        self.stats.loader_calls += 1
        started = time.perf_counter()
        value = await loader()
        return value, int((time.perf_counter() - started) * 1000)

    async def _load_under_lock(
        self, key: str, loader: Loader, policy: CachePolicy, tag_keys: Sequence[str], read: _Read
    ) -> Any:
        """One loader per lease across processes; the others wait for its value, within bounds."""
        lock = TokenLock(self.rr, self._lock_key(key), policy.lock_lease)
        deadline = time.monotonic() + policy.lock_wait
        delay = 0.005
        latest, waited = read, False
        try:
            while True:
                if await lock.acquire():
                    try:
                        if waited:  # the holder before us may have filled it
                            latest = await self._read(key, tag_keys)
                            if _is_fresh(latest):
                                return latest.entry.value
                        value, compute_ms = await self._call_loader(loader)
                        await self._fill(key, value, compute_ms, policy, tag_keys, latest)
                        return value
                    finally:
                        with contextlib.suppress(RedisUnavailable):  # else the lease expires
                            await lock.release()
                self.stats.lock_waits += 1
                waited = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)
                latest = await self._read(key, tag_keys)
                if _is_fresh(latest):
                    return latest.entry.value
                if time.monotonic() >= deadline:
                    # The holder is too slow: serve this caller rather than time out.
                    value, compute_ms = await self._call_loader(loader)
                    await self._fill(key, value, compute_ms, policy, tag_keys, latest)
                    return value
        except RedisUnavailable:
            self.stats.errors += 1
            return (await self._call_loader(loader))[0]

    # -- writes ----------------------------------------------------------
    def _ttls(self, policy: CachePolicy, negative: bool) -> tuple[int, int]:
        """(soft expiry offset, hard TTL) in ms, with jitter."""
        hard = policy.ttl
        if negative and policy.negative_ttl is not None:
            hard = min(hard, policy.negative_ttl)
        soft = min(policy.soft_ttl or hard, hard)
        factor = 1 + self._rng.uniform(-policy.jitter, policy.jitter) if policy.jitter else 1.0
        return max(1, int(soft * factor * 1000)), max(1, int(hard * factor * 1000))

    def _encode(
        self, value: Any, compute_ms: int, policy: CachePolicy, tag_generations: Sequence[str]
    ) -> tuple[bytes, int] | None:
        negative = value is None
        soft_ms, hard_ms = self._ttls(policy, negative)
        now = _now_ms()
        entry = Entry(
            value=value,
            created_ms=now,
            soft_expires_ms=now + soft_ms,
            compute_ms=compute_ms,
            negative=negative,
            tag_generations=tuple(int(g) for g in tag_generations) if tag_generations else None,
        )
        try:
            return self.codec.encode(entry), hard_ms
        except ValueTooLarge:
            self.stats.oversize += 1
            return None

    async def _fill(
        self, key: str, value: Any, compute_ms: int, policy: CachePolicy, tag_keys: Sequence[str], read: _Read
    ) -> bool:
        encoded = self._encode(value, compute_ms, policy, read.tag_generations)
        if encoded is None:
            return False
        payload, hard_ms = encoded
        try:
            stored = await self.rr.run_script(
                "cache_fill",
                [key, self._gen_key(key), *tag_keys],
                [read.generation, payload, hard_ms, *read.tag_generations],
            )
        except RedisUnavailable:
            self.stats.errors += 1
            return False
        if stored:
            self.stats.fills += 1
        else:
            self.stats.fills_rejected += 1
        return bool(stored)

    async def set(
        self, key: str, value: Any, *, policy: CachePolicy | None = None, tags: Sequence[str] = ()
    ) -> bool:
        """Unconditionally store ``value`` (warming, tests). False if Redis is unavailable.

        TypeError/ValueError, nothing written, if ``value`` is not plain JSON.
        """
        policy = policy or self.policy
        tag_keys = self._tag_keys(key, tags)
        tag_gens: tuple[str, ...] = ()
        try:
            if tag_keys:
                tag_gens = tuple(
                    t.decode() if t is not None else "0"
                    for t in await self.rr.call(self.rr.client.mget, tag_keys)
                )
            encoded = self._encode(value, 0, policy, tag_gens)
            if encoded is None:
                return False
            payload, hard_ms = encoded
            return bool(await self.rr.call(self.rr.client.set, key, payload, px=hard_ms))
        except RedisUnavailable:
            self.stats.errors += 1
            return False

    async def write_through(
        self, key: str, value: Any, version: int, *, policy: CachePolicy | None = None
    ) -> bool:
        """After the database commit, store ``value`` unless a newer ``version`` is already cached.

        ``version`` must increase with every committed change of the row (a
        version column, or ``updated_at`` in microseconds). Returns True if
        stored, False if an equal or newer version won (or Redis is down).
        One round trip.
        """
        policy = policy or self.policy
        try:
            encoded = self._encode(value, 0, policy, ())
        except (TypeError, ValueError):
            await self.invalidate(key, version=version)  # the committed row must not be served stale
            raise
        if encoded is None:
            await self.invalidate(key, version=version)
            return False
        payload, hard_ms = encoded
        try:
            stored = await self.rr.run_script(
                "cache_write_through",
                [key, self._gen_key(key)],
                [int(version), payload, hard_ms, max(GENERATION_TTL_MS, hard_ms * 2)],
            )
        except RedisUnavailable:
            self.stats.errors += 1
            return False
        return bool(stored)

    async def invalidate(self, key: str, *, version: int | None = None) -> bool:
        """Delete ``key`` and advance its generation (one round trip).

        In-flight loaders that read the old generation can no longer fill it.
        """
        try:
            await self.rr.run_script(
                "cache_invalidate",
                [key, self._gen_key(key)],
                ["" if version is None else int(version), GENERATION_TTL_MS],
            )
        except RedisUnavailable:
            self.stats.errors += 1
            return False
        return True

    async def invalidate_tag(self, scope: object, tag: str, *more: str) -> int | None:
        """Invalidate every entry of ``scope`` tagged ``tag`` (or any of ``more``).

        One round trip, however many entries and tags. Returns the new
        generation of ``tag``, or None if Redis is unavailable.
        """
        try:
            return int(
                await self.rr.run_script(
                    "tag_invalidate", [self.tag_key(scope, t) for t in (tag, *more)], [GENERATION_TTL_MS]
                )
            )
        except RedisUnavailable:
            self.stats.errors += 1
            return None

    # -- background refresh ----------------------------------------------
    def _refresh_in_background(
        self, key: str, loader: Loader, policy: CachePolicy, tag_keys: Sequence[str], read: _Read
    ) -> None:
        if key in self._refreshing.keys:
            return  # this process already refreshes it: no round trip
        self._refreshing.keys.add(key)

        async def refresh() -> None:
            try:
                lock = TokenLock(self.rr, self._refresh_key(key), policy.refresh_lease)
                if not await lock.acquire():
                    return  # another process refreshes it
                try:
                    value, compute_ms = await self._call_loader(loader)
                    await self._fill(key, value, compute_ms, policy, tag_keys, read)
                finally:
                    await lock.release()
            finally:
                self._refreshing.keys.discard(key)

        if not self.rr.background.submit(refresh):
            self._refreshing.keys.discard(key)

    # -- bulk ------------------------------------------------------------
    async def get_many(self, keys: Sequence[str], *, batch: int = 500) -> list[Any]:
        """Multi-get: values (or :data:`MISSING`) in order, one round trip per ``batch`` keys.

        On Redis Cluster the keys may span slots, so each batch is split by slot
        (``mget_nonatomic``: one pipelined round trip per primary involved).
        """
        out: list[Any] = []
        mget = self.rr.client.mget_nonatomic if self.rr.is_cluster else self.rr.client.mget
        for start in range(0, len(keys), batch):
            chunk = keys[start : start + batch]
            try:
                raws = await self.rr.call(mget, chunk)
            except RedisUnavailable:
                self.stats.errors += 1
                out.extend(MISSING for _ in chunk)
                continue
            for raw in raws:
                try:
                    out.append(self.codec.decode(raw).value if raw is not None else MISSING)
                except CorruptEntry:
                    self.stats.corrupt += 1
                    out.append(MISSING)
        return out

    async def warm(
        self,
        items: Mapping[str, Any] | Iterable[tuple[str, Any]],
        *,
        policy: CachePolicy | None = None,
        batch: int = 500,
    ) -> int:
        """Pre-populate entries with pipelined SETs, one round trip per ``batch``. Returns count stored.

        Every value is encoded before the first write, so a value that is not
        plain JSON raises with nothing written.
        """
        policy = policy or self.policy
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        encoded_pairs = [(key, self._encode(value, 0, policy, ())) for key, value in pairs]
        stored = 0
        for start in range(0, len(encoded_pairs), batch):
            pipe = self.rr.client.pipeline(transaction=False)
            queued = 0
            for key, encoded in encoded_pairs[start : start + batch]:
                if encoded is not None:
                    pipe.set(key, encoded[0], px=encoded[1])
                    queued += 1
            if queued:
                try:
                    stored += sum(bool(r) for r in await self.rr.call(pipe.execute))
                except RedisUnavailable:
                    self.stats.errors += 1
                    break
        return stored

    def with_policy(self, **changes: Any) -> CachePolicy:
        """A copy of this cache's policy with some fields changed."""
        return replace(self.policy, **changes)
