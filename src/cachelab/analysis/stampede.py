"""Notebook 05: cache stampedes — how many times the expensive loader runs, and what readers wait.

Two situations, each under five strategies (:data:`STRATEGIES`):

* **a cold key** — ``processes × tasks`` callers ask for one missing key at
  the same instant (:func:`cachelab.experiments.stampede.run_stampede`); the
  loader counts its calls in Redis, so the count is exact across processes;
* **a hot key expiring under load** — reader processes (think: app
  instances) loop over one key with a short TTL for a while; the key is
  filled just before the readers start, so every load during the window is a
  refresh. Each load appends its wall-clock time to a Redis list; loads
  starting within one loader call of each other refill the same expiry, which
  gives *loader calls per expiry* (1 is perfect; ``processes × tasks`` is a
  full stampede), and loads per TTL says how often the value was recomputed
  (about 1 is ideal; more means refreshes earlier than needed).

The loader sleeps ``loader_delay`` to stand for an expensive query: the
window in which other readers can pile in.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from cachelab.analysis.loops import off_loop
from cachelab.analysis.output import for_profile, percentiles
from cachelab.client import ClientOptions, ResilientRedis
from cachelab.experiments.stampede import run_stampede
from cachelab.patterns.cache import Cache, CachePolicy
from cachelab.servers.redis_server import RedisServer

#: Strategy → CachePolicy options. Single-flight is on by default in :class:`CachePolicy`, so every
#: other strategy turns it off to be measured on its own.
STRATEGIES: dict[str, dict[str, Any]] = {
    "none": {"single_flight": False},
    "single-flight": {"single_flight": True},
    "lock": {"single_flight": False, "lock": True},
    "xfetch": {"single_flight": False, "xfetch_beta": 1.0},
    "lock+xfetch": {"single_flight": False, "lock": True, "xfetch_beta": 1.0},
}
LOG_PREFIX = "cl:stampede:expiry-log:"


@dataclass(frozen=True)
class StampedeSizes:
    cold_processes: int
    cold_tasks: int  # per process
    cold_loader_delay: float
    processes: int  # sustained readers
    tasks: int  # readers per process
    think: float  # seconds between one reader's fetches
    ttl: float
    seconds: float  # per strategy
    loader_delay: float
    start_delay: float  # spawned interpreters need this long to import
    gap: float = 0.3


SIZES = {
    "quick": StampedeSizes(
        cold_processes=2, cold_tasks=100, cold_loader_delay=0.1,
        processes=2, tasks=20, think=0.01, ttl=0.6, seconds=2.0, loader_delay=0.05, start_delay=2.0,
    ),
    "full": StampedeSizes(
        cold_processes=4, cold_tasks=50, cold_loader_delay=0.2,
        processes=3, tasks=20, think=0.02, ttl=1.0, seconds=12, loader_delay=0.1, start_delay=6.0,
    ),
}


def sizes(profile: str) -> StampedeSizes:
    return for_profile(SIZES, profile)


def policy(strategy: str, ttl: float) -> CachePolicy:
    return CachePolicy(ttl=ttl, jitter=0.0, **STRATEGIES[strategy])


# -- a cold key ------------------------------------------------------------------
def run_cold(url: str, sz: StampedeSizes) -> list[dict[str, Any]]:
    rows = []
    for name in STRATEGIES:
        result = off_loop(
            run_stampede,
            url,
            policy(name, 60),
            processes=sz.cold_processes,
            tasks_per_process=sz.cold_tasks,
            loader_delay=sz.cold_loader_delay,
            scope=f"cold-{name}",
            start_delay=sz.start_delay if sz.cold_processes > 1 else None,
        )
        lat = percentiles(result.latencies_ms, (50, 99))
        rows.append(
            {
                "strategy": name,
                "callers": result.callers,
                "loader_calls": result.loader_calls,
                "p50_ms": lat["p50"],
                "p99_ms": lat["p99"],
                "max_ms": max(result.latencies_ms, default=float("nan")),
                **{f"status_{k}": v for k, v in sorted(result.statuses.items())},
            }
        )
    return rows


# -- a hot key expiring under load ---------------------------------------------
@dataclass(frozen=True)
class Phase:
    strategy: str
    start_at: float  # wall clock (time.time): processes share it
    end_at: float


def _phases(sz: StampedeSizes, first: float) -> list[Phase]:
    step = sz.seconds + sz.gap
    return [Phase(name, first + i * step, first + i * step + sz.seconds) for i, name in enumerate(STRATEGIES)]


def _loader(rr: ResilientRedis, strategy: str, delay: float) -> Any:
    async def load() -> dict[str, Any]:
        await rr.client.rpush(LOG_PREFIX + strategy, repr(time.time()))
        await asyncio.sleep(delay)
        return {"value": 42}

    return load


async def _readers(url: str, phases: Sequence[Phase], sz: StampedeSizes) -> list[tuple[str, dict, list]]:
    options = ClientOptions(command_timeout=5.0, max_connections=sz.tasks + 16)
    rr = ResilientRedis.from_url(url, options=options)
    out = []
    try:
        await rr.client.ping()
        for phase in phases:
            cache = Cache(rr, "expiry", policy(phase.strategy, sz.ttl))  # its own single-flight
            key = cache.key(phase.strategy, "hot")
            loader = _loader(rr, phase.strategy, sz.loader_delay)
            statuses: dict[str, int] = {}
            latencies: list[float] = []

            async def reader(cache: Cache = cache, key: str = key, loader: Any = loader,
                             statuses: dict[str, int] = statuses, latencies: list[float] = latencies,
                             end_at: float = phase.end_at) -> None:
                while time.time() < end_at:
                    began = time.perf_counter()
                    result = await cache.fetch(key, loader)
                    latencies.append((time.perf_counter() - began) * 1000)
                    statuses[result.status.value] = statuses.get(result.status.value, 0) + 1
                    await asyncio.sleep(sz.think)

            await asyncio.sleep(max(0.0, phase.start_at - time.time()))
            await asyncio.gather(*(reader() for _ in range(sz.tasks)))
            out.append((phase.strategy, statuses, latencies))
    finally:
        await rr.aclose()
    return out


def _reader_process(url: str, phases: Sequence[Phase], sz: StampedeSizes, queue: Any) -> None:
    queue.put(asyncio.run(_readers(url, phases, sz)))


async def _prefill(url: str, phase: Phase, sz: StampedeSizes) -> None:
    """Fill the phase's key just before its readers start, through the same policy and loader."""
    rr = ResilientRedis.from_url(url, options=ClientOptions(command_timeout=5.0))
    try:
        cache = Cache(rr, "expiry", policy(phase.strategy, sz.ttl))
        await cache.fetch(cache.key(phase.strategy, "hot"), _loader(rr, phase.strategy, sz.loader_delay))
    finally:
        await rr.aclose()


