"""The Initiative Dashboard's HTTP endpoints: thin handlers over the patterns.

Each handler names the pattern it demonstrates. Reads go through a cache
(``X-Cache: HIT|MISS|STALE|BYPASS``) and fail open to the database; writes go
to the database first, then update or invalidate every cache they affect.
Session, leaderboard and job endpoints need Redis (it is their source of
truth) and answer 503 while it is unavailable, rather than fail open into
accepting unauthenticated users or losing jobs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from cachelab.app.db import STATUSES
from cachelab.app.state import AppState
from cachelab.patterns.cache import Cache
from cachelab.patterns.health import redis_health
from cachelab.patterns.keys import request_key
from cachelab.patterns.sessions import is_valid_session_id
from cachelab.resilience import RedisUnavailable

SESSION_COOKIE = "session"
Status = Literal["planning", "in_progress", "at_risk", "completed", "on_hold"]
assert set(Status.__args__) == set(STATUSES)  # type: ignore[attr-defined]


def state_of(request: Request) -> AppState:
    return request.app.state.cachelab


State = Annotated[AppState, Depends(state_of)]


# -- rate limiting (every /api route but health) -----------------------------
async def rate_limit(request: Request, response: Response, state: State) -> None:
    """Per client IP, and per session when there is one; 429 with Retry-After when refused."""
    checks: list[Awaitable[Any]] = [
        state.limiters["ip"].check(request.client.host if request.client else "-")
    ]
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id and is_valid_session_id(session_id):
        checks.append(state.limiters["session"].check(session_id))
    results = await asyncio.gather(*checks)
    tightest = min(results, key=lambda r: (r.allowed, r.remaining))
    headers = tightest.headers()
    if not tightest.allowed:
        raise HTTPException(status_code=429, detail="rate limit exceeded", headers=headers)
    for name, value in headers.items():
        if name != "Retry-After":
            response.headers[name] = value


public = APIRouter()
api = APIRouter(prefix="/api", dependencies=[Depends(rate_limit)])


# -- helpers ------------------------------------------------------------------
async def cached(
    response: Response,
    cache: Cache | None,
    key: Callable[[Cache], str],
    loader: Callable[[], Awaitable[Any]],
    *,
    tags: Sequence[str] = (),
    not_found: str = "not found",
) -> Any:
    """Serve through ``cache`` (or straight from the loader when caching is off); None is a 404."""
    if cache is None:
        value, status = await loader(), "BYPASS"
    else:
        result = await cache.fetch(key(cache), loader, tags=tags)
        value, status = result.value, result.status.value
        response.headers["Age"] = str(int(result.age))  # RFC 9111: how old the served copy is
    response.headers["X-Cache"] = status
    if value is None:
        raise HTTPException(status_code=404, detail=not_found, headers={"X-Cache": status})
    return value


def tenant_loader(state: AppState, tenant_id: str, query: Callable[[], Awaitable[Any]]) -> Callable[[], Any]:
    """A loader that returns None (a negative-cached 404) for a tenant that does not exist."""

    async def load() -> Any:
        if await state.db.get_tenant(tenant_id) is None:
            return None
        return await query()

    return load


def tenants_key(cache: Cache) -> str:
    """The one cached tenant list (served by /api/tenants, used to check tenant ids)."""
    return cache.key("_", "all")


async def known_tenant(state: AppState, tenant_id: str) -> bool:
    """Does the tenant exist? Answered from the cached tenant list (one round trip)."""
    if state.caches.tenants is None:
        return await state.db.get_tenant(tenant_id) is not None
    tenants = await state.caches.tenants.get_or_load(tenants_key(state.caches.tenants), state.db.list_tenants)
    return any(t["id"] == tenant_id for t in tenants)


async def redis_or_503(coro: Awaitable[Any]) -> Any:
    try:
        return await coro
    except RedisUnavailable as exc:
        raise HTTPException(
            status_code=503, detail="redis unavailable", headers={"Retry-After": "1"}
        ) from exc


# -- health and metrics -------------------------------------------------------
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
@api.get("/tenants")
async def list_tenants(state: State, response: Response) -> list[dict[str, Any]]:
    return await cached(response, state.caches.tenants, tenants_key, state.db.list_tenants)


@api.get("/tenants/{tenant_id}/users")
async def list_users(tenant_id: str, state: State, response: Response) -> list[dict[str, Any]]:
    loader = tenant_loader(state, tenant_id, lambda: state.db.list_users(tenant_id))
    return await cached(
        response, state.caches.users, lambda c: c.key(tenant_id, "users"), loader, not_found="unknown tenant"
    )


@api.get("/tenants/{tenant_id}/kpis")
async def kpis(tenant_id: str, state: State, response: Response) -> dict[str, Any]:
    """The KPI cache: a GROUP BY over the tenant's initiatives, cached (300 s by default)."""
    loader = tenant_loader(state, tenant_id, lambda: state.db.kpis(tenant_id))
    return await cached(
        response, state.caches.kpis, lambda c: c.key(tenant_id, "kpis"), loader, not_found="unknown tenant"
    )


