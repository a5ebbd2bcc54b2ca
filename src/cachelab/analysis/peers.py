"""``cachelab peers``: ours beside the peer libraries, interleaved, each on its own default client.

Issue 16. A peer comparison decides something only if (1) every contender
runs as its users would run it — on its **own default client and pool**, not
ours — (2) the machine's noise falls on both sides of a ratio alike, and (3)
the workload is the app's. So:

* **Own defaults.** Ours: ``ResilientRedis.from_url(url)`` (default
  ``ClientOptions``). ``limits``: ``RedisStorage("async+redis://…",
  implementation="redispy")`` and its default pool. ``cashews``:
  ``Cache().setup(url, pickle_type="json", client_side=False)``.
  ``aiocache``: ``RedisCache`` with its ``JsonSerializer``. RQ: a plain
  ``redis.Redis.from_url`` (what ``rq worker --url`` makes). The floors: a
  plain ``redis.asyncio`` client doing ``GET`` + ``orjson.loads``, and a
  ``BRPOP`` loop over an ``LPUSH``-filled list.
* **Interleaved blocks.** Each comparison is a group of contenders; each of
  ``blocks`` blocks runs ``ops`` operations of every contender one after the
  other, the order rotated by one each block (A B C, B C A, C A B, …). A
  pair's ratio is taken per block (ours / theirs in the same block), and
  reported as median [min–max] over blocks, with the paired t interval on
  the log ratios from :func:`cachelab.report.stats.compare_paired`. The
  verdict against a target is **pass** when that 95 % interval lies wholly on
  the right side of the target, **fail** when it lies wholly on the wrong
  side, **unsure** otherwise (more blocks narrow it).
* **The app's values and keys.** Cached values are dashboard JSON dicts of
  0.7 KB and 3.5 KB (:func:`cachelab.harness.payloads.dashboard_of_size`);
  each case runs on one hot key and on a spread of ``keys`` keys (rate
  limits: identifiers) cycled in order.
* **An A/A control.** The first cache group also runs the floor against
  itself on a second client: its ratio's interval is the noise of this run,
  the yardstick for every other row.
* **Server cost counted once.** Every redis-py connection in the process
  (ours and every peer's alike) is counted by one tally installed on
  redis-py's connection classes for the run (:func:`counting`): round trips
  per op, and the commands each client sent by name, which is what lets
  :class:`~cachelab.harness.cost.CostMeter` book a script's inner commands
  once (inside ``EVALSHA``) from ``INFO commandstats``. The tally does not
  change anyone's pool or options; its cost (a dict update per command)
  falls on every contender alike.

Only public APIs of ours that exist on main (``Cache.get/fetch/set``,
``create_limiter(...).check``, ``JobQueue.enqueue``, ``Worker`` — handed in
by the CLI, since this layer sits below the worker command), so the same
tool measures a tree before and after a change (run it with ``PYTHONPATH``
pointing at that tree). A peer that is not installed is skipped with a line
saying so. RQ is synchronous and runs on the event loop's thread; its
``SimpleWorker.work`` must be started from the main thread (it installs
signal handlers), which ``cachelab peers`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import math
import platform
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis
import redis.asyncio

from cachelab.analysis.loops import run_async
from cachelab.client import ResilientRedis, RoundTripCounter, command_name
from cachelab.harness.cost import CostMeter
from cachelab.harness.payloads import REPORT_JOB, dashboard_of_size
from cachelab.patterns.health import server_label
from cachelab.report.stats import compare_paired
from cachelab.servers.redis_server import RedisServer

SECTIONS = ("cache", "ratelimit", "drain")
VALUE_SIZES = {"0.7KB": 700, "3.5KB": 3_500}
ALGORITHMS = {  # ours -> the limits strategy with the same semantics
    "fixed_window": "FixedWindowRateLimiter",
    "sliding_log": "MovingWindowRateLimiter",
    "sliding_window": "SlidingWindowCounterRateLimiter",
}
#: (limit, period s, limits' rate string) per path. Denied: a small limit, used up before the blocks.
RATES = {"allowed": (1_000_000, 60, "1000000/minute"), "denied": (2, 3600, "2/hour")}
INSTALL_HINT = 'pip install -e ".[peers]"'
NOOP_JOB = {**REPORT_JOB, "type": "noop"}
AA_CONTROL = "raw GET+orjson, 2nd client (A/A control)"


@dataclass(frozen=True)
class Settings:
    # Many short blocks rather than a few long ones: a contender's block lasts ~20-50 ms, so the two
    # sides of a ratio see the same moment of a noisy machine, and 15 ratios give a usable interval.
    blocks: int = 15  # interleaved blocks per comparison
    ops: int = 100  # operations (drain: jobs) per contender per block
    keys: int = 1_000  # keys / identifiers in the spread cases
    sections: tuple[str, ...] = SECTIONS

    @classmethod
    def quick(cls, sections: Sequence[str] = SECTIONS) -> Settings:
        return cls(blocks=3, ops=20, keys=50, sections=tuple(sections))


# -- the tally: round trips and commands sent, by every redis-py connection ---------------------
_META = frozenset({"info"})  # a cost meter's own reads: neither a command nor a round trip of the work


@contextlib.contextmanager
def counting(into: RoundTripCounter | None = None) -> Iterator[RoundTripCounter]:
    """Count round trips and commands of every redis-py connection (async and sync) until exit.

    Wraps ``send_command`` / ``pack_commands`` / ``send_packed_command`` on
    redis-py's connection base classes, so it sees every client however its
    pool was built, without changing any pool. Only the calling thread's
    traffic is counted, and a send made only of ``INFO`` (a cost meter's
    snapshot) is not a round trip. Counts go to ``into`` (default: a new
    counter), which is yielded.
    """
    tally = into if into is not None else RoundTripCounter()
    owner = threading.get_ident()
    state = threading.local()  # "the next packed send is the meter's": set by send/pack, read by the send
    patched: list[tuple[type, str, Any]] = []

    def note(commands: Sequence[tuple[Any, ...]]) -> None:
        if threading.get_ident() != owner:
            return
        in_multi, meta = False, True
        for args in commands:
            name = command_name(args)
            meta = meta and name in _META
            if name == "multi":
                in_multi = True
            elif name in ("exec", "discard"):
                in_multi = False
            tally.record(name, queued=in_multi and name not in ("multi", "exec", "discard"))
        state.skip = meta and bool(commands)

    def sent() -> None:
        if threading.get_ident() != owner:
            return
        if getattr(state, "skip", False):
            state.skip = False
        else:
            tally.add()

    for base in (redis.asyncio.connection.AbstractConnection, redis.connection.AbstractConnection):
        orig_send, orig_pack_many = base.send_command, base.pack_commands
        orig_packed = base.send_packed_command
        if asyncio.iscoroutinefunction(orig_send):
            async def send(self: Any, *args: Any, _orig: Any = orig_send, **kwargs: Any) -> None:
                if args:
                    note([args])
                await _orig(self, *args, **kwargs)

            async def packed(self: Any, command: Any, check_health: bool = True,
                             _orig: Any = orig_packed) -> None:
                sent()
                await _orig(self, command, check_health)
        else:
            def send(self: Any, *args: Any, _orig: Any = orig_send, **kwargs: Any) -> None:  # type: ignore[misc]
                if args:
                    note([args])
                _orig(self, *args, **kwargs)

            def packed(self: Any, command: Any, check_health: bool = True,  # type: ignore[misc]
                       _orig: Any = orig_packed) -> None:
                sent()
                _orig(self, command, check_health)

        def pack_many(self: Any, commands: Any, _orig: Any = orig_pack_many) -> Any:
            commands = [tuple(c) for c in commands]
            note(commands)
            return _orig(self, commands)

        for name, fn, orig in (("send_command", send, orig_send),
                               ("pack_commands", pack_many, orig_pack_many),
                               ("send_packed_command", packed, orig_packed)):
            patched.append((base, name, orig))
            setattr(base, name, fn)
    try:
        yield tally
    finally:
        for base, name, orig in reversed(patched):
            setattr(base, name, orig)


# -- contenders -----------------------------------------------------------------------------
class PeerMissing(Exception):
    """A peer library is not installed: its contenders are skipped, with this message."""


def import_peer(module: str) -> Any:
    """``importlib.import_module(module)``, or :class:`PeerMissing` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PeerMissing(f"{module.split('.')[0]} is not installed ({INSTALL_HINT}): {exc}") from exc


