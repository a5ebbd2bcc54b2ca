"""The Initiative Dashboard's HTTP endpoints: thin handlers over the patterns.

Each handler names the pattern it demonstrates. Reads go through a cache
(``X-Cache: HIT|MISS|STALE|BYPASS``) and fail open to the database; writes go
to the database first, then update or invalidate every cache they affect.
Session, leaderboard and job endpoints need Redis (it is their source of
truth) and answer 503 while it is unavailable, rather than fail open into
accepting unauthenticated users or losing jobs.

Who may call what is decided in :mod:`cachelab.app.auth`, by router:

* ``public``: ``/api/health`` (no limits, no session);
* ``anonymous``: ``/api/login`` and ``/api/logout`` (rate limited, no session);
* ``authenticated``: every other ``/api`` route (a live session);
* ``tenant``: ``/api/tenants/{tenant_id}/…`` (a session of that tenant; writes need a
  writing role).

Every cache key of tenant data starts with the tenant id, and the tenant id of
a request is the session's (a request for another tenant is refused before any
key is built), so one tenant's cached data cannot be served to another.
Client-supplied values that become keys (query parameters, ``Idempotency-Key``)
are scoped the same way. The only cross-tenant entry, the tenant list, is
filtered to the caller's tenant before it is returned.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Query, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from cachelab.app.auth import (
    SESSION_COOKIE,
    Caller,
    CurrentCaller,
    State,
    TenantCaller,
    Writer,
    app_state,
    authenticate,
    client_ip,
    enforce,
    forget_session,
    rate_limit,
    reads_cache,
    require_on_every_route,
    same_tenant,
    state_of,
    unavailable,
)
from cachelab.app.caching import AppCaches
from cachelab.app.conditional import json_response
from cachelab.app.db import STATUSES
from cachelab.app.fast_reads import fast_read
from cachelab.app.state import AppState
from cachelab.patterns.cache import Cache, prefetched
from cachelab.patterns.concurrency import ConcurrencyLimitExceeded, Lease
from cachelab.patterns.health import redis_health
from cachelab.patterns.keys import request_key
from cachelab.resilience import RedisUnavailable

__all__ = ["API_ROUTERS", "SESSION_COOKIE", "state_of"]

Status = Literal["planning", "in_progress", "at_risk", "completed", "on_hold"]
assert set(Status.__args__) == set(STATUSES)  # type: ignore[attr-defined]


def _encodable(value: str) -> str:
    """Refuse lone surrogates (valid JSON escapes, but no database or Redis can store them)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


