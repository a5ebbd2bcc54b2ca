"""Notebook 10: three job queues side by side, and what a concurrency slot costs.

**Queues.** The list + lease queue (:class:`~cachelab.patterns.queue.JobQueue`),
the Streams consumer-group queue (:class:`~cachelab.patterns.stream_queue.StreamQueue`)
and RQ (if installed: the ``peers`` extra) each get, on a fresh private
redis-server:

* **enqueue** ``jobs`` report jobs one after another: client µs per job, and the
  server cost per job from :class:`~cachelab.harness.cost.CostMeter` (round
  trips, commands sent, server µs counted once);
* **drain** them with one worker loop, the way each one's worker does it —
  ours: ``ack_and_reserve`` (the job in hand acked and the next leased, one
  round trip) around a no-op handler; RQ: its ``SimpleWorker`` loop
  body (dequeue, execute in-process, heartbeat): jobs/s for one worker and the
  server cost per job;
* **memory per queued job**: ``used_memory`` grown by the queued jobs over their
  number (every structure a waiting job needs: job hash and sorted-set member;
  stream entry; RQ's job hash and list element);
* then the same with a **deep backlog** of ``deep`` jobs already queued (100 000
  in the full profile; the quick profile uses fewer and says so): memory per job
  at that depth, and the enqueue and drain cost of ``deep_sample`` jobs on top.

The three share one server (their keys are apart) and run in interleaved blocks
(``trials`` per depth, the order rotated each time), so a noisy moment of the
machine falls on all of them: round trips and commands are summed over the
blocks (they are exact), timed figures (client µs, jobs/s, server µs) are the
blocks' medians.

Our two queues are async (redis.asyncio), RQ is synchronous and pickles its
jobs, so client µs compare designs *and* client stacks; round trips, commands
and server µs do not depend on the client and are the robust comparison.

**Concurrency limiter.** ``limiter_ops`` acquire+release cycles of
:class:`~cachelab.patterns.concurrency.ConcurrencyLimiter` (two other slots
held), refused acquires on a full key, and the naive ``INCR``/``DECR`` pair it
replaces, beside a PING on the same connection.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from typing import Any

import redis

from cachelab.analysis.loops import run_async
from cachelab.analysis.output import for_profile
from cachelab.client import ClientOptions, ResilientRedis, RoundTripCounter, create_sync_client
from cachelab.harness.cost import CostMeter
from cachelab.harness.payloads import REPORT_JOB
from cachelab.patterns.concurrency import ConcurrencyLimiter, naive_acquire, naive_release
from cachelab.patterns.health import server_label
from cachelab.patterns.queue import JobQueue
from cachelab.patterns.stream_queue import StreamQueue
from cachelab.servers.redis_server import RedisServer

BACKENDS = ("list", "streams", "rq")
OPTIONS = ClientOptions(command_timeout=10.0, connect_timeout=5.0)
RESULT = {"pages": 3}


@dataclass(frozen=True)
class QueueSizes:
    jobs: int  # enqueued then drained from an empty queue, per backend
    deep: int  # backlog already queued for the deep rows
    deep_sample: int  # enqueued and drained on top of the deep backlog
    limiter_ops: int  # acquire+release cycles (and refused acquires, and naive pairs)
    trials: int = 5  # interleaved blocks per depth: timed figures are medians over them


SIZES = {
    "quick": QueueSizes(jobs=1000, deep=20_000, deep_sample=500, limiter_ops=1000),
    "full": QueueSizes(jobs=5000, deep=100_000, deep_sample=2000, limiter_ops=5000, trials=9),
}


def sizes(profile: str) -> QueueSizes:
    return for_profile(SIZES, profile)


def rq_available() -> bool:
    try:
        import rq  # noqa: F401
    except ImportError:
        return False
    return True


def _used_memory(admin: redis.Redis) -> int:
    return int(admin.info("memory")["used_memory"])


class _Backend:
    """One queue under test: enqueue ``n`` jobs, drain ``n`` jobs (one worker), and its meter."""

    def __init__(self, name: str, meter: CostMeter) -> None:
        self.name = name
        self.meter = meter

    async def enqueue(self, n: int) -> None:
        raise NotImplementedError

    async def drain(self, n: int) -> None:
        raise NotImplementedError

    async def fill(self, n: int) -> None:
        """Queue a backlog as fast as the queue allows (not measured per job)."""
        await self.enqueue(n)

    async def close(self) -> None:
        self.meter.close()


class _Ours(_Backend):
    def __init__(self, name: str, url: str) -> None:
        self.rr = ResilientRedis.from_url(url, options=OPTIONS)
        super().__init__(name, CostMeter(url, self.rr.round_trips))
        self.queue: JobQueue | StreamQueue = (JobQueue if name == "list" else StreamQueue)(self.rr, "reports")

    async def enqueue(self, n: int) -> None:
        for _ in range(n):
            await self.queue.enqueue(REPORT_JOB)

    async def fill(self, n: int) -> None:
        for start in range(0, n, 50):  # 50 enqueues in flight at a time
            await asyncio.gather(*(self.queue.enqueue(REPORT_JOB) for _ in range(min(50, n - start))))

    async def drain(self, n: int) -> None:
        # What Worker does, with a handler that does nothing: ack the job in hand and lease the next
        # in one round trip (ack_and_reserve), a plain ack for the last one.
        job = await self.queue.reserve("worker-1")
        for i in range(n):
            assert job is not None, "the backlog ran out"
            if i == n - 1:
                assert await self.queue.ack(job, RESULT)
            else:
                acked, job = await self.queue.ack_and_reserve(job, RESULT)
                assert acked

    async def close(self) -> None:
        await super().close()
        await self.rr.aclose()


class _RQ(_Backend):
    def __init__(self, url: str) -> None:
        import rq

        counter = RoundTripCounter()
        self.client = create_sync_client(url, OPTIONS, counter)
        super().__init__("rq", CostMeter(url, counter))
        self.queue = rq.Queue("reports", connection=self.client)
        self.worker = rq.SimpleWorker([self.queue], connection=self.client)
        self.worker.bootstrap(logging_level="WARNING")  # registers the worker once, as `rq worker` does
        self.data = rq.Queue.prepare_data("json.dumps", args=(REPORT_JOB,))

    async def enqueue(self, n: int) -> None:
        for _ in range(n):
            self.queue.enqueue("json.dumps", REPORT_JOB)

    async def fill(self, n: int) -> None:
        for start in range(0, n, 1000):  # RQ's own pipelined bulk enqueue
            self.queue.enqueue_many([self.data] * min(1000, n - start))

    async def drain(self, n: int) -> None:
        for _ in range(n):  # SimpleWorker's loop body; dequeue blocks on an empty queue, n is known
            job, job_queue = self.worker.dequeue_job_and_maintain_ttl(None)
            self.worker.execute_job(job, job_queue)
            self.worker.heartbeat()

    async def close(self) -> None:
        self.worker.teardown()
        await super().close()
        self.client.close()


async def _trial(backend: _Backend, depth: int, n: int, admin: redis.Redis) -> list[dict[str, Any]]:
    rows = []
    for phase in ("enqueue", "drain"):
        before = _used_memory(admin)
        with backend.meter.measure() as cost:
            began = time.perf_counter()
            await (backend.enqueue(n) if phase == "enqueue" else backend.drain(n))
            seconds = time.perf_counter() - began
        rows.append({
            "backend": backend.name, "depth": depth, "phase": phase, "jobs": n, "seconds": seconds,
            "round_trips": cost.round_trips, "commands": cost.total_commands, "server_us": cost.server_usec,
            "memory_delta": _used_memory(admin) - before,
        })
    return rows


async def _queues(url: str, sz: QueueSizes, admin: redis.Redis, with_rq: bool) -> list[dict[str, Any]]:
    """Interleaved trials (A B C, B C A, ...) of every backend, from empty and then on a deep backlog."""
    backends: list[_Backend] = [_Ours("list", url), _Ours("streams", url)]
    if with_rq:
        backends.append(_RQ(url))
    rows: list[dict[str, Any]] = []
    try:
        for b in backends:  # scripts, the group, the RQ worker, the pools' connections: not measured
            await b.fill(50)
            await b.drain(50)
        for depth, total in ((0, sz.jobs), (sz.deep, sz.deep_sample)):
            if depth:
                for b in backends:
                    before = _used_memory(admin)
                    await b.fill(depth)
                    rows.append({"backend": b.name, "depth": depth, "phase": "backlog", "jobs": depth,
                                 "memory_delta": _used_memory(admin) - before})
            batch = max(1, total // sz.trials)
            for t in range(sz.trials):
                for b in backends[t % len(backends):] + backends[:t % len(backends)]:
                    rows += await _trial(b, depth, batch, admin)
    finally:
        for b in backends:
            await b.close()
    return rows


def phase_rows(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per backend, depth and phase: exact costs summed over the trials, timed ones as medians."""
    out = []
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in trials:
        if r["phase"] != "backlog":
            groups.setdefault((r["backend"], r["depth"], r["phase"]), []).append(r)
    backlog = {(r["backend"], r["depth"]): r for r in trials if r["phase"] == "backlog"}
    for (backend, depth, phase), rs in groups.items():
        n = sum(r["jobs"] for r in rs)
        row = {
            "backend": backend, "depth": depth, "phase": phase, "jobs": n, "trials": len(rs),
            "round_trips_per_job": sum(r["round_trips"] for r in rs) / n,
            "commands_per_job": sum(r["commands"] for r in rs) / n,
            "server_us_per_job": statistics.median(r["server_us"] / r["jobs"] for r in rs),
            "client_us_per_job": statistics.median(r["seconds"] / r["jobs"] * 1e6 for r in rs),
            "jobs_per_s": statistics.median(r["jobs"] / r["seconds"] for r in rs),
        }
        if phase == "enqueue":
            row["bytes_per_queued_job"] = (
                backlog[backend, depth]["memory_delta"] / depth if depth
                else statistics.median(r["memory_delta"] / r["jobs"] for r in rs)
            )
        out.append(row)
    return out


