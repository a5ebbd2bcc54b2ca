"""The sample Initiative Dashboard's database: schema and every query the API runs.

Why this module looks the way it does:

* **Real work, countable.** Caching is only worth measuring against queries
  that do something, so KPIs, stats, areas and reports are genuine ``GROUP BY``
  aggregations over the tenant's initiatives. Every statement goes through
  :meth:`Database.execute`, which bumps :attr:`Database.queries` (the "database
  load" metric the experiments plot) and, when asked, sleeps
  :attr:`Database.delay_ms` first to model a remote database. The delay is off
  by default and is reported, never hidden.
* **URLs users already have.** ``sqlite:///path.db``, ``postgresql://…`` and
  ``postgres://…`` are mapped to the async drivers (aiosqlite, asyncpg); any
  other scheme is a :class:`~cachelab.config.ConfigError` whose message never
  contains the password.
* **SQLite under load.** WAL lets readers proceed while one writer commits, a
  busy timeout makes writers from other processes wait instead of failing with
  "database is locked", and an in-process lock serialises this process's
  writers so they queue in asyncio rather than spin in SQLite's busy handler.
  ``:memory:`` is one shared connection (``StaticPool``), so every statement on
  it is serialised.
* **Tenant isolation in the schema, not only in the queries.** Areas and
  initiatives reference their area/owner through composite ``(tenant_id, id)``
  foreign keys, so a row can never point into another tenant; every query
  filters on ``tenant_id`` with bound parameters. Identifiers a driver would
  reject (NUL bytes, lone surrogates, integers outside INT4) are answered as
  "not found" instead of raising.
* **JSON-ready rows.** Results are plain dicts of str/int/float/None with
  timestamps as ISO-8601 UTC strings, so a value served from the cache is
  identical to one served from the database.

Statements, not round trips, are counted: BEGIN/COMMIT emitted by the driver
are not included (they are the same for every caching strategy).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    and_,
    case,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from cachelab import request_cost
from cachelab.client import redact_url
from cachelab.config import ConfigError

STATUSES = ("planning", "in_progress", "at_risk", "completed", "on_hold")
ROLES = ("admin", "manager", "member", "viewer")
WRITE_ROLES = frozenset({"admin", "manager", "member"})  # a viewer reads, never writes
UPDATABLE = frozenset({"progress", "status", "title"})
DASHBOARD_ITEMS = 50  # initiatives listed on a member's / manager's dashboard (most recent first)
MAX_PAGE_SIZE = 1000
MAX_EXPORT_ROWS = 50_000
SQLITE_BUSY_TIMEOUT_S = 30.0

_INT4 = (-(2**31), 2**31 - 1)
_SQLITE_SCHEMES = {"sqlite", "sqlite+aiosqlite"}
_PG_SCHEMES = {"postgresql", "postgres", "postgresql+asyncpg"}


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


# -- schema -------------------------------------------------------------------
metadata = MetaData()

tenants = Table(
    "tenants",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", Text, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("email", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("role", Text, nullable=False),
    # An Argon2id hash string (cachelab.app.passwords); NULL: the user cannot log in.
    Column("password_hash", Text, nullable=True),
    CheckConstraint(f"role IN ({_quoted(ROLES)})", name="ck_users_role"),
    # Target of the composite foreign keys below: a reference can never cross tenants.
    UniqueConstraint("tenant_id", "id", name="uq_users_tenant_id"),
)

areas = Table(
    "areas",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Text, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("manager_id", Integer, nullable=True),
    UniqueConstraint("tenant_id", "id", name="uq_areas_tenant_id"),
    ForeignKeyConstraint(
        ["tenant_id", "manager_id"], ["users.tenant_id", "users.id"], name="fk_areas_manager"
    ),
    Index("ix_areas_manager", "manager_id"),
)

initiatives = Table(
    "initiatives",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Text, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("area_id", Integer, nullable=False),
    Column("owner_id", Integer, nullable=True),
    Column("title", Text, nullable=False),
    Column("progress", Integer, nullable=False, server_default=text("0")),
    Column("status", Text, nullable=False),
    Column("version", Integer, nullable=False, server_default=text("1")),
    Column("updated_at", DateTime(timezone=False), nullable=False),  # naive UTC on both dialects
    CheckConstraint("progress BETWEEN 0 AND 100", name="ck_initiatives_progress"),
    CheckConstraint(f"status IN ({_quoted(STATUSES)})", name="ck_initiatives_status"),
    ForeignKeyConstraint(
        ["tenant_id", "area_id"], ["areas.tenant_id", "areas.id"], name="fk_initiatives_area"
    ),
    ForeignKeyConstraint(
        ["tenant_id", "owner_id"], ["users.tenant_id", "users.id"], name="fk_initiatives_owner"
    ),
    Index("ix_initiatives_tenant_status", "tenant_id", "status"),
    Index("ix_initiatives_tenant_area", "tenant_id", "area_id"),
    Index("ix_initiatives_tenant_updated", "tenant_id", "updated_at"),
    Index("ix_initiatives_owner", "owner_id"),
)

_ROW_COLUMNS = (
    initiatives.c.id,
    initiatives.c.tenant_id,
    initiatives.c.title,
    initiatives.c.progress,
    initiatives.c.status,
    initiatives.c.area_id,
    initiatives.c.owner_id,
    initiatives.c.updated_at,
    initiatives.c.version,
)
_ITEM_COLUMNS = tuple(c for c in _ROW_COLUMNS if c.name != "tenant_id")


# -- URLs ---------------------------------------------------------------------
def async_url(url: str) -> tuple[URL, str]:
    """Map a user's database URL to ``(SQLAlchemy async URL, dialect)``.

    Accepts ``sqlite:///path``, ``sqlite:///:memory:``, ``postgresql://``,
    ``postgres://`` and the already-async ``sqlite+aiosqlite://`` /
    ``postgresql+asyncpg://``. ``sslmode=`` (libpq spelling, common in hosted
    PostgreSQL URLs) becomes asyncpg's ``ssl=``. Anything else raises
    :class:`ConfigError`; the message shows the URL with its password redacted.
    """
    shown = redact_url(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        reason = "invalid port" if isinstance(exc, ValueError) else "not a URL"
        raise ConfigError(
            f"DATABASE_URL is not a valid database URL ({reason}): {shown!r}; "
            "expected sqlite:///path.db or postgresql://user:pass@host:5432/db"
        ) from None
    scheme = parsed.drivername.lower()
    if scheme in _SQLITE_SCHEMES:
        if parsed.host or parsed.username or parsed.password:
            raise ConfigError(
                f"DATABASE_URL for SQLite takes a path, not a host: {shown!r} "
                "(use sqlite:///relative.db or sqlite:////absolute/path.db)"
            )
        return parsed.set(drivername="sqlite+aiosqlite"), "sqlite"
    if scheme in _PG_SCHEMES:
        query = dict(parsed.query)
        if "sslmode" in query:
            query["ssl"] = query.pop("sslmode")
        return parsed.set(drivername="postgresql+asyncpg", query=query), "postgresql"
    raise ConfigError(
        f"DATABASE_URL scheme {parsed.drivername!r} is not supported: {shown!r}; "
        "use sqlite:///path.db (default) or postgresql://user:pass@host:5432/db"
    )


def _is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _display(url: URL, dialect: str) -> str:
    if dialect == "sqlite":
        return f"sqlite+aiosqlite:///{url.database or ':memory:'}"
    return url.render_as_string(hide_password=True)


# -- value helpers -------------------------------------------------------------
def _ok_text(value: object) -> bool:
    """Can this string be bound at all? (PostgreSQL rejects NUL; both drivers reject lone surrogates.)"""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _ok_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and _INT4[0] <= value <= _INT4[1]


def _utcnow() -> dt.datetime:
    """Naive UTC, the representation stored in ``updated_at`` on both dialects."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def iso(value: dt.datetime | None) -> str | None:
    """Stored naive-UTC timestamp → ISO-8601 with an explicit UTC offset."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _row(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {k: iso(v) if isinstance(v, dt.datetime) else v for k, v in mapping.items()}


def _avg(total: int | float | None, count: int) -> float:
    return round(float(total or 0) / count, 2) if count else 0.0


def _validate_changes(changes: Mapping[str, Any]) -> None:
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise ValueError(f"cannot update initiative fields {sorted(unknown)}; allowed: {sorted(UPDATABLE)}")
    if not changes:
        raise ValueError("no changes given")
    if "progress" in changes:
        p = changes["progress"]
        if not isinstance(p, int) or isinstance(p, bool) or not 0 <= p <= 100:
            raise ValueError(f"progress must be an integer 0..100, got {p!r}")
    if "status" in changes and changes["status"] not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {changes['status']!r}")
    if "title" in changes and (not _ok_text(changes["title"]) or not changes["title"].strip()):
        raise ValueError("title must be a non-empty string without NUL characters")


def _fold_groups(rows: list[Any]) -> tuple[dict[str, int], int, int, dict[int, dict[str, Any]]]:
    """(area, status, count, sum) rows → by_status, total, progress sum, per-area breakdown."""
    by_status = dict.fromkeys(STATUSES, 0)
    per_area: dict[int, dict[str, Any]] = {}
    total = progress_sum = 0
    for area_id, name, status, n, s in rows:
        n, s = int(n), int(s or 0)
        by_status[status] = by_status.get(status, 0) + n
        total += n
        progress_sum += s
        area = per_area.setdefault(area_id, {
            "area_id": area_id, "name": name, "count": 0, "_sum": 0, "by_status": dict.fromkeys(STATUSES, 0),
        })
        area["count"] += n
        area["_sum"] += s
        area["by_status"][status] = area["by_status"].get(status, 0) + n
    return by_status, total, progress_sum, per_area


def _kpi_dict(rows: list[Any]) -> dict[str, Any]:
    by_status, total, progress_sum, per_area = _fold_groups(rows)
    return {
        "total": total,
        "by_status": by_status,
        "avg_progress": _avg(progress_sum, total),
        "completed_pct": round(100.0 * by_status["completed"] / total, 2) if total else 0.0,
        "areas": [
            {"area_id": a["area_id"], "name": a["name"], "count": a["count"],
             "avg_progress": _avg(a["_sum"], a["count"])}
            for a in sorted(per_area.values(), key=lambda a: a["area_id"])
        ],
        "at_risk": by_status["at_risk"],
    }


class Database:
    """Async access to the dashboard's tables (SQLAlchemy Core; SQLite or PostgreSQL).

    One instance per process: it owns the connection pool. ``queries`` counts
    statements executed through it; ``delay_ms`` sleeps before each one.
    """

    def __init__(self, engine: AsyncEngine, *, dialect: str, url: str, memory: bool = False,
                 delay_ms: float = 0.0) -> None:
        self.engine = engine
        self.dialect = dialect
        self.url = url
        self.delay_ms = float(delay_ms)
        self.queries = 0
        self._memory = memory
        # SQLite allows one writer: queue this process's writers here. :memory: is one shared
        # connection, so there every statement (read or write) must take turns.
        self._lock = asyncio.Lock() if dialect == "sqlite" else None

    # -- construction ----------------------------------------------------------
    @classmethod
    def from_url(
        cls, url: str | None, *, delay_ms: float = 0.0, default_path: str = "cachelab.db"
    ) -> Database:
        """Open ``url`` (None or empty → the SQLite file ``default_path``); no I/O happens yet."""
        if url is None or not url.strip():
            sa_url, dialect = URL.create("sqlite+aiosqlite", database=default_path), "sqlite"
        else:
            sa_url, dialect = async_url(url.strip())
        if delay_ms < 0:
            raise ConfigError(f"database delay must be >= 0 ms, got {delay_ms}")
        memory = dialect == "sqlite" and _is_memory(sa_url)
        if dialect == "sqlite":
            connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
            kwargs: dict[str, Any] = {"connect_args": connect_args}
            if memory:
                kwargs["poolclass"] = StaticPool
            engine = create_async_engine(sa_url, **kwargs)
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas(memory))
        else:
            engine = create_async_engine(sa_url, pool_size=10, max_overflow=20, pool_recycle=1800)
        return cls(engine, dialect=dialect, url=_display(sa_url, dialect), memory=memory, delay_ms=delay_ms)

    # -- plumbing ----------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def connect(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection for several statements; ``write`` makes it one transaction, committed on success.

        Every query method uses this; the seeder uses it to insert in one transaction.
        On SQLite a write (and, for ``:memory:``, every use) holds this process's lock.
        """
        lock = self._lock if (self._lock is not None and (write or self._memory)) else None
        if lock is not None:
            await lock.acquire()
        try:
            async with (self.engine.begin() if write else self.engine.connect()) as conn:
                yield conn
        finally:
            if lock is not None:
                lock.release()

    async def execute(self, conn: AsyncConnection, statement: Any, params: Any = None) -> Any:
        """Execute one statement: the only place that counts queries and applies the modelled delay."""
        if self.delay_ms > 0:
            await asyncio.sleep(self.delay_ms / 1000.0)
        self.queries += 1
        if (scoped := request_cost.current.get()) is not None:
            scoped.db_statements += 1
        if params is None:
            return await conn.execute(statement)
        return await conn.execute(statement, params)

    # -- lifecycle ---------------------------------------------------------------
    async def create_schema(self) -> None:
        """Create missing tables and indexes; safe to call on every start-up.

        A database seeded before users had passwords gains the (empty) column, so
        ``cachelab serve`` keeps working on it and then sets the seeded password.
        """
        async with self.connect(write=True) as conn:
            await conn.run_sync(metadata.create_all, checkfirst=True)
            columns = await conn.run_sync(lambda sync: inspect(sync).get_columns("users"))
            if "password_hash" not in {c["name"] for c in columns}:
                await conn.execute(text("ALTER TABLE users ADD COLUMN password_hash TEXT"))

    async def reset_schema(self) -> None:
        """Drop and recreate every table (all data is lost)."""
        async with self.connect(write=True) as conn:
            await conn.run_sync(metadata.drop_all, checkfirst=True)
            await conn.run_sync(metadata.create_all)

    async def is_seeded(self) -> bool:
        """Do the tables exist and hold at least one tenant?"""
        async with self.connect() as conn:
            exists = await conn.run_sync(lambda sync: inspect(sync).has_table("tenants"))
            if not exists:
                return False
            result = await self.execute(conn, select(tenants.c.id).limit(1))
            return result.first() is not None

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> float:
        """Milliseconds for ``SELECT 1`` on a pooled connection (plus any modelled delay); raises."""
        async with self.connect() as conn:
            started = time.perf_counter()
            await self.execute(conn, text("SELECT 1"))
            return (time.perf_counter() - started) * 1000.0

    # -- tenants and users -------------------------------------------------------
    async def list_tenants(self) -> list[dict[str, Any]]:
        async with self.connect() as conn:
            result = await self.execute(conn, select(tenants.c.id, tenants.c.name).order_by(tenants.c.id))
            return [dict(r._mapping) for r in result]

    async def get_tenant(self, tenant_id: str) -> dict[str, Any] | None:
        if not _ok_text(tenant_id):
            return None
        async with self.connect() as conn:
            stmt = select(tenants.c.id, tenants.c.name).where(tenants.c.id == tenant_id)
            row = (await self.execute(conn, stmt)).first()
            return dict(row._mapping) if row else None

    async def list_users(self, tenant_id: str) -> list[dict[str, Any]]:
        if not _ok_text(tenant_id):
            return []
        stmt = (
            select(users.c.id, users.c.email, users.c.role, users.c.name)
            .where(users.c.tenant_id == tenant_id)
            .order_by(users.c.id)
        )
        async with self.connect() as conn:
            return [dict(r._mapping) for r in await self.execute(conn, stmt)]

    _USER_COLUMNS = (users.c.id, users.c.tenant_id, users.c.email, users.c.role, users.c.name)

    async def get_user(self, user_id: int) -> dict[str, Any] | None:
        if not _ok_id(user_id):
            return None
        async with self.connect() as conn:
            return await self._user(conn, user_id)

    async def _user(self, conn: AsyncConnection, user_id: int) -> dict[str, Any] | None:
        result = await self.execute(conn, select(*self._USER_COLUMNS).where(users.c.id == user_id))
        row = result.first()
        return dict(row._mapping) if row else None

    async def get_credentials(self, email: str) -> tuple[dict[str, Any], str | None] | None:
        """The user with this e-mail and their password hash (kept out of every other query)."""
        if not _ok_text(email):
            return None
        stmt = select(*self._USER_COLUMNS, users.c.password_hash).where(
            users.c.email == email.strip().lower()
        )
        async with self.connect() as conn:
            row = (await self.execute(conn, stmt)).first()
        if row is None:
            return None
        user = dict(row._mapping)
        return user, user.pop("password_hash")

    async def set_password_hash(self, password_hash: str, *, user_ids: list[int] | None = None) -> int:
        """Store ``password_hash`` for the given users (all users when None); returns how many."""
        stmt = update(users).values(password_hash=password_hash)
        if user_ids is not None:
            stmt = stmt.where(users.c.id.in_(user_ids))
        async with self.connect(write=True) as conn:
            return int((await self.execute(conn, stmt)).rowcount or 0)

    async def is_member(self, tenant_id: str, user_id: int) -> bool:
        """Does ``user_id`` belong to ``tenant_id``? (One indexed lookup.)"""
        if not _ok_text(tenant_id) or not _ok_id(user_id):
            return False
        stmt = select(users.c.id).where(users.c.tenant_id == tenant_id, users.c.id == user_id)
        async with self.connect() as conn:
            return (await self.execute(conn, stmt)).first() is not None

    async def get_user_by_email(self, email: str) -> dict[str, Any] | None:
        """Emails are stored lower-case; the lookup is case-insensitive on the caller's side only."""
        if not _ok_text(email):
            return None
        stmt = select(*self._USER_COLUMNS).where(users.c.email == email.strip().lower())
        async with self.connect() as conn:
            row = (await self.execute(conn, stmt)).first()
            return dict(row._mapping) if row else None

    # -- areas and initiatives ---------------------------------------------------
    def _areas_stmt(self, tenant_id: str, manager_id: int | None = None) -> Any:
        same_area = and_(initiatives.c.tenant_id == areas.c.tenant_id, initiatives.c.area_id == areas.c.id)
        joined = areas.outerjoin(initiatives, same_area)
        stmt = (
            select(
                areas.c.id,
                areas.c.name,
                areas.c.manager_id,
                func.count(initiatives.c.id).label("n"),
                func.coalesce(func.sum(initiatives.c.progress), 0).label("s"),
            )
            .select_from(joined)
            .where(areas.c.tenant_id == tenant_id)
            .group_by(areas.c.id, areas.c.name, areas.c.manager_id)
            .order_by(areas.c.id)
        )
        if manager_id is not None:
            stmt = stmt.where(areas.c.manager_id == manager_id)
        return stmt

    @staticmethod
    def _area_dicts(rows: Any) -> list[dict[str, Any]]:
        return [
            {"id": r.id, "name": r.name, "manager_id": r.manager_id, "initiative_count": int(r.n),
             "avg_progress": _avg(r.s, int(r.n))}
            for r in rows
        ]

    async def list_areas(self, tenant_id: str) -> list[dict[str, Any]]:
        """Every area of the tenant with its initiative count and average progress (one GROUP BY)."""
        if not _ok_text(tenant_id):
            return []
        async with self.connect() as conn:
            return self._area_dicts(await self.execute(conn, self._areas_stmt(tenant_id)))

    async def list_initiatives(
        self,
        tenant_id: str,
        *,
        status: str | None = None,
        area_id: int | None = None,
        page: int = 1,
        page_size: int = 20,
    ) -> dict[str, Any]:
        """One page (ordered by id) and the filtered total: two statements."""
        if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page must be >= 1 and page_size 1..{MAX_PAGE_SIZE}")
        empty = {"items": [], "total": 0, "page": page, "page_size": page_size}
        if not _ok_text(tenant_id) or (status is not None and not _ok_text(status)):
            return empty
        if area_id is not None and not _ok_id(area_id):
            return empty
        where = [initiatives.c.tenant_id == tenant_id]
        if status is not None:
            where.append(initiatives.c.status == status)
        if area_id is not None:
            where.append(initiatives.c.area_id == area_id)
        count_stmt = select(func.count()).select_from(initiatives).where(*where)
        page_stmt = (
            select(*_ITEM_COLUMNS)
            .where(*where)
            .order_by(initiatives.c.id)
            .limit(page_size)
            .offset((page - 1) * page_size)
        )
        async with self.connect() as conn:
            total = int((await self.execute(conn, count_stmt)).scalar_one())
            items = [_row(r._mapping) for r in await self.execute(conn, page_stmt)] if total else []
        return {"items": items, "total": total, "page": page, "page_size": page_size}

    async def export_initiatives(self, tenant_id: str, limit: int = MAX_EXPORT_ROWS) -> dict[str, Any]:
        """Every initiative of the tenant ordered by id, at most ``limit`` (one statement)."""
        if not _ok_text(tenant_id):
            return {"items": [], "count": 0, "truncated": False}
        stmt = (
            select(*_ITEM_COLUMNS)
            .where(initiatives.c.tenant_id == tenant_id)
            .order_by(initiatives.c.id)
            .limit(limit + 1)
        )
        async with self.connect() as conn:
            items = [_row(r._mapping) for r in await self.execute(conn, stmt)]
        truncated = len(items) > limit
        return {"items": items[:limit], "count": min(len(items), limit), "truncated": truncated}

    async def get_initiative(self, tenant_id: str, initiative_id: int) -> dict[str, Any] | None:
        """The full row (including ``tenant_id``), the same shape :meth:`update_initiative` returns."""
        if not _ok_text(tenant_id) or not _ok_id(initiative_id):
            return None
        stmt = select(*_ROW_COLUMNS).where(
            initiatives.c.tenant_id == tenant_id, initiatives.c.id == initiative_id
        )
        async with self.connect() as conn:
            row = (await self.execute(conn, stmt)).first()
            return _row(row._mapping) if row else None

    async def update_initiative(
        self, tenant_id: str, initiative_id: int, changes: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Apply ``changes`` and bump ``version``/``updated_at`` in one statement and transaction.

        ``UPDATE … RETURNING`` hands back exactly the row this write produced, so
        the version a caller caches is the one it committed, even with concurrent
        writers. Returns None when the initiative does not exist in this tenant.
        """
        _validate_changes(changes)
        if not _ok_text(tenant_id) or not _ok_id(initiative_id):
            return None
        stmt = (
            update(initiatives)
            .where(initiatives.c.tenant_id == tenant_id, initiatives.c.id == initiative_id)
            .values(**dict(changes), version=initiatives.c.version + 1, updated_at=_utcnow())
            .returning(*_ROW_COLUMNS)
        )
        async with self.connect(write=True) as conn:
            row = (await self.execute(conn, stmt)).first()
            return _row(row._mapping) if row else None

    # -- aggregations --------------------------------------------------------------
    def _groups_stmt(self, tenant_id: str, manager_id: int | None = None) -> Any:
        joined = initiatives.join(
            areas, and_(areas.c.tenant_id == initiatives.c.tenant_id, areas.c.id == initiatives.c.area_id)
        )
        stmt = (
            select(
                initiatives.c.area_id,
                areas.c.name,
                initiatives.c.status,
                func.count().label("n"),
                func.sum(initiatives.c.progress).label("s"),
            )
            .select_from(joined)
            .where(initiatives.c.tenant_id == tenant_id)
            .group_by(initiatives.c.area_id, areas.c.name, initiatives.c.status)
        )
        if manager_id is not None:
            stmt = stmt.where(areas.c.manager_id == manager_id)
        return stmt

    async def kpis(self, tenant_id: str) -> dict[str, Any]:
        """Totals, per-status counts, average progress and per-area figures: one ``GROUP BY area, status``."""
        if not _ok_text(tenant_id):
            return {"tenant_id": tenant_id, **_kpi_dict([])}
        async with self.connect() as conn:
            rows = list(await self.execute(conn, self._groups_stmt(tenant_id)))
        return {"tenant_id": tenant_id, **_kpi_dict(rows)}

    async def stats(self, tenant_id: str, day: dt.date) -> dict[str, Any]:
        """What changed on ``day`` (UTC) and today's progress distribution (10 buckets of 10 points).

        The day is a half-open range on ``updated_at`` so the (tenant_id,
        updated_at) index serves it on both dialects.
        """
        result: dict[str, Any] = {
            "tenant_id": tenant_id,
            "day": day.isoformat(),
            "updated_today": 0,
            "by_status_today": dict.fromkeys(STATUSES, 0),
            "progress_histogram": [0] * 10,
        }
        if not _ok_text(tenant_id):
            return result
        start = dt.datetime.combine(day, dt.time.min)
        end = start + dt.timedelta(days=1)
        today_stmt = (
            select(initiatives.c.status, func.count())
            .where(
                initiatives.c.tenant_id == tenant_id,
                initiatives.c.updated_at >= start,
                initiatives.c.updated_at < end,
            )
            .group_by(initiatives.c.status)
        )
        bucket = case((initiatives.c.progress >= 100, 9), else_=initiatives.c.progress // 10).label("bucket")
        hist_stmt = (
            select(bucket, func.count())
            .where(initiatives.c.tenant_id == tenant_id)
            .group_by(bucket)
        )
        async with self.connect() as conn:
            for status, n in await self.execute(conn, today_stmt):
                result["by_status_today"][status] = int(n)
                result["updated_today"] += int(n)
            for b, n in await self.execute(conn, hist_stmt):
                result["progress_histogram"][min(max(int(b), 0), 9)] += int(n)
        return result

    def _owned_stmt(self, tenant_id: str, user_id: int) -> Any:
        return (
            select(*_ITEM_COLUMNS)
            .where(initiatives.c.tenant_id == tenant_id, initiatives.c.owner_id == user_id)
            .order_by(initiatives.c.updated_at.desc(), initiatives.c.id.desc())
            .limit(DASHBOARD_ITEMS)
        )

    def _owned_summary_stmt(self, tenant_id: str, user_id: int) -> Any:
        return (
            select(initiatives.c.status, func.count(), func.sum(initiatives.c.progress))
            .where(initiatives.c.tenant_id == tenant_id, initiatives.c.owner_id == user_id)
            .group_by(initiatives.c.status)
        )

    async def dashboard(self, user_id: int, role: str) -> dict[str, Any] | None:
        """The per-user, per-role dashboard; None if the user does not exist.

        ``admin``: tenant-wide KPIs and all areas. ``manager``: KPIs over the
        areas they manage, those areas, and the initiatives they own.
        ``member`` and ``viewer``: the initiatives they own, with a status/progress summary.
        Owned initiatives are the ``DASHBOARD_ITEMS`` most recently updated.
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        if not _ok_id(user_id):
            return None
        async with self.connect() as conn:
            user = await self._user(conn, user_id)
            if user is None:
                return None
            tenant_id = user["tenant_id"]
            out: dict[str, Any] = {"user_id": user_id, "role": role, "tenant_id": tenant_id}
            if role == "admin":
                rows = list(await self.execute(conn, self._groups_stmt(tenant_id)))
                out["kpis"] = _kpi_dict(rows)
                out["areas"] = self._area_dicts(await self.execute(conn, self._areas_stmt(tenant_id)))
            else:
                if role == "manager":
                    rows = list(await self.execute(conn, self._groups_stmt(tenant_id, manager_id=user_id)))
                    out["kpis"] = _kpi_dict(rows)
                    out["areas"] = self._area_dicts(
                        await self.execute(conn, self._areas_stmt(tenant_id, manager_id=user_id))
                    )
                summary = list(await self.execute(conn, self._owned_summary_stmt(tenant_id, user_id)))
                owned_stmt = self._owned_stmt(tenant_id, user_id)
                by_status = dict.fromkeys(STATUSES, 0)
                total = progress_sum = 0
                for status, n, s in summary:
                    by_status[status] = int(n)
                    total += int(n)
                    progress_sum += int(s or 0)
                out["my_initiatives"] = {
                    "total": total,
                    "by_status": by_status,
                    "avg_progress": _avg(progress_sum, total),
                    "items": [_row(r._mapping) for r in await self.execute(conn, owned_stmt)],
                }
        out["generated_at"] = iso(_utcnow())
        return out

    async def report(self, tenant_id: str) -> dict[str, Any]:
        """The heavy report the background job computes: per-area × per-status breakdown, per-owner
        figures, top and bottom five initiatives by progress, stale work, totals (five statements)."""
        report: dict[str, Any] = {"tenant_id": tenant_id}
        if not _ok_text(tenant_id):
            rows: list[Any] = []
            owners: list[Any] = []
            top: list[dict[str, Any]] = []
            bottom: list[dict[str, Any]] = []
            stale = 0
        else:
            base = select(*_ITEM_COLUMNS).where(initiatives.c.tenant_id == tenant_id)
            owner_stmt = (
                select(initiatives.c.owner_id, users.c.name, func.count(), func.sum(initiatives.c.progress))
                .select_from(initiatives.outerjoin(users, and_(
                    users.c.tenant_id == initiatives.c.tenant_id, users.c.id == initiatives.c.owner_id
                )))
                .where(initiatives.c.tenant_id == tenant_id)
                .group_by(initiatives.c.owner_id, users.c.name)
                .order_by(initiatives.c.owner_id)
            )
            stale_stmt = select(func.count()).select_from(initiatives).where(
                initiatives.c.tenant_id == tenant_id,
                initiatives.c.status != "completed",
                initiatives.c.updated_at < _utcnow() - dt.timedelta(days=14),
            )
            async with self.connect() as conn:
                rows = list(await self.execute(conn, self._groups_stmt(tenant_id)))
                owners = list(await self.execute(conn, owner_stmt))
                top_stmt = base.order_by(initiatives.c.progress.desc(), initiatives.c.id).limit(5)
                top = [_row(r._mapping) for r in await self.execute(conn, top_stmt)]
                bottom_stmt = base.order_by(initiatives.c.progress.asc(), initiatives.c.id).limit(5)
                bottom = [_row(r._mapping) for r in await self.execute(conn, bottom_stmt)]
                stale = int((await self.execute(conn, stale_stmt)).scalar_one())
        by_status, total, progress_sum, per_area = _fold_groups(rows)
        report["totals"] = {
            "initiatives": total,
            "by_status": by_status,
            "avg_progress": _avg(progress_sum, total),
            "completed_pct": round(100.0 * by_status["completed"] / total, 2) if total else 0.0,
            "at_risk": by_status["at_risk"],
            "stale_14d": stale,
        }
        report["areas"] = [
            {"area_id": a["area_id"], "name": a["name"], "count": a["count"],
             "avg_progress": _avg(a["_sum"], a["count"]), "by_status": a["by_status"]}
            for a in sorted(per_area.values(), key=lambda a: a["area_id"])
        ]
        report["owners"] = [
            {"owner_id": o, "name": name, "count": int(n), "avg_progress": _avg(s, int(n))}
            for o, name, n, s in owners
        ]
        report["top"] = top
        report["bottom"] = bottom
        report["generated_at"] = iso(_utcnow())
        return report


def _sqlite_pragmas(memory: bool) -> Any:
    """Per-connection settings: busy timeout first (so the WAL switch itself waits), then WAL."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not memory:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    return on_connect