@dataclass
class Contender:
    """One side of a comparison: ``run(n)`` does n operations (timed); ``prepare(n)`` is not timed."""

    name: str
    library: str
    run: Callable[[int], Awaitable[Any]]
    prepare: Callable[[int], Awaitable[Any]] | None = None
    fairness: str = ""


@dataclass(frozen=True)
class Pair:
    ours: str
    theirs: str
    target: float | None = None  # ratio ours/theirs; None: reported, no target


@dataclass
class Group:
    """Contenders measured in the same interleaved blocks, and the pairs compared from them."""

    section: str
    what: str  # e.g. "cache hit 0.7KB, 1000 keys"
    unit: str  # "µs/op" (lower is better) or "jobs/s" (higher is better)
    contenders: list[Contender]
    pairs: list[Pair]
    skipped: list[str] = field(default_factory=list)


def rotated(items: Sequence[Any], block: int) -> list[Any]:
    """Block ``block``'s order: the list rotated left by ``block`` (A B C, B C A, C A B, A B C…)."""
    if not items:
        return []
    k = block % len(items)
    return list(items[k:]) + list(items[:k])


def cycle_keys(keys: Sequence[Any]) -> Callable[[], Any]:
    """A function returning the next of ``keys`` at each call, round and round (a spread of keys)."""
    state = {"i": 0}

    def nxt() -> Any:
        i = state["i"]
        state["i"] = i + 1 if i + 1 < len(keys) else 0
        return keys[i]

    return nxt


