"""Peers on the same server in the same run: cashews, aiocache, limits and RQ beside ours.

Optional: install the ``peers`` extra (``pip install -e ".[peers]"``); each
peer's rows skip cleanly when it is missing. Every peer talks to the session's
redis-server through redis-py on a connection class that counts its round
trips, so the cost fields compare like for like. What cannot be made equal is
stated in each row's ``extra_info["fairness"]``.

* ``peers-cache-hit`` — a hit on the same ~430-byte KPI dict: ``Cache.fetch``
  and ``Cache.get`` (orjson in an envelope; ``MGET`` of value + generation)
  against ``cashews`` and ``aiocache`` ``get`` (one ``GET``, JSON serializer).
* ``peers-ratelimit-allowed`` / ``peers-ratelimit-denied`` — the ``limits``
  package's async Redis storage (redis-py implementation) against ours, for
  the three algorithms both have: fixed window, sliding log (``limits``:
  moving window) and sliding-window counter.
* ``peers-queue-enqueue`` / ``peers-queue-cycle`` — RQ's enqueue, and one job
  through RQ's own worker loop (enqueue, dequeue, execute in-process with
  ``SimpleWorker``, heartbeat), against ours (enqueue; enqueue + reserve + ack).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from cachelab.client import ResilientRedis
from cachelab.harness.payloads import REPORT_JOB, dashboard
from cachelab.patterns.cache import Cache, CacheStatus
from cachelab.patterns.queue import JobQueue
from cachelab.patterns.ratelimit import create_limiter

# cashews and aiocache call redis-py methods it has deprecated (close, setex): their business, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated:DeprecationWarning")

KPI = dashboard(20, tenant_id="acme")["kpis"]
TENANT = "acme"
IDENTIFIER = "203.0.113.7"


@pytest.fixture
def counted_connection_class(make_async_client: Callable[..., redis.asyncio.Redis]) -> type:
    """redis.asyncio's connection class with the bench round-trip counter, for a peer's own pool."""
    return make_async_client().connection_pool.connection_class


# -- peers-cache-hit -------------------------------------------------------------------


def test_cachelab_fetch_hit(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    cache = Cache(bench_rredis, "kpi")
    key = cache.key(TENANT, "kpis")
    arun(cache.set(key, KPI))
    assert arun(cache.fetch(key, _never)).status is CacheStatus.HIT
    bench_async(
        lambda: cache.fetch(key, _never),
        group="peers-cache-hit",
        memory_key=key,
        extra={"library": "cachelab", "fairness": "orjson in an envelope; MGET of value + generation; "
               "stampede protection, staleness and age decided on this read"},
    )  # fmt: skip


def test_cachelab_get_hit(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    cache = Cache(bench_rredis, "kpi")
    key = cache.key(TENANT, "kpis")
    arun(cache.set(key, KPI))
    bench_async(
        lambda: cache.get(key),
        group="peers-cache-hit",
        extra={"library": "cachelab", "fairness": "orjson in an envelope; MGET of value + generation"},
    )


async def _never() -> Any:
    raise AssertionError("a hit must not load")


@pytest.fixture
def cashews_cache(redis_url: str, counted_connection_class: type, arun: Any) -> Iterator[Any]:
    cashews = pytest.importorskip("cashews")
    cache = cashews.Cache()
    # JSON rather than cashews' default pickle: the same data format as the others.
    cache.setup(redis_url, pickle_type="json", client_side=False, connection_class=counted_connection_class)
    yield cache
    arun(cache.close())


def test_cashews_hit(bench_async: Any, cashews_cache: Any, arun: Any):
    key = f"cashews:{TENANT}:kpis"
    arun(cashews_cache.set(key, KPI, expire=300))
    assert arun(cashews_cache.get(key)) == KPI
    bench_async(
        lambda: cashews_cache.get(key),
        group="peers-cache-hit",
        memory_key=key,
        extra={"library": "cashews", "fairness": "pickle_type=json (stdlib json; cashews defaults to "
               "pickle); plain GET: no envelope, no generation, no stampede protection on this call"},
    )  # fmt: skip


@pytest.fixture
def aiocache_cache(redis_url: str, counted_connection_class: type, arun: Any) -> Iterator[Any]:
    aiocache = pytest.importorskip("aiocache")
    serializers = pytest.importorskip("aiocache.serializers")
    options = redis.connection.parse_url(redis_url)
    if "host" not in options or "port" not in options:
        pytest.skip("aiocache's RedisCache takes a host and a port, not this URL")
    cache = aiocache.RedisCache(
        endpoint=options["host"],
        port=options["port"],
        db=options.get("db", 0),
        password=options.get("password"),
        serializer=serializers.JsonSerializer(),
        connection_pool_kwargs={"connection_class": counted_connection_class},
    )
    yield cache
    arun(cache.close())


def test_aiocache_hit(bench_async: Any, aiocache_cache: Any, arun: Any):
    key = f"aiocache:{TENANT}:kpis"
    arun(aiocache_cache.set(key, KPI, ttl=300))
    assert arun(aiocache_cache.get(key)) == KPI
    bench_async(
        lambda: aiocache_cache.get(key),
        group="peers-cache-hit",
        memory_key=key,
        extra={"library": "aiocache", "fairness": "JsonSerializer (stdlib json or ujson); plain GET: "
               "no envelope, no generation, no stampede protection on this call"},
    )  # fmt: skip


# -- peers-ratelimit -------------------------------------------------------------------

#: ours -> the ``limits`` strategy with the same semantics
LIMITS_STRATEGIES = {
    "fixed_window": "FixedWindowRateLimiter",
    "sliding_log": "MovingWindowRateLimiter",
    "sliding_window": "SlidingWindowCounterRateLimiter",
}
RATES = {"allowed": (1_000_000, 60, "1000000/minute"), "denied": (10, 3600, "10/hour")}
LIMITS_FAIRNESS = (
    "limits' async RedisStorage (implementation='redispy') on a counted pool; one EVALSHA per hit like "
    "ours, but it returns only a bool (ours also returns remaining/reset/retry-after) and stamps entries "
    "with the client's clock (ours reads the server's TIME)"
)


def _limits_check(pool: redis.asyncio.ConnectionPool, url: str, algorithm: str, rate: str) -> Any:
    limits = pytest.importorskip("limits")
    storage_mod = pytest.importorskip("limits.aio.storage")
    strategies = pytest.importorskip("limits.aio.strategies")
    scheme, rest = url.split("://", 1)
    storage = storage_mod.RedisStorage(f"async+{scheme}://{rest}", implementation="redispy",
                                       connection_pool=pool)  # fmt: skip
    limiter = getattr(strategies, LIMITS_STRATEGIES[algorithm])(storage)
    item = limits.parse(rate)
    return lambda: limiter.hit(item, IDENTIFIER)


@pytest.mark.parametrize("algorithm", list(LIMITS_STRATEGIES))
@pytest.mark.parametrize("library", ["cachelab", "limits"])
@pytest.mark.parametrize("path", list(RATES))
def test_rate_check(
    path: str,
    library: str,
    algorithm: str,
    bench_async: Any,
    bench_rredis: ResilientRedis,
    redis_url: str,
    arun: Any,
):
    limit, period, rate = RATES[path]
    if library == "limits":
        check = _limits_check(bench_rredis.client.connection_pool, redis_url, algorithm, rate)
        allowed: Callable[[Any], bool] = bool
        fairness = LIMITS_FAIRNESS
    else:
        limiter = create_limiter(bench_rredis, algorithm, limit, period)

        def check() -> Any:
            return limiter.check(IDENTIFIER)

        def allowed(result: Any) -> bool:
            return bool(result.allowed)

        fairness = "one EVALSHA; decision on the server's clock; returns remaining/reset/retry-after"
    if path == "denied":
        for _ in range(limit):
            assert allowed(arun(check()))
    assert allowed(arun(check())) is (path == "allowed")
    bench_async(
        check,
        group=f"peers-ratelimit-{path}",
        extra={"library": library, "algorithm": algorithm, "limit": rate, "fairness": fairness},
    )


# -- peers-queue -----------------------------------------------------------------------

RESULT = {"pages": 3}
RQ_FAIRNESS = (
    "RQ is synchronous (redis-py sync client, timed with bench_sync) and pickles its jobs (ours: orjson; "
    "unpickling what Redis holds is code execution); its cycle is its own worker loop per job, which "
    "also keeps registries, heartbeats and a result record"
)
OURS_QUEUE_FAIRNESS = "async; orjson; lease + ack, status record, counters, notify list"


@pytest.fixture
def rq_queue(bench_sync_redis: redis.Redis) -> Iterator[tuple[Any, Any]]:
    rq = pytest.importorskip("rq")
    queue = rq.Queue("reports", connection=bench_sync_redis)
    worker = rq.SimpleWorker([queue], connection=bench_sync_redis)
    worker.bootstrap(logging_level="WARNING")  # registers the worker once, as `rq worker` does
    yield queue, worker
    worker.teardown()


def test_rq_enqueue(bench_sync: Any, rq_queue: tuple[Any, Any]):
    queue, _ = rq_queue
    first = queue.enqueue("json.dumps", REPORT_JOB)
    bench_sync(
        lambda: queue.enqueue("json.dumps", REPORT_JOB),
        group="peers-queue-enqueue",
        memory_key=first.key.decode() if isinstance(first.key, bytes) else first.key,
        extra={"library": "rq", "fairness": RQ_FAIRNESS},
    )


def test_cachelab_enqueue(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    queue = JobQueue(bench_rredis, "reports")
    first = arun(queue.enqueue(REPORT_JOB))
    bench_async(
        lambda: queue.enqueue(REPORT_JOB),
        group="peers-queue-enqueue",
        memory_key=queue.job_key(first),
        extra={"library": "cachelab", "fairness": OURS_QUEUE_FAIRNESS},
    )


def test_rq_job_cycle(bench_sync: Any, rq_queue: tuple[Any, Any]):
    """One job through RQ's worker loop body: dequeue, execute in-process, heartbeat."""
    queue, worker = rq_queue

    def cycle() -> Any:
        queue.enqueue("json.dumps", REPORT_JOB)
        job, job_queue = worker.dequeue_job_and_maintain_ttl(None)
        worker.execute_job(job, job_queue)
        worker.heartbeat()
        return job

    job = cycle()
    assert job.get_status() == "finished" and job.return_value() == json.dumps(REPORT_JOB)
    bench_sync(cycle, group="peers-queue-cycle", ops=50, extra={"library": "rq", "fairness": RQ_FAIRNESS})
    assert queue.count == 0


def test_cachelab_job_cycle(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    queue = JobQueue(bench_rredis, "reports")

    async def cycle() -> None:
        await queue.enqueue(REPORT_JOB)
        job = await queue.reserve("worker-1")
        assert job is not None
        assert await queue.ack(job, RESULT)

    arun(cycle())
    bench_async(
        cycle, group="peers-queue-cycle", extra={"library": "cachelab", "fairness": OURS_QUEUE_FAIRNESS}
    )
