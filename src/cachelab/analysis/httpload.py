"""Paced, Zipf-skewed reads against the sample app, and what the app says it did.

The TTL and cold/warm notebooks measure the cache *through the app*, so they
need the same thing: a catalogue of cacheable URLs, a seeded Zipf draw over
it (a few resources get most reads, as on a real dashboard; the same seed
gives the same requests in the same order, so two runs are comparable), and
an open-model sender — request ``k`` starts at ``t0 + k / rate`` whether or
not earlier ones finished, and its latency counts from that intended start,
so a stall is measured in full (see :mod:`cachelab.loadtest.pacing`).

Database load is the app's own ``cachelab_db_queries_total`` counter from
``/metrics``; Redis memory is ``INFO memory`` of the app's Redis.

Every tenant URL needs a session of that tenant: :func:`tenant_sessions` logs
in once per tenant (before anything is measured) and :func:`run_paced` sends
each request with its tenant's session, as a dashboard in a browser would.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import redis

from cachelab.app.db import STATUSES
from cachelab.experiments.outage import parse_metrics
from cachelab.harness.app_client import alogin_per_tenant
from cachelab.loadtest.zipf import ZipfSampler

PAGE_SIZE = 20  # the app's default page size for initiative lists


@dataclass(frozen=True)
class Resource:
    """One cacheable URL of one tenant."""

    tenant: str
    path: str  # relative to /api/tenants/<tenant>/

    @property
    def url(self) -> str:
        return f"/api/tenants/{self.tenant}/{self.path}"


@dataclass(frozen=True)
class Planned:
    t: float  # intended start, seconds after the load's start
    resource: Resource


@dataclass
class Served:
    """One response, timed on the load's clock (seconds after its start)."""

    t: float  # intended start
    sent: float
    done: float
    resource: Resource
    status: int  # 0 for a transport error
    x_cache: str | None
    age: int | None  # the Age header: seconds since the served value was computed

    @property
    def latency_ms(self) -> float:
        """From the intended start (coordinated-omission corrected)."""
        return (self.done - self.t) * 1000

    @property
    def service_ms(self) -> float:
        """From the actual send: what the app (and the network) took."""
        return (self.done - self.sent) * 1000

    @property
    def lag_ms(self) -> float:
        """How late the request was sent against its schedule (the in-flight cap, or a busy generator)."""
        return (self.sent - self.t) * 1000

    @property
    def hit(self) -> bool:
        return self.x_cache in ("HIT", "STALE")


def catalogue(tenants: Sequence[str], initiatives_per_tenant: int, *, seed: int = 1) -> list[Resource]:
    """Every cacheable read the dashboard offers per tenant, shuffled (seeded) into popularity order.

    KPIs, areas, every page of the initiative list and the first pages of each
    status filter. Shuffling decides which resources Zipf makes hot, so hot
    keys are spread over tenants and endpoints instead of all being page 1.
    """
    pages = max(1, math.ceil(initiatives_per_tenant / PAGE_SIZE))
    status_pages = max(1, math.ceil(initiatives_per_tenant / len(STATUSES) / PAGE_SIZE))
    items: list[Resource] = []
    for tenant in tenants:
        items += [Resource(tenant, "kpis"), Resource(tenant, "areas")]
        items += [Resource(tenant, f"initiatives?page={p}") for p in range(1, pages + 1)]
        items += [
            Resource(tenant, f"initiatives?page={p}&status={s}")
            for s in STATUSES
            for p in range(1, status_pages + 1)
        ]
    random.Random(seed).shuffle(items)
    return items


def zipf_plan(
    resources: Sequence[Resource], requests: int, rate: float, *, s: float = 1.1, seed: int = 0
) -> list[Planned]:
    """``requests`` reads at ``rate`` per second, each resource drawn by Zipf rank."""
    sampler = ZipfSampler(len(resources), s=s, seed=seed)
    return [Planned(n / rate, sampler.choice(resources)) for n in range(requests)]


