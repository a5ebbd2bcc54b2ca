"""Memory sizing: hit ratio and database load against ``maxmemory``, through the sample app.

The guide's Redis is "memory configured based on plan" with ``allkeys-lru``,
and nothing says how much memory the plan needs. This experiment measures it:

1. The app runs against a Redis we launched, with no memory limit. Its
   connection pool is warmed, the server flushed, and ``used_memory`` taken as
   the *overhead* (clients, scripts, allocator). Every initiative row is then
   cached with the app's own :class:`~cachelab.app.caching.AppCaches` (the
   same keys, policy and encoding a sweep through the API would produce, in a
   fraction of the time), and the growth is the *working set*: what "cache
   everything" costs.
2. For each eviction policy (``allkeys-lru``, ``allkeys-lfu``) the cache is
   refilled (:func:`restore_start`: LFU with counters that follow popularity,
   the state it converges to; LRU with every row equally recent, since its
   steady state is not a ranking), and ``maxmemory`` is set to
   ``overhead + f × working set`` for each fraction ``f`` from the largest down
   (``CONFIG SET`` on the running server, as a real cache shrinks). A closed
   loop of Zipf-skewed row reads and writes (``PATCH``: write-through plus
   invalidations) goes through the app, first to warm the size until it is
   steady (:func:`warmup_needed`: for LRU several of Che's characteristic
   times, so that nothing of its start is left), then measured. The hit ratio
   comes from the ``X-Cache`` headers, the database load from the app's own
   ``cachelab_db_queries_total``, the rows held from a SCAN between windows.
3. Each point is checked against a model (:mod:`cachelab.analysis.cache_model`):
   Che's approximation for an LRU holding the measured number of rows, from
   the same Zipf parameters (:func:`model_check`), and the most popular rows
   that fit for LFU. The points give the miss-ratio curve and, interpolated,
   the memory needed for a target hit ratio (:func:`memory_for_hit_ratio`).
4. On the same server, emptied: bytes per object by type (``MEMORY USAGE`` on
   keys the app created: KPIs, dashboards, sessions, rate-limit keys, queued
   jobs, rows).

:func:`eviction_loss` answers the rest of the sizing question: what an
evicting instance does to sessions and queued jobs (the guide's single
``allkeys-lru`` instance against a separate ``noeviction`` instance for state).

Why ``overhead + f × working set`` and not ``f × used_memory``: an empty
Redis with the app's connections already uses about a megabyte, which would
otherwise swallow the small fractions. Even so the fraction of *bytes* is not
what transfers to another deployment: the hit ratio follows the number of
*rows* held (``objects_fraction``), and what a byte budget holds depends on
the server's other memory — client buffers that grow under load, generation
keys from writes, hash tables still sized for every row. Here a quarter of
the working set's bytes holds about an eighth of the rows. To size another
cache, convert its budget to rows (budget less that other memory, divided by
bytes per row) and read the hit ratio for that many rows under its own
popularity (Che's approximation does it for a Zipf fit).

Two things a small, fast experiment must respect to measure LRU at all:
its characteristic time must be long against Redis's LRU clock, which ticks
once a second (with ``T_C`` well under a second Redis cannot tell recent from
old and evicts close to at random: several points below LRU), and the
warm-up must last several ``T_C`` (an LRU started from the popularity-ranked
state and measured after ~600 requests read 0.04 above its steady state).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import httpx
import numpy as np
import redis

from cachelab.analysis.cache_model import che_lru, top_hit_ratio, zipf_popularity
from cachelab.analysis.httpload import db_queries
from cachelab.analysis.loops import off_loop
from cachelab.analysis.output import for_profile
from cachelab.harness.app_client import alogin_per_tenant, cookie_header, tenant_ids
from cachelab.harness.app_server import AppServer
from cachelab.loadtest.histograms import LatencyHistogram
from cachelab.loadtest.zipf import ZipfSampler
from cachelab.servers.redis_server import RedisServer, RedisServerConfig

#: The app settings every experiment here runs with: limits far above the load (a 429 is not a miss).
APP_ENV = {
    "CACHELAB_RATE_LIMIT": "100000000/60s",
    "CACHELAB_LOGIN_RATE_LIMIT_IP": "100000000/60s",  # every login comes from this one address
    "CACHELAB_CACHE_MODE": "cache-aside",
    # A bounded pool keeps the clients' share of used_memory small and steady.
    "CACHELAB_REDIS_MAX_CONNECTIONS": "16",
}
POLICIES: tuple[str, ...] = ("allkeys-lru", "allkeys-lfu")


@dataclass(frozen=True)
class MemorySizes:
    """How big one run of the memory experiment is."""

    tenants: int
    initiatives_per_tenant: int
    fractions: tuple[float, ...]
    requests: int  # measured requests per point
    warmup: int  # at least this many requests per point before measuring (see warmup_needed)
    zipf_s: float = 1.0
    write_ratio: float = 0.05
    concurrency: int = 8
    sessions: int = 200  # eviction demo
    jobs: int = 200
    policies: tuple[str, ...] = POLICIES
    settle_tc: float = 3.0  # LRU: characteristic times of requests since the sweep began, before measuring
    window: int = 1000  # warm-up requests between two looks at the rows cached
    max_warmup: int = 40_000  # per size; a size that reaches it is reported as not steady


#: Quick: 4 500 rows at two sizes whose characteristic times are 1 200 and 5 300 requests, 2–10 s
#: at the app's ~600 requests/s: long enough for Redis's 1-second LRU clock, short enough to warm
#: LRU for 1.5 T_C in ~15 s. No size reaches a 90 % hit ratio: plan on full. Full: 10 000 rows up to
#: 75 % of the working set (T_C ≈ 38 000 requests, warmed 3 T_C: ~3 minutes), and 150 %, where every
#: row fits and nothing is evicted; at 10 % the server's own buffers take most of the budget.
SIZES = {
    "quick": MemorySizes(
        tenants=3,
        initiatives_per_tenant=1500,
        fractions=(0.25, 0.5),
        requests=1500,
        warmup=500,
        settle_tc=1.5,  # LRU meets Che's line by ~0.8 T_C (07_warmup.csv); full warms for 3
        window=500,
        max_warmup=20_000,
    ),
    "full": MemorySizes(
        tenants=5,
        initiatives_per_tenant=2000,
        fractions=(0.1, 0.25, 0.5, 0.75, 1.5),
        requests=6000,
        warmup=2000,
        settle_tc=3.0,
        window=2000,
        max_warmup=150_000,
        sessions=1000,
        jobs=1000,
    ),
}


def sizes(profile: str) -> MemorySizes:
    return for_profile(SIZES, profile)


def describe(sz: MemorySizes) -> dict[str, Any]:
    return asdict(sz)


# -- a closed-loop HTTP driver ---------------------------------------------------------------------
_TENANT_URL = re.compile(r"^/api/tenants/([^/?]+)/")


@dataclass(frozen=True)
class Call:
    """One request of a workload."""

    method: str
    url: str
    kind: str
    body: dict[str, Any] | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class LoadResult:
    """What a closed-loop run did: per-kind counts, statuses, X-Cache outcomes and latency."""

    elapsed: float = 0.0
    requests: int = 0
    errors: int = 0  # transport errors, 5xx, and 401/403 (a session lost mid-run)
    statuses: Counter[int] = field(default_factory=Counter)
    x_cache: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    latency_by_kind: dict[str, LatencyHistogram] = field(
        default_factory=lambda: defaultdict(LatencyHistogram)
    )

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else math.nan

    @property
    def hit_ratio(self) -> float:
        served = self.x_cache["HIT"] + self.x_cache["STALE"] + self.x_cache["MISS"]
        return (self.x_cache["HIT"] + self.x_cache["STALE"]) / served if served else math.nan

    def p(self, q: float, kind: str | None = None) -> float:
        """Latency percentile ``q`` in ms (all requests, or one kind)."""
        hist = self.latency if kind is None else self.latency_by_kind.get(kind)
        return hist.percentile_us(q) / 1000 if hist is not None and hist.count else math.nan


async def closed_loop(
    http: httpx.AsyncClient,
    calls: Sequence[Call],
    *,
    concurrency: int,
    max_seconds: float = 60.0,
    sessions: Mapping[str, Mapping[str, str]] | None = None,
) -> LoadResult:
    """Send ``calls`` in order from ``concurrency`` workers, each waiting for its last answer.

    Closed loop on purpose: these experiments compare the throughput each
    configuration sustains, and every worker always has a request ready. The
    run stops at the end of ``calls`` or after ``max_seconds``, whichever is
    first; an error is counted, never raised, so a bad point shows up as data.
    A call to ``/api/tenants/<t>/…`` carries ``sessions[t]`` (one session per tenant).
    """
    result = LoadResult()
    pending: Iterator[Call] = iter(calls)
    started = time.monotonic()
    deadline = started + max_seconds

    async def worker() -> None:
        for call in pending:
            if time.monotonic() > deadline:
                return
            t0 = time.perf_counter()
            status = 0
            try:
                headers = dict(call.headers)
                if sessions and (match := _TENANT_URL.match(call.url)):
                    headers.update(sessions.get(match.group(1), {}))
                response = await http.request(call.method, call.url, json=call.body, headers=headers)
                status = response.status_code
                if x_cache := response.headers.get("x-cache"):
                    result.x_cache[x_cache] += 1
            except httpx.HTTPError:
                pass
            us = (time.perf_counter() - t0) * 1e6
            result.requests += 1
            result.by_kind[call.kind] += 1
            result.statuses[status] += 1
            result.errors += status == 0 or status >= 500 or status in (401, 403)
            result.latency.record_us(us)
            result.latency_by_kind[call.kind].record_us(us)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed = time.monotonic() - started
    return result


# -- the workload ----------------------------------------------------------------------------------
def row_workload(
    rows: Sequence[tuple[str, int]], n: int, *, s: float, write_ratio: float, seed: int
) -> list[Call]:
    """``n`` calls: Zipf-skewed row reads, and a ``write_ratio`` share of writes to Zipf-chosen rows.

    ``rows`` must already be in popularity order (shuffle it once, seeded): the
    same seed gives the same calls, so two policies see the same requests.
    """
    sampler = ZipfSampler(len(rows), s=s, seed=seed)
    rng = random.Random(seed + 1)
    calls = []
    for _ in range(n):
        tenant, row_id = rows[sampler.sample()]
        url = f"/api/tenants/{tenant}/initiatives/{row_id}"
        if rng.random() < write_ratio:
            calls.append(Call("PATCH", url, "write", {"progress": rng.randint(0, 100)}))
        else:
            calls.append(Call("GET", url, "read"))
    return calls


async def _all_rows(database_url: str, tenants: Sequence[str], per_tenant: int) -> list[dict[str, Any]]:
    from cachelab.app.db import Database

    db = Database.from_url(database_url)
    try:
        rows: list[dict[str, Any]] = []
        for tenant in tenants:
            page = await db.list_initiatives(tenant, page=1, page_size=max(1, min(per_tenant, 1000)))
            pages = math.ceil(page["total"] / page["page_size"]) if page["total"] else 0
            for number in range(1, pages + 1):
                if number > 1:
                    page = await db.list_initiatives(tenant, page=number, page_size=page["page_size"])
                # The shape get_initiative returns (tenant_id second), so the bytes match a real fill.
                rows += [
                    {"id": r["id"], "tenant_id": tenant, **{k: v for k, v in r.items() if k != "id"}}
                    for r in page["items"]
                ]
        return rows
    finally:
        await db.close()


async def prefill_rows(redis_url: str, rows: Sequence[dict[str, Any]]) -> list[str]:
    """Cache every row exactly as the app would (its caches, keys, policy and encoding); their keys."""
    from cachelab.app.caching import AppCaches
    from cachelab.client import ClientOptions, ResilientRedis
    from cachelab.config import load_settings

    settings = load_settings(cache_mode="cache-aside", redis_url=redis_url)
    rr = ResilientRedis.from_url(redis_url, options=ClientOptions(command_timeout=10))
    try:
        cache = AppCaches.build(rr, settings).initiative
        assert cache is not None
        entries = {cache.key(r["tenant_id"], "row", r["id"]): r for r in rows}
        await cache.warm(entries)
        return list(entries)
    finally:
        await rr.aclose()


Snapshot = list[tuple[bytes, int, bytes]]  # (key, pttl, DUMP payload), most popular first


def snapshot_keys(client: redis.Redis, keys: Sequence[str]) -> Snapshot:
    """DUMP and PTTL of ``keys`` (in the given order), pipelined."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
        pipe.pttl(key)
    replies = pipe.execute()
    return [
        (key.encode(), int(replies[2 * i + 1]), replies[2 * i])
        for i, key in enumerate(keys)
        if replies[2 * i] is not None
    ]


