"""Microbenchmarks of async and sync code: per-operation times plus the server cost.

pytest-benchmark times a synchronous callable. Timing one ``await`` per call
would mostly time ``loop.run_until_complete`` and, with a fresh loop per test,
reconnecting; and a client-side time alone says nothing about what the Redis
server paid. So :class:`AsyncBench` / :class:`SyncBench`:

* run on ONE event loop for the whole session (redis.asyncio connections belong
  to the loop that opened them, so the pool stays warm across benchmarks);
* run a round of ``ops`` calls inside a single ``run_until_complete``, time
  rounds with ``benchmark.pedantic``, then divide every round by the number of
  logical operations in it (``ops * batch``). The reported min/median/mean/ops
  are therefore **per operation**, and the JSON's ``iterations`` field holds
  the operations per round, which is pytest-benchmark's own convention;
* before timing, run a separate, short pass (at most ``cost_ops`` operations,
  after one warm-up call, also in ``--benchmark-disable`` smoke mode) between
  :class:`CostMeter` snapshots (:func:`measure_cost`) and write the server
  cost per operation into ``benchmark.extra_info``:
  ``round_trips_per_op``, ``commands_per_op`` (what the client sent),
  ``inner_commands_per_op`` (what its scripts ran besides), ``server_usec_per_op``
  (counted once; ``server_usec_booked_per_op`` is INFO's double-counting sum),
  ``bytes_in_per_op``, ``bytes_out_per_op``, ``commands`` (per op, by name),
  ``keyspace_hits_per_op``/``keyspace_misses_per_op``, ``redis_version``,
  ``redis_target`` and, when a key is named, ``memory_per_key``.

The harness adds a call, a coroutine and a loop iteration per operation;
``bench/bench_harness.py`` runs an empty operation through it so readers can
subtract that. Nothing here imports pytest: the report reuses it.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import redis

from cachelab.client import redact_url
from cachelab.harness.cost import Cost, CostMeter
from cachelab.patterns.health import server_label

T = TypeVar("T")

AsyncOp = Callable[[], Awaitable[Any]]
SyncOp = Callable[[], Any]

COST_FIELDS = (
    "round_trips_per_op",
    "commands_per_op",
    "server_usec_per_op",
    "bytes_in_per_op",
    "bytes_out_per_op",
    "commands",
    "redis_version",
    "redis_target",
)


class BenchmarkLike(Protocol):
    """The parts of pytest-benchmark's ``benchmark`` fixture the harness uses."""

    disabled: bool
    group: str | None
    extra_info: dict[str, Any]

    def pedantic(self, target: Callable[..., Any], *, rounds: int = ..., iterations: int = ...) -> Any: ...


@dataclass(frozen=True)
class BenchTarget:
    """Which Redis a benchmark ran against: goes into every result so runs can be told apart."""

    address: str
    version: str

    @classmethod
    def probe(cls, url: str) -> BenchTarget:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            version = server_label(client.info("server"))
        finally:
            client.close()
        return cls(address=redact_url(url), version=version)


@dataclass(frozen=True)
class BenchConfig:
    """Round policy. ``max_time``/``min_rounds`` default to the benchmark fixture's own settings."""

    max_time: float | None = None
    min_rounds: int | None = None
    max_rounds: int = 100_000
    warmup_rounds: int = 1
    cost_ops: int = 200
    #: Scales every round's ``ops`` (and the cost pass): ``cachelab report --quick`` runs whole
    #: passes several times, and many short rounds serve it better than a few long ones.
    ops_scale: float = 1.0

    def scaled(self, ops: int) -> int:
        return max(1, round(ops * self.ops_scale))

    @classmethod
    def from_env(cls) -> BenchConfig:
        """``CACHELAB_BENCH_OPS_SCALE`` (a positive number; default 1)."""
        raw = os.environ.get("CACHELAB_BENCH_OPS_SCALE", "").strip()
        if not raw:
            return cls()
        try:
            scale = float(raw)
        except ValueError:
            scale = math.nan
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"CACHELAB_BENCH_OPS_SCALE must be a positive number, got {raw!r}")
        return cls(ops_scale=scale, cost_ops=max(20, round(200 * scale)))


