"""End to end: the real app under uvicorn, real redis-server, SQLite, over HTTP.

Every request but health, login and log-out carries a session; tests log in as
seeded users (password: the server's ``seed_password``) and send the session
as a cookie. Rate-limit tests run against their own servers with small limits,
and never depend on ``X-Forwarded-For``: the suite's client is 127.0.0.1, and
the app believes that header only from configured proxies.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cachelab.app.fast_reads import route_contexts
from cachelab.app.main import create_app
from cachelab.harness.app_client import cookie_header, first_account, login
from cachelab.harness.app_server import AppServer

pytestmark = pytest.mark.slow

#: The only /api routes that answer without a session.
PUBLIC = {("GET", "/api/health"), ("GET", "/api/live"), ("POST", "/api/login"), ("POST", "/api/logout")}
GENEROUS = {
    "CACHELAB_RATE_LIMIT": "100000/60s",
    "CACHELAB_LOGIN_RATE_LIMIT_IP": "10000/60s",
    "CACHELAB_LOGIN_RATE_LIMIT_ACCOUNT": "10000/60s",
}


def app_routes() -> list[tuple[str, str]]:
    """(method, path template) of every route the app declares, from FastAPI itself."""
    return sorted(
        (method, route.path)
        for route in route_contexts(create_app())
        for method in (getattr(route, "methods", None) or ())
        if method != "HEAD"
    )


API_ROUTES = [r for r in app_routes() if r[1].startswith("/api/")]
AUTHENTICATED = [r for r in API_ROUTES if r not in PUBLIC]
TENANT_ROUTES = [r for r in API_ROUTES if r[1].startswith("/api/tenants/{tenant_id}")]
WRITES = [r for r in TENANT_ROUTES if r[0] in {"POST", "PATCH", "PUT", "DELETE"}]


def fill(path: str, tenant: str, initiative: int = 1, job: str = "0" * 32) -> str:
    return path.format(tenant_id=tenant, initiative_id=initiative, job_id=job)


def body_for(method: str, path: str, user_id: int = 1) -> dict[str, Any] | None:
    """A body the route would accept, so that only authorization can refuse the request."""
    if method == "PATCH":
        return {"progress": 42}
    if path.endswith("/leaderboard"):
        return {"user_id": user_id, "score": 1.0}
    return {} if method == "POST" else None


@pytest.fixture(scope="module")
def app() -> Iterator[AppServer]:
    env = {**GENEROUS, "CACHELAB_CACHE_MODE": "cache-aside"}
    with AppServer(
        env=env,
        database_url=os.environ.get("DATABASE_URL"),
        tenants=3,
        initiatives_per_tenant=300,
        job_workers=1,
    ) as server:
        yield server


class Sessions:
    """Logs in once per (tenant, role) and hands out clients carrying that session."""

    def __init__(self, app: AppServer) -> None:
        self.app = app
        self.accounts = app.accounts()
        self.tenants = sorted({a["tenant_id"] for a in self.accounts})
        self._ids: dict[tuple[str, str], str] = {}
        self._clients: list[httpx.Client] = []

    def session_id(self, tenant: str, role: str = "admin") -> str:
        if (tenant, role) not in self._ids:
            with httpx.Client(base_url=self.app.base_url, timeout=30) as http:
                email = first_account(self.accounts, tenant, [role])
                self._ids[tenant, role] = login(http, email, self.app.seed_password)
        return self._ids[tenant, role]

    def client(self, tenant: str | None = None, role: str = "admin") -> httpx.Client:
        headers = cookie_header(self.session_id(tenant or self.tenants[0], role))
        client = httpx.Client(base_url=self.app.base_url, timeout=30, headers=headers)
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()


@pytest.fixture(scope="module")
def sessions(app: AppServer) -> Iterator[Sessions]:
    s = Sessions(app)
    yield s
    s.close()


@pytest.fixture
def http(sessions: Sessions) -> httpx.Client:
    """The first tenant's admin."""
    return sessions.client()


