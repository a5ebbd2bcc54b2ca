"""``cachelab compare A B`` and the report's own comparisons: verdicts, not deltas.

Every metric both sides have is compared by its kind (:mod:`cachelab.report.metrics`):
exact metrics by equality, timed metrics from their trials, miss ratios as
proportions; the p-values of all statistical comparisons together go through
Benjamini–Hochberg (:mod:`cachelab.report.stats`), so a hundred metrics do not
produce five false "regressions" by chance. The output reads as a verdict:
regressions first, then improvements, then one line saying how much did not
change — each row with its ratio, interval and why it was called.

Two separate runs (``cachelab compare``) are compared as independent samples
with the larger minimum effects (:func:`cachelab.report.stats.min_effect_for`);
base and candidate interleaved in one run
(``cachelab report --against``) pair trial *i* of one with trial *i* of the
other and may call smaller changes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachelab.report import stats
from cachelab.report.bench_trials import FLOOR
from cachelab.report.metrics import Metric, load_metrics, step_of

MISSING = "missing"


@dataclass(frozen=True)
class Row:
    name: str
    kind: str
    unit: str
    before: float | None
    after: float | None
    verdict: str
    why: str
    comparison: stats.Comparison | None = None

    @property
    def judged(self) -> bool:
        return self.verdict in (stats.REGRESSION, stats.IMPROVEMENT, stats.CHANGED, stats.NO_CHANGE, MISSING)


def _statistical(before: Metric, after: Metric, *, paired: bool) -> stats.Comparison | None:
    if before.kind == "proportion" and after.kind == "proportion":
        return stats.compare_proportions(before.events, before.lookups, after.events, after.lookups)
    if paired and len(before.samples) == len(after.samples):
        return stats.compare_paired(before.samples, after.samples)
    return stats.compare_trials(before.samples, after.samples)


def compare_metrics(
    before: Mapping[str, Metric],
    after: Mapping[str, Metric],
    *,
    paired: bool = False,
    min_effect: float | None = None,
    not_measured: Callable[[str], bool] = lambda name: False,
) -> list[Row]:
    """Judge every metric of ``after`` against ``before`` (see the module docstring).

    A metric the baseline judged and the candidate lacks is **missing** (a step
    that failed, a benchmark that stopped running) unless ``not_measured(name)``
    says the candidate chose not to measure it (a skipped step, a benchmark
    selection): a gate must not pass a run because it measured less.
    """
    rows: list[Row] = []
    pending: list[tuple[str, Metric, Metric, stats.Comparison]] = []
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        spec = b or a
        assert spec is not None
        va, vb = (a.value if a else None), (b.value if b else None)
        if a is None:
            rows.append(Row(name, spec.kind, spec.unit, va, vb, stats.NOT_COMPARED, "only in the candidate"))
            continue
        if b is None:
            if a.kind == "info" or not_measured(name):
                rows.append(Row(name, a.kind, a.unit, va, vb, stats.NOT_COMPARED, "not measured this time"))
            else:
                why = "measured in the baseline, missing here"
                rows.append(Row(name, a.kind, a.unit, va, vb, MISSING, why))
            continue
        if a.kind != b.kind:
            rows.append(
                Row(name, b.kind, b.unit, va, vb, stats.NOT_COMPARED, f"kind changed: {a.kind} → {b.kind}")
            )
            continue
        if b.kind == "info":
            rows.append(Row(name, b.kind, b.unit, va, vb, stats.NOT_COMPARED, "descriptive"))
            continue
        if b.kind == "exact":
            if not _number(va) or not _number(vb):
                rows.append(Row(name, b.kind, b.unit, va, vb, stats.NOT_COMPARED, "no value"))
                continue
            verdict, why = stats.compare_exact(float(va), float(vb), better=b.better)
            rows.append(Row(name, b.kind, b.unit, va, vb, verdict, why))
            continue
        comparison = _statistical(a, b, paired=paired)
        if comparison is None:
            rows.append(Row(name, b.kind, b.unit, va, vb, stats.NOT_COMPARED, "fewer than two trials a side"))
            continue
        pending.append((name, a, b, comparison))
    adjusted = stats.control_fdr([p[3] for p in pending])
    for (name, a, b, _), comparison in zip(pending, adjusted, strict=True):
        minimum = min_effect
        if minimum is None:
            minimum = b.min_effect or stats.min_effect_for(name, paired=paired)
        called = stats.call(comparison, better=b.better, min_effect=minimum)
        rows.append(Row(name, b.kind, b.unit, a.value, b.value, called.verdict, called.why, called))
    return rows


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def fmt_value(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def fmt_ratio(row: Row) -> str:
    c = row.comparison
    if c is None:
        return "–"
    if not math.isfinite(c.ratio):
        return "∞"
    if c.low == c.high:
        return f"{c.ratio:.3g}×"
    return f"{c.ratio:.3g}× [{c.low:.3g}–{c.high:.3g}]"


def regressions(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r.verdict == stats.REGRESSION]


def missing(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r.verdict == MISSING]


def failures(rows: list[Row]) -> list[Row]:
    """What ``--fail-on-regression`` fails on: regressions, and judged metrics that went missing."""
    return [r for r in rows if r.verdict in (stats.REGRESSION, MISSING)]


def verdict_markdown(rows: list[Row], *, title: str, limit: int | None = None) -> str:
    """Regressions, then improvements, then real changes without a direction, then one counting line."""
    lines = [f"### {title}", ""]
    order = (stats.REGRESSION, stats.IMPROVEMENT, stats.CHANGED)
    shown = [r for verdict in order for r in rows if r.verdict == verdict]
    if shown:
        lines += [
            "| verdict | metric | before | after | ratio [95 % CI] | why |",
            "|---|---|---:|---:|---|---|",
        ]
        for r in shown[:limit] if limit else shown:
            lines.append(
                f"| **{r.verdict}** | `{r.name}` ({r.unit}) | {fmt_value(r.before)} | {fmt_value(r.after)} | "
                f"{fmt_ratio(r)} | {r.why} |"
            )
        if limit and len(shown) > limit:
            lines.append(f"| … | {len(shown) - limit} more in `report.html` | | | | |")
        lines.append("")
    gone = missing(rows)
    if gone:
        families = sorted({r.name.split("[")[0].rsplit(".", 1)[0] for r in gone})
        listed = ", ".join(f"`{f}`" for f in families[:8]) + (" …" if len(families) > 8 else "")
        lines += [
            f"**{len(gone)} metric(s) missing**: measured in the baseline, not here, though nothing was "
            f"skipped or deselected ({listed}). A step failed or a benchmark stopped running.",
            "",
        ]
    unchanged = [r for r in rows if r.verdict == stats.NO_CHANGE]
    exact_same = sum(r.kind == "exact" for r in unchanged)
    not_compared = sum(not r.judged for r in rows)
    counts = {v: sum(r.verdict == v for r in rows) for v in order}
    lines.append(
        f"**{counts[stats.REGRESSION]} regression(s), {counts[stats.IMPROVEMENT]} improvement(s)"
        + (f", {counts[stats.CHANGED]} change(s)" if counts[stats.CHANGED] else "")
        + f"; {len(unchanged)} metrics unchanged** ({exact_same} exact and identical, "
        f"{len(unchanged) - exact_same} timed within their interval or under the minimum effect)"
        + (
            f"; {not_compared} not compared (descriptive, one-sided or too few trials)."
            if not_compared
            else "."
        )
    )
    return "\n".join(lines)


def _manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "manifest.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def manifest_warnings(a: str | Path, b: str | Path) -> list[str]:
    """Differences between two runs' manifests that make their numbers hard to compare."""
    ma, mb = _manifest(a), _manifest(b)
    warnings = []
    for label, path in (
        ("machine", ("machine", "platform")),
        ("CPU count", ("machine", "cpus")),
        ("Redis version", ("redis", "version")),
        ("profile", ("parameters", "profile")),
    ):
        va, vb = ma.get(path[0], {}).get(path[1]), mb.get(path[0], {}).get(path[1])
        if va != vb:
            warnings.append(f"{label} differs: {va} vs {vb}")
    return warnings


