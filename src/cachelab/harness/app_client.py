"""Logging in to the sample app from experiments and tests: one session per tenant, sent as a cookie.

Every ``/api`` route but health, login and log-out needs a session of the
tenant it names, so a client that reads several tenants (the outage load, the
TTL and warming notebooks) holds one session per tenant and sends the right
one with each request. Sessions are sent as a ``Cookie`` header rather than
kept in the client's cookie jar, because one jar holds one ``session``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx

LOGIN = "/api/login"


class LoginFailed(RuntimeError):
    pass


def cookie_header(session_id: str) -> dict[str, str]:
    return {"Cookie": f"session={session_id}"}


def _session_of(response: httpx.Response, email: str) -> str:
    if response.status_code != 200:
        raise LoginFailed(f"login as {email} answered {response.status_code}: {response.text[:200]}")
    session_id = response.cookies.get("session")
    if not session_id:
        raise LoginFailed(f"login as {email} set no session cookie")
    return session_id


def login(http: httpx.Client, email: str, password: str) -> str:
    """Log in; the session id (not stored in ``http``'s cookie jar)."""
    response = http.post(LOGIN, json={"email": email, "password": password})
    http.cookies.clear()
    return _session_of(response, email)


async def alogin(http: httpx.AsyncClient, email: str, password: str) -> str:
    response = await http.post(LOGIN, json={"email": email, "password": password})
    http.cookies.clear()
    return _session_of(response, email)


def first_account(accounts: Iterable[Mapping[str, str]], tenant_id: str, roles: Iterable[str]) -> str:
    """The first seeded e-mail of ``tenant_id`` with one of ``roles``."""
    wanted = set(roles)
    for account in accounts:
        if account["tenant_id"] == tenant_id and account["role"] in wanted:
            return account["email"]
    raise LookupError(f"no account of tenant {tenant_id!r} with a role in {sorted(wanted)}")


def tenant_ids(accounts: Iterable[Mapping[str, str]]) -> list[str]:
    return sorted({a["tenant_id"] for a in accounts})


def login_per_tenant(
    http: httpx.Client, accounts: list[dict[str, str]], password: str, role: str = "admin"
) -> dict[str, dict[str, str]]:
    """``{tenant: Cookie header}`` with one session per tenant, as its first user of ``role``."""
    out: dict[str, dict[str, str]] = {}
    for t in tenant_ids(accounts):
        out[t] = cookie_header(login(http, first_account(accounts, t, [role]), password))
    return out


async def alogin_per_tenant(
    http: httpx.AsyncClient, accounts: list[dict[str, str]], password: str, role: str = "admin"
) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for t in tenant_ids(accounts):
        out[t] = cookie_header(await alogin(http, first_account(accounts, t, [role]), password))
    return out


def app_sessions(app: Any, role: str = "admin") -> dict[str, dict[str, str]]:
    """One session per tenant of an :class:`~cachelab.harness.app_server.AppServer`."""
    with httpx.Client(base_url=app.base_url, timeout=10) as http:
        return login_per_tenant(http, app.accounts(), app.seed_password, role)
