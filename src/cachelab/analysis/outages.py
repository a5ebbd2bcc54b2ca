"""Notebook 04: fail-open under Redis outages — the timelines and what they add up to.

Every run is :func:`cachelab.experiments.outage.run_outage`: a fresh Redis (AOF
on) behind a fault proxy, the app and a report worker, paced reads plus report
jobs, and one fault from ``t1`` to ``t2``. This module only chooses which runs
a profile makes, tabulates their per-second timelines and summaries, and plots
them with the fault window shaded.

Fault kinds (see :mod:`cachelab.harness.faults`): ``kill`` (SIGKILL, then a
restart from the AOF), ``pause`` (SIGSTOP: Redis hangs with its sockets
open — the nastiest, because nothing fails fast), ``slow`` (the proxy adds
latency to every reply).

Configurations: the circuit breaker on or off; the rate limiter's failure
policy (``open``, ``closed``, ``local``); the Redis command timeout.

Topology: every run here is ``split`` (:data:`TOPOLOGY`), as docker-compose
deploys the app: the faulted Redis is the cache, while sessions and the job
queue live on a second Redis that stays up — every read is logged in and its
session is checked throughout. With one shared Redis the same faults turn
authenticated reads into 503s by design (a session that cannot be checked is
never admitted; ``tests/test_outage.py`` pins that), which is the case for
giving sessions their own Redis. The topology is written into every run's
archive entry and stated in the findings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cachelab.analysis.loops import off_loop
from cachelab.analysis.output import for_profile
from cachelab.experiments.outage import (
    LIMITER_CONFIGS,
    STANDARD_CONFIGS,
    TOPOLOGIES,
    OutageConfig,
    OutagePlan,
    OutageResult,
    run_outage,
    timeout_configs,
)
from cachelab.harness.faults import FaultSpec

CONFIGS: dict[str, OutageConfig] = {
    c.name: c for c in (*STANDARD_CONFIGS, *LIMITER_CONFIGS, *timeout_configs())
}
TOPOLOGY = "split"
KIND_LABELS = {
    "kill": "kill (crash + restart)",
    "pause": "hang (SIGSTOP)",
    "slow": "slow (+50 ms per round trip)",
}

#: Summary columns, in the order the table shows them.
SUMMARY_COLUMNS = (
    "errors_during_fault",
    "reads_5xx_during_fault",
    "errors_429_during_fault",
    "p99_steady_ms",
    "p50_fault_ms",
    "p99_fault_ms",
    "breaker_open_after_s",
    "hit_ratio_recovered_after_s",
    "db_qps_steady",
    "db_qps_fault",
    "extra_db_qps",
    "jobs_enqueued",
    "jobs_lost",
    "jobs_redelivered",
    "generator_dropped",
)


@dataclass(frozen=True)
class OutageSizes:
    runs: tuple[tuple[str, str], ...]  # (fault kind, configuration name)
    duration: float
    rate: float
    fault_start: float
    fault_duration: float
    warmup: float
    drain_timeout: float
    tenants: int = 3
    initiatives_per_tenant: int = 300


SIZES = {
    "quick": OutageSizes(
        runs=(("kill", "breaker"), ("pause", "breaker"), ("pause", "no-breaker")),
        duration=6.5,
        rate=25,
        fault_start=1.5,
        fault_duration=2.5,
        warmup=0.5,
        drain_timeout=10,
    ),
    "full": OutageSizes(
        runs=(
            *((kind, cfg) for kind in ("kill", "pause", "slow") for cfg in ("breaker", "no-breaker")),
            *(("kill", c.name) for c in LIMITER_CONFIGS),
            *((kind, c.name) for kind in ("pause", "slow") for c in timeout_configs()),
        ),
        duration=20,
        rate=40,
        fault_start=6.0,
        fault_duration=6.0,
        warmup=2.0,
        drain_timeout=30,
    ),
}


def sizes(profile: str) -> OutageSizes:
    return for_profile(SIZES, profile)


def plan_for(kind: str, sz: OutageSizes) -> OutagePlan:
    return OutagePlan(
        fault=FaultSpec(kind, sz.fault_start, sz.fault_duration),
        duration=sz.duration,
        rate=sz.rate,
        warmup=sz.warmup,
        drain_timeout=sz.drain_timeout,
        tenants=sz.tenants,
        initiatives_per_tenant=sz.initiatives_per_tenant,
        topology=TOPOLOGY,
    )


def run(profile: str) -> list[OutageResult]:
    """Every (fault, configuration) run of the profile, one after the other (each on fresh servers)."""
    sz = sizes(profile)
    results = []
    for kind, config in sz.runs:
        # run_outage drives its load with asyncio.run: off the notebook's event loop.
        results.append(off_loop(run_outage, plan_for(kind, sz), CONFIGS[config]))
    return results


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def summary_rows(results: Sequence[OutageResult]) -> list[dict[str, Any]]:
    """One row per run: the experiment's summary plus the extra database load during the fault."""
    rows = []
    for r in results:
        s = dict(r.summary)
        steady, fault = s.get("db_qps_steady"), s.get("db_qps_fault")
        ok = all(isinstance(v, int | float) and not math.isnan(v) for v in (steady, fault))
        s["extra_db_qps"] = fault - steady if ok else math.nan  # type: ignore[operator]
        row = {
            "fault": r.fault["kind"],
            "config": r.config,
            "run": f"{r.fault['kind']}/{r.config}",
            "topology": r.topology,
        }
        row |= {col: _clean(s.get(col)) for col in SUMMARY_COLUMNS}
        rows.append(row)
    return rows


