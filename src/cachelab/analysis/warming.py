"""Notebook 03: a cold cache against a warm one, and what explicit warming buys.

One app, its cache Redis, the same seeded Zipf request sequence three times
(sessions live on a second Redis, ``QUEUE_REDIS_URL``, as in docker-compose,
so flushing the cache does not log the reader out):

1. **cold** — right after a ``FLUSHDB``: every first read of a resource misses;
2. **warm** — the same sequence again, on the cache the cold run left;
3. **pre-warmed** — ``FLUSHDB``, then a *warm pass* that reads every cacheable
   resource once, then the sequence: what a deploy hook or a warm-up job
   buys, and what it costs (requests, seconds, database statements).

Cache TTLs are set long (10 min) so nothing expires during the experiment
(expiry is notebook 01's subject), and the database sleeps ``db_delay_ms``
per statement to model one that is not on the same host (recorded in the
summary); SQLite next door would make misses look cheaper than they are.

Per run: the latency distribution (from each request's intended start), the
hit ratio as it builds up (rolling over ``window`` requests), *time to warm*
(requests and seconds until the rolling hit ratio first reaches ``target``),
and database load (statements per request, and per second over time from
the app's ``/metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import redis

from cachelab.analysis.httpload import (
    Resource,
    Served,
    catalogue,
    client_limits,
    db_queries,
    hit_ratio,
    lag_report,
    run_paced,
    tenant_sessions,
    zipf_plan,
)
from cachelab.analysis.loops import off_loop, run_async
from cachelab.analysis.output import for_profile, percentiles
from cachelab.harness.app_server import AppServer
from cachelab.servers.redis_server import RedisServer

RUNS = ("cold", "warm", "pre-warmed")
Sessions = dict[str, dict[str, str]]  # tenant -> its session's Cookie header


@dataclass(frozen=True)
class WarmSizes:
    requests: int  # per run
    rate: float  # requests per second
    tenants: int
    initiatives_per_tenant: int
    db_delay_ms: float = 2.0
    zipf_s: float = 1.1
    window: int = 50  # rolling hit-ratio window, in requests
    target: float = 0.9
    warm_concurrency: int = 8
    max_in_flight: int = 32
    sample_every: float = 0.25  # seconds between /metrics samples
    seed: int = 5


SIZES = {
    "quick": WarmSizes(requests=600, rate=120, tenants=4, initiatives_per_tenant=200),
    "full": WarmSizes(requests=6000, rate=150, tenants=6, initiatives_per_tenant=1000, window=200),
}


def sizes(profile: str) -> WarmSizes:
    return for_profile(SIZES, profile)


def app_env(sz: WarmSizes) -> dict[str, str]:
    return {
        "CACHELAB_RATE_LIMIT": "1000000/60s",
        "CACHELAB_CACHE_MODE": "cache-aside",
        "CACHELAB_KPI_TTL": "600",
        "CACHELAB_AREAS_TTL": "600",
        "CACHELAB_LIST_TTL": "600",
        "CACHELAB_DB_DELAY_MS": f"{sz.db_delay_ms:g}",
    }


def time_to_warm(served: Sequence[Served], window: int, target: float) -> tuple[int | None, float | None]:
    """(requests, seconds) until the hit ratio over the last ``window`` requests first reaches ``target``."""
    hits = [1 if r.hit else 0 for r in served]
    running = 0
    for i, h in enumerate(hits):
        running += h
        if i >= window:
            running -= hits[i - window]
        if i + 1 >= window and running / window >= target:
            return i + 1, served[i].t
    return None, None


def rolling_hit_ratio(served: Sequence[Served], window: int) -> list[float]:
    out, running = [], 0
    hits = [1 if r.hit else 0 for r in served]
    for i, h in enumerate(hits):
        running += h
        if i >= window:
            running -= hits[i - window]
        out.append(running / min(i + 1, window))
    return out


async def _sample_db(
    http: httpx.AsyncClient, start: float, every: float, out: list[tuple[float, float]]
) -> None:
    while True:
        with contextlib.suppress(httpx.HTTPError):
            out.append((time.monotonic() - start, await db_queries(http)))
        await asyncio.sleep(every)


async def _measured_run(
    http: httpx.AsyncClient, plan: Sequence[Any], sz: WarmSizes, sessions: Sessions
) -> tuple[list[Served], float, list[tuple[float, float]]]:
    samples: list[tuple[float, float]] = []
    before = await db_queries(http)
    start = time.monotonic() + 0.05
    sampler = asyncio.ensure_future(_sample_db(http, start, sz.sample_every, samples))
    try:
        served = await run_paced(http, plan, start, max_in_flight=sz.max_in_flight, sessions=sessions)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    return served, await db_queries(http) - before, samples


async def _warm_pass(
    http: httpx.AsyncClient, resources: Sequence[Resource], concurrency: int, sessions: Sessions
) -> int:
    """Read every resource once, ``concurrency`` at a time; the number of non-200 answers."""
    gate = asyncio.Semaphore(concurrency)
    failures = 0

    async def one(resource: Resource) -> None:
        nonlocal failures
        async with gate:
            if (await http.get(resource.url, headers=sessions[resource.tenant])).status_code != 200:
                failures += 1

    await asyncio.gather(*(one(r) for r in resources))
    return failures


def _flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()  # the app's own launched Redis: nobody else's data
    finally:
        client.close()


def run(profile: str) -> dict[str, Any]:
    """The three runs on one app; returns per-run rows, per-request rows, DB samples and the warm pass."""
    # AppServer seeds its database with asyncio.run: off the notebook's event loop.
    return off_loop(_run, sizes(profile))


def _run(sz: WarmSizes) -> dict[str, Any]:
    with (
        RedisServer() as sessions_redis,
        AppServer(
            env={**app_env(sz), "QUEUE_REDIS_URL": sessions_redis.url},
            tenants=sz.tenants,
            initiatives_per_tenant=sz.initiatives_per_tenant,
        ) as app,
    ):
        assert app.redis_url is not None
        redis_url = app.redis_url

        async def go() -> dict[str, Any]:
            limits = client_limits(sz.max_in_flight)
            async with httpx.AsyncClient(base_url=app.base_url, timeout=10, limits=limits) as http:
                sessions = await tenant_sessions(http, app)
                resources = catalogue(sorted(sessions), sz.initiatives_per_tenant, seed=sz.seed)
                plan = zipf_plan(resources, sz.requests, sz.rate, s=sz.zipf_s, seed=sz.seed)
                results: dict[str, Any] = {}
                _flush(redis_url)
                results["cold"] = await _measured_run(http, plan, sz, sessions)
                results["warm"] = await _measured_run(http, plan, sz, sessions)
                _flush(redis_url)
                before = await db_queries(http)
                began = time.monotonic()
                failures = await _warm_pass(http, resources, sz.warm_concurrency, sessions)
                warm_pass = {
                    "resources": len(resources),
                    "seconds": time.monotonic() - began,
                    "db_statements": await db_queries(http) - before,
                    "failures": failures,
                }
                results["pre-warmed"] = await _measured_run(http, plan, sz, sessions)
                return {"results": results, "warm_pass": warm_pass}

        raw = run_async(go)

    rows, requests, db = [], [], []
    for name in RUNS:
        served, statements, samples = raw["results"][name]
        lat = [r.latency_ms for r in served]
        pct = percentiles(lat, (50, 90, 99, 99.9))
        n_warm, s_warm = time_to_warm(served, sz.window, sz.target)
        rows.append(
            {
                "run": name,
                "requests": len(served),
                "errors": sum(1 for r in served if r.status != 200),
                "hit_ratio": hit_ratio(served),
                "misses": sum(1 for r in served if r.x_cache == "MISS"),
                "p50_ms": pct["p50"],
                "p90_ms": pct["p90"],
                "p99_ms": pct["p99"],
                "p99.9_ms": pct["p99.9"],
                "mean_ms": sum(lat) / len(lat) if lat else math.nan,
                "db_statements": statements,
                "db_statements_per_request": statements / len(served) if served else math.nan,
                "requests_to_warm": n_warm,
                "seconds_to_warm": s_warm,
                **lag_report(served),
            }
        )
        rolling = rolling_hit_ratio(served, sz.window)
        requests += [
            {"run": name, "n": i + 1, "t": r.t, "latency_ms": r.latency_ms, "x_cache": r.x_cache,
             "status": r.status, "url": r.resource.url, "rolling_hit_ratio": rolling[i]}
            for i, r in enumerate(served)
        ]
        for (t0, q0), (t1, q1) in itertools.pairwise(samples):
            db.append({"run": name, "t": t1, "db_statements_per_s": (q1 - q0) / max(t1 - t0, 1e-6)})
    return {"runs": rows, "requests": requests, "db": db, "warm_pass": raw["warm_pass"], "sizes": asdict(sz)}


# -- plots ---------------------------------------------------------------------
COLORS = {"cold": "tab:blue", "warm": "tab:green", "pre-warmed": "tab:orange"}


def plot_latency(requests: Any) -> Any:
    """Empirical CDF of request latency per run (log x), with the tail magnified on the right."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig = Figure(figsize=(12, 4.5))
    ax1, ax2 = fig.subplots(1, 2)
    for name, group in requests.groupby("run", sort=False):
        lat = np.sort(group["latency_ms"].to_numpy())
        frac = np.arange(1, len(lat) + 1) / len(lat)
        ax1.step(lat, frac, where="post", color=COLORS.get(name), label=name)
        ax2.step(lat, 1 - frac + 1 / len(lat), where="post", color=COLORS.get(name), label=name)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax1.set_xlabel("latency from intended start (ms)")
    ax1.set_ylabel("fraction of requests ≤ x")
    ax1.set_title("Latency distribution")
    ax2.set_yscale("log")
    ax2.set_xlabel("latency (ms)")
    ax2.set_ylabel("fraction of requests slower than x")
    ax2.set_title("The tail (1 − CDF)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.tight_layout()
    return fig


def plot_warmup(requests: Any, db: Any, runs: Any, target: float) -> Any:
    """Rolling hit ratio by request number, and database statements per second over time."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5))
    ax1, ax2 = fig.subplots(1, 2)
    for name, group in requests.groupby("run", sort=False):
        ax1.plot(group["n"], group["rolling_hit_ratio"], color=COLORS.get(name), label=name)
    for _, row in runs.iterrows():
        if row["requests_to_warm"] is not None and not math.isnan(row["requests_to_warm"]):
            ax1.axvline(row["requests_to_warm"], color=COLORS.get(row["run"]), ls=":", lw=1)
    ax1.axhline(target, color="grey", ls="--", lw=0.8)
    ax1.annotate(f"target {target:.0%}", (0, target), xytext=(4, -12), textcoords="offset points", fontsize=8)
    ax1.set_xlabel("request number")
    ax1.set_ylabel("hit ratio (rolling)")
    ax1.set_title("How fast the cache warms (dotted: time to warm)")
    ax1.set_ylim(0, 1.02)
    ax1.legend()
    for name, group in db.groupby("run", sort=False):
        ax2.plot(group["t"], group["db_statements_per_s"], color=COLORS.get(name), label=name)
    ax2.set_xlabel("seconds into the run")
    ax2.set_ylabel("SQL statements per second (app /metrics)")
    ax2.set_title("Database load")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def findings(result: dict[str, Any]) -> str:
    runs = {r["run"]: r for r in result["runs"]}
    cold, warm, pre = runs["cold"], runs["warm"], runs["pre-warmed"]
    wp, sz = result["warm_pass"], result["sizes"]
    lines = [
        f"- **Cold start.** From an empty cache {cold['hit_ratio']:.0%} of the {cold['requests']} requests "
        f"hit; the {cold['misses']} misses cost {cold['db_statements']:.0f} SQL statements "
        f"({cold['db_statements_per_request']:.2f} per request, against "
        f"{warm['db_statements_per_request']:.2f} once warm).",
    ]
    if cold["requests_to_warm"] is not None:
        lines.append(
            f"- **Time to warm.** The rolling hit ratio (last {sz['window']} requests) first reached "
            f"{sz['target']:.0%} after {cold['requests_to_warm']} requests "
            f"({cold['seconds_to_warm']:.1f} s at {sz['rate']:g} requests/s)."
        )
    else:
        lines.append(f"- The cold run never reached a {sz['target']:.0%} rolling hit ratio.")
    same_median = abs(cold["p50_ms"] - warm["p50_ms"]) < 0.3 * warm["p50_ms"]
    tail_only = same_median and cold["p99_ms"] > 1.5 * warm["p99_ms"]
    lines.append(
        f"- **Latency.** p99 was {cold['p99_ms']:.1f} ms cold, {warm['p99_ms']:.1f} ms warm and "
        f"{pre['p99_ms']:.1f} ms pre-warmed (p50 {cold['p50_ms']:.1f} / {warm['p50_ms']:.1f} / "
        f"{pre['p50_ms']:.1f} ms)" + (": a cold cache moves the tail, not the median." if tail_only else ".")
    )
    behind = [r["run"] for r in result["runs"] if r["send_lag_p99_ms"] > 100]
    if behind:
        lines.append(
            f"- *Caution: in the {', '.join(behind)} run(s) requests left more than 100 ms late (p99 send "
            "lag): the app or this machine could not keep up with the schedule, so those latencies include "
            "queueing. Compare `service_p99_ms` (from the actual send) and rerun on a quieter machine.*"
        )
    lines.append(
        f"- **The warm pass** read all {wp['resources']} resources in {wp['seconds']:.1f} s for "
        f"{wp['db_statements']:.0f} SQL statements, and left a {pre['hit_ratio']:.0%} hit ratio from the "
        f"first request. The cold run, warming on demand, spent {cold['db_statements']:.0f} statements "
        "on the same requests: warming everything also pays for the Zipf tail nobody asked for."
    )
    return "\n".join(lines)


def headlines(result: dict[str, Any]) -> dict[str, float | None]:
    runs = {r["run"]: r for r in result["runs"]}
    cold, warm, pre = runs["cold"], runs["warm"], runs["pre-warmed"]
    wp = result["warm_pass"]
    return {
        "cold p99 ms": round(cold["p99_ms"], 2),
        "warm p99 ms": round(warm["p99_ms"], 2),
        "pre-warmed p99 ms": round(pre["p99_ms"], 2),
        "cold DB statements per request": round(cold["db_statements_per_request"], 3),
        "warm DB statements per request": round(warm["db_statements_per_request"], 3),
        "pre-warmed DB statements per request": round(pre["db_statements_per_request"], 3),
        "cold requests to 90% hit ratio": cold["requests_to_warm"],
        "cold hit ratio": round(cold["hit_ratio"], 3),
        "warm pass requests": wp["resources"],
        "warm pass seconds": round(wp["seconds"], 2),
    }