def lfu_frequency(rank: int, n: int) -> int:
    """An LFU counter (0..255) that falls with popularity rank: ~55 for the head, 5 for the tail."""
    return round(5 + 50 * (1 - math.log(rank + 1) / math.log(max(n, 2))))


def restore_start(client: redis.Redis, snapshot: Snapshot, policy: str) -> None:
    """Restore ``snapshot`` (most popular first) as the state ``policy`` starts its sweep from.

    LFU starts from counters that fall with popularity rank (RESTORE ...
    ``FREQ``): a long run under stable popularity leaves the most requested
    rows with the highest counters, and that is the state LFU keeps, so a
    short run can start there. LRU starts with every row equally recent (no
    hint): its steady state is the rows requested *recently*, which no
    ranking gives, and the popularity-ranked state is LFU's — an LRU started
    there reads too high until it has forgotten it (about one characteristic
    time, :mod:`cachelab.analysis.cache_model`). The sweep warms LRU long
    enough to forget whatever it started from.
    """
    lfu = policy.endswith("-lfu")
    pipe = client.pipeline(transaction=False)
    for rank, (key, pttl, payload) in enumerate(snapshot):
        hint = {"frequency": lfu_frequency(rank, len(snapshot))} if lfu else {}
        pipe.restore(key, max(pttl, 0), payload, replace=True, **hint)
    pipe.execute()


