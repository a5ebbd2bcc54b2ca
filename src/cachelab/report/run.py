"""``cachelab report``: run everything, write one folder an engineer attaches to a PR.

Steps (each bounded, each shown as it runs):

1. **benchmarks** — ``pytest --benchmark-only`` over ``bench/`` (a short
   measuring time in ``--quick``); every figure is also given as a ratio to
   the PING floor measured in the same run, because ratios survive a noisy
   machine and absolute times do not;
2. **load** — the dashboard mix under Locust against the sample app, cache
   off and cache-aside, side by side in the same run; the cache-aside run also
   feeds the capacity table;
3. **notebooks** — every ``notebooks/*.ipynb`` through papermill with the
   profile (TTL trade-offs, pipelining, cold vs warm, outages, stampede, rate
   limiters), executed copies and their HTML kept;
4. **summary** — ``metrics.json`` (what ``cachelab compare`` reads),
   ``summary.md`` (headlines, capacity table, SLOs, deltas against
   ``--baseline``) and a self-contained ``report.html``.

The exit code is 1 when an SLO fails or a step could not run.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import operator
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cachelab.report.capacity import EXAMPLE_PLANS, Plan, capacity_rows, headroom
from cachelab.report.compare import compare_metrics, deltas_markdown, load_metrics
from cachelab.report.manifest import build_manifest, git_info
from cachelab.report.render import fmt, md_table, write_html


@dataclass(frozen=True)
class Profile:
    name: str
    bench_args: tuple[str, ...]
    load_seconds: float
    load_users: int
    tenants: int
    initiatives_per_tenant: int


PROFILES = {
    "quick": Profile(
        "quick",
        # short timing; the peer libraries and the fakeredis comparison are left to --full
        ("--benchmark-max-time=0.005", "--benchmark-min-rounds=3", "--benchmark-warmup=off",
         "--ignore=bench/bench_peers.py", "--ignore=bench/bench_fakeredis.py"),
        load_seconds=8,
        load_users=10,
        tenants=3,
        initiatives_per_tenant=300,
    ),
    "full": Profile("full", (), load_seconds=60, load_users=30, tenants=5, initiatives_per_tenant=2000),
}

#: Default service-level objectives; ``--slo`` adds or overrides (same metric name).
DEFAULT_SLOS = (
    "load.cache_on.error_rate<0.01",
    "load.cache_on.p99_ms<1000",
    "outage.read_5xx_during_faults<=0",
    "outage.jobs_lost<=0",
)

#: Benchmarks lifted into the headline table (by name substring), with their meaning.
KEY_BENCHMARKS = (
    ("test_async_floor[ping]", "PING floor (async)"),
    ("test_async_floor[get_hit]", "raw GET (async)"),
    ("test_fetch_hit", "cache-aside hit"),
    ("test_naive_cache_aside_hit", "seed's cache-aside hit"),
    ("test_fetch_miss_fresh_key", "cache-aside miss (load + guarded fill)"),
    ("test_refresh_ahead", "refresh-ahead read"),
    ("test_naive_refresh_ahead", "seed's refresh-ahead read (GET + TTL)"),
    ("test_write_through", "write-through (version guard)"),
    ("test_check_allowed[gcra]", "GCRA rate check"),
    ("test_check_allowed[naive_fixed_window]", "seed's INCR+EXPIRE check"),
    ("test_session_get_and_slide", "session read-and-slide"),
    ("test_leaderboard_top10_with_member", "leaderboard top-10 + rank"),
    ("test_enqueue", "queue enqueue"),
)

_SLO_RE = re.compile(r"^\s*([\w.\-]+)\s*(<=|>=|<|>|==)\s*(-?[\d.]+)\s*$")
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
}


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


def evaluate_slos(metrics: dict[str, dict[str, Any]], slos: list[str]) -> list[dict[str, Any]]:
    chosen: dict[str, tuple[str, float, str]] = {}
    for text in slos:
        name, op, limit = parse_slo(text)
        chosen[name] = (op, limit, text.strip())
    results = []
    for name, (op, limit, text) in chosen.items():
        value = metrics.get(name, {}).get("value")
        missing = value is None or (isinstance(value, float) and math.isnan(value))
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


def _metric(value: Any, unit: str, better: str, noise: float) -> dict[str, Any]:
    return {"value": value, "unit": unit, "better": better, "noise": noise}


# -- steps -------------------------------------------------------------------
def run_benchmarks(folder: Path, profile: Profile, root: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    out = folder / "bench" / "benchmarks.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "bench",
        "--benchmark-only",
        f"--benchmark-json={out}",
        "-q",
        "-p",
        "no:cacheprovider",
        *profile.bench_args,
    ]
    log = folder / "bench" / "pytest.log"
    with log.open("wb") as fh:
        code = subprocess.run(cmd, cwd=root, stdout=fh, stderr=subprocess.STDOUT, timeout=1800).returncode
    if not out.is_file():
        raise RuntimeError(f"benchmarks produced no JSON (pytest exit {code}); see {log}")
    data = json.loads(out.read_text())
    rows = []
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        rows.append(
            {
                "name": b["name"],
                "group": b.get("group"),
                "median_us": b["stats"]["median"] * 1e6,
                "min_us": b["stats"]["min"] * 1e6,
                **{
                    k: info.get(k)
                    for k in (
                        "round_trips_per_op",
                        "commands_per_op",
                        "server_usec_per_op",
                        "bytes_in_per_op",
                        "bytes_out_per_op",
                    )
                },
            }
        )
    floor = next((r["median_us"] for r in rows if r["name"] == "test_async_floor[ping]"), None)
    floor = floor or next((r["median_us"] for r in rows if "ping" in r["name"].lower()), None)
    for r in rows:
        r["ratio_to_ping"] = r["median_us"] / floor if floor else None
    with (folder / "bench" / "benchmarks.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    return rows, {"pytest_exit": code, "benchmarks": len(rows), "ping_floor_us": floor}


def run_load(folder: Path, profile: Profile) -> dict[str, Any]:
    from cachelab.loadtest.runner import run_scenario

    results: dict[str, Any] = {}
    for label, mode in (("cache_off", "off"), ("cache_on", "cache-aside")):
        _progress(
            f"  load: dashboard mix, cache {mode}, {profile.load_users} users, {profile.load_seconds:.0f} s"
        )
        scenario = run_scenario(
            duration=profile.load_seconds,
            users=profile.load_users,
            spawn_rate=profile.load_users,
            think_time="0",  # closed loop at full speed: the throughput each mode sustains
            env={"CACHELAB_CACHE_MODE": mode, "CACHELAB_RATE_LIMIT": "1000000/60s"},
            results_dir=folder / "load" / label,
            tenants=profile.tenants,
            initiatives_per_tenant=profile.initiatives_per_tenant,
        )
        results[label] = {
            "summary": scenario.summary,
            "table": scenario.table(),
            "app_cpu": scenario.app_cpu,
            "generator_saturated": scenario.generator_saturated,
        }
    return results


def run_notebooks(folder: Path, profile: Profile, root: Path) -> list[dict[str, Any]]:
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    from cachelab.harness.kernels import kernel_options

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


# -- assembling ----------------------------------------------------------------
def collect_metrics(
    bench: list[dict[str, Any]],
    load: dict[str, Any],
    headlines: dict[str, dict[str, Any]],
    outages: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    m: dict[str, dict[str, Any]] = {}
    for r in bench:
        key = f"bench.{r['name']}"
        if r.get("ratio_to_ping") is not None:
            m[f"{key}.ratio_to_ping"] = _metric(round(r["ratio_to_ping"], 3), "x PING", "lower", 0.25)
        if r.get("round_trips_per_op") is not None:
            m[f"{key}.round_trips"] = _metric(r["round_trips_per_op"], "RT/op", "lower", 0.0)
        if r.get("server_usec_per_op") is not None:
            m[f"{key}.server_usec"] = _metric(round(r["server_usec_per_op"], 2), "µs/op", "lower", 0.3)
    for label, run in load.items():
        totals = run["summary"]["totals"]
        latency = totals.get("latency_ms") or {}
        requests = max(totals.get("requests") or 0, 1)
        m[f"load.{label}.rps"] = _metric(round(totals["rps"], 1), "req/s", "higher", 0.2)
        m[f"load.{label}.p50_ms"] = _metric(latency.get("p50"), "ms", "lower", 0.3)
        m[f"load.{label}.p99_ms"] = _metric(latency.get("p99"), "ms", "lower", 0.4)
        m[f"load.{label}.error_rate"] = _metric(
            round(totals["failures"] / requests, 5), "ratio", "lower", 0.0
        )
        if totals.get("hit_ratio") is not None:
            m[f"load.{label}.hit_ratio"] = _metric(round(totals["hit_ratio"], 3), "ratio", "higher", 0.05)
    if "cache_on" in load and "cache_off" in load:
        on, off = load["cache_on"]["summary"]["totals"]["rps"], load["cache_off"]["summary"]["totals"]["rps"]
        m["load.cache_speedup"] = _metric(round(on / off, 2) if off else None, "x", "higher", 0.2)
        rows = capacity_rows(load["cache_on"]["summary"])
        if rows:
            for key in ("redis_ops_per_s", "redis_commands_per_request", "redis_cpu_cores", "network_mb_s"):
                m[f"capacity.{key}_per_1k_rps"] = _metric(rows[key], key.split("_")[-1], "lower", 0.15)
    for nb, data in headlines.items():
        for label, value in (data.get("headlines") or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                m[f"{nb}.{label}"] = _metric(value, "", "none", 0.25)
    if outages:
        m["outage.read_5xx_during_faults"] = _metric(outages["read_5xx"], "requests", "lower", 0.0)
        m["outage.jobs_lost"] = _metric(outages["jobs_lost"], "jobs", "lower", 0.0)
    return m


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


def build_summary_md(
    *,
    folder: Path,
    manifest: dict[str, Any],
    steps: list[StepResult],
    bench: list[dict[str, Any]],
    bench_meta: dict[str, Any],
    load: dict[str, Any],
    headlines: dict[str, dict[str, Any]],
    slos: list[dict[str, Any]],
    plans: tuple[Plan, ...],
    deltas_md: str | None,
    notebooks: list[dict[str, Any]],
) -> str:
    git = manifest.get("git", {})
    params = manifest["parameters"]
    lines = [
        f"## cachelab report — `{folder.name}`",
        "",
        f"Commit `{git.get('short')}`{' (dirty)' if git.get('dirty') else ''} · "
        f"profile **{params['profile']}** · "
        f"Redis {manifest.get('redis', {}).get('version', '?')} · {manifest['machine']['cpus']} CPUs · "
        f"finished in {sum(s.seconds for s in steps):.0f} s",
        "",
    ]
    failed = [s for s in slos if not s["passed"]]
    lines.append(f"**SLOs: {'all passed' if not failed else f'{len(failed)} failed'}**")
    lines += [
        "",
        md_table(
            ["SLO", "measured", "result"],
            [
                [f"`{s['slo']}`", s["value"], ("pass" if s["passed"] else f"**FAIL** {s['note']}".strip())]
                for s in slos
            ],
        ),
        "",
    ]
    if load:
        lines += ["### Load: the dashboard mix, cache off vs cache-aside (same run)", ""]
        rows = []
        for label, run in load.items():
            t = run["summary"]["totals"]
            lat = t.get("latency_ms") or {}
            rows.append(
                [
                    label.replace("_", " "),
                    t["rps"],
                    lat.get("p50"),
                    lat.get("p99"),
                    t.get("hit_ratio"),
                    t["failures"],
                    "yes" if run["generator_saturated"] else "no",
                ]
            )
        lines += [
            md_table(
                ["run", "req/s", "p50 ms", "p99 ms", "hit ratio", "failures", "generator saturated"], rows
            ),
            "",
        ]
        cap = capacity_rows(load["cache_on"]["summary"]) if "cache_on" in load else None
        if cap:
            lines += [
                "### Capacity: per 1 000 requests/s of the dashboard mix (cache-aside)",
                "",
                md_table(
                    [
                        "Redis ops/s",
                        "commands/request",
                        "Redis CPU (cores)",
                        "server µs/request",
                        "network MB/s",
                        "working set MB",
                        "measured at req/s",
                    ],
                    [
                        [
                            cap["redis_ops_per_s"],
                            cap["redis_commands_per_request"],
                            cap["redis_cpu_cores"],
                            cap["redis_server_usec_per_request"],
                            cap["network_mb_s"],
                            cap["working_set_mb"],
                            cap["measured_rps"],
                        ]
                    ],
                ),
                "",
            ]
            rows = []
            for plan in plans:
                h = headroom(cap, plan)
                rows.append(
                    [plan.name, h["max_rps"], h["binding_limit"], "yes" if h["memory_fits"] else "NO"]
                )
            lines += [
                md_table(["plan", "max req/s of this mix", "binding limit", "working set fits"], rows),
                "",
                "_Plan limits are examples (`--plan name:ops=…,net=…,mem=…`); the per-request costs "
                "are what transfer between machines._",
                "",
            ]
    extra_capacity = [
        [row.get("row"), row.get("value"), row.get("unit", ""), row.get("note", "")]
        for _nb, data in sorted(headlines.items())
        for row in data.get("capacity") or []
    ]
    if extra_capacity:
        lines += [
            "### Capacity: memory, persistence and network distance",
            "",
            md_table(["", "value", "unit", "note"], extra_capacity),
            "",
        ]
    if bench:
        lines += [
            f"### Microbenchmarks ({bench_meta.get('benchmarks')} run; ratio to the PING floor of "
            f"{fmt(bench_meta.get('ping_floor_us'))} µs measured in the same run)",
            "",
        ]
        rows = []
        for needle, label in KEY_BENCHMARKS:
            match = next((r for r in bench if r["name"] == needle), None)
            if match:
                rows.append(
                    [
                        label,
                        match["ratio_to_ping"],
                        match["median_us"],
                        match["round_trips_per_op"],
                        match["server_usec_per_op"],
                    ]
                )
        lines += [md_table(["operation", "× PING", "median µs", "round trips", "server µs"], rows), ""]
    for nb, data in sorted(headlines.items()):
        items = data.get("headlines") or {}
        if items:
            lines += [f"### {data.get('title', nb)}", ""]
            lines += [f"- {k}: **{fmt(v)}**" for k, v in items.items()]
            lines.append("")
    if deltas_md:
        lines += [deltas_md, ""]
    problems = [s for s in steps if not s.ok] + [n for n in notebooks if n["error"]]
    if problems:
        lines += ["### Problems", ""]
        lines += [
            f"- step **{p.name}**: {p.note}"
            if isinstance(p, StepResult)
            else f"- notebook **{p['notebook']}**: {p['error']}"
            for p in problems
        ]
        lines.append("")
    lines += [
        "<sub>Timings drift ±20 % on shared machines: compare ratios from one run, and use "
        "`cachelab compare` (noise bands) between runs. Full data: `report.html`, `metrics.json`, "
        "`bench/`, `load/`, `notebooks/`.</sub>"
    ]
    return "\n".join(lines)


def run_report(
    *,
    profile_name: str = "quick",
    out: Path | None = None,
    results_root: Path = Path("results"),
    baseline: Path | None = None,
    slos: list[str] | None = None,
    plans: tuple[Plan, ...] = EXAMPLE_PLANS,
    skip: set[str] | None = None,
) -> ReportOutcome:
    profile = PROFILES[profile_name]
    skip = skip or set()
    slo_texts = [*DEFAULT_SLOS, *(slos or [])]
    for text in slo_texts:
        parse_slo(text)  # fail before spending minutes
    baseline_metrics = load_metrics(baseline) if baseline else None
    root = repo_root()
    if root is None:
        raise RuntimeError("cachelab report needs a source checkout (bench/, notebooks/, locustfiles/)")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = out or results_root / f"{stamp}-{git_info(root).get('short') or 'nogit'}"
    folder.mkdir(parents=True, exist_ok=True)
    _progress(f"writing {folder}")

    from cachelab.harness.redis_server import RedisServer

    with RedisServer() as probe:  # the Redis the experiments launch: record its version and config
        manifest = build_manifest(
            {
                "profile": profile.name,
                "slos": slo_texts,
                "baseline": str(baseline or ""),
                "skip": sorted(skip),
            },
            redis_url=probe.url,
        )
    outcome = ReportOutcome(folder=folder, exit_code=0)
    bench: list[dict[str, Any]] = []
    bench_meta: dict[str, Any] = {}
    load: dict[str, Any] = {}
    notebooks: list[dict[str, Any]] = []

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

    result = step("benchmarks", lambda: run_benchmarks(folder, profile, root))
    if result:
        bench, bench_meta = result
    load = step("load", lambda: run_load(folder, profile)) or {}
    notebooks = step("notebooks", lambda: run_notebooks(folder, profile, root)) or []

    figures_dir = folder / "figures"
    headlines = (
        {
            p.name.removesuffix("_summary.json"): json.loads(p.read_text())
            for p in sorted(figures_dir.glob("*_summary.json"))
        }
        if figures_dir.is_dir()
        else {}
    )
    outages = outage_totals(figures_dir) if figures_dir.is_dir() else {}
    metrics = collect_metrics(bench, load, headlines, outages)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    outcome.slos = evaluate_slos(metrics, slo_texts)
    deltas_md = None
    if baseline_metrics is not None:
        deltas_md = deltas_markdown(
            compare_metrics(baseline_metrics, metrics),
            title=f"Changes against the baseline `{Path(baseline).name}`",
        )
    manifest["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    manifest["steps"] = [s.__dict__ for s in outcome.steps]
    manifest["notebooks"] = notebooks
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    summary = build_summary_md(
        folder=folder,
        manifest=manifest,
        steps=outcome.steps,
        bench=bench,
        bench_meta=bench_meta,
        load=load,
        headlines=headlines,
        slos=outcome.slos,
        plans=plans,
        deltas_md=deltas_md,
        notebooks=notebooks,
    )
    (folder / "summary.md").write_text(summary + "\n", encoding="utf-8")
    figures = (
        [(p.stem.replace("_", " "), p) for p in sorted(figures_dir.glob("*.png"))]
        if figures_dir.is_dir()
        else []
    )
    write_html(folder, summary, figures, manifest)
    if load:
        (folder / "load" / "tables.txt").write_text(
            "\n\n".join(f"{k}\n{v['table']}" for k, v in load.items())
        )
    broken = any(not s.ok for s in outcome.steps) or any(n["error"] for n in notebooks)
    outcome.exit_code = 1 if broken or any(not s["passed"] for s in outcome.slos) else 0
    _progress(f"{'OK' if outcome.exit_code == 0 else 'FAILED'}: {folder / 'summary.md'}")
    return outcome
