"""``GET /metrics``: Prometheus text built from the patterns' own counters.

The caches, limiters and breaker already count what they do; a custom
collector reads those counters at scrape time instead of keeping a second,
drifting copy. Request counts and latencies are ordinary prometheus_client
metrics. Each app instance has its own registry; with ``--workers N`` each
worker process reports its own figures (sum them in Prometheus).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cachelab.app.fast_reads import OUTCOMES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_CACHE_COUNTERS = {
    "hits": "cachelab_cache_hits_total",
    "misses": "cachelab_cache_misses_total",
    "stale_served": "cachelab_cache_stale_total",
    "bypassed": "cachelab_cache_bypass_total",
    "loader_calls": "cachelab_cache_loader_calls_total",
    "coalesced": "cachelab_cache_coalesced_total",
    "early_refreshes": "cachelab_cache_early_refreshes_total",
    "lock_waits": "cachelab_cache_lock_waits_total",
    "fills_rejected": "cachelab_cache_fills_rejected_total",
    "corrupt": "cachelab_cache_corrupt_total",
    "errors": "cachelab_cache_redis_errors_total",
}

_BREAKER_STATES = ("closed", "open", "half_open")


class PatternCollector(Collector):
    """Reads the live pattern objects of one app at every scrape."""

    def __init__(self, state_fn: Callable[[], Any]) -> None:
        self._state_fn = state_fn

    def collect(self) -> Iterator[Metric]:
        state = self._state_fn()
        if state is None:
            return
        families = {
            name: CounterMetricFamily(metric.removesuffix("_total"), f"cache {name}", labels=["cache"])
            for name, metric in _CACHE_COUNTERS.items()
        }
        for cache_name, cache in state.caches.all().items():
            for field, family in families.items():
                family.add_metric([cache_name], getattr(cache.stats, field))
        yield from families.values()
        yield from _near_cache_metrics(state.caches)

        breaker = state.rr.breaker
        gauge = GaugeMetricFamily(
            "cachelab_breaker_state", "1 for the breaker's current state", labels=["state"]
        )
        current = breaker.state.value
        for s in _BREAKER_STATES:
            gauge.add_metric([s], 1.0 if s == current else 0.0)
        yield gauge
        opened = CounterMetricFamily("cachelab_breaker_opened", "times the breaker opened")
        opened.add_metric([], breaker.stats.times_opened)
        yield opened
        short = CounterMetricFamily("cachelab_breaker_short_circuited", "calls refused while open")
        short.add_metric([], breaker.stats.short_circuited)
        yield short

        bg = state.rr.background.stats
        dropped = CounterMetricFamily("cachelab_background_dropped", "background tasks dropped at the cap")
        dropped.add_metric([], bg.dropped)
        yield dropped

        decisions = CounterMetricFamily(
            "cachelab_ratelimit_decisions", "rate-limit decisions", labels=["limiter", "decision"]
        )
        sources = CounterMetricFamily(
            "cachelab_ratelimit_decisions_by_source",
            "who decided: redis or a failure policy",
            labels=["limiter", "source"],
        )
        for limiter_name, limiter in state.limiters.items():
            decisions.add_metric([limiter_name, "allowed"], limiter.stats.allowed)
            decisions.add_metric([limiter_name, "denied"], limiter.stats.denied)
            for source, count in limiter.stats.by_source.items():
                sources.add_metric([limiter_name, source], count)
        yield decisions
        yield sources

        slots = CounterMetricFamily(
            "cachelab_concurrency_decisions",
            "per-tenant concurrency limiter: slots acquired, refused (429), released late (lease expired)",
            labels=["endpoint", "decision"],
        )
        for endpoint, limiter in state.concurrency.items():
            slots.add_metric([endpoint, "acquired"], limiter.stats.acquired)
            slots.add_metric([endpoint, "refused"], limiter.stats.refused)
            slots.add_metric([endpoint, "expired_before_release"], limiter.stats.expired_before_release)
        yield slots

        if state.trusted is not None:  # fast reads are on
            fast = CounterMetricFamily(
                "cachelab_fast_reads",
                "requests for a fast-read route: answered in front of FastAPI (answered, not_modified) "
                "or left to the route, and why",
                labels=["outcome"],
            )
            for outcome in OUTCOMES:
                fast.add_metric([outcome], state.fast_reads[outcome])
            yield fast

        db_queries = CounterMetricFamily("cachelab_db_queries", "SQL statements executed")
        db_queries.add_metric([], state.db.queries)
        yield db_queries

        if state.queue_stats is not None:
            for name, value in state.queue_stats.items():
                if isinstance(value, int | float):
                    gauge = GaugeMetricFamily(f"cachelab_queue_{name}", f"job queue {name}")
                    gauge.add_metric([], float(value))
                    yield gauge


def _near_cache_metrics(caches: Any) -> Iterator[Metric]:
    """The near cache's L1 hits per cache, and its store's invalidations, flushes and size (when on)."""
    store = getattr(caches, "near", None)
    if store is None:
        return
    l1 = CounterMetricFamily("cachelab_cache_l1_hits", "served from the in-process L1", labels=["cache"])
    l1_stale = CounterMetricFamily(
        "cachelab_cache_l1_stale", "served from the L1 while the breaker was open", labels=["cache"]
    )
    for cache_name, cache in caches.all().items():
        if (stats := getattr(cache, "l1_stats", None)) is not None:
            l1.add_metric([cache_name], stats.hits)
            l1_stale.add_metric([cache_name], stats.stale_served)
    yield l1
    yield l1_stale
    s = store.stats
    for name, value, doc in (
        ("invalidations", s.keys_invalidated, "keys Redis said changed (CLIENT TRACKING messages)"),
        ("invalidation_messages", s.invalidation_messages, "invalidation messages received"),
        ("fills", s.fills, "Redis hits kept in the L1"),
        ("fills_refused", s.fills_refused, "reads not kept: invalidated in flight, or tracking changed"),
        ("evictions", s.evicted, "L1 entries evicted by the LRU bound"),
        ("tracking_connects", s.tracking_connects, "invalidation connections established"),
    ):
        family = CounterMetricFamily(f"cachelab_near_cache_{name}", doc)
        family.add_metric([], value)
        yield family
    flushes = CounterMetricFamily("cachelab_near_cache_flushes", "L1 flushes", labels=["reason"])
    for reason, count in sorted(s.flush_reasons.items()):
        flushes.add_metric([reason], count)
    yield flushes
    for name, value, doc in (
        ("entries", store.entries, "entries in the L1"),
        ("bytes", store.bytes, "bytes the L1 accounts for (values, keys, per-entry overhead)"),
        ("tracking", 1.0 if store.ready else 0.0, "1 while invalidations are being received"),
        ("tracking_client_id", store.client_id or 0, "Redis client id of the invalidation connection"),
    ):
        gauge = GaugeMetricFamily(f"cachelab_near_cache_{name}", doc)
        gauge.add_metric([], float(value))
        yield gauge


class AppMetrics:
    def __init__(self, state_fn: Callable[[], Any]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cachelab_http_requests", "HTTP requests", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "cachelab_http_request_duration_seconds",
            "request latency",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.x_cache = Counter(
            "cachelab_http_x_cache",
            "X-Cache outcomes per route",
            ["route", "x_cache"],
            registry=self.registry,
        )
        self.registry.register(PatternCollector(state_fn))

    def render(self) -> bytes:
        return generate_latest(self.registry)
