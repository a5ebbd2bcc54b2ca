"""What rides in the auth round: a cached read's entry comes back with the rate and session checks,
in one round trip, whether the key is in the path or keyed by the caller (when this process has
seen the session); the round's own session read still decides."""

from __future__ import annotations

import orjson
import pytest
import redis

from cachelab import request_cost
from cachelab.harness.app_inprocess import InProcessApp

pytest.importorskip("fastapi")

A = "acme-01"


async def _app(redis_url: str) -> InProcessApp:
    return await InProcessApp.start(
        redis_url, tenants=1, initiatives_per_tenant=5, rate_limit="100000/60s", cost_header=True
    )


async def _get(app: InProcessApp, path: str, session: str) -> tuple[int, str | None, int, bytes]:
    """(status, X-Cache, Redis round trips, body) of one GET."""
    status, headers, body = await app.request("GET", path, session=session)
    round_trips = request_cost.parse_header(headers["x-request-cost"])["redis-rt"]
    return status, headers.get("x-cache"), round_trips, body


async def test_a_warm_dashboard_is_one_round_trip_for_a_seen_session_and_never_outlives_a_log_out(
    redis_url: str, redis_admin: redis.Redis
):
    app = await _app(redis_url)
    try:
        admin, viewer = await app.login(A), await app.login(A, "viewer")
        assert (await _get(app, "/api/dashboard", admin))[:2] == (200, "MISS")
        status, cache, round_trips, mine = await _get(app, "/api/dashboard", admin)
        assert (status, cache, round_trips) == (200, "HIT", 1)  # the entry came with the session read

        # Another user's dashboard is theirs, in one round trip as well, never the admin's entry.
        await _get(app, "/api/dashboard", viewer)
        status, cache, round_trips, theirs = await _get(app, "/api/dashboard", viewer)
        assert (status, cache, round_trips) == (200, "HIT", 1)
        assert orjson.loads(theirs) != orjson.loads(mine)

        # A session this process has not read lately (say, read by another worker): the same answer,
        # its entry read after the round.
        app.state.seen_sessions.forget(admin)
        assert await _get(app, "/api/dashboard", admin) == (200, "HIT", 2, mine)
        assert (await _get(app, "/api/dashboard", admin))[2] == 1

        # Logged out elsewhere (the session deleted in Redis, this process not told): the round's
        # own session read refuses it, whatever entry rode along.
        assert await app.state.sessions.destroy(admin)
        assert app.state.seen_sessions.get(admin) is not None
        assert (await _get(app, "/api/dashboard", admin))[0] == 401
    finally:
        await app.aclose()


async def test_a_warm_row_is_one_round_trip_and_an_id_spelled_otherwise_still_gets_the_row(
    redis_url: str, redis_admin: redis.Redis
):
    app = await _app(redis_url)
    try:
        session = await app.login(A)
        row = f"/api/tenants/{A}/initiatives/"
        assert (await _get(app, row + "1", session))[:2] == (200, "MISS")
        status, cache, round_trips, body = await _get(app, row + "1", session)
        assert (status, cache, round_trips) == (200, "HIT", 1)
        # "01" is row 1 too: the entry read in the round was under "01" and goes unused, so the
        # route reads row 1's entry after it, and answers the same row.
        assert await _get(app, row + "01", session) == (200, "HIT", 2, body)
        assert (await _get(app, row + "*", session))[0] == 422
        assert (await _get(app, row + "999", session))[0] == 404
    finally:
        await app.aclose()
