"""Per-endpoint counters and histograms kept beside Locust's own statistics.

Locust counts requests and failures; a cache study also needs to know *how*
each response was served. For every request this records the status, the
``X-Cache`` outcome (HIT / MISS / STALE / BYPASS), whether it was a 429 the
scenario expected (an abusive client) or one it did not, and its latency in
microseconds — raw, and for paced (open-model) users also from the request's
*intended* start, which is what a user waiting behind a stall experiences.
When the app sends ``X-Request-Cost`` (``CACHELAB_COST_HEADER=on``), the
Redis round trips, Redis commands and SQL statements of every response are
tallied per request class (status and X-Cache outcome): for a fixed code path
they are exact, and a class whose figures vary says so (min ≠ max).

Workers :meth:`LoadMetrics.drain` their data into each report to the master
(counters as deltas, histograms encoded), and the master
:meth:`LoadMetrics.merge_report`\\ s them, so the totals of a distributed run
equal those of one process recording everything.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cachelab.loadtest.histograms import LatencyHistogram
from cachelab.request_cost import parse_header

CACHE_OUTCOMES = ("HIT", "MISS", "STALE", "BYPASS", "HIT-L1", "STALE-L1")
#: Outcomes that spared the database: Redis hits and the near cache's (``-L1``), fresh or stale.
SERVED_FROM_CACHE = ("HIT", "STALE", "HIT-L1", "STALE-L1")
TOTAL = "Aggregated"


def served_from_cache(x_cache: Counter[str] | dict[str, int]) -> int:
    return sum(int(x_cache.get(outcome, 0)) for outcome in SERVED_FROM_CACHE)


def hit_ratio(x_cache: Counter[str] | dict[str, int]) -> float | None:
    """Share of cacheable responses served from a cache: served / (served + MISS).

    STALE counts as a hit because it spared the database, and so do the near
    cache's HIT-L1 and STALE-L1; BYPASS (cache off) is not cacheable and is left
    out. None when nothing was cacheable.
    """
    served = served_from_cache(x_cache)
    total = served + x_cache.get("MISS", 0)
    return round(served / total, 4) if total else None


@dataclass
class EndpointMetrics:
    requests: int = 0
    failures: int = 0
    rate_limited: int = 0  # every 429
    rate_limited_expected: int = 0  # 429s the scenario wanted (marked as successes)
    statuses: Counter[str] = field(default_factory=Counter)
    x_cache: Counter[str] = field(default_factory=Counter)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    corrected: LatencyHistogram = field(default_factory=LatencyHistogram)
    # (request class, cost field, value) -> requests; see request_class()
    costs: Counter[tuple[str, str, int]] = field(default_factory=Counter)

    def merge(self, other: EndpointMetrics) -> None:
        self.requests += other.requests
        self.failures += other.failures
        self.rate_limited += other.rate_limited
        self.rate_limited_expected += other.rate_limited_expected
        self.statuses.update(other.statuses)
        self.x_cache.update(other.x_cache)
        self.latency.merge(other.latency)
        self.corrected.merge(other.corrected)
        self.costs.update(other.costs)

    def to_report(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failures": self.failures,
            "rate_limited": self.rate_limited,
            "rate_limited_expected": self.rate_limited_expected,
            "statuses": dict(self.statuses),
            "x_cache": dict(self.x_cache),
            "latency": self.latency.encode() if self.latency.count else None,
            "corrected": self.corrected.encode() if self.corrected.count else None,
            "costs": [[cls, name, value, n] for (cls, name, value), n in self.costs.items()],
        }

    @classmethod
    def from_report(cls, data: dict[str, Any]) -> EndpointMetrics:
        m = cls(
            requests=int(data["requests"]),
            failures=int(data["failures"]),
            rate_limited=int(data["rate_limited"]),
            rate_limited_expected=int(data["rate_limited_expected"]),
            statuses=Counter({str(k): int(v) for k, v in data["statuses"].items()}),
            x_cache=Counter({str(k): int(v) for k, v in data["x_cache"].items()}),
            costs=Counter({(str(c), str(f), int(v)): int(n) for c, f, v, n in data.get("costs") or []}),
        )
        if data.get("latency"):
            m.latency.merge_encoded(data["latency"])
        if data.get("corrected"):
            m.corrected.merge_encoded(data["corrected"])
        return m

    def summary(self, duration_s: float) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failures": self.failures,
            "error_rate": round(self.failures / self.requests, 6) if self.requests else 0.0,
            "rps": round(self.requests / duration_s, 3) if duration_s > 0 else 0.0,
            "rate_limited": self.rate_limited,
            "rate_limited_expected": self.rate_limited_expected,
            "statuses": dict(sorted(self.statuses.items())),
            "x_cache": {k: self.x_cache.get(k, 0) for k in CACHE_OUTCOMES},
            "hit_ratio": hit_ratio(self.x_cache),
            "latency_ms": self.latency.summary_ms(),
            "corrected_latency_ms": self.corrected.summary_ms(),
            "costs": cost_summary(self.costs),
        }


def request_class(status: int | None, x_cache: str | None) -> str:
    """``"200 HIT"``, ``"200 MISS"``, ``"202"``, ``"429"``: requests of one class take one code path."""
    code = str(status) if status else "error"
    return f"{code} {x_cache.upper()}" if x_cache else code


def cost_summary(costs: Counter[tuple[str, str, int]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per request class and cost field: requests, min, max and mean (min == max: an exact figure)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (cls, name, value), n in sorted(costs.items()):
        fields = out.setdefault(cls, {})
        entry = fields.setdefault(name, {"requests": 0, "min": value, "max": value, "sum": 0})
        entry["requests"] += n
        entry["min"] = min(entry["min"], value)
        entry["max"] = max(entry["max"], value)
        entry["sum"] += value * n
    for fields in out.values():
        for entry in fields.values():
            entry["mean"] = round(entry.pop("sum") / entry["requests"], 4)
    return out


def endpoint_key(method: str, name: str) -> str:
    """``"GET /api/tenants/{t}/kpis"``: how endpoints are named in results and thresholds."""
    return f"{method.upper()} {name}"


class LoadMetrics:
    """Everything recorded in one process (or, on the master, merged from the workers)."""

    def __init__(self) -> None:
        self.endpoints: dict[str, EndpointMetrics] = {}

    def _endpoint(self, key: str) -> EndpointMetrics:
        m = self.endpoints.get(key)
        if m is None:
            m = self.endpoints[key] = EndpointMetrics()
        return m

    def record(
        self,
        method: str,
        name: str,
        response_time_ms: float,
        *,
        status: int | None,
        x_cache: str | None,
        failed: bool,
        lag_s: float | None = None,
        cost: str | None = None,
    ) -> None:
        """One request. ``lag_s`` (paced users only) is how late it started against its schedule;
        ``cost`` is the response's ``X-Request-Cost`` header, if it had one."""
        m = self._endpoint(endpoint_key(method, name))
        m.requests += 1
        if failed:
            m.failures += 1
        code = str(status) if status else "error"
        m.statuses[code] += 1
        if status == 429:
            m.rate_limited += 1
            if not failed:
                m.rate_limited_expected += 1
        if x_cache:
            m.x_cache[x_cache.upper()] += 1
        m.latency.record_ms(response_time_ms)
        if lag_s is not None:
            m.corrected.record_ms(response_time_ms + max(0.0, lag_s) * 1000.0)
        if cost:
            cls = request_class(status, x_cache)
            for name, value in parse_header(cost).items():
                m.costs[(cls, name, value)] += 1

    def drain(self) -> dict[str, Any]:
        """This process's data since the last drain, for a report to the master; then reset."""
        report = {key: m.to_report() for key, m in self.endpoints.items() if m.requests}
        self.endpoints = {}
        return report

    def merge_report(self, report: dict[str, Any]) -> None:
        for key, data in report.items():
            self._endpoint(key).merge(EndpointMetrics.from_report(data))

    def merge(self, other: LoadMetrics) -> None:
        for key, m in other.endpoints.items():
            self._endpoint(key).merge(m)

    def reset(self) -> None:
        self.endpoints = {}

    def total(self) -> EndpointMetrics:
        total = EndpointMetrics()
        for m in self.endpoints.values():
            total.merge(m)
        return total

    def summary(self, duration_s: float) -> dict[str, Any]:
        """Per endpoint (sorted by name) and ``Aggregated``, as plain JSON-able dicts."""
        out = {key: self.endpoints[key].summary(duration_s) for key in sorted(self.endpoints)}
        out[TOTAL] = self.total().summary(duration_s)
        return out

    def histograms(self) -> dict[str, dict[str, str | None]]:
        """Encoded histograms per endpoint, so later tools can merge runs exactly."""
        return {
            key: {
                "latency": m.latency.encode() if m.latency.count else None,
                "corrected": m.corrected.encode() if m.corrected.count else None,
            }
            for key, m in sorted(self.endpoints.items())
        }