@pytest.fixture
def anonymous(app: AppServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=app.base_url, timeout=30) as client:
        yield client


def first_tenant(http: httpx.Client) -> str:
    return http.get("/api/tenants").json()[0]["id"]


def checksum(app: AppServer) -> str:
    from cachelab.app.db import Database
    from cachelab.app.seed import data_checksum

    async def run() -> str:
        db = Database.from_url(app.database_url)
        try:
            return await data_checksum(db)
        finally:
            await db.close()

    return asyncio.run(run())


# -- authentication and authorization -------------------------------------------------------
def test_the_route_list_is_read_from_the_app_and_covers_every_kind_of_route():
    assert len(API_ROUTES) >= 17, API_ROUTES
    assert set(API_ROUTES) >= PUBLIC
    assert ("PATCH", "/api/tenants/{tenant_id}/initiatives/{initiative_id}") in WRITES
    assert ("GET", "/api/jobs/{job_id}") in AUTHENTICATED and ("GET", "/api/tenants") in AUTHENTICATED


@pytest.mark.parametrize("cookie", [None, "A" * 43, "not-a-session-id"])
def test_every_route_but_the_public_ones_answers_401_without_a_live_session(
    app, sessions, anonymous, cookie
):
    tenant = sessions.tenants[0]
    headers = {} if cookie is None else {"Cookie": f"session={cookie}"}
    before = checksum(app)
    answers = {
        (method, path): anonymous.request(
            method, fill(path, tenant), json=body_for(method, path), headers=headers
        ).status_code
        for method, path in AUTHENTICATED
    }
    assert answers == dict.fromkeys(AUTHENTICATED, 401)
    assert checksum(app) == before


def test_a_session_of_another_tenant_gets_403_on_every_tenant_route_and_changes_nothing(app, sessions):
    mine, theirs = sessions.tenants[0], sessions.tenants[1]
    victim = sessions.client(theirs)
    board_before = victim.get(f"/api/tenants/{theirs}/leaderboard").json()
    before = checksum(app)
    with sessions.client(mine) as attacker:
        for target in (theirs, "no-such-tenant"):  # an unknown tenant: the same 403, nothing leaks
            answers = {
                (method, path): attacker.request(
                    method, fill(path, target), json=body_for(method, path)
                ).status_code
                for method, path in TENANT_ROUTES
            }
            assert answers == dict.fromkeys(TENANT_ROUTES, 403), target
    assert checksum(app) == before
    assert victim.get(f"/api/tenants/{theirs}/leaderboard").json() == board_before
    assert victim.get(f"/api/tenants/{theirs}/initiatives/1").status_code == 404  # row 1 is tenant 0's


@pytest.mark.parametrize("tenant", ["nope", "a*", "%3F", "t[1]", "x:y", "%00"])
def test_hostile_tenant_ids_are_refused_with_403_before_any_lookup(http, tenant):
    for path in ["kpis", "areas", "stats", "initiatives", "users"]:
        response = http.get(f"/api/tenants/{tenant}/{path}")
        assert response.status_code == 403, (tenant, path, response.text)


def test_another_tenants_row_is_404_inside_your_own_tenant_and_is_not_changed(app, sessions):
    mine, theirs = sessions.tenants[0], sessions.tenants[1]
    victim = sessions.client(theirs)
    row = victim.get(f"/api/tenants/{theirs}/initiatives").json()["items"][0]
    with sessions.client(mine) as attacker:
        base = f"/api/tenants/{mine}/initiatives/{row['id']}"
        assert attacker.get(base).status_code == 404
        assert attacker.patch(base, json={"title": "changed across tenants"}).status_code == 404
    assert victim.get(f"/api/tenants/{theirs}/initiatives/{row['id']}").json()["title"] == row["title"]


