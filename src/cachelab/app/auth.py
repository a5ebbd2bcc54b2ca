"""Who is calling, and may they: rate limits, the session check, tenant and role rules.

The dashboard is multi-tenant, so every ``/api`` route but health, login and
log-out needs a session, and the session decides everything else:

* **One round trip per request.** :func:`authenticate` sends the per-address
  and per-session rate-limit checks, the session read (one EVALSHA that also
  slides the idle timeout, :mod:`cachelab.patterns.sessions`) and, for an
  endpoint marked with :func:`reads_cache`, its cache read, as one pipeline;
  then answers 429 (limited), 503 (the session store could not be asked: a
  session that could not be checked is never admitted), 401 (no or dead
  session), in that order. A warm cached read is that one round trip.
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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from cachelab.app.client_address import client_address
from cachelab.app.db import WRITE_ROLES
from cachelab.app.state import AppState
from cachelab.client import BatchCall, ResilientRedis
from cachelab.patterns.ratelimit import RateLimiter, RateLimitResult
from cachelab.patterns.ratelimit_lease import QuotaLeases
from cachelab.patterns.sessions import Session, is_valid_session_id
from cachelab.resilience import RedisUnavailable

SESSION_COOKIE = "session"
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def app_state(request: Request) -> AppState:
    """The app's state. The cached reads take it from their ``request`` rather than through
    :data:`State`: one dependency fewer for FastAPI to resolve on the hottest routes."""
    return request.app.state.cachelab


async def state_of(request: Request) -> AppState:
    # async on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, a thread
    # hop on every request for one attribute read.
    return app_state(request)


State = Annotated[AppState, Depends(state_of)]


@dataclass(frozen=True)
class Caller:
    """The authenticated user of this request, as their session recorded them at login."""

    user_id: int
    tenant_id: str
    role: str
    email: str
    session_id: str
    #: Cache read replies sent in the auth round, by the read's first key (see :func:`reads_cache`).
    prefetched: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def may_write(self) -> bool:
        return self.role in WRITE_ROLES


def client_ip(request: Request, state: AppState) -> str:
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.getlist("x-forwarded-for"), state.trusted_proxies)


def unavailable() -> HTTPException:
    return HTTPException(status_code=503, detail="redis unavailable", headers={"Retry-After": "1"})


def tightest(results: list[RateLimitResult]) -> RateLimitResult:
    """The decision a response reports: a refusal if any, else the smallest remaining budget."""
    return min(results, key=lambda r: (r.allowed, r.remaining))


#: Where :func:`enforce` leaves the decision an admitted request's headers come from.
_BUDGET = "cachelab.rate_limit"


def enforce(results: list[RateLimitResult], request: Request, response: Response) -> None:
    """429 with Retry-After if any check refused; otherwise the tightest budget's headers.

    The headers go on ``response`` (a success answer) and the decision is kept in the
    request's scope: FastAPI drops a dependency's headers when the route then raises (a 401,
    403, 404, 422), and a refused request spent a unit of budget all the same, so
    :func:`with_rate_limit_headers` puts them back on that answer. A request checked twice
    (login: the public routes' limit, then its own) reports the tighter of the two.
    """
    decision = tightest(results)
    if not decision.allowed:
        raise HTTPException(status_code=429, detail="rate limit exceeded", headers=decision.headers())
    earlier: RateLimitResult | None = request.scope.get(_BUDGET)
    if earlier is not None and tightest([earlier, decision]) is earlier:
        return
    request.scope[_BUDGET] = decision
    out = response.headers  # an admission's headers have no Retry-After
    # New names are appended (no scan for an old value); a tighter second decision replaces.
    write = out.append if earlier is None else out.__setitem__
    for name, value in decision.headers().items():
        write(name, value)


def with_rate_limit_headers(request: Request, response: Response) -> Response:
    """``response`` (an error answer) with the budget :func:`enforce` admitted the request on."""
    decision: RateLimitResult | None = request.scope.get(_BUDGET)
    if decision is not None:
        for name, value in decision.headers().items():
            if name not in response.headers:
                response.headers[name] = value
    return response


async def rate_limit(request: Request, response: Response, state: State) -> None:
    """The public routes' limit (login, log-out): per client address, and per session when there is one."""
    checks = [state.limiters["ip"].check(client_ip(request, state))]
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id and is_valid_session_id(session_id):
        checks.append(state.limiters["session"].check(session_id))
    enforce(list(await asyncio.gather(*checks)), request, response)


_UNCHECKED = object()

#: An endpoint's cache reads, for the auth round: ``(state, path params) -> [read keys, …]``.
CacheReads = Callable[[AppState, Mapping[str, str]], list[list[str]]]


def reads_cache(reads: CacheReads, *, by_caller: bool = False) -> Callable[[Endpoint], Endpoint]:
    """Mark an endpoint whose first Redis read can ride in the auth round (see :func:`authenticate`).

    ``reads`` names the keys of each cache read the endpoint starts with
    (:meth:`~cachelab.patterns.cache.Cache.read_keys`); an empty list means none this time
    (caching off, or a near cache, which reads its L1 first). It is given the path's
    parameters or, ``by_caller``, the caller's names (:func:`caller_names`) as this process
    last read the session: the key of a route keyed by its caller is not in the path, and the
    session read that would tell is in the same round. For a session this process has not
    read in the last minute ``reads`` is not called, and the route reads its entry after the round.
    """

    def mark(endpoint: Endpoint) -> Endpoint:
        endpoint.cache_reads = reads  # type: ignore[attr-defined]
        endpoint.cache_reads_by_caller = by_caller  # type: ignore[attr-defined]
        return endpoint

    return mark


def caller_names(session: Session) -> dict[str, Any]:
    """A session's ``tenant_id``, ``role`` and ``user_id``: what a route keyed by its caller is keyed by."""
    return {"tenant_id": session.data.get("tenant_id"), "role": session.data.get("role"),
            "user_id": session.user_id}  # fmt: skip


async def authenticate(request: Request, response: Response) -> Caller:
    """Rate limits, the session read and the endpoint's cache read in one round trip; the caller,
    or 429 / 503 / 401.

    The calls are independent, so they go out together as one pipeline
    (:meth:`~cachelab.client.ResilientRedis.batch`; two, concurrently, if the session store
    lives on another server). The endpoint's cache read is sent *before* the caller is known
    to be allowed: its reply stays in :attr:`Caller.prefetched` and reaches no one if the
    request is refused, and a refused request's read costs the server one ``MGET``. Cache keys
    of tenant data are built from the path's tenant id, which :func:`same_tenant` then checks
    against the session's, so an allowed request only ever reads its own tenant's keys.

    With fast reads (``CACHELAB_FAST_READS``) a limit with a leased unit in this process
    (:mod:`cachelab.patterns.ratelimit_lease`) and a session read in the last
    ``CACHELAB_SESSION_TRUST`` seconds (:mod:`cachelab.patterns.session_trust`) are decided
    without Redis; a limit without one sends its lease refill in the same round trip.
    """
    state = app_state(request)  # not the State dependency: see app_state
    session_id = request.cookies.get(SESSION_COOKIE) or ""
    well_formed = is_valid_session_id(session_id)
    checks = [("ip", client_ip(request, state))]
    if well_formed:
        checks.append(("session", session_id))
    endpoint = request.scope.get("endpoint")
    reads = []
    if hasattr(endpoint, "cache_reads"):
        if not endpoint.cache_reads_by_caller:
            reads = endpoint.cache_reads(state, request.path_params)
        elif well_formed and (seen := state.seen_sessions.get(session_id)) is not None:
            reads = endpoint.cache_reads(state, caller_names(seen))

    rounds: dict[ResilientRedis, list[BatchCall]] = {}
    # Per check: its limiter, identifier, the decision of a leased unit (or None: ask Redis)
    # and the lease whose refill rides along (or None).
    plan: list[tuple[RateLimiter, str, RateLimitResult | None, QuotaLeases | None]] = []
    for name, identifier in checks:
        limiter = state.limiters[name]
        leases = state.leases.get(name)
        leased = None
        if leases is not None and (leased := leases.take(identifier)) is not None:
            leases.top_up(identifier)  # the next lease, in the background, before this one runs dry
        refill = None
        if leased is None:
            calls = rounds.setdefault(limiter.rr, [])
            calls.append(limiter.check_call(identifier))
            if leases is not None and (call := leases.refill_call(identifier)) is not None:
                calls.append(call)
                refill = leases
        plan.append((limiter, identifier, leased, refill))
    session: Session | object | None = None
    session_call = None
    if well_formed:
        if state.trusted is not None:
            session = state.trusted.get(session_id)
        if session is None:
            session_call = state.sessions.get_call(session_id)
            rounds.setdefault(state.sessions.rr, []).append(session_call)
    for keys in reads:
        rounds.setdefault(state.rr, []).append(("MGET", *keys))
    replies: dict[ResilientRedis, Iterator[Any]] = {}
    if len(rounds) == 1:  # the usual case, one server: no task for asyncio.gather to make
        [(rr, calls)] = rounds.items()
        replies[rr] = await _batch(rr, calls)
    elif rounds:
        replies = dict(zip(rounds, await asyncio.gather(*(_batch(rr, calls) for rr, calls in rounds.items())),
                           strict=True))  # fmt: skip

    results = []
    for limiter, identifier, leased, refill in plan:
        if leased is not None:
            results.append(leased)
            continue
        reply = _next(replies, limiter.rr)
        results.append(limiter.unavailable_result(identifier) if reply is _UNCHECKED
                       else limiter.result_from_reply(reply))  # fmt: skip
        if refill is not None:
            reply = _next(replies, limiter.rr)
            if reply is _UNCHECKED:
                refill.refill_failed(identifier)
            else:
                refill.refilled(identifier, reply)
    if session_call is not None:
        reply = _next(replies, state.sessions.rr)
        session = reply if reply is _UNCHECKED else state.sessions.session_from_reply(session_id, reply)
        if isinstance(session, Session):
            state.seen_sessions.remember(session)
            if state.trusted is not None:
                state.trusted.remember(session)
    prefetched = {}
    for keys in reads:
        reply = _next(replies, state.rr)
        if reply is not _UNCHECKED:
            prefetched[keys[0]] = reply

    response.headers.append("Cache-Control", "private")
    response.headers.append("Vary", "Cookie")
    enforce(results, request, response)
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
        prefetched=prefetched,
    )


