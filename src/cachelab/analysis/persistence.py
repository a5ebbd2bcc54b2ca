"""Notebook 08: what persistence costs the write paths, and what each mode loses on ``kill -9``.

The guide's Redis runs "AOF every write" (``appendfsync always``): every
acknowledged write is on disk, and every write waits for an ``fsync``. This
experiment measures that trade on real redis-servers (their data directories
on this machine's disk, not tmpfs), one per mode, all running at once:

* ``off`` — no AOF, no RDB (what the launcher starts by default);
* ``rdb`` — RDB snapshots during the load (``save 1 1``: a forked ``BGSAVE``
  every second while writes arrive, the most aggressive snapshot schedule);
* ``aof everysec`` — AOF, ``fsync`` once a second in a background thread;
* ``aof always`` — AOF, ``fsync`` before every reply (the guide's setting).

**Write cost.** The patterns' write paths — cache write-through
(``EVALSHA`` compare-and-set), rate-limit check (GCRA ``EVALSHA``), session
update (``EVALSHA``) and enqueue (``EVALSHA``) — each run for a short slot
from 1 and from many concurrent callers on one pooled client per server, the
modes taken in turn for every slot (:func:`measure_interleaved`).
Throughput and latency percentiles (HdrHistogram, µs) are compared with
``off`` measured side by side, because ratios survive a noisy machine and
absolute numbers do not. Redis groups the ``fsync`` of writes that arrive in
the same event-loop turn, so ``always`` costs less with many concurrent
writers than with one.

**Loss on kill -9.** One writer sets sequential keys and records which writes
were acknowledged; :meth:`~cachelab.servers.redis_server.RedisServer.kill`
SIGKILLs the server mid-stream (a fresh server per mode; the RDB one half a
second after its first snapshot completed, the middle of its one-second
cycle), :meth:`~.RedisServer.restart` replays whatever it persisted, and
every acknowledged key that is missing is lost.
A process crash is not a power loss: data ``write(2)``-n to the AOF but not
yet ``fsync``-ed survives a kill -9 in the kernel's page cache, so
``everysec`` loses little or nothing here; its up-to-one-second window applies
to a machine or kernel crash, which this experiment cannot cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cachelab.analysis.loops import off_loop
from cachelab.analysis.output import for_profile
from cachelab.client import ClientOptions, ResilientRedis
from cachelab.loadtest.histograms import LatencyHistogram
from cachelab.servers.redis_server import RedisServer, RedisServerConfig


@dataclass(frozen=True)
class Mode:
    """One persistence configuration."""

    name: str
    label: str
    config: RedisServerConfig


MODES: tuple[Mode, ...] = (
    Mode("off", "no persistence", RedisServerConfig()),
    Mode("rdb", "RDB snapshots (save 1 1)", RedisServerConfig(save="1 1")),
    Mode("aof_everysec", "AOF, fsync every second", RedisServerConfig(appendonly=True)),
    Mode(
        "aof_always",
        "AOF, fsync every write (the guide's)",
        RedisServerConfig(appendonly=True, appendfsync="always"),
    ),
)
PATHS: tuple[str, ...] = ("cache write-through", "rate-limit check", "session update", "enqueue")


@dataclass(frozen=True)
class PersistenceSizes:
    seconds: float  # measured per write path, mode and caller count
    max_ops: int  # ... or this many operations, whichever comes first
    callers: tuple[int, ...]  # concurrent callers: 1 waits for each fsync alone, many share one
    kill_after: float  # seconds of sequential writes before the kill (RDB: after its first snapshot)
    rounds: int = 1  # measurements per slot and mode; the median is kept
    sessions: int = 100
    value_bytes: int = 300


SIZES = {
    "quick": PersistenceSizes(seconds=0.08, max_ops=5_000, callers=(1, 16), kill_after=0.5, rounds=3),
    "full": PersistenceSizes(
        seconds=1.0, max_ops=100_000, callers=(1, 4, 16, 64), kill_after=0.5, rounds=3, sessions=1000
    ),
}


def sizes(profile: str) -> PersistenceSizes:
    return for_profile(SIZES, profile)


def describe(sz: PersistenceSizes) -> dict[str, Any]:
    return asdict(sz)


# -- write throughput ------------------------------------------------------------------------
WriteOp = Callable[[int], Awaitable[Any]]


async def write_paths(rr: ResilientRedis, sz: PersistenceSizes) -> dict[str, WriteOp]:
    """Each pattern's write path as ``op(i)``, set up (sessions created) on ``rr``."""
    from cachelab.patterns.cache import Cache, CachePolicy
    from cachelab.patterns.queue import JobQueue
    from cachelab.patterns.ratelimit import GCRALimiter
    from cachelab.patterns.sessions import SessionStore

    cache = Cache(rr, "initiative", CachePolicy(ttl=600))
    row = {"title": "x" * sz.value_bytes, "progress": 0}
    limiter = GCRALimiter(rr, 1_000_000_000, 60)
    store = SessionStore(rr, idle_timeout=1800, absolute_lifetime=12 * 3600)
    sessions = [(await store.create(str(n), {"role": "member"})).id for n in range(sz.sessions)]
    queue = JobQueue(rr, "persistence")
    await queue.check_eviction_policy()

    return {
        "cache write-through": lambda i: cache.write_through(
            cache.key(f"t{i % 10}", "row", i), {**row, "progress": i % 100}, i + 1
        ),
        "rate-limit check": lambda i: limiter.check(f"client-{i % 1000}"),
        "session update": lambda i: store.update(sessions[i % len(sessions)], {"last_page": i}),
        "enqueue": lambda i: queue.enqueue({"type": "report", "n": i}),
    }


