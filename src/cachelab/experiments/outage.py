"""Outage experiments: steady load on the app, a Redis fault from t1 to t2, a per-second timeline.

One run = one app configuration (breaker on or off, limiter failure policy,
command timeout...) under the same paced load and the same fault schedule:

1. launch redis-server (AOF on, as the guide's Redis Cloud runs, so queued
   jobs survive a kill) with a :class:`FaultProxy` in front of it; the app and
   its report worker reach Redis only through the proxy. The plan's
   ``topology`` says what lives there:

   * ``split`` (the default, as in docker-compose): the faulted Redis is the
     cache (``REDIS_URL``); sessions and the job queue live on a second Redis
     (``QUEUE_REDIS_URL``, AOF on) that is not faulted, so every request's
     session is still checked and reads fail open to the database;
   * ``shared``: one Redis for everything, faulted. A session that cannot be
     checked is never admitted, so authenticated reads answer 503 during the
     fault, by design;

2. log in once per tenant (every read carries its tenant's session), warm the
   caches, then send requests at a constant arrival rate (open
   model: a request starts at its scheduled time whether or not earlier ones
   finished, and its latency counts from that intended start, so a stall shows
   up in full instead of being hidden by a waiting client);
3. inject the fault from ``t1`` to ``t2`` (always undone), sample the app's
   ``/metrics`` every second (breaker state, database queries, limiter
   decisions, queue depth), and enqueue report jobs throughout;
4. after the load, wait for the queue to drain and count jobs lost and
   delivered more than once.

Everything is bounded: the load by its duration and an in-flight cap, every
HTTP call by a timeout, the drain by a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cachelab.harness.app_client import login_per_tenant
from cachelab.harness.app_server import AppServer
from cachelab.harness.faults import FaultSchedule, FaultSpec
from cachelab.servers.fault_proxy import FaultProxy
from cachelab.servers.redis_server import RedisServer, RedisServerConfig

#: Paths of the read mix (relative to a tenant), with weights.
READ_MIX: tuple[tuple[str, int], ...] = (
    ("kpis", 4),
    ("areas", 2),
    ("stats", 1),
    ("initiatives?page=1", 3),
    ("initiatives?status=in_progress&page=1", 2),
)


Topology = Literal["split", "shared"]
TOPOLOGIES: dict[str, str] = {
    "split": "cache on the faulted Redis; sessions and queue on a second Redis that stays up",
    "shared": "one Redis for cache, sessions and queue, faulted",
}


@dataclass(frozen=True)
class OutageConfig:
    """One app configuration to put through the fault."""

    name: str
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutagePlan:
    fault: FaultSpec
    duration: float = 20.0  # seconds of measured load (the fault sits inside it)
    rate: float = 40.0  # requests per second
    warmup: float = 2.0
    job_every: int = 20  # enqueue a report job every N requests
    tenants: int = 3
    initiatives_per_tenant: int = 300
    max_in_flight: int = 400
    request_timeout: float = 10.0
    drain_timeout: float = 30.0
    seed: int = 7
    topology: Topology = "split"


@dataclass
class RequestRecord:
    t: float  # intended start, seconds since load start
    latency: float  # from intended start
    status: int  # HTTP status, 0 for a transport error
    x_cache: str | None
    kind: str
    detail: str | None = None  # the start of the body (or the exception) for errors


@dataclass
class OutageResult:
    config: str
    fault: dict[str, Any]
    timeline: list[dict[str, Any]]
    summary: dict[str, Any]
    topology: str = "split"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def parse_metrics(text: str) -> dict[str, float]:
    """Flatten the app's Prometheus text into ``name{labels}`` → value (only what we chart)."""
    flat: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            flat[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return flat


def _breaker_state(metrics: Mapping[str, float]) -> str | None:
    for state in ("open", "half_open", "closed"):
        if metrics.get(f"cachelab_breaker_state{{state={state}}}") == 1.0:
            return state
    return None


async def _load(
    app: AppServer,
    plan: OutagePlan,
    schedule: FaultSchedule,
    loop_start: float,
    sessions: Mapping[str, Mapping[str, str]],
) -> tuple[list[RequestRecord], list[dict[str, Any]], list[tuple[str, str]], int]:
    tenants = sorted(sessions)
    rng = random.Random(plan.seed)
    paths, weights = zip(*READ_MIX, strict=True)
    records: list[RequestRecord] = []
    samples: list[dict[str, Any]] = []
    job_ids: list[tuple[str, str]] = []  # (tenant, job id)
    dropped = 0
    in_flight: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=plan.max_in_flight, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=app.base_url, timeout=plan.request_timeout, limits=limits) as http:

        async def one(t: float, kind: str, tenant: str, method: str, url: str, **kwargs: Any) -> None:
            detail = None
            headers = {**sessions[tenant], **kwargs.pop("headers", {})}
            try:
                response = await http.request(method, url, headers=headers, **kwargs)
                status, x_cache = response.status_code, response.headers.get("x-cache")
                if kind == "job" and status == 202:
                    job_ids.append((tenant, response.json()["job_id"]))
                if status >= 500:
                    detail = f"{method} {url}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                status, x_cache, detail = 0, None, f"{method} {url}: {type(exc).__name__}: {exc}"
            latency = time.monotonic() - (loop_start + t)
            records.append(RequestRecord(t, latency, status, x_cache, kind, detail))

        async def sampler() -> None:
            async with httpx.AsyncClient(base_url=app.base_url, timeout=2.0) as probe:
                while True:
                    t = time.monotonic() - loop_start
                    with contextlib.suppress(httpx.HTTPError):
                        samples.append({"t": t, **parse_metrics((await probe.get("/metrics")).text)})
                    await asyncio.sleep(1.0)

        sampling = asyncio.ensure_future(sampler())
        total = int(plan.duration * plan.rate)
        for n in range(total):
            t = n / plan.rate
            delay = loop_start + t - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(in_flight) >= plan.max_in_flight:
                dropped += 1  # the generator itself is saturated; counted, not hidden
                continue
            tenant = tenants[min(int(rng.paretovariate(1.2)) - 1, len(tenants) - 1)]
            if plan.job_every and n % plan.job_every == 0:
                coro = one(
                    t,
                    "job",
                    tenant,
                    "POST",
                    f"/api/tenants/{tenant}/reports",
                    headers={"Idempotency-Key": f"outage-{plan.seed}-{n}"},
                )
            else:
                path = rng.choices(paths, weights)[0]
                coro = one(t, "read", tenant, "GET", f"/api/tenants/{tenant}/{path}")
            task = asyncio.ensure_future(coro)
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.wait(in_flight, timeout=plan.request_timeout + 1)
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
    return records, samples, job_ids, dropped


