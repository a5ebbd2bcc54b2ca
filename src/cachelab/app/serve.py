"""``cachelab serve`` and ``cachelab seed-db``: the sample API with everything it needs.

With nothing configured, ``serve`` launches a private redis-server, creates
and seeds a SQLite database, starts a report worker, and runs uvicorn; every
process it started is stopped when it exits. ``REDIS_URL`` and
``DATABASE_URL`` point it at existing services instead.

Both commands set every user's password to the seed password
(:mod:`cachelab.app.seed_password`: ``CACHELAB_SEED_PASSWORD``, else a random
one kept in a 0600 file on a loopback bind; refused on any other bind), hashed
once per run. uvicorn runs with its proxy-header handling off: the app decides
whose ``X-Forwarded-For`` to believe (``CACHELAB_TRUSTED_PROXIES``).
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
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from cachelab.app.db import Database
from cachelab.app.jobs import worker_command
from cachelab.app.passwords import hash_password
from cachelab.app.preflight import (
    check_sqlite_directory,
    database_problem,
    port_problem,
    redis_problem,
)
from cachelab.app.seed import AlreadySeeded, seed_database
from cachelab.app.seed_password import resolve_seed_password
from cachelab.client import redact_url
from cachelab.config import ConfigError, Settings, load_settings
from cachelab.servers.children import spawn
from cachelab.servers.redis_server import RedisServer

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
    url: str | None,
    *,
    tenants: int,
    per_tenant: int,
    reset: bool,
    only_if_empty: bool,
    password: str | None = None,
) -> str:
    """Seed (or, with ``only_if_empty``, keep an already seeded database); with ``password``, every
    user's password becomes it — on a database seeded earlier too (one hash, one UPDATE)."""
    check_sqlite_directory(url)
    db = Database.from_url(url, default_path=DEFAULT_SQLITE)
    password_hash = hash_password(password) if password is not None else None
    try:
        await db.create_schema()
        if only_if_empty and await db.is_seeded():
            if password_hash is not None:
                await db.set_password_hash(password_hash)
            return "already seeded"
        counts = await seed_database(
            db, tenants=tenants, initiatives_per_tenant=per_tenant, reset=reset, password_hash=password_hash
        )
        return ", ".join(f"{n} {name}" for name, n in counts.items())
    finally:
        await db.close()


def seed_db_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:  # a database that cannot be opened fails before a password is made, shown or kept
        check_sqlite_directory(settings.database_url)
    except DATABASE_ERRORS as exc:
        url = settings.database_url or "sqlite:///" + DEFAULT_SQLITE
        print(f"cachelab seed-db: {database_problem(url, exc)}", file=sys.stderr)
        return 1
    password, source = resolve_seed_password(None)
    print(source)
    try:
        summary = asyncio.run(
            prepare_database(
                settings.database_url,
                tenants=args.tenants,
                per_tenant=args.initiatives_per_tenant,
                reset=args.reset,
                only_if_empty=False,
                password=password,
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
def services(args: argparse.Namespace, password: str, source: str) -> Iterator[dict[str, str]]:
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
                    password=password,
                )
            )
        except DATABASE_ERRORS as exc:
            raise ServeError(database_problem(database_url, exc)) from None
        print(f"database {redact_url(database_url)}: {summary}")
        print(source)
        redis_url = settings.redis_url
        if not redis_url:
            server = stack.enter_context(RedisServer())
            redis_url = server.url
            print(f"launched {Path(server.binary).name} {server.url} (private, stops with this command)")
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
        ("CACHELAB_NEAR_CACHE", "on" if getattr(args, "near_cache", False) else None),
        ("CACHELAB_FAST_READS", "on" if getattr(args, "fast_reads", False) else None),
    ):
        if value is not None:
            os.environ[name] = str(value)
    settings = load_settings()  # fail early, with the variable's name, on a bad setting
    problem = port_problem(args.host, args.port)
    if problem:
        print(f"cachelab serve: {problem}", file=sys.stderr)
        return 1
    try:  # before a password is made, shown or kept
        check_sqlite_directory(settings.database_url)
    except DATABASE_ERRORS as exc:
        url = settings.database_url or "sqlite:///" + DEFAULT_SQLITE
        print(f"cachelab serve: {database_problem(url, exc)}", file=sys.stderr)
        return 1
    try:
        password, source = resolve_seed_password(args.host)
    except ConfigError as exc:
        print(f"cachelab serve: {exc}", file=sys.stderr)
        return 2
    # uvicorn re-raises SIGTERM after its graceful shutdown; turn it into SystemExit so that the
    # services below (our redis-server, the job workers) are stopped instead of orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with _one_line_errors(), services(args, password, source):
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
            proxy_headers=False,  # X-Forwarded-For is the app's call (CACHELAB_TRUSTED_PROXIES)
        )
    return 0