@api.get("/tenants/{tenant_id}/areas")
async def areas(tenant_id: str, state: State, response: Response) -> list[dict[str, Any]]:
    """The guide's ``cachedQuery`` (600 s)."""
    loader = tenant_loader(state, tenant_id, lambda: state.db.list_areas(tenant_id))
    return await cached(
        response, state.caches.areas, lambda c: c.key(tenant_id, "areas"), loader, not_found="unknown tenant"
    )


@api.get("/tenants/{tenant_id}/stats")
async def stats(tenant_id: str, state: State, response: Response) -> dict[str, Any]:
    """A date-keyed aggregation whose entry expires at the end of its day."""
    today = dt.datetime.now(dt.UTC).date()
    loader = tenant_loader(state, tenant_id, lambda: state.db.stats(tenant_id, today))
    if state.caches.stats is None:
        value, status = await loader(), "BYPASS"
    else:
        result, _day = await state.caches.stats.fetch(tenant_id, "daily", loader)
        value, status = result.value, result.status.value
        response.headers["Age"] = str(int(result.age))
    response.headers["X-Cache"] = status
    if value is None:
        raise HTTPException(status_code=404, detail="unknown tenant", headers={"X-Cache": status})
    return value


# -- initiatives -------------------------------------------------------------
@api.get("/tenants/{tenant_id}/initiatives")
async def list_initiatives(
    tenant_id: str,
    request: Request,
    state: State,
    response: Response,
    status: Status | None = None,
    area_id: Annotated[int | None, Query(ge=1)] = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> dict[str, Any]:
    """Response cache: the key is the path plus the canonical (sorted) query; tagged by its filters."""
    params = {"status": status, "area_id": area_id, "page": page}
    loader = tenant_loader(
        state,
        tenant_id,
        lambda: state.db.list_initiatives(tenant_id, status=status, area_id=area_id, page=page),
    )
    return await cached(
        response,
        state.caches.initiatives,
        lambda c: request_key(c.prefix, tenant_id, "initiatives", params),
        loader,
        tags=list_tags(status, area_id),
        not_found="unknown tenant",
    )


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


@api.get("/tenants/{tenant_id}/initiatives/{initiative_id}")
async def get_initiative(
    tenant_id: str, initiative_id: int, state: State, response: Response
) -> dict[str, Any]:
    """One row, kept current by write-through with a version guard."""
    return await cached(
        response,
        state.caches.initiative,
        lambda c: c.key(tenant_id, "row", initiative_id),
        lambda: state.db.get_initiative(tenant_id, initiative_id),
    )


class InitiativePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    progress: int | None = Field(default=None, ge=0, le=100)
    status: Status | None = None
    title: str | None = Field(default=None, min_length=1, max_length=200)


@api.patch("/tenants/{tenant_id}/initiatives/{initiative_id}")
async def patch_initiative(
    tenant_id: str, initiative_id: int, patch: InitiativePatch, state: State
) -> dict[str, Any]:
    """Write-through: commit to the database, then update the row's cache (version-guarded) and
    invalidate everything derived from it — KPIs, today's stats, the list pages that can show
    the row, areas, dashboards."""
    changes = patch.model_dump(exclude_none=True)
    if not changes:
        raise HTTPException(status_code=422, detail="nothing to change")
    row = await state.db.update_initiative(tenant_id, initiative_id, changes)
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
        work.append(c.dashboard.invalidate_tag(tenant_id, "dashboards"))
    # Independent keys: sent concurrently on pooled connections. Each is fail-safe on its own.
    await asyncio.gather(*work)


# -- sessions ----------------------------------------------------------------
class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=3, max_length=254)


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