async def run_ops(
    op: WriteOp, *, callers: int, seconds: float, max_ops: int
) -> tuple[int, float, LatencyHistogram]:
    """``op`` from ``callers`` concurrent callers for ``seconds`` (or ``max_ops`` calls).

    Returns (operations, elapsed seconds, latency histogram in µs).
    """
    hist = LatencyHistogram()
    counter = iter(range(max_ops))
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await op(i)
            done = time.perf_counter()
            hist.record_us((done - t0) * 1e6)
            if done > deadline:
                return

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return hist.count, time.perf_counter() - started, hist


async def measure_interleaved(urls: dict[str, str], sz: PersistenceSizes) -> list[dict[str, Any]]:
    """Every write path and caller count on every server (``mode -> url``), the modes taken in turn.

    All servers run at once and each measurement slot goes through every mode
    back to back (in alternating order on alternate rounds), so a drift in
    the machine's speed lands on all modes alike instead of on whichever mode
    happened to run during it.
    """
    options = ClientOptions(command_timeout=10, max_connections=128)
    clients = {mode: ResilientRedis.from_url(url, options=options) for mode, url in urls.items()}
    try:
        ops = {mode: await write_paths(rr, sz) for mode, rr in clients.items()}
        rows = []
        modes = list(urls)
        for path in PATHS:
            for mode in modes:  # scripts loaded, pools opened
                await run_ops(ops[mode][path], callers=max(sz.callers), seconds=0.03, max_ops=200)
            for callers in sz.callers:
                for round_ in range(sz.rounds):
                    for mode in modes if round_ % 2 == 0 else modes[::-1]:
                        n, elapsed, hist = await run_ops(
                            ops[mode][path], callers=callers, seconds=sz.seconds, max_ops=sz.max_ops
                        )
                        rows.append(
                            {
                                "mode": mode,
                                "path": path,
                                "callers": callers,
                                "ops": n,
                                "ops_per_s": round(n / elapsed, 1),
                                "p50_ms": hist.percentile_us(50) / 1000,
                                "p99_ms": hist.percentile_us(99) / 1000,
                            }
                        )
        return rows
    finally:
        for rr in clients.values():
            await rr.aclose()


# -- loss on kill -9 ---------------------------------------------------------------------------
@dataclass
class KillOutcome:
    """Acknowledged writes before the kill, and which of them a restart brought back."""

    acked: int
    present: int
    seconds: float = math.nan  # how long the writer ran before the kill

    @property
    def lost(self) -> int:
        return self.acked - self.present

    @property
    def lost_fraction(self) -> float:
        return self.lost / self.acked if self.acked else math.nan


