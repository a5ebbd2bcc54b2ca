"""``cachelab compare A B``: deltas between two result folders, with a noise band and a verdict.

Each result folder has a ``metrics.json``: ``{name: {"value", "unit",
"better": "lower"|"higher", "noise": fraction}}``. A change inside the noise
band is "within noise" — on a shared machine, timings drift ±20 % between
runs, so load-test latencies carry a wide band and server-side counts
(round trips, commands per request) a narrow one. Outside the band, the
direction the metric prefers decides between improvement and regression.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_NOISE = 0.2


@dataclass(frozen=True)
class Delta:
    name: str
    unit: str
    before: float | None
    after: float | None
    change: float | None  # relative, e.g. 0.12 for +12 %
    noise: float
    verdict: str  # regression | improvement | within noise | new | gone | n/a


def load_metrics(folder: str | Path) -> dict[str, dict[str, Any]]:
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a cachelab result folder (no metrics.json)")
    return json.loads(path.read_text())


def compare_metrics(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], *, noise: float | None = None
) -> list[Delta]:
    deltas: list[Delta] = []
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        spec = b or a or {}
        band = noise if noise is not None else float(spec.get("noise", DEFAULT_NOISE))
        unit = spec.get("unit", "")
        va = None if a is None else a.get("value")
        vb = None if b is None else b.get("value")
        if a is None or b is None:
            deltas.append(Delta(name, unit, va, vb, None, band, "new" if a is None else "gone"))
            continue
        if va is None or vb is None or any(isinstance(v, float) and math.isnan(v) for v in (va, vb)):
            deltas.append(Delta(name, unit, va, vb, None, band, "n/a"))
            continue
        change = (0.0 if vb == 0 else math.copysign(math.inf, vb)) if va == 0 else (vb - va) / abs(va)
        if abs(change) <= band:
            verdict = "within noise"
        elif spec.get("better", "lower") not in ("lower", "higher"):
            verdict = "changed"  # a descriptive figure: no better direction
        else:
            worse = change > 0 if spec.get("better", "lower") == "lower" else change < 0
            verdict = "regression" if worse else "improvement"
        deltas.append(Delta(name, unit, va, vb, change, band, verdict))
    return deltas


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,.0f}" if isinstance(value, int | float) else str(value)


def deltas_markdown(deltas: list[Delta], *, title: str = "Changes against the baseline") -> str:
    icon = {"regression": "**regression**", "improvement": "improvement"}
    lines = [
        f"### {title}",
        "",
        "| metric | baseline | this run | change | noise band | verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for d in deltas:
        change = "–" if d.change is None else ("∞" if math.isinf(d.change) else f"{d.change:+.1%}")
        lines.append(
            f"| {d.name} ({d.unit}) | {_fmt(d.before)} | {_fmt(d.after)} | {change} | ±{d.noise:.0%} | "
            f"{icon.get(d.verdict, d.verdict)} |"
        )
    regressions = sum(d.verdict == "regression" for d in deltas)
    lines += [
        "",
        f"{regressions} regression(s) beyond the noise band."
        if regressions
        else "No change beyond the noise band.",
    ]
    return "\n".join(lines)


def manifest_warnings(a: str | Path, b: str | Path) -> list[str]:
    """Differences between two runs' manifests that make their numbers hard to compare."""

    def load(folder: str | Path) -> dict[str, Any]:
        path = Path(folder) / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    ma, mb = load(a), load(b)
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


def compare_folders(a: str | Path, b: str | Path, *, noise: float | None = None) -> tuple[str, list[Delta]]:
    deltas = compare_metrics(load_metrics(a), load_metrics(b), noise=noise)
    text = deltas_markdown(deltas, title=f"{Path(b).name} vs {Path(a).name}")
    warnings = manifest_warnings(a, b)
    if warnings:
        text = "\n".join(f"> **Note:** {w}" for w in warnings) + "\n\n" + text
    return text, deltas