# -- the concurrency limiter -------------------------------------------------------------------
async def _limiter(url: str, sz: QueueSizes) -> list[dict[str, Any]]:
    rr = ResilientRedis.from_url(url, options=OPTIONS)
    meter = CostMeter(url, rr.round_trips)
    rows = []
    try:
        await rr.client.ping()
        began = time.perf_counter()
        for _ in range(sz.limiter_ops):
            await rr.client.ping()
        ping_us = (time.perf_counter() - began) / sz.limiter_ops * 1e6
        limiter = ConcurrencyLimiter(rr, 5, lease_seconds=30, name="reports")
        held = [await limiter.acquire("acme") for _ in range(2)]  # two other requests in flight
        full = ConcurrencyLimiter(rr, 5, lease_seconds=300, name="full")
        for _ in range(5):
            await full.acquire("acme")
        await limiter.release(await limiter.acquire("acme"))  # scripts loaded
        await full.try_acquire("acme")

        async def cycle() -> None:
            await limiter.release(await limiter.acquire("acme"))

        async def refused() -> None:
            assert not (await full.try_acquire("acme")).acquired

        async def naive() -> None:
            assert await naive_acquire(rr, "acme", 5)
            await naive_release(rr, "acme")

        for variant, op in (("acquire+release", cycle), ("refused acquire", refused),
                            ("naive INCR+DECR (leaks on crash)", naive)):
            with meter.measure() as cost:
                began = time.perf_counter()
                for _ in range(sz.limiter_ops):
                    await op()
                client_us = (time.perf_counter() - began) / sz.limiter_ops * 1e6
            n = sz.limiter_ops
            rows.append({
                "variant": variant,
                "ops": n,
                "round_trips_per_op": cost.round_trips / n,
                "commands_per_op": cost.total_commands / n,
                "server_us_per_op": cost.server_usec / n,
                "client_us_per_op": client_us,
                "client_us_ping": ping_us,
                "ratio_to_ping": client_us / ping_us,
            })
        rows[0]["bytes_per_key_5_slots"] = meter.memory_usage(full.key("acme"))
        for lease in held:
            await limiter.release(lease)
    finally:
        meter.close()
        await rr.aclose()
    return rows


