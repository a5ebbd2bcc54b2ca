"""The load step: the dashboard mix under Locust, as interleaved trials of each arm.

An *arm* is one app configuration on one checkout (cache off, cache-aside;
with ``--against`` the same for the base). All arms' apps run at once, each
with its own Redis; after one warm-up run each, the trials alternate between
arms (A B, B A, A B, …), so a slow moment of the machine lands on both sides
of a comparison instead of deciding it. Every trial is kept, and the first
second or so of each (log-ins, ramp) is left out (``--warmup``). The users,
one of each type (two browsers; ``LoadPlan.mix``), pause 10–30 ms between
requests: a closed loop below saturation, where a request that does more
work takes longer and the throughput falls with it.

What each trial gives:

* timed metrics — requests/s, p50 and p99 (µs-resolution HdrHistograms), and
  per request: Redis commands, round trips, SQL statements and Redis CPU µs
  (the server's CPU counters: counted once, whatever scripts ran);
* proportions — misses out of cacheable lookups (``X-Cache``), failures out
  of requests;
* exact metrics — the app's ``X-Request-Cost`` per request class (route,
  status and cache outcome): ``GET …/kpis 200 HIT`` costs the same round
  trips every time, so any change there is a change of code path.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachelab.loadtest.metrics import served_from_cache
from cachelab.report.capacity import capacity_rows, marginal_cpu_seconds
from cachelab.report.metrics import Metric, exact, info, proportion, timed
from cachelab.report.sides import Side

#: The app's settings for every load arm: limits far above the load (a 429 is not what we measure),
#: and the per-request cost header on.
APP_ENV = {"CACHELAB_RATE_LIMIT": "1000000/60s", "CACHELAB_COST_HEADER": "on"}
#: A request class needs this many requests before its cost is judged (fewer: shown, not compared).
MIN_CLASS_REQUESTS = 5
COST_FIELDS = {"redis-rt": "Redis round trips", "redis-cmd": "Redis commands", "db": "SQL statements"}


@dataclass(frozen=True)
class Arm:
    label: str
    side: Side
    cache_mode: str


@dataclass(frozen=True)
class LoadPlan:
    trials: int
    seconds: float  # measured, per trial
    warmup_seconds: float  # one unmeasured run per arm first: the caches fill, the pools open
    trial_warmup: float  # the start of every trial left out: its users log in and ramp up
    users: int
    tenants: int
    initiatives_per_tenant: int
    mix: str = "viewer=1,browser=2,editor=1,reporter=1,leaderboard=1"  # every user type, editors included
    think_time: str = "0.01,0.03"


Trial = dict[str, Any]  # one Locust run's loadtest.json


def run_trials(
    folder: Path, arms: Sequence[Arm], plan: LoadPlan, *, progress: Callable[[str], None] = print
) -> dict[str, list[Trial]]:
    """Start every arm's app, warm each, then run ``plan.trials`` interleaved trials; summaries per arm."""
    from cachelab.harness.app_server import AppServer
    from cachelab.loadtest.runner import run_scenario

    results: dict[str, list[Trial]] = {arm.label: [] for arm in arms}
    with contextlib.ExitStack() as stack:
        apps = {}
        for arm in arms:
            progress(f"  load: starting the app for {arm.label} ({arm.side.label}, cache {arm.cache_mode})")
            apps[arm.label] = stack.enter_context(
                AppServer(
                    env={**arm.side.env, **APP_ENV, "CACHELAB_CACHE_MODE": arm.cache_mode},
                    tenants=plan.tenants,
                    initiatives_per_tenant=plan.initiatives_per_tenant,
                    job_workers=1,
                    python=arm.side.python,
                )
            )

        def run(arm: Arm, name: str, seconds: float, warmup: float = 0.0) -> Trial:
            app = apps[arm.label]
            scenario = run_scenario(
                base_url=app.base_url,
                redis_url=app.redis_url,
                duration=seconds,
                users=plan.users,
                spawn_rate=plan.users,
                # Below saturation on purpose: a saturated closed loop measures the queue for the CPU
                # that Locust, the app and Redis share here, and hides what each request costs
                # (15 ms more per SQL statement moved its latency by 10 %); with short think times
                # the latency and throughput of each request type show through.
                think_time=plan.think_time,
                mix=plan.mix,
                results_dir=folder / "load" / arm.label / name,
                locustfile=arm.side.root / "locustfiles" / "dashboard.py",
                python=arm.side.python,
                generator_env=arm.side.env,
                warmup=warmup,
            )
            return scenario.summary

        for arm in arms:
            run(arm, "warmup", plan.warmup_seconds)
        idle = {arm.label: idle_cpu_per_second(apps[arm.label].redis_url) for arm in arms}
        for k in range(plan.trials):
            order = list(arms) if k % 2 == 0 else list(reversed(arms))
            for arm in order:
                summary = run(arm, f"trial{k + 1}", plan.seconds, plan.trial_warmup)
                if summary.get("redis"):
                    summary["redis"]["idle_cpu_per_s"] = idle[arm.label]
                results[arm.label].append(summary)
                t = summary["totals"]
                hits = f", hit ratio {t['hit_ratio']:.3f}" if t.get("hit_ratio") is not None else ""
                progress(
                    f"  load: {arm.label} trial {k + 1}/{plan.trials}: {t['rps']:.0f} req/s, "
                    f"p99 {(t.get('latency_ms') or {}).get('p99')} ms{hits}"
                )
    return results