def test_a_viewer_reads_but_every_write_is_403_and_changes_nothing(app, sessions):
    tenant = sessions.tenants[0]
    viewer = sessions.client(tenant, "viewer")
    assert viewer.get("/api/me").json()["role"] == "viewer"
    assert viewer.get(f"/api/tenants/{tenant}/kpis").status_code == 200
    before = checksum(app)
    for method, path in WRITES:
        response = viewer.request(method, fill(path, tenant), json=body_for(method, path))
        assert response.status_code == 403, (method, path, response.text)
    assert checksum(app) == before


def test_tenants_shows_only_the_callers_own_tenant(sessions):
    for tenant in sessions.tenants:
        assert [t["id"] for t in sessions.client(tenant).get("/api/tenants").json()] == [tenant]


def test_the_same_idempotency_key_from_two_tenants_names_two_jobs_each_visible_only_to_its_tenant(sessions):
    a, b = sessions.tenants[0], sessions.tenants[1]
    client_a, client_b = sessions.client(a), sessions.client(b)
    key = {"Idempotency-Key": "monthly-report"}
    job_a = client_a.post(f"/api/tenants/{a}/reports", headers=key).json()["job_id"]
    assert client_a.post(f"/api/tenants/{a}/reports", headers=key).json()["job_id"] == job_a  # idempotent
    job_b = client_b.post(f"/api/tenants/{b}/reports", headers=key).json()["job_id"]
    assert job_b != job_a
    assert client_a.get(f"/api/jobs/{job_a}").status_code == 200
    # Another tenant's job is exactly as unknown as a job that does not exist.
    stranger, missing = client_b.get(f"/api/jobs/{job_a}"), client_b.get("/api/jobs/" + "0" * 32)
    assert stranger.status_code == missing.status_code == 404 and stranger.json() == missing.json()
    assert client_a.get(f"/api/jobs/{job_b}").status_code == 404


def test_leaderboard_updates_accept_only_users_of_the_tenant(sessions):
    a, b = sessions.tenants[0], sessions.tenants[1]
    client = sessions.client(a)
    other_tenants_user = next(u["id"] for u in sessions.client(b).get(f"/api/tenants/{b}/users").json())
    for user_id in (other_tenants_user, 99_999):
        response = client.post(f"/api/tenants/{a}/leaderboard", json={"user_id": user_id, "score": 5})
        assert response.status_code == 422, response.text
    board = client.get(f"/api/tenants/{a}/leaderboard?limit=100").json()["top"]
    assert other_tenants_user not in {e["user_id"] for e in board}


def test_login_needs_the_password_and_every_failure_gets_the_same_401(app, sessions, anonymous):
    email = first_account(sessions.accounts, sessions.tenants[0], ["member"])
    attempts = {
        "wrong password": {"email": email, "password": "not-" + app.seed_password},
        "no password": {"email": email},
        "unknown e-mail": {"email": "nobody@nowhere.example", "password": app.seed_password},
        "empty password": {"email": email, "password": ""},
    }
    answers = {name: anonymous.post("/api/login", json=body) for name, body in attempts.items()}
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(attempts, 401)
    assert len({r.content for r in answers.values()}) == 1
    assert all("set-cookie" not in r.headers for r in answers.values())
    ok = anonymous.post("/api/login", json={"email": email.upper(), "password": app.seed_password})
    assert ok.status_code == 200 and ok.json()["user"]["email"] == email
    assert "password" not in ok.text and "argon2" not in ok.text
    users = sessions.client().get(f"/api/tenants/{sessions.tenants[0]}/users")
    assert users.status_code == 200 and "argon2" not in users.text and "password" not in users.text


def test_a_stolen_session_is_refused_once_its_owner_logs_out(app, sessions, anonymous):
    tenant = sessions.tenants[0]
    session_id = login(anonymous, first_account(sessions.accounts, tenant, ["member"]), app.seed_password)
    thief = httpx.Client(base_url=app.base_url, timeout=30, headers=cookie_header(session_id))
    with thief:
        assert thief.get(f"/api/tenants/{tenant}/kpis").status_code == 200
        owner = anonymous.post("/api/logout", headers=cookie_header(session_id))
        assert owner.status_code == 200 and owner.json() == {"logged_out": True}
        assert thief.get(f"/api/tenants/{tenant}/kpis").status_code == 401
        assert thief.get("/api/me").status_code == 401