# -- the miss-ratio curve ------------------------------------------------------------------------
def memory_for_hit_ratio(points: Sequence[tuple[float, float]], target: float) -> float | None:
    """The memory at which the hit ratio first reaches ``target``, interpolated between measured points.

    ``points`` are ``(memory, hit_ratio)`` pairs (memory > 0) in any order.
    Interpolation is linear in *log* memory: under Zipf-like popularity the
    hit ratio of a cache holding the k most popular of n items grows like
    ``ln k / ln n``, so a straight line in log memory follows the curve
    between two measured sizes far better than a straight line in memory.
    Returns None if no measured point reaches ``target`` (more memory than
    measured is needed), and the smallest measured memory if even that
    reaches it (an upper bound: less may do). Noise can make a curve dip; the
    first crossing going up in memory is the answer, the conservative one.
    """
    ordered = sorted((m, h) for m, h in points if m > 0 and not math.isnan(h))
    if not ordered:
        return None
    if ordered[0][1] >= target:
        return ordered[0][0]
    for (m0, h0), (m1, h1) in itertools.pairwise(ordered):
        if h0 < target <= h1:
            share = (target - h0) / (h1 - h0)
            return math.exp(math.log(m0) + share * (math.log(m1) - math.log(m0)))
    return None


@dataclass
class MemoryRun:
    """The result of :func:`run_memory_sizing`."""

    sizes: MemorySizes
    overhead_bytes: int
    working_set_bytes: int
    rows: int
    points: list[dict[str, Any]]
    objects: list[dict[str, Any]]  # bytes per object, by type
    census: str  # the ``cachelab inspect`` table of the same keyspace
    trajectory: list[dict[str, Any]] = field(default_factory=list)  # hit ratio per warm-up window

    def curve(self, policy: str) -> list[tuple[float, float]]:
        """``(fraction of the working set, hit ratio)`` for one policy, by fraction."""
        return sorted((p["fraction"], p["hit_ratio"]) for p in self.points if p["policy"] == policy)

    def memory_for(self, target: float, policy: str) -> dict[str, float | None]:
        """The cache memory (MB and fraction of the working set) for ``target`` hit ratio."""
        fraction = memory_for_hit_ratio(self.curve(policy), target)
        return {
            "fraction": fraction,
            "cache_mb": fraction * self.working_set_bytes / 2**20 if fraction is not None else None,
            "maxmemory_mb": (self.overhead_bytes + fraction * self.working_set_bytes) / 2**20
            if fraction is not None
            else None,
        }


# -- steady state, and the model it is checked against ----------------------------------------------
ROW_KEYS = "cl:*:initiative:row:*"


def count_rows(client: redis.Redis) -> int:
    """Initiative rows cached now (a SCAN; their generation keys are not rows).

    Small SCAN pages on purpose: a reply larger than the client's 16 KB
    static buffer is allocated, counted in ``used_memory``, and near
    ``maxmemory`` makes Redis evict rows — counting would change the count.
    """
    return sum(1 for k in client.scan_iter(match=ROW_KEYS, count=200) if not k.endswith(b":~gen"))


def warmup_needed(policy: str, sent: int, warmed: int, t_c: float, sz: MemorySizes) -> int:
    """Requests still to send at this size before measuring (0: measure now).

    ``sent`` counts the requests since the policy's sweep began, ``warmed``
    those since this size was set, ``t_c`` is Che's characteristic time (in
    requests) for the rows the cache holds now. Every size gets at least
    ``sz.warmup`` requests. An LRU cache is measured only once

    * ``sz.settle_tc`` characteristic times of requests have gone through it
      since the sweep began: an exact LRU's contents are then a function of
      the recent requests alone — once every row it holds has been requested
      again, which takes about one ``T_C``, nothing of its start is left; and
    * one more ``T_C`` at this size: shrinking ``maxmemory`` makes Redis evict
      in a burst from a few sampled keys, not exactly the least recently
      used, and the cache needs that long to settle.

    LFU starts from its converged state (:func:`restore_start`) and gets the
    per-size minimum. The caller stops at ``sz.max_warmup`` per size and then
    reports the point as not steady.
    """
    need = sz.warmup - warmed
    if policy.endswith("-lru") and math.isfinite(t_c):
        need = max(need, math.ceil(sz.settle_tc * t_c) - sent, math.ceil(t_c) - warmed)
    return max(0, need)


def hit_ratio_se(hit_ratio: float, served: int) -> float:
    """Binomial standard error of a hit ratio measured over ``served`` cached reads."""
    return math.sqrt(hit_ratio * (1 - hit_ratio) / served) if served else math.nan


#: How far a steady LRU point may sit from Che's approximation beyond its own sampling error
#: (3 binomial standard errors are added): Che's own error (< 0.01 against an exact LRU,
#: tests/test_cache_model.py) and Redis's approximations of LRU (5 sampled keys per eviction, a
#: 1-second LRU clock). Starting from LFU's state and measuring too soon read +0.04 at half the
#: working set, which this fails.
MODEL_ALLOWANCE = 0.015


def che_tolerance(point: dict[str, Any]) -> float:
    """The largest ``|measured − Che|`` accepted for ``point``: :data:`MODEL_ALLOWANCE` + 3 std. errors."""
    return MODEL_ALLOWANCE + 3 * point["hit_ratio_se"]


def model_check(points: Sequence[dict[str, Any]], policy: str = "allkeys-lru") -> list[dict[str, Any]]:
    """Each measured point of ``policy`` against Che's approximation for the rows it held."""
    return [
        {
            "fraction": p["fraction"],
            "objects_fraction": p["objects_fraction"],
            "measured": p["hit_ratio"],
            "che": p["che_hit_ratio"],
            "difference": round(p["hit_ratio"] - p["che_hit_ratio"], 4),
            "tolerance": round(che_tolerance(p), 4),
            "steady": p["steady"],
            "within": abs(p["hit_ratio"] - p["che_hit_ratio"]) <= che_tolerance(p),
        }
        for p in sorted(points, key=lambda p: p["fraction"])
        if p["policy"] == policy
    ]


@dataclass
class _Sweep:
    """One policy's sweep so far: requests sent since its cache was restored, and the warm-up trace."""

    policy: str
    workload: Callable[[int, int], list[Call]]
    popularity: np.ndarray
    sent: int = 0
    seeds: Iterator[int] = field(default_factory=lambda: itertools.count(1000))
    trajectory: list[dict[str, Any]] = field(default_factory=list)

    def record(self, fraction: float, phase: str, load: LoadResult, rows: float) -> None:
        self.sent += load.requests
        self.trajectory.append(
            {
                "policy": self.policy,
                "fraction": fraction,
                "phase": phase,
                "requests_since_start": self.sent,
                "hit_ratio": round(load.hit_ratio, 4),
                "rows_cached": rows,
                "che_hit_ratio": round(che_lru(self.popularity, rows).hit_ratio, 4),
            }
        )


def _merged(a: LoadResult, b: LoadResult) -> LoadResult:
    """Two consecutive runs as one (counts add; latency histograms merge)."""
    out = LoadResult(
        elapsed=a.elapsed + b.elapsed,
        requests=a.requests + b.requests,
        errors=a.errors + b.errors,
        statuses=a.statuses + b.statuses,
        x_cache=a.x_cache + b.x_cache,
        by_kind=a.by_kind + b.by_kind,
    )
    for part in (a, b):
        out.latency.merge(part.latency)
        for kind, hist in part.latency_by_kind.items():
            out.latency_by_kind[kind].merge(hist)
    return out