def run(profile: str) -> dict[str, Any]:
    """The queues' interleaved trials, then the limiter, on one private redis-server."""
    sz = sizes(profile)
    with RedisServer() as server:
        admin = server.client()
        try:
            version = server_label(admin.info("server"))  # "Valkey 8.1.8", not its redis_version
            trials = run_async(lambda: _queues(server.url, sz, admin, rq_available()))
            admin.flushdb()
            limiter = run_async(lambda: _limiter(server.url, sz))
        finally:
            admin.close()
    return {"queues": phase_rows(trials), "trials": trials, "limiter": limiter, "redis_version": version,
            "rq": rq_available()}


# -- the table, plots, findings ---------------------------------------------------------------
def queue_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per backend and depth: enqueue and drain side by side (the notebook's table)."""
    out = []
    keyed = {(r["backend"], r["depth"], r["phase"]): r for r in rows}
    for backend, depth in dict.fromkeys((r["backend"], r["depth"]) for r in rows):
        e, d = keyed[backend, depth, "enqueue"], keyed[backend, depth, "drain"]
        out.append({
            "backend": backend,
            "queued before": depth,
            "enqueue µs/job (client)": e["client_us_per_job"],
            "drain µs/job (client)": d["client_us_per_job"],
            "drain jobs/s (1 worker)": d["jobs_per_s"],
            "round trips/job": e["round_trips_per_job"] + d["round_trips_per_job"],
            "commands/job": e["commands_per_job"] + d["commands_per_job"],
            "server µs/job": e["server_us_per_job"] + d["server_us_per_job"],
            "bytes/queued job": e["bytes_per_queued_job"],
        })
    return out


def plot_queues(table: Any) -> Any:
    """Four panels: server µs, round trips and bytes per job, and drain rate, per backend and depth."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 7))
    axes = fig.subplots(2, 2).ravel()
    backends = list(dict.fromkeys(table["backend"]))
    depths = list(dict.fromkeys(table["queued before"]))
    x = np.arange(len(backends))
    width = 0.8 / len(depths)
    panels = (
        ("server µs/job", "server µs per job (enqueue + drain)", "{:.0f}"),
        ("round trips/job", "round trips per job (enqueue + drain)", "{:.1f}"),
        ("drain jobs/s (1 worker)", "jobs/s drained by one worker", "{:.0f}"),
        ("bytes/queued job", "bytes of Redis memory per queued job", "{:.0f}"),
    )
    for ax, (column, title, fmt) in zip(axes, panels, strict=True):
        for i, depth in enumerate(depths):
            part = table[table["queued before"] == depth].set_index("backend").reindex(backends)
            bars = ax.bar(x + (i - (len(depths) - 1) / 2) * width, part[column], width,
                          label=f"{depth:,} already queued" if depth else "empty queue")
            ax.bar_label(bars, labels=[fmt.format(v) for v in part[column]], fontsize=7)
        ax.set_xticks(x, backends)
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.15)
    axes[0].legend(fontsize=8)
    fig.suptitle("List + lease queue, Streams consumer group, RQ: per job, on one redis-server", fontsize=11)
    fig.tight_layout()
    return fig


def plot_limiter(limiter: Any) -> Any:
    """Server µs and client µs (with the PING floor) per operation of the concurrency limiter."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.6))
    axes = fig.subplots(1, 2)
    x = np.arange(len(limiter))
    for ax, (column, title) in zip(axes, (("server_us_per_op", "server µs per op"),
                                          ("client_us_per_op", "client µs per op (dotted: PING)")),
                                   strict=True):
        bars = ax.bar(x, limiter[column], color="tab:purple" if column.startswith("server") else "tab:blue")
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in limiter[column]], fontsize=7)
        ax.set_xticks(x, limiter["variant"], rotation=15, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.15)
    axes[1].axhline(float(limiter["client_us_ping"].iloc[0]), color="black", ls=":", lw=1)
    fig.tight_layout()
    return fig


