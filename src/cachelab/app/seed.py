"""A deterministic, realistic data set for the Initiative Dashboard.

Cache experiments are only comparable when every run queries the same data,
so everything here comes from one ``random.Random(seed)`` and, when given, a
fixed ``now``: the same arguments produce byte-identical rows (see
:func:`data_checksum`). The data is skewed the way real tenants are: each
tenant has its own status mix (some are healthy, some are struggling), areas
and owners are Zipf-like in size, progress agrees with status, and
``updated_at`` spreads over the last 30 days with a share from today, so the
date-keyed stats have something to count.

Roles: per tenant the first user is the admin, the next fifth are managers,
the last fifth are read-only viewers, the rest members. Every user gets the
same password (``password_hash``, one Argon2id hash computed once per seeding
run: hashing each of hundreds of users separately would cost seconds for
nothing, since the passwords are equal anyway). The hash is salted, so it is
left out of :func:`data_checksum`.

Rows are inserted in batches (``executemany``) inside one transaction, so the
default 5 × 2,000 initiatives take a second or two on SQLite. Seeding refuses
to touch a database that already has tenants unless ``reset=True`` (drop and
recreate every table).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, func, select, text
from sqlalchemy.exc import IntegrityError

from cachelab.app.db import STATUSES, Database, areas, initiatives, iso, users
from cachelab.app.db import tenants as tenants_table

BATCH_SIZE = 1000
DEFAULT_TENANTS = 5
DEFAULT_USERS_PER_TENANT = 20
DEFAULT_AREAS_PER_TENANT = 8
TODAY_SHARE = 0.08  # fraction of initiatives updated "today" (UTC)
HISTORY_DAYS = 30

TENANT_NAMES = (
    ("acme", "Acme Corp"),
    ("globex", "Globex Corporation"),
    ("initech", "Initech"),
    ("umbrella", "Umbrella Health"),
    ("hooli", "Hooli"),
    ("stark", "Stark Industries"),
    ("wayne", "Wayne Enterprises"),
    ("wonka", "Wonka Foods"),
    ("tyrell", "Tyrell Systems"),
    ("soylent", "Soylent Co"),
)
AREA_NAMES = (
    "Growth", "Platform", "Security", "Customer Success", "Data", "Mobile", "Infrastructure",
    "Marketing", "Sales Operations", "Compliance", "Finance", "People",
)
FIRST = ("Ada", "Ben", "Chen", "Dana", "Eli", "Fatima", "Grace", "Hugo", "Ines", "Jon", "Kai", "Lena",
         "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Vik", "Wen", "Yara")
LAST = ("Okafor", "Schmidt", "Tanaka", "Silva", "Novak", "Haddad", "Kowalski", "Nguyen", "Rossi",
        "Andersen", "Mehta", "Dubois", "Garcia", "Lindqvist", "Osei", "Park")
VERBS = ("Launch", "Migrate", "Automate", "Redesign", "Consolidate", "Harden", "Scale", "Retire",
         "Localise", "Instrument", "Simplify", "Pilot")
OBJECTS = ("billing pipeline", "onboarding flow", "search service", "data warehouse", "mobile app",
           "partner portal", "SSO integration", "pricing page", "support tooling", "audit logging",
           "recommendation engine", "CI infrastructure", "customer health score", "release process")
QUALIFIERS = ("", "", "", " for EMEA", " for enterprise", " v2", " (phase 2)", " in APAC")

BASE_STATUS_WEIGHTS = {
    "planning": 0.15, "in_progress": 0.40, "at_risk": 0.10, "completed": 0.25, "on_hold": 0.10,
}


class AlreadySeeded(RuntimeError):
    """The database already holds tenants; pass ``reset=True`` to drop and recreate it."""


def tenant_slugs(count: int) -> list[tuple[str, str]]:
    """``[(id, name)]``: ``acme-01``, ``globex-02``, …; ids are plain ``[a-z0-9-]``."""
    out = []
    for i in range(count):
        slug, name = TENANT_NAMES[i % len(TENANT_NAMES)]
        cycle = i // len(TENANT_NAMES)
        out.append((f"{slug}-{i + 1:02d}", name if cycle == 0 else f"{name} {cycle + 1}"))
    return out


def role_of(n: int, users_per_tenant: int, areas_per_tenant: int) -> str:
    """The role of a tenant's ``n``-th user (1-based): admin, then managers, members, viewers last."""
    managers = min(areas_per_tenant, max(1, users_per_tenant // 5)) if users_per_tenant > 1 else 0
    viewers = users_per_tenant // 5
    if n == 1:
        return "admin"
    if n <= 1 + managers:
        return "manager"
    if n > users_per_tenant - viewers:
        return "viewer"
    return "member"


def email_of(n: int, tenant_id: str) -> str:
    return f"user{n}@{tenant_id}.example"


def seed_accounts(
    tenants: int = DEFAULT_TENANTS,
    users_per_tenant: int = DEFAULT_USERS_PER_TENANT,
    areas_per_tenant: int = DEFAULT_AREAS_PER_TENANT,
) -> list[dict[str, str]]:
    """``[{"tenant_id", "email", "role"}]`` of a seed with these sizes, computed without a database.

    The accounts depend only on the sizes (never on ``seed``), which is what lets a load
    generator log in as the seeded users knowing just how many tenants were seeded.
    """
    return [
        {
            "tenant_id": tenant_id,
            "email": email_of(n, tenant_id),
            "role": role_of(n, users_per_tenant, areas_per_tenant),
        }
        for tenant_id, _name in tenant_slugs(tenants)
        for n in range(1, users_per_tenant + 1)
    ]


def _skewed(n: int, exponent: float, rng: random.Random) -> list[float]:
    """Zipf-like weights for ``n`` items, shuffled so the big one differs per tenant."""
    weights = [1.0 / (k + 1) ** exponent for k in range(n)]
    rng.shuffle(weights)
    return weights


def _progress(status: str, rng: random.Random) -> int:
    if status == "completed":
        return 100
    if status == "planning":
        return rng.randint(0, 15)
    if status == "in_progress":
        return int(rng.triangular(10, 95, 50))
    if status == "at_risk":
        return int(rng.triangular(5, 80, 30))
    return rng.randint(0, 60)  # on_hold


def _updated_at(now: dt.datetime, rng: random.Random) -> dt.datetime:
    since_midnight = (now - now.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()
    if rng.random() < TODAY_SHARE:
        age = rng.uniform(0, since_midnight)
    else:  # before today, denser towards the recent end
        span = HISTORY_DAYS * 86400 - since_midnight
        age = since_midnight + 1 + span * rng.random() ** 2
    return (now - dt.timedelta(seconds=age)).replace(microsecond=0)


def generate(
    *,
    tenants_count: int,
    initiatives_per_tenant: int,
    users_per_tenant: int,
    areas_per_tenant: int,
    seed: int,
    now: dt.datetime,
) -> dict[str, list[dict[str, Any]]]:
    """The rows, table by table, in insertion order. Pure: no I/O."""
    if tenants_count < 0 or initiatives_per_tenant < 0:
        raise ValueError("tenants and initiatives_per_tenant must be >= 0")
    if users_per_tenant < 1 or areas_per_tenant < 1:
        raise ValueError("each tenant needs at least one user and one area")
    rng = random.Random(seed)
    rows: dict[str, list[dict[str, Any]]] = {"tenants": [], "users": [], "areas": [], "initiatives": []}
    user_id = area_id = initiative_id = 0
    for tenant_id, tenant_name in tenant_slugs(tenants_count):
        rows["tenants"].append({"id": tenant_id, "name": tenant_name})

        tenant_users: list[int] = []
        managers: list[int] = []
        for n in range(1, users_per_tenant + 1):
            user_id += 1
            role = role_of(n, users_per_tenant, areas_per_tenant)
            rows["users"].append({
                "id": user_id, "tenant_id": tenant_id, "email": email_of(n, tenant_id),
                "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}", "role": role,
            })
            tenant_users.append(user_id)
            if role == "manager":
                managers.append(user_id)

        names = rng.sample(AREA_NAMES, min(areas_per_tenant, len(AREA_NAMES)))
        names += [f"{AREA_NAMES[k % len(AREA_NAMES)]} {k // len(AREA_NAMES) + 1}"
                  for k in range(len(names), areas_per_tenant)]
        tenant_areas = []
        for k, name in enumerate(names):
            area_id += 1
            manager = managers[k % len(managers)] if managers else None
            rows["areas"].append({"id": area_id, "tenant_id": tenant_id, "name": name, "manager_id": manager})
            tenant_areas.append(area_id)

        # The tenant's personality: its own status mix, area and owner sizes.
        status_weights = [BASE_STATUS_WEIGHTS[s] * rng.uniform(0.4, 2.0) for s in STATUSES]
        area_weights = _skewed(len(tenant_areas), 0.8, rng)
        owners = tenant_users[1:] or tenant_users  # the admin owns nothing unless alone
        owner_weights = _skewed(len(owners), 0.5, rng)
        for _ in range(initiatives_per_tenant):
            initiative_id += 1
            status = rng.choices(STATUSES, weights=status_weights)[0]
            rows["initiatives"].append({
                "id": initiative_id,
                "tenant_id": tenant_id,
                "area_id": rng.choices(tenant_areas, weights=area_weights)[0],
                "owner_id": rng.choices(owners, weights=owner_weights)[0],
                "title": f"{rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(QUALIFIERS)}",
                "progress": _progress(status, rng),
                "status": status,
                "version": 1,
                "updated_at": _updated_at(now, rng),
            })
    return rows


async def seed_database(
    db: Database,
    *,
    tenants: int = DEFAULT_TENANTS,
    initiatives_per_tenant: int = 2000,
    users_per_tenant: int = DEFAULT_USERS_PER_TENANT,
    areas_per_tenant: int = DEFAULT_AREAS_PER_TENANT,
    seed: int = 42,
    reset: bool = False,
    now: dt.datetime | None = None,
    password_hash: str | None = None,
) -> dict[str, int]:
    """Fill an empty database; returns row counts per table.

    Every user gets ``password_hash`` (None: nobody can log in until
    :meth:`Database.set_password_hash`). Raises :class:`AlreadySeeded` if
    tenants exist and ``reset`` is false.
    ``now`` (UTC; default the current time) anchors ``updated_at``: pass a
    fixed value for byte-identical data across runs.
    """
    now = _naive_utc(now)
    data = generate(
        tenants_count=tenants,
        initiatives_per_tenant=initiatives_per_tenant,
        users_per_tenant=users_per_tenant,
        areas_per_tenant=areas_per_tenant,
        seed=seed,
        now=now,
    )
    if reset:
        await db.reset_schema()
    else:
        await db.create_schema()
        if await db.is_seeded():
            raise AlreadySeeded(
                f"{db.url} already holds data; seed with reset=True (cachelab seed-db --reset) to replace it"
            )
    tables: Sequence[tuple[Table, list[dict[str, Any]]]] = (
        (tenants_table, data["tenants"]),
        (users, [{**u, "password_hash": password_hash} for u in data["users"]]),
        (areas, data["areas"]),
        (initiatives, data["initiatives"]),
    )
    async with db.connect(write=True) as conn:
        for table, rows in tables:
            for start in range(0, len(rows), BATCH_SIZE):
                await db.execute(conn, table.insert(), rows[start:start + BATCH_SIZE])
        if db.dialect == "postgresql":
            # Explicit ids do not advance SERIAL sequences; move them past the seeded rows.
            for table in (users, areas, initiatives):
                await db.execute(conn, text(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                    f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"
                ))
    return {name: len(rows) for name, rows in data.items()}


async def ensure_seeded(db: Database, **kwargs: Any) -> dict[str, int] | None:
    """Create the schema and seed it if it holds no tenants; None if it was already seeded.

    Two processes racing here is harmless: the loser's insert violates a
    primary key, and it reports "already seeded".
    """
    await db.create_schema()
    if await db.is_seeded():
        return None
    try:
        return await seed_database(db, **{**kwargs, "reset": False})
    except (AlreadySeeded, IntegrityError):
        if await db.is_seeded():
            return None
        raise


async def data_checksum(db: Database) -> str:
    """SHA-256 over every row of every table in primary-key order: equal iff the data is.

    Password hashes are left out: they are salted, so equal passwords never hash equal.
    """
    digest = hashlib.sha256()
    async with db.connect() as conn:
        for table in (tenants_table, users, areas, initiatives):
            digest.update(table.name.encode())
            columns = [c for c in table.c if c.name != "password_hash"]
            result = await db.execute(conn, select(*columns).order_by(table.c.id))
            for row in result:
                values = [iso(v) if isinstance(v, dt.datetime) else v for v in row]
                digest.update(repr(values).encode())
    return digest.hexdigest()


async def row_counts(db: Database) -> dict[str, int]:
    async with db.connect() as conn:
        return {
            table.name: int((await db.execute(conn, select(func.count()).select_from(table))).scalar_one())
            for table in (tenants_table, users, areas, initiatives)
        }


def _naive_utc(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC).replace(tzinfo=None)
    if now.tzinfo is not None:
        return now.astimezone(dt.UTC).replace(tzinfo=None)
    return now