async def _measure_point(
    app: AppServer, admin: redis.Redis, sweep: _Sweep, fraction: float, calls: Sequence[Call], sz: MemorySizes
) -> dict[str, Any]:
    """Warm this size until steady (:func:`warmup_needed`), then measure ``calls``."""
    limits = httpx.Limits(max_connections=sz.concurrency, max_keepalive_connections=sz.concurrency)
    async with httpx.AsyncClient(base_url=app.base_url, limits=limits, timeout=10) as http:
        # Log in (the policy's sweep began with a flush): one session per tenant, read on every
        # request, so never the coldest key an evicting policy would pick.
        sessions = await alogin_per_tenant(http, app.accounts(), app.seed_password)
        warmed = 0
        while True:
            rows = count_rows(admin)
            t_c = che_lru(sweep.popularity, rows).characteristic_time
            need = warmup_needed(sweep.policy, sweep.sent, warmed, t_c, sz)
            todo = min(need, sz.max_warmup - warmed)
            steady = need == 0
            if todo <= 0:
                break
            calls_now = sweep.workload(min(todo, sz.window), next(sweep.seeds))
            window = await closed_loop(http, calls_now, concurrency=sz.concurrency, sessions=sessions)
            if not window.requests:
                steady = False
                break
            warmed += window.requests
            sweep.record(fraction, "warm-up", window, rows)
        sent_before = sweep.sent
        evicted0 = int(admin.info("stats")["evicted_keys"])
        queries0 = await _db_queries(http)
        # In windows, counting the rows between them: the rows the budget holds move with the
        # server's other memory (client buffers grow under load and are freed when idle).
        rows_seen = [count_rows(admin)]
        parts: list[LoadResult] = []
        for start in range(0, len(calls), sz.window):
            chunk = calls[start : start + sz.window]
            parts.append(await closed_loop(http, chunk, concurrency=sz.concurrency, sessions=sessions))
            rows_seen.append(count_rows(admin))
            sweep.record(fraction, "measured", parts[-1], rows_seen[-1])
        queries = await _db_queries(http) - queries0
    half = len(parts) // 2
    first, second = functools.reduce(_merged, parts[: max(half, 1)]), functools.reduce(_merged, parts[half:])
    load = functools.reduce(_merged, parts)
    rows_cached = sum(rows_seen) / len(rows_seen)
    model = che_lru(sweep.popularity, rows_cached)
    t_c = model.characteristic_time
    served = load.x_cache["HIT"] + load.x_cache["STALE"] + load.x_cache["MISS"]
    lru = sweep.policy.endswith("-lru")
    memory = admin.info("memory")
    return {
        "objects_fraction": round(rows_cached / len(sweep.popularity), 4),
        "rows_cached": round(rows_cached, 1),
        "requests": load.requests,
        "rps": round(load.rps, 1),
        "p99_ms": round(load.p(99), 2),
        "hit_ratio": round(load.hit_ratio, 4),
        "hit_ratio_se": round(hit_ratio_se(load.hit_ratio, served), 4),
        "miss_ratio": round(1 - load.hit_ratio, 4),
        "che_hit_ratio": round(model.hit_ratio, 4),
        "top_rows_hit_ratio": round(top_hit_ratio(sweep.popularity, rows_cached), 4),
        "drift": round(second.hit_ratio - first.hit_ratio, 4),
        "tc_requests": round(t_c) if math.isfinite(t_c) else None,
        "tc_seconds": round(model.characteristic_seconds(load.rps), 2) if math.isfinite(t_c) else None,
        "warmup_requests": warmed,
        "requests_before": sent_before,
        "warmed_tc": round(sent_before / t_c, 2) if lru and math.isfinite(t_c) else None,
        "steady": steady,  # the warm-up rule was met before measuring (not cut off at max_warmup)
        "db_queries": int(queries),
        "db_queries_per_request": round(queries / max(load.requests, 1), 3),
        "db_queries_per_s": round(queries / load.elapsed, 1) if load.elapsed else None,
        "reads": load.by_kind["read"],
        "writes": load.by_kind["write"],
        "errors": load.errors,
        "evicted_keys": int(admin.info("stats")["evicted_keys"]) - evicted0,
        "keys": int(admin.dbsize()),
        "clients": int(admin.info("clients")["connected_clients"]),
        "used_memory_mb": round(int(memory["used_memory"]) / 2**20, 3),
    }


async def _db_queries(http: httpx.AsyncClient, attempts: int = 5) -> float:
    """The app's SQL statement counter, retried: ``/metrics`` reads Redis too, and may fail under OOM."""
    for attempt in range(attempts):
        try:
            return await db_queries(http)
        except httpx.HTTPError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.05)
    return math.nan


async def _warm_only(app: AppServer, calls: Sequence[Call], sz: MemorySizes) -> None:
    async with httpx.AsyncClient(base_url=app.base_url, timeout=10) as http:
        sessions = await alogin_per_tenant(http, app.accounts(), app.seed_password)
        await closed_loop(http, calls, concurrency=sz.concurrency, sessions=sessions)
        # /metrics runs a Lua script of its own; loaded now, its memory is overhead, not taken
        # out of the data budget at the first point measured.
        await _db_queries(http)


def _shrink(admin: redis.Redis, maxmemory: int, attempts: int = 50) -> None:
    """``CONFIG SET maxmemory``, then wait until Redis has evicted down to it (it does so in steps)."""
    admin.config_set("maxmemory", maxmemory)
    for _ in range(attempts):
        if int(admin.info("memory")["used_memory"]) <= maxmemory:
            return
        time.sleep(0.01)