def test_login_rotates_and_never_adopts_a_client_chosen_session_id(app, sessions, anonymous):
    email = first_account(sessions.accounts, sessions.tenants[0], ["manager"])
    forged = "A" * 43
    response = anonymous.post(
        "/api/login",
        json={"email": email, "password": app.seed_password},
        headers={"Cookie": f"session={forged}"},
    )
    assert response.status_code == 200
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    session_id = response.cookies.get("session")
    assert session_id and session_id != forged
    import redis

    admin = redis.Redis.from_url(app.redis_url)
    # Nothing but its rate-limit counter (which expires with its window) ever names the forged id.
    assert [k for k in admin.scan_iter(match=f"*{forged}*") if b":rl:" not in k] == []
    admin.close()
    me = anonymous.get("/api/me", headers=cookie_header(session_id))
    assert me.status_code == 200 and me.json()["email"] == email and me.json()["role"] == "manager"


def test_an_authenticated_request_checks_its_session_and_limits_in_one_script_call_each():
    with small_app() as app, httpx.Client(base_url=app.base_url, timeout=30) as http:
        account = app.accounts()[0]
        session = cookie_header(login(http, account["email"], app.seed_password))
        http.get("/api/me", headers=session)  # scripts loaded, connections open
        watcher, marker = app.redis.client(), app.redis.client()
        marker.ping()  # its connection's handshake happens before the watch
        with watcher.monitor() as monitor:
            assert http.get("/api/me", headers=session).status_code == 200
            marker.echo("end of request")
            sent = []
            while (command := monitor.next_command())["command"] != "ECHO end of request":
                if command["client_type"] != "lua":  # commands run inside a script are its own
                    sent.append(command["command"].split()[0].upper())
        watcher.close()
        marker.close()
    # Per-address limit, per-session limit, and the session read that slides its idle timeout:
    # three EVALSHAs, sent concurrently, and nothing else.
    assert sent == ["EVALSHA"] * 3, sent


# -- caching stays per tenant and per role --------------------------------------------------
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
    assert second.headers["cache-control"] == "private"  # never stored by a shared HTTP cache


def test_cached_reads_of_two_tenants_and_two_roles_never_share_an_entry(sessions):
    a, b = sessions.tenants[0], sessions.tenants[1]
    client_a, client_b = sessions.client(a), sessions.client(b)
    for path in ("kpis", "areas", "users", "initiatives?page=1"):
        for _ in range(2):  # the second read is a hit for each tenant: each has its own entry
            body_a, body_b = (
                client_a.get(f"/api/tenants/{a}/{path}"),
                client_b.get(f"/api/tenants/{b}/{path}"),
            )
        assert body_a.headers["x-cache"] == body_b.headers["x-cache"] == "HIT"
        assert body_a.json() != body_b.json(), path
    admin, viewer = sessions.client(a, "admin"), sessions.client(a, "viewer")
    for _ in range(2):
        mine, theirs = admin.get("/api/dashboard"), viewer.get("/api/dashboard")
    assert mine.headers["x-cache"] in {"HIT", "STALE"} and theirs.headers["x-cache"] in {"HIT", "STALE"}
    assert (mine.json()["role"], theirs.json()["role"]) == ("admin", "viewer")
    assert mine.json()["user_id"] != theirs.json()["user_id"]


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


def test_a_write_invalidates_only_the_list_pages_that_can_show_the_row(sessions):
    tenant = sessions.tenants[2]  # a tenant no other test writes to
    http = sessions.client(tenant)
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


