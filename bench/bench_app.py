"""The sample app's request path, in process: a warm cached read against the app's own floor.

Each row is one whole request through the ASGI app (middleware, routing,
dependencies, our Redis work, the response) called in this event loop by
:class:`~cachelab.harness.app_inprocess.InProcessApp`: no socket and no HTTP
parser, so the figure is the app's own cost per request, and the round trips
and commands are exact. The floor is ``GET /api/live``, which touches neither
Redis nor the database; a warm ``GET /api/tenants/{t}/kpis`` pays, on top of
it, the session check, two rate limits and the cache read (one pipelined
round trip, four commands) and the response; ``GET /api/dashboard`` is keyed by
its caller, and its read rides in the same round once this process has read
the session. ``cachelab report`` divides each
by the PING floor of its trial; the summary's "hot path" row is their ratio.
The ``fast`` rows are the same two requests on an app with
``CACHELAB_NEAR_CACHE=on`` and ``CACHELAB_FAST_READS=on``
(:mod:`cachelab.app.fast_reads`): the warm read answered in front of FastAPI,
with no round trip. Over real HTTP, one uvicorn worker under wrk:
``cachelab hotpath`` (``--fast-reads``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from cachelab.client import RoundTripCounter
from cachelab.harness.app_inprocess import InProcessApp

pytest.importorskip("fastapi")

TENANT = "acme-01"
#: Generous limits: a benchmark's thousands of requests must all be served, not refused.
SETTINGS = {"rate_limit": "1000000000/60s", "cost_header": False}


FAST_READS = {**SETTINGS, "near_cache": True, "fast_reads": True}


@pytest.fixture(params=["route", "fast"])
def dashboard(
    request: pytest.FixtureRequest,
    redis_url: str,
    bench_admin: redis.Redis,
    bench_round_trips: RoundTripCounter,
    arun: Callable[..., Any],
) -> Iterator[tuple[InProcessApp, str]]:
    """The app on the bench's Redis (flushed for this test), logged in as the tenant's admin; as
    configured by default (``route``) or with fast reads (``fast``)."""
    settings = FAST_READS if request.param == "fast" else SETTINGS
    app = arun(InProcessApp.start(redis_url, tenants=1, initiatives_per_tenant=50, **settings))
    try:
        app.count_round_trips_in(bench_round_trips)
        yield app, arun(app.login(TENANT))
    finally:
        arun(app.aclose())


#: The tenant's cached reads, and the caller's own dashboard.
CACHED_READS = {"kpis": f"/api/tenants/{TENANT}/kpis", "areas": f"/api/tenants/{TENANT}/areas",
                "dashboard": "/api/dashboard"}  # fmt: skip


@pytest.mark.parametrize("path", list(CACHED_READS))
def test_app_cached_read(path: str, dashboard: tuple[InProcessApp, str], bench_async: Any, arun: Any):
    app, session = dashboard
    url = CACHED_READS[path]
    arun(app.get(url, session))  # the miss that fills it
    status, headers, _ = arun(app.get(url, session))
    assert (status, headers["x-cache"]) == (200, "HIT")
    if app.state.trusted is not None:  # fast reads: the next read fills the near cache
        arun(app.get(url, session))
        assert arun(app.get(url, session))[1]["x-cache"] == "HIT-L1"

    async def request() -> None:
        status, _, _ = await app.get(url, session)
        assert status == 200

    bench_async(request, group="app-hotpath", ops=100,
                extra={"endpoint": f"GET {url}", "fairness": "warm cache hit, session and two rate limits "
                       "checked; in process: no socket or HTTP parser"})  # fmt: skip


def test_app_floor(dashboard: tuple[InProcessApp, str], bench_async: Any):
    app, _ = dashboard

    async def request() -> None:
        status, _, _ = await app.get("/api/live")
        assert status == 200

    bench_async(request, group="app-hotpath", ops=100,
                extra={"endpoint": "GET /api/live", "fairness": "the app's floor: same middleware and "
                       "framework, no Redis, no database"})  # fmt: skip
