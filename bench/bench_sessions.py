"""Session store per operation: get-and-slide, create, update (group ``sessions``).

* ``get`` is one ``EVALSHA`` that reads the hash, checks the absolute deadline
  and slides the idle TTL on the server's clock (the seed needs a ``GET`` and a
  separate ``EXPIRE`` for that, and can race the expiry in between);
* ``create`` is two (add the id to the user's index, then write the session);
  each op logs in a different user, as a login burst would;
* ``update`` writes only the changed field, only if the session still exists;
* ``trusted get``: a session read in the last second, taken from the process
  (:mod:`cachelab.patterns.session_trust`, the app's fast reads): no round trip.

``memory_per_key``: the session hash of :data:`DATA` on the ``get`` row, a
user's one-session index on the ``create`` row.
"""

from __future__ import annotations

import itertools
from typing import Any

from cachelab.client import ResilientRedis
from cachelab.patterns.session_trust import TrustedSessions
from cachelab.patterns.sessions import SessionStore

#: What a dashboard session carries: who, which tenant, roles, a CSRF token, UI state.
DATA = {
    "tenant": "acme",
    "email": "dara.novak@acme.example",
    "roles": ["viewer", "editor"],
    "csrf": "q9s7Yc1Vb2WmR0y3k8X4tZpLhN6eJfA5",
    "ui": {"theme": "dark", "last_page": "/dashboard", "filters": {"area": "Engineering"}},
}


def _store(rr: ResilientRedis) -> SessionStore:
    return SessionStore(rr, idle_timeout=1800, absolute_lifetime=12 * 3600)


def test_session_get_and_slide(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    store = _store(bench_rredis)
    session = arun(store.create("u-0001", DATA))
    assert arun(store.get(session.id)).data == DATA
    bench_async(lambda: store.get(session.id), group="sessions", memory_key=store.session_key(session.id))


def test_trusted_session_get(bench_sync: Any, bench_rredis: ResilientRedis, arun: Any):
    """A session read in the last second, taken from this process (the app's fast reads): no round trip."""
    store, trusted = _store(bench_rredis), TrustedSessions(60)
    session_id = arun(store.create("u-0001", DATA)).id
    trusted.remember(arun(store.get(session_id)))
    assert trusted.get(session_id) is not None
    bench_sync(lambda: trusted.get(session_id), group="sessions")


def test_session_create(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    store = _store(bench_rredis)
    arun(store.create("u-index", DATA))
    users = (f"u-{i:06d}" for i in itertools.count())
    bench_async(
        lambda: store.create(next(users), DATA), group="sessions", memory_key=store.index_key("u-index")
    )


def test_session_update(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    store = _store(bench_rredis)
    session = arun(store.create("u-0001", DATA))
    pages = itertools.cycle(["/dashboard", "/initiatives", "/reports"])
    assert arun(store.update(session.id, {"last_page": next(pages)}))
    bench_async(lambda: store.update(session.id, {"last_page": next(pages)}), group="sessions")


def test_session_get_unknown_id(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    """A well-shaped id that is not a session: still one round trip (a miss), never adopted."""
    store = _store(bench_rredis)
    ghost = "A" * 43
    assert arun(store.get(ghost)) is None
    bench_async(lambda: store.get(ghost), group="sessions")
