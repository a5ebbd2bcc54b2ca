"""End to end: the real app under uvicorn, real redis-server, SQLite, over HTTP."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator

import httpx
import pytest

from cachelab.harness.app_server import AppServer

pytestmark = pytest.mark.slow
_ips = itertools.count(1)


def client_for(app: AppServer) -> httpx.Client:
    """A client with its own (forwarded) IP, so each test has its own rate-limit budget."""
    n = next(_ips)
    return httpx.Client(
        base_url=app.base_url,
        timeout=10,
        headers={"X-Forwarded-For": f"198.51.100.{n % 250}", "User-Agent": f"test-{n}"},
    )


@pytest.fixture(scope="module")
def app() -> Iterator[AppServer]:
    env = {"CACHELAB_RATE_LIMIT": "60/60s", "CACHELAB_CACHE_MODE": "cache-aside"}
    with AppServer(
        env=env,
        database_url=os.environ.get("DATABASE_URL"),
        tenants=3,
        initiatives_per_tenant=300,
        job_workers=1,
    ) as server:
        yield server


@pytest.fixture
def http(app: AppServer) -> Iterator[httpx.Client]:
    with client_for(app) as client:
        yield client


def first_tenant(http: httpx.Client) -> str:
    return http.get("/api/tenants").json()[0]["id"]


@pytest.mark.parametrize("path", ["kpis", "areas", "stats", "users", "initiatives?status=in_progress&page=1"])
def test_cached_endpoints_miss_then_hit_with_identical_bodies(http, path):
    tenant = first_tenant(http)
    http.patch(f"/api/tenants/{tenant}/initiatives/1", json={"progress": 1})  # a cold start for this test
    first = http.get(f"/api/tenants/{tenant}/{path}")
    second = http.get(f"/api/tenants/{tenant}/{path}")
    assert first.status_code == second.status_code == 200
    assert (first.headers["x-cache"], second.headers["x-cache"]) in {("MISS", "HIT"), ("HIT", "HIT")}
    assert second.headers["x-cache"] == "HIT"
    assert first.json() == second.json()


def test_initiative_list_key_is_canonical(http):
    tenant = first_tenant(http)
    a = http.get(f"/api/tenants/{tenant}/initiatives?page=2&status=planning")
    b = http.get(f"/api/tenants/{tenant}/initiatives?status=planning&page=2")
    assert b.headers["x-cache"] == "HIT" and a.json() == b.json()
    assert all({"id", "progress"} <= item.keys() for item in b.json()["items"])


def test_patch_then_read_your_writes_with_a_miss(http):
    tenant = first_tenant(http)
    listing = http.get(f"/api/tenants/{tenant}/initiatives").json()["items"]
    target = listing[0]
    http.get(f"/api/tenants/{tenant}/kpis")
    http.get(f"/api/tenants/{tenant}/initiatives/{target['id']}")
    new_progress = (target["progress"] + 37) % 101
    patched = http.patch(f"/api/tenants/{tenant}/initiatives/{target['id']}", json={"progress": new_progress})
    assert patched.status_code == 200 and patched.json()["progress"] == new_progress
    row = http.get(f"/api/tenants/{tenant}/initiatives/{target['id']}")
    assert row.headers["x-cache"] == "HIT"  # write-through put the new version in place
    assert row.json()["progress"] == new_progress
    kpis = http.get(f"/api/tenants/{tenant}/kpis")
    assert kpis.headers["x-cache"] == "MISS"
    after = http.get(f"/api/tenants/{tenant}/initiatives")
    assert after.headers["x-cache"] == "MISS"
    assert {i["id"]: i["progress"] for i in after.json()["items"]}[target["id"]] == new_progress


def test_a_write_invalidates_only_the_list_pages_that_can_show_the_row(http):
    tenant = http.get("/api/tenants").json()[1]["id"]  # a tenant no other test writes to
    base = f"/api/tenants/{tenant}/initiatives"
    row = http.get(base).json()["items"][0]
    areas = [a["id"] for a in http.get(f"/api/tenants/{tenant}/areas").json()]
    other_status = next(s for s in ("planning", "completed") if s != row["status"])
    other_area = next(a for a in areas if a != row["area_id"])
    showing = ["", f"?status={row['status']}", f"?area_id={row['area_id']}"]
    not_showing = [f"?status={other_status}", f"?area_id={other_area}"]
    for query in showing + not_showing:
        http.get(base + query)

    http.patch(f"{base}/{row['id']}", json={"progress": (row["progress"] + 1) % 101})
    served = {q: http.get(base + q).headers["x-cache"] for q in showing + not_showing}
    assert served == dict.fromkeys(showing, "MISS") | dict.fromkeys(not_showing, "HIT")

    # A status change moves the row between status pages: both totals are current at once.
    before = {s: http.get(f"{base}?status={s}").json()["total"] for s in (row["status"], other_status)}
    http.patch(f"{base}/{row['id']}", json={"status": other_status})
    after = {s: http.get(f"{base}?status={s}").json()["total"] for s in (row["status"], other_status)}
    assert after == {row["status"]: before[row["status"]] - 1, other_status: before[other_status] + 1}


@pytest.mark.parametrize("tenant", ["nope", "a*", "%3F", "t[1]", "x:y"])
def test_unknown_and_hostile_tenant_ids_are_404(http, tenant):
    for path in ["kpis", "areas", "stats", "initiatives"]:
        response = http.get(f"/api/tenants/{httpx.URL(tenant).raw_path.decode()}/{path}")
        assert response.status_code == 404, (tenant, path, response.text)


def test_invalid_input_is_422_never_500(http):
    tenant = first_tenant(http)
    base = f"/api/tenants/{tenant}/initiatives"
    assert http.patch(f"{base}/1", json={"progress": 101}).status_code == 422
    assert http.patch(f"{base}/1", json={"status": "bogus"}).status_code == 422
    assert http.patch(f"{base}/1", json={"unknown": 1}).status_code == 422
    assert (
        http.patch(
            f"{base}/1", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    assert http.patch(f"{base}/999999", json={"progress": 5}).status_code == 404
    assert http.get(f"{base}?page=0").status_code == 422
    assert http.get(f"{base}?status=bogus").status_code == 422
    assert http.post("/api/login", json={}).status_code == 422


def test_rate_limit_answers_429_with_headers(app):
    with client_for(app) as http:
        codes = [http.get("/api/tenants").status_code for _ in range(65)]
        assert codes.count(200) == 60 and codes[-1] == 429
        refused = http.get("/api/tenants")
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-ratelimit-limit"] == "60"
        assert refused.headers["x-ratelimit-remaining"] == "0"
        assert "x-ratelimit-reset" in refused.headers
        assert http.get("/api/health").status_code == 200  # health is never limited


def test_login_me_logout_and_unknown_cookie_is_not_adopted(http, app):
    tenant = first_tenant(http)
    email = http.get(f"/api/tenants/{tenant}/users").json()[0]["email"]
    assert http.get("/api/me").status_code == 401

    forged = "A" * 43
    assert http.get("/api/me", headers={"Cookie": f"session={forged}"}).status_code == 401
    login = http.post("/api/login", json={"email": email}, headers={"Cookie": f"session={forged}"})
    assert login.status_code == 200
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    session_id = login.cookies.get("session")
    assert session_id and session_id != forged  # rotated, the client's value never adopted
    http.cookies.set("session", session_id)
    import redis

    admin = redis.Redis.from_url(app.redis_url)
    # Nothing but its rate-limit counter (which expires with its window) ever names the forged id.
    assert [k for k in admin.scan_iter(match=f"*{forged}*") if b":rl:" not in k] == []
    admin.close()

    me = http.get("/api/me")
    assert me.status_code == 200 and me.json()["email"] == email
    dash1, dash2 = http.get("/api/dashboard"), http.get("/api/dashboard")
    assert dash1.status_code == 200 and dash2.headers["x-cache"] == "HIT"
    assert http.post("/api/logout").status_code == 200
    assert http.get("/api/me", headers={"Cookie": f"session={session_id}"}).status_code == 401


def test_report_job_is_completed_by_a_worker_process(http):
    tenant = first_tenant(http)
    response = http.post(f"/api/tenants/{tenant}/reports")
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline:
        status = http.get(f"/api/jobs/{job_id}").json()
        if status["status"] in {"completed", "dead"}:
            break
        time.sleep(0.2)
    assert status is not None and status["status"] == "completed", status
    assert http.get("/api/jobs/unknown-job").status_code == 404


def test_leaderboard_top_and_member_rank(http):
    tenant = first_tenant(http)
    for user, score in [(1, 10), (2, 30), (3, 20)]:
        assert (
            http.post(
                f"/api/tenants/{tenant}/leaderboard", json={"user_id": user, "score": score}
            ).status_code
            == 200
        )
    board = http.get(f"/api/tenants/{tenant}/leaderboard?limit=2&user_id=3").json()
    assert [e["score"] for e in board["top"]] == [30, 20]
    assert board["member"]["rank"] == 1


def test_health_and_metrics(http):
    health = http.get("/api/health").json()
    assert health["status"] == "ok" and health["redis"]["status"] == "ok"
    http.get(f"/api/tenants/{first_tenant(http)}/kpis")
    text = http.get("/metrics").text
    assert 'cachelab_cache_hits_total{cache="kpis"}' in text
    assert "cachelab_breaker_state" in text and "cachelab_ratelimit_decisions_total" in text
    assert "cachelab_http_requests_total" in text


def test_redis_killed_the_app_answers_from_the_database_then_recovers():
    env = {
        "CACHELAB_REDIS_COMMAND_TIMEOUT": "0.2",
        "CACHELAB_REDIS_CONNECT_TIMEOUT": "0.2",
        "CACHELAB_BREAKER_RESET_TIMEOUT": "0.5",
        "CACHELAB_RATE_LIMIT": "100000/60s",
    }
    with AppServer(env=env, tenants=2, initiatives_per_tenant=200) as app, client_for(app) as http:
        tenant = first_tenant(http)
        url = f"/api/tenants/{tenant}/kpis"
        warm = http.get(url)
        assert http.get(url).headers["x-cache"] == "HIT"
        app.redis.kill()
        outage = [http.get(url) for _ in range(20)]
        assert all(r.status_code == 200 for r in outage)
        assert all(r.json() == warm.json() for r in outage)
        assert {r.headers["x-cache"] for r in outage} == {"BYPASS"}
        health = http.get("/api/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        app.redis.start()
        deadline = time.monotonic() + 10
        statuses = []
        while time.monotonic() < deadline:
            statuses.append(http.get(url).headers["x-cache"])
            if statuses[-1] == "HIT":
                break
            time.sleep(0.2)
        assert statuses[-1] == "HIT"
        assert http.get("/api/health").json()["status"] == "ok"


def test_queue_and_sessions_live_on_their_own_noeviction_redis():
    from cachelab.harness import RedisServer, RedisServerConfig

    cache_config = RedisServerConfig(maxmemory="64mb", maxmemory_policy="allkeys-lru")
    with RedisServer() as durable, AppServer(
        redis_config=cache_config,
        env={"QUEUE_REDIS_URL": durable.url, "CACHELAB_RATE_LIMIT": "100000/60s"},
        tenants=1,
        initiatives_per_tenant=50,
        job_workers=1,
    ) as app, client_for(app) as http:
        tenant = first_tenant(http)
        email = http.get(f"/api/tenants/{tenant}/users").json()[0]["email"]
        assert http.post("/api/login", json={"email": email}).status_code == 200
        job_id = http.post(f"/api/tenants/{tenant}/reports").json()["job_id"]
        deadline = time.monotonic() + 20
        while http.get(f"/api/jobs/{job_id}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        admin = durable.client()
        keys = [k.decode() for k in admin.scan_iter(count=1000)]
        admin.close()
        assert any(":queue:" in k for k in keys) and any("sess" in k for k in keys), keys
        cache = app.redis.client()
        assert not [k for k in cache.scan_iter(match="*queue*")]
        cache.close()