def count_present(client: redis.Redis, acked: int, *, prefix: str = "seq:", batch: int = 1000) -> int:
    """How many of the keys ``prefix0 .. prefix{acked-1}`` exist (MGET in batches)."""
    present = 0
    for start in range(0, acked, batch):
        keys = [f"{prefix}{i}" for i in range(start, min(acked, start + batch))]
        present += sum(v is not None for v in client.mget(keys))
    return present


def _wait_for_snapshot(server: RedisServer, timeout: float = 30.0) -> None:
    """Block until an RDB snapshot holding at least one key has completed.

    Counting completed saves is not enough: on a loaded machine the first
    ``BGSAVE`` can fork before the writer's first reply, and a kill 0.5 s later
    would then find an empty snapshot and report every write lost. ``dbsize``
    minus the changes since the last save is the number of keys the snapshot
    holds (every write here creates a new key; before any save the two are
    equal).
    """
    client = server.client(socket_timeout=5)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # One MULTI, so no write lands between the two readings.
            info, keys = client.pipeline(transaction=True).info("persistence").dbsize().execute()
            saved_keys = keys - int(info.get("rdb_changes_since_last_save", 0))
            if saved_keys > 0 and info.get("rdb_last_bgsave_status") == "ok":
                return
            time.sleep(0.02)
    finally:
        client.close()
    raise TimeoutError(f"no RDB snapshot holding data completed within {timeout:.0f} s")


def kill_and_count(server: RedisServer, seconds: float, *, after_snapshot: bool = False) -> KillOutcome:
    """Write ``seq:<i>`` one by one, SIGKILL the server after ``seconds``, restart, count survivors.

    A write counts as acknowledged only once its reply arrived. The writer
    runs in a thread so the kill lands while writes are in flight, as a crash
    does; its last, unanswered write is not counted either way. With
    ``after_snapshot`` the ``seconds`` start when the first RDB snapshot has
    completed, so an RDB server is killed at a known point of its cycle.
    """
    acked = 0
    stop = threading.Event()

    def writer() -> None:
        nonlocal acked
        # No retries: a write that got no reply must not be re-sent and counted.
        client = server.client(socket_timeout=5, retry=Retry(NoBackoff(), 0))
        try:
            i = 0
            while not stop.is_set():
                client.set(f"seq:{i}", i)
                acked = i + 1
                i += 1
        except (redis.ConnectionError, redis.TimeoutError):
            pass  # the kill
        finally:
            client.close()

    thread = threading.Thread(target=writer, name="kill-writer", daemon=True)
    started = time.monotonic()
    thread.start()
    if after_snapshot:
        _wait_for_snapshot(server)
    time.sleep(seconds)
    server.kill()
    elapsed = time.monotonic() - started
    stop.set()
    thread.join(timeout=10)
    acknowledged = acked
    server.restart()
    client = server.client(socket_timeout=10)
    try:
        return KillOutcome(acknowledged, count_present(client, acknowledged), elapsed)
    finally:
        client.close()


# -- the experiment ----------------------------------------------------------------------------
def measure_kill(mode: Mode, sz: PersistenceSizes) -> dict[str, Any]:
    """One mode on a fresh server: sequential writes, kill -9, restart, count the acknowledged ones lost."""
    with RedisServer(mode.config) as server:
        outcome = kill_and_count(server, sz.kill_after, after_snapshot=bool(mode.config.save))
    return {
        "mode": mode.name,
        "label": mode.label,
        "acked": outcome.acked,
        "present_after_restart": outcome.present,
        "lost": outcome.lost,
        "lost_fraction": outcome.lost_fraction,
        "writer_seconds": round(outcome.seconds, 2),
        "acked_per_s": round(outcome.acked / outcome.seconds),
    }


