"""Stampede protection: what each strategy does when a hot key is gone, and the lock's own price.

``stampede`` rows are experiments, not per-operation timings: each runs
:func:`run_stampede` once (100 concurrent callers in one process, a 20 ms
loader, a cold key: the moment a hot entry has expired) and records
``loader_calls``, ``p99_ms`` and the statuses in ``extra_info``; the time
column is the whole experiment. Strategies:

* ``none`` — no protection (``single_flight=False``): every caller that misses loads;
* ``single_flight`` — in-process coalescing (the default);
* ``lock`` — the cross-process ``SET NX`` lease alone;
* ``xfetch`` — probabilistic early refresh alone;
* ``lock+xfetch`` — both.

With one process, single-flight would hide the others, so every row but
``single_flight`` turns it off: the 100 tasks stand for 100 processes with one
caller each. ``xfetch`` acts *before* expiry (a reader refreshes early while the entry
still serves); at a cold key it has nothing to act on and is as unprotected as
``none``: how many callers load depends only on how many arrive before the
first fill (connection setup staggers them; 9 to 100 of 100 in our runs).
That is the finding, and why it pairs with the lock.

Cost per caller: round trips are the experiment client's own count less its
one ``PING``, the loader's ``INCR`` (the stand-in database's call counter) and
each new connection's setup; server commands and µs come from ``INFO
commandstats`` and do include the ``INCR``.

``stampede-lock`` times the pieces per operation: a ``TokenLock`` acquire +
release (the lock's price on every locked miss) and an uncontended
``SingleFlight.do`` (no Redis at all).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
import redis

import cachelab.experiments.stampede as stampede_experiment
from cachelab.client import ResilientRedis, read_lua
from cachelab.experiments.stampede import StampedeResult, as_row, run_stampede
from cachelab.harness.bench import BenchTarget, cost_info, measure_cost
from cachelab.harness.cost import Cost, CostMeter
from cachelab.patterns.cache import CachePolicy
from cachelab.patterns.keys import make_key
from cachelab.patterns.stampede import SingleFlight, TokenLock

STRATEGIES: dict[str, CachePolicy] = {
    "none": CachePolicy(single_flight=False),
    "single_flight": CachePolicy(single_flight=True),
    "lock": CachePolicy(single_flight=False, lock=True),
    "xfetch": CachePolicy(single_flight=False, xfetch_beta=1.0),
    "lock+xfetch": CachePolicy(single_flight=False, lock=True, xfetch_beta=1.0),
}
TASKS, LOADER_S = 100, 0.02
SMOKE_TASKS, SMOKE_LOADER_S = 10, 0.005


class _Recording(ResilientRedis):
    """Stands in for ``ResilientRedis`` inside the experiment so its round-trip counters can be read."""

    made: ClassVar[list[ResilientRedis]] = []

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> ResilientRedis:
        rr = ResilientRedis.from_url(url, **kwargs)
        cls.made.append(rr)
        return rr


def _handshake_round_trips(url: str) -> int:
    """Requests a new connection sends before its first command (protocol and client-info setup)."""
    rr = ResilientRedis.from_url(url)

    async def ping_once() -> None:
        await rr.client.ping()
        await rr.aclose()

    asyncio.run(ping_once())
    return rr.round_trips.value - 1


def _connections(admin: redis.Redis) -> int:
    return int(admin.info("stats")["total_connections_received"])


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_stampede_at_expiry(
    strategy: str,
    benchmark: Any,
    redis_url: str,
    bench_meter: CostMeter,
    bench_target: BenchTarget,
    bench_admin: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
):
    tasks, delay = (SMOKE_TASKS, SMOKE_LOADER_S) if benchmark.disabled else (TASKS, LOADER_S)
    policy = STRATEGIES[strategy]
    handshake = _handshake_round_trips(redis_url)
    for script in ("cache_fill", "lock_release"):  # loaded once per server, not per experiment
        bench_admin.script_load(read_lua(script))
    monkeypatch.setattr(stampede_experiment, "ResilientRedis", _Recording)
    _Recording.made.clear()
    outcome: dict[str, Any] = {}

    def experiment() -> None:
        bench_admin.flushdb()  # a cold key: the hot entry has just expired
        before = _connections(bench_admin)
        cost = measure_cost(
            bench_meter,
            lambda: outcome.update(result=run_stampede(redis_url, policy, tasks_per_process=tasks,
                                                       loader_delay=delay)),
        )  # fmt: skip
        outcome.update(cost=cost, connections=_connections(bench_admin) - before)

    benchmark.group = "stampede"
    benchmark.pedantic(experiment, rounds=1, iterations=1)
    result: StampedeResult = outcome["result"]
    cost: Cost = outcome["cost"]
    counted = sum(rr.round_trips.value for rr in _Recording.made)
    # Take out what is not the cache path: one PING per process, the loader's INCR, connection setup.
    connections = outcome["connections"] - 2  # the experiment's own two admin connections
    cost.round_trips = counted - len(_Recording.made) - result.loader_calls - handshake * connections
    info = benchmark.extra_info
    info.update(cost_info(cost, result.callers))
    info.update(as_row(strategy, result))
    info.update(
        {
            "redis_version": bench_target.version,
            "redis_target": bench_target.address,
            "loader_ms": delay * 1000,
            "processes": 1,
            "connections_opened": connections,
            "time_unit": "experiment" if not benchmark.disabled else "not measured",
            "per_op": "per caller; commands include those run inside scripts and the loader's INCR",
            "cost_varies": "how many callers arrive before the first fill decides it",
            "policy": {
                "single_flight": policy.single_flight,
                "lock": policy.lock,
                "xfetch_beta": policy.xfetch_beta,
            },
        }
    )
    assert sum(result.statuses.values()) == result.callers
    if strategy == "single_flight":
        # Coalesced: one load. A caller whose read missed before the fill landed but came back after
        # the flight ended reads again rather than loading (Cache.fetch; 2 of 10 loaded before that).
        assert result.loader_calls == 1


def test_token_lock_acquire_release(bench_async: Any, bench_rredis: ResilientRedis):
    key = make_key("cl", "acme", "kpi", "kpis") + ":~lock"

    async def acquire_release() -> None:
        lock = TokenLock(bench_rredis, key, lease=5.0)
        assert await lock.acquire()
        assert await lock.release()

    bench_async(acquire_release, group="stampede-lock")


def test_single_flight_uncontended(bench_async: Any):
    flight: SingleFlight[int] = SingleFlight()

    async def work() -> int:
        return 1

    async def one() -> None:
        await flight.do("k", work)

    bench_async(one, group="stampede-lock", extra={"redis": False})
