"""The dashboard's database layer and generator, on SQLite and on PostgreSQL.

Every database test runs twice: on a SQLite file in ``tmp_path``, and on
PostgreSQL — the server named by ``DATABASE_URL`` when it is a postgres URL
(its tables are dropped and recreated: point it only at a throwaway
database), otherwise a private server launched with ``PostgresServer`` when
initdb/pg_ctl are installed, otherwise skipped with the reason.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from cachelab.app.db import MAX_PAGE_SIZE, ROLES, STATUSES, Database, async_url
from cachelab.app.seed import AlreadySeeded, data_checksum, ensure_seeded, row_counts, seed_database
from cachelab.config import ConfigError
from cachelab.servers.postgres import PostgresFailed, PostgresNotFound, PostgresServer

SMALL = {"tenants": 3, "initiatives_per_tenant": 150, "users_per_tenant": 8, "areas_per_tenant": 4}
FIXED_NOW = dt.datetime(2025, 3, 14, 15, 9, 26)
_ENV_URL = os.environ.get("DATABASE_URL", "")
_ENV_IS_PG = _ENV_URL.startswith(("postgres://", "postgresql://", "postgresql+asyncpg://"))


# -- fixtures ------------------------------------------------------------------
@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if _ENV_IS_PG:
        yield _ENV_URL
        return
    try:
        server = PostgresServer()
    except PostgresNotFound as exc:
        pytest.skip(f"PostgreSQL: DATABASE_URL is not a postgres URL and no local server binaries: {exc}")
    try:
        server.start()
    except PostgresFailed as exc:
        pytest.skip(f"PostgreSQL: DATABASE_URL is not a postgres URL and launching one failed: {exc}")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dashboard.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(db_url)
    await seed_database(database, reset=True, **SMALL)
    database.queries = 0
    yield database
    await database.close()


async def all_initiatives(db: Database, tenant_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        result = await db.list_initiatives(tenant_id, page=page, page_size=MAX_PAGE_SIZE)
        items += result["items"]
        if len(items) >= result["total"]:
            return items
        page += 1


# -- URLs ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "driver", "dialect"),
    [
        ("sqlite:///dash.db", "sqlite+aiosqlite", "sqlite"),
        ("sqlite:////abs/dash.db", "sqlite+aiosqlite", "sqlite"),
        ("sqlite:///:memory:", "sqlite+aiosqlite", "sqlite"),
        ("sqlite+aiosqlite:///dash.db", "sqlite+aiosqlite", "sqlite"),
        ("postgresql://u:p@db.example:5432/app", "postgresql+asyncpg", "postgresql"),
        ("postgres://u:p@db.example/app", "postgresql+asyncpg", "postgresql"),
        ("postgresql+asyncpg://u:p@db.example/app", "postgresql+asyncpg", "postgresql"),
    ],
)
def test_user_urls_map_to_the_async_driver(url: str, driver: str, dialect: str) -> None:
    sa_url, got_dialect = async_url(url)
    assert (sa_url.drivername, got_dialect) == (driver, dialect)
    database = Database.from_url(url)
    assert database.dialect == dialect
    assert ":p@" not in database.url


def test_libpq_sslmode_becomes_asyncpg_ssl() -> None:
    sa_url, _ = async_url("postgresql://u:p@h/app?sslmode=require")
    assert dict(sa_url.query) == {"ssl": "require"}


@pytest.mark.parametrize(
    "url",
    [
        "mysql://admin:s3cret@db.example/app",
        "postgresql+psycopg2://admin:s3cret@db.example/app",
        "redis://:s3cret@localhost/0",
        "dashboard.db",
        "postgresql://admin:s3cret@db.example:notaport/app",
        "sqlite://admin:s3cret@host/dash.db",
    ],
)
def test_unsupported_or_malformed_urls_raise_config_error_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        Database.from_url(url)
    assert "s3cret" not in str(info.value)
    assert "DATABASE_URL" in str(info.value)


async def test_no_url_means_a_sqlite_file_at_default_path(tmp_path: Any) -> None:
    path = tmp_path / "default.db"
    database = Database.from_url(None, default_path=str(path))
    try:
        assert database.dialect == "sqlite" and not await database.is_seeded()
        await database.create_schema()
        await database.create_schema()  # idempotent
        assert path.exists() and not await database.is_seeded()
        assert await database.ping() >= 0
    finally:
        await database.close()


# -- generator -----------------------------------------------------------------
async def test_seeding_is_deterministic_realistic_and_refuses_to_overwrite(db_url: str) -> None:
    database = Database.from_url(db_url)
    reference = Database.from_url("sqlite:///:memory:")
    try:
        counts = await seed_database(database, reset=True, seed=7, now=FIXED_NOW, **SMALL)
        expected = {"tenants": 3, "users": 24, "areas": 12, "initiatives": 450}
        assert counts == expected and await row_counts(database) == expected
        first = await data_checksum(database)

        await seed_database(database, reset=True, seed=7, now=FIXED_NOW, **SMALL)
        assert await data_checksum(database) == first
        # The same rows on another backend (SQLite in memory): nothing depends on the dialect.
        await seed_database(reference, seed=7, now=FIXED_NOW, **SMALL)
        assert await data_checksum(reference) == first

        with pytest.raises(AlreadySeeded):
            await seed_database(database, seed=7, now=FIXED_NOW, **SMALL)
        assert await ensure_seeded(database, **SMALL) is None
        await seed_database(database, reset=True, seed=8, now=FIXED_NOW, **SMALL)
        assert await data_checksum(database) != first

        tenants = await database.list_tenants()
        assert all(re.fullmatch(r"[a-z0-9-]+", t["id"]) for t in tenants)
        mixes = []
        for tenant in tenants:
            users = await database.list_users(tenant["id"])
            assert users[0]["role"] == "admin" and {u["role"] for u in users} == set(ROLES)
            assert all(u["email"] == f"user{n}@{tenant['id']}.example" for n, u in enumerate(users, 1))
            kpis = await database.kpis(tenant["id"])
            mixes.append(tuple(kpis["by_status"][s] for s in STATUSES))
            rows = await all_initiatives(database, tenant["id"])
            assert all(r["progress"] == 100 for r in rows if r["status"] == "completed")
            stamps = [dt.datetime.fromisoformat(r["updated_at"]).replace(tzinfo=None) for r in rows]
            assert all(FIXED_NOW - dt.timedelta(days=30) <= s <= FIXED_NOW for s in stamps)
            today = sum(s.date() == FIXED_NOW.date() for s in stamps)
            assert 0 < today < len(rows) // 2
        assert len(set(mixes)) == len(mixes)  # each tenant has its own status mix
    finally:
        await database.close()
        await reference.close()


async def test_default_data_set_seeds_in_seconds_on_sqlite(tmp_path: Any) -> None:
    database = Database.from_url(f"sqlite:///{tmp_path / 'full.db'}")
    try:
        counts = await ensure_seeded(database)
        assert counts == {"tenants": 5, "users": 100, "areas": 40, "initiatives": 10_000}
        assert database.queries < 40  # batched inserts, not one statement per row
        assert await ensure_seeded(database) is None
    finally:
        await database.close()


# -- queries -------------------------------------------------------------------
async def test_kpis_areas_and_stats_match_a_recomputation_from_the_rows(db: Database) -> None:
    today = dt.datetime.now(dt.UTC).date()
    for tenant in await db.list_tenants():
        rows = await all_initiatives(db, tenant["id"])
        kpis = await db.kpis(tenant["id"])
        assert kpis["total"] == len(rows) == SMALL["initiatives_per_tenant"]
        assert kpis["by_status"] == {s: sum(r["status"] == s for r in rows) for s in STATUSES}
        assert kpis["at_risk"] == kpis["by_status"]["at_risk"]
        assert kpis["avg_progress"] == round(sum(r["progress"] for r in rows) / len(rows), 2)
        assert kpis["completed_pct"] == round(100 * kpis["by_status"]["completed"] / len(rows), 2)
        per_area = Counter(r["area_id"] for r in rows)
        assert {a["area_id"]: a["count"] for a in kpis["areas"]} == dict(per_area)

        areas = await db.list_areas(tenant["id"])
        assert {a["id"]: a["initiative_count"] for a in areas if a["initiative_count"]} == dict(per_area)
        for area in areas:
            mine = [r["progress"] for r in rows if r["area_id"] == area["id"]]
            assert area["avg_progress"] == (round(sum(mine) / len(mine), 2) if mine else 0.0)

        stats = await db.stats(tenant["id"], today)
        touched = [r for r in rows if dt.datetime.fromisoformat(r["updated_at"]).date() == today]
        assert stats["updated_today"] == len(touched)
        assert stats["by_status_today"] == {s: sum(r["status"] == s for r in touched) for s in STATUSES}
        assert stats["progress_histogram"] == [
            sum(min(r["progress"] // 10, 9) == b for r in rows) for b in range(10)
        ]


async def test_update_bumps_version_and_updated_at_and_returns_the_committed_row(db: Database) -> None:
    tenant = (await db.list_tenants())[0]["id"]
    before = (await db.list_initiatives(tenant, status="planning", page_size=1))["items"][0]
    kpis_before = await db.kpis(tenant)
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)

    changes = {"progress": 100, "status": "completed", "title": "Done"}
    row = await db.update_initiative(tenant, before["id"], changes)
    assert row is not None
    assert (row["id"], row["tenant_id"], row["version"]) == (before["id"], tenant, before["version"] + 1)
    assert (row["progress"], row["status"], row["title"]) == (100, "completed", "Done")
    assert dt.datetime.fromisoformat(row["updated_at"]) >= started
    assert await db.get_initiative(tenant, before["id"]) == row  # the cacheable row is the stored row

    again = await db.update_initiative(tenant, before["id"], {"progress": 90})
    assert again is not None and again["version"] == row["version"] + 1 and again["status"] == "completed"

    kpis_after = await db.kpis(tenant)
    assert kpis_after["by_status"]["planning"] == kpis_before["by_status"]["planning"] - 1
    assert kpis_after["by_status"]["completed"] == kpis_before["by_status"]["completed"] + 1
    stats = await db.stats(tenant, dt.datetime.fromisoformat(again["updated_at"]).date())
    assert stats["by_status_today"]["completed"] >= 1


async def test_update_of_unknown_initiative_returns_none_and_unknown_fields_raise(db: Database) -> None:
    tenant = (await db.list_tenants())[0]["id"]
    assert await db.update_initiative(tenant, 999_999, {"progress": 5}) is None
    assert await db.update_initiative(tenant, 2**40, {"progress": 5}) is None  # beyond INT4: not found
    row = (await db.list_initiatives(tenant, page_size=1))["items"][0]
    for bad in ({"version": 99}, {"tenant_id": "x"}, {"progress": 5, "owner_id": 1}, {}):
        with pytest.raises(ValueError):
            await db.update_initiative(tenant, row["id"], bad)
    for bad in ({"progress": 101}, {"status": "done"}, {"title": ""}):
        with pytest.raises(ValueError):
            await db.update_initiative(tenant, row["id"], bad)
    current = await db.get_initiative(tenant, row["id"])
    assert current is not None and current["version"] == row["version"]


async def test_one_tenant_never_sees_or_changes_another_tenants_rows(db: Database) -> None:
    a, b = (t["id"] for t in (await db.list_tenants())[:2])
    rows_a = await all_initiatives(db, a)
    rows_b = await all_initiatives(db, b)
    assert {r["id"] for r in rows_a}.isdisjoint(r["id"] for r in rows_b)
    victim = rows_b[0]
    assert await db.get_initiative(a, victim["id"]) is None
    assert await db.update_initiative(a, victim["id"], {"title": "pwned"}) is None
    assert (await db.get_initiative(b, victim["id"]))["title"] == victim["title"]  # type: ignore[index]
    assert all(u["email"].endswith(f"@{a}.example") for u in await db.list_users(a))
    area_b = (await db.list_areas(b))[0]["id"]
    assert (await db.list_initiatives(a, area_id=area_b))["total"] == 0
    report_a = await db.report(a)
    assert {r["id"] for r in report_a["top"] + report_a["bottom"]} <= {r["id"] for r in rows_a}


HOSTILE_IDS = ["*", "a%", "' OR 1=1 --", "acme-01' --", "acme-0_", "acme-01; DROP TABLE tenants", "",
               " acme-01", "\x00", "acme\x00-01", "\ud800", "x" * 10_000, "{acme-01}"]


@pytest.mark.parametrize("tenant_id", HOSTILE_IDS, ids=lambda s: repr(s)[:20])
async def test_hostile_tenant_ids_find_nothing_and_never_raise(db: Database, tenant_id: str) -> None:
    assert await db.get_tenant(tenant_id) is None
    assert await db.list_users(tenant_id) == []
    assert await db.list_areas(tenant_id) == []
    assert (await db.list_initiatives(tenant_id, status=tenant_id))["total"] == 0
    assert await db.get_initiative(tenant_id, 1) is None
    assert await db.update_initiative(tenant_id, 1, {"progress": 1}) is None
    assert (await db.kpis(tenant_id))["total"] == 0
    assert (await db.stats(tenant_id, dt.date.today()))["progress_histogram"] == [0] * 10
    assert (await db.report(tenant_id))["totals"]["initiatives"] == 0
    assert await db.get_user_by_email(tenant_id) is None
    assert len(await db.list_tenants()) == SMALL["tenants"]


async def test_out_of_range_ids_are_not_found_rather_than_driver_errors(db: Database) -> None:
    for user_id in (0, -1, 2**31, 2**63, -(2**40)):
        assert await db.get_user(user_id) is None
        assert await db.dashboard(user_id, "member") is None
    tenant = (await db.list_tenants())[0]["id"]
    assert await db.get_initiative(tenant, 2**63) is None
    assert (await db.list_initiatives(tenant, area_id=2**40))["total"] == 0


async def test_queries_counts_every_statement(db: Database) -> None:
    tenant = (await db.list_tenants())[0]["id"]
    steps = [
        (lambda: db.get_tenant(tenant), 1),
        (lambda: db.list_initiatives(tenant), 2),  # count + page
        (lambda: db.list_initiatives("nobody"), 1),  # count only: nothing to page
        (lambda: db.update_initiative(tenant, 1, {"progress": 3}), 1),
        (lambda: db.kpis(tenant), 1),
        (lambda: db.stats(tenant, dt.date.today()), 2),
        (lambda: db.list_areas(tenant), 1),
        (lambda: db.ping(), 1),
        (lambda: db.report(tenant), 5),
        (lambda: db.get_tenant("\x00"), 0),  # rejected before the database
    ]
    for call, statements in steps:
        before = db.queries
        await call()
        assert db.queries - before == statements


async def test_delay_ms_is_slept_before_each_statement(db: Database) -> None:
    tenant = (await db.list_tenants())[0]["id"]
    await db.get_tenant(tenant)  # warm the pool
    db.delay_ms = 40
    started = time.perf_counter()
    await db.get_tenant(tenant)
    assert time.perf_counter() - started >= 0.040
    started = time.perf_counter()
    await db.list_initiatives(tenant)  # two statements
    assert time.perf_counter() - started >= 0.080
    db.delay_ms = 0
    with pytest.raises(ConfigError):
        Database.from_url("sqlite://", delay_ms=-1)


async def test_dashboard_depends_on_role_and_shows_only_the_users_data(db: Database) -> None:
    tenant = (await db.list_tenants())[1]["id"]
    users = await db.list_users(tenant)
    by_role = {role: next(u for u in users if u["role"] == role) for role in ROLES}
    rows = await all_initiatives(db, tenant)

    admin = await db.dashboard(by_role["admin"]["id"], "admin")
    assert admin is not None and admin["tenant_id"] == tenant and admin["role"] == "admin"
    assert admin["kpis"] == {k: v for k, v in (await db.kpis(tenant)).items() if k != "tenant_id"}
    assert admin["areas"] == await db.list_areas(tenant)
    assert admin["generated_at"]

    manager_id = by_role["manager"]["id"]
    manager = await db.dashboard(manager_id, "manager")
    assert manager is not None and manager["areas"]
    assert all(a["manager_id"] == manager_id for a in manager["areas"])
    managed = {a["id"] for a in manager["areas"]}
    assert manager["kpis"]["total"] == sum(r["area_id"] in managed for r in rows)

    member_id = by_role["member"]["id"]
    member = await db.dashboard(member_id, "member")
    assert member is not None and "kpis" not in member
    mine = [r for r in rows if r["owner_id"] == member_id]
    assert member["my_initiatives"]["total"] == len(mine)
    items = member["my_initiatives"]["items"]
    assert all(i["owner_id"] == member_id for i in items)
    assert [i["updated_at"] for i in items] == sorted((i["updated_at"] for i in items), reverse=True)

    assert await db.dashboard(10**6, "admin") is None
    with pytest.raises(ValueError):
        await db.dashboard(member_id, "root")


async def test_report_totals_breakdowns_and_extremes_are_consistent(db: Database) -> None:
    tenant = (await db.list_tenants())[2]["id"]
    report = await db.report(tenant)
    kpis = await db.kpis(tenant)
    assert report["totals"]["initiatives"] == kpis["total"]
    assert report["totals"]["by_status"] == kpis["by_status"]
    assert sum(a["count"] for a in report["areas"]) == kpis["total"]
    assert all(sum(a["by_status"].values()) == a["count"] for a in report["areas"])
    assert sum(o["count"] for o in report["owners"]) == kpis["total"]
    top = [r["progress"] for r in report["top"]]
    bottom = [r["progress"] for r in report["bottom"]]
    assert len(top) == len(bottom) == 5 and top == sorted(top, reverse=True) and bottom == sorted(bottom)
    rows = await all_initiatives(db, tenant)
    assert top[0] == max(r["progress"] for r in rows) and bottom[0] == min(r["progress"] for r in rows)


# -- concurrency ---------------------------------------------------------------
async def test_20_concurrent_updates_and_reads_neither_lock_nor_lose_updates(
    db: Database, db_url: str
) -> None:
    """Two pools on one database (as the API and the worker process have): every write lands once."""
    other = Database.from_url(db_url)
    try:
        tenant = (await db.list_tenants())[0]["id"]
        target = (await db.list_initiatives(tenant, page_size=1))["items"][0]
        ids = [r["id"] for r in (await db.list_initiatives(tenant, page_size=21))["items"]][1:]  # not target

        async def write(i: int) -> dict[str, Any] | None:
            return await (db if i % 2 else other).update_initiative(tenant, target["id"], {"progress": i})

        async def spread_write(i: int) -> dict[str, Any] | None:
            return await (other if i % 2 else db).update_initiative(tenant, ids[i], {"status": "on_hold"})

        async def read(i: int) -> Any:
            d = db if i % 2 else other
            return await asyncio.gather(
                d.kpis(tenant), d.get_initiative(tenant, target["id"]),
                d.list_initiatives(tenant, status="on_hold"), d.stats(tenant, dt.date.today()),
            )

        results = await asyncio.wait_for(
            asyncio.gather(*(write(i) for i in range(20)), *(spread_write(i) for i in range(20)),
                           *(read(i) for i in range(20))),
            timeout=90,
        )
        versions = sorted(r["version"] for r in results[:20])
        assert versions == list(range(target["version"] + 1, target["version"] + 21))  # each write its own
        final = await db.get_initiative(tenant, target["id"])
        assert final is not None and final["version"] == target["version"] + 20
        assert all(r is not None and r["status"] == "on_hold" for r in results[20:40])
    finally:
        await other.close()


async def test_in_memory_sqlite_shares_one_connection_safely() -> None:
    database = Database.from_url("sqlite:///:memory:")
    try:
        await seed_database(database, **SMALL)
        tenant = (await database.list_tenants())[0]["id"]
        row = (await database.list_initiatives(tenant, page_size=1))["items"][0]
        results = await asyncio.gather(
            *(database.update_initiative(tenant, row["id"], {"progress": i}) for i in range(10)),
            *(database.kpis(tenant) for _ in range(10)),
        )
        versions = sorted(r["version"] for r in results[:10])
        assert versions == list(range(row["version"] + 1, row["version"] + 11))
        assert all(k["total"] == SMALL["initiatives_per_tenant"] for k in results[10:])
    finally:
        await database.close()


# -- the PostgreSQL launcher ---------------------------------------------------------
def test_postgres_server_starts_serves_and_is_removed() -> None:
    try:
        server = PostgresServer()
    except PostgresNotFound as exc:
        pytest.skip(f"no local PostgreSQL binaries: {exc}")
    with server:
        assert server.url.startswith("postgresql://postgres@127.0.0.1:")
        tmpdir, port = server.tmpdir, server.port
        assert tmpdir is not None and (tmpdir / "data" / "PG_VERSION").exists()

        async def use() -> float:
            database = Database.from_url(server.url)
            try:
                await database.create_schema()
                return await database.ping()
            finally:
                await database.close()

        assert asyncio.run(use()) >= 0
    assert not tmpdir.exists()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):  # type: ignore[arg-type]
        pass
    server.stop()  # idempotent
