"""Checks ``cachelab serve`` and ``seed-db`` make before they start anything.

A new user's first mistakes (a port already taken, a database path that
cannot be created, a Redis that is not there) should read as one line that
says what to change, not as a traceback after half the services started.
Each check returns that line, or None when all is well.
"""

from __future__ import annotations

import os
import socket

from cachelab.client import redact_url


def first_line(exc: BaseException) -> str:
    """An exception as one line: its message's first line, or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def port_problem(host: str, port: int) -> str | None:
    """Why uvicorn could not listen on ``host:port``, tried the way uvicorn binds (SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        hint = " (is another server running there? choose one with --port)" if port else ""
        return f"cannot listen on {host}:{port}: {reason.lower()}{hint}"
    return None


def check_sqlite_directory(url: str | None) -> None:
    """Raise ``FileNotFoundError`` when a SQLite file's directory does not exist.

    Checked before connecting: aiosqlite's failed connect races the event loop's
    shutdown and prints a thread traceback after our one-line error.
    """
    from cachelab.app.db import async_url

    if not url or not url.strip():
        return  # the default: a file in the current directory
    sa_url, dialect = async_url(url.strip())
    path = sa_url.database
    if dialect != "sqlite" or not path or path == ":memory:" or path.startswith("file:"):
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no such directory: {folder}")


def database_problem(url: str, exc: BaseException) -> str:
    """One line for a database that could not be opened or written (the driver's own reason)."""
    reason = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's exception
    return f"cannot use the database {redact_url(url)}: {first_line(reason)}"


def redis_problem(url: str, timeout: float) -> str | None:
    """Why a PING to ``url`` failed (unreachable, refused, wrong password), or None."""
    import redis

    from cachelab.client import ClientOptions, create_sync_client

    options = ClientOptions(connect_timeout=timeout, command_timeout=timeout, retries=0, max_connections=1)
    try:
        client = create_sync_client(url, options)  # a cluster client connects here already
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        return f"{redact_url(url)}: {first_line(exc)}"
    return None
