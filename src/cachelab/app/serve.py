"""``cachelab serve`` and ``cachelab seed-db``: the sample API with everything it needs.

With nothing configured, ``serve`` launches a private redis-server, creates
and seeds a SQLite database, starts a report worker, and runs uvicorn; every
process it started is stopped when it exits. ``REDIS_URL`` and
``DATABASE_URL`` point it at existing services instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

from sqlalchemy.exc import SQLAlchemyError

from cachelab.app.db import Database
from cachelab.app.jobs import worker_command
from cachelab.app.preflight import (
    check_sqlite_directory,
    database_problem,
    port_problem,
    redis_problem,
)
from cachelab.app.seed import AlreadySeeded, seed_database
from cachelab.client import redact_url
from cachelab.config import Settings, load_settings
from cachelab.harness.children import spawn
from cachelab.harness.redis_server import RedisServer

DEFAULT_SQLITE = "cachelab.db"
# What opening, creating or seeding a database raises when the URL, path or server is wrong.
DATABASE_ERRORS = (SQLAlchemyError, OSError)


class ServeError(RuntimeError):
    """``serve`` cannot start; the message is the one line the user sees."""


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except ServeError as exc:
        print(f"cachelab serve: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


async def prepare_database(
    url: str | None, *, tenants: int, per_tenant: int, reset: bool, only_if_empty: bool
) -> str:
    check_sqlite_directory(url)
    db = Database.from_url(url, default_path=DEFAULT_SQLITE)
    try:
        await db.create_schema()
        if only_if_empty and await db.is_seeded():
            return "already seeded"
        counts = await seed_database(db, tenants=tenants, initiatives_per_tenant=per_tenant, reset=reset)
        return ", ".join(f"{n} {name}" for name, n in counts.items())
    finally:
        await db.close()


def seed_db_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        summary = asyncio.run(
            prepare_database(
                settings.database_url,
                tenants=args.tenants,
                per_tenant=args.initiatives_per_tenant,
                reset=args.reset,
                only_if_empty=False,
            )
        )
    except AlreadySeeded:
        print("cachelab seed-db: the database already has data; add --reset to replace it", file=sys.stderr)
        return 2
    except DATABASE_ERRORS as exc:
        url = settings.database_url or "sqlite:///" + DEFAULT_SQLITE
        print(f"cachelab seed-db: {database_problem(url, exc)}", file=sys.stderr)
        return 1
    print(f"seeded {redact_url(settings.database_url or 'sqlite:///' + DEFAULT_SQLITE)}: {summary}")
    return 0


@contextlib.contextmanager
def services(args: argparse.Namespace) -> Iterator[dict[str, str]]:
    """Redis (launched unless REDIS_URL), the seeded database and job workers; all stopped on exit."""
    settings = load_settings()
    env: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        # The database first: a path that cannot be created fails before anything is launched.
        database_url = settings.database_url or f"sqlite:///{os.path.abspath(DEFAULT_SQLITE)}"
        try:
            summary = asyncio.run(
                prepare_database(
                    database_url,
                    tenants=args.tenants,
                    per_tenant=args.initiatives_per_tenant,
                    reset=False,
                    only_if_empty=True,
                )
            )
        except DATABASE_ERRORS as exc:
            raise ServeError(database_problem(database_url, exc)) from None
        print(f"database {redact_url(database_url)}: {summary}")
        redis_url = settings.redis_url
        if not redis_url:
            server = stack.enter_context(RedisServer())
            redis_url = server.url
            print(f"launched redis-server {server.url} (private, stops with this command)")
        else:
            _warn_if_unreachable(settings)
        env.update(REDIS_URL=redis_url, DATABASE_URL=database_url)
        os.environ.update(env)
        for _ in range(args.job_workers):
            proc = spawn(
                worker_command(),
                env={**os.environ, **env},
            )
            stack.callback(_stop, proc)
        yield env


def _warn_if_unreachable(settings: Settings) -> None:
    """The app starts degraded without Redis (by design); say so instead of starting silently."""
    for url in dict.fromkeys(u for u in (settings.redis_url, settings.queue_redis_url) if u):
        problem = redis_problem(url, settings.redis_connect_timeout)
        if problem:
            print(f"cachelab serve: warning: Redis unreachable ({problem}); starting degraded: "
                  "reads go to the database until it is back", file=sys.stderr)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    for name, value in (
        ("CACHELAB_CACHE_MODE", args.cache_mode),
        ("CACHELAB_RATE_LIMIT", args.rate_limit),
        ("CACHELAB_DB_DELAY_MS", args.db_delay_ms),
    ):
        if value is not None:
            os.environ[name] = str(value)
    load_settings()  # fail early, with the variable's name, on a bad setting
    problem = port_problem(args.host, args.port)
    if problem:
        print(f"cachelab serve: {problem}", file=sys.stderr)
        return 1
    # uvicorn re-raises SIGTERM after its graceful shutdown; turn it into SystemExit so that the
    # services below (our redis-server, the job workers) are stopped instead of orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with _one_line_errors(), services(args):
        base = f"http://{args.host}:{args.port}"
        print(f"Initiative Dashboard API on {base}  (docs {base}/docs, metrics {base}/metrics)")
        uvicorn.run(
            "cachelab.app.main:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            access_log=False,
        )
    return 0
