"""Per-request cost: what a request did (round trips, commands, SQL), exact for a fixed code path."""

from __future__ import annotations

import asyncio

import httpx

from cachelab import request_cost
from cachelab.client import ResilientRedis
from cachelab.harness.app_server import AppServer
from cachelab.loadtest.metrics import LoadMetrics


async def test_a_scope_counts_its_own_round_trips_and_commands_but_not_background_work(
    rredis: ResilientRedis,
):
    done = asyncio.Event()

    async def background() -> None:
        await rredis.client.set("bg", 1)
        done.set()

    # Two pooled connections open first: a connection's handshake is billed to whoever opens it.
    await asyncio.gather(rredis.client.get("x"), rredis.client.get("y"))
    with request_cost.scope() as cost:
        await rredis.client.get("a")
        async with rredis.client.pipeline(transaction=False) as pipe:
            await pipe.get("a").get("b").get("c").execute()
        await asyncio.gather(rredis.client.get("x"), rredis.client.get("y"))  # tasks share the scope
        rredis.background.submit(background)
        await asyncio.wait_for(done.wait(), 5)
    assert (cost.redis_round_trips, cost.redis_commands) == (4, 6)
    assert request_cost.current.get() is None
    assert request_cost.parse_header(cost.header()) == {"redis-rt": 4, "redis-cmd": 6, "db": 0}


def test_the_cost_header_is_off_by_default_and_exact_per_request_class_when_on():
    on = AppServer(env={"CACHELAB_COST_HEADER": "on"}, tenants=1, initiatives_per_tenant=20)
    with on as app, httpx.Client(base_url=app.base_url, timeout=10) as http:
        costs = [
            request_cost.parse_header(http.get("/api/health").headers["x-request-cost"]) for _ in range(3)
        ]
    assert costs[0] == costs[1] == costs[2] and costs[0]["redis-rt"] >= 1 and costs[0]["db"] >= 1
    with AppServer(tenants=1, initiatives_per_tenant=20) as app, httpx.Client(base_url=app.base_url) as http:
        assert "x-request-cost" not in http.get("/api/health").headers


def test_locust_metrics_tally_costs_per_request_class_and_show_when_a_class_varies():
    metrics = LoadMetrics()
    for header, x_cache in (("redis-rt=2, redis-cmd=2, db=0", "HIT"),) * 3 + (
        ("redis-rt=3, redis-cmd=3, db=2", "MISS"),
        ("redis-rt=3, redis-cmd=3, db=0", "MISS"),  # coalesced behind another request's load
    ):
        metrics.record("GET", "/kpis", 1.0, status=200, x_cache=x_cache, failed=False, cost=header)
    again = LoadMetrics()
    again.merge_report(metrics.drain())  # what a worker ships to the master survives the trip
    costs = again.summary(1.0)["GET /kpis"]["costs"]
    assert costs["200 HIT"]["redis-rt"] == {"requests": 3, "min": 2, "max": 2, "mean": 2.0}
    assert costs["200 MISS"]["db"] == {"requests": 2, "min": 0, "max": 2, "mean": 1.0}


def test_a_warm_cached_read_costs_one_round_trip_with_the_limits_and_the_session_check():
    """The auth round (two rate limits, the session read) and the endpoint's cache read go out as
    one pipeline: a hit is one round trip of four commands, a miss adds only the fill."""
    from cachelab.harness.app_client import app_sessions

    with AppServer(env={"CACHELAB_COST_HEADER": "on"}, tenants=2, initiatives_per_tenant=20) as app:
        sessions = app_sessions(app)
        (tenant, headers), (other, _) = list(sessions.items())[:2]
        with httpx.Client(base_url=app.base_url, timeout=10, headers=headers) as http:

            def get(path: str) -> tuple[int, str | None, dict[str, int]]:
                r = http.get(f"/api/tenants/{tenant}/{path}")
                cost = request_cost.parse_header(r.headers["x-request-cost"])
                return r.status_code, r.headers.get("x-cache"), cost

            get("kpis")  # the first request also opens the connection and loads the scripts
            status, x_cache, miss = get("areas")
            assert (status, x_cache) == (200, "MISS")
            assert (miss["redis-rt"], miss["db"]) == (2, 1)  # the round, then the fill
            for path in ("kpis", "areas", "users"):
                get(path)
                status, x_cache, hit = get(path)
                assert (status, x_cache) == (200, "HIT")
                assert hit == {"redis-rt": 1, "redis-cmd": 4, "db": 0}, path
            # Another tenant's path is refused whatever the round read, and serves nothing of theirs.
            refused = http.get(f"/api/tenants/{other}/kpis")
            assert refused.status_code == 403 and "x-cache" not in refused.headers