@api.post("/login")
async def login(body: Login, request: Request, response: Response, state: State) -> dict[str, Any]:
    """Creates a fresh session id on every login (rotation), discarding any previous one."""
    user = await state.db.get_user_by_email(body.email)
    if user is None:
        raise HTTPException(status_code=401, detail="unknown user")
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        await redis_or_503(state.sessions.destroy(old))
    session = await redis_or_503(
        state.sessions.create(
            str(user["id"]), {"tenant_id": user["tenant_id"], "role": user["role"], "email": user["email"]}
        )
    )
    set_session_cookie(request, response, session.id, int(state.sessions.absolute_lifetime))
    return {"user": user}


async def current_session(request: Request, state: State) -> Any:
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        raise HTTPException(status_code=401, detail="no session")
    session = await redis_or_503(state.sessions.get(session_id))
    if session is None:
        raise HTTPException(status_code=401, detail="invalid or expired session")
    return session


@api.post("/logout")
async def logout(request: Request, response: Response, state: State) -> dict[str, bool]:
    session_id = request.cookies.get(SESSION_COOKIE)
    destroyed = bool(session_id) and bool(await redis_or_503(state.sessions.destroy(session_id)))
    response.delete_cookie(SESSION_COOKIE, path="/")
    return {"logged_out": destroyed}


@api.get("/me")
async def me(session: Annotated[Any, Depends(current_session)]) -> dict[str, Any]:
    return {"user_id": int(session.user_id), **session.data}


@api.get("/dashboard")
async def dashboard(
    session: Annotated[Any, Depends(current_session)], state: State, response: Response
) -> dict[str, Any]:
    """Per-user, per-role dashboard: soft TTL (served stale and refreshed) under a hard TTL."""
    user_id, role, tenant_id = int(session.user_id), session.data["role"], session.data["tenant_id"]
    return await cached(
        response,
        state.caches.dashboard,
        lambda c: c.key(tenant_id, "dashboard", role, user_id),
        lambda: state.db.dashboard(user_id, role),
        tags=["dashboards"],
    )


# -- jobs --------------------------------------------------------------------
@api.post("/tenants/{tenant_id}/reports", status_code=202)
async def request_report(
    tenant_id: str,
    state: State,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, str]:
    """Enqueue a report job (one round trip); a worker process computes it."""
    if not await known_tenant(state, tenant_id):
        raise HTTPException(status_code=404, detail="unknown tenant")
    job_id = await redis_or_503(
        state.queue.enqueue({"type": "report", "tenant_id": tenant_id}, idempotency_key=idempotency_key)
    )
    return {"job_id": job_id}


@api.get("/jobs/{job_id}")
async def job_status(job_id: str, state: State) -> dict[str, Any]:
    status = await redis_or_503(state.queue.status(job_id))
    if status is None:
        raise HTTPException(status_code=404, detail="unknown job")
    return status.as_dict()


# -- leaderboard -------------------------------------------------------------
class ScoreUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: int = Field(ge=1)
    score: float = Field(allow_inf_nan=False)


@api.get("/tenants/{tenant_id}/leaderboard")
async def leaderboard(
    tenant_id: str,
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


@api.post("/tenants/{tenant_id}/leaderboard")
async def update_leaderboard(
    tenant_id: str, state: State, body: Annotated[ScoreUpdate, Body()]
) -> dict[str, Any]:
    if not await known_tenant(state, tenant_id):
        raise HTTPException(status_code=404, detail="unknown tenant")
    await redis_or_503(state.leaderboard.update(tenant_id, str(body.user_id), body.score))
    return {"ok": True}