def timeline_rows(results: Sequence[OutageResult]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        for point in r.timeline:
            row = {k: v for k, v in point.items() if k != "limiter_by_source"}
            for source, n in (point.get("limiter_by_source") or {}).items():
                row[f"limiter_{source}"] = n
            rows.append({"fault": r.fault["kind"], "config": r.config, **row})
    return rows


def archive(results: Sequence[OutageResult]) -> dict[str, Any]:
    """What ``04_outages.json`` holds: per run its fault, configuration and summary (the report sums them)."""
    extra = {row["run"]: row["extra_db_qps"] for row in summary_rows(results)}
    return {
        "runs": [
            {
                "config": r.config,
                "fault": r.fault,
                "topology": r.topology,
                "summary": {**r.summary, "extra_db_qps": extra[f"{r.fault['kind']}/{r.config}"]},
            }
            for r in results
        ]
    }


# -- plots ---------------------------------------------------------------------
BREAKER_LEVEL = {"closed": 0, "half_open": 1, "open": 2}


def plot_timelines(
    timeline: Any, kind: str, fault_start: float, fault_duration: float, duration: float | None = None
) -> Any:
    """Six stacked panels for one fault kind, a line per configuration, the fault window shaded.

    Rows are per-second counts, so a last, partial second (``duration`` not a whole number) is left
    out rather than drawn as a drop.
    """
    from matplotlib.figure import Figure

    frame = timeline[timeline["fault"] == kind]
    if duration is not None:
        frame = frame[frame["t"] + 1 <= duration]
    fig = Figure(figsize=(11, 12))
    axes = fig.subplots(6, 1, sharex=True)
    panels = (
        ("ok", "successful requests / s"),
        ("errors", "errors / s (5xx + 429 + transport)"),
        ("p99_ms", "latency ms (p99 solid, p50 dotted)"),
        ("hit_ratio", "cache hit ratio"),
        ("db_qps", "database statements / s"),
        ("breaker_level", "breaker"),
    )
    for config, group in frame.groupby("config", sort=False):
        group = group.sort_values("t")
        x = group["t"] + 0.5  # each row is the second [t, t+1)
        errors = group["errors_5xx"] + group["errors_429"] + group["errors_transport"]
        line = axes[0].plot(x, group["ok"], marker=".", label=config)[0]
        color = line.get_color()
        axes[1].plot(x, errors, marker=".", color=color)
        axes[2].plot(x, group["p99_ms"], marker=".", color=color)
        axes[2].plot(x, group["p50_ms"], ls=":", color=color)
        axes[3].plot(x, group["hit_ratio"], marker=".", color=color)
        if "db_qps" in group:
            axes[4].plot(x, group["db_qps"], marker=".", color=color)
        if "breaker" in group:
            level = group["breaker"].map(BREAKER_LEVEL)
            axes[5].step(group["t"], level, where="post", color=color)
    for ax, (_, label) in zip(axes, panels, strict=True):
        ax.axvspan(fault_start, fault_start + fault_duration, color="tab:red", alpha=0.12)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    axes[2].set_yscale("log")
    axes[3].set_ylim(-0.05, 1.05)
    axes[5].set_yticks([0, 1, 2], ["closed", "half-open", "open"])
    axes[5].set_ylim(-0.3, 2.3)
    axes[5].set_xlabel("seconds into the load (shaded: the fault)")
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"Redis outage: {KIND_LABELS.get(kind, kind)}")
    fig.tight_layout()
    return fig