def run_memory_sizing(sz: MemorySizes, *, progress: bool = False) -> MemoryRun:
    """The hit-ratio / database-load curve against ``maxmemory`` for each policy (see the module doc).

    Blocking; uses ``asyncio.run``, so call it from a thread with no running
    loop (:func:`run` does that for notebooks).
    """
    # Sessions, the queue and the login limits on their own noeviction Redis (QUEUE_REDIS_URL), as in
    # docker-compose: the budget measured here is the cache's alone, and no session is evicted.
    with (
        RedisServer() as state_redis,
        AppServer(
            redis_config=RedisServerConfig(),
            env={**APP_ENV, "QUEUE_REDIS_URL": state_redis.url},
            tenants=sz.tenants,
            initiatives_per_tenant=sz.initiatives_per_tenant,
        ) as app,
    ):
        assert app.redis is not None and app.database_url is not None
        admin = app.redis.client(socket_timeout=10)
        state_admin = state_redis.client(socket_timeout=10)
        try:
            tenants = tenant_ids(app.accounts())
            rows = asyncio.run(_all_rows(app.database_url, tenants, sz.initiatives_per_tenant))
            random.Random(1).shuffle(rows)  # popularity order: which rows Zipf makes hot
            order = [(r["tenant_id"], r["id"]) for r in rows]
            popularity = zipf_popularity(len(order), sz.zipf_s)

            def workload(n: int, seed: int) -> list[Call]:
                return row_workload(order, n, s=sz.zipf_s, write_ratio=sz.write_ratio, seed=seed)

            # Overhead: the app's connection pool opened to its limit (concurrent requests whose writes
            # fan out into concurrent invalidations) and every script it runs loaded, then no data.
            # Connections opened later would take their buffers out of the data budget.
            busy = row_workload(order, 300, s=sz.zipf_s, write_ratio=0.5, seed=99)
            asyncio.run(_warm_only(app, busy, replace(sz, concurrency=2 * sz.concurrency)))
            admin.flushdb()  # the app's launched Redis, db 0
            time.sleep(0.1)
            overhead = int(admin.info("memory")["used_memory"])
            keys = asyncio.run(prefill_rows(app.redis.url, rows))
            working_set = int(admin.info("memory")["used_memory"]) - overhead
            snapshot = snapshot_keys(admin, keys)
            points: list[dict[str, Any]] = []
            trajectory: list[dict[str, Any]] = []
            for policy in sz.policies:
                admin.config_set("maxmemory", 0)
                admin.flushdb()  # the app's launched Redis, db 0
                admin.config_set("maxmemory-policy", policy)
                restore_start(admin, snapshot, policy)
                sweep = _Sweep(policy, workload, popularity)
                for n, fraction in enumerate(sorted(sz.fractions, reverse=True)):
                    maxmemory = int(overhead + fraction * working_set)
                    _shrink(admin, maxmemory)
                    point = {
                        "policy": policy,
                        "fraction": fraction,
                        "cache_mb": round(fraction * working_set / 2**20, 3),
                        "maxmemory_mb": round(maxmemory / 2**20, 3),
                        # The same measured requests for every policy; warm-up windows differ in length.
                        **asyncio.run(
                            _measure_point(app, admin, sweep, fraction, workload(sz.requests, 200 + n), sz)
                        ),
                    }
                    if progress:
                        print(
                            f"{policy} {fraction:>5.0%}: hit ratio {point['hit_ratio']:.3f}, Che "
                            f"{point['che_hit_ratio']:.3f}, rows {point['objects_fraction']:.0%}, warmed "
                            f"{point['warmup_requests']} ({point['requests_before']} since start, "
                            f"T_C {point['tc_requests']})",
                            flush=True,
                        )
                    points.append(point)
                trajectory += sweep.trajectory
            objects, census = _object_census(app, admin, state_admin, tenants, rows)
            return MemoryRun(sz, overhead, working_set, len(rows), points, objects, census, trajectory)
        finally:
            with contextlib.suppress(redis.RedisError):
                admin.config_set("maxmemory", 0)
            admin.close()
            state_admin.close()


def run(profile: str) -> MemoryRun:
    """The memory-sizing curves of ``profile`` (safe to call from a notebook cell)."""
    return off_loop(run_memory_sizing, sizes(profile))


# -- bytes per cached object, by type ---------------------------------------------------------
#: Key shapes the app creates, first match wins (see the patterns' key builders).
OBJECT_TYPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("generation / tag counter", re.compile(r":~(gen|tag:)")),
    ("queued job", re.compile(r"^cl:queue:\{[^}]*\}:job:")),
    ("queue bookkeeping", re.compile(r"^cl:queue:")),
    ("session", re.compile(r"^cl:\{[^}]*\}:session$")),
    ("session index (per user)", re.compile(r":user-sessions")),
    ("rate-limit key", re.compile(r":rl:")),
    ("KPI entry", re.compile(r":kpi:")),
    ("dashboard entry", re.compile(r":dashboard:")),
    ("initiative row", re.compile(r":initiative:row:")),
    ("list page", re.compile(r":initiatives:resp:")),
    ("tenant list entry", re.compile(r":tenants:")),
)


def object_type(key: str) -> str:
    """Which kind of object the app stores under ``key`` ("other" if none matches)."""
    for name, pattern in OBJECT_TYPES:
        if pattern.search(key):
            return name
    return "other"


def measure_object_bytes(client: redis.Redis, *, sample: int = 200) -> list[dict[str, Any]]:
    """``MEMORY USAGE`` by object type over a SCAN of the keyspace (at most ``sample`` keys per type).

    A queued job is charged its hash plus its share of the pending set; a
    session its hash plus its share of the user's session index: what one
    more of them costs.
    """
    keys: dict[str, list[str]] = defaultdict(list)
    counts: Counter[str] = Counter()
    for raw in client.scan_iter(count=1000):
        key = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        kind = object_type(key)
        counts[kind] += 1
        if len(keys[kind]) < sample:
            keys[kind].append(key)
    pipe = client.pipeline(transaction=False)
    flat = [(kind, key) for kind, ks in keys.items() for key in ks]
    for _, key in flat:
        pipe.memory_usage(key, samples=0)
    sizes: dict[str, list[int]] = defaultdict(list)
    by_key: dict[str, int] = {}
    for (kind, key), size in zip(flat, pipe.execute(), strict=True):
        if size is not None:
            sizes[kind].append(int(size))
            by_key[key] = int(size)
    shared = {
        "queued job": [k for k in keys.get("queue bookkeeping", []) if k.endswith(":pending")],
        "session": keys.get("session index (per user)", []),
    }
    rows = []
    for kind, values in sizes.items():
        per = sum(values) / len(values)
        extra = sum(by_key.get(k, 0) for k in shared.get(kind, []))
        per += extra / max(counts[kind], 1)
        rows.append(
            {
                "object": kind,
                "keys": counts[kind],
                "bytes_per_object": round(per),
                "total_kb": round(per * counts[kind] / 1024, 1),
            }
        )
    return sorted(rows, key=lambda r: -r["bytes_per_object"])


async def _create_app_objects(
    base_url: str, redis_url: str, tenants: Sequence[str], jobs: int, password: str
) -> None:
    """Drive the app so that every object type exists: KPIs, dashboards, sessions, limits, jobs."""
    from cachelab.client import ResilientRedis
    from cachelab.patterns.ratelimit import create_limiter

    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        admins: dict[str, dict[str, str]] = {}
        for tenant in tenants:
            for n in range(1, 21):  # the seed has 20 users per tenant
                body = {"email": f"user{n}@{tenant}.example", "password": password}
                login = await http.post("/api/login", json=body)
                login.raise_for_status()
                http.cookies.clear()  # one session per login: send it explicitly
                cookie = cookie_header(login.cookies["session"])
                admins.setdefault(tenant, cookie)  # user 1 is the tenant's admin
                (await http.get("/api/dashboard", headers=cookie)).raise_for_status()
            (await http.get(f"/api/tenants/{tenant}/kpis", headers=admins[tenant])).raise_for_status()
        for n in range(jobs):
            tenant = tenants[n % len(tenants)]
            (await http.post(f"/api/tenants/{tenant}/reports", headers=admins[tenant])).raise_for_status()
    # The curves run the app with a limit far above the load (a 429 must not pass for a miss), and
    # GCRA keys live only while quota is in use: so the per-IP keys are made with the app's own
    # limiter at its default limit, which is the same key and value shape.
    rr = ResilientRedis.from_url(redis_url)
    try:
        limiter = create_limiter(rr, "gcra", "1000/60s", prefix="cl:ip")
        for n in range(50):
            await limiter.check(f"198.51.100.{n}")
    finally:
        await rr.aclose()