async def _each(items: Sequence[Any], fn: Callable[[Any], Awaitable[Any]], width: int = 50) -> list[Any]:
    """``fn(item)`` for every item, ``width`` at a time (untimed setup: filling keys, using up limits)."""
    out: list[Any] = []
    for start in range(0, len(items), width):
        out += await asyncio.gather(*(fn(item) for item in items[start:start + width]))
    return out


async def _never() -> Any:
    raise AssertionError("a hit must not load")


class Peers:
    """Every contender's client, made once per run on the private server's URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._closers: list[Callable[[], Awaitable[Any]]] = []
        self._ours: ResilientRedis | None = None

    @property
    def ours(self) -> ResilientRedis:
        if self._ours is None:
            self._ours = ResilientRedis.from_url(self.url)  # default ClientOptions
            self._closers.append(self._ours.aclose)
        return self._ours

    def raw(self) -> redis.asyncio.Redis:
        client = redis.asyncio.Redis.from_url(self.url)  # redis-py's defaults
        self._closers.append(client.aclose)
        return client

    async def aclose(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                await close()


# cache hit ----------------------------------------------------------------------------------
async def cache_group(peers: Peers, size_name: str, n_keys: int) -> Group:
    from cachelab.patterns.cache import Cache

    value = dashboard_of_size(VALUE_SIZES[size_name])
    encoded = orjson.dumps(value)
    keyset = "hot key" if n_keys == 1 else f"{n_keys} keys"
    tag = f"{size_name}:{n_keys}"
    group = Group("cache", f"cache hit {size_name}, {keyset}", "µs/op", [], [])

    cache = Cache(peers.ours, f"peers-{tag}")
    ours_keys = [cache.key("acme", f"k{i}") for i in range(n_keys)]
    assert all(await _each(ours_keys, lambda key: cache.set(key, value)))
    got = await cache.get(ours_keys[0])
    assert got == value, "ours: the value read back differs"
    get_key, fetch_key = cycle_keys(ours_keys), cycle_keys(ours_keys)

    async def ours_get(n: int) -> None:
        for _ in range(n):
            await cache.get(get_key())

    async def ours_fetch(n: int) -> None:
        for _ in range(n):
            await cache.fetch(fetch_key(), _never)

    group.contenders += [
        Contender("ours get", "cachelab", ours_get,
                  fairness="Cache.get: orjson in an envelope; MGET of value + generation"),
        Contender("ours fetch", "cachelab", ours_fetch,
                  fairness="Cache.fetch on a hit: as get, plus staleness/age/stampede decisions"),
    ]

    raw = peers.raw()
    raw_keys = [f"raw:{tag}:{i}" for i in range(n_keys)]
    await _each(raw_keys, lambda key: raw.set(key, encoded, ex=3600))
    raw_key = cycle_keys(raw_keys)

    async def raw_get(n: int) -> None:
        for _ in range(n):
            orjson.loads(await raw.get(raw_key()))

    group.contenders.append(Contender("raw GET+orjson", "redis-py", raw_get,
                                      fairness="the floor: one GET and orjson.loads, nothing else"))
    group.pairs += [Pair("ours get", "raw GET+orjson", 1.2), Pair("ours fetch", "raw GET+orjson", 1.2)]
    if n_keys == 1 and size_name == next(iter(VALUE_SIZES)):
        # An A/A control: the floor against itself on a second client. Its interval is the noise a
        # ratio of this run carries; a verdict is worth as much as this row is close to 1.
        twin, twin_key = peers.raw(), cycle_keys(raw_keys)

        async def twin_get(n: int) -> None:
            for _ in range(n):
                orjson.loads(await twin.get(twin_key()))

        group.contenders.append(Contender(AA_CONTROL, "redis-py", twin_get,
                                          fairness="the same code as the floor, on a second client"))
        group.pairs.append(Pair(AA_CONTROL, "raw GET+orjson"))

    try:
        cashews = import_peer("cashews")
        ccache = cashews.Cache()
        ccache.setup(peers.url, pickle_type="json", client_side=False)
        peers._closers.append(ccache.close)
        await _add_peer_cache(
            group, "cashews get", "cashews", [f"cashews:{tag}:{i}" for i in range(n_keys)], value,
            set_one=lambda key: ccache.set(key, value, expire=3600), get_one=ccache.get,
            fairness="pickle_type=json (stdlib json; cashews defaults to pickle); one GET: no envelope, "
            "no generation, no stampede protection on this call",
        )  # fmt: skip
    except PeerMissing as exc:
        group.skipped.append(str(exc))

    try:
        aiocache = import_peer("aiocache")
        serializers = import_peer("aiocache.serializers")
        opts = redis.connection.parse_url(peers.url)
        acache = aiocache.RedisCache(
            serializer=serializers.JsonSerializer(), endpoint=opts.get("host"), port=opts.get("port"),
            db=opts.get("db", 0), password=opts.get("password"))
        peers._closers.append(acache.close)
        await _add_peer_cache(
            group, "aiocache get", "aiocache", [f"aiocache:{tag}:{i}" for i in range(n_keys)], value,
            set_one=lambda key: acache.set(key, value, ttl=3600), get_one=acache.get,
            fairness="JsonSerializer (stdlib json); one GET: no envelope, no generation, "
            "no stampede protection",
        )  # fmt: skip
    except PeerMissing as exc:
        group.skipped.append(str(exc))
    return group


async def _add_peer_cache(
    group: Group,
    name: str,
    library: str,
    keys: list[str],
    value: Any,
    *,
    set_one: Callable[[str], Awaitable[Any]],
    get_one: Callable[[str], Awaitable[Any]],
    fairness: str,
) -> None:
    """Fill ``keys`` through a peer cache library, check one reads back, and add its GET loop to
    ``group``, paired with both of ours."""
    await _each(keys, set_one)
    assert await get_one(keys[0]) == value, f"{library}: the value read back differs"
    next_key = cycle_keys(keys)

    async def get(n: int) -> None:
        for _ in range(n):
            await get_one(next_key())

    group.contenders.append(Contender(name, library, get, fairness=fairness))
    group.pairs += [Pair("ours get", name), Pair("ours fetch", name)]


# rate limits -----------------------------------------------------------------------------
class _LimitsPeer:
    """The ``limits`` modules and one storage (its own default pool) shared by the three strategies."""

    def __init__(self, url: str) -> None:
        self.limits = import_peer("limits")
        storage_mod = import_peer("limits.aio.storage")
        self.strategies = import_peer("limits.aio.strategies")
        scheme, rest = url.split("://", 1)
        # its default pool: no connection_pool, no options
        self.storage = storage_mod.RedisStorage(f"async+{scheme}://{rest}", implementation="redispy")


async def ratelimit_group(peers: Peers, limits_peer: _LimitsPeer | PeerMissing, algorithm: str, path: str,
                          n_ids: int) -> Group:
    from cachelab.patterns.ratelimit import create_limiter

    limit, period, rate = RATES[path]
    keyset = "one identifier" if n_ids == 1 else f"{n_ids} identifiers"
    group = Group("ratelimit", f"rate limit {algorithm}, {path}, {keyset}", "µs/op", [], [])
    ids = [f"198.51.{i // 256}.{i % 256}-{algorithm}-{path}-{n_ids}" for i in range(n_ids)]

    limiter = create_limiter(peers.ours, algorithm, limit, period)
    if path == "denied":  # use the limit up (sequentially per identifier, identifiers in parallel)
        async def use_up_ours(ident: str) -> None:
            for _ in range(limit):
                assert (await limiter.check(ident)).allowed

        await _each(ids, use_up_ours)
    assert bool((await limiter.check(ids[0])).allowed) is (path == "allowed"), f"ours {algorithm} {path}"
    ours_id = cycle_keys(ids)

    async def ours(n: int) -> None:
        for _ in range(n):
            await limiter.check(ours_id())

    group.contenders.append(Contender(
        "ours check", "cachelab", ours,
        fairness="one EVALSHA; decision on the server's clock; returns remaining/reset/retry-after"))
    if isinstance(limits_peer, PeerMissing):
        group.skipped.append(str(limits_peer))
        return group
    strategy = getattr(limits_peer.strategies, ALGORITHMS[algorithm])(limits_peer.storage)
    item = limits_peer.limits.parse(rate)
    if path == "denied":
        async def use_up_theirs(ident: str) -> None:
            for _ in range(limit):
                assert await strategy.hit(item, ident)

        await _each(ids, use_up_theirs)
    assert bool(await strategy.hit(item, ids[0])) is (path == "allowed"), f"limits {algorithm} {path}"
    their_id = cycle_keys(ids)

    async def theirs(n: int) -> None:
        for _ in range(n):
            await strategy.hit(item, their_id())

    name = f"limits {ALGORITHMS[algorithm].removesuffix('RateLimiter')}"
    group.contenders.append(Contender(name, "limits", theirs, fairness=(
        "limits' async RedisStorage (implementation='redispy', its default pool); one EVALSHA per hit; "
        "returns only a bool; entries stamped with the client's clock")))
    group.pairs.append(Pair("ours check", name, 1.0))
    return group


# queue drain -----------------------------------------------------------------------------
def noop_job(*args: Any, **kwargs: Any) -> None:
    """RQ's job function in the drain comparison: does nothing (imported by RQ by its dotted name)."""