def idle_cpu_per_second(redis_url: str | None, seconds: float = 1.5) -> float | None:
    """Redis CPU seconds per second with the app idle (its workers polling, cron, our INFO calls).

    At a modest request rate this fixed cost is a large share of Redis's CPU; subtracted, what
    is left scales with requests, which is what "per 1 000 requests/s" assumes.
    """
    if not redis_url:
        return None
    import time

    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:

        def cpu() -> float:
            info = client.info("cpu")
            return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

        before, t0 = cpu(), time.monotonic()
        time.sleep(seconds)
        return round((cpu() - before) / (time.monotonic() - t0), 5)
    except redis.RedisError:
        return None
    finally:
        client.close()


# -- metrics -------------------------------------------------------------------------
def _per_request(trial: Trial, field: str) -> float | None:
    """Mean of one X-Request-Cost field over every request of the trial (None without the header)."""
    totals = trial["totals"]
    costs = totals.get("costs") or {}
    requests = sum(c[field]["requests"] for c in costs.values() if field in c)
    if not requests:
        return None
    return sum(c[field]["mean"] * c[field]["requests"] for c in costs.values() if field in c) / requests


def _redis_cpu_us_per_request(trial: Trial) -> float | None:
    redis, requests = trial.get("redis") or {}, trial["totals"].get("requests") or 0
    if not redis or not requests or redis.get("cpu_seconds") is None:
        return None
    return marginal_cpu_seconds(redis) * 1e6 / requests


def _misses(trial: Trial) -> tuple[int, int]:
    x = trial["totals"].get("x_cache") or {}
    misses = int(x.get("MISS", 0))
    return misses, misses + served_from_cache(x)


def class_costs(trials: Sequence[Trial]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(endpoint, request class, field) → requests, min, max over all trials, and each trial's mean."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for trial in trials:
        for endpoint, data in trial["endpoints"].items():
            if endpoint == "Aggregated":
                continue
            for cls, fields in (data.get("costs") or {}).items():
                for field, f in fields.items():
                    entry = out.setdefault(
                        (endpoint, cls, field), {"requests": 0, "min": f["min"], "max": f["max"], "means": []}
                    )
                    entry["requests"] += f["requests"]
                    entry["min"] = min(entry["min"], f["min"])
                    entry["max"] = max(entry["max"], f["max"])
                    entry["means"].append(f["mean"])
    return out


def arm_metrics(label: str, trials: Sequence[Trial]) -> dict[str, Metric]:
    """Every metric of one arm from its trials (names start ``load.<label>.``)."""
    p = f"load.{label}"
    lat = [t["totals"].get("latency_ms") or {} for t in trials]
    m: dict[str, Metric] = {
        f"{p}.rps": timed([t["totals"]["rps"] for t in trials], "req/s", "higher"),
        f"{p}.p50_ms": timed([x.get("p50") for x in lat], "ms", "lower"),
        f"{p}.p99_ms": timed([x.get("p99") for x in lat], "ms", "lower"),
        f"{p}.errors": proportion(
            [t["totals"]["failures"] for t in trials],
            [t["totals"]["requests"] for t in trials],
            "error ratio",
        ),
    }
    misses = [_misses(t) for t in trials]
    if any(n for _, n in misses):
        m[f"{p}.miss_ratio"] = proportion([k for k, _ in misses], [n for _, n in misses])
    for field, name, unit in (
        ("redis-cmd", "redis_commands_per_request", "commands/request"),
        ("redis-rt", "redis_round_trips_per_request", "RT/request"),
        ("db", "db_statements_per_request", "statements/request"),
    ):
        values = [_per_request(t, field) for t in trials]
        if any(v is not None for v in values):
            m[f"{p}.{name}"] = timed(values, unit, "lower")
    cpu = [_redis_cpu_us_per_request(t) for t in trials]
    if any(v is not None for v in cpu):
        m[f"{p}.redis_cpu_us_per_request"] = timed(cpu, "µs/request", "lower")
    for (endpoint, cls, field), c in class_costs(trials).items():
        name = f"{p}.cost[{endpoint} {cls}].{field}"
        unit = f"{COST_FIELDS.get(field, field)}/request"
        if c["requests"] < MIN_CLASS_REQUESTS:
            m[name] = info(statistics.mean(c["means"]), unit, note=f"only {c['requests']} requests")
        elif c["min"] == c["max"]:
            m[name] = exact(c["min"], unit)
        else:
            m[name] = timed(c["means"], unit, "lower", note=f"varies per request: {c['min']}–{c['max']}")
    return m


def capacity_metrics(trials: Sequence[Trial]) -> tuple[dict[str, Any] | None, dict[str, Metric]]:
    """The capacity table (median over trials) and its figures as timed metrics."""
    rows = [r for r in (capacity_rows(t) for t in trials) if r]
    if not rows:
        return None, {}
    keys = [k for k, v in rows[0].items() if isinstance(v, int | float)]
    table = {k: statistics.median([r[k] for r in rows if r.get(k) is not None]) for k in keys}
    table["measured_rps"] = round(table["measured_rps"], 1)
    units = {
        "redis_ops_per_s": "ops/s per 1k req/s",
        "redis_commands_per_request": "commands/request",
        "redis_cpu_cores": "cores per 1k req/s",
        "redis_cpu_us_per_request": "µs/request",
        "network_mb_s": "MB/s per 1k req/s",
    }
    metrics = {
        f"capacity.{k}": timed([r[k] for r in rows], unit, "lower") for k, unit in units.items() if k in table
    }
    return table, metrics
