"""Every answer that spent rate-limit budget says how much is left: through the whole app, on a
real redis-server."""

from __future__ import annotations

import orjson
import pytest
import redis

from cachelab.harness.app_inprocess import InProcessApp

pytest.importorskip("fastapi")

A, B = "acme-01", "globex-02"
BUDGET = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


async def test_error_answers_after_the_rate_check_carry_the_budget_they_spent(
    redis_url: str, redis_admin: redis.Redis
):
    app = await InProcessApp.start(redis_url, tenants=2, initiatives_per_tenant=5, rate_limit="50/1h")
    try:
        session = await app.login(A)
        remaining = []
        answers = [
            ("GET", f"/api/tenants/{A}/kpis", b"", 200),
            ("GET", f"/api/tenants/{B}/kpis", b"", 403),  # another tenant
            ("GET", f"/api/tenants/{A}/initiatives/999999", b"", 404),  # no such row
            ("PATCH", f"/api/tenants/{A}/initiatives/1", orjson.dumps({"progress": 1000}), 422),
            ("GET", f"/api/tenants/{A}/kpis", b"", 200),
        ]
        for method, path, body, expected in answers:
            status, headers, _ = await app.request(method, path, session=session, body=body)
            assert status == expected, (method, path)
            assert all(name in headers for name in BUDGET), (status, headers)
            assert "retry-after" not in headers, status
            assert headers["x-ratelimit-limit"] == "50"
            remaining.append(int(headers["x-ratelimit-remaining"]))
        # Each answer is one more unit spent, error or not, and each says so.
        assert remaining == sorted(remaining, reverse=True) and len(set(remaining)) == len(remaining)

        # Login is checked twice (the public routes' limit, then its own per-account one): one set of
        # headers, the tighter budget's, not both.
        body = orjson.dumps({"email": app.accounts()[0]["email"], "password": app.password})
        status, headers, _ = await app.request("POST", "/api/login", body=body)
        assert status == 200 and headers["x-ratelimit-limit"] == "10", headers  # 10 per account

        # Without a session: still checked per address first, so a 401 carries its budget too.
        status, headers, _ = await app.request("GET", f"/api/tenants/{A}/kpis")
        assert status == 401 and all(name in headers for name in BUDGET)
        # An answer that never reached the check (liveness is not limited) has none.
        status, headers, _ = await app.request("GET", "/api/live")
        assert status == 200 and not any(name in headers for name in BUDGET)
    finally:
        await app.aclose()
