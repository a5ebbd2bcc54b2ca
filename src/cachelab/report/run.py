"""``cachelab report``: run everything, write one folder an engineer attaches to a PR.

Steps (each bounded, each shown as it runs):

1. **benchmarks** — ``pytest --benchmark-only`` over ``bench/``, several
   times (trials); each trial's times are divided by that trial's floor (PING,
   or interpreter work for CPU-only rows), and the exact costs (round trips,
   commands, bytes, memory) are checked to agree between trials
   (:mod:`cachelab.report.bench_trials`);
2. **load** — the dashboard mix under Locust against the sample app, cache
   off and cache-aside, their trials interleaved after a warm-up
   (:mod:`cachelab.report.load_trials`); the cache-aside arm feeds the
   capacity table;
3. **notebooks** — every ``notebooks/*.ipynb`` through papermill with the
   profile, executed copies and their HTML kept;
4. **summary** — ``metrics.json`` (what ``cachelab compare`` reads; every
   trial kept), ``summary.md`` (verdicts, capacity, SLOs; short enough to
   paste) and a self-contained ``report.html`` (everything).

With ``--against REF`` the benchmark and load steps also measure REF,
checked out into a worktree with its own environment, trial for trial
alternating with this checkout (:mod:`cachelab.report.sides`), and the
summary leads with the verdict of this checkout against REF. With
``--against-server valkey`` they measure this checkout on a second server
family the same way, and the summary shows the two side by side
(:mod:`cachelab.report.servers`).

The exit code is 1 when an SLO fails or a step could not run (and, with
``--fail-on-regression``, when a regression is called).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import math
import operator
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cachelab.report import bench_trials, load_trials, servers, side_runs, stats
from cachelab.report.capacity import EXAMPLE_PLANS, Plan
from cachelab.report.compare import Row, compare_metrics, failures, not_measured_by, verdict_markdown
from cachelab.report.manifest import build_manifest, git_info, redis_info
from cachelab.report.metrics import Metric, exact, info, load_metrics, step_of, timed, write_metrics
from cachelab.report.render import write_html
from cachelab.report.sides import Side, base_checkout, resolve, this_checkout
from cachelab.report.summary import GUIDE_PAIRS, HOTPATH_PAIRS, PEER_PAIRS, PairRow, SummaryInput, build


@dataclass(frozen=True)
class Profile:
    name: str
    bench_trials: int
    bench_args: tuple[str, ...]
    load: load_trials.LoadPlan
    bench_ops_scale: float = 1.0  # CACHELAB_BENCH_OPS_SCALE: shorter rounds, more of them


PROFILES = {
    "quick": Profile(
        "quick",
        bench_trials=4,
        bench_ops_scale=0.25,
        # short timing; the peer libraries and the fakeredis comparison are left to --full
        bench_args=(
            "--benchmark-max-time=0.02",
            "--benchmark-min-rounds=5",
            "--benchmark-warmup=off",
            "--ignore=bench/bench_peers.py",
            "--ignore=bench/bench_fakeredis.py",
            # CPU-only rows (serializers, client parsers, the harness's own overhead) say nothing
            # about a change to the patterns' Redis work; --full runs them.
            "--ignore=bench/bench_serializers.py",
            "--ignore=bench/bench_clients.py",
            "--ignore=bench/bench_harness.py",
        ),
        load=load_trials.LoadPlan(
            trials=4,
            seconds=4,
            warmup_seconds=3,
            trial_warmup=1,
            users=6,
            tenants=3,
            initiatives_per_tenant=300,
        ),
    ),
    "full": Profile(
        "full",
        bench_trials=5,
        bench_args=(),
        load=load_trials.LoadPlan(
            trials=6,
            seconds=15,
            warmup_seconds=10,
            trial_warmup=3,
            users=12,
            tenants=5,
            initiatives_per_tenant=2000,
        ),
    ),
}

#: Default service-level objectives; ``--slo`` adds or overrides (same metric name).
DEFAULT_SLOS = (
    "load.cache_on.errors<0.01",
    "load.cache_on.p99_ms<1000",
    "outage.read_5xx_during_faults<=0",
    "outage.jobs_lost<=0",
)

_SLO_RE = re.compile(r"^\s*([\w.\-]+)\s*(<=|>=|<|>|==)\s*(-?[\d.]+)\s*$")
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
}
#: The base's load arms are named with this prefix (``base-cache_on``); the candidate's have none.
BASE_PREFIX = "base-"
#: The load metrics compared between cache-aside and no cache in the summary: (metric, label).
CACHE_COMPARISON = (
    ("rps", "requests/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("db_statements_per_request", "SQL statements/request"),
    ("redis_commands_per_request", "Redis commands/request"),
)


@dataclass
class StepResult:
    name: str
    ok: bool
    seconds: float
    note: str = ""


@dataclass
class ReportOutcome:
    folder: Path
    exit_code: int
    steps: list[StepResult] = field(default_factory=list)
    slos: list[dict[str, Any]] = field(default_factory=list)
    regressions: list[Row] = field(default_factory=list)  # and judged metrics gone missing


def repo_root() -> Path | None:
    """The source checkout holding bench/, notebooks/ and locustfiles/ (None when installed elsewhere)."""
    import cachelab

    root = Path(cachelab.__file__).resolve().parents[2]
    return root if (root / "bench").is_dir() and (root / "notebooks").is_dir() else None


def parse_slo(text: str) -> tuple[str, str, float]:
    match = _SLO_RE.match(text)
    if not match:
        raise ValueError(f"bad SLO {text!r}: expected metric<op>number, e.g. load.cache_on.p99_ms<200")
    return match.group(1), match.group(2), float(match.group(3))




def evaluate_slos(
    metrics: dict[str, Metric], slos: list[str], *, skipped: set[str] = frozenset()
) -> list[dict[str, Any]]:
    """Each SLO against its metric's value (the median of its trials, or the pooled proportion).

    ``passed`` is None for a metric of a step that was skipped: not measured is not failed.
    """
    chosen: dict[str, tuple[str, float, str]] = {}
    for text in slos:
        name, op, limit = parse_slo(text)
        chosen[name] = (op, limit, text.strip())
    results = []
    for name, (op, limit, text) in chosen.items():
        metric = metrics.get(name)
        value = metric.value if metric is not None else None
        missing = not isinstance(value, int | float) or (isinstance(value, float) and math.isnan(value))
        if missing and (step := step_of(name)) in skipped:  # an SLO on a skipped step's metric: not evaluated
            results.append({"slo": text, "value": None, "passed": None, "note": f"{step} step skipped"})
            continue
        results.append(
            {
                "slo": text,
                "value": value,
                "passed": (not missing) and _OPS[op](value, limit),
                "note": "no data" if missing else "",
            }
        )
    return results


def _progress(message: str) -> None:
    print(f"cachelab report: {message}", file=sys.stderr, flush=True)


# -- notebooks ---------------------------------------------------------------------------
def run_notebooks(folder: Path, profile: Profile, root: Path) -> list[dict[str, Any]]:
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    from cachelab.servers.kernels import kernel_options

    figures = folder / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    executed = folder / "notebooks"
    executed.mkdir(exist_ok=True)
    outcomes = []
    for nb in sorted((root / "notebooks").glob("*.ipynb")):
        started = time.monotonic()
        _progress(f"  notebook {nb.name}")
        target = executed / nb.name
        error = ""
        try:
            papermill.execute_notebook(
                str(nb),
                str(target),
                parameters={"profile": profile.name, "out_dir": str(figures)},
                kernel_name="python3",
                progress_bar=False,
                cwd=str(root / "notebooks"),
                **kernel_options(),
            )
        except Exception as exc:  # a failed notebook is reported, the others still run
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        if target.exists():
            body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(target), as_version=4))
            target.with_suffix(".html").write_text(body, encoding="utf-8")
        outcomes.append(
            {"notebook": nb.stem, "seconds": round(time.monotonic() - started, 1), "error": error}
        )
    return outcomes


def outage_totals(figures: Path) -> dict[str, Any]:
    """Sum the outage notebook's per-configuration summaries (``04_outages.json``)."""
    path = figures / "04_outages.json"
    if not path.is_file():
        return {}
    runs = json.loads(path.read_text())
    runs = runs.get("runs", runs) if isinstance(runs, dict) else runs
    summaries = [r.get("summary", r) for r in (runs if isinstance(runs, list) else [])]
    return {
        "runs": summaries,
        "read_5xx": sum(int(s.get("reads_5xx_during_fault", 0) or 0) for s in summaries),
        "jobs_lost": sum(int(s.get("jobs_lost", 0) or 0) for s in summaries),
    }


