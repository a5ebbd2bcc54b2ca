"""The pieces authentication rests on, without a server: client addresses, the seed password,
password checks and the seeded accounts a load generator logs in as."""

from __future__ import annotations

import os
import stat

import pytest
from fastapi import APIRouter

from cachelab.app import passwords
from cachelab.app.auth import (
    CurrentCaller,
    TenantCaller,
    Writer,
    authenticate,
    require_on_every_route,
    same_tenant,
)
from cachelab.app.client_address import client_address
from cachelab.app.seed_password import resolve_seed_password, seed_password_for_client
from cachelab.config import ConfigError, load_settings, parse_networks

LOCAL = parse_networks("127.0.0.1")


# -- client address -------------------------------------------------------------------------
def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy():
    assert client_address("127.0.0.1", ["203.0.113.9"], ()) == "127.0.0.1"
    assert client_address("192.0.2.1", ["203.0.113.9"], LOCAL) == "192.0.2.1"
    assert client_address(None, ["203.0.113.9"], ()) == "-"


def test_from_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client():
    proxies = parse_networks("127.0.0.1, 10.0.0.0/8")
    # The client wrote "1.1.1.1" itself; our proxies appended the rest.
    assert client_address("127.0.0.1", ["1.1.1.1, 203.0.113.9, 10.0.0.5"], proxies) == "203.0.113.9"
    assert client_address("127.0.0.1", ["1.1.1.1", "203.0.113.9"], proxies) == "203.0.113.9"  # two headers
    assert client_address("127.0.0.1", ["10.0.0.7"], proxies) == "10.0.0.7"  # all trusted: the leftmost
    assert client_address("127.0.0.1", [], proxies) == "127.0.0.1"
    assert client_address("127.0.0.1", ["[2001:db8::1]:443"], proxies) == "2001:db8::1"


def test_a_malformed_hop_ends_the_walk_at_the_proxy_that_handed_it_over():
    proxies = parse_networks("127.0.0.1")
    assert client_address("127.0.0.1", ["unknown"], proxies) == "127.0.0.1"
    assert client_address("127.0.0.1", ["203.0.113.9, <script>"], proxies) == "127.0.0.1"


def test_trusted_proxies_must_be_addresses_or_networks(monkeypatch):
    assert parse_networks("") == () and len(parse_networks("::1, 172.16.0.0/12;127.0.0.1")) == 3
    monkeypatch.setenv("CACHELAB_TRUSTED_PROXIES", "127.0.0.1, localhost")
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        load_settings()


# -- the seed password ----------------------------------------------------------------------
@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    for name in ("CACHELAB_SEED_PASSWORD", "CACHELAB_SEED_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path


def test_a_set_seed_password_is_used_on_any_bind_and_never_shown(clean_env, monkeypatch):
    monkeypatch.setenv("CACHELAB_SEED_PASSWORD", "correct horse battery")
    password, note = resolve_seed_password("0.0.0.0")
    assert password == "correct horse battery" and password not in note
    assert seed_password_for_client() == password
    monkeypatch.setenv("CACHELAB_SEED_PASSWORD", "short")
    with pytest.raises(ConfigError, match="at least"):
        resolve_seed_password("127.0.0.1")


def test_unset_on_loopback_a_random_password_is_generated_once_into_a_private_file(clean_env, monkeypatch):
    assert seed_password_for_client() is None
    first, note = resolve_seed_password("127.0.0.1")
    path = clean_env / "state" / "cachelab" / "seed-password"
    assert first in note and str(path) in note  # shown the one time it is created
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again, note = resolve_seed_password("localhost")
    assert again == first and first not in note  # reused, not shown again
    assert seed_password_for_client() == first  # what the locustfile in another terminal reads
    other = clean_env / "other"
    other.mkdir()
    monkeypatch.setenv("XDG_STATE_HOME", str(other))
    assert resolve_seed_password("::1")[0] != first  # random per machine/user, never a fixed value


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "example.com"])
def test_unset_on_a_reachable_bind_serving_is_refused(clean_env, host):
    with pytest.raises(ConfigError, match="CACHELAB_SEED_PASSWORD"):
        resolve_seed_password(host)