def forget_session(state: AppState, session_id: str) -> None:
    """The session is ending here (log-out, login's rotation): stop trusting it in this process at once."""
    state.seen_sessions.forget(session_id)
    if state.trusted is not None:
        state.trusted.forget(session_id)
    if "session" in state.leases:
        state.leases["session"].forget(session_id)


async def _batch(rr: ResilientRedis, calls: list[BatchCall]) -> Iterator[Any]:
    """The replies of one server's calls, in order; each is ``_UNCHECKED`` if Redis is unavailable."""
    try:
        replies = await rr.batch(calls)
    except RedisUnavailable:
        replies = [_UNCHECKED] * len(calls)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply  # a script or command the server refused: a bug, not a client error
    return iter(replies)


def _next(replies: dict[ResilientRedis, Iterator[Any]], rr: ResilientRedis) -> Any:
    return next(replies[rr])


CurrentCaller = Annotated[Caller, Depends(authenticate)]


async def same_tenant(tenant_id: str, request: Request, response: Response) -> Caller:
    """The caller (:func:`authenticate`), or 403 unless the path's tenant is theirs (existence of
    other tenants is never checked).

    One dependency rather than one on top of :data:`CurrentCaller`: FastAPI resolves each
    dependency of every request with a few hundred Python calls, on the path of every tenant
    route (see :func:`require_on_every_route`).
    """
    caller = await authenticate(request, response)
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


