"""Peers on the same server in the same run: cashews, aiocache, limits and RQ beside ours.

Optional: install the ``peers`` extra (``pip install -e ".[peers]"``); each
peer's rows skip cleanly when it is missing. Each peer runs on **its own
default client and pool**, as its users would run it (never on ours); ours
runs on the bench's :class:`ResilientRedis`. The peers' round trips and
commands are counted by :func:`cachelab.analysis.peers.counting` (a tally on
redis-py's connection classes that changes no pool), into the same counter as
ours, so the cost fields (round trips, server µs counted once) compare like
for like. What cannot be made equal is stated in each row's
``extra_info["fairness"]``.

These are one pytest-benchmark run per case, one after the other; for
verdicts between ours and a peer use ``cachelab peers`` (interleaved blocks,
per-block ratios with an interval), which these rows do not replace.

* ``peers-cache-hit`` / ``peers-cache-hit-3k5`` — a hit on a 0.7 KB and a
  3.5 KB dashboard JSON dict (the sizes the app caches), cycling over 1 000
  keys: ``Cache.fetch`` and ``Cache.get`` (orjson in an envelope; ``MGET`` of
  value + generation) against ``cashews`` and ``aiocache`` ``get`` (one
  ``GET``, JSON serializer).
* ``peers-ratelimit-allowed`` / ``peers-ratelimit-denied`` — the ``limits``
  package's async Redis storage (redis-py implementation, its own pool)
  against ours, for the three algorithms both have: fixed window, sliding log
  (``limits``: moving window) and sliding-window counter, over 1 000
  identifiers.
* ``peers-queue-enqueue`` / ``peers-queue-cycle`` — RQ's enqueue, and one job
  through RQ's own worker loop (enqueue, dequeue, execute in-process with
  ``SimpleWorker``, heartbeat), on a plain ``redis.Redis`` connection (RQ's
  default), against ours (enqueue; enqueue + reserve + ack).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from cachelab.analysis.peers import RATES, counting, cycle_keys
from cachelab.client import ResilientRedis, RoundTripCounter
from cachelab.harness.payloads import REPORT_JOB, dashboard_of_size
from cachelab.patterns.cache import Cache, CacheStatus
from cachelab.patterns.queue import JobQueue
from cachelab.patterns.ratelimit import create_limiter

# cashews and aiocache call redis-py methods it has deprecated (close, setex): their business, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated:DeprecationWarning")

#: The sizes of what the app caches (0.7-3.5 KB of dashboard JSON): the plain names are 0.7 KB.
VALUES = {"": dashboard_of_size(700), "_3k5": dashboard_of_size(3_500)}
KEYS = 1_000  # keys (rate limits: identifiers) cycled over, so no row is a single hot key
TENANT = "acme"


def _group(suffix: str) -> str:
    return "peers-cache-hit" + suffix.replace("_", "-")


@pytest.fixture
def peer_counted(bench_round_trips: RoundTripCounter) -> Iterator[RoundTripCounter]:
    """Count the peers' own clients into the bench's counter while a peer's benchmark runs."""
    with counting(into=bench_round_trips) as counter:
        yield counter


async def _fill(set_one: Any, keys: list[str]) -> None:
    for key in keys:
        await set_one(key)


# -- peers-cache-hit -------------------------------------------------------------------


def _ours_keys(cache: Cache, value: Any, arun: Any) -> Any:
    keys = [cache.key(TENANT, f"kpis-{i}") for i in range(KEYS)]
    arun(_fill(lambda key: cache.set(key, value), keys))
    return cycle_keys(keys)


OURS_FAIRNESS = "the bench's ResilientRedis (ClientOptions with longer timeouts); orjson in an envelope; "


def _cachelab_fetch_hit(suffix: str, bench_async: Any, bench_rredis: ResilientRedis, arun: Any) -> None:
    cache = Cache(bench_rredis, "kpi")
    key = _ours_keys(cache, VALUES[suffix], arun)
    assert arun(cache.fetch(key(), _never)).status is CacheStatus.HIT
    bench_async(
        lambda: cache.fetch(key(), _never),
        group=_group(suffix),
        memory_key=cache.key(TENANT, "kpis-0"),
        extra={"library": "cachelab", "keys": KEYS, "fairness": OURS_FAIRNESS + "MGET of value + "
               "generation; stampede protection, staleness and age decided on this read"},
    )  # fmt: skip


