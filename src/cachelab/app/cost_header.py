"""``X-Request-Cost``: what each response cost, for load tests that need exact figures.

Off by default (``CACHELAB_COST_HEADER=on``): it tells a client how the
request was served, which a public API need not say. The load runs of
``cachelab report`` turn it on, so every request type (route and
``X-Cache`` outcome) comes with its Redis round trips, Redis commands and SQL
statements — exact metrics that change only when the code path does (see
:mod:`cachelab.request_cost`).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cachelab import request_cost

HEADER = b"x-request-cost"


class CostHeaderMiddleware:
    """Opens a :func:`cachelab.request_cost.scope` per HTTP request and reports it in the response head.

    Pure ASGI (no per-request task or body buffering). The figures cover the
    work done before the response starts, which for every route here is all
    of it: bodies are sent whole.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with request_cost.scope() as cost:

            async def send_with_cost(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = list(message.get("headers", ()))
                    headers.append((HEADER, cost.header().encode()))
                    message = {**message, "headers": headers}
                await send(message)

            await self.app(scope, receive, send_with_cost)