def findings(result: dict[str, Any], sz: QueueSizes) -> str:
    table = {(r["backend"], r["queued before"]): r for r in queue_table(result["queues"])}
    lines = []
    for backend in dict.fromkeys(b for b, _ in table):
        empty, deep = table[backend, 0], table[backend, sz.deep]
        lines.append(
            f"- **{backend}**: {empty['round trips/job']:.2f} round trips, {empty['commands/job']:.1f} "
            f"commands and {empty['server µs/job']:.0f} server µs per job; one worker drains "
            f"{empty['drain jobs/s (1 worker)']:.0f} jobs/s; {empty['bytes/queued job']:.0f} bytes per "
            f"queued job ({deep['bytes/queued job']:.0f} with {sz.deep:,} queued, where enqueue+drain cost "
            f"{deep['server µs/job']:.0f} server µs per job)."
        )
    if not result["rq"]:
        lines.append("- **rq**: not installed here (`pip install -e \".[peers]\"`), so not measured.")
    c = {r["variant"]: r for r in result["limiter"]}
    cycle = c["acquire+release"]
    lines.append(
        f"- **Concurrency limiter**: acquire+release is {cycle['round_trips_per_op']:.0f} round trips, "
        f"{cycle['server_us_per_op']:.1f} server µs and {cycle['ratio_to_ping']:.1f}× a PING on the client; "
        f"a refused acquire {c['refused acquire']['server_us_per_op']:.1f} µs; the naive INCR+DECR "
        f"{c['naive INCR+DECR (leaks on crash)']['server_us_per_op']:.1f} µs — cheaper, and wrong after "
        f"a crash. A key with 5 slots taken holds {cycle.get('bytes_per_key_5_slots') or 0:.0f} bytes."
    )
    if sz.deep < 100_000:
        lines.append(f"- This is the **quick** profile: the deep rows use {sz.deep:,} queued jobs, not "
                     "100 000 (run the full profile for that).")
    return "\n".join(lines)


def headlines(result: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in queue_table(result["queues"]):
        if row["queued before"]:
            out[f"bytes per queued job at {row['queued before']:,} queued, {row['backend']}"] = round(
                row["bytes/queued job"], 1)
            continue
        b = row["backend"]
        out[f"drain jobs/s per worker, {b}"] = round(row["drain jobs/s (1 worker)"], 1)
        out[f"server µs per job, {b}"] = round(row["server µs/job"], 2)
        out[f"round trips per job, {b}"] = round(row["round trips/job"], 3)
    cycle = result["limiter"][0]
    out["concurrency limiter server µs per acquire+release"] = round(cycle["server_us_per_op"], 2)
    out["concurrency limiter round trips per acquire+release"] = round(cycle["round_trips_per_op"], 3)
    return out