def _cachelab_get_hit(suffix: str, bench_async: Any, bench_rredis: ResilientRedis, arun: Any) -> None:
    cache = Cache(bench_rredis, "kpi")
    key = _ours_keys(cache, VALUES[suffix], arun)
    bench_async(
        lambda: cache.get(key()),
        group=_group(suffix),
        extra={"library": "cachelab", "keys": KEYS, "fairness": OURS_FAIRNESS + "MGET of value + generation"},
    )


def test_cachelab_fetch_hit(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    _cachelab_fetch_hit("", bench_async, bench_rredis, arun)


def test_cachelab_fetch_hit_3k5(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    _cachelab_fetch_hit("_3k5", bench_async, bench_rredis, arun)


def test_cachelab_get_hit(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    _cachelab_get_hit("", bench_async, bench_rredis, arun)


def test_cachelab_get_hit_3k5(bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    _cachelab_get_hit("_3k5", bench_async, bench_rredis, arun)


async def _never() -> Any:
    raise AssertionError("a hit must not load")


@pytest.fixture
def cashews_cache(redis_url: str, arun: Any) -> Iterator[Any]:
    cashews = pytest.importorskip("cashews")
    cache = cashews.Cache()
    # Its own default pool. JSON rather than cashews' default pickle: the same data format as the others.
    cache.setup(redis_url, pickle_type="json", client_side=False)
    yield cache
    arun(cache.close())


def _cashews_hit(suffix: str, bench_async: Any, cashews_cache: Any, arun: Any) -> None:
    value = VALUES[suffix]
    keys = [f"cashews:{TENANT}:kpis-{i}" for i in range(KEYS)]
    arun(_fill(lambda k: cashews_cache.set(k, value, expire=300), keys))
    assert arun(cashews_cache.get(keys[0])) == value
    key = cycle_keys(keys)
    bench_async(
        lambda: cashews_cache.get(key()),
        group=_group(suffix),
        memory_key=keys[0],
        extra={"library": "cashews", "keys": KEYS, "fairness": "its own default pool; pickle_type=json "
               "(stdlib json; cashews defaults to pickle); plain GET: no envelope, no generation, no "
               "stampede protection on this call"},
    )  # fmt: skip


def test_cashews_hit(bench_async: Any, cashews_cache: Any, arun: Any, peer_counted: Any):
    _cashews_hit("", bench_async, cashews_cache, arun)


def test_cashews_hit_3k5(bench_async: Any, cashews_cache: Any, arun: Any, peer_counted: Any):
    _cashews_hit("_3k5", bench_async, cashews_cache, arun)


@pytest.fixture
def aiocache_cache(redis_url: str, arun: Any) -> Iterator[Any]:
    aiocache = pytest.importorskip("aiocache")
    serializers = pytest.importorskip("aiocache.serializers")
    options = redis.connection.parse_url(redis_url)
    if "host" not in options or "port" not in options:
        pytest.skip("aiocache's RedisCache takes a host and a port, not this URL")
    cache = aiocache.RedisCache(  # its own default pool
        endpoint=options["host"],
        port=options["port"],
        db=options.get("db", 0),
        password=options.get("password"),
        serializer=serializers.JsonSerializer(),
    )
    yield cache
    arun(cache.close())


def _aiocache_hit(suffix: str, bench_async: Any, aiocache_cache: Any, arun: Any) -> None:
    value = VALUES[suffix]
    keys = [f"aiocache:{TENANT}:kpis-{i}" for i in range(KEYS)]
    arun(_fill(lambda k: aiocache_cache.set(k, value, ttl=300), keys))
    assert arun(aiocache_cache.get(keys[0])) == value
    key = cycle_keys(keys)
    bench_async(
        lambda: aiocache_cache.get(key()),
        group=_group(suffix),
        memory_key=keys[0],
        extra={"library": "aiocache", "keys": KEYS, "fairness": "its own default pool; JsonSerializer "
               "(stdlib json or ujson); plain GET: no envelope, no generation, no stampede protection "
               "on this call"},
    )  # fmt: skip


def test_aiocache_hit(bench_async: Any, aiocache_cache: Any, arun: Any, peer_counted: Any):
    _aiocache_hit("", bench_async, aiocache_cache, arun)


def test_aiocache_hit_3k5(bench_async: Any, aiocache_cache: Any, arun: Any, peer_counted: Any):
    _aiocache_hit("_3k5", bench_async, aiocache_cache, arun)


# -- peers-ratelimit -------------------------------------------------------------------

#: ours -> the ``limits`` strategy with the same semantics
LIMITS_STRATEGIES = {
    "fixed_window": "FixedWindowRateLimiter",
    "sliding_log": "MovingWindowRateLimiter",
    "sliding_window": "SlidingWindowCounterRateLimiter",
}
LIMITS_FAIRNESS = (
    "limits' async RedisStorage (implementation='redispy') on its own default pool; one EVALSHA per hit "
    "like ours, but it returns only a bool (ours also returns remaining/reset/retry-after) and stamps "
    "entries with the client's clock (ours reads the server's TIME)"
)


@pytest.fixture
def limits_storage(redis_url: str) -> Any:
    pytest.importorskip("limits")
    storage_mod = pytest.importorskip("limits.aio.storage")
    scheme, rest = redis_url.split("://", 1)
    return storage_mod.RedisStorage(f"async+{scheme}://{rest}", implementation="redispy")


def _limits_check(storage: Any, algorithm: str, rate: str) -> Any:
    import limits
    import limits.aio.strategies as strategies

    limiter = getattr(strategies, LIMITS_STRATEGIES[algorithm])(storage)
    item = limits.parse(rate)
    return lambda identifier: limiter.hit(item, identifier)


@pytest.mark.parametrize("algorithm", list(LIMITS_STRATEGIES))
@pytest.mark.parametrize("library", ["cachelab", "limits"])
@pytest.mark.parametrize("path", list(RATES))
def test_rate_check(
    path: str,
    library: str,
    algorithm: str,
    request: pytest.FixtureRequest,
    bench_async: Any,
    bench_rredis: ResilientRedis,
    arun: Any,
):
    limit, period, rate = RATES[path]
    identifiers = [f"203.0.{i // 256}.{i % 256}" for i in range(KEYS)]
    if library == "limits":
        check = _limits_check(request.getfixturevalue("limits_storage"), algorithm, rate)
        request.getfixturevalue("peer_counted")
        allowed: Any = bool
        fairness = LIMITS_FAIRNESS
    else:
        limiter = create_limiter(bench_rredis, algorithm, limit, period)

        def check(identifier: str) -> Any:
            return limiter.check(identifier)

        def allowed(result: Any) -> bool:
            return bool(result.allowed)

        fairness = ("the bench's ResilientRedis; one EVALSHA; decision on the server's clock; returns "
                    "remaining/reset/retry-after")
    if path == "denied":  # every identifier over its limit before timing

        async def use_up() -> None:
            for identifier in identifiers:
                for _ in range(limit):
                    assert allowed(await check(identifier))

        arun(use_up())
    assert allowed(arun(check(identifiers[0]))) is (path == "allowed")
    identifier = cycle_keys(identifiers)
    bench_async(
        lambda: check(identifier()),
        group=f"peers-ratelimit-{path}",
        extra={"library": library, "algorithm": algorithm, "limit": rate, "identifiers": KEYS,
               "fairness": fairness},
    )  # fmt: skip


# -- peers-queue -----------------------------------------------------------------------

RESULT = {"pages": 3}
RQ_FAIRNESS = (
    "RQ is synchronous (its default connection: a plain redis.Redis, timed with bench_sync) and pickles "
    "its jobs (ours: orjson; unpickling what Redis holds is code execution); its cycle is its own worker "
    "loop per job, which also keeps registries, heartbeats and a result record"
)
OURS_QUEUE_FAIRNESS = (
    "the bench's ResilientRedis; async; orjson; lease + ack, status record, counters, notify list"
)


@pytest.fixture
def rq_queue(redis_url: str, peer_counted: Any) -> Iterator[tuple[Any, Any]]:
    rq = pytest.importorskip("rq")
    connection = redis.Redis.from_url(redis_url)  # RQ's default: a plain redis.Redis, not ours
    queue = rq.Queue("reports", connection=connection)
    worker = rq.SimpleWorker([queue], connection=connection)
    worker.bootstrap(logging_level="WARNING")  # registers the worker once, as `rq worker` does
    yield queue, worker
    worker.teardown()
    connection.close()


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