#: Measured by every run with benchmarks, and changed by no commit: the machine's own round trip.
FLOOR_METRIC = f"bench.{FLOOR}.median_us"


def drift_warnings(before: Mapping[str, Metric], after: Mapping[str, Metric]) -> list[str]:
    """Two runs whose PING floor differs were measured on a machine in different states (another
    job on its cores, a CPU idling deeper): their timed verdicts are suspect, and interleaving
    (``cachelab report --against``) is the way to compare them."""
    a, b = before.get(FLOOR_METRIC), after.get(FLOOR_METRIC)
    if a is None or b is None or not (_number(a.value) and _number(b.value)) or not a.value:
        return []
    ratio = float(b.value) / float(a.value)
    if not stats.beyond(ratio, stats.MIN_EFFECT_SEPARATE_RUNS):
        return []
    return [
        f"the machine's PING floor moved from {a.value:.0f} to {b.value:.0f} µs (×{ratio:.2f}) between the "
        "runs: it was busier or idler in one of them, so timed verdicts here are suspect; compare "
        "interleaved with `cachelab report --against <ref>`"
    ]


def not_measured_by(parameters: Mapping[str, Any]) -> Callable[[str], bool]:
    """What a run chose not to measure, from its manifest's parameters: skipped steps, and every
    benchmark outside ``--bench-select``."""
    skipped = set(parameters.get("skip") or ())
    selected = bool(parameters.get("bench_select"))

    def check(name: str) -> bool:
        step = step_of(name)
        return step in skipped or (step == "benchmarks" and selected)

    return check


def compare_folders(
    a: str | Path, b: str | Path, *, min_effect: float | None = None
) -> tuple[str, list[Row]]:
    """Markdown verdict of result folder ``b`` against ``a`` (raises on an unreadable folder)."""
    candidate = _manifest(b).get("parameters", {})
    before, after = load_metrics(a), load_metrics(b)
    rows = compare_metrics(before, after, min_effect=min_effect, not_measured=not_measured_by(candidate))
    text = verdict_markdown(rows, title=f"{Path(b).name} against {Path(a).name}")
    warnings = manifest_warnings(a, b) + drift_warnings(before, after)
    if warnings:
        text = "\n".join(f"> **Note:** {w}" for w in warnings) + "\n\n" + text
    return text, rows