async def _noop_handler(payload: dict[str, Any]) -> None:
    return None


async def drain_group(peers: Peers, worker_class: type) -> Group:
    """``worker_class``: :class:`cachelab.worker.Worker`, handed in by the caller (the CLI): this
    module sits in a layer below the ``worker`` command's module and must not import it."""
    from cachelab.patterns.queue import JobQueue

    group = Group("drain", "queue drain, 1 worker, no-op jobs", "jobs/s", [], [])
    queue = JobQueue(peers.ours, "peers-drain")

    async def ours_fill(n: int) -> None:
        for start in range(0, n, 50):
            await asyncio.gather(*(queue.enqueue(NOOP_JOB) for _ in range(min(50, n - start))))

    async def ours_drain(n: int) -> None:
        worker: Any = None
        done = 0

        async def handler(payload: dict[str, Any]) -> None:
            nonlocal done
            done += 1
            if done == n and hasattr(worker, "request_stop"):
                worker.request_stop()  # stop after the n-th job's ack, not after burst's idle poll

        worker = worker_class(queue, {"noop": handler}, concurrency=1, burst=True)
        await worker.run()
        assert done == n, f"ours drained {done} of {n}"

    group.contenders.append(Contender(
        "ours Worker", "cachelab", ours_drain, ours_fill,
        fairness="Worker (1 slot, burst, default options): reserve (EVALSHA) + lease extender task + "
                 "ack (EVALSHA) per job; status record, counters; timed until the n-th ack"))

    raw = peers.raw()
    raw_list = "peers:drain:raw"
    body = orjson.dumps(NOOP_JOB)

    async def raw_fill(n: int) -> None:
        for start in range(0, n, 1000):
            await raw.lpush(raw_list, *([body] * min(1000, n - start)))

    async def raw_drain(n: int) -> None:
        for _ in range(n):
            reply = await raw.brpop([raw_list], timeout=5)
            assert reply is not None, "raw: the list ran dry"
            await _noop_handler(orjson.loads(reply[1]))

    group.contenders.append(Contender(
        "raw BRPOP loop", "redis-py", raw_drain, raw_fill,
        fairness="the floor: BRPOP + orjson.loads + a no-op handler; no lease, no ack, no retry"))
    group.pairs.append(Pair("ours Worker", "raw BRPOP loop", 0.4))

    try:
        rq = import_peer("rq")
        conn = redis.Redis.from_url(peers.url)  # RQ's default connection: a plain redis.Redis
        peers._closers.append(_async(conn.close))
        rq_queue = rq.Queue("peers-drain", connection=conn)
        data = rq.Queue.prepare_data(f"{__name__}.noop_job", args=(NOOP_JOB,))

        async def rq_fill(n: int) -> None:
            for start in range(0, n, 1000):
                rq_queue.enqueue_many([data] * min(1000, n - start))

        async def rq_drain(n: int) -> None:
            worker = rq.SimpleWorker([rq_queue], connection=conn)
            worker.work(burst=True, logging_level="WARNING")
            left = rq_queue.count
            assert left == 0, f"rq left {left} jobs"

        group.contenders.append(Contender(
            "RQ SimpleWorker", "rq", rq_drain, rq_fill,
            fairness="SimpleWorker.work(burst=True): in-process, sync redis-py, pickled jobs; registers "
                     "and tears down the worker each block; registries, heartbeats, result records"))
        group.pairs.append(Pair("ours Worker", "RQ SimpleWorker", 5.0))
    except PeerMissing as exc:
        group.skipped.append(str(exc))
    return group