def _object_census(
    app: AppServer,
    admin: redis.Redis,
    state_admin: redis.Redis,
    tenants: Sequence[str],
    rows: Sequence[dict[str, Any]],
) -> tuple[list[dict[str, Any]], str]:
    """Bytes per object by type on keys the app created, and the ``cachelab inspect`` tables.

    On the same servers (the cache's, and the sessions' and queue's), emptied
    and unlimited again: the app is driven so every type exists — KPIs and
    dashboards (cached reads), sessions (logins), queued report jobs (no
    worker runs, so they stay queued) — and 100 rows are cached; rate-limit
    keys come from the app's limiter.
    """
    from cachelab.census import take_census

    assert app.redis is not None
    admin.config_set("maxmemory", 0)
    admin.config_set("maxmemory-policy", "noeviction")
    for client in (admin, state_admin):
        client.flushdb()  # the launched Redis servers, db 0
    password = app.seed_password
    asyncio.run(_create_app_objects(app.base_url, app.redis.url, tenants, jobs=50, password=password))
    asyncio.run(prefill_rows(app.redis.url, rows[:100]))
    objects = {o["object"]: o for o in measure_object_bytes(state_admin)}
    objects.update({o["object"]: o for o in measure_object_bytes(admin)})
    tables = "\n\n".join(
        f"{title}\n{take_census(client).table()}"
        for title, client in (("cache Redis", admin), ("sessions and queue Redis", state_admin))
    )
    return sorted(objects.values(), key=lambda r: -r["bytes_per_object"]), tables


# -- sessions and jobs on an evicting instance -------------------------------------------------
async def _eviction_case(
    cache_url: str, state_url: str, sessions: int, jobs: int, fill_bytes: int
) -> dict[str, Any]:
    from cachelab.client import ClientOptions, ResilientRedis
    from cachelab.patterns.cache import Cache, CachePolicy
    from cachelab.patterns.queue import EvictingRedisError, JobQueue
    from cachelab.patterns.sessions import SessionStore

    options = ClientOptions(command_timeout=10)
    cache_rr = ResilientRedis.from_url(cache_url, options=options)
    state_rr = cache_rr if state_url == cache_url else ResilientRedis.from_url(state_url, options=options)
    try:
        guard = JobQueue(state_rr, "reports")  # the default: refuses an evicting Redis
        try:
            await guard.check_eviction_policy()
            refused = False
        except EvictingRedisError:
            refused = True
        queue = JobQueue(state_rr, "reports", allow_evicting=True)  # what the app runs with
        store = SessionStore(state_rr, idle_timeout=1800, absolute_lifetime=12 * 3600)
        session_ids = [
            (await store.create(str(n % 50), {"tenant_id": "acme-01", "role": "member"})).id
            for n in range(sessions)
        ]
        job_ids = [await queue.enqueue({"type": "report", "n": n}) for n in range(jobs)]

        cache = Cache(cache_rr, "kpi", CachePolicy(ttl=600))
        value = {"padding": "x" * 900, "n": 0}
        written = 0
        n = 0
        while written < fill_bytes:
            batch = {cache.key(f"t{n % 97}", "entry", n + i): {**value, "n": n + i} for i in range(200)}
            await cache.warm(batch)
            n += 200
            written += 200 * 1000

        client = state_rr.client
        pipe = client.pipeline(transaction=False)
        for sid in session_ids:
            pipe.exists(store.session_key(sid))
        for job_id in job_ids:
            pipe.exists(queue.job_key(job_id))
            pipe.zscore(queue.pending_key, job_id)
        replies = await pipe.execute()
        sessions_alive = sum(int(r) for r in replies[: len(session_ids)])
        job_replies = replies[len(session_ids) :]
        jobs_alive = sum(
            1 for i in range(0, len(job_replies), 2) if job_replies[i] and job_replies[i + 1] is not None
        )
        cache_info = await cache_rr.client.info("stats")
        return {
            "queue_guard_refused": refused,
            "sessions": sessions,
            "sessions_lost": sessions - sessions_alive,
            "jobs": jobs,
            "jobs_lost": jobs - jobs_alive,
            "cache_entries_written": n,
            "evicted_keys": int(cache_info["evicted_keys"]),
        }
    finally:
        await cache_rr.aclose()
        if state_rr is not cache_rr:
            await state_rr.aclose()


def _set_budget(server: RedisServer, budget_bytes: int) -> None:
    """``maxmemory`` = what the empty server uses now + ``budget_bytes`` for data."""
    client = server.client()
    try:
        client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + budget_bytes)
    finally:
        client.close()


def _eviction_loss(sessions: int, jobs: int, budget_bytes: int) -> list[dict[str, Any]]:
    lru = RedisServerConfig(maxmemory_policy="allkeys-lru")
    results = []
    with RedisServer(lru) as single:
        _set_budget(single, budget_bytes)
        results.append(
            {
                "setup": "single allkeys-lru instance (the guide's)",
                **asyncio.run(_eviction_case(single.url, single.url, sessions, jobs, 4 * budget_bytes)),
            }
        )
    with RedisServer(lru) as cache, RedisServer(RedisServerConfig(maxmemory_policy="noeviction")) as state:
        _set_budget(cache, budget_bytes)
        results.append(
            {
                "setup": "cache allkeys-lru + separate noeviction for sessions and queue",
                **asyncio.run(_eviction_case(cache.url, state.url, sessions, jobs, 4 * budget_bytes)),
            }
        )
    return results


def eviction_loss(profile: str, budget_bytes: int = 1 << 20) -> list[dict[str, Any]]:
    """Fill an ``allkeys-lru`` cache past ``maxmemory`` while sessions and queued jobs exist; count losses.

    Two setups: the guide's single ``allkeys-lru`` instance holding cache,
    sessions and queue; and the cache on that evicting instance with sessions
    and queue on a separate ``noeviction`` one. The cache is written four
    times its budget (``budget_bytes`` above the empty server), as a busy day
    does; the sessions and jobs are created first and not touched again (idle
    users, a backlog), which is what LRU evicts first.
    """
    sz = sizes(profile)
    return off_loop(_eviction_loss, sz.sessions, sz.jobs, budget_bytes)


# -- plots and summary -------------------------------------------------------------------------
POLICY_STYLE = {"allkeys-lru": ("tab:blue", "o"), "allkeys-lfu": ("tab:orange", "s")}


