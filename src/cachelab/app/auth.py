"""Who is calling, and may they: rate limits, the session check, tenant and role rules.

The dashboard is multi-tenant, so every ``/api`` route but health, login and
log-out needs a session, and the session decides everything else:

* **One round of Redis per request.** :func:`authenticate` sends the per-address
  and per-session rate-limit checks and the session read (one EVALSHA that also
  slides the idle timeout, :mod:`cachelab.patterns.sessions`) concurrently, then
  answers 429 (limited), 503 (the session store could not be asked: a session
  that could not be checked is never admitted), 401 (no or dead session), in
  that order.
* **Tenant: 403 without looking.** A session of tenant A asking for
  ``/api/tenants/B/…`` gets 403 whether or not B exists, so the answer tells
  nothing about other tenants; nothing of B is read. Inside the tenant, a row or
  job that is not the tenant's is a 404, the same answer as one that does not
  exist, so ids of other tenants cannot be probed.
* **Roles.** ``viewer`` reads; ``admin``, ``manager`` and ``member`` may also
  write (PATCH initiatives, post leaderboard scores, request reports). The role
  is the one the user had at login: a changed role applies from the next login.
* **Client address.** From :mod:`cachelab.app.client_address`: the TCP peer,
  or ``X-Forwarded-For`` only from ``CACHELAB_TRUSTED_PROXIES``.

Authenticated responses carry ``Cache-Control: private`` so no shared HTTP
cache serves one user's data to another.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response

from cachelab.app.client_address import client_address
from cachelab.app.db import WRITE_ROLES
from cachelab.app.state import AppState
from cachelab.patterns.ratelimit import RateLimitResult
from cachelab.patterns.sessions import Session, is_valid_session_id
from cachelab.resilience import RedisUnavailable

SESSION_COOKIE = "session"


def state_of(request: Request) -> AppState:
    return request.app.state.cachelab


State = Annotated[AppState, Depends(state_of)]


@dataclass(frozen=True)
class Caller:
    """The authenticated user of this request, as their session recorded them at login."""

    user_id: int
    tenant_id: str
    role: str
    email: str
    session_id: str

    @property
    def may_write(self) -> bool:
        return self.role in WRITE_ROLES


def client_ip(request: Request, state: AppState) -> str:
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.getlist("x-forwarded-for"), state.trusted_proxies)


def unavailable() -> HTTPException:
    return HTTPException(status_code=503, detail="redis unavailable", headers={"Retry-After": "1"})


def enforce(results: list[RateLimitResult], response: Response) -> None:
    """429 with Retry-After if any check refused; otherwise the tightest budget's headers."""
    tightest = min(results, key=lambda r: (r.allowed, r.remaining))
    headers = tightest.headers()
    if not tightest.allowed:
        raise HTTPException(status_code=429, detail="rate limit exceeded", headers=headers)
    for name, value in headers.items():
        if name != "Retry-After":
            response.headers[name] = value


async def rate_limit(request: Request, response: Response, state: State) -> None:
    """The public routes' limit (login, log-out): per client address, and per session when there is one."""
    checks = [state.limiters["ip"].check(client_ip(request, state))]
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id and is_valid_session_id(session_id):
        checks.append(state.limiters["session"].check(session_id))
    enforce(list(await asyncio.gather(*checks)), response)


_UNCHECKED = object()


async def _read_session(state: AppState, session_id: str) -> Session | object | None:
    try:
        return await state.sessions.get(session_id)
    except RedisUnavailable:
        return _UNCHECKED


async def authenticate(request: Request, response: Response, state: State) -> Caller:
    """Rate limits and the session read in one concurrent round; the caller, or 429 / 503 / 401."""
    session_id = request.cookies.get(SESSION_COOKIE) or ""
    well_formed = is_valid_session_id(session_id)
    checks: list[Any] = [state.limiters["ip"].check(client_ip(request, state))]
    if well_formed:
        checks += [state.limiters["session"].check(session_id), _read_session(state, session_id)]
    results = list(await asyncio.gather(*checks))
    session = results.pop() if well_formed else None
    response.headers["Cache-Control"] = "private"
    response.headers["Vary"] = "Cookie"
    enforce(results, response)
    if session is _UNCHECKED:
        raise unavailable()
    if not isinstance(session, Session):
        raise HTTPException(status_code=401, detail="login required", headers={"Cache-Control": "private"})
    data = session.data
    return Caller(
        user_id=int(session.user_id),
        tenant_id=str(data["tenant_id"]),
        role=str(data["role"]),
        email=str(data.get("email", "")),
        session_id=session_id,
    )


CurrentCaller = Annotated[Caller, Depends(authenticate)]


async def same_tenant(tenant_id: str, caller: CurrentCaller) -> Caller:
    """403 unless the path's tenant is the caller's (existence of other tenants is never checked)."""
    if tenant_id != caller.tenant_id:
        raise HTTPException(status_code=403, detail="not your tenant")
    return caller


TenantCaller = Annotated[Caller, Depends(same_tenant)]


async def writer(caller: TenantCaller) -> Caller:
    """403 for a role that may not write (a viewer)."""
    if not caller.may_write:
        raise HTTPException(status_code=403, detail=f"role {caller.role!r} may not write")
    return caller


Writer = Annotated[Caller, Depends(writer)]