def _fmt(value: Any, spec: str, missing: str = "n/a") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def findings(rows: Sequence[dict[str, Any]]) -> str:
    topologies = sorted({r.get("topology", TOPOLOGY) for r in rows})
    lines = [f"- **Topology**: {t} — {TOPOLOGIES.get(t, t)}." for t in topologies]
    for r in rows:
        opened = r["breaker_open_after_s"]
        breaker = (
            "the breaker never opened" if opened is None else f"the breaker was open within {opened:g} s"
        )
        back = r["hit_ratio_recovered_after_s"]
        recovered = (
            "the hit ratio had not recovered by the end of the run"
            if back is None
            else f"the hit ratio was back {back:g} s after the fault"
        )
        lines.append(
            f"- **{r['run']}**: {r['reads_5xx_during_fault']} reads failed (5xx) during the fault "
            f"({r['errors_during_fault']} errors of any kind, job POSTs included); p50/p99 during the fault "
            f"{_fmt(r['p50_fault_ms'], '.0f')}/{_fmt(r['p99_fault_ms'], '.0f')} ms against a steady p99 of "
            f"{_fmt(r['p99_steady_ms'], '.0f')} ms; {breaker}; the database took "
            f"{_fmt(r['extra_db_qps'], '.0f')} more statements/s; {recovered}; "
            f"{r['jobs_lost']} of {r['jobs_enqueued']} jobs lost, {r['jobs_redelivered']} delivered twice."
        )
    by = {r["run"]: r for r in rows}
    for kind in ("pause", "kill", "slow"):
        on, off = by.get(f"{kind}/breaker"), by.get(f"{kind}/no-breaker")
        if on and off and on["p50_fault_ms"] is not None and off["p50_fault_ms"] is not None:
            lines.append(
                f"- **Breaker vs none ({kind})**: median latency during the fault "
                f"{on['p50_fault_ms']:.0f} ms with the breaker, {off['p50_fault_ms']:.0f} ms without."
            )
    return "\n".join(lines)


def headlines(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for r in rows:
        name = r["run"]
        out[f"{name}: read 5xx during fault"] = r["reads_5xx_during_fault"]
        p99 = r["p99_fault_ms"]
        out[f"{name}: p99 during fault ms"] = None if p99 is None else round(p99, 1)
        opened = r["breaker_open_after_s"]
        out[f"{name}: breaker open after s"] = None if opened is None else round(opened, 2)
    out["jobs lost (all runs)"] = sum(int(r["jobs_lost"] or 0) for r in rows)
    return out
