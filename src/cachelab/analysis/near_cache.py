"""Notebook 11: the near cache — what an in-process L1 kept coherent by Redis buys, and what it risks.

One deployment of the sample app, two processes on one redis-server and one SQLite
database, behind the TCP fault proxy of notebook 09
(:class:`~cachelab.analysis.network_distance.ProxyProcess`): process **on** runs with
``CACHELAB_NEAR_CACHE=on``, process **off** without. They share Redis and the
database as two workers of one app would, so a write through either must reach the
other's reads. Both get the same load, in interleaved trials (off, on, on, off, …,
so a drift of the machine favours neither), at each added round-trip time: loopback
(the proxy, +0 ms), +5 ms and (full profile) +20 ms.

**The load** is the dashboard mix with editors writing: a closed loop of HTTP
clients, each request logged in (session check and rate limits on every one),
reading a tenant's KPIs, its areas, the tenant list, a user's dashboard and an
initiative row, plus ``/api/me``; a share of requests (``write_share``) are an
admin's ``PATCH`` of an initiative, which invalidates that tenant's KPIs, areas,
dashboards (a tag) and list pages for every process. Per request the app reports
its exact cost in ``X-Request-Cost`` (Redis round trips and commands, SQL
statements) and how it was served in ``X-Cache``: ``HIT-L1``/``STALE-L1`` (the
L1), ``HIT``/``STALE`` (Redis), ``MISS``/``BYPASS`` (the database). Redis's own
count (INFO commandstats, read on the server, not through the proxy; commands run
inside scripts included) is kept beside the client's.

**The staleness window** is measured between the two processes: an admin PATCHes
an initiative's status through process *off*; clients of process *on* read the
KPIs in a loop. A read *sent after the PATCH was acknowledged* that still shows
the old count is stale; per write we keep when the last stale read was sent and
when the first fresh one arrived (both counted from the acknowledgement; the
latter includes the read's own time, often a miss that runs the KPI query).
The L1's memory is process *on*'s ``cachelab_near_cache_bytes`` (entry bytes plus
the per-entry overhead measured with tracemalloc, see
:mod:`cachelab.patterns.near_cache`).
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import redis

from cachelab.analysis.loops import off_loop
from cachelab.analysis.network_distance import ProxyProcess
from cachelab.analysis.output import for_profile, percentiles
from cachelab.app.serve import prepare_database
from cachelab.harness.app_client import alogin, cookie_header, first_account, tenant_ids
from cachelab.harness.app_server import AppServer
from cachelab.loadtest.histograms import LatencyHistogram
from cachelab.request_cost import parse_header
from cachelab.servers.redis_server import RedisServer

APP_ENV = {
    "CACHELAB_RATE_LIMIT": "100000000/60s",
    "CACHELAB_LOGIN_RATE_LIMIT_IP": "100000000/60s",
    "CACHELAB_LOGIN_RATE_LIMIT_ACCOUNT": "100000000/60s",
    "CACHELAB_CACHE_MODE": "cache-aside",
    "CACHELAB_COST_HEADER": "on",
}
MODES = ("off", "on")
L1_STATUSES = ("HIT-L1", "STALE-L1")
REDIS_STATUSES = ("HIT", "STALE")
DB_STATUSES = ("MISS", "BYPASS")
READ_KINDS = {"kpis": 3, "dashboard": 3, "areas": 2, "row": 2, "tenants": 1, "me": 1}
ALONE_KINDS = ("kpis", "dashboard", "areas", "me")  # /api/me reads no cache: the control


@dataclass(frozen=True)
class NearSizes:
    rtts_ms: tuple[float, ...]
    trials: int  # interleaved off/on trials per distance (ABBA...), merged per mode
    trial_seconds: float  # closed-loop load per trial ...
    trial_requests: int  # ... or this many requests
    alone_per_kind: int  # then one client alone: this many of each ALONE_KINDS request, per mode and distance
    concurrency: int
    write_share: float  # editors' PATCHes among the requests
    staleness_rounds: int  # writes whose staleness is measured, per distance
    staleness_rtts_ms: tuple[float, ...]
    tenants: int = 2
    initiatives_per_tenant: int = 100
    workers: int = 1  # uvicorn workers per process
    readers_per_tenant: int = 3
    staleness_readers: int = 2


#: Quick takes ~14 s of the notebook's 25 s budget (two app processes starting at once: ~4 s of it).
SIZES = {
    "quick": NearSizes(
        rtts_ms=(0.0, 5.0), trials=2, trial_seconds=0.4, trial_requests=2000, alone_per_kind=10,
        concurrency=8, write_share=0.005, staleness_rounds=8, staleness_rtts_ms=(0.0,),
    ),
    "full": NearSizes(
        rtts_ms=(0.0, 5.0, 20.0), trials=6, trial_seconds=3.0, trial_requests=30_000, alone_per_kind=60,
        concurrency=8,
        write_share=0.005, staleness_rounds=60, staleness_rtts_ms=(0.0, 5.0, 20.0),
    ),
}


def sizes(profile: str) -> NearSizes:
    return for_profile(SIZES, profile)


def describe(sz: NearSizes) -> dict[str, Any]:
    return asdict(sz)


# -- the workload -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    method: str
    url: str
    kind: str
    headers: tuple[tuple[str, str], ...]
    body: dict[str, Any] | None = None


@dataclass
class Logins:
    """One app's sessions: readers per tenant, and an editor (the tenant's admin) per tenant."""

    readers: dict[str, list[str]]
    editors: dict[str, str]
    rows: dict[str, list[int]]


def workload(logins: Logins, n: int, write_share: float, seed: int,
             cycle: Sequence[str] | None = None) -> list[Request]:
    """``n`` requests of the dashboard mix (or of ``cycle``'s kinds in turn); the same seed gives the
    same requests for both processes."""
    rng = random.Random(seed)
    tenants = sorted(logins.readers)
    kinds, weights = zip(*READ_KINDS.items(), strict=True)
    out = []
    for i in range(n):
        tenant = rng.choice(tenants)
        if not cycle and rng.random() < write_share:
            row = rng.choice(logins.rows[tenant])
            out.append(Request("PATCH", f"/api/tenants/{tenant}/initiatives/{row}", "write",
                               (("Cookie", f"session={logins.editors[tenant]}"),),
                               {"progress": rng.randint(0, 100)}))
            continue
        kind = cycle[i % len(cycle)] if cycle else rng.choices(kinds, weights)[0]
        cookie = (("Cookie", f"session={rng.choice(logins.readers[tenant])}"),)
        url = {
            "kpis": f"/api/tenants/{tenant}/kpis",
            "areas": f"/api/tenants/{tenant}/areas",
            "tenants": "/api/tenants",
            "dashboard": "/api/dashboard",
            "me": "/api/me",
            "row": f"/api/tenants/{tenant}/initiatives/{rng.choice(logins.rows[tenant][:10])}",
        }[kind]
        out.append(Request("GET", url, kind, cookie))
    return out


@dataclass
class Load:
    """What one closed-loop run did."""

    elapsed: float = 0.0
    requests: int = 0
    errors: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    x_cache: Counter[str] = field(default_factory=Counter)
    cost: Counter[str] = field(default_factory=Counter)  # summed X-Request-Cost fields
    costed: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    latency_by_kind: dict[str, LatencyHistogram] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else math.nan

    def p(self, q: float) -> float:
        return self.latency.percentile_us(q) / 1000 if self.latency.count else math.nan

    def share(self, statuses: Sequence[str]) -> float:
        cached = sum(self.x_cache[s] for s in (*L1_STATUSES, *REDIS_STATUSES, *DB_STATUSES))
        return sum(self.x_cache[s] for s in statuses) / cached if cached else math.nan

    def per_request(self, name: str) -> float:
        return self.cost[name] / self.costed if self.costed else math.nan

    def merge(self, other: Load) -> None:
        self.elapsed += other.elapsed
        self.requests += other.requests
        self.errors += other.errors
        self.latency.merge(other.latency)
        self.x_cache.update(other.x_cache)
        self.cost.update(other.cost)
        self.costed += other.costed
        self.by_kind.update(other.by_kind)
        for kind, hist in other.latency_by_kind.items():
            self.latency_by_kind.setdefault(kind, LatencyHistogram()).merge(hist)


async def closed_loop(
    http: httpx.AsyncClient, requests: Sequence[Request], *, concurrency: int, max_seconds: float
) -> Load:
    """Send ``requests`` in order from ``concurrency`` workers, each waiting for its answer; bounded by
    the list's length and ``max_seconds``. Errors are counted, never raised."""
    load = Load()
    pending = iter(requests)
    started = time.monotonic()
    deadline = started + max_seconds

    async def worker() -> None:
        for call in pending:
            if time.monotonic() > deadline:
                return
            t0 = time.perf_counter()
            status = 0
            try:
                response = await http.request(call.method, call.url, json=call.body, headers=call.headers)
                status = response.status_code
                if x_cache := response.headers.get("x-cache"):
                    load.x_cache[x_cache] += 1
                if cost := response.headers.get("x-request-cost"):
                    load.cost.update(parse_header(cost))
                    load.costed += 1
            except httpx.HTTPError:
                pass
            us = (time.perf_counter() - t0) * 1e6
            load.latency.record_us(us)
            load.latency_by_kind.setdefault(call.kind, LatencyHistogram()).record_us(us)
            load.requests += 1
            load.by_kind[call.kind] += 1
            load.errors += status == 0 or status >= 400

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    load.elapsed = time.monotonic() - started
    return load


def server_commands(admin: redis.Redis) -> int:
    """Commands Redis has run (INFO commandstats), less the INFO calls that read it."""
    stats = admin.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


# -- the apps --------------------------------------------------------------------------------------
async def login(app: AppServer, sz: NearSizes) -> Logins:
    """Sessions live in Redis, so they are good on every process of the deployment."""
    accounts = app.accounts()
    tenants = tenant_ids(accounts)
    readers: dict[str, list[str]] = {}
    editors: dict[str, str] = {}
    rows: dict[str, list[int]] = {}
    async with httpx.AsyncClient(base_url=app.base_url, timeout=30) as http:
        for tenant in tenants:
            admin = first_account(accounts, tenant, ["admin"])
            editors[tenant] = await alogin(http, admin, app.seed_password)
            mine = [a["email"] for a in accounts if a["tenant_id"] == tenant][: sz.readers_per_tenant]
            readers[tenant] = [await alogin(http, email, app.seed_password) for email in mine]
            page = await http.get(f"/api/tenants/{tenant}/initiatives?page=1",
                                  headers=cookie_header(editors[tenant]))
            rows[tenant] = [item["id"] for item in page.json()["items"]]
    return Logins(readers, editors, rows)


def _labelled_sum(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}\{{.*\}} (\S+)$", text, re.M))


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else math.nan


async def staleness(writer_app: AppServer, reader_app: AppServer, logins: Logins, sz: NearSizes,
                    rtt_ms: float) -> list[dict[str, Any]]:
    """Per write through ``writer_app``: how long after its acknowledgement ``reader_app`` (near cache
    on) served the old KPIs (see the module docstring)."""
    tenant = sorted(logins.editors)[0]
    headers = cookie_header(logins.editors[tenant])
    kpis_url = f"/api/tenants/{tenant}/kpis"
    row_url = f"/api/tenants/{tenant}/initiatives/{logins.rows[tenant][0]}"
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    writer = httpx.AsyncClient(base_url=writer_app.base_url, timeout=30, headers=headers)
    readers = [httpx.AsyncClient(base_url=reader_app.base_url, timeout=30, headers=headers, limits=limits)
               for _ in range(sz.staleness_readers)]
    out: list[dict[str, Any]] = []
    try:
        await writer.patch(row_url, json={"status": "on_hold"})
        await asyncio.sleep(0.1)
        base = int((await writer.get(kpis_url)).json()["by_status"]["completed"])
        window = max(0.05, 6 * rtt_ms / 1000)  # how long readers keep reading after each write
        for r in range(sz.staleness_rounds):
            held = 0
            for reader in readers:  # the L1 holds the current KPIs before the write (or says why not)
                for _ in range(3):
                    if (await reader.get(kpis_url)).headers.get("x-cache") == "HIT-L1":
                        held += 1
                        break
            status = "completed" if r % 2 == 0 else "on_hold"
            expected = base + (status == "completed")
            response = await writer.patch(row_url, json={"status": status})
            acked = time.monotonic()
            if response.status_code != 200:
                continue
            results = await asyncio.gather(
                *(_read_until(c, kpis_url, expected, acked, window) for c in readers)
            )
            stale_sent = [s for res in results for s in res["stale_sent_ms"]]
            out.append({
                "rtt_ms": rtt_ms,
                "round": r,
                "reads_after_ack": sum(res["reads"] for res in results),
                "stale_reads_after_ack": len(stale_sent),
                "window_ms": round(max(stale_sent, default=0.0), 3),
                "first_fresh_ms": round(max((res["first_fresh_ms"] for res in results), default=math.nan), 3),
                "readers_holding_it_in_l1": held,
            })
    finally:
        for http in (writer, *readers):
            await http.aclose()
    return out


async def _read_until(http: httpx.AsyncClient, url: str, expected: int, acked: float,
                      window: float) -> dict[str, Any]:
    stale_sent: list[float] = []
    first_fresh = math.nan
    reads = 0
    while (sent := time.monotonic()) < acked + window:
        body = (await http.get(url)).json()
        reads += 1
        if body["by_status"]["completed"] != expected:
            stale_sent.append((sent - acked) * 1000)
        elif math.isnan(first_fresh):
            first_fresh = (time.monotonic() - acked) * 1000
    return {"reads": reads, "stale_sent_ms": stale_sent, "first_fresh_ms": first_fresh}


async def memory(app: AppServer) -> list[dict[str, Any]]:
    """The L1's entries and accounted bytes in each of ``app``'s worker processes (from /metrics)."""
    seen: dict[float, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=app.base_url, timeout=30) as http:
        for _ in range(4 * app.workers):  # each worker answers for itself; keep one answer per process
            text = (await http.get("/metrics")).text
            process = _metric(text, "cachelab_near_cache_tracking_client_id")
            seen[process] = {
                "process": process,
                "entries": _metric(text, "cachelab_near_cache_entries"),
                "bytes": _metric(text, "cachelab_near_cache_bytes"),
                "l1_hits": _labelled_sum(text, "cachelab_cache_l1_hits_total"),
                "invalidations": _metric(text, "cachelab_near_cache_invalidations_total"),
                "flushes": _labelled_sum(text, "cachelab_near_cache_flushes_total"),
            }
    return list(seen.values())


def _row(rtt: float, mode: str, load: Load, commands: int) -> dict[str, Any]:
    return {
        "rtt_ms": rtt,
        "near_cache": mode,
        "requests": load.requests,
        "errors": load.errors,
        "rps": round(load.rps, 1),
        "p50_ms": load.p(50),
        "p99_ms": load.p(99),
        "l1_share": round(load.share(L1_STATUSES), 4),
        "redis_share": round(load.share(REDIS_STATUSES), 4),
        "db_share": round(load.share(DB_STATUSES), 4),
        "redis_commands_per_request": round(load.per_request("redis-cmd"), 3),
        "redis_round_trips_per_request": round(load.per_request("redis-rt"), 3),
        "db_statements_per_request": round(load.per_request("db"), 3),
        "server_commands_per_request": round(commands / load.requests, 3) if load.requests else math.nan,
        "writes": load.by_kind["write"],
    }


def _alone_rows(rtt: float, mode: str, load: Load) -> list[dict[str, Any]]:
    return [
        {"rtt_ms": rtt, "near_cache": mode, "kind": kind, "requests": hist.count,
         "p50_ms": hist.percentile_us(50) / 1000, "p99_ms": hist.percentile_us(99) / 1000}
        for kind, hist in sorted(load.latency_by_kind.items())
    ]


async def _series(apps: dict[str, AppServer], proxy: ProxyProcess, admin: redis.Redis, sz: NearSizes
                  ) -> dict[str, list[dict[str, Any]]]:
    shared = await login(apps["on"], sz)
    logins = dict.fromkeys(MODES, shared)
    limits = httpx.Limits(max_connections=sz.concurrency, max_keepalive_connections=sz.concurrency)
    https = {mode: httpx.AsyncClient(base_url=app.base_url, timeout=30, limits=limits)
             for mode, app in apps.items()}
    rows: list[dict[str, Any]] = []
    alone: list[dict[str, Any]] = []
    stale_rows: list[dict[str, Any]] = []
    try:
        for i, rtt in enumerate(sz.rtts_ms):
            proxy.set_latency(rtt / 1000)
            for mode in MODES:  # caches filled, pools sized for this latency
                warm = workload(logins[mode], 200, 0.0, seed=5)
                await closed_loop(https[mode], warm, concurrency=sz.concurrency, max_seconds=0.2)
            merged = {mode: Load() for mode in MODES}
            commands = dict.fromkeys(MODES, 0)
            for trial in range(sz.trials):
                for mode in MODES if (i + trial) % 2 == 0 else tuple(reversed(MODES)):
                    calls = workload(logins[mode], sz.trial_requests, sz.write_share, seed=100 * i + trial)
                    before = server_commands(admin)
                    merged[mode].merge(await closed_loop(https[mode], calls, concurrency=sz.concurrency,
                                                         max_seconds=sz.trial_seconds))
                    commands[mode] += server_commands(admin) - before
            rows += [_row(rtt, mode, merged[mode], commands[mode]) for mode in MODES]
            for mode in MODES:  # one client alone: each kind's latency without queueing behind others
                n = sz.alone_per_kind * len(ALONE_KINDS)
                reads = workload(logins[mode], n, 0.0, seed=7 + i, cycle=ALONE_KINDS)
                load = await closed_loop(https[mode], reads, concurrency=1, max_seconds=10.0)
                alone += _alone_rows(rtt, mode, load)
            if rtt in sz.staleness_rtts_ms:
                stale_rows += await staleness(apps["off"], apps["on"], shared, sz, rtt)
        proxy.set_latency(0)
        memory_rows = await memory(apps["on"])
    finally:
        for http in https.values():
            await http.aclose()
    return {"rows": rows, "alone": alone, "staleness": stale_rows, "memory": memory_rows}


def _run(sz: NearSizes) -> dict[str, Any]:
    with RedisServer() as server, ProxyProcess(server.url) as proxy, \
            tempfile.TemporaryDirectory(prefix="cachelab-near-") as tmp:
        database_url = f"sqlite:///{tmp}/dashboard.db"
        password = secrets.token_urlsafe(18)
        asyncio.run(prepare_database(database_url, tenants=sz.tenants, per_tenant=sz.initiatives_per_tenant,
                                     reset=False, only_if_empty=True, password=password))
        apps = {
            mode: AppServer(redis_url=proxy.url_for(server.url), database_url=database_url,
                            seed_password=password, env={**APP_ENV, "CACHELAB_NEAR_CACHE": mode},
                            workers=sz.workers, tenants=sz.tenants,
                            initiatives_per_tenant=sz.initiatives_per_tenant)
            for mode in MODES
        }
        try:
            with ThreadPoolExecutor(max_workers=len(apps)) as pool:  # both start at once (seeded already)
                for started in [pool.submit(app.start) for app in apps.values()]:
                    started.result()
            admin = server.client(socket_timeout=10)
            try:
                return asyncio.run(_series(apps, proxy, admin, sz))
            finally:
                admin.close()
        finally:
            for app in apps.values():
                app.stop()


def run(profile: str) -> dict[str, Any]:
    """``{"rows": one per distance and mode (under load), "alone": one per distance, mode and request
    kind (one client), "staleness": one per measured write, "memory": one per process}``."""
    return off_loop(_run, sizes(profile))


# -- summaries, plots ------------------------------------------------------------------------------
def staleness_summary(stale_rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per distance: writes, reads after the ack, stale ones, and the window's distribution (ms)."""
    out = []
    for rtt in sorted({r["rtt_ms"] for r in stale_rows}):
        rows = [r for r in stale_rows if r["rtt_ms"] == rtt]
        windows = [r["window_ms"] for r in rows]
        fresh = [r["first_fresh_ms"] for r in rows if not math.isnan(r["first_fresh_ms"])]
        pw, pf = percentiles(windows, (50, 99)), percentiles(fresh, (50, 99))
        out.append({
            "rtt_ms": rtt,
            "writes": len(rows),
            "l1_held_before_write": sum(r["readers_holding_it_in_l1"] for r in rows),
            "reads_after_ack": sum(r["reads_after_ack"] for r in rows),
            "stale_reads_after_ack": sum(r["stale_reads_after_ack"] for r in rows),
            "window_p50_ms": pw["p50"],
            "window_p99_ms": pw["p99"],
            "window_max_ms": max(windows, default=math.nan),
            "first_fresh_p50_ms": pf["p50"],
            "first_fresh_p99_ms": pf["p99"],
        })
    return out


def plot_by_distance(frame: Any) -> Any:
    """Requests/s, p50/p99 and Redis commands per request, near cache off vs on, per distance."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.2))
    axes = fig.subplots(1, 3)
    rtts = sorted(set(frame["rtt_ms"]))
    x = list(range(len(rtts)))
    width = 0.38
    colours = {"off": "tab:gray", "on": "tab:green"}
    for k, mode in enumerate(MODES):
        sub = frame[frame["near_cache"] == mode].set_index("rtt_ms").loc[rtts]
        offset = [v + (k - 0.5) * width for v in x]
        bars = axes[0].bar(offset, sub["rps"], width, color=colours[mode], label=f"near cache {mode}")
        axes[0].bar_label(bars, labels=[f"{v:,.0f}" for v in sub["rps"]], fontsize=7)
        axes[1].plot(x, sub["p50_ms"], "o-", color=colours[mode], label=f"p50, {mode}")
        axes[1].plot(x, sub["p99_ms"], "s--", color=colours[mode], label=f"p99, {mode}")
        bars = axes[2].bar(offset, sub["redis_commands_per_request"], width, color=colours[mode],
                           label=f"near cache {mode}")
        axes[2].bar_label(bars, labels=[f"{v:.2f}" for v in sub["redis_commands_per_request"]], fontsize=7)
    axes[0].set_ylabel("requests / s (closed loop)")
    axes[1].set_ylabel("latency (ms)")
    axes[1].set_yscale("log")
    axes[2].set_ylabel("Redis commands per request (X-Request-Cost)")
    titles = ("Throughput", "Latency under load", "Redis commands per request")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xticks(x, [f"+{r:g} ms" for r in rtts])
        ax.set_xlabel("round-trip time added between app and Redis")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("The dashboard mix with editors writing: near cache off vs on (same Redis, same requests)")
    fig.tight_layout()
    return fig


def plot_alone(frame: Any) -> Any:
    """One client alone: p50 per request kind, near cache off vs on, per distance."""
    from matplotlib.figure import Figure

    kinds = [k for k in ALONE_KINDS if k in set(frame["kind"])]
    fig = Figure(figsize=(11, 4))
    ax = fig.subplots()
    rtts = sorted(set(frame["rtt_ms"]))
    width = 0.8 / (2 * len(rtts))
    for j, rtt in enumerate(rtts):
        for k, mode in enumerate(MODES):
            sub = frame[(frame["rtt_ms"] == rtt) & (frame["near_cache"] == mode)].set_index("kind")
            offset = [x + (2 * j + k - len(rtts)) * width + width / 2 for x in range(len(kinds))]
            values = [sub["p50_ms"].get(kind, math.nan) for kind in kinds]
            ax.bar(offset, values, width, label=f"+{rtt:g} ms, near cache {mode}",
                   color=("tab:gray", "tab:green")[k], alpha=0.45 + 0.55 * j / max(1, len(rtts) - 1))
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_ylabel("p50 latency, one client alone (ms)")
    ax.set_yscale("log")
    ax.set_title("Each request kind alone: the near cache removes the cache's round trip (/api/me has none)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def plot_hit_split(frame: Any) -> Any:
    """Where cached reads were served from: the L1, Redis or the database."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    labels = [f"+{r:g} ms\n{m}" for r, m in zip(frame["rtt_ms"], frame["near_cache"], strict=True)]
    bottom = [0.0] * len(frame)
    for column, colour, name in (("l1_share", "tab:green", "L1 (in process)"),
                                 ("redis_share", "tab:blue", "Redis"), ("db_share", "tab:red", "database")):
        values = list(frame[column].fillna(0))
        ax.bar(labels, values, bottom=bottom, color=colour, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("share of cached reads")
    ax.set_ylim(0, 1.05)
    ax.set_title("Hit-ratio split (X-Cache), near cache off vs on")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _by(rows: Sequence[dict[str, Any]], rtt: float, mode: str) -> dict[str, Any]:
    return next(r for r in rows if r["rtt_ms"] == rtt and r["near_cache"] == mode)


def _alone(result: Mapping[str, Any], rtt: float, mode: str, kind: str) -> float:
    return next((a["p50_ms"] for a in result.get("alone", ())
                 if a["rtt_ms"] == rtt and a["near_cache"] == mode and a["kind"] == kind), math.nan)


def headlines(result: Mapping[str, Any]) -> dict[str, float | None]:
    rows, memory_rows = result["rows"], result["memory"]
    out: dict[str, float | None] = {}
    for rtt in sorted({r["rtt_ms"] for r in rows}):
        off, on = _by(rows, rtt, "off"), _by(rows, rtt, "on")
        out[f"Redis commands per request, near cache off, +{rtt:g} ms"] = off["redis_commands_per_request"]
        out[f"Redis commands per request, near cache on, +{rtt:g} ms"] = on["redis_commands_per_request"]
        for name, key in (("requests/s", "rps"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms")):
            out[f"{name}, near cache off, +{rtt:g} ms"] = round(off[key], 2)
            out[f"{name}, near cache on, +{rtt:g} ms"] = round(on[key], 2)
        out[f"L1 share of cached reads, +{rtt:g} ms"] = on["l1_share"]
        for mode in MODES:
            alone_p50 = _alone(result, rtt, mode, "kpis")
            out[f"KPI read alone p50 ms, near cache {mode}, +{rtt:g} ms"] = round(alone_p50, 3)
    for s in staleness_summary(result["staleness"]):
        out[f"staleness window p99 ms, +{s['rtt_ms']:g} ms"] = s["window_p99_ms"]
        out[f"staleness window max ms, +{s['rtt_ms']:g} ms"] = s["window_max_ms"]
        out[f"stale reads after the write's ack, +{s['rtt_ms']:g} ms"] = s["stale_reads_after_ack"]
    if memory_rows:
        out["L1 bytes per process (max)"] = max(m["bytes"] for m in memory_rows)
        out["L1 entries per process (max)"] = max(m["entries"] for m in memory_rows)
    return out


def capacity_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The report's rows: Redis commands per request and req/s with the near cache, per distance; the
    staleness window; the L1's memory per process."""
    rows = result["rows"]
    out = []
    for rtt in sorted({r["rtt_ms"] for r in rows}):
        off, on = _by(rows, rtt, "off"), _by(rows, rtt, "on")
        out.append({
            "row": f"Near cache on, Redis +{rtt:g} ms: Redis commands per request",
            "value": on["redis_commands_per_request"],
            "unit": "commands/request",
            "note": f"{off['redis_commands_per_request']:.2f} off; {on['rps']:,.0f} vs {off['rps']:,.0f} "
            f"req/s, p99 {on['p99_ms']:.1f} vs {off['p99_ms']:.1f} ms under load; a KPI read alone "
            f"{_alone(result, rtt, 'on', 'kpis'):.1f} vs {_alone(result, rtt, 'off', 'kpis'):.1f} ms (p50); "
            f"{on['l1_share']:.0%} of cached reads from the L1",
        })
    for s in staleness_summary(result["staleness"]):
        out.append({
            "row": f"Near cache staleness window after a write, +{s['rtt_ms']:g} ms",
            "value": s["window_max_ms"],
            "unit": "ms (max over writes)",
            "note": f"{s['stale_reads_after_ack']} stale of {s['reads_after_ack']} reads sent after the ack, "
            f"{s['writes']} writes; p99 {s['window_p99_ms']:.2f} ms",
        })
    if result["memory"]:
        biggest = max(result["memory"], key=lambda m: m["bytes"])
        out.append({
            "row": "Near cache memory per process",
            "value": round(biggest["bytes"] / 1024, 1),
            "unit": "KiB",
            "note": f"{biggest['entries']:.0f} entries (largest process), of a 16 MiB default budget",
        })
    return out


def findings(result: Mapping[str, Any]) -> str:
    """What this run measured, in sentences (Markdown)."""
    rows = result["rows"]
    lines = []
    for rtt in sorted({r["rtt_ms"] for r in rows}):
        off, on = _by(rows, rtt, "off"), _by(rows, rtt, "on")
        lines.append(
            f"- **+{rtt:g} ms**: {on['l1_share']:.0%} of cached reads came from the L1; Redis commands per "
            f"request {off['redis_commands_per_request']:.2f} → {on['redis_commands_per_request']:.2f} "
            f"(counted by Redis, scripts' inner commands included: "
            f"{off['server_commands_per_request']:.2f} → {on['server_commands_per_request']:.2f}); "
            f"{off['rps']:,.0f} → {on['rps']:,.0f} requests/s; "
            f"p50 {off['p50_ms']:.2f} → {on['p50_ms']:.2f} ms, "
            f"p99 {off['p99_ms']:.2f} → {on['p99_ms']:.2f} ms; "
            f"database share of cached reads {off['db_share']:.1%} → {on['db_share']:.1%}. One client alone, "
            f"a KPI read took {_alone(result, rtt, 'off', 'kpis'):.2f} → "
            f"{_alone(result, rtt, 'on', 'kpis'):.2f} ms "
            f"(p50; /api/me, which reads no cache, {_alone(result, rtt, 'off', 'me'):.2f} → "
            f"{_alone(result, rtt, 'on', 'me'):.2f} ms)."
        )
    for s in staleness_summary(result["staleness"]):
        lines.append(
            f"- **Staleness, +{s['rtt_ms']:g} ms**: over {s['writes']} writes, {s['stale_reads_after_ack']} "
            f"of {s['reads_after_ack']} reads sent after the write's acknowledgement returned the old KPIs; "
            f"the window was {s['window_max_ms']:.2f} ms at most (p99 {s['window_p99_ms']:.2f} ms), and the "
            f"new value was served {s['first_fresh_p50_ms']:.2f} ms after the ack (p50)."
        )
    if result["memory"]:
        for m in result["memory"]:
            lines.append(f"- **Process {m['process']:.0f}**: {m['entries']:.0f} L1 entries, "
                         f"{m['bytes'] / 1024:.1f} KiB; {m['invalidations']:.0f} invalidations received.")
    return "\n".join(lines)
