"""Pass/fail criteria for a load test, k6-style: ``p99<50ms``, ``error_rate<0.1%``.

A load test in CI is only useful if it can fail. A threshold is
``[endpoint:]metric op value[unit]``:

* metrics: ``p50`` … ``p99.9`` (any percentile), ``corrected_p99`` (latency
  from the intended start, paced runs), ``max``, ``mean``, ``error_rate``,
  ``hit_ratio``, ``rps``, ``requests``, ``failures``, ``rate_limited``,
  ``generator_cpu`` (mean % of a core of the busiest Locust process);
* operators ``<``, ``<=``, ``>``, ``>=``; units ``us``/``µs``, ``ms``
  (the default for latencies), ``s``, and ``%`` for ratios;
* the endpoint is optional (default: all requests together). It is a result
  name (``GET /api/dashboard``), a path suffix (``kpis`` matches
  ``/api/tenants/{t}/kpis``, ``initiatives/{id}`` the detail route), or
  either prefixed by a method (``PATCH initiatives/{id}``). When several
  endpoints match, their histograms and counters are merged first.

Thresholds come from ``--threshold`` (repeatable) or ``--thresholds-file``:
one per line (``#`` comments), or YAML/JSON holding a list of expressions or
a mapping ``endpoint -> [expressions]``. They are evaluated once, at the end
of the run, on the master (or the only process).
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cachelab.loadtest.metrics import TOTAL, EndpointMetrics, LoadMetrics, hit_ratio

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
_UNITS_MS = {"us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0, "": 1.0}
_RATIOS = {"error_rate", "hit_ratio"}
_COUNTS = {"rps", "requests", "failures", "rate_limited", "generator_cpu"}
_PATTERN = re.compile(
    r"""^\s*(?:(?P<sel>.+?)\s*:\s*)?
        (?P<metric>(?:corrected_)?p\d+(?:\.\d+)?|[a-z_]+)\s*
        (?P<op><=|>=|<|>)\s*
        (?P<value>\d+(?:\.\d+)?)\s*(?P<unit>us|µs|ms|s|%)?\s*$""",
    re.VERBOSE,
)


class ThresholdError(ValueError):
    """A threshold expression that cannot be parsed; the message quotes it."""


@dataclass(frozen=True)
class Threshold:
    expression: str
    selector: str | None  # None: all requests
    metric: str
    op: str
    limit: float  # ms for latencies, a fraction for ratios, a plain number otherwise

    def check(self, observed: float) -> bool:
        return _OPS[self.op](observed, self.limit)


@dataclass(frozen=True)
class ThresholdResult:
    expression: str
    passed: bool
    observed: float | None
    limit: float
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_latency(metric: str) -> bool:
    return metric in {"max", "mean"} or re.fullmatch(r"(corrected_)?p\d+(\.\d+)?", metric) is not None


def parse_threshold(text: str) -> Threshold:
    match = _PATTERN.match(text)
    if not match:
        raise ThresholdError(
            f"cannot parse threshold {text!r}; expected e.g. 'p99<50ms' or 'kpis:error_rate<0.1%'"
        )
    metric, unit = match["metric"], match["unit"] or ""
    value = float(match["value"])
    if _is_latency(metric):
        if unit == "%":
            raise ThresholdError(f"{text!r}: a latency takes us, ms or s, not %")
        limit = value * _UNITS_MS[unit]
    elif metric in _RATIOS:
        if unit not in ("", "%"):
            raise ThresholdError(f"{text!r}: {metric} is a ratio (0..1, or a percentage with %)")
        limit = value / 100.0 if unit == "%" else value
    elif metric in _COUNTS:
        if unit not in ("", "%") or (unit == "%" and metric != "generator_cpu"):
            raise ThresholdError(f"{text!r}: {metric} takes no unit")
        limit = value
    else:
        raise ThresholdError(f"{text!r}: unknown metric {metric!r}")
    return Threshold(text.strip(), match["sel"], metric, match["op"], limit)


def parse_thresholds(texts: Iterable[str]) -> list[Threshold]:
    return [parse_threshold(t) for t in texts if t and t.strip() and not t.strip().startswith("#")]


def load_thresholds(path: str | Path) -> list[Threshold]:
    """Read a thresholds file: plain lines, or YAML/JSON (a list, or ``endpoint -> [exprs]``)."""
    text = Path(path).read_text(encoding="utf-8")
    suffix = Path(path).suffix.lower()
    data: Any
    if suffix == ".json":
        data = json.loads(text)
    elif suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        return parse_thresholds(text.splitlines())
    if isinstance(data, dict) and "thresholds" in data and len(data) == 1:
        data = data["thresholds"]
    if isinstance(data, list):
        return parse_thresholds(str(item) for item in data)
    if isinstance(data, dict):
        exprs: list[str] = []
        for selector, items in data.items():
            for item in [items] if isinstance(items, str) else items:
                scoped = selector not in ("", "*", "all", TOTAL)
                exprs.append(f"{selector}:{item}" if scoped else str(item))
        return parse_thresholds(exprs)
    raise ThresholdError(f"{path}: expected a list of thresholds or a mapping endpoint -> list")


def _path_matches(path: str, selector: str) -> bool:
    selector = selector.strip()
    return path == selector or path.rstrip("/").endswith("/" + selector.strip("/"))


def select_endpoints(metrics: LoadMetrics, selector: str | None) -> list[str]:
    """The endpoint keys (``"GET /path"``) a selector names; all of them for None."""
    if selector is None or selector in (TOTAL, "*", "all"):
        return list(metrics.endpoints)
    if selector in metrics.endpoints:
        return [selector]
    method, _, rest = selector.partition(" ")
    if rest and method.isupper():
        return [
            k for k in metrics.endpoints
            if k.split(" ", 1)[0] == method and _path_matches(k.split(" ", 1)[1], rest)
        ]
    return [k for k in metrics.endpoints if _path_matches(k.split(" ", 1)[1], selector)]


def _observe(t: Threshold, m: EndpointMetrics, duration_s: float, generator: dict[str, Any]) -> float | None:
    metric = t.metric
    if metric == "generator_cpu":
        return float(generator.get("max_mean_pct", 0.0))
    if metric == "rps":
        return m.requests / duration_s if duration_s > 0 else 0.0
    if metric in ("requests", "failures", "rate_limited"):
        return float(getattr(m, metric))
    if metric == "error_rate":
        return m.failures / m.requests if m.requests else None
    if metric == "hit_ratio":
        return hit_ratio(m.x_cache)
    hist = m.corrected if metric.startswith("corrected_") else m.latency
    if not hist.count:
        return None
    base = metric.removeprefix("corrected_")
    if base == "max":
        return hist.summary_ms()["max"]  # type: ignore[index]
    if base == "mean":
        return hist.summary_ms()["mean"]  # type: ignore[index]
    return hist.percentile_us(float(base[1:])) / 1000.0


def evaluate(
    thresholds: Iterable[Threshold],
    metrics: LoadMetrics,
    duration_s: float,
    generator: dict[str, Any] | None = None,
) -> list[ThresholdResult]:
    """Check every threshold; one with no data to judge (no matching requests) fails."""
    results = []
    for t in thresholds:
        keys = select_endpoints(metrics, t.selector)
        merged = EndpointMetrics()
        for key in keys:
            merged.merge(metrics.endpoints[key])
        judged = keys or t.metric == "generator_cpu"
        observed = _observe(t, merged, duration_s, generator or {}) if judged else None
        if observed is None:
            where = f" for {t.selector!r}" if t.selector else ""
            results.append(ThresholdResult(t.expression, False, None, t.limit, f"no data{where}"))
            continue
        passed = t.check(observed)
        unit = "ms" if _is_latency(t.metric) else ""
        message = f"observed {observed:.4g}{unit}, limit {t.op} {t.limit:g}{unit}"
        results.append(ThresholdResult(t.expression, passed, round(observed, 6), t.limit, message))
    return results
