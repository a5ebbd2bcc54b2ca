"""The FastAPI application: one Redis pool, one database engine, per process.

Run it with ``cachelab serve`` (which also launches Redis and seeds SQLite
when nothing is configured), or under any ASGI server as the factory
``cachelab.app.main:create_app``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cachelab import __version__
from cachelab.app.api import API_ROUTERS
from cachelab.app.auth import with_rate_limit_headers
from cachelab.app.cost_header import CostHeaderMiddleware
from cachelab.app.db import Database
from cachelab.app.docs import add_offline_docs
from cachelab.app.fast_reads import FastReads
from cachelab.app.metrics import CONTENT_TYPE, AppMetrics
from cachelab.app.state import AppState
from cachelab.config import Settings, load_settings
from cachelab.resilience import RedisUnavailable
from cachelab.servers.redis_server import RedisServer

log = logging.getLogger("cachelab.app")


class MetricsMiddleware:
    """Counts requests, latency and X-Cache outcomes per route template (pure ASGI, cheap)."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, x_cache = 500, None

        async def send_wrapper(message: Message) -> None:
            nonlocal status, x_cache
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"x-cache":
                        x_cache = value.decode()
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(path, scope["method"], str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)
            if x_cache:
                self.metrics.x_cache.labels(path, x_cache).inc()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; Redis and the database are connected in the lifespan."""
    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_redis: RedisServer | None = None
        url = settings.redis_url
        if not url:
            own_redis = RedisServer().start()
            url = own_redis.url
            log.warning("REDIS_URL not set: launched a private redis-server at %s", url)
        rr = settings.redis_client(url)
        durable = (
            settings.redis_client(settings.queue_redis_url)
            if settings.queue_redis_url
            else rr
        )
        db = Database.from_url(settings.database_url, delay_ms=settings.db_delay_ms)
        await db.create_schema()
        app.state.cachelab = AppState.build(settings, rr, db, durable=durable)
        await app.state.cachelab.caches.start()
        try:
            yield
        finally:
            await app.state.cachelab.caches.aclose()
            await rr.aclose()
            if durable is not rr:
                await durable.aclose()
            await db.close()
            if own_redis is not None:
                own_redis.stop()

    app = FastAPI(
        title="cachelab Initiative Dashboard",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # served from local assets by add_offline_docs: the CDN pages are blank offline
        redoc_url=None,
    )
    add_offline_docs(app)
    metrics = AppMetrics(lambda: getattr(app.state, "cachelab", None))
    app.state.metrics = metrics
    if settings.fast_reads:  # inside the metrics middleware, which counts its answers as the route's
        app.add_middleware(FastReads)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if settings.cost_header:
        app.add_middleware(CostHeaderMiddleware)
    for router in API_ROUTERS:
        app.include_router(router)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        state: AppState = request.app.state.cachelab
        try:
            state.queue_stats = (await state.queue.stats()).as_dict()
        except RedisUnavailable:
            state.queue_stats = None
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        # 422 with the problems, never echoing the raw input back (it may be huge or hostile).
        errors: list[dict[str, Any]] = [{"loc": e["loc"], "msg": e["msg"]} for e in exc.errors()]
        return with_rate_limit_headers(request, JSONResponse({"detail": errors}, status_code=422))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return with_rate_limit_headers(request, await http_exception_handler(request, exc))

    return app