def _title(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if not value.strip():
        raise ValueError("must not be blank")
    return _encodable(value)


Text = Annotated[str, AfterValidator(_encodable)]
Title = Annotated[str, AfterValidator(_title)]


public = APIRouter()
anonymous = APIRouter(prefix="/api", dependencies=[Depends(rate_limit)])
# Each of their routes names its caller (checked at the bottom of this module).
authenticated = APIRouter(prefix="/api")
tenant = APIRouter(prefix="/api/tenants/{tenant_id}")


# -- helpers ------------------------------------------------------------------
async def cached(
    response: Response,
    cache: Cache | None,
    key: Callable[[Cache], str],
    loader: Callable[[], Awaitable[Any]],
    *,
    tags: Sequence[str] = (),
    not_found: str = "not found",
    caller: Caller | None = None,
) -> Any:
    """Serve through ``cache`` (or straight from the loader when caching is off); None is a 404.

    If the auth round already read the entry (``caller.prefetched``, see :func:`cache_read`),
    that reply is used instead of a second round trip.
    """
    if cache is None:
        value, status = await loader(), "BYPASS"
    else:
        cache_key = key(cache)
        read_via = None
        if caller is not None and (reply := caller.prefetched.get(cache_key)) is not None:
            read_via = prefetched(cache.read_keys(cache_key, tags), reply)
        result = await cache.fetch(cache_key, loader, tags=tags, read_via=read_via)
        value, status = result.value, result.status.value
        response.headers["Age"] = str(int(result.age))  # RFC 9111: how old the served copy is
    response.headers["X-Cache"] = status
    if value is None:
        raise HTTPException(status_code=404, detail=not_found, headers={"X-Cache": status})
    return value


def cache_read(
    pick: Callable[[AppCaches], Cache | None],
    key: Callable[[Cache, Mapping[str, str]], str],
    *,
    as_is: bool = True,
    tags: tuple[str, ...] = (),
    by_caller: bool = False,
) -> Any:
    """Mark an endpoint whose cache read rides in the auth round (:func:`~cachelab.app.auth.reads_cache`):
    ``pick`` chooses the cache, ``key`` builds the key from the path parameters. Not with a near
    cache, whose read goes to its in-process copy first. ``as_is``: the endpoint answers the cached
    value as it is, so with fast reads a warm one may be answered in front of the route
    (:mod:`cachelab.app.fast_reads`). ``tags``: the entry's tags, read with it. ``by_caller``:
    ``key`` is built from the caller's names, not the path's (see ``reads_cache``)."""

    def reads(state: AppState, params: Mapping[str, str]) -> list[list[str]]:
        cache = pick(state.caches)
        if cache is None or state.caches.near is not None:
            return []
        return [cache.read_keys(key(cache, params), tags)]

    def mark(endpoint: Any) -> Any:
        if as_is:
            fast_read(endpoint, pick, key, tags=tags)
        return reads_cache(reads, by_caller=by_caller)(endpoint)

    return mark


def tenants_key(cache: Cache) -> str:
    """The one cached tenant list (filtered to the caller's tenant before it is served)."""
    return cache.key("_", "all")


async def tenant_user_ids(state: AppState, tenant_id: str) -> set[int]:
    """The tenant's user ids, from the cached user list (one round trip when cached)."""
    users_cache = state.caches.users
    if users_cache is None:
        users = await state.db.list_users(tenant_id)
    else:
        users = await users_cache.get_or_load(
            users_cache.key(tenant_id, "users"), lambda: state.db.list_users(tenant_id)
        )
    return {int(u["id"]) for u in users or ()}


def tenant_slot(endpoint: str) -> Callable[..., AsyncIterator[Lease]]:
    """A dependency holding one of the tenant's ``CACHELAB_TENANT_CONCURRENCY`` slots for
    ``endpoint`` while the request runs; 429 with ``Retry-After`` when they are all taken.

    A rate limit bounds requests per window; this bounds the slow ones *in flight*, so one
    tenant's exports or report requests cannot occupy every app worker. The slot is a lease
    (:mod:`cachelab.patterns.concurrency`): a process that dies mid-request frees it when the
    lease expires. Redis down: admitted (fail open).
    """

    async def hold(tenant_id: str, caller: TenantCaller, state: State) -> AsyncIterator[Lease]:
        limiter = state.concurrency[endpoint]
        try:
            lease = await limiter.acquire(tenant_id)
        except ConcurrencyLimitExceeded as exc:
            raise HTTPException(
                status_code=429,
                detail=f"too many {endpoint} requests in flight for this tenant "
                f"({exc.lease.in_flight} of {exc.lease.limit}); retry shortly",
                headers=exc.lease.headers(),
            ) from None
        try:
            yield lease
        finally:
            await limiter.release(lease)

    return hold


async def redis_or_503(coro: Awaitable[Any]) -> Any:
    try:
        return await coro
    except RedisUnavailable as exc:
        raise unavailable() from exc


# -- health and metrics -------------------------------------------------------
_LIVE_BODY = b'{"status":"ok"}'


@public.get("/api/live")
async def live() -> Response:
    """Liveness: the process answers HTTP. Touches neither Redis nor the database (readiness is
    ``/api/health``), so it is also the app's floor: what a request costs in this framework and
    middleware with no work of ours, which the hot-path benchmark compares cached endpoints with."""
    return Response(_LIVE_BODY, media_type="application/json")


@public.get("/api/health")
async def health(state: State) -> dict[str, Any]:
    """PING latency, role, memory and hit ratio from INFO; 200 and ``degraded`` while Redis is down."""
    redis_part = await redis_health(state.rr)
    try:
        db_part: dict[str, Any] = {"status": "ok", "latency_ms": round(await state.db.ping(), 3)}
    except Exception as exc:  # the health endpoint reports, it does not fail
        db_part = {"status": "down", "error": type(exc).__name__}
    ok = redis_part["status"] == "ok" and db_part["status"] == "ok"
    return {
        "status": "ok" if ok else "degraded",
        "redis": redis_part,
        "database": db_part,
        "breaker": state.rr.breaker.snapshot(),
        "cache_mode": state.caches.mode,
    }


# -- tenants, users, areas ----------------------------------------------------
@authenticated.get("/tenants")
@cache_read(lambda c: c.tenants, lambda cache, _params: tenants_key(cache), as_is=False)
async def list_tenants(
    caller: CurrentCaller, request: Request, response: Response
) -> list[dict[str, Any]]:
    """The caller's own tenant (the cached list holds every tenant; only theirs leaves)."""
    state = app_state(request)
    tenants = await cached(response, state.caches.tenants, tenants_key, state.db.list_tenants, caller=caller)
    return json_response(request, response, [t for t in tenants if t["id"] == caller.tenant_id])


@tenant.get("/users")
@cache_read(lambda c: c.users, lambda cache, params: cache.key(params["tenant_id"], "users"))
async def list_users(
    tenant_id: str, caller: TenantCaller, request: Request, response: Response
) -> list[dict[str, Any]]:
    state = app_state(request)
    value = await cached(
        response,
        state.caches.users,
        lambda c: c.key(tenant_id, "users"),
        lambda: state.db.list_users(tenant_id),
        caller=caller,
    )
    return json_response(request, response, value)


@tenant.get("/kpis")
@cache_read(lambda c: c.kpis, lambda cache, params: cache.key(params["tenant_id"], "kpis"))
async def kpis(
    tenant_id: str, caller: TenantCaller, request: Request, response: Response
) -> dict[str, Any]:
    """The KPI cache: a GROUP BY over the tenant's initiatives, cached (300 s by default)."""
    state = app_state(request)
    value = await cached(
        response,
        state.caches.kpis,
        lambda c: c.key(tenant_id, "kpis"),
        lambda: state.db.kpis(tenant_id),
        caller=caller,
    )
    return json_response(request, response, value)


@tenant.get("/areas")
@cache_read(lambda c: c.areas, lambda cache, params: cache.key(params["tenant_id"], "areas"))
async def areas(
    tenant_id: str, caller: TenantCaller, request: Request, response: Response
) -> list[dict[str, Any]]:
    """The guide's ``cachedQuery`` (600 s)."""
    state = app_state(request)
    value = await cached(
        response,
        state.caches.areas,
        lambda c: c.key(tenant_id, "areas"),
        lambda: state.db.list_areas(tenant_id),
        caller=caller,
    )
    return json_response(request, response, value)


@tenant.get("/stats")
async def stats(
    tenant_id: str, caller: TenantCaller, state: State, request: Request, response: Response
) -> Response:
    """A date-keyed aggregation whose entry expires at the end of its day."""
    today = dt.datetime.now(dt.UTC).date()

    async def loader() -> dict[str, Any]:
        return await state.db.stats(tenant_id, today)

    if state.caches.stats is None:
        value, status = await loader(), "BYPASS"
    else:
        result, _day = await state.caches.stats.fetch(tenant_id, "daily", loader)
        value, status = result.value, result.status.value
        response.headers["Age"] = str(int(result.age))
    response.headers["X-Cache"] = status
    return json_response(request, response, value)


# -- initiatives -------------------------------------------------------------
@tenant.get("/initiatives")
async def list_initiatives(
    tenant_id: str,
    caller: TenantCaller,
    request: Request,
    response: Response,
    status: Status | None = None,
    area_id: Annotated[int | None, Query(ge=1)] = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> dict[str, Any]:
    """Response cache: the key is the tenant, the path and the canonical (sorted) query; tagged by
    its filters."""
    state = app_state(request)
    params = {"status": status, "area_id": area_id, "page": page}
    value = await cached(
        response,
        state.caches.initiatives,
        lambda c: request_key(c.prefix, tenant_id, "initiatives", params),
        lambda: state.db.list_initiatives(tenant_id, status=status, area_id=area_id, page=page),
        tags=list_tags(status, area_id),
    )
    return json_response(request, response, value)


@tenant.get("/initiatives/export")
async def export_initiatives(
    tenant_id: str,
    caller: TenantCaller,
    state: State,
    response: Response,
    _slot: Annotated[Lease, Depends(tenant_slot("export"))],
) -> dict[str, Any]:
    """Every initiative of the tenant, uncached: a slow, heavy read, so at most
    ``CACHELAB_TENANT_CONCURRENCY`` per tenant run at once (429 with ``Retry-After`` beyond)."""
    response.headers["X-Cache"] = "BYPASS"
    return await state.db.export_initiatives(tenant_id)


def list_tags(status: str | None, area_id: int | None) -> list[str]:
    """The tags of a list page: one per filter, ``list:all`` when unfiltered.

    A row can only appear in pages whose status filter is absent or its status
    and whose area filter is absent or its area, so a write that invalidates
    ``list:all``, its status and its area reaches every page that shows it
    (and pages filtered on the other field too: over-invalidation, never under).
    """
    tags = [f"list:status:{status}"] if status else []
    if area_id is not None:
        tags.append(f"list:area:{area_id}")
    return tags or ["list:all"]


def list_tags_touched_by(row: Mapping[str, Any], changes: Mapping[str, Any]) -> list[str]:
    """Tags to invalidate after ``changes`` produced ``row``.

    A status change moves the row out of its old status's pages too; the old
    status is not known after ``UPDATE … RETURNING``, so every status's pages go.
    """
    statuses = STATUSES if "status" in changes else (row["status"],)
    return ["list:all", f"list:area:{row['area_id']}", *(f"list:status:{s}" for s in statuses)]


@tenant.get("/initiatives/{initiative_id}")
# The path's id as sent: one that is not the canonical integer ("01") names another key, read and
# then left unused (the route reads the canonical key itself). Not a fast read: rows are not near-cached.
@cache_read(lambda c: c.initiative,
            lambda cache, params: cache.key(params["tenant_id"], "row", params["initiative_id"]),
            as_is=False)  # fmt: skip
async def get_initiative(
    tenant_id: str,
    initiative_id: int,
    caller: TenantCaller,
    request: Request,
    response: Response,
) -> dict[str, Any]:
    """One row, kept current by write-through with a version guard; another tenant's id is a 404."""
    state = app_state(request)
    value = await cached(
        response,
        state.caches.initiative,
        lambda c: c.key(tenant_id, "row", initiative_id),
        lambda: state.db.get_initiative(tenant_id, initiative_id),
        caller=caller,
    )
    return json_response(request, response, value)


class InitiativePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    progress: int | None = Field(default=None, ge=0, le=100)
    status: Status | None = None
    title: Title | None = Field(default=None, min_length=1, max_length=200)


@tenant.patch("/initiatives/{initiative_id}")
async def patch_initiative(
    tenant_id: str, initiative_id: int, patch: InitiativePatch, caller: Writer, state: State
) -> dict[str, Any]:
    """Write-through: commit to the database, then update the row's cache (version-guarded) and
    invalidate everything derived from it — KPIs, today's stats, the list pages that can show
    the row, areas, dashboards."""
    changes = patch.model_dump(exclude_none=True)
    if not changes:
        raise HTTPException(status_code=422, detail="nothing to change")
    try:
        row = await state.db.update_initiative(tenant_id, initiative_id, changes)
    except ValueError as exc:  # the database layer's own checks: a client error, never a 500
        raise HTTPException(status_code=422, detail=str(exc)) from None
    if row is None:
        raise HTTPException(status_code=404, detail="unknown initiative")
    await invalidate_after_write(state, tenant_id, row, changes)
    return row


async def invalidate_after_write(
    state: AppState, tenant_id: str, row: dict[str, Any], changes: Mapping[str, Any]
) -> None:
    c = state.caches
    today = dt.datetime.now(dt.UTC).date()
    work: list[Awaitable[Any]] = []
    if c.initiative:
        work.append(
            c.initiative.write_through(c.initiative.key(tenant_id, "row", row["id"]), row, row["version"])
        )
    if c.kpis:
        work.append(c.kpis.invalidate(c.kpis.key(tenant_id, "kpis")))
    if c.areas:
        work.append(c.areas.invalidate(c.areas.key(tenant_id, "areas")))
    if c.stats:
        work.append(c.stats.cache.invalidate(c.stats.key(tenant_id, "daily", today)))
    if c.initiatives:
        work.append(c.initiatives.invalidate_tag(tenant_id, *list_tags_touched_by(row, changes)))
    if c.dashboard:
        work.append(c.dashboard.invalidate_tag(tenant_id, *DASHBOARD_TAGS))
    # Independent keys: sent concurrently on pooled connections. Each is fail-safe on its own.
    await asyncio.gather(*work)


# -- sessions ----------------------------------------------------------------
class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Text = Field(min_length=3, max_length=254)
    # Optional so that a missing password gets the same 401 (after the same work) as a wrong one.
    password: Text | None = Field(default=None, max_length=1024)


def set_session_cookie(request: Request, response: Response, session_id: str, max_age: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )


LOGIN_FAILED = "invalid e-mail or password"


@anonymous.post("/login")
async def login(body: Login, request: Request, response: Response, state: State) -> dict[str, Any]:
    """Password login; a fresh session id every time (rotation), discarding any previous one.

    Limited per client address and per account (every attempt counts, known e-mail or not)
    before any password work. An unknown e-mail, a user without a password, a wrong or a
    missing password all cost one Argon2 verify and get the same 401.
    """
    account = body.email.strip().lower()
    enforce(
        list(
            await asyncio.gather(
                state.limiters["login_ip"].check(client_ip(request, state)),
                state.limiters["login_account"].check(account),
            )
        ),
        request,
        response,
    )
    found = await state.db.get_credentials(account)
    user, stored = found if found is not None else (None, None)
    if not await state.passwords.check(stored, body.password) or user is None:
        raise HTTPException(status_code=401, detail=LOGIN_FAILED)
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        forget_session(state, old)
        await redis_or_503(state.sessions.destroy(old))
    session = await redis_or_503(
        state.sessions.create(
            str(user["id"]), {"tenant_id": user["tenant_id"], "role": user["role"], "email": user["email"]}
        )
    )
    set_session_cookie(request, response, session.id, int(state.sessions.absolute_lifetime))
    response.headers["Cache-Control"] = "no-store"
    return {"user": user}


@anonymous.post("/logout")
async def logout(request: Request, response: Response, state: State) -> dict[str, bool]:
    """Ends the session server-side: its id is refused from now on, whoever holds a copy."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        forget_session(state, session_id)
    destroyed = bool(session_id) and bool(await redis_or_503(state.sessions.destroy(session_id)))
    response.delete_cookie(SESSION_COOKIE, path="/")
    return {"logged_out": destroyed}


@authenticated.get("/me")
async def me(caller: CurrentCaller) -> dict[str, Any]:
    return {
        "user_id": caller.user_id,
        "tenant_id": caller.tenant_id,
        "role": caller.role,
        "email": caller.email,
    }


DASHBOARD_TAGS = ("dashboards",)


def dashboard_key(cache: Cache, tenant_id: str, role: str, user_id: object) -> str:
    """One dashboard per tenant, role and user (what it shows depends on all three)."""
    return cache.key(tenant_id, "dashboard", role, user_id)


@authenticated.get("/dashboard")
# Keyed by its caller: the key is built from the session's tenant, role and user, never the path.
@cache_read(lambda c: c.dashboard,
            lambda cache, who: dashboard_key(cache, who["tenant_id"], who["role"], who["user_id"]),
            tags=DASHBOARD_TAGS, by_caller=True)  # fmt: skip
async def dashboard(
    caller: CurrentCaller, request: Request, response: Response
) -> dict[str, Any]:
    """Per-user, per-role dashboard (keyed by tenant, role and user): soft TTL (served stale and
    refreshed) under a hard TTL. Its cache read rides in the auth round when this process has
    read the caller's session in the last minute (one round trip warm), else follows it (two)."""
    state = app_state(request)
    value = await cached(
        response,
        state.caches.dashboard,
        lambda c: dashboard_key(c, caller.tenant_id, caller.role, caller.user_id),
        lambda: state.db.dashboard(caller.user_id, caller.role),
        tags=DASHBOARD_TAGS,
        caller=caller,
    )
    return json_response(request, response, value)



# -- jobs --------------------------------------------------------------------
def tenant_idempotency_key(tenant_id: str, key: str) -> str:
    """The queue's idempotency key for a client's ``Idempotency-Key``: the same key sent by two
    tenants names two jobs (JSON, so no choice of key can collide with another tenant's)."""
    return json.dumps([tenant_id, key])


@tenant.post("/reports", status_code=202)
async def request_report(
    tenant_id: str,
    caller: Writer,
    state: State,
    _slot: Annotated[Lease, Depends(tenant_slot("reports"))],
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, str]:
    """Enqueue a report job (one round trip); a worker process computes it. At most
    ``CACHELAB_TENANT_CONCURRENCY`` report requests per tenant in flight (429 beyond): the
    enqueue is quick while Redis is healthy, and the limit is what keeps one tenant's burst
    from tying up the app when it is not (the slot costs two more round trips)."""
    scoped = None if idempotency_key is None else tenant_idempotency_key(tenant_id, idempotency_key)
    job_id = await redis_or_503(
        state.queue.enqueue({"type": "report", "tenant_id": tenant_id}, idempotency_key=scoped)
    )
    return {"job_id": job_id}


@authenticated.get("/jobs/{job_id}")
async def job_status(job_id: str, caller: CurrentCaller, state: State) -> dict[str, Any]:
    """The job's status, to its own tenant only: another tenant's job is as unknown as a missing one."""
    status = await redis_or_503(state.queue.status(job_id))
    if status is None or (status.payload or {}).get("tenant_id") != caller.tenant_id:
        raise HTTPException(status_code=404, detail="unknown job")
    return status.as_dict()


# -- leaderboard -------------------------------------------------------------
class ScoreUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: int = Field(ge=1)
    score: float = Field(allow_inf_nan=False)


@tenant.get("/leaderboard")
async def leaderboard(
    tenant_id: str,
    caller: TenantCaller,
    state: State,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    user_id: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    """Top N and (optionally) one member's rank and score, in one round trip."""
    if user_id is None:
        top = await redis_or_503(state.leaderboard.top(tenant_id, limit))
        return {"top": _entries(top)}
    top, rank, score = await redis_or_503(state.leaderboard.top_with_member(tenant_id, limit, str(user_id)))
    return {"top": _entries(top), "member": {"user_id": user_id, "rank": rank, "score": score}}


def _entries(top: list[tuple[str, float]]) -> list[dict[str, Any]]:
    return [{"user_id": int(m) if m.isdigit() else m, "score": s} for m, s in top]


@tenant.post("/leaderboard")
async def update_leaderboard(
    tenant_id: str, caller: Writer, state: State, body: Annotated[ScoreUpdate, Body()]
) -> dict[str, Any]:
    """Scores only for the tenant's own users (checked against the cached user list)."""
    if body.user_id not in await tenant_user_ids(state, tenant_id):
        raise HTTPException(status_code=422, detail="user_id is not a user of this tenant")
    await redis_or_503(state.leaderboard.update(tenant_id, str(body.user_id), body.score))
    return {"ok": True}


#: Every router above, in the order the app includes them: each straight into the app (a router
#: nested in another is matched level by level on every request), the hot tenant reads first.
API_ROUTERS = (
    public,
    require_on_every_route(tenant, same_tenant),
    require_on_every_route(authenticated, authenticate, same_tenant),
    anonymous,
)