async def _drain_jobs(
    app: AppServer,
    job_ids: list[tuple[str, str]],
    timeout: float,
    sessions: Mapping[str, Mapping[str, str]],
) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    statuses: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=app.base_url, timeout=5.0) as http:
        pending = list(job_ids)
        while pending and time.monotonic() < deadline:
            still: list[tuple[str, str]] = []
            for tenant, job_id in pending:
                with contextlib.suppress(httpx.HTTPError):
                    r = await http.get(f"/api/jobs/{job_id}", headers=dict(sessions[tenant]))
                    if r.status_code == 200:
                        statuses[job_id] = r.json()
                        if r.json()["status"] in ("completed", "dead"):
                            continue
                still.append((tenant, job_id))
            pending = still
            if pending:
                await asyncio.sleep(0.5)
    completed = [s for s in statuses.values() if s["status"] == "completed"]
    return {
        "jobs_enqueued": len(job_ids),
        "jobs_completed": len(completed),
        "jobs_dead": sum(1 for s in statuses.values() if s["status"] == "dead"),
        "jobs_lost": len(job_ids)
        - len(completed)
        - sum(1 for s in statuses.values() if s["status"] == "dead"),
        "jobs_redelivered": sum(1 for s in completed if int(s.get("deliveries") or 1) > 1),
    }