def median_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (mode, path, callers): the median throughput and latencies over the rounds."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["mode"], r["path"], r["callers"]), []).append(r)
    out = []
    for group in groups.values():
        out.append(
            {
                **group[0],
                "rounds": len(group),
                "ops": sum(r["ops"] for r in group),
                **{k: statistics.median(r[k] for r in group) for k in ("ops_per_s", "p50_ms", "p99_ms")},
            }
        )
    return out


def with_ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with ``throughput_vs_off`` and ``p99_vs_off`` (no persistence, same path and callers)."""
    base = {(r["path"], r["callers"]): r for r in rows if r["mode"] == "off"}
    out = []
    for r in rows:
        ref = base.get((r["path"], r["callers"]))
        out.append(
            {
                **r,
                "throughput_vs_off": r["ops_per_s"] / ref["ops_per_s"] if ref else math.nan,
                "p99_vs_off": r["p99_ms"] / ref["p99_ms"] if ref and ref["p99_ms"] else math.nan,
            }
        )
    return out


def run(profile: str, modes: Sequence[Mode] = MODES) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every mode: (write rows with ratios to ``off``, one kill -9 row per mode)."""
    sz = sizes(profile)

    def go() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with contextlib.ExitStack() as stack:
            servers = {m.name: stack.enter_context(RedisServer(m.config)) for m in modes}
            rows = asyncio.run(measure_interleaved({name: s.url for name, s in servers.items()}, sz))
        labels = {m.name: m.label for m in modes}
        for row in rows:
            row["label"] = labels[row["mode"]]
        kills = [measure_kill(mode, sz) for mode in modes]
        return with_ratios(median_rows(rows)), kills

    return off_loop(go)


def mode_throughput(rows: Sequence[dict[str, Any]], callers: int) -> dict[str, float]:
    """Per mode, the geometric mean over the write paths of throughput relative to ``off``."""
    out: dict[str, float] = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        ratios = [
            r["throughput_vs_off"]
            for r in rows
            if r["mode"] == mode and r["callers"] == callers and r["throughput_vs_off"] > 0
        ]
        out[mode] = math.exp(sum(math.log(x) for x in ratios) / len(ratios)) if ratios else math.nan
    return out