def plot_curves(result: MemoryRun, target: float = 0.9) -> Any:
    """Miss ratio and database load against the cache's memory, per eviction policy."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5))
    left, right = fig.subplots(1, 2)
    ws_mb = result.working_set_bytes / 2**20
    for k, policy in enumerate(dict.fromkeys(p["policy"] for p in result.points)):
        pts = sorted((p for p in result.points if p["policy"] == policy), key=lambda p: p["fraction"])
        color, marker = POLICY_STYLE.get(policy, ("tab:grey", "^"))
        xs = [p["cache_mb"] for p in pts]
        left.plot(xs, [p["miss_ratio"] for p in pts], marker=marker, color=color, label=policy)
        if policy.endswith("-lru"):
            left.plot(
                xs,
                [1 - p["che_hit_ratio"] for p in pts],
                ls="--",
                marker="x",
                color=color,
                lw=1,
                label=f"{policy}: Che's approximation for the rows held",
            )
        right.plot(xs, [p["db_queries_per_s"] for p in pts], marker=marker, color=color, label=policy)
        need = result.memory_for(target, policy)["cache_mb"]
        if need is not None:
            left.axvline(need, color=color, ls=":", lw=1)
            left.annotate(
                f"{policy}: {target:.0%} hits at {need:.2f} MB",
                (need, 1 - target),
                fontsize=8,
                color=color,
                xytext=(6, 10 + 14 * k),
                textcoords="offset points",
            )
    left.axhline(1 - target, color="grey", lw=0.8, ls="--")
    for ax in (left, right):
        ax.set_xlabel(f"memory for data above the empty server (MB; working set {ws_mb:.2f} MB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_ylabel("miss ratio (X-Cache MISS / cached reads)")
    left.set_title("Miss-ratio curve")
    left.set_ylim(bottom=0)
    right.set_ylabel("database statements per second")
    right.set_title("Database load (the app's own counter)")
    right.set_ylim(bottom=0)
    fig.suptitle(
        f"Zipf s={result.sizes.zipf_s} reads of {result.rows} rows, "
        f"{result.sizes.write_ratio:.0%} writes, through the app"
    )
    fig.tight_layout()
    return fig


def plot_model(result: MemoryRun) -> Any:
    """Measured hit ratios against the models by rows held, and LRU's warm-up converging to Che's.

    Left: hit ratio against the share of *rows* held (what the models take),
    Che's approximation for LRU and the most popular rows that fit (a perfect
    LFU) as curves, every measured point with ±2 standard errors. Right: the
    hit ratio of each window of LRU's sweep against the requests sent since it
    started, beside Che's prediction for the rows held in that window.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5))
    left, right = fig.subplots(1, 2)
    popularity = zipf_popularity(result.rows, result.sizes.zipf_s)
    top = max((p["objects_fraction"] for p in result.points), default=0.5)
    grid = np.linspace(0.002, min(1.0, 1.2 * top + 0.05), 80)
    left.plot(
        grid,
        [che_lru(popularity, g * result.rows).hit_ratio for g in grid],
        color="tab:blue",
        lw=1,
        ls="--",
        label="Che's approximation (LRU)",
    )
    left.plot(
        grid,
        [top_hit_ratio(popularity, g * result.rows) for g in grid],
        color="tab:orange",
        lw=1,
        ls=":",
        label="most popular rows that fit (perfect LFU)",
    )
    for policy in dict.fromkeys(p["policy"] for p in result.points):
        pts = [p for p in result.points if p["policy"] == policy]
        color, marker = POLICY_STYLE.get(policy, ("tab:grey", "^"))
        left.errorbar(
            [p["objects_fraction"] for p in pts],
            [p["hit_ratio"] for p in pts],
            yerr=[2 * p["hit_ratio_se"] for p in pts],
            fmt=marker,
            color=color,
            capsize=3,
            label=f"{policy}, measured (±2 SE)",
        )
        for p in pts:
            left.annotate(
                f"{p['fraction']:.0%} of bytes",
                (p["objects_fraction"], p["hit_ratio"]),
                fontsize=7,
                color=color,
                xytext=(5, -11),
                textcoords="offset points",
            )
    left.set_xlabel(f"share of the {result.rows} rows held (mean over the measurement)")
    left.set_ylabel("hit ratio")
    left.set_title("Measured against the models, by rows held")
    left.grid(alpha=0.3)
    left.legend(fontsize=7, loc="lower right")
    lru = [t for t in result.trajectory if t["policy"].endswith("-lru")]
    for fraction in dict.fromkeys(t["fraction"] for t in lru):
        steps = [t for t in lru if t["fraction"] == fraction]
        xs = [t["requests_since_start"] for t in steps]
        right.plot(xs, [t["hit_ratio"] for t in steps], marker=".", lw=0.8, label=f"{fraction:.0%}: windows")
        right.plot(xs, [t["che_hit_ratio"] for t in steps], color="black", lw=0.8, ls="--")
        measured = [t["requests_since_start"] for t in steps if t["phase"] == "measured"]
        if measured:
            right.axvspan(min(measured) - result.sizes.window, max(measured), color="grey", alpha=0.12)
    right.plot([], [], color="black", lw=0.8, ls="--", label="Che, for the rows held then")
    right.set_xlabel("requests since the LRU sweep started (shaded: measured)")
    right.set_ylabel(f"hit ratio per window of {result.sizes.window} requests")
    right.set_title("allkeys-lru warming up from equally recent rows")
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_objects(frame: Any) -> Any:
    """Bytes per object, by the kind of object the app stores."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    frame = frame.sort_values("bytes_per_object")
    bars = ax.barh(frame["object"], frame["bytes_per_object"], color="tab:purple")
    ax.bar_label(bars, labels=[f"{v:,.0f} B" for v in frame["bytes_per_object"]], fontsize=8)
    ax.set_xlabel("bytes per object (MEMORY USAGE, with its share of shared keys)")
    ax.set_title("What one more of each object costs in Redis")
    ax.margins(x=0.2)
    fig.tight_layout()
    return fig


def plot_eviction(frame: Any) -> Any:
    """Sessions and queued jobs lost to eviction, per setup."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.8))
    ax = fig.subplots()
    x = list(range(len(frame)))
    for offset, column, color in ((-0.2, "sessions_lost", "tab:red"), (0.2, "jobs_lost", "tab:brown")):
        bars = ax.bar(
            [i + offset for i in x], frame[column], 0.4, color=color, label=column.replace("_", " ")
        )
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks(x, [s.replace(" + ", "\n+ ") for s in frame["setup"]], fontsize=8)
    ax.set_ylabel(f"lost (of {int(frame['sessions'].iloc[0])} sessions / {int(frame['jobs'].iloc[0])} jobs)")
    ax.set_title("Cache pressure on an evicting Redis: what happens to state kept beside the cache")
    ax.legend(fontsize=8)
    ax.margins(y=0.2)
    fig.tight_layout()
    return fig


def headlines(result: MemoryRun, eviction: Sequence[dict[str, Any]], target: float = 0.9) -> dict[str, float]:
    out: dict[str, float] = {"working set MB": round(result.working_set_bytes / 2**20, 3)}
    for p in result.points:
        out[f"hit ratio, {p['policy']}, {p['fraction']:.0%} of working set"] = p["hit_ratio"]
    for p in result.points:
        if p["policy"] == "allkeys-lru":
            out[f"Che's approximation, allkeys-lru, {p['fraction']:.0%} of working set"] = p["che_hit_ratio"]
            out[f"share of rows held, {p['fraction']:.0%} of working set"] = p["objects_fraction"]
    for policy in result.sizes.policies:
        need = result.memory_for(target, policy)["fraction"]
        if need is not None:
            out[f"fraction of working set for {target:.0%} hits, {policy}"] = round(need, 3)
    for e in eviction:
        tag = "single instance" if e["setup"].startswith("single") else "separate noeviction"
        out[f"sessions lost, {tag}"] = e["sessions_lost"]
        out[f"jobs lost, {tag}"] = e["jobs_lost"]
    return out


