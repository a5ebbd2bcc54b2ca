"""Fast reads: a warm near-cached read answered in front of FastAPI, with no Redis round trip.

Why: a warm ``GET /api/tenants/{t}/kpis`` through the normal route costs 3–4×
the server CPU of the app's no-op endpoint (``cachelab hotpath``). Measured in process, half
of that is the Redis round trip of the auth round (rate limits, session, cache
read) and half is FastAPI resolving the route's dependencies; a warm read with
its Redis replies canned still cost 3.1× the no-op. So a read can only come
close to the framework's floor if it needs neither.

What: with ``CACHELAB_FAST_READS=on`` (which needs ``CACHELAB_NEAR_CACHE=on``)
this ASGI middleware answers a ``GET`` of a route marked as a fast read
(:func:`fast_read`: the tenant's KPIs, areas and users, and the caller's
dashboard, keyed by the session's tenant, role and user) by itself when it can
decide everything the route would, from this process's memory alone:

* the session was read from Redis in the last ``CACHELAB_SESSION_TRUST``
  seconds (:mod:`cachelab.patterns.session_trust`), and is of the path's tenant
  (a path without one, the dashboard, is the session's own);
* both request limits have a leased unit here
  (:mod:`cachelab.patterns.ratelimit_lease`);
* the value is in the near cache's L1, fresh (within its soft TTL, under its
  tags' current generations), with the breaker closed
  (:meth:`~cachelab.patterns.near_cache.NearCache.l1_derived`; its body and
  ETag are made once per fill).

It answers what the route would have: the same body, ``ETag`` and 304 to a
matching ``If-None-Match``, ``X-Cache: HIT-L1``, ``Age``, the rate-limit
headers, ``Cache-Control: private`` and ``Vary: Cookie``. Anything else — no
or untrusted session, another tenant's path, no leased unit, an L1 miss —
goes on to FastAPI unchanged (nothing taken, nothing counted), where the
normal route decides and, by deciding, refills what the next request needs.
So every refusal (401, 403, 429, 503) is the route's own.

What it costs in guarantees is what its parts document: a log-out in another
process takes effect within ``CACHELAB_SESSION_TRUST`` seconds (at once in
this one), a leased admission may be counted up to a second early, and the
near cache's consistency model (an invalidation's one-way trip; ``max_age``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from cachelab.app.auth import SESSION_COOKIE, caller_names, tightest
from cachelab.app.caching import AppCaches
from cachelab.app.client_address import client_address
from cachelab.app.conditional import JSON, encode, entity_tag, matches
from cachelab.app.state import AppState
from cachelab.patterns.near_cache import NearCache
from cachelab.patterns.sessions import is_valid_session_id

#: What became of a request for a fast-read route (``cachelab_fast_reads`` in ``/metrics``): answered
#: here (``answered``: a 200, ``not_modified``: a 304), or left to the route, and why.
ANSWERED = frozenset({"answered", "not_modified"})
OUTCOMES = (*sorted(ANSWERED), "no_session", "session_not_trusted", "other_tenant", "no_lease", "l1_miss")
#: Python's bytes beside the body's own for a kept body and its ETag (two bytes objects and a tuple).
BODY_OVERHEAD_BYTES = 200
#: ``(caches) -> the route's cache`` and ``(cache, names) -> its key``, as for ``cache_read``. The names
#: are the path's parameters and the caller's own ``tenant_id``, ``role`` and ``user_id`` (from the
#: session), for a route keyed by its caller such as the dashboard.
Pick = Callable[[AppCaches], Any]
KeyOf = Callable[[Any, Mapping[str, str]], str]


def fast_read(endpoint: Callable[..., Any], pick: Pick, key: KeyOf, *, tags: tuple[str, ...] = ()) -> None:
    """Mark a route whose 200 is exactly its cached value (read with ``tags``) as a fast read."""
    endpoint.fast_read = (pick, key, tags)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class _FastRoute:
    route: Any  # FastAPI's route: set as scope["route"], so metrics label it as usual
    path_regex: re.Pattern[str]
    pick: Pick
    key: KeyOf
    tags: tuple[str, ...]


def _body(value: Any) -> tuple[tuple[bytes, bytes] | None, int]:
    """A cached value's response body and ETag (None: not a value a 200 serves), and their size."""
    if value is None:
        return None, 0
    body = encode(value)
    return (body, entity_tag(body).encode()), len(body) + BODY_OVERHEAD_BYTES