# -- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw", [b'{"title": "   "}', b'{"title": "\\t\\n"}', b'{"title": "a\\u0000b"}', b'{"title": "\\ud800"}']
)
def test_blank_nul_or_unencodable_titles_are_422_and_write_nothing(app, http, raw):
    tenant = first_tenant(http)
    before = http.get(f"/api/tenants/{tenant}/initiatives/2").json()
    response = http.patch(
        f"/api/tenants/{tenant}/initiatives/2", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert http.get(f"/api/tenants/{tenant}/initiatives/2").json() == before
    assert http.get("/api/health").status_code == 200  # and the connection is still usable


def test_invalid_input_is_422_never_500(http, anonymous):
    tenant = first_tenant(http)
    base = f"/api/tenants/{tenant}/initiatives"
    assert http.patch(f"{base}/1", json={"progress": 101}).status_code == 422
    assert http.patch(f"{base}/1", json={"status": "bogus"}).status_code == 422
    assert http.patch(f"{base}/1", json={"unknown": 1}).status_code == 422
    assert http.patch(f"{base}/1", json={}).status_code == 422
    assert (
        http.patch(
            f"{base}/1", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    assert http.patch(f"{base}/999999", json={"progress": 5}).status_code == 404
    assert http.get(f"{base}?page=0").status_code == 422
    assert http.get(f"{base}?status=bogus").status_code == 422
    assert anonymous.post("/api/login", json={}).status_code == 422
    for raw in (
        b'{"email": "\\ud800@x.example", "password": "x"}',
        b'{"email": "a@x", "password": "\\udfff"}',
    ):
        response = anonymous.post("/api/login", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text


# -- jobs, leaderboard, health --------------------------------------------------------------
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
    assert status["result"]["tenant_id"] == tenant
    assert http.get("/api/jobs/unknown-job").status_code == 404


@pytest.mark.parametrize(("method", "path", "endpoint"),
                         [("GET", "initiatives/export", "export"), ("POST", "reports", "reports")])
def test_a_tenant_with_every_slow_slot_taken_gets_429_with_retry_after_and_others_do_not(
    app, sessions, method, path, endpoint
):
    from cachelab.client import ResilientRedis
    from cachelab.patterns.concurrency import ConcurrencyLimiter

    tenant, other = sessions.tenants[0], sessions.tenants[1]
    http, http_other = sessions.client(tenant), sessions.client(other)

    async def hold(n: int) -> tuple[ResilientRedis, ConcurrencyLimiter, list]:
        rr = ResilientRedis.from_url(app.redis_url)
        limiter = ConcurrencyLimiter(rr, n, lease_seconds=60, name=endpoint)  # the app's key for it
        return rr, limiter, [await limiter.acquire(tenant) for _ in range(n)]

    async def give_back(rr: ResilientRedis, limiter: ConcurrencyLimiter, leases: list) -> None:
        for lease in leases:
            await limiter.release(lease)
        await rr.aclose()

    # Four slow requests of this tenant in flight (CACHELAB_TENANT_CONCURRENCY's default)...
    loop = asyncio.new_event_loop()
    try:
        rr, limiter, leases = loop.run_until_complete(hold(4))
        try:
            refused = http.request(method, f"/api/tenants/{tenant}/{path}")
            other_ok = http_other.request(method, f"/api/tenants/{other}/{path}")
        finally:
            loop.run_until_complete(give_back(rr, limiter, leases))
    finally:
        loop.close()
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"] == "1" and refused.headers["x-concurrency-limit"] == "4"
    assert "in flight for this tenant (4 of 4)" in refused.json()["detail"]
    assert other_ok.status_code in (200, 202)  # per tenant: another tenant is not held up
    # ...and once they finish, the next one runs.
    again = http.request(method, f"/api/tenants/{tenant}/{path}")
    assert again.status_code in (200, 202), again.text
    if endpoint == "export":
        body = again.json()
        assert body["count"] == 300 and len(body["items"]) == 300 and not body["truncated"]
        assert {"id", "title", "status", "progress"} <= set(body["items"][0])


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


def test_health_and_metrics(http, anonymous):
    health = anonymous.get("/api/health").json()
    assert health["status"] == "ok" and health["redis"]["status"] == "ok"
    http.get(f"/api/tenants/{first_tenant(http)}/kpis")
    text = anonymous.get("/metrics").text
    assert 'cachelab_cache_hits_total{cache="kpis"}' in text
    assert "cachelab_breaker_state" in text and "cachelab_ratelimit_decisions_total" in text
    assert "cachelab_http_requests_total" in text
    assert re.search(r'cachelab_ratelimit_decisions_total\{.*limiter="login_account"', text)


# -- rate limits (each on a server of its own, from this process's one address) ------------
_small = itertools.count()


def small_app(**env: str) -> AppServer:
    """Its own limits; and, unlike the AppServer default, no trusted proxy: every client is its peer."""
    return AppServer(
        env={**GENEROUS, "CACHELAB_TRUSTED_PROXIES": "", **env}, tenants=1, initiatives_per_tenant=20
    )


def test_requests_over_the_limit_get_429_with_retry_after_and_a_forged_forwarded_for_does_not_help():
    with (
        small_app(CACHELAB_RATE_LIMIT="20/1h") as app,
        httpx.Client(base_url=app.base_url, timeout=30) as http,
    ):
        tenant = app.accounts()[0]["tenant_id"]
        session = cookie_header(login(http, app.accounts()[0]["email"], app.seed_password))  # 1 of 20
        codes = [http.get("/api/tenants", headers=session).status_code for _ in range(22)]
        assert codes.count(200) == 19 and codes[-1] == 429
        refused = http.get(f"/api/tenants/{tenant}/kpis", headers=session)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-ratelimit-limit"] == "20"
        assert refused.headers["x-ratelimit-remaining"] == "0"
        assert "x-ratelimit-reset" in refused.headers
        # 127.0.0.1 is no trusted proxy here: a made-up client address is ignored, not a new budget.
        forged = {"X-Forwarded-For": f"198.51.100.{next(_small) % 250 + 1}"}
        assert http.post("/api/logout", headers=forged).status_code == 429
        assert http.get("/api/health").status_code == 200  # health is never limited


def test_forwarded_for_is_believed_only_from_a_configured_proxy():
    with (
        small_app(CACHELAB_RATE_LIMIT="5/1h", CACHELAB_TRUSTED_PROXIES="127.0.0.1") as app,
        httpx.Client(base_url=app.base_url, timeout=30) as http,
    ):
        # The server is told 127.0.0.1 is its proxy: each forwarded client has its own budget.
        for client in ("203.0.113.7", "203.0.113.8"):
            codes = [
                http.post("/api/logout", headers={"X-Forwarded-For": f"10.9.9.9, {client}"}).status_code
                for _ in range(6)
            ]
            assert codes == [200] * 5 + [429], (client, codes)


def test_brute_force_on_one_account_gets_429_with_retry_after_even_with_the_right_password():
    with (
        small_app(CACHELAB_LOGIN_RATE_LIMIT_ACCOUNT="5/1h") as app,
        httpx.Client(base_url=app.base_url, timeout=30) as http,
    ):
        email = app.accounts()[1]["email"]
        guesses = [http.post("/api/login", json={"email": email, "password": f"guess-{n}"}) for n in range(5)]
        assert [r.status_code for r in guesses] == [401] * 5
        refused = http.post("/api/login", json={"email": email, "password": app.seed_password})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "set-cookie" not in refused.headers
        # Other accounts are not locked out by it.
        other = http.post(
            "/api/login", json={"email": app.accounts()[2]["email"], "password": app.seed_password}
        )
        assert other.status_code == 200


def test_one_address_guessing_across_many_accounts_gets_429():
    with (
        small_app(CACHELAB_LOGIN_RATE_LIMIT_IP="8/1h") as app,
        httpx.Client(base_url=app.base_url, timeout=30) as http,
    ):
        accounts = [a["email"] for a in app.accounts()] + [f"ghost{n}@example.com" for n in range(5)]
        codes = [
            http.post("/api/login", json={"email": e, "password": "guess"}).status_code for e in accounts[:10]
        ]
        assert codes == [401] * 8 + [429] * 2, codes


# -- outages: sessions are never admitted unchecked -----------------------------------------
FAST_FAIL = {
    **GENEROUS,
    "CACHELAB_REDIS_COMMAND_TIMEOUT": "0.2",
    "CACHELAB_REDIS_CONNECT_TIMEOUT": "0.2",
    "CACHELAB_BREAKER_RESET_TIMEOUT": "0.5",
}


def test_cache_redis_killed_with_sessions_on_their_own_redis_authenticated_reads_stay_200_from_the_database():
    from cachelab.servers import RedisServer

    with (
        RedisServer() as durable,
        AppServer(
            env={**FAST_FAIL, "QUEUE_REDIS_URL": durable.url}, tenants=2, initiatives_per_tenant=200
        ) as app,
        httpx.Client(base_url=app.base_url, timeout=30) as http,
    ):
        account = app.accounts()[0]
        http.headers.update(cookie_header(login(http, account["email"], app.seed_password)))
        url = f"/api/tenants/{account['tenant_id']}/kpis"
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


def test_a_single_shared_redis_killed_authenticated_routes_answer_503_never_an_unchecked_200():
    with (
        AppServer(env=FAST_FAIL, tenants=1, initiatives_per_tenant=50) as app,
        httpx.Client(base_url=app.base_url, timeout=30) as http,
    ):
        account = app.accounts()[0]
        session = cookie_header(login(http, account["email"], app.seed_password))
        url = f"/api/tenants/{account['tenant_id']}/kpis"
        assert http.get(url, headers=session).status_code == 200
        app.redis.kill()
        outage = [http.get(url, headers=session) for _ in range(10)] + [http.get("/api/me", headers=session)]
        assert {r.status_code for r in outage} == {503}
        assert all(r.headers["retry-after"] == "1" for r in outage)
        assert http.get(url).status_code == 401  # no session at all is still simply 401
        app.redis.start()  # an in-memory Redis: its sessions are gone, so log in again
        deadline = time.monotonic() + 10
        while http.get(url, headers=session).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.2)
        again = cookie_header(login(http, account["email"], app.seed_password))
        assert http.get(url, headers=again).status_code == 200


def test_queue_and_sessions_live_on_their_own_noeviction_redis():
    from cachelab.servers import RedisServer, RedisServerConfig

    cache_config = RedisServerConfig(maxmemory="64mb", maxmemory_policy="allkeys-lru")
    with (
        RedisServer() as durable,
        AppServer(
            redis_config=cache_config,
            env={**GENEROUS, "QUEUE_REDIS_URL": durable.url, "CACHELAB_LOGIN_RATE_LIMIT_ACCOUNT": "3/1h"},
            tenants=1,
            initiatives_per_tenant=50,
            job_workers=1,
        ) as app,
        httpx.Client(base_url=app.base_url, timeout=30) as http,
    ):
        account = app.accounts()[0]
        http.headers.update(cookie_header(login(http, account["email"], app.seed_password)))
        job_id = http.post(f"/api/tenants/{account['tenant_id']}/reports").json()["job_id"]
        deadline = time.monotonic() + 20
        while http.get(f"/api/jobs/{job_id}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        admin = durable.client()
        keys = [k.decode() for k in admin.scan_iter(count=1000)]
        admin.close()
        assert any(":queue:" in k for k in keys) and any("session" in k for k in keys), keys
        assert any("login-acct" in k for k in keys), keys  # login limits are never evicted either
        cache = app.redis.client()
        assert not [k for k in cache.scan_iter(match="*queue*")]
        assert not [k for k in cache.scan_iter(match="*session*")]
        cache.close()
