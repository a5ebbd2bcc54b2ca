"""``metrics.json``: every figure a report measured, with what it takes to compare it.

A figure alone cannot be compared honestly; what it needs depends on its kind:

* ``exact`` — deterministic for a fixed workload and seed (round trips,
  commands, bytes per op, database statements per request, memory per
  object): one ``value``, and any change between runs is a change;
* ``timed`` — a distribution: ``samples`` holds one value per trial (the
  ``value`` is their median, for reading), compared with their spread;
* ``proportion`` — counts per trial: ``events`` of ``lookups`` (misses of
  cache lookups), compared as a ratio of proportions;
* ``info`` — shown, never judged (a single measurement of something timed,
  or a description).

The file is ``{"schema": SCHEMA, "metrics": {name: {...}}}``. A file without
the schema (written by cachelab before verdicts) or that is not valid JSON is
refused with one line, rather than compared as if it said "no change".
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

SCHEMA = "cachelab.metrics/2"
Kind = Literal["exact", "timed", "proportion", "info"]
KINDS = ("exact", "timed", "proportion", "info")
BETTER = ("lower", "higher", "none")


#: Which step of ``cachelab report`` measures the metrics whose names start so.
STEP_PREFIXES = {"benchmarks": ("bench.",), "load": ("load.", "capacity."), "notebooks": ("outage.", "0")}


def step_of(name: str) -> str | None:
    """The report step that measures metric ``name`` (None if no step claims it)."""
    return next((step for step, prefixes in STEP_PREFIXES.items() if name.startswith(prefixes)), None)


class MetricsError(ValueError):
    """A metrics file that cannot be compared; the message says which file and why."""


@dataclass
class Metric:
    kind: Kind
    unit: str = ""
    better: str = "none"
    value: float | None = None
    samples: list[float] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    lookups: list[int] = field(default_factory=list)
    min_effect: float | None = None
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "unit": self.unit,
            "better": self.better,
            "value": self.value,
        }
        if self.samples:
            out["samples"] = self.samples
        if self.kind == "proportion":
            out["events"], out["lookups"] = self.events, self.lookups
        if self.min_effect is not None:
            out["min_effect"] = self.min_effect
        if self.note:
            out["note"] = self.note
        return out


def exact(value: float | None, unit: str, better: str = "lower", note: str = "") -> Metric:
    return Metric("exact", unit, better, value, note=note)


def timed(samples: Sequence[float | None], unit: str, better: str, note: str = "") -> Metric:
    """A timed metric from per-trial values (None and NaN trials are dropped)."""
    clean = [float(s) for s in samples if s is not None and math.isfinite(float(s))]
    value = statistics.median(clean) if clean else None
    return Metric("timed", unit, better, value, samples=clean, note=note)


def proportion(events: Sequence[int], lookups: Sequence[int], unit: str = "miss ratio") -> Metric:
    total = sum(lookups)
    value = sum(events) / total if total else None
    return Metric("proportion", unit, "lower", value, events=list(events), lookups=list(lookups))


def info(value: Any, unit: str = "", note: str = "") -> Metric:
    return Metric("info", unit, "none", value, note=note)


def from_trials(values: Sequence[float | None], unit: str, better: str = "lower") -> Metric:
    """Per-trial values of a metric expected to be exact: exact if every trial agrees, else timed.

    A figure that should be deterministic but is not (a probabilistic early
    refresh, a connection opened mid-measurement) must not be compared as
    exact, or every run would "change" it.
    """
    clean = [v for v in values if v is not None and math.isfinite(float(v))]
    if not clean:
        return exact(None, unit, better)
    if all(math.isclose(v, clean[0], rel_tol=1e-9, abs_tol=1e-12) for v in clean):
        return exact(clean[0], unit, better)
    return timed(clean, unit, better, note="expected exact, but varied between trials")


def write_metrics(path: Path, metrics: Mapping[str, Metric]) -> None:
    body = {"schema": SCHEMA, "metrics": {name: m.as_json() for name, m in sorted(metrics.items())}}
    path.write_text(json.dumps(body, indent=1, default=str), encoding="utf-8")


def _parse(name: str, raw: Any, source: str) -> Metric:
    if not isinstance(raw, dict) or raw.get("kind") not in KINDS:
        raise MetricsError(f"{source}: metric {name!r} has no valid kind (one of {', '.join(KINDS)})")
    better = raw.get("better", "none")
    if better not in BETTER:
        raise MetricsError(f"{source}: metric {name!r} has better={better!r}")
    try:
        return Metric(
            kind=raw["kind"],
            unit=str(raw.get("unit", "")),
            better=better,
            value=raw.get("value"),
            samples=[float(s) for s in raw.get("samples", [])],
            events=[int(k) for k in raw.get("events", [])],
            lookups=[int(n) for n in raw.get("lookups", [])],
            min_effect=None if raw.get("min_effect") is None else float(raw["min_effect"]),
            note=str(raw.get("note", "")),
        )
    except (TypeError, ValueError) as exc:
        raise MetricsError(f"{source}: metric {name!r} is malformed ({exc})") from None


def load_metrics(folder: str | Path) -> dict[str, Metric]:
    """The metrics of a result folder, or :class:`MetricsError` / ``FileNotFoundError`` in one line."""
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a cachelab result folder (no metrics.json)")
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetricsError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(body, dict) or body.get("schema") != SCHEMA:
        found = body.get("schema") if isinstance(body, dict) else None
        raise MetricsError(
            f"{path} has schema {found!r}, not {SCHEMA!r}: it was written by an older cachelab "
            "(or is not a report's); re-run `cachelab report` on that commit to compare it"
        )
    raw = body.get("metrics")
    if not isinstance(raw, dict) or not raw:
        raise MetricsError(f"{path} holds no metrics")
    return {name: _parse(name, value, str(path)) for name, value in raw.items()}
