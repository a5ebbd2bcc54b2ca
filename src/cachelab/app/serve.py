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

from cachelab.app.db import Database
from cachelab.app.jobs import worker_command
from cachelab.app.passwords import hash_password
from cachelab.app.seed import AlreadySeeded, seed_database
from cachelab.app.seed_password import resolve_seed_password
from cachelab.client import redact_url
from cachelab.config import ConfigError, load_settings
from cachelab.harness.children import spawn
from cachelab.harness.redis_server import RedisServer

DEFAULT_SQLITE = "cachelab.db"


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
    print(f"seeded {redact_url(settings.database_url or 'sqlite:///' + DEFAULT_SQLITE)}: {summary}")
    return 0


@contextlib.contextmanager
def services(args: argparse.Namespace, password: str, source: str) -> Iterator[dict[str, str]]:
    """Redis (launched unless REDIS_URL), the seeded database and job workers; all stopped on exit."""
    settings = load_settings()
    env: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        redis_url = settings.redis_url
        if not redis_url:
            server = stack.enter_context(RedisServer())
            redis_url = server.url
            print(f"launched redis-server {server.url} (private, stops with this command)")
        database_url = settings.database_url or f"sqlite:///{os.path.abspath(DEFAULT_SQLITE)}"
        env.update(REDIS_URL=redis_url, DATABASE_URL=database_url)
        os.environ.update(env)
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
        print(f"database {redact_url(database_url)}: {summary}")
        print(source)
        for _ in range(args.job_workers):
            proc = spawn(
                worker_command(),
                env={**os.environ, **env},
            )
            stack.callback(_stop, proc)
        yield env


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
    try:
        password, source = resolve_seed_password(args.host)
    except ConfigError as exc:
        print(f"cachelab serve: {exc}", file=sys.stderr)
        return 2
    # uvicorn re-raises SIGTERM after its graceful shutdown; turn it into SystemExit so that the
    # services below (our redis-server, the job workers) are stopped instead of orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with services(args, password, source):
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