# -- plots and summary -------------------------------------------------------------------------
def plot_throughput(frame: Any) -> Any:
    """Per caller count: throughput relative to no persistence (top) and p99 (bottom), per path and mode."""
    from matplotlib.figure import Figure

    callers = sorted(set(frame["callers"]))
    fig = Figure(figsize=(6 * len(callers), 8))
    axes = fig.subplots(2, len(callers), squeeze=False)
    modes = list(dict.fromkeys(frame["mode"]))
    paths = list(dict.fromkeys(frame["path"]))
    width = 0.8 / len(modes)
    for col, n in enumerate(callers):
        top, bottom = axes[0][col], axes[1][col]
        for k, mode in enumerate(modes):
            sub = frame[(frame["mode"] == mode) & (frame["callers"] == n)].set_index("path").reindex(paths)
            xs = [i + (k - (len(modes) - 1) / 2) * width for i in range(len(paths))]
            label = sub["label"].iloc[0]
            bars = top.bar(xs, sub["throughput_vs_off"], width, label=label)
            top.bar_label(bars, labels=[f"{v:.2f}" for v in sub["throughput_vs_off"]], fontsize=6)
            bottom.bar(xs, sub["p99_ms"], width, label=label)
        for ax in (top, bottom):
            ax.set_xticks(range(len(paths)), paths, fontsize=7)
        top.axhline(1.0, color="grey", lw=0.8)
        top.set_ylabel("write throughput ÷ no persistence")
        top.set_title(f"{n} concurrent caller{'s' if n > 1 else ''}: throughput (higher is better)")
        bottom.set_ylabel("p99 latency (ms)")
        bottom.set_title(f"{n} concurrent caller{'s' if n > 1 else ''}: p99 (lower is better)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("What persistence costs each write path (one server per mode, measured side by side)")
    fig.tight_layout()
    return fig


def plot_kill(kills: Any) -> Any:
    """Acknowledged writes lost on kill -9, per mode."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 3.8))
    ax = fig.subplots()
    colors = ["tab:red" if v else "tab:green" for v in kills["lost"]]
    bars = ax.bar(kills["label"], kills["lost"], color=colors)
    labels = [f"{lost} of {acked}" for lost, acked in zip(kills["lost"], kills["acked"], strict=True)]
    ax.bar_label(bars, labels=labels, fontsize=8)
    ax.set_ylabel("acknowledged writes missing after restart")
    ax.set_title("kill -9, then restart: what each mode lost")
    ax.tick_params(axis="x", labelsize=8)
    ax.margins(y=0.2)
    fig.tight_layout()
    return fig


def headlines(rows: Sequence[dict[str, Any]], kills: Sequence[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for n in sorted({r["callers"] for r in rows}):
        for mode, ratio in mode_throughput(rows, n).items():
            if mode != "off":
                out[f"write throughput vs off, {mode}, {n} caller{'s' if n > 1 else ''}"] = round(ratio, 3)
    for k in kills:
        out[f"acked writes lost on kill -9, {k['mode']}"] = k["lost"]
    return out


_LOSS_NOTES = {
    "off": "; nothing is persisted",
    "rdb": "; killed 0.5 s after a snapshot: everything written since it",
    "aof_everysec": "; a process crash keeps the page cache: a power loss can lose ~1 s more",
    "aof_always": "; fsync before every reply",
}


def capacity_rows(rows: Sequence[dict[str, Any]], kills: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The report's capacity rows: write throughput relative to no persistence, and kill -9 loss, per mode."""
    callers = sorted({r["callers"] for r in rows})
    ratios = {n: mode_throughput(rows, n) for n in callers}
    by_mode = {k["mode"]: k for k in kills}
    out = []
    for mode in MODES:
        if mode.name == "off" or mode.name not in ratios[callers[0]]:
            continue
        p99 = max(r["p99_ms"] for r in rows if r["mode"] == mode.name and r["callers"] == callers[-1])
        others = ", ".join(f"{n} callers {ratios[n][mode.name]:.2f}×" for n in callers[1:])
        out.append(
            {
                "row": f"Write throughput, {mode.label}",
                "value": round(ratios[callers[0]][mode.name], 2),
                "unit": "× no persistence",
                "note": f"{callers[0]} caller (geometric mean of 4 write paths); {others}; "
                f"worst p99 at {callers[-1]} callers {p99:.2f} ms",
            }
        )
    for mode in MODES:
        k = by_mode.get(mode.name)
        if k is not None:
            out.append(
                {
                    # A share, not a count: each mode's kill lands after a different number of writes.
                    "row": f"Acknowledged writes lost on kill -9, {mode.label}",
                    "value": round(100 * k["lost"] / k["acked"], 1) if k["acked"] else None,
                    "unit": "% of acknowledged",
                    "note": f"{k['lost']} of {k['acked']} acknowledged before the kill"
                    + _LOSS_NOTES.get(mode.name, ""),
                }
            )
    return out


def findings(rows: Sequence[dict[str, Any]], kills: Sequence[dict[str, Any]]) -> str:
    """What this run measured, in sentences (Markdown), so the notebook's text quotes real numbers."""
    callers = sorted({r["callers"] for r in rows})
    ratios = {n: mode_throughput(rows, n) for n in callers}
    labels = {m.name: m.label for m in MODES}
    lines = []
    for mode in MODES:
        if mode.name == "off" or mode.name not in ratios[callers[0]]:
            continue
        per = ", ".join(f"{ratios[n][mode.name]:.2f}× with {n} caller{'s' if n > 1 else ''}" for n in callers)
        lines.append(f"- **{mode.label}**: write throughput {per} (against no persistence, same run).")
    off = next((k for k in kills if k["mode"] == "off"), None)
    for k in kills:
        speed = f" (sequential writer: {k['acked_per_s']:,} acknowledged writes/s"
        speed += f" vs {off['acked_per_s']:,}/s without persistence)" if off and k is not off else ")"
        lines.append(
            f"- **kill -9, {labels.get(k['mode'], k['mode'])}**: {k['lost']:,} of {k['acked']:,} "
            f"acknowledged writes missing after restart{speed}."
        )
    return "\n".join(lines)