def require_on_every_route(router: APIRouter, *checks: Callable[..., Any]) -> APIRouter:
    """``router``, after making sure each of its routes resolves one of ``checks`` (raises if not).

    The routers carry no router-level dependency: every endpoint names its caller
    (``caller: TenantCaller``, ``Writer``, ``CurrentCaller``) anyway, and FastAPI resolved a
    router-level copy of it again on every request. On an empty app with the same shape a
    tenant route took 271 µs per request that way, 160 µs with one dependency, and 101 µs
    with none. What the router-level dependency guaranteed, that no route of the router can
    forget the check, this guarantees when the app is built. It also refuses a route that
    resolves both :func:`authenticate` and :func:`same_tenant`: that request would be
    authenticated twice, and counted twice against its rate limits.
    """
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        calls = _calls(route.dependant)
        where = f"{sorted(route.methods)} {route.path}"
        if not calls & set(checks):
            raise RuntimeError(f"{where} does not depend on {' or '.join(c.__name__ for c in checks)}")
        if {authenticate, same_tenant} <= calls:
            raise RuntimeError(f"{where} resolves authenticate and same_tenant: it would authenticate twice")
    return router


def _calls(dependant: Dependant) -> set[Callable[..., Any]]:
    """Every dependency ``dependant`` resolves, however deep."""
    calls: set[Callable[..., Any]] = set()
    for sub in dependant.dependencies:
        if sub.call is not None:
            calls.add(sub.call)
        calls |= _calls(sub)
    return calls
