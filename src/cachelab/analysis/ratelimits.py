"""Notebook 06: rate limiters — how much they admit at a window edge, and what a check costs.

**Edges and accuracy.** The technique of ``tests/test_ratelimit.py``: every
limiter (same limit, same period, one identifier each) sits idle, then is
checked every few milliseconds from 0.3 period before an epoch-aligned window
edge (on the *server's* clock, which is the one the Lua scripts decide by) to
``after_edge`` periods after it. Each admission's ``server_time_us`` is kept;
:func:`~cachelab.patterns.ratelimit.max_in_window` then gives the most
admissions in any interval of one period and of half a period (the burst a
client can get), and the admissions after the edge against ``limit × periods``
give the long-run rate (accuracy).

**Cost per check.** For each algorithm, ``checks`` sequential checks cycling
over ``identifiers`` (all under the limit, the common case): round trips from
the client's counter, server µs and commands from
:class:`~cachelab.harness.cost.CostMeter`, client µs per check beside a PING
on the same connection, and the memory one identifier's state takes
(``MEMORY USAGE``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cachelab.analysis.loops import run_async
from cachelab.analysis.output import for_profile
from cachelab.client import ClientOptions, ResilientRedis
from cachelab.harness.cost import CostMeter
from cachelab.patterns.ratelimit import (
    ALGORITHMS,
    GCRALimiter,
    RateLimiter,
    TokenBucketLimiter,
    create_limiter,
    max_in_window,
)
from cachelab.servers.redis_server import RedisServer

ALGOS = sorted(ALGORITHMS)


@dataclass(frozen=True)
class RateLimitSizes:
    limit: int  # per period
    period: float  # seconds
    after_edge: float  # periods hammered after the edge
    interval: float  # seconds between one limiter's checks
    trials: int  # edges measured (worst taken)
    checks: int  # cost measurement, per algorithm
    identifiers: int
    cost_limit: int = 100  # limit used for the cost measurement (per minute)


SIZES = {
    "quick": RateLimitSizes(limit=10, period=1.0, after_edge=2.0, interval=0.004, trials=2, checks=1000,
                            identifiers=20),
    "full": RateLimitSizes(limit=50, period=1.0, after_edge=5.0, interval=0.002, trials=3, checks=5000,
                           identifiers=100),
}


def sizes(profile: str) -> RateLimitSizes:
    return for_profile(SIZES, profile)


def limiters(rr: ResilientRedis, limit: int, period: float, prefix: str) -> dict[str, RateLimiter]:
    """Every algorithm, plus token bucket and GCRA with ``burst=1`` (strict pacers)."""
    made = {a: create_limiter(rr, a, limit, period, prefix=prefix) for a in ALGOS}
    made["token_bucket(burst=1)"] = TokenBucketLimiter(rr, limit, period, burst=1, name="b1", prefix=prefix)
    made["gcra(burst=1)"] = GCRALimiter(rr, limit, period, burst=1, name="b1", prefix=prefix)
    return made


async def _hammer(limiter: RateLimiter, start_local: float, stop_us: int, interval: float) -> list[int]:
    """Check every ``interval`` from ``start_local`` until the server clock passes ``stop_us``."""
    await asyncio.sleep(max(0.0, start_local - time.time()))
    admitted: list[int] = []
    wall_deadline = time.monotonic() + (stop_us / 1e6 - time.time()) + 5
    for _ in range(100_000):
        result = await limiter.check("edge")
        if result.allowed and result.server_time_us is not None:
            admitted.append(result.server_time_us)
        if (result.server_time_us or 0) >= stop_us or time.monotonic() > wall_deadline:
            break
        await asyncio.sleep(interval)
    return admitted


async def _edge_trial(rr: ResilientRedis, sz: RateLimitSizes, trial: int) -> tuple[int, dict[str, list[int]]]:
    period_us = round(sz.period * 1_000_000)
    made = limiters(rr, sz.limit, sz.period, prefix=f"edge{trial}")
    for limiter in made.values():  # load every script (on another identifier)
        await limiter.check("warm-up")
    sec, usec = await rr.client.time()
    server_now = sec * 1_000_000 + usec
    offset_us = server_now - time.time() * 1_000_000
    # The next edge at least half a period away, so every limiter is idle (and whole) before it.
    edge = math.ceil((server_now + period_us // 2) / period_us) * period_us
    start_local = (edge - 0.3 * period_us - offset_us) / 1_000_000
    stop_us = edge + int(sz.after_edge * period_us)
    runs = await asyncio.gather(*(_hammer(lim, start_local, stop_us, sz.interval) for lim in made.values()))
    return edge, dict(zip(made, runs, strict=True))


def _edge_rows(sz: RateLimitSizes, trials: Sequence[tuple[int, dict[str, list[int]]]]) -> tuple[list, list]:
    period_us = round(sz.period * 1_000_000)
    rows, events = [], []
    names = list(trials[0][1])
    for name in names:
        worst_period = worst_half = 0
        after = []
        for i, (edge, runs) in enumerate(trials):
            times = runs[name]
            worst_period = max(worst_period, max_in_window(times, period_us))
            worst_half = max(worst_half, max_in_window(times, period_us // 2))
            after.append(sum(1 for t in times if t >= edge))
            events += [{"algorithm": name, "trial": i, "t": (t - edge) / 1e6} for t in times]
        contract = sz.limit * sz.after_edge
        rows.append(
            {
                "algorithm": name,
                "limit": sz.limit,
                "worst_in_any_period": worst_period,
                "worst_in_any_half_period": worst_half,
                "worst_vs_limit": worst_period / sz.limit,
                "admitted_after_edge": sum(after) / len(after),
                "long_run_accuracy": (sum(after) / len(after)) / contract,
            }
        )
    return rows, events


async def _cost_rows(url: str, sz: RateLimitSizes) -> list[dict[str, Any]]:
    rr = ResilientRedis.from_url(url, options=ClientOptions(command_timeout=5.0))
    meter = CostMeter(url, rr.round_trips)
    rows = []
    try:
        await rr.client.ping()
        began = time.perf_counter()
        for _ in range(sz.checks):
            await rr.client.ping()
        ping_us = (time.perf_counter() - began) / sz.checks * 1e6
        # burst=1 variants run the same scripts as their parents: cost is per algorithm.
        made = {a: create_limiter(rr, a, sz.cost_limit, 60.0, prefix="cost") for a in ALGOS}
        for name, limiter in made.items():
            await limiter.check("warm-up")
            idents = [f"user-{i}" for i in range(sz.identifiers)]
            with meter.measure() as cost:
                began = time.perf_counter()
                allowed = 0
                for n in range(sz.checks):
                    result = await limiter.check(idents[n % len(idents)])
                    allowed += result.allowed
                client_us = (time.perf_counter() - began) / sz.checks * 1e6
            # Every key an identifier's checks keep (the windowed limiters' per-window counters).
            now_us = result.server_time_us or 0
            memory = [sum(meter.memory_usage(k) or 0 for k in limiter.state_keys(i, now_us)) for i in idents]
            rows.append(
                {
                    "algorithm": name,
                    "checks": sz.checks,
                    "admitted": allowed,
                    "round_trips_per_check": cost.round_trips / sz.checks,
                    "commands_per_check": cost.total_commands / sz.checks,
                    "server_us_per_check": cost.server_usec / sz.checks,
                    "client_us_per_check": client_us,
                    "client_us_ping": ping_us,
                    "ratio_to_ping": client_us / ping_us,
                    "bytes_per_identifier": sum(memory) / len(memory),
                    "checks_per_identifier": sz.checks / len(idents),
                }
            )
    finally:
        meter.close()
        await rr.aclose()
    return rows


def run(profile: str) -> dict[str, Any]:
    """Edge trials, then cost, on one private redis-server."""
    sz = sizes(profile)
    with RedisServer() as server:

        async def edges() -> list[tuple[int, dict[str, list[int]]]]:
            rr = ResilientRedis.from_url(server.url, options=ClientOptions(command_timeout=5.0))
            try:
                return [await _edge_trial(rr, sz, i) for i in range(sz.trials)]
            finally:
                await rr.aclose()

        trials = run_async(edges)
        edge_rows, events = _edge_rows(sz, trials)
        cost = run_async(lambda: _cost_rows(server.url, sz))
    return {"edges": edge_rows, "events": events, "cost": cost}


# -- plots ---------------------------------------------------------------------
def plot_edges(events: Any, edges: Any, limit: int, period: float) -> Any:
    """Cumulative admissions around the edge (trial 0), and the worst bursts against the limit."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    first = events[events["trial"] == 0]
    for name, group in first.groupby("algorithm", sort=False):
        t = np.sort(group["t"].to_numpy())
        ax1.step(t, np.arange(1, len(t) + 1), where="post", label=name,
                 ls="--" if "burst=1" in name else "-")
    ax1.axvline(0, color="grey", lw=0.8)
    ax1.annotate("window edge", (0, 0), xytext=(3, 3), textcoords="offset points", fontsize=8)
    ax1.set_xlabel(f"seconds from the window edge (server clock); period {period:g} s")
    ax1.set_ylabel("admissions so far")
    ax1.set_title(f"One client checking every few ms, limit {limit} per {period:g} s")
    ax1.legend(fontsize=7)
    ax1.grid(alpha=0.3)
    x = np.arange(len(edges))
    ax2.bar(x - 0.2, edges["worst_in_any_period"], 0.4, label="any one period")
    ax2.bar(x + 0.2, edges["worst_in_any_half_period"], 0.4, label="any half period")
    ax2.axhline(limit, color="black", ls=":", lw=1)
    ax2.annotate("limit", (x[-1] + 0.45, limit), fontsize=8, va="bottom", ha="right")
    ax2.set_xticks(x, edges["algorithm"], rotation=35, ha="right", fontsize=8)
    ax2.set_ylabel("most admissions in any window")
    ax2.set_title("Worst burst a client got")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_cost(cost: Any) -> Any:
    """Server µs, client µs (with the PING floor) and bytes of state per identifier, per algorithm."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4))
    axes = fig.subplots(1, 3)
    x = np.arange(len(cost))
    panels = (
        ("server_us_per_check", "server µs per check", "tab:purple", "{:.1f}"),
        ("client_us_per_check", "client µs per check (dotted: PING)", "tab:blue", "{:.0f}"),
        ("bytes_per_identifier", "bytes of state per identifier", "tab:green", "{:.0f}"),
    )
    for ax, (column, title, color, fmt) in zip(axes, panels, strict=True):
        bars = ax.bar(x, cost[column], color=color)
        ax.bar_label(bars, labels=[fmt.format(v) for v in cost[column]], fontsize=7)
        ax.set_xticks(x, cost["algorithm"], rotation=35, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.15)
    axes[1].axhline(float(cost["client_us_ping"].iloc[0]), color="black", ls=":", lw=1)
    rt = cost["round_trips_per_check"].max()
    fig.suptitle(f"Cost of one check (round trips per check: {rt:g} for every algorithm)", fontsize=11)
    fig.tight_layout()
    return fig


def findings(result: dict[str, Any], sz: RateLimitSizes) -> str:
    e = {r["algorithm"]: r for r in result["edges"]}
    c = {r["algorithm"]: r for r in result["cost"]}
    lines = [
        f"- **Fixed window**: {e['fixed_window']['worst_in_any_half_period']} admissions within half a "
        f"period across the edge — {e['fixed_window']['worst_vs_limit']:.1f}× the limit of {sz.limit}.",
        f"- **Sliding log**: at most {e['sliding_log']['worst_in_any_period']} in any period: exact.",
        f"- **Sliding-window counter**: at most {e['sliding_window']['worst_in_any_half_period']} in any "
        f"half period and {e['sliding_window']['worst_in_any_period']} in any period: it weights the "
        "previous window's count by the overlap as if that traffic had been spread evenly, so traffic "
        "bunched at the end of the previous window (as here) lets more through over a full period.",
        f"- **Token bucket / GCRA**: at most {e['token_bucket']['worst_in_any_period']} / "
        f"{e['gcra']['worst_in_any_period']} in any period — the idle client's full burst ({sz.limit}) "
        "plus what refills during the period; by design, not a leak. With `burst=1` they pace: "
        f"{e['token_bucket(burst=1)']['worst_in_any_period']} / {e['gcra(burst=1)']['worst_in_any_period']}.",
        "- **Long-run rate**: admissions after the edge over limit × periods — "
        + ", ".join(f"{name} {row['long_run_accuracy']:.2f}" for name, row in e.items()) + ".",
        "- **Cost**: every algorithm is one round trip (one EVALSHA); server time per check "
        + ", ".join(f"{name} {row['server_us_per_check']:.1f} µs" for name, row in c.items())
        + f". The client waits {min(r['ratio_to_ping'] for r in c.values()):.1f}–"
        f"{max(r['ratio_to_ping'] for r in c.values()):.1f}× a PING. The sliding log stores one member "
        f"per admitted unit: {c['sliding_log']['bytes_per_identifier']:.0f} bytes per identifier after "
        f"{c['sliding_log']['checks_per_identifier']:.0f} checks, against "
        f"{c['gcra']['bytes_per_identifier']:.0f} for GCRA whatever the traffic.",
    ]
    return "\n".join(lines)


def headlines(result: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in result["edges"]:
        out[f"worst in any period / limit, {row['algorithm']}"] = round(row["worst_vs_limit"], 2)
    for row in result["cost"]:
        out[f"server µs per check, {row['algorithm']}"] = round(row["server_us_per_check"], 2)
    out["round trips per check (max)"] = max(r["round_trips_per_check"] for r in result["cost"])
    return out