def capacity_rows(
    result: MemoryRun, eviction: Sequence[dict[str, Any]], target: float = 0.9
) -> list[dict[str, Any]]:
    """The report's memory rows: memory for a target hit ratio, bytes per object, eviction losses."""
    ws_mb = result.working_set_bytes / 2**20
    rows: list[dict[str, Any]] = [
        {
            "row": "Working set: every initiative row cached",
            "value": round(ws_mb, 2),
            "unit": "MB",
            "note": f"{result.rows} rows, {result.working_set_bytes / result.rows:.0f} B each with overhead",
        }
    ]
    for policy in result.sizes.policies:
        need = result.memory_for(target, policy)
        measured = ", ".join(
            f"{p['fraction']:.0%} ({p['objects_fraction']:.0%} of rows)→{p['hit_ratio']:.2f}"
            for p in sorted(result.points, key=lambda p: p["fraction"])
            if p["policy"] == policy
        )
        rows.append(
            {
                "row": f"Cache memory for a {target:.0%} hit ratio, {policy}",
                "value": round(need["cache_mb"], 2) if need["cache_mb"] is not None else None,
                "unit": "MB",
                "note": (
                    f"{need['fraction']:.0%} of the working set; "
                    if need["fraction"] is not None
                    else "not reached at the largest size measured; "
                )
                + f"hit ratio by share of the working set's bytes: {measured} (Zipf s={result.sizes.zipf_s})",
            }
        )
    for o in result.objects:
        if o["object"] in ("KPI entry", "dashboard entry", "session", "rate-limit key", "queued job"):
            rows.append(
                {
                    "row": f"Bytes per {o['object']}",
                    "value": o["bytes_per_object"],
                    "unit": "B",
                    "note": f"MEMORY USAGE over {o['keys']} keys the app created",
                }
            )
    single = next((e for e in eviction if e["setup"].startswith("single")), None)
    split = next((e for e in eviction if not e["setup"].startswith("single")), None)
    if single and split:
        rows.append(
            {
                "row": "Sessions + queued jobs lost when the cache overflows, one allkeys-lru instance",
                "value": single["sessions_lost"] + single["jobs_lost"],
                "unit": "objects",
                "note": f"of {single['sessions']} sessions + {single['jobs']} jobs; with a separate "
                f"noeviction instance for them: {split['sessions_lost'] + split['jobs_lost']} lost",
            }
        )
    return rows


def _model_findings(result: MemoryRun) -> list[str]:
    lines = []
    check = model_check(result.points)
    if check:
        diffs = "; ".join(
            f"{c['difference']:+.3f} at {c['fraction']:.0%} (tolerance ±{c['tolerance']:.3f})" for c in check
        )
        outside = [c for c in check if not c["within"]]
        verdict = (
            "every point within its tolerance"
            if not outside
            else f"{len(outside)} of {len(check)} points outside their tolerance"
        )
        evicting = [p for p in result.points if p["policy"] == "allkeys-lru" and p["warmed_tc"] is not None]
        first = max(evicting, key=lambda p: p["fraction"], default=None)
        warmed = (
            f" The sweep started from equally recent rows and measured its largest evicting size after "
            f"{first['requests_before']} requests, {first['warmed_tc']} characteristic times "
            f"(T_C = {first['tc_requests']} requests, {first['tc_seconds']} s)."
            if first
            else ""
        )
        lines.append(
            f"- **allkeys-lru against Che's approximation** for the rows it held (Zipf "
            f"s={result.sizes.zipf_s} over {result.rows} rows), measured − Che: {diffs}: {verdict}.{warmed}"
        )
    lfu = sorted((p for p in result.points if p["policy"] == "allkeys-lfu"), key=lambda p: p["fraction"])
    if lfu:
        lines.append(
            "- **allkeys-lfu against the most popular rows that fit** (a perfect LFU): "
            + "; ".join(
                f"{p['hit_ratio']:.3f} vs {p['top_rows_hit_ratio']:.3f} at {p['fraction']:.0%}" for p in lfu
            )
            + ". LFU holds the rows requested most often, LRU those requested last: at the same rows held, "
            "LFU hits more under a popularity that does not change."
        )
    unsteady = [p for p in result.points if not p["steady"]]
    if unsteady:
        lines.append(
            "- **Not steady**: "
            + ", ".join(f"{p['policy']} at {p['fraction']:.0%}" for p in unsteady)
            + " reached the warm-up cap before its rule was met; read those points as bounds."
        )
    blurred = [
        p
        for p in result.points
        if p["policy"].endswith("-lru") and p["tc_seconds"] is not None and p["tc_seconds"] < 1
    ]
    if blurred:
        lines.append(
            "- **LRU clock**: at "
            + ", ".join(f"{p['fraction']:.0%}" for p in blurred)
            + " the characteristic time was under a second; Redis's LRU clock ticks once a second, so "
            "there it evicts closer to at random and reads below Che's approximation."
        )
    return lines


def findings(result: MemoryRun, eviction: Sequence[dict[str, Any]], target: float = 0.9) -> str:
    """What this run measured, in sentences (Markdown), so the notebook's text quotes real numbers."""
    ws = result.working_set_bytes
    lines = [
        f"- **Working set.** Caching all {result.rows} rows took {ws / 2**20:.2f} MB "
        f"({ws / result.rows:.0f} B per row, key and hash-table overhead included) above the "
        f"{result.overhead_bytes / 2**20:.2f} MB an empty server with the app connected uses.",
    ]
    for policy in result.sizes.policies:
        pts = sorted((p for p in result.points if p["policy"] == policy), key=lambda p: p["fraction"])
        if not pts:
            continue
        curve = ", ".join(
            f"{p['hit_ratio']:.2f} at {p['fraction']:.0%} of the bytes "
            f"({p['objects_fraction']:.0%} of the rows)"
            for p in pts
        )
        need = result.memory_for(target, policy)
        reach = (
            f"a {target:.0%} hit ratio needs about {need['fraction']:.0%} of the working set "
            f"({need['cache_mb']:.2f} MB of data, maxmemory ≈ {need['maxmemory_mb']:.2f} MB here)"
            if need["fraction"] is not None
            else f"no measured size reached a {target:.0%} hit ratio"
        )
        lines.append(f"- **{policy}**: hit ratio {curve}; {reach}.")
        small, big = pts[0], pts[-1]
        lines.append(
            f"  Database load went from {big['db_queries_per_s']:.0f} statements/s at {big['fraction']:.0%} "
            f"to {small['db_queries_per_s']:.0f}/s at {small['fraction']:.0%} "
            f"({small['db_queries_per_request']:.2f} per request)."
        )
    lines += _model_findings(result)
    failed = [p for p in result.points if p["errors"]]
    if failed:
        worst = max(failed, key=lambda p: p["errors"])
        lines.append(
            f"- **Errors at the smallest sizes**: {worst['errors']} of {worst['requests']} requests "
            f"failed at {worst['fraction']:.0%} ({worst['policy']}). When connection buffers alone approach "
            "maxmemory, Redis refuses writing scripts with OOM (here the rate limiter's): 5xx follow."
        )
    wanted = ("KPI entry", "dashboard entry", "session", "rate-limit key", "queued job", "initiative row")
    sized = [f"{o['object']} {o['bytes_per_object']:,} B" for o in result.objects if o["object"] in wanted]
    if sized:
        lines.append("- **Bytes per object**: " + "; ".join(sized) + ".")
    for e in eviction:
        guard = (
            " The queue's own guard refused this Redis (allkeys-*) until told to accept it."
            if e["queue_guard_refused"]
            else ""
        )
        lines.append(
            f"- **{e['setup']}**: {e['sessions_lost']} of {e['sessions']} sessions and {e['jobs_lost']} of "
            f"{e['jobs']} queued jobs lost after {e['cache_entries_written']} cache entries "
            f"({e['evicted_keys']} keys evicted).{guard}"
        )
    return "\n".join(lines)