async def run_paced(
    http: httpx.AsyncClient,
    plan: Sequence[Planned],
    start: float,
    *,
    max_in_flight: int = 64,
    on_response: Callable[[Served], None] | None = None,
    sessions: Mapping[str, Mapping[str, str]] | None = None,
) -> list[Served]:
    """Send ``plan`` on schedule from ``start`` (a ``time.monotonic()`` instant); return every response.

    In-flight requests are capped; a request that cannot start because of the
    cap waits (and its wait counts in its latency, from its intended start).
    Each request carries its tenant's session from ``sessions`` (see :func:`tenant_sessions`).
    """
    served: list[Served] = []
    gate = asyncio.Semaphore(max_in_flight)

    async def one(item: Planned) -> None:
        async with gate:
            sent = time.monotonic() - start
            status, x_cache, age = 0, None, None
            try:
                headers = dict(sessions.get(item.resource.tenant, {})) if sessions else None
                response = await http.get(item.resource.url, headers=headers)
                status, x_cache = response.status_code, response.headers.get("x-cache")
                with contextlib.suppress(TypeError, ValueError):
                    age = int(response.headers.get("age"))  # type: ignore[arg-type]
            except httpx.HTTPError:
                pass
            record = Served(item.t, sent, time.monotonic() - start, item.resource, status, x_cache, age)
            served.append(record)
            if on_response is not None:
                on_response(record)

    tasks = []
    for item in plan:
        delay = start + item.t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(item)))
    await asyncio.gather(*tasks)
    served.sort(key=lambda r: r.t)
    return served


async def app_metrics(http: httpx.AsyncClient) -> dict[str, float]:
    """The app's ``/metrics`` flattened to ``name{labels}`` → value."""
    return parse_metrics((await http.get("/metrics")).text)


async def db_queries(http: httpx.AsyncClient) -> float:
    """SQL statements the app has executed so far (its ``cachelab_db_queries_total``)."""
    return (await app_metrics(http)).get("cachelab_db_queries_total", math.nan)


def redis_memory(url: str) -> dict[str, int]:
    """Memory of the Redis at ``url`` (the app's, which we launched): server-wide and per key.

    ``used_memory`` also grows with client connections and buffers; ``key_bytes``
    (``MEMORY USAGE`` summed over a ``SCAN``) is what the cached data itself takes.
    """
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        info = client.info("memory")
        key_bytes = keys = 0
        for key in client.scan_iter(count=1000):
            key_bytes += int(client.memory_usage(key, samples=0) or 0)
            keys += 1
        return {
            "used_memory": int(info["used_memory"]),
            "used_memory_dataset": int(info["used_memory_dataset"]),
            "keys": keys,
            "key_bytes": key_bytes,
        }
    finally:
        client.close()


async def tenant_sessions(http: httpx.AsyncClient, app: Any) -> dict[str, dict[str, str]]:
    """``{tenant: Cookie header}``: one session per tenant of an AppServer, as its admin. The
    tenants are the dict's keys (each tenant sees only itself in ``/api/tenants``)."""
    return await alogin_per_tenant(http, app.accounts(), app.seed_password)


def lag_report(served: Sequence[Served]) -> dict[str, float]:
    """p99 of send lag and of service time: a large lag with a small service time means the load
    generator itself fell behind (a busy machine), not the app."""
    import numpy as np

    if not served:
        return {"send_lag_p99_ms": math.nan, "service_p99_ms": math.nan}
    return {
        "send_lag_p99_ms": float(np.percentile([r.lag_ms for r in served], 99)),
        "service_p99_ms": float(np.percentile([r.service_ms for r in served], 99)),
    }


def hit_ratio(served: Sequence[Served]) -> float:
    cached = [r for r in served if r.x_cache]
    return sum(r.hit for r in cached) / len(cached) if cached else math.nan


def client_limits(max_in_flight: int) -> httpx.Limits:
    return httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
