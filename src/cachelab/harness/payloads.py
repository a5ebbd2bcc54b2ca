"""Deterministic dashboard payloads for serializer and value-size benchmarks.

Serializer speed and compression ratio depend on the shape of the data: a
synthetic ``{"x": "aaaa…"}`` compresses absurdly well and decodes absurdly
fast. What this project caches is a tenant's dashboard (a KPI block plus a
list of initiatives with ids, titles, progress, status, owner, area and a
timestamp), so the benchmarks use that shape. Generation is seeded and uses
no clock, so the same arguments give the same bytes on every machine and run,
which keeps encoded sizes comparable between runs.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

STATUSES = ("planning", "in_progress", "at_risk", "completed", "on_hold")

#: A report job as the dashboard enqueues it (queue benchmarks, ours and peers').
REPORT_JOB: dict[str, Any] = {
    "type": "report",
    "tenant": "acme",
    "report": "quarterly-initiatives",
    "params": {"quarter": "2024-Q4", "areas": ["Engineering", "Sales"], "format": "pdf"},
    "requested_by": "u-0042",
}
AREAS = ("Engineering", "Sales", "Marketing", "Operations", "Finance", "People", "Customer Success")
_VERBS = ("Launch", "Migrate", "Automate", "Consolidate", "Expand", "Redesign", "Reduce", "Standardise")
_OBJECTS = (
    "billing pipeline",
    "partner portal",
    "onboarding flow",
    "regional warehouse",
    "quarterly planning",
    "support tooling",
    "data platform",
    "pricing model",
    "hiring funnel",
    "mobile checkout",
)
_FIRST = ("Ana", "Bruno", "Chen", "Dara", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jun", "Kemi", "Luis")
_LAST = ("Silva", "Okafor", "Novak", "Tanaka", "Moreau", "Haddad", "Kowalski", "Reyes", "Lindqvist")
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)

SMALL_BYTES = 2_000
LARGE_BYTES = 50_000


def _initiative(rng: random.Random, tenant_id: str, index: int) -> dict[str, Any]:
    status = rng.choice(STATUSES)
    progress = 100 if status == "completed" else rng.randint(0, 95)
    updated = _EPOCH + timedelta(seconds=rng.randint(0, 365 * 86_400))
    return {
        "id": f"{tenant_id}-ini-{index:05d}",
        "title": f"{rng.choice(_VERBS)} {rng.choice(_OBJECTS)}",
        "progress": progress,
        "status": status,
        "owner": {"id": f"u-{rng.randint(1, 500):04d}", "name": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"},
        "area": rng.choice(AREAS),
        "updated_at": updated.isoformat().replace("+00:00", "Z"),
    }


def dashboard(initiatives: int, *, tenant_id: str = "acme", seed: int = 0) -> dict[str, Any]:
    """A tenant dashboard with ``initiatives`` rows and KPIs computed from them."""
    rng = random.Random(f"{tenant_id}:{seed}")
    rows = [_initiative(rng, tenant_id, i) for i in range(initiatives)]
    by_status = {s: sum(1 for r in rows if r["status"] == s) for s in STATUSES}
    by_area: dict[str, dict[str, float]] = {}
    for area in AREAS:
        in_area = [r["progress"] for r in rows if r["area"] == area]
        if in_area:
            by_area[area] = {"count": len(in_area), "avg_progress": round(sum(in_area) / len(in_area), 1)}
    return {
        "tenant": {"id": tenant_id, "name": tenant_id.title() + " Corp", "plan": "enterprise"},
        "generated_at": "2024-12-31T23:59:59Z",
        "kpis": {
            "total": len(rows),
            "by_status": by_status,
            "avg_progress": round(sum(r["progress"] for r in rows) / len(rows), 1) if rows else 0.0,
            "by_area": by_area,
        },
        "initiatives": rows,
    }


def dashboard_of_size(target_bytes: int, *, tenant_id: str = "acme", seed: int = 0) -> dict[str, Any]:
    """The smallest :func:`dashboard` whose orjson encoding is at least ``target_bytes`` long."""
    lo, hi = 0, 1
    while len(orjson.dumps(dashboard(hi, tenant_id=tenant_id, seed=seed))) < target_bytes:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if len(orjson.dumps(dashboard(mid, tenant_id=tenant_id, seed=seed))) < target_bytes:
            lo = mid
        else:
            hi = mid
    return dashboard(hi, tenant_id=tenant_id, seed=seed)


def value_of_size(size: int, *, seed: int = 0) -> bytes:
    """``size`` bytes of dashboard JSON (repeated and cut to length): realistic, not all one byte."""
    chunk = orjson.dumps(dashboard_of_size(min(size, LARGE_BYTES), seed=seed))
    return (chunk * (size // len(chunk) + 1))[:size]