def test_a_named_password_file_is_the_operators_choice_on_any_bind(clean_env, monkeypatch):
    path = clean_env / "secrets" / "seed-password"
    monkeypatch.setenv("CACHELAB_SEED_PASSWORD_FILE", str(path))
    password, _ = resolve_seed_password("0.0.0.0")
    assert path.read_text().strip() == password and seed_password_for_client() == password


# -- password checks --------------------------------------------------------------------------
def test_hashes_are_salted_argon2id_and_verify_only_the_right_password():
    a, b = passwords.hash_password("s3cret-enough"), passwords.hash_password("s3cret-enough")
    assert a.startswith("$argon2id$") and a != b
    assert passwords.verify_password(a, "s3cret-enough") and not passwords.verify_password(a, "nope")
    assert not passwords.verify_password("not a hash", "s3cret-enough")


async def test_every_login_failure_costs_exactly_one_verify(monkeypatch):
    checker = passwords.PasswordChecker()
    stored = passwords.hash_password("right-password")
    calls: list[str] = []
    real = passwords.verify_password

    def counting(stored_hash: str, password: str) -> bool:
        calls.append(stored_hash)
        return real(stored_hash, password)

    monkeypatch.setattr(passwords, "verify_password", counting)
    assert await checker.check(stored, "right-password")
    outcomes = [
        await checker.check(stored, "wrong"),
        await checker.check(None, "right-password"),  # unknown e-mail or a user without a password
        await checker.check(stored, None),  # no password sent
    ]
    assert outcomes == [False, False, False] and len(calls) == 4
    assert calls[2] != stored and calls[3] == stored  # the unknown user: against the dummy hash


# -- the accounts a load generator logs in as ---------------------------------------------------
async def test_seed_accounts_are_exactly_the_seeded_users_with_every_role():
    from cachelab.app.db import ROLES, Database
    from cachelab.app.seed import seed_accounts, seed_database

    db = Database.from_url("sqlite:///:memory:")
    try:
        await seed_database(db, tenants=2, initiatives_per_tenant=10, users_per_tenant=10, areas_per_tenant=3)
        seeded = [
            {"tenant_id": t["id"], "email": u["email"], "role": u["role"]}
            for t in await db.list_tenants()
            for u in await db.list_users(t["id"])
        ]
    finally:
        await db.close()
    accounts = seed_accounts(2, users_per_tenant=10, areas_per_tenant=3)
    assert accounts == seeded
    assert {a["role"] for a in accounts} == set(ROLES)


def test_a_tenant_route_that_does_not_name_its_caller_is_refused_when_the_app_is_built():
    # The routers carry no router-level dependency (FastAPI resolved it twice per request), so a
    # route that forgot `caller: TenantCaller` would be open to every session: refused up front.
    router = APIRouter(prefix="/api/tenants/{tenant_id}")

    @router.get("/guarded")
    async def guarded(caller: TenantCaller) -> None: ...

    @router.post("/written")
    async def written(caller: Writer) -> None: ...  # same_tenant one level down

    assert require_on_every_route(router, same_tenant) is router

    @router.get("/forgotten")
    async def forgotten(tenant_id: str) -> None: ...

    with pytest.raises(RuntimeError, match=r"\['GET'\] /api/tenants/\{tenant_id\}/forgotten .* same_tenant"):
        require_on_every_route(router, same_tenant)
    with pytest.raises(RuntimeError, match="authenticate or same_tenant"):
        require_on_every_route(router, authenticate, same_tenant)

    twice = APIRouter(prefix="/api/tenants/{tenant_id}")

    @twice.get("/both")
    async def both(caller: TenantCaller, me: CurrentCaller) -> None: ...  # two auth rounds, two counts

    with pytest.raises(RuntimeError, match="authenticate twice"):
        require_on_every_route(twice, same_tenant)
