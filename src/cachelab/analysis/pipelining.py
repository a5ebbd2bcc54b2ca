"""Notebook 02: what pipelining buys — throughput and latency against batch size.

One private redis-server, one 100-byte value, GET sent ``batch`` at a time:

* **sync** (``redis.Redis``) and **async** (``redis.asyncio.Redis``) clients,
  built by :mod:`cachelab.client` exactly as the patterns build theirs;
* a plain pipeline (one round trip, commands independent) and a
  ``MULTI``/``EXEC`` transaction (one round trip, the server queues the
  commands and runs them atomically);
* ``sequential``: no pipeline at all, one command per round trip — the
  reference every batch is compared with;
* ``redis-benchmark -P <batch> -c 1`` on the same server: the C client's
  ceiling, i.e. what is left for Python to win back.

Per configuration: commands per second (over every batch), client time per
command, the caller's wait per batch (p50/p99 — batching trades this for
throughput), and the server's own microseconds per command and round trips
per command from :class:`~cachelab.harness.cost.CostMeter`, and the server
process's CPU per command (``INFO cpu``) — commandstats time excludes the
socket reads and writes, which are what pipelining saves the server.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from cachelab.analysis.loops import run_async
from cachelab.analysis.output import for_profile, percentiles
from cachelab.client import ClientOptions, RoundTripCounter, create_async_client, create_sync_client
from cachelab.harness.cost import CostMeter
from cachelab.harness.payloads import value_of_size
from cachelab.patterns.keys import make_key
from cachelab.servers.redis_server import RedisServer

KEY = make_key("bench", "pipeline", "k")
BENCHMARK_KEY = "key:__rand_int__"  # what redis-benchmark's GET reads when -r is not given
OPTIONS = ClientOptions(command_timeout=10.0, connect_timeout=5.0)


@dataclass(frozen=True)
class PipelineSizes:
    batches: tuple[int, ...]
    commands: int  # per configuration and repeat
    repeats: int  # the median repeat is reported
    value_bytes: int = 100
    benchmark_commands: int = 20_000


SIZES = {
    "quick": PipelineSizes(batches=(1, 10, 100, 1000), commands=2000, repeats=3),
    "full": PipelineSizes(
        batches=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), commands=20_000, repeats=5,
        benchmark_commands=100_000,
    ),
}


def sizes(profile: str) -> PipelineSizes:
    return for_profile(SIZES, profile)


def server_cpu_seconds(admin: redis.Redis) -> float:
    """The server process's CPU time so far (``INFO cpu``: user + system)."""
    info = admin.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _summarise(
    client: str, mode: str, batch: int, batch_seconds: Sequence[float], cost: Any, rt: int, cpu: float
) -> dict[str, Any]:
    commands = batch * len(batch_seconds)
    total = sum(batch_seconds)
    lat = percentiles([s * 1000 for s in batch_seconds], (50, 99))
    return {
        "client": client,
        "mode": mode,
        "batch": batch,
        "commands": commands,
        "commands_per_s": commands / total if total else float("nan"),
        "client_us_per_command": total / commands * 1e6,
        "batch_p50_ms": lat["p50"],
        "batch_p99_ms": lat["p99"],
        "server_us_per_command": cost.server_usec / commands if cost else float("nan"),
        "server_cpu_us_per_command": cpu / commands * 1e6,
        "round_trips_per_command": rt / commands,
        "server_commands_per_command": cost.total_commands / commands if cost else float("nan"),
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The repeat with the median throughput (keeps its own latencies and costs together)."""
    ordered = sorted(runs, key=lambda r: r["commands_per_s"])
    best = dict(ordered[len(ordered) // 2])
    best["commands_per_s_spread"] = (
        statistics.pstdev(r["commands_per_s"] for r in runs) / best["commands_per_s"] if len(runs) > 1 else 0
    )
    return best


def _rounds(batch: int, commands: int) -> int:
    return max(2, commands // batch)


def _sync_series(url: str, sz: PipelineSizes, meter_url: str) -> list[dict[str, Any]]:
    counter = RoundTripCounter()
    client = create_sync_client(url, OPTIONS, counter)
    meter = CostMeter(meter_url, counter)
    admin = redis.Redis.from_url(meter_url)
    rows: list[dict[str, Any]] = []
    try:
        client.get(KEY)  # connect outside the measurement

        def measure(mode: str, batch: int, step: Callable[[], Any]) -> None:
            runs = []
            for _ in range(sz.repeats):
                seconds = []
                rt0, cpu0 = counter.value, server_cpu_seconds(admin)
                with meter.measure() as cost:
                    for _ in range(_rounds(batch, sz.commands)):
                        began = time.perf_counter()
                        step()
                        seconds.append(time.perf_counter() - began)
                cpu = server_cpu_seconds(admin) - cpu0
                runs.append(_summarise("sync", mode, batch, seconds, cost, counter.value - rt0, cpu))
            rows.append(_median_run(runs))

        measure("sequential", 1, lambda: client.get(KEY))
        for batch in sz.batches:
            for transaction in (False, True):

                def step(batch: int = batch, transaction: bool = transaction) -> None:
                    pipe = client.pipeline(transaction=transaction)
                    for _ in range(batch):
                        pipe.get(KEY)
                    pipe.execute()

                measure("multi_exec" if transaction else "pipeline", batch, step)
    finally:
        meter.close()
        admin.close()
        client.close()
    return rows


async def _async_series(url: str, sz: PipelineSizes, meter_url: str) -> list[dict[str, Any]]:
    counter = RoundTripCounter()
    client = create_async_client(url, OPTIONS, counter)
    meter = CostMeter(meter_url, counter)
    admin = redis.Redis.from_url(meter_url)
    rows: list[dict[str, Any]] = []
    try:
        await client.get(KEY)

        async def measure(mode: str, batch: int, step: Callable[[], Any]) -> None:
            runs = []
            for _ in range(sz.repeats):
                seconds = []
                rt0, cpu0 = counter.value, server_cpu_seconds(admin)
                with meter.measure() as cost:
                    for _ in range(_rounds(batch, sz.commands)):
                        began = time.perf_counter()
                        await step()
                        seconds.append(time.perf_counter() - began)
                cpu = server_cpu_seconds(admin) - cpu0
                runs.append(_summarise("async", mode, batch, seconds, cost, counter.value - rt0, cpu))
            rows.append(_median_run(runs))

        await measure("sequential", 1, lambda: client.get(KEY))
        for batch in sz.batches:
            for transaction in (False, True):

                async def step(batch: int = batch, transaction: bool = transaction) -> None:
                    pipe = client.pipeline(transaction=transaction)
                    for _ in range(batch):
                        pipe.get(KEY)
                    await pipe.execute()

                await measure("multi_exec" if transaction else "pipeline", batch, step)
    finally:
        meter.close()
        admin.close()
        await client.aclose()
    return rows


def redis_benchmark_binary() -> str | None:
    return shutil.which("redis-benchmark")


def _redis_benchmark(server: RedisServer, sz: PipelineSizes, binary: str) -> list[dict[str, Any]]:
    rows = []
    for batch in sz.batches:
        n = max(sz.benchmark_commands, batch * 20)
        out = subprocess.run(
            [binary, "-h", server.host, "-p", str(server.port), "-t", "get", "-n", str(n), "-P", str(batch),
             "-c", "1", "-d", str(sz.value_bytes), "--csv"],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout
        line = next(ln for ln in out.splitlines() if ln.startswith('"GET'))
        rps = float(line.split(",")[1].strip('"'))
        rows.append({"client": "redis-benchmark", "mode": "pipeline", "batch": batch, "commands": n,
                     "commands_per_s": rps, "client_us_per_command": 1e6 / rps})
    return rows


def run(profile: str) -> list[dict[str, Any]]:
    """Every configuration of the profile on one private redis-server; one row each."""
    sz = sizes(profile)
    with RedisServer() as server:
        admin = redis.Redis.from_url(server.url)
        value = value_of_size(sz.value_bytes)
        admin.set(KEY, value)
        admin.set(BENCHMARK_KEY, value)
        admin.close()
        rows = _sync_series(server.url, sz, server.url)
        rows += run_async(lambda: _async_series(server.url, sz, server.url))
        binary = redis_benchmark_binary()
        if binary:
            rows += _redis_benchmark(server, sz, binary)
    return rows


# -- plots ---------------------------------------------------------------------
SERIES_STYLE = {
    ("sync", "pipeline"): ("tab:blue", "-", "o"),
    ("sync", "multi_exec"): ("tab:blue", "--", "s"),
    ("async", "pipeline"): ("tab:orange", "-", "o"),
    ("async", "multi_exec"): ("tab:orange", "--", "s"),
    ("redis-benchmark", "pipeline"): ("black", ":", "^"),
}


def _series(frame: Any) -> Any:
    return frame[frame["mode"] != "sequential"].groupby(["client", "mode"], sort=False)


def plot_throughput(frame: Any) -> Any:
    """Commands/s and client µs per command against batch size (log-log), sequential as references."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.8))
    ax1, ax2 = fig.subplots(1, 2)
    for (client, mode), group in _series(frame):
        color, ls, marker = SERIES_STYLE.get((client, mode), ("grey", "-", "."))
        label = f"{client} {mode.replace('_', '/')}"
        ax1.plot(group["batch"], group["commands_per_s"], ls=ls, marker=marker, color=color, label=label)
        ax2.plot(group["batch"], group["client_us_per_command"], ls=ls, marker=marker, color=color,
                 label=label)
    for _, row in frame[frame["mode"] == "sequential"].iterrows():
        color = SERIES_STYLE[(row["client"], "pipeline")][0]
        ax1.axhline(row["commands_per_s"], color=color, lw=0.8, alpha=0.6)
        ax1.annotate(f"{row['client']} sequential", (1, row["commands_per_s"]), fontsize=7, color=color,
                     xytext=(2, 2 if row["client"] == "sync" else -9), textcoords="offset points")
        ax2.axhline(row["client_us_per_command"], color=color, lw=0.8, alpha=0.6)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("commands per batch")
        ax.grid(alpha=0.3, which="both")
    ax1.set_ylabel("commands per second (one connection)")
    ax1.set_title("Throughput")
    ax2.set_ylabel("client µs per command")
    ax2.set_title("Time per command")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_latency_and_cost(frame: Any) -> Any:
    """The caller's wait per batch, and the server's µs per command (pipeline vs MULTI/EXEC)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5))
    ax1, ax2 = fig.subplots(1, 2)
    ours = frame[(frame["mode"] != "sequential") & (frame["client"] != "redis-benchmark")]
    for (client, mode), group in ours.groupby(["client", "mode"], sort=False):
        color, ls, marker = SERIES_STYLE[(client, mode)]
        label = f"{client} {mode.replace('_', '/')}"
        ax1.plot(group["batch"], group["batch_p50_ms"], ls=ls, marker=marker, color=color,
                 label=f"{label} p50")
        ax2.plot(group["batch"], group["server_cpu_us_per_command"], ls=ls, marker=marker, color=color,
                 label=label)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("commands per batch")
    ax1.set_ylabel("wait for the whole batch (ms)")
    ax1.set_title("What the caller waits: one batch")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3, which="both")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("commands per batch")
    ax2.set_ylabel("server CPU µs per GET (INFO cpu, user + sys)")
    ax2.set_title("Server CPU per command (reads and writes included)")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def findings(rows: Sequence[dict[str, Any]]) -> str:
    h = headlines(rows)
    batch = 100 if any(r["batch"] == 100 for r in rows) else max(r["batch"] for r in rows)
    lines = []
    for client in ("sync", "async"):
        key = f"{client} speed-up, pipeline of {batch} vs sequential"
        if key in h:
            multi = h[f"{client} MULTI/EXEC throughput vs pipeline, batch {batch}"]
            lines.append(
                f"- **{client}**: {h[f'{client} commands/s, sequential']:,} commands/s one at a time, "
                f"{h[f'{client} commands/s, pipeline of {batch}']:,} in pipelines of {batch} "
                f"({h[key]}×); MULTI/EXEC ran at {multi}× the plain pipeline's rate."
            )
    bench = h.get(f"redis-benchmark commands/s, -P {batch}")
    if bench:
        lines.append(
            f"- **redis-benchmark -P {batch} -c 1**: {bench:,} commands/s on the same server — the gap to "
            "Python is the client's own encoding and parsing, which pipelining cannot remove."
        )
    else:
        lines.append("- redis-benchmark was not found on PATH, so its series is missing.")
    cpu_seq = h.get("server CPU µs per GET, sequential")
    cpu_pipe = h.get(f"server CPU µs per GET, pipeline of {batch}")
    if cpu_seq is not None and cpu_pipe is not None:
        lines.append(
            f"- **Server CPU** per GET fell from {cpu_seq} µs (one per round trip) to {cpu_pipe} µs in "
            f"pipelines of {batch}: most of a lone command's cost is the socket read, write and wake-up."
        )
    return "\n".join(lines)


def headlines(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    def find(client: str, mode: str, batch: int) -> dict[str, Any] | None:
        return next((r for r in rows if (r["client"], r["mode"], r["batch"]) == (client, mode, batch)), None)

    out: dict[str, float] = {}
    batch = 100 if any(r["batch"] == 100 for r in rows) else max(r["batch"] for r in rows)
    for client in ("sync", "async"):
        seq, pipe, multi = find(client, "sequential", 1), find(client, "pipeline", batch), find(
            client, "multi_exec", batch)
        if seq and pipe:
            out[f"{client} commands/s, sequential"] = round(seq["commands_per_s"])
            out[f"{client} commands/s, pipeline of {batch}"] = round(pipe["commands_per_s"])
            out[f"{client} speed-up, pipeline of {batch} vs sequential"] = round(
                pipe["commands_per_s"] / seq["commands_per_s"], 1)
        if pipe and multi:
            out[f"{client} MULTI/EXEC throughput vs pipeline, batch {batch}"] = round(
                multi["commands_per_s"] / pipe["commands_per_s"], 2)
    bench = find("redis-benchmark", "pipeline", batch)
    if bench:
        out[f"redis-benchmark commands/s, -P {batch}"] = round(bench["commands_per_s"])
    seq = find("sync", "sequential", 1)
    pipe = find("sync", "pipeline", batch)
    if seq and pipe:
        out["server CPU µs per GET, sequential"] = round(seq["server_cpu_us_per_command"], 2)
        out[f"server CPU µs per GET, pipeline of {batch}"] = round(pipe["server_cpu_us_per_command"], 2)
    return out