def cost_info(cost: Cost, ops: int) -> dict[str, Any]:
    """A :class:`Cost` of ``ops`` operations as flat per-operation ``extra_info`` fields."""
    ops = max(ops, 1)
    info: dict[str, Any] = cost.per_op(ops)
    info["commands"] = {name: calls / ops for name, calls in sorted(cost.commands.items())}
    info["server_usec_by_command"] = {
        name: usec / ops for name, usec in sorted(cost.server_usec_by_command.items())
    }
    info["keyspace_hits_per_op"] = cost.keyspace_hits / ops
    info["keyspace_misses_per_op"] = cost.keyspace_misses / ops
    info["server_usec_counted_once"] = cost.counted_once
    info["cost_ops"] = ops
    return info


def memory_per_key(meter: CostMeter, key: str) -> int | None:
    """Bytes Redis attributes to one key at rest (``MEMORY USAGE``): the memory half of sizing."""
    return meter.memory_usage(key)


def _cost_calls(ops: int, batch: int, cost_ops: int) -> int:
    """Calls in the cost pass: no more than the round has, about ``cost_ops`` operations, at least one."""
    return max(1, min(ops, math.ceil(cost_ops / batch)))


def measure_cost(meter: CostMeter, run: Callable[[], Any]) -> Cost:
    """The server cost of ``run()`` (the meter re-measures its own INFO footprint first)."""
    with meter.measure() as cost:
        run()
    return cost


def measure_cost_async(
    loop: asyncio.AbstractEventLoop, op: AsyncOp, *, calls: int, meter: CostMeter, warm: bool = True
) -> Cost:
    """Run ``op`` ``calls`` times on ``loop`` and return the server cost.

    With ``warm``, one unmeasured call first: the first call may open a
    connection (HELLO, CLIENT SETINFO) or load a script, which is not the
    operation's cost.
    """

    async def run(n: int) -> None:
        for _ in range(n):
            await op()

    if warm:
        loop.run_until_complete(run(1))
    return measure_cost(meter, lambda: loop.run_until_complete(run(calls)))


def measure_cost_sync(op: SyncOp, *, calls: int, meter: CostMeter, warm: bool = True) -> Cost:
    """The synchronous twin of :func:`measure_cost_async`."""

    def run() -> None:
        for _ in range(calls):
            op()

    if warm:
        op()
    return measure_cost(meter, run)


def _per_op(benchmark: BenchmarkLike, logical_ops: int) -> bool:
    """Turn pytest-benchmark's per-round samples into per-operation ones, before it reports."""
    meta = getattr(benchmark, "stats", None)
    stats = getattr(meta, "stats", None)
    data = getattr(stats, "data", None)
    if not isinstance(data, list) or not hasattr(meta, "iterations"):
        return False
    data[:] = [d / logical_ops for d in data]
    meta.iterations = logical_ops  # type: ignore[union-attr]
    for cached in list(vars(stats)):
        if cached != "data":
            del vars(stats)[cached]  # drop any summary computed from the per-round data
    return True


class _Bench:
    #: Recorded as ``extra_info["floor"]``: the report divides each row that talks to Redis by the
    #: PING floor of the same client kind in the same trial (a blocking socket and an event loop
    #: wake differently), and a row with no round trips by the CPU floor.
    client_kind = "async"

    def __init__(
        self,
        *,
        meter: CostMeter | None = None,
        target: BenchTarget | None = None,
        config: BenchConfig | None = None,
    ) -> None:
        self.meter = meter
        self.target = target
        self.config = config or BenchConfig()

    def _rounds(self, benchmark: BenchmarkLike, round_seconds: float) -> int:
        max_time = self.config.max_time
        if max_time is None:
            max_time = float(getattr(benchmark, "_max_time", 0.3))
        min_rounds = self.config.min_rounds
        if min_rounds is None:
            min_rounds = int(getattr(benchmark, "_min_rounds", 5))
        rounds = math.ceil(max_time / max(round_seconds, 1e-9))
        return max(min_rounds, min(rounds, self.config.max_rounds))

    def _record(
        self,
        benchmark: BenchmarkLike,
        *,
        run_round: Callable[[], Any],
        measure: Callable[[int], Cost] | None,
        ops: int,
        batch: int,
        group: str | None,
        extra: dict[str, Any] | None,
        memory_key: str | None,
    ) -> dict[str, Any]:
        if ops < 1 or batch < 1:
            raise ValueError("ops and batch must be >= 1")
        if group is not None:
            benchmark.group = group
        logical = ops * batch
        info = benchmark.extra_info
        info.update({"ops_per_round": logical, "calls_per_round": ops, "batch": batch})
        info["floor"] = self.client_kind
        if self.target is not None:
            info["redis_version"] = self.target.version
            info["redis_target"] = self.target.address
        if measure is not None and self.meter is not None:
            calls = _cost_calls(ops, batch, self.config.cost_ops)
            info.update(cost_info(measure(calls), calls * batch))
            if memory_key is not None:
                info["memory_per_key"] = memory_per_key(self.meter, memory_key)
        if extra:
            info.update(extra)
        if benchmark.disabled:
            # Smoke mode: pytest-benchmark calls the target once, untimed.
            benchmark.pedantic(run_round, rounds=1, iterations=1)
            info["time_unit"] = "not measured"
            return info
        started = time.perf_counter()
        for _ in range(max(1, self.config.warmup_rounds)):
            run_round()
        round_seconds = (time.perf_counter() - started) / max(1, self.config.warmup_rounds)
        benchmark.pedantic(run_round, rounds=self._rounds(benchmark, round_seconds), iterations=1)
        info["time_unit"] = "op" if _per_op(benchmark, logical) else f"round of {logical} ops"
        return info