def build_timeline(
    records: list[RequestRecord], samples: list[dict[str, Any]], duration: float
) -> list[dict]:
    by_second: dict[int, list[RequestRecord]] = defaultdict(list)
    for r in records:
        by_second[int(r.t)].append(r)
    timeline = []
    previous: dict[str, Any] | None = None
    for second in range(math.ceil(duration)):
        rows = by_second.get(second, [])
        latencies = [r.latency * 1000 for r in rows]
        cached = [r for r in rows if r.x_cache]
        hits = sum(1 for r in cached if r.x_cache in ("HIT", "STALE"))
        statuses: dict[str, int] = defaultdict(int)
        for r in rows:
            statuses[str(r.status)] += 1
        sample = next((s for s in samples if second <= s["t"] < second + 1), None)
        row: dict[str, Any] = {
            "t": second,
            "requests": len(rows),
            "ok": statuses.get("200", 0) + statuses.get("202", 0),
            "errors_5xx": sum(n for code, n in statuses.items() if code.startswith("5")),
            "errors_429": statuses.get("429", 0),
            "errors_transport": statuses.get("0", 0),
            "p50_ms": _percentile(latencies, 0.50),
            "p90_ms": _percentile(latencies, 0.90),
            "p99_ms": _percentile(latencies, 0.99),
            "hit_ratio": hits / len(cached) if cached else math.nan,
            "bypass": sum(1 for r in cached if r.x_cache == "BYPASS"),
            "statuses": dict(statuses),
            "errors": sorted({f"{r.status} {r.kind}: {(r.detail or '')[:80]}" for r in rows if r.status >= 300
                              or r.status == 0})[:5],
        }
        if sample is not None:
            row["breaker"] = _breaker_state(sample)
            db_now = sample.get("cachelab_db_queries_total", math.nan)
            row["db_queries_total"] = db_now
            if previous is not None:
                row["db_qps"] = (db_now - previous["cachelab_db_queries_total"]) / max(
                    sample["t"] - previous["t"], 1e-6
                )
            row["queue_ready"] = sample.get("cachelab_queue_ready")
            row["limiter_by_source"] = {
                k.split("source=")[1].rstrip("}"): v
                for k, v in sample.items()
                if k.startswith("cachelab_ratelimit_decisions_by_source_total{limiter=ip")
            }
            previous = sample
        timeline.append(row)
    return timeline


def summarise(timeline: list[dict], records: list[RequestRecord], plan: OutagePlan) -> dict[str, Any]:
    t1, t2 = plan.fault.start, plan.fault.start + plan.fault.duration
    # A request belongs to the fault if any part of it overlapped the window: one
    # that started just before the fault and hung in it is the fault's, not steady.
    steady = [r.latency * 1000 for r in records if r.t + r.latency < t1]
    during = [r for r in records if r.t < t2 and r.t + r.latency >= t1]
    pre_hits = [row["hit_ratio"] for row in timeline if row["t"] < t1 and not math.isnan(row["hit_ratio"])]
    pre_hit_ratio = sum(pre_hits[-3:]) / len(pre_hits[-3:]) if pre_hits else math.nan
    opened_at = next(
        (row["t"] for row in timeline if row["t"] >= int(t1) and row.get("breaker") == "open"), None
    )
    recovered_at = next(
        (
            row["t"]
            for row in timeline
            if row["t"] >= t2 and not math.isnan(row["hit_ratio"]) and row["hit_ratio"] >= 0.9 * pre_hit_ratio
        ),
        None,
    )
    db_before = [row["db_qps"] for row in timeline if row["t"] < t1 and "db_qps" in row]
    db_during = [row["db_qps"] for row in timeline if t1 <= row["t"] < t2 and "db_qps" in row]
    mean = lambda xs: sum(xs) / len(xs) if xs else math.nan  # noqa: E731
    return {
        "requests": len(records),
        "errors_during_fault": sum(1 for r in during if r.status not in (200, 202, 404)),
        "errors_5xx_during_fault": sum(1 for r in during if 500 <= r.status < 600),
        "errors_429_during_fault": sum(1 for r in during if r.status == 429),
        "transport_errors_during_fault": sum(1 for r in during if r.status == 0),
        "reads_5xx_during_fault": sum(1 for r in during if r.kind == "read" and 500 <= r.status < 600),
        # Reads answered 200 that started and ended inside the fault: with the sessions on the faulted
        # Redis ("shared") this must be 0 — a session that could not be checked is never admitted.
        "reads_ok_inside_fault": sum(
            1 for r in during if r.kind == "read" and r.status == 200 and r.t >= t1 and r.t + r.latency <= t2
        ),
        "reads_401_during_fault": sum(1 for r in during if r.kind == "read" and r.status == 401),
        "error_samples": sorted({r.detail for r in during if r.detail and r.kind == "read"})[:5],
        "p99_steady_ms": _percentile(steady, 0.99),
        "p99_fault_ms": _percentile([r.latency * 1000 for r in during], 0.99),
        "p50_fault_ms": _percentile([r.latency * 1000 for r in during], 0.50),
        "breaker_open_after_s": None if opened_at is None else max(0.0, opened_at - t1),
        "pre_fault_hit_ratio": pre_hit_ratio,
        "hit_ratio_recovered_after_s": None if recovered_at is None else recovered_at - t2,
        "db_qps_steady": mean(db_before),
        "db_qps_fault": mean(db_during),
    }