def expiry_groups(load_times: Sequence[float], gap: float) -> list[list[float]]:
    """Loads that start within ``gap`` (one loader call) of the previous one refill the same expiry.

    A stampede is loads running at the same time; refreshes that follow one another
    (XFetch refreshing early, again and again) are separate refills, however close.
    """
    groups: list[list[float]] = []
    for t in sorted(load_times):
        if groups and t - groups[-1][-1] < gap:
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups


def _run_expiry_blocking(url: str, sz: StampedeSizes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    admin = redis.Redis.from_url(url)
    for name in STRATEGIES:
        admin.delete(LOG_PREFIX + name)
    phases = _phases(sz, time.time() + sz.start_delay)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_reader_process, args=(url, phases, sz, queue)) for _ in range(sz.processes)]
    for proc in procs:
        proc.start()
    try:
        for phase in phases:
            time.sleep(max(0.0, phase.start_at - 0.25 - time.time()))
            asyncio.run(_prefill(url, phase, sz))
        timeout = phases[-1].end_at - time.time() + 60
        parts = [queue.get(timeout=max(timeout, 10)) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)

    rows, loads = [], []
    for phase in phases:
        statuses: dict[str, int] = {}
        latencies: list[float] = []
        for part in parts:
            for strategy, st, lat in part:
                if strategy == phase.strategy:
                    latencies += lat
                    for k, v in st.items():
                        statuses[k] = statuses.get(k, 0) + v
        times = [float(t) for t in admin.lrange(LOG_PREFIX + phase.strategy, 0, -1)]
        during = [t for t in times if phase.start_at <= t <= phase.end_at]
        groups = expiry_groups(during, sz.loader_delay)
        loads += [{"strategy": phase.strategy, "t": t - phase.start_at} for t in during]
        sizes_ = [len(g) for g in groups]
        lat = percentiles(latencies, (50, 99, 99.9))
        reads = sum(statuses.values())
        rows.append(
            {
                "strategy": phase.strategy,
                "reads": reads,
                "loader_calls": len(during),
                "expiries": len(groups),
                "loader_calls_per_expiry": len(during) / len(groups) if groups else 0.0,
                "worst_expiry": max(sizes_, default=0),
                "ideal_loader_calls": round(sz.seconds / (sz.ttl + sz.loader_delay), 1),
                "loader_calls_per_ttl": len(during) * sz.ttl / sz.seconds,
                "miss_fraction": statuses.get("MISS", 0) / reads if reads else float("nan"),
                "p50_ms": lat["p50"],
                "p99_ms": lat["p99"],
                "p99.9_ms": lat["p99.9"],
                "max_ms": max(latencies, default=float("nan")),
            }
        )
    admin.close()
    return rows, loads


