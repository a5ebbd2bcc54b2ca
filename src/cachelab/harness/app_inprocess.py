"""The sample app in this process, driven by raw ASGI calls: the cost of a request without HTTP.

:class:`~cachelab.harness.app_server.AppServer` runs the app behind uvicorn,
which is what load tests need. A microbenchmark of the request path needs the
opposite: no socket, no HTTP parser, no second process competing for the same
two cores — just the app's own work per request (middleware, routing,
dependencies, our Redis round trips, the response), timed in the benchmark's
event loop with its round trips counted like every other bench row.

:class:`InProcessApp` creates the app with :func:`cachelab.app.main.create_app`
on a given Redis and a seeded SQLite file in a temporary directory, runs its
lifespan, and answers ``await app.get(path, session)`` with
``(status, headers, body)``. The ASGI scope it builds is what uvicorn builds
for a keep-alive ``GET`` from 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from cachelab.app.seed import seed_accounts
from cachelab.app.serve import prepare_database
from cachelab.client import RoundTripCounter
from cachelab.config import load_settings

CLIENT = ("127.0.0.1", 50000)


class InProcessApp:
    """One app instance in this event loop; see the module docstring."""

    def __init__(self, app: Any, stack: contextlib.AsyncExitStack, tenants: int, password: str) -> None:
        self.app = app
        self._stack = stack
        self.tenants = tenants
        self.password = password

    @classmethod
    async def start(
        cls, redis_url: str, *, tenants: int = 1, initiatives_per_tenant: int = 50, **settings: Any
    ) -> InProcessApp:
        """Seed a database, create the app on ``redis_url`` and run its start-up."""
        from cachelab.app.main import create_app  # the app imports FastAPI: only when asked

        stack = contextlib.AsyncExitStack()
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cachelab-inproc-")))
        database_url = f"sqlite:///{folder / 'dashboard.db'}"
        password = secrets.token_urlsafe(18)
        try:
            await prepare_database(database_url, tenants=tenants, per_tenant=initiatives_per_tenant,
                                   reset=False, only_if_empty=True, password=password)  # fmt: skip
            app = create_app(load_settings(redis_url=redis_url, database_url=database_url, **settings))
            await stack.enter_async_context(app.router.lifespan_context(app))
        except BaseException:
            await stack.aclose()
            raise
        return cls(app, stack, tenants, password)

    async def aclose(self) -> None:
        await self._stack.aclose()

    @property
    def state(self) -> Any:
        """The app's :class:`~cachelab.app.state.AppState` (its Redis client, caches, limiters)."""
        return self.app.state.cachelab

    def count_round_trips_in(self, counter: RoundTripCounter) -> None:
        """Tally the app's Redis commands and round trips in ``counter`` too (a bench's
        :class:`~cachelab.harness.cost.CostMeter` reads one shared counter). The app's
        connections count into their client's counter through their class; point it here."""
        for rr in {self.state.rr, self.state.sessions.rr}:
            rr.client.connection_pool.connection_class._counter = counter

    def accounts(self) -> list[dict[str, str]]:
        return seed_accounts(self.tenants)

    async def login(self, tenant_id: str, role: str = "admin") -> str:
        """A session id for the tenant's first user of ``role``."""
        from cachelab.harness.app_client import first_account

        email = first_account(self.accounts(), tenant_id, [role])
        body = orjson.dumps({"email": email, "password": self.password})
        status, headers, reply = await self.request("POST", "/api/login", body=body)
        if status != 200:
            raise RuntimeError(f"login as {email} failed: {status} {reply[:200]!r}")
        cookie = headers.get("set-cookie", "")
        return cookie.split("session=", 1)[1].split(";", 1)[0]

    async def get(self, path: str, session: str | None = None) -> tuple[int, dict[str, str], bytes]:
        return await self.request("GET", path, session=session)

    async def request(
        self, method: str, path: str, *, session: str | None = None, body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        """One request through the whole ASGI app: (status, response headers, body)."""
        raw_headers = [(b"host", b"cachelab.test"), (b"user-agent", b"cachelab-inprocess")]
        if session is not None:
            raw_headers.append((b"cookie", f"session={session}".encode()))
        if body:
            length = str(len(body)).encode()
            raw_headers += [(b"content-type", b"application/json"), (b"content-length", length)]
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        path_part, _, query = path.partition("?")
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": path_part, "raw_path": path_part.encode(),
            "query_string": query.encode(), "headers": raw_headers, "client": CLIENT,
            "server": ("cachelab.test", 80), "root_path": "", "state": {},
        }  # fmt: skip
        sent = False
        status = 0
        response_headers: dict[str, str] = {}
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for k, v in message.get("headers", ()):
                    name, value = k.decode().lower(), v.decode()
                    if name in response_headers and name != "set-cookie":  # folded, as HTTP allows
                        value = f"{response_headers[name]}, {value}"
                    response_headers[name] = value
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, response_headers, b"".join(chunks)