class FastReads:
    """The middleware; see the module docstring. Installed by ``create_app`` when fast reads are on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes: list[_FastRoute] | None = None

    def routes(self, fastapi_app: Any) -> list[_FastRoute]:
        if self._routes is None:
            self._routes = [
                _FastRoute(ctx.route, ctx.route.path_regex, *ctx.endpoint.fast_read)
                for ctx in route_contexts(fastapi_app)
                if hasattr(ctx.endpoint, "fast_read") and "GET" in (ctx.methods or ())
            ]
        return self._routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            app = scope.get("app")
            state: AppState | None = getattr(getattr(app, "state", None), "cachelab", None)
            if state is not None and state.trusted is not None:
                for fast in self.routes(app):
                    found = fast.path_regex.match(scope["path"])
                    if found is not None:
                        outcome = await self._serve(scope, send, state, fast, found.groupdict())
                        state.fast_reads[outcome] += 1
                        if outcome in ANSWERED:
                            return
                        break
        await self.app(scope, receive, send)

    async def _serve(
        self, scope: Scope, send: Send, state: AppState, fast: _FastRoute, params: dict[str, str]
    ) -> str:
        """Answer the request if this process alone can (``answered``, ``not_modified``); else leave it
        to the route and say why (one of :data:`OUTCOMES`' others)."""
        cookie = if_none_match = None
        forwarded: list[str] = []
        for name, value in scope["headers"]:
            if name == b"cookie" and cookie is None:
                cookie = value.decode("latin-1")
            elif name == b"if-none-match" and if_none_match is None:
                if_none_match = value.decode("latin-1")
            elif name == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))
        # Starlette's own parser: the same session the route would see, whatever the header holds.
        session_id = cookie_parser(cookie).get(SESSION_COOKIE, "") if cookie else ""
        if not is_valid_session_id(session_id):
            return "no_session"
        trusted = state.trusted
        assert trusted is not None  # fast reads on: the app built it
        if trusted.get(session_id) is None:
            return "session_not_trusted"
        client = scope.get("client")
        address = client_address(client[0] if client else None, forwarded, state.trusted_proxies)
        ip_leases, session_leases = state.leases["ip"], state.leases["session"]
        if not ip_leases.held(address) or not session_leases.held(session_id):
            # Dry, but the next lease may be in flight (top_up): wait for it rather than go to the route.
            waited = await ip_leases.arrival(address) | await session_leases.arrival(session_id)
            if not (waited and ip_leases.held(address) and session_leases.held(session_id)):
                return "no_lease"
        # Everything below decides without an await, so nothing it sees can change before the answer
        # (and the session is looked up again: a log-out may have ended it during the wait).
        session = trusted.get(session_id)
        if session is None:
            return "session_not_trusted"
        caller = caller_names(session)
        if params.setdefault("tenant_id", caller["tenant_id"]) != caller["tenant_id"]:
            return "other_tenant"  # a tenant's path, not the caller's tenant
        cache = fast.pick(state.caches)
        if not isinstance(cache, NearCache):
            return "l1_miss"  # this cache is not near-cached (not a configuration fast reads accept)
        # The caller's own names win: no path parameter can stand in for whose value is read.
        served = cache.l1_derived(fast.key(cache, {**params, **caller}), _body, tags=fast.tags)
        if served is None or served[0] is None:
            return "l1_miss"
        # Decided: no await since the units were seen, so both are still there to take.
        by_ip, by_session = ip_leases.take(address), session_leases.take(session_id)
        assert by_ip is not None and by_session is not None
        ip_leases.top_up(address)  # the next lease, in the background, before these run dry
        session_leases.top_up(session_id)
        (body, etag), age = served
        scope["route"] = fast.route
        # What enforce() sends for an admitted request: the tightest budget's X-RateLimit-*.
        limits = tightest([by_ip, by_session]).headers()
        headers = [
            (b"content-type", JSON.encode()),
            (b"cache-control", b"private"),
            (b"vary", b"Cookie"),
            *((name.lower().encode(), value.encode()) for name, value in limits.items()),
            (b"age", str(int(age)).encode()),
            (b"x-cache", b"HIT-L1"),
            (b"etag", etag),
        ]
        if matches(if_none_match, etag.decode()):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return "not_modified"
        headers.insert(0, (b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return "answered"


def route_contexts(app: Any) -> Any:
    """Every route of ``app`` (``.route``, ``.endpoint``, ``.methods``, ``.path``), included routers
    too: FastAPI >= 0.16x includes them lazily, so ``app.routes`` no longer lists them."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # an older FastAPI: included routes are the app's own
        return [_Context(r) for r in app.routes if hasattr(r, "endpoint")]
    return iter_route_contexts(app.routes)


@dataclass(frozen=True)
class _Context:
    route: Any

    @property
    def endpoint(self) -> Any:
        return self.route.endpoint

    @property
    def methods(self) -> Any:
        return self.route.methods

    @property
    def path(self) -> str:
        return self.route.path