class AsyncBench(_Bench):
    """Benchmarks ``async`` operations on one long-lived event loop.

    ``bench(benchmark, lambda: client.get(key), ops=200, group="baseline")``
    times rounds of 200 awaited calls and reports per-call times; ``batch=b``
    says each call performs ``b`` logical operations (a pipeline of ``b``
    commands), so times and costs are per command.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        meter: CostMeter | None = None,
        target: BenchTarget | None = None,
        config: BenchConfig | None = None,
    ) -> None:
        super().__init__(meter=meter, target=target, config=config)
        self.loop = loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run setup or teardown code on the benchmark loop (where the clients' connections live)."""
        return self.loop.run_until_complete(coro)

    def __call__(
        self,
        benchmark: BenchmarkLike,
        op: AsyncOp,
        *,
        ops: int = 200,
        batch: int = 1,
        group: str | None = None,
        extra: dict[str, Any] | None = None,
        memory_key: str | None = None,
        cost: bool = True,
    ) -> dict[str, Any]:
        """Time ``op`` (a zero-argument function returning an awaitable); returns ``extra_info``."""
        loop = self.loop
        ops = self.config.scaled(ops)

        async def one_round() -> None:
            for _ in range(ops):
                await op()

        def run_round() -> None:
            loop.run_until_complete(one_round())

        def measure(calls: int) -> Cost:
            assert self.meter is not None
            return measure_cost_async(loop, op, calls=calls, meter=self.meter)

        return self._record(
            benchmark,
            run_round=run_round,
            measure=measure if cost else None,
            ops=ops,
            batch=batch,
            group=group,
            extra=extra,
            memory_key=memory_key,
        )


class SyncBench(_Bench):
    """The synchronous twin of :class:`AsyncBench` (redis-py sync client, serializers)."""

    client_kind = "sync"

    def __call__(
        self,
        benchmark: BenchmarkLike,
        op: SyncOp,
        *,
        ops: int = 200,
        batch: int = 1,
        group: str | None = None,
        extra: dict[str, Any] | None = None,
        memory_key: str | None = None,
        cost: bool = True,
    ) -> dict[str, Any]:
        """Time ``op`` (a zero-argument function); returns ``extra_info``."""
        ops = self.config.scaled(ops)

        def run_round() -> None:
            for _ in range(ops):
                op()

        def measure(calls: int) -> Cost:
            assert self.meter is not None
            return measure_cost_sync(op, calls=calls, meter=self.meter)

        return self._record(
            benchmark,
            run_round=run_round,
            measure=measure if cost else None,
            ops=ops,
            batch=batch,
            group=group,
            extra=extra,
            memory_key=memory_key,
        )


def bench_async(
    benchmark: BenchmarkLike,
    op: AsyncOp,
    *,
    loop: asyncio.AbstractEventLoop,
    meter: CostMeter | None = None,
    target: BenchTarget | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """One-shot form of :class:`AsyncBench` (same keyword arguments as its ``__call__``)."""
    return AsyncBench(loop, meter=meter, target=target)(benchmark, op, **kwargs)


def bench_sync(
    benchmark: BenchmarkLike,
    op: SyncOp,
    *,
    meter: CostMeter | None = None,
    target: BenchTarget | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """One-shot form of :class:`SyncBench`."""
    return SyncBench(meter=meter, target=target)(benchmark, op, **kwargs)