def notebook_metrics(headlines: dict[str, dict[str, Any]], outages: dict[str, Any]) -> dict[str, Metric]:
    """Notebook headlines are single measurements: shown and kept, not judged (``info``)."""
    m: dict[str, Metric] = {}
    for nb, data in headlines.items():
        for label, value in (data.get("headlines") or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                m[f"{nb}.{label}"] = info(value)
    if outages:
        m["outage.read_5xx_during_faults"] = exact(outages["read_5xx"], "requests")
        m["outage.jobs_lost"] = exact(outages["jobs_lost"], "jobs")
    return m


# -- within-run comparisons ----------------------------------------------------------------
def cache_rows(metrics: dict[str, Metric]) -> list[tuple[str, Row]]:
    """Cache-aside against no cache, trial pair by trial pair (they ran back to back)."""
    before = {
        k: metrics[f"load.cache_off.{k}"] for k, _ in CACHE_COMPARISON if f"load.cache_off.{k}" in metrics
    }
    after = {k: metrics[f"load.cache_on.{k}"] for k, _ in CACHE_COMPARISON if f"load.cache_on.{k}" in metrics}
    rows = {r.name: r for r in compare_metrics(before, after, paired=True)}
    return [(label, rows[k]) for k, label in CACHE_COMPARISON if k in rows]


def pair_rows(
    trials: list[bench_trials.TrialRows],
    metrics: dict[str, Metric],
    pairs: tuple[tuple[str, str, str], ...] = GUIDE_PAIRS,
) -> list[PairRow]:
    """Our benchmark's time over another's (the guide's version, a peer library), trial by trial
    (the same pass, so the same moment of the machine)."""
    out = []
    for what, ours, guide in pairs:
        pairs = [(t[guide]["median_us"], t[ours]["median_us"]) for t in trials if ours in t and guide in t]
        if not pairs:
            continue
        a = timed([p[0] for p in pairs], "µs/op", "lower")
        b = timed([p[1] for p in pairs], "µs/op", "lower")
        row = compare_metrics({"time": a}, {"time": b}, paired=True)[0]
        rt = [metrics.get(f"bench.{name}.round_trips") for name in (ours, guide)]
        out.append((what, row, *(m.value if m else None for m in rt)))
    return out


# -- the run ---------------------------------------------------------------------------
def _check_redis_url() -> None:
    """``REDIS_URL`` (the benchmarks' server) must answer before minutes are spent: one line if not.

    The load runs and notebooks launch servers of their own either way (they kill, pause and
    reconfigure them), so only the benchmarks use it.
    """
    from cachelab.app.preflight import redis_problem
    from cachelab.config import load_settings

    url = load_settings().redis_url
    if url and (problem := redis_problem(url, timeout=3.0)):
        raise RuntimeError(f"REDIS_URL does not answer: {problem}")


def _prepare_folder(
    out: Path | None, results_root: Path, root: Path, *, allow_existing: bool = False
) -> Path:
    if out is not None:
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} exists and is not a folder")
        if out.exists() and any(out.iterdir()) and not allow_existing:
            raise ValueError(f"--out {out} exists and is not empty; choose a new folder")
        folder = out
    else:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        folder = results_root / f"{stamp}-{git_info(root).get('short') or 'nogit'}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_report(
    *,
    profile_name: str = "quick",
    out: Path | None = None,
    results_root: Path | None = None,
    baseline: Path | None = None,
    against: str | None = None,
    against_server: str | None = None,
    slos: list[str] | None = None,
    plans: tuple[Plan, ...] = EXAMPLE_PLANS,
    skip: set[str] | None = None,
    bench_select: str | None = None,
    fail_on_regression: bool = False,
    allow_existing: bool = False,
    trials: int | None = None,
) -> ReportOutcome:
    """Run the report (see the module docstring); ``allow_existing`` writes into a non-empty ``out``
    (e.g. one already holding notebook summaries made elsewhere), which the CLI never does;
    ``trials`` overrides the profile's benchmark and load trials per side."""
    profile = PROFILES[profile_name]
    if trials is not None:
        if trials < 2:
            raise ValueError("--trials must be at least 2: one trial has no spread to judge a change by")
        profile = replace(profile, bench_trials=trials, load=replace(profile.load, trials=trials))
    skip = skip or set()
    slo_texts = [*DEFAULT_SLOS, *(slos or [])]
    for text in slo_texts:
        parse_slo(text)  # fail before spending minutes
    baseline_metrics = load_metrics(baseline) if baseline else None
    root = repo_root()
    if root is None:
        raise RuntimeError("cachelab report needs a source checkout (bench/, notebooks/, locustfiles/)")
    if against:
        resolve(root, against)  # a ref that names no commit fails now, in one line, not after minutes
    server_pair = _server_pair(root, against_server, against)
    _check_redis_url()
    folder = _prepare_folder(out, results_root or root / "results", root, allow_existing=allow_existing)
    _progress(f"writing {folder}")

    from cachelab.servers.redis_server import RedisServer, find_redis_server

    with RedisServer() as probe:  # the Redis the experiments launch: record its version and config
        manifest = build_manifest(
            {
                "profile": profile.name,
                "bench_trials": profile.bench_trials,
                "load": profile.load.__dict__,
                "slos": slo_texts,
                "baseline": str(baseline or ""),
                "against": against or "",
                "against_server": against_server or "",
                "skip": sorted(skip),
                "bench_select": bench_select or "",
            },
            redis_url=probe.url,
            root=root,
        )
    if server_pair:
        with RedisServer(binary=find_redis_server(env=server_pair[1].environ())) as other:
            manifest["against_server"] = redis_info(other.url)
    outcome = ReportOutcome(folder=folder, exit_code=0)

    def step(name: str, fn: Callable[[], Any]) -> Any:
        if name in skip:
            _progress(f"[{name}] skipped")
            return None
        _progress(f"[{name}] …")
        started = time.monotonic()
        try:
            value = fn()
            outcome.steps.append(StepResult(name, True, time.monotonic() - started))
            _progress(f"[{name}] done in {time.monotonic() - started:.0f} s")
            return value
        except Exception as exc:
            outcome.steps.append(
                StepResult(name, False, time.monotonic() - started, f"{type(exc).__name__}: {exc}")
            )
            _progress(f"[{name}] FAILED: {exc}")
            return None

    candidate = server_pair[0] if server_pair else this_checkout(root, "candidate" if against else "this")
    base_prefix = f"{server_pair[1].label}-" if server_pair else BASE_PREFIX
    with contextlib.ExitStack() as stack:
        sides: list[Side] = [server_pair[1], candidate] if server_pair else [candidate]
        if against:
            base = step(
                "checkout", lambda: stack.enter_context(base_checkout(root, against, progress=_progress))
            )
            if base is None:  # reported as a failed step; this checkout is still measured
                against = None
        if against:
            sides = [base, candidate]
            manifest["parameters"]["against_commit"] = base.commit
        bench = (
            step(
                "benchmarks",
                lambda: bench_trials.run_trials(
                    folder,
                    sides,
                    trials=profile.bench_trials,
                    bench_args=profile.bench_args,
                    select=bench_select,
                    env={"CACHELAB_BENCH_OPS_SCALE": f"{profile.bench_ops_scale:g}"},
                    progress=_progress,
                ),
            )
            or {}
        )
        prefixed = [(sides[0], base_prefix), (candidate, "")] if len(sides) > 1 else [(candidate, "")]
        arms = [
            load_trials.Arm(f"{prefix}{label}", side, mode)
            for side, prefix in prefixed
            for label, mode in (("cache_off", "off"), ("cache_on", "cache-aside"))
        ]
        load = (
            step("load", lambda: load_trials.run_trials(folder, arms, profile.load, progress=_progress)) or {}
        )
    notebooks = step("notebooks", lambda: run_notebooks(folder, profile, root)) or []
    side_lines: list[str] = []
    if profile.name == "full":  # their own interleaved verdicts; about two minutes together
        step("peers", lambda: side_runs.run_peers(folder))
        step("hotpath", lambda: side_runs.run_hotpath(folder))
        side_lines = side_runs.summary_lines(folder)

    # -- assemble -------------------------------------------------------------------
    metrics, capacity = _side_metrics(candidate.label, bench, load, prefix="", other=base_prefix)
    base_metrics = (
        _side_metrics(sides[0].label, bench, load, prefix=base_prefix, other="")[0] if len(sides) > 1 else {}
    )
    figures_dir = folder / "figures"
    headlines = (
        {
            p.name.removesuffix("_summary.json"): json.loads(p.read_text())
            for p in sorted(figures_dir.glob("*_summary.json"))
        }
        if figures_dir.is_dir()
        else {}
    )
    metrics.update(notebook_metrics(headlines, outage_totals(figures_dir) if figures_dir.is_dir() else {}))
    write_metrics(folder / "metrics.json", metrics)
    if against:
        write_metrics(folder / "base_metrics.json", base_metrics)
    if server_pair:
        write_metrics(folder / f"{server_pair[1].label}_metrics.json", base_metrics)
    outcome.slos = evaluate_slos(metrics, slo_texts, skipped=skip)

    comparison: tuple[str, list[Row]] | None = None
    chose_not_to = not_measured_by({"skip": sorted(skip), "bench_select": bench_select})
    if against:
        rows = compare_metrics(base_metrics, metrics, paired=True, not_measured=chose_not_to)
        comparison = (
            f"`{against}` ({(manifest['parameters'].get('against_commit') or '')[:12]}), interleaved",
            rows,
        )
    elif baseline_metrics is not None:
        rows = compare_metrics(baseline_metrics, metrics, not_measured=chose_not_to)
        comparison = (f"the baseline `{Path(baseline).name}`", rows)
    if comparison:
        outcome.regressions = failures(comparison[1])
        (folder / "verdict.md").write_text(_verdict_full(comparison), encoding="utf-8")
    servers_section = None
    if server_pair and base_metrics:
        servers_section = _servers_section(manifest, bench, sides, base_metrics, metrics)
        # Both servers ran the benchmarks and the load; only this run's server ran the notebooks.
        measured_on_both = {k: m for k, m in metrics.items() if k.startswith(("bench.", "load."))}
        every = compare_metrics(measured_on_both, base_metrics, paired=True, not_measured=chose_not_to)
        title = f"{servers_section.candidate_label} against {servers_section.base_label}"
        (folder / "servers.md").write_text(
            verdict_markdown(every, title=title) + "\n", encoding="utf-8"
        )

    cand_trials = bench.get(candidate.label, [])
    manifest["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    manifest["steps"] = [s.__dict__ for s in outcome.steps]
    manifest["notebooks"] = notebooks
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    problems = [f"step **{s.name}**: {s.note}" for s in outcome.steps if not s.ok]
    problems += [f"notebook **{n['notebook']}**: {n['error']}" for n in notebooks if n["error"]]
    summary_md = build(
        SummaryInput(
            title=f"cachelab report — `{folder.name}`",
            context_line=_context_line(manifest, outcome.steps),
            slos=outcome.slos,
            cache_rows=cache_rows(metrics) if load else [],
            guide_rows=pair_rows(cand_trials, metrics) if cand_trials else [],
            peer_rows=pair_rows(cand_trials, metrics, PEER_PAIRS) if cand_trials else [],
            hotpath_rows=pair_rows(cand_trials, metrics, HOTPATH_PAIRS) if cand_trials else [],
            side_lines=side_lines,
            capacity=capacity,
            plans=plans,
            against=comparison,
            problems=problems,
            trials_line=_trials_line(profile, load),
            hit_line=_hit_line(metrics.get("load.cache_on.miss_ratio")),
            extra_capacity=_notebook_capacity(headlines),
            servers=servers_section,
        )
    )
    (folder / "summary.md").write_text(summary_md + "\n", encoding="utf-8")
    _write_tables(folder, cand_trials, load)
    figures = (
        [(p.stem.replace("_", " "), p) for p in sorted(figures_dir.glob("*.png"))]
        if figures_dir.is_dir()
        else []
    )
    write_html(
        folder,
        summary_md,
        figures,
        manifest,
        metrics=metrics,
        headlines=headlines,
        verdict=comparison[1] if comparison else None,
    )
    broken = any(not s.ok for s in outcome.steps) or any(n["error"] for n in notebooks)
    failed = broken or any(s["passed"] is False for s in outcome.slos)
    outcome.exit_code = 1 if failed or (fail_on_regression and outcome.regressions) else 0
    _progress(f"{'OK' if outcome.exit_code == 0 else 'FAILED'}: {folder / 'summary.md'}")
    return outcome


def _side_metrics(
    label: str,
    bench: dict[str, list[bench_trials.TrialRows]],
    load: dict[str, list[load_trials.Trial]],
    *,
    prefix: str,
    other: str,
) -> tuple[dict[str, Metric], dict[str, Any] | None]:
    """One side's bench and load metrics under the same names for both sides (so they compare),
    and its capacity table; ``prefix`` names its load arms, ``other`` the other side's."""
    metrics: dict[str, Metric] = {}
    if bench.get(label):
        metrics.update(bench_trials.bench_metrics(bench[label]))
    arms = {
        arm.removeprefix(prefix): trials
        for arm, trials in load.items()
        if (arm.startswith(prefix) if prefix else not (other and arm.startswith(other)))
    }
    for arm, trials in arms.items():
        metrics.update(load_trials.arm_metrics(arm, trials))
    capacity, cap_metrics = load_trials.capacity_metrics(arms.get("cache_on", []))
    metrics.update(cap_metrics)
    if arms.get("cache_on") and arms.get("cache_off"):
        speedups = [
            on["totals"]["rps"] / off["totals"]["rps"]
            for on, off in zip(arms["cache_on"], arms["cache_off"], strict=False)
            if off["totals"]["rps"]
        ]
        metrics["load.cache_speedup"] = timed(speedups, "× requests/s", "higher")
    return metrics, capacity


def _hit_line(miss: Metric | None) -> str:
    """The hit ratio as what it costs: misses of lookups, with a binomial interval."""
    if miss is None or not miss.lookups or not sum(miss.lookups):
        return ""
    misses, lookups = sum(miss.events), sum(miss.lookups)
    low, high = stats.binomial_interval(misses, lookups)
    return (
        f"Hit ratio {1 - misses / lookups:.3f}: {misses:,} misses of {lookups:,} cacheable lookups, "
        f"miss ratio {misses / lookups:.3f} [{low:.3f}–{high:.3f}] (Wilson 95 %); each miss is a "
        "database read."
    )


def _trials_line(profile: Profile, load: dict[str, list[load_trials.Trial]]) -> str:
    plan = profile.load
    measured = [t["meta"]["duration_s"] for trials in load.values() for t in trials if t.get("meta")]
    window = f"{statistics.median(measured):.1f} s measured" if measured else f"{plan.seconds:g} s"
    pause = plan.think_time.replace(",", "–")  # "0.01,0.03" is Locust's between(0.01, 0.03)
    return (
        f"{profile.bench_trials} benchmark trials; {plan.trials} load trials per arm ({window} each, after "
        f"{plan.trial_warmup:g} s left out), {plan.users} users pausing {pause} s between requests."
    )


def _notebook_capacity(headlines: dict[str, dict[str, Any]]) -> list[list[Any]]:
    return [
        [row.get("row"), row.get("value"), row.get("unit", ""), row.get("note", "")]
        for _nb, data in sorted(headlines.items())
        for row in data.get("capacity") or []
    ]


def _context_line(manifest: dict[str, Any], steps: list[StepResult]) -> str:
    git = manifest.get("git", {})
    params = manifest["parameters"]
    dirty = " (dirty)" if git.get("dirty") else ""
    return (
        f"Commit `{git.get('short')}`{dirty} · profile **{params['profile']}** · "
        f"{_server_label(manifest.get('redis'))} · {manifest['machine']['cpus']} CPUs · "
        f"finished in {sum(s.seconds for s in steps):.0f} s"
    )


def _server_pair(root: Path, against_server: str | None, against: str | None) -> tuple[Side, Side] | None:
    """(this checkout on this server, on the other) for ``--against-server``; checked before any work."""
    if not against_server:
        return None
    if against:
        raise ValueError("--against compares commits, --against-server servers: use one at a time")
    from cachelab.config import load_settings

    if load_settings().redis_url:
        raise ValueError("--against-server launches both servers itself: unset REDIS_URL")
    return servers.server_sides(root, against_server)


def _servers_section(
    manifest: dict[str, Any],
    bench: dict[str, list[bench_trials.TrialRows]],
    sides: list[Side],
    base_metrics: dict[str, Metric],
    metrics: dict[str, Metric],
) -> servers.ServersSection:
    # The question asked is "what if we ran on the other one": it is the candidate, ours the base.
    other, ours = sides
    trials = bench.get(ours.label, []), bench.get(other.label, [])
    return servers.ServersSection(
        base_label=_server_label(manifest.get("redis")),
        candidate_label=_server_label(manifest.get("against_server")),
        bench=servers.bench_rows(*trials, metrics, base_metrics),
        load=servers.load_rows(metrics, base_metrics),
    )


def _server_label(server: dict[str, Any] | None) -> str:
    """A manifest's server record as "Valkey 8.1.8" (older manifests have no label: Redis)."""
    server = server or {}
    return server.get("label") or f"Redis {server.get('version', '?')}"


def _verdict_full(comparison: tuple[str, list[Row]]) -> str:
    from cachelab.report.compare import verdict_markdown

    return verdict_markdown(comparison[1], title=f"Against {comparison[0]}") + "\n"


def _write_tables(folder: Path, trials: list[bench_trials.TrialRows], load: dict[str, Any]) -> None:
    if trials:
        rows = bench_trials.summary_rows(trials)
        with (folder / "bench" / "benchmarks.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    for arm, summaries in load.items():
        with (folder / "load" / arm / "trials.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["trial", "requests", "rps", "p50_ms", "p99_ms", "hit_ratio", "failures"])
            for k, s in enumerate(summaries, 1):
                t = s["totals"]
                lat = t.get("latency_ms") or {}
                writer.writerow(
                    [
                        k,
                        t["requests"],
                        t["rps"],
                        lat.get("p50"),
                        lat.get("p99"),
                        t.get("hit_ratio"),
                        t["failures"],
                    ]
                )
