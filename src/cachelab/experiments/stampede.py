"""A stampede experiment: many callers, one cold (or expiring) key, count the loads.

Used by the tests (protection works), the benchmarks and the stampede
notebook (how much each strategy saves). Each process runs ``tasks`` asyncio
callers that start together; the loader counts its calls in Redis (``INCR``),
so the count is exact across processes.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from cachelab.client import ClientOptions, ResilientRedis
from cachelab.patterns.cache import Cache, CachePolicy

COUNTER_KEY = "cl:stampede:loads"


@dataclass(frozen=True)
class StampedeResult:
    callers: int
    loader_calls: int
    statuses: dict[str, int]
    latencies_ms: list[float]

    @property
    def p99_ms(self) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


async def _callers(
    url: str, policy: CachePolicy, tasks: int, loader_delay: float, key_scope: str, start_at: float
) -> tuple[dict[str, int], list[float]]:
    # A hundred connections open at once: generous timeouts, so that what is measured is the
    # stampede, not a connect timeout on a busy machine (which fails open: one more load).
    options = ClientOptions(command_timeout=5.0, connect_timeout=5.0, max_connections=tasks + 8)
    rr = ResilientRedis.from_url(url, options=options)
    cache = Cache(rr, "stampede", policy)
    key = cache.key(key_scope, "hot")

    async def loader() -> dict[str, Any]:
        await rr.client.incr(COUNTER_KEY)
        await asyncio.sleep(loader_delay)
        return {"value": 42}

    async def one() -> tuple[str, float]:
        began = time.perf_counter()
        result = await cache.fetch(key, loader)
        return result.status.value, (time.perf_counter() - began) * 1000

    await rr.client.ping()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    outcomes = await asyncio.gather(*(one() for _ in range(tasks)))
    await rr.aclose()
    statuses: dict[str, int] = {}
    for status, _ in outcomes:
        statuses[status] = statuses.get(status, 0) + 1
    return statuses, [ms for _, ms in outcomes]


def _process_main(
    url: str, policy: CachePolicy, tasks: int, loader_delay: float, scope: str, start_at: float, out: Any
) -> None:
    out.put(asyncio.run(_callers(url, policy, tasks, loader_delay, scope, start_at)))


def run_stampede(
    url: str,
    policy: CachePolicy,
    *,
    processes: int = 1,
    tasks_per_process: int = 200,
    loader_delay: float = 0.2,
    scope: str = "stampede",
    start_delay: float | None = None,
) -> StampedeResult:
    """Fire ``processes × tasks_per_process`` concurrent fetches at one cold key."""
    admin = redis.Redis.from_url(url)
    admin.delete(COUNTER_KEY)
    admin.close()
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    if processes == 1:
        parts = [asyncio.run(_callers(url, policy, tasks_per_process, loader_delay, scope, time.time()))]
    else:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        # Spawned interpreters take a while to import; start everyone at one wall-clock instant.
        start_at = time.time() + (start_delay if start_delay is not None else 2.0 + 0.5 * processes)
        procs = [
            ctx.Process(
                target=_process_main,
                args=(url, policy, tasks_per_process, loader_delay, scope, start_at, queue),
            )
            for _ in range(processes)
        ]
        for proc in procs:
            proc.start()
        parts = [queue.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():  # pragma: no cover - defensive
                proc.kill()
    for part_statuses, part_latencies in parts:
        for status, count in part_statuses.items():
            statuses[status] = statuses.get(status, 0) + count
        latencies.extend(part_latencies)
    admin = redis.Redis.from_url(url)
    loads = int(admin.get(COUNTER_KEY) or 0)
    admin.close()
    return StampedeResult(
        callers=processes * tasks_per_process, loader_calls=loads, statuses=statuses, latencies_ms=latencies
    )


def as_row(name: str, result: StampedeResult) -> dict[str, Any]:
    row = asdict(result)
    row.pop("latencies_ms")
    return {"strategy": name, **row, "p99_ms": round(result.p99_ms, 2)}