def _async(fn: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    async def call() -> Any:
        return fn()

    return call


# -- the driver -------------------------------------------------------------------------------
@dataclass
class Sample:
    """One contender's block: n ops, seconds, and their server cost."""

    contender: str
    block: int
    position: int  # place in the block's order
    ops: int
    seconds: float
    round_trips: int
    server_usec: float
    commands: int

    def value(self, unit: str) -> float:
        return self.ops / self.seconds if unit == "jobs/s" else self.seconds / self.ops * 1e6


async def measure_group(group: Group, blocks: int, ops: int, meter: CostMeter | None,
                        tally: RoundTripCounter | None) -> list[Sample]:
    """One warm-up round (not kept), then ``blocks`` interleaved blocks, the order rotated each block."""
    samples: list[Sample] = []
    warm = max(1, min(ops, 20))
    for c in group.contenders:
        if c.prepare:
            await c.prepare(warm)
        await c.run(warm)
    for b in range(blocks):
        for pos, c in enumerate(rotated(group.contenders, b)):
            if c.prepare:
                await c.prepare(ops)
            before = meter.snapshot() if meter else None
            t0 = tally.snapshot() if tally else (0, {}, {})
            began = time.perf_counter()
            await c.run(ops)
            seconds = time.perf_counter() - began
            t1 = tally.snapshot() if tally else (0, {}, {})
            rt, usec, commands = t1[0] - t0[0], 0.0, 0
            if meter and before is not None:
                cost = meter.delta(before, meter.snapshot(), rt, sent=_minus(t1[1], t0[1]),
                                   queued=_minus(t1[2], t0[2]))
                usec, commands = cost.server_usec, cost.total_commands
            samples.append(Sample(c.name, b, pos, ops, seconds, rt, usec, commands))
    return samples


def _minus(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


@dataclass
class PairResult:
    section: str
    what: str
    unit: str
    ours: str
    theirs: str
    ours_value: float  # median over blocks (µs/op or jobs/s)
    theirs_value: float
    ratio: float  # median of the per-block ratios ours/theirs
    ratio_min: float
    ratio_max: float
    ci_low: float | None  # paired t interval (95 %) of the geometric-mean ratio
    ci_high: float | None
    blocks: int
    target: float | None
    verdict: str  # pass / fail / unsure / report
    ours_round_trips: float
    theirs_round_trips: float
    ours_server_us: float
    theirs_server_us: float
    ours_fairness: str = ""
    theirs_fairness: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.unit == "jobs/s"


def ratio_stats(ours: Sequence[float], theirs: Sequence[float]) -> tuple[float, float, float, float | None,
                                                                          float | None]:
    """Per-block ratios ours/theirs: (median, min, max, ci_low, ci_high) — CI None below 2 blocks."""
    ratios = [o / t for o, t in zip(ours, theirs, strict=True)]
    cmp = compare_paired(theirs, ours)  # its ratio is b / a = ours / theirs
    low, high = (cmp.low, cmp.high) if cmp is not None else (None, None)
    return statistics.median(ratios), min(ratios), max(ratios), low, high


def verdict(low: float | None, high: float | None, target: float | None, *, higher_is_better: bool) -> str:
    """pass when the whole interval is on the target's good side, fail when wholly on the bad side."""
    if target is None:
        return "report"
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "unsure"
    if higher_is_better:
        return "pass" if low >= target else "fail" if high < target else "unsure"
    return "pass" if high <= target else "fail" if low > target else "unsure"


def pair_results(group: Group, samples: Sequence[Sample]) -> list[PairResult]:
    by: dict[str, list[Sample]] = {}
    for s in samples:
        by.setdefault(s.contender, []).append(s)
    fairness = {c.name: c.fairness for c in group.contenders}
    out = []
    for pair in group.pairs:
        o = sorted(by[pair.ours], key=lambda s: s.block)
        t = sorted(by[pair.theirs], key=lambda s: s.block)
        ov, tv = [s.value(group.unit) for s in o], [s.value(group.unit) for s in t]
        med, lo, hi, ci_lo, ci_hi = ratio_stats(ov, tv)
        hib = group.unit == "jobs/s"
        out.append(PairResult(
            section=group.section, what=group.what, unit=group.unit, ours=pair.ours, theirs=pair.theirs,
            ours_value=statistics.median(ov), theirs_value=statistics.median(tv),
            ratio=med, ratio_min=lo, ratio_max=hi, ci_low=ci_lo, ci_high=ci_hi, blocks=len(o),
            target=pair.target, verdict=verdict(ci_lo, ci_hi, pair.target, higher_is_better=hib),
            ours_round_trips=sum(s.round_trips for s in o) / sum(s.ops for s in o),
            theirs_round_trips=sum(s.round_trips for s in t) / sum(s.ops for s in t),
            ours_server_us=statistics.median(s.server_usec / s.ops for s in o),
            theirs_server_us=statistics.median(s.server_usec / s.ops for s in t),
            ours_fairness=fairness[pair.ours], theirs_fairness=fairness[pair.theirs],
        ))
    return out


async def _run(url: str, settings: Settings, progress: Callable[[str], None], worker: type | None
               ) -> dict[str, Any]:
    peers = Peers(url)
    results: list[PairResult] = []
    samples_out: list[dict[str, Any]] = []
    skipped: list[str] = []
    meter = CostMeter(url)
    try:
        with counting() as tally:
            builders: list[Callable[[], Awaitable[Group]]] = []
            if "cache" in settings.sections:
                for size in VALUE_SIZES:
                    for n_keys in (1, settings.keys):
                        builders.append(lambda s=size, k=n_keys: cache_group(peers, s, k))
            if "ratelimit" in settings.sections:
                try:
                    limits_peer: _LimitsPeer | PeerMissing = _LimitsPeer(url)
                except PeerMissing as exc:
                    limits_peer = exc
                for algorithm in ALGORITHMS:
                    for path in RATES:
                        for n_ids in (1, settings.keys):
                            builders.append(lambda a=algorithm, p=path, k=n_ids:
                                            ratelimit_group(peers, limits_peer, a, p, k))
            if "drain" in settings.sections:
                if worker is None:
                    skipped.append("queue drain: no Worker class given (cachelab peers passes "
                                   "cachelab.worker.Worker)")
                    progress(f"skipped: {skipped[-1]}")
                else:
                    builders.append(lambda: drain_group(peers, worker))
            for build in builders:
                group = await build()
                for line in group.skipped:
                    if line not in skipped:
                        skipped.append(line)
                        progress(f"skipped: {line}")
                began = time.perf_counter()
                samples = await measure_group(group, settings.blocks, settings.ops, meter, tally)
                samples_out += [{"section": group.section, "what": group.what, **asdict(s)} for s in samples]
                rows = pair_results(group, samples)
                results += rows
                progress(f"{group.what}: {len(group.contenders)} contenders, "
                         f"{time.perf_counter() - began:.1f}s")
    finally:
        meter.close()
        await peers.aclose()
    return {"pairs": [asdict(r) for r in results], "samples": samples_out, "skipped": skipped}


def run(settings: Settings, *, url: str | None = None, progress: Callable[[str], None] = lambda _: None,
        worker: type | None = None) -> dict[str, Any]:
    """The comparison on a fresh private redis-server (or ``url``: a server nothing else uses).

    ``worker`` is :class:`cachelab.worker.Worker` for the drain section (without it the section is
    skipped with a line): the caller hands it in, as this layer may not import the worker command.
    """
    began = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if url is None:
            server = stack.enter_context(RedisServer())
            url = server.url
        admin = redis.Redis.from_url(url)
        try:
            info = admin.info("server")
        finally:
            admin.close()
        result = run_async(lambda: _run(url, settings, progress, worker))
    result["meta"] = {
        "settings": asdict(settings),
        "server": server_label(info),
        "python": platform.python_version(),
        "versions": _versions(),
        "seconds": round(time.perf_counter() - began, 1),
        "method": "interleaved blocks, order rotated per block; ratio = ours/theirs per block "
                  "(µs/op: lower is better; jobs/s: higher is better); CI = paired t on log ratios (95%)",
    }
    return result


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in ("cachelab", "redis", "hiredis", "cashews", "aiocache", "limits", "rq"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


# -- output -----------------------------------------------------------------------------------
def _cell(value: float, rt: float, server_us: float, unit: str) -> str:
    per = "job" if unit == "jobs/s" else "op"
    main = f"{value:,.0f} jobs/s" if unit == "jobs/s" else f"{value:,.1f} µs"
    return f"{main} · {rt:.2f} RT · {server_us:.1f} srv µs/{per}"


def _target(row: dict[str, Any]) -> str:
    if row["target"] is None:
        return "—"
    return f"{'≥' if row['unit'] == 'jobs/s' else '≤'} {row['target']:g}×"


def table(result: dict[str, Any]) -> str:
    """The markdown table: what, ours, theirs, ratio median [min–max], 95 % CI, target, result."""
    lines = [
        "| what | ours | theirs | ours/theirs median [min–max] | 95% CI | target | result |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["pairs"]:
        ci = "—" if r["ci_low"] is None else f"{r['ci_low']:.2f}–{r['ci_high']:.2f}"
        kind = "jobs/s" if r["unit"] == "jobs/s" else "µs/op"
        lines.append(
            f"| {r['what']} ({kind}) | {r['ours']}: {_cell(r['ours_value'], r['ours_round_trips'], r['ours_server_us'], r['unit'])} "  # noqa: E501
            f"| {r['theirs']}: {_cell(r['theirs_value'], r['theirs_round_trips'], r['theirs_server_us'], r['unit'])} "  # noqa: E501
            f"| {r['ratio']:.2f} [{r['ratio_min']:.2f}–{r['ratio_max']:.2f}] | {ci} | {_target(r)} "
            f"| {r['verdict']} |"
        )
    for line in result.get("skipped", []):
        lines.append(f"\nskipped: {line}")
    meta = result.get("meta")
    if meta:
        s = meta["settings"]
        lines.append(
            f"\n{meta['server']}, Python {meta['python']}; {s['blocks']} blocks × {s['ops']} ops per "
            f"contender, spread = {s['keys']} keys; {meta['seconds']} s. {meta['method']}. RT = round trips "
            "per op; srv µs = server µs per op, counted once. The µs and jobs/s beside each name are "
            "medians over all blocks; the ratio is the median of each block's own ratio, so with few "
            "blocks the two can disagree: the ratio is the paired one, the one to read."
        )
    lines.append(
        "\nresult: **pass** / **fail** when the whole 95 % CI is on one side of the target, **unsure** when "
        "it straddles it (more blocks narrow it), **report** for a pair with no target (shown for context)."
    )
    return "\n".join(lines)


def write(result: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "peers.md", out / "peers.json"
    md.write_text(table(result) + "\n")
    js.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return md, js


def main(args: Any, *, worker: type | None = None) -> int:
    """``cachelab peers``: run, print the table, write the files if ``--out``."""
    import sys

    base = Settings.quick() if args.quick else Settings()
    settings = Settings(
        blocks=args.blocks or base.blocks,
        ops=args.ops or base.ops,
        keys=args.keys or base.keys,
        sections=tuple(args.only) if args.only else SECTIONS,
    )
    if settings.blocks < 2 or settings.ops < 1 or settings.keys < 1:
        print("cachelab peers: --blocks must be >= 2, --ops and --keys >= 1", file=sys.stderr)
        return 2
    result = run(settings, progress=lambda line: print(line, file=sys.stderr, flush=True), worker=worker)
    print(table(result))
    if args.out:
        md, js = write(result, args.out)
        print(f"\nwrote {md} and {js}")
    return 0