def run_expiry(url: str, sz: StampedeSizes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return off_loop(_run_expiry_blocking, url, sz)


def run(profile: str) -> dict[str, Any]:
    """Both experiments on one private redis-server."""
    sz = sizes(profile)
    with RedisServer() as server:
        cold = run_cold(server.url, sz)
        expiry, loads = run_expiry(server.url, sz)
    return {"cold": cold, "expiry": expiry, "loads": loads}


# -- plots ---------------------------------------------------------------------
def plot_strategies(cold: Any, expiry: Any) -> Any:
    """Loader calls (log) and reader p99 per strategy, for the cold key and for expiry under load."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 8))
    (a, b), (c, d) = fig.subplots(2, 2)
    names = list(cold["strategy"])
    x = range(len(names))

    def bars(ax: Any, values: Any, title: str, ylabel: str, color: str, log: bool, fmt: str) -> None:
        drawn = ax.bar(x, values, color=color)
        ax.bar_label(drawn, labels=[fmt.format(v) for v in values], fontsize=8)
        ax.set_xticks(list(x), names, rotation=15)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.margins(y=0.2)

    callers = int(cold["callers"].iloc[0])
    bars(a, cold["loader_calls"], f"Cold key: loader calls ({callers} simultaneous callers)", "loader calls",
         "tab:red", True, "{:.0f}")
    bars(b, cold["p99_ms"], "Cold key: caller p99", "ms", "tab:blue", False, "{:.0f}")
    bars(c, expiry["loader_calls_per_expiry"], "Hot key under load: loader calls per expiry",
         "loader calls / expiry", "tab:red", True, "{:.1f}")
    bars(d, expiry["p99_ms"], "Hot key under load: reader p99", "ms", "tab:blue", False, "{:.1f}")
    fig.tight_layout()
    return fig


def plot_loads(loads: Any, ttl: float, seconds: float) -> Any:
    """Every loader call in time, one row per strategy: stampedes show as vertical stacks."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.8))
    ax = fig.subplots()
    for i, name in enumerate(STRATEGIES):
        group = loads[loads["strategy"] == name]
        ax.scatter(group["t"], [i] * len(group), s=12, alpha=0.35)
        ax.annotate(f"{len(group)}", (seconds, i), xytext=(6, -3), textcoords="offset points", fontsize=8)
    ax.set_yticks(range(len(STRATEGIES)), list(STRATEGIES))
    ax.set_xlim(0, seconds)
    ax.set_xlabel(f"seconds into the window (TTL {ttl:g} s; count of loader calls on the right)")
    ax.set_title("When the loader ran")
    ax.grid(alpha=0.3, axis="x")
    return fig


def findings(result: dict[str, Any], sz: StampedeSizes) -> str:
    cold = {r["strategy"]: r for r in result["cold"]}
    exp = {r["strategy"]: r for r in result["expiry"]}
    callers = cold["none"]["callers"]
    lines = [
        f"- **Cold key, {callers} callers in {sz.cold_processes} processes.** No protection ran the loader "
        f"{cold['none']['loader_calls']} times; single-flight {cold['single-flight']['loader_calls']} "
        f"(one per process: it cannot see other processes); the lock "
        f"{cold['lock']['loader_calls']}; XFetch alone {cold['xfetch']['loader_calls']} — it refreshes a "
        "value *before* it expires, so a key that is not there gets no help; lock+XFetch "
        f"{cold['lock+xfetch']['loader_calls']}.",
        *(
            [f"- *Note: {bypass} callers were answered BYPASS — Redis calls failed (a connection storm on a "
             "busy machine) and they loaded without the cache; those counts are not the strategy's.*"]
            if (bypass := sum(int(r.get("status_BYPASS") or 0) for r in cold.values()))
            else []
        ),
        *(
            [f"- *Note: {late} of the unprotected callers found the key already filled — their "
             "processes did not start together (a busy machine); the cold-key counts are lower bounds.*"]
            if (late := cold["none"].get("status_HIT", 0))
            else []
        ),
        f"- **Hot key expiring under load** ({sz.processes}×{sz.tasks} readers, TTL {sz.ttl:g} s): loader "
        "calls per expiry — " + ", ".join(
            f"{name} {row['loader_calls_per_expiry']:.1f}" for name, row in exp.items()) + ".",
        "- **Reader p99**: " + ", ".join(f"{name} {row['p99_ms']:.1f} ms" for name, row in exp.items())
        + f". With XFetch {exp['xfetch']['miss_fraction']:.1%} of reads waited for a load (the refresh ran "
        f"before expiry, in the background); without it {exp['none']['miss_fraction']:.1%} did, each for "
        "a whole loader call — and behind the lock they also wait for the holder's fill and a poll.",
        f"- **XFetch's price**: {exp['xfetch']['loader_calls_per_ttl']:.2f} loads per TTL (the lock: "
        f"{exp['lock']['loader_calls_per_ttl']:.2f}). With β = 1 a reader refreshes early with probability "
        "e^(−time left / compute time) per read, so at a high read rate some reader wins the draw about "
        "compute × ln(reads per compute time) before expiry — early refreshes cost extra loads when the TTL "
        "is only a few compute times long.",
    ]
    return "\n".join(lines)


def headlines(result: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in result["cold"]:
        out[f"cold key loader calls, {row['strategy']}"] = row["loader_calls"]
    for row in result["expiry"]:
        out[f"loader calls per expiry, {row['strategy']}"] = round(row["loader_calls_per_expiry"], 2)
        out[f"loader calls per TTL, {row['strategy']}"] = round(row["loader_calls_per_ttl"], 2)
        out[f"reader p99 ms under expiry, {row['strategy']}"] = round(row["p99_ms"], 2)
    return out