def run_outage(
    plan: OutagePlan, config: OutageConfig, *, redis_config: RedisServerConfig | None = None
) -> OutageResult:
    """Run one configuration through the plan's fault on fresh Redis servers, app and worker."""
    if plan.topology not in TOPOLOGIES:
        raise ValueError(f"topology must be one of {sorted(TOPOLOGIES)}, got {plan.topology!r}")
    redis_config = redis_config or RedisServerConfig(appendonly=True, appendfsync="always")
    env = {"CACHELAB_RATE_LIMIT": "1000000/60s", **config.env}
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(RedisServer(redis_config))
        proxy = stack.enter_context(FaultProxy.for_url(server.url))
        if plan.topology == "split":
            durable_config = RedisServerConfig(appendonly=True, appendfsync="always")
            env["QUEUE_REDIS_URL"] = stack.enter_context(RedisServer(durable_config)).url
        app = stack.enter_context(
            AppServer(
                redis_url=proxy.url_for(server.url),
                env=env,
                job_workers=1,
                tenants=plan.tenants,
                job_worker_args=("--lease-seconds", "3"),
                initiatives_per_tenant=plan.initiatives_per_tenant,
            )
        )
        warm_end = time.monotonic() + plan.warmup
        with httpx.Client(base_url=app.base_url, timeout=10) as http:
            sessions = login_per_tenant(http, app.accounts(), app.seed_password)
            for tenant, (path, _w) in itertools.cycle(itertools.product(sorted(sessions), READ_MIX)):
                http.get(f"/api/tenants/{tenant}/{path}", headers=sessions[tenant])
                if time.monotonic() > warm_end:
                    break
        schedule = FaultSchedule(plan.fault, server=server, proxy=proxy)
        loop_start = time.monotonic()
        schedule.begin()
        try:
            records, samples, job_ids, dropped = asyncio.run(_load(app, plan, schedule, loop_start, sessions))
        finally:
            schedule.end()
        jobs = asyncio.run(_drain_jobs(app, job_ids, plan.drain_timeout, sessions))
        app_log = app.log_tail(80) if any(r.status >= 500 and r.kind == "read" for r in records) else ""
    timeline = build_timeline(records, samples, plan.duration)
    summary = summarise(timeline, records, plan) | jobs | {"generator_dropped": dropped}
    summary["topology"] = plan.topology
    if app_log and plan.topology == "split":
        summary["app_log_tail"] = app_log
    return OutageResult(
        config=config.name,
        fault=asdict(plan.fault),
        timeline=timeline,
        summary=summary,
        topology=plan.topology,
    )


#: The configurations compared by default.
STANDARD_CONFIGS = (
    OutageConfig("breaker", {"CACHELAB_BREAKER_ENABLED": "true"}),
    OutageConfig("no-breaker", {"CACHELAB_BREAKER_ENABLED": "false"}),
)

LIMITER_CONFIGS = (
    OutageConfig("limiter-open", {"CACHELAB_RATE_LIMIT_FAILURE": "open"}),
    OutageConfig("limiter-closed", {"CACHELAB_RATE_LIMIT_FAILURE": "closed"}),
    OutageConfig("limiter-local", {"CACHELAB_RATE_LIMIT_FAILURE": "local"}),
)


def timeout_configs(values: tuple[float, ...] = (0.05, 0.25, 1.0)) -> tuple[OutageConfig, ...]:
    return tuple(
        OutageConfig(
            f"timeout-{v}s",
            {"CACHELAB_REDIS_COMMAND_TIMEOUT": str(v), "CACHELAB_REDIS_CONNECT_TIMEOUT": str(v)},
        )
        for v in values
    )
