"""Job handlers for the sample app: ``cachelab worker --handlers cachelab.app.jobs:HANDLERS``.

The report job runs the heavy report query against the same database as the
API (``DATABASE_URL``), in the worker process, off the request path.
"""

from __future__ import annotations

import sys
from typing import Any

from cachelab.app.db import Database
from cachelab.app.state import REPORT_QUEUE
from cachelab.config import get_settings

_db: Database | None = None


def _database() -> Database:
    global _db
    if _db is None:
        settings = get_settings()
        _db = Database.from_url(settings.database_url, delay_ms=settings.db_delay_ms)
    return _db


async def report(payload: dict[str, Any]) -> dict[str, Any]:
    tenant_id = payload.get("tenant_id")
    if not isinstance(tenant_id, str):
        raise ValueError("report job needs a tenant_id")
    return await _database().report(tenant_id)


HANDLERS = {"report": report}


def worker_command(*extra_args: str) -> list[str]:
    """The command that runs a report worker for the sample app (``cachelab serve`` and the harness)."""
    return [
        sys.executable,
        "-m",
        "cachelab",
        "worker",
        "--queue",
        REPORT_QUEUE,
        "--handlers",
        "cachelab.app.jobs:HANDLERS",
        "--allow-evicting-redis",
        *extra_args,
    ]
