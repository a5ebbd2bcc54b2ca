"""Notebook 09: what the network distance to Redis costs, and what round-trip discipline saves.

The guide's Redis sits in one cloud region (São Paulo) while the app may run
in another. Every round trip then costs the distance, and a request that
makes several of them one after another pays it several times. A TCP
:class:`~cachelab.servers.fault_proxy.FaultProxy` between the app and a
redis-server we launched adds a round-trip time (half each way, order and
pipelining preserved): 0.1 ms (same host), 1 ms (same zone), 5 ms (cross-zone)
and 20 ms (cross-region).

**The app.** The sample app's Redis URL points at the proxy. A closed loop of
``concurrency`` HTTP clients sends the dashboard's read mix — a KPI cache hit,
an initiative row cache hit, ``/api/me`` (session read) and ``/api/dashboard``
(session read, then a cache hit) — every request also passing the per-IP and
per-session rate limits. Requests per second and p99 are measured per RTT;
in a closed loop, requests/s is the concurrency divided by the latency, so it
shows directly how many sequential round trips a request makes.

**The patterns.** From this process, through the same proxy, one caller at a
time (latency-bound, the way a request handler waits):

* reading 10 keys: 10 GETs one after another, a pipeline of 10 GETs, and
  :meth:`~cachelab.patterns.cache.Cache.get_many` (one MGET);
* a rate-limit check: GCRA (one ``EVALSHA``) against the guide's
  ``INCR`` + ``EXPIRE`` (:func:`~cachelab.patterns.ratelimit.naive_fixed_window`),
  each call for a new client (the first request of a window, where the guide's version
  pays its second round trip; later requests in the window cost it one);
* a session read that slides the idle timeout: one ``EVALSHA``
  (:meth:`~cachelab.patterns.sessions.SessionStore.get`) against the guide's
  read then extend (:func:`naive_session_get`, two calls);
* a cache hit: :meth:`~cachelab.patterns.cache.Cache.get` (one ``MGET``)
  against the guide's refresh-ahead ``GET`` then ``TTL``
  (:func:`~cachelab.patterns.naive.naive_refresh_ahead`).

Round trips per call are counted by the client, not assumed. The proxy is
itself a Python hop: even "+0.1 ms" is slower than loopback without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import selectors
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import redis.asyncio

from cachelab.analysis.loops import off_loop
from cachelab.analysis.memory_sizing import Call, closed_loop
from cachelab.analysis.output import for_profile
from cachelab.client import ClientOptions, ResilientRedis
from cachelab.harness.app_client import alogin, cookie_header, tenant_ids
from cachelab.harness.app_server import AppServer
from cachelab.servers.children import spawn
from cachelab.servers.fault_proxy import FaultProxy
from cachelab.servers.redis_server import RedisServer

APP_ENV = {
    "CACHELAB_RATE_LIMIT": "100000000/60s",
    "CACHELAB_LOGIN_RATE_LIMIT_IP": "100000000/60s",  # every login comes from this one address
    "CACHELAB_CACHE_MODE": "cache-aside",
}


@dataclass(frozen=True)
class DistanceSizes:
    rtts_ms: tuple[float, ...]
    app_seconds: float  # closed-loop load per RTT
    app_requests: int  # ... or this many requests
    concurrency: int  # closed-loop HTTP clients: requests/s can be at most clients ÷ latency
    pattern_seconds: float  # per pattern variant and RTT
    pattern_ops: int  # ... or this many calls
    batch: int = 10
    tenants: int = 2
    initiatives_per_tenant: int = 200
    users: int = 8


SIZES = {
    "quick": DistanceSizes(
        rtts_ms=(0.1, 5.0), app_seconds=2.0, app_requests=3000, concurrency=8, pattern_seconds=0.3,
        pattern_ops=300,
    ),
    "full": DistanceSizes(
        rtts_ms=(0.1, 1.0, 5.0, 20.0), app_seconds=10.0, app_requests=100_000, concurrency=8,
        pattern_seconds=3.0, pattern_ops=5000,
    ),
}


def sizes(profile: str) -> DistanceSizes:
    return for_profile(SIZES, profile)


def describe(sz: DistanceSizes) -> dict[str, Any]:
    return asdict(sz)


# -- the proxy, in its own process -------------------------------------------------------------------
class _PreciseTimers(asyncio.DefaultEventLoopPolicy):
    """Event loops on ``select()``, whose timeout has microsecond resolution.

    The default epoll selector rounds every timeout up to a whole millisecond,
    so a proxy asked for 0.05 ms each way would wait 1 ms each way: +0.1 ms of
    RTT would measure as +2 ms. A proxy forwards a handful of connections, so
    ``select()`` costs nothing here.
    """

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.SelectorEventLoop(selectors.SelectSelector())


def serve_proxy(target_host: str, target_port: int) -> None:
    """Child-process entry point: run a :class:`FaultProxy`; obey ``latency <s>`` / ``stop`` on stdin."""
    asyncio.set_event_loop_policy(_PreciseTimers())
    proxy = FaultProxy(target_host, target_port).start()
    print(proxy.port, flush=True)
    try:
        for line in sys.stdin:
            command, *args = line.split()
            if command == "latency":
                proxy.set_latency(float(args[0]))
            elif command == "stop":
                break
            print("ok", flush=True)
    finally:
        proxy.stop()


class ProxyProcess:
    """A :class:`FaultProxy` in a child process, driven over a pipe.

    In this process the proxy's thread would share the GIL with the load
    generator and the measuring client: forwarding a byte would wait for
    Python code elsewhere in the process (up to the 5 ms switch interval),
    which is noise far larger than the RTTs being modelled.
    """

    def __init__(self, redis_url: str) -> None:
        parsed = urllib.parse.urlparse(redis_url)
        self.target_host = parsed.hostname or "127.0.0.1"
        self.target_port = parsed.port or 6379
        self.port: int | None = None
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> ProxyProcess:
        code = "import sys; from cachelab.analysis.network_distance import serve_proxy; " \
               "serve_proxy(sys.argv[1], int(sys.argv[2]))"
        self._proc = spawn(
            [sys.executable, "-c", code, self.target_host, str(self.target_port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"proxy process did not start (said {line!r})")
        self.port = int(line)
        return self

    def _send(self, line: str) -> None:
        assert self._proc is not None and self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        if self._proc.stdout.readline().strip() != "ok":
            raise RuntimeError(f"proxy process refused {line!r}")

    def set_latency(self, rtt: float) -> None:
        """Add ``rtt`` seconds of round-trip time from now on (half each way)."""
        self._send(f"latency {rtt}")

    def url_for(self, redis_url: str) -> str:
        parsed = urllib.parse.urlparse(redis_url)
        auth = parsed.netloc.rsplit("@", 1)[0] + "@" if "@" in parsed.netloc else ""
        return parsed._replace(netloc=f"{auth}127.0.0.1:{self.port}").geturl()

    def stop(self) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert self._proc.stdin is not None
            self._proc.stdin.write("stop\n")
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def measured_rtt_ms(client: redis.asyncio.Redis, samples: int = 20) -> float:
    """The median PING round trip on ``client``, in ms: what the added latency really came to."""
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        await client.ping()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


# -- the guide's session read, for comparison only -------------------------------------------------
async def naive_session_get(client: redis.asyncio.Redis, key: str, ttl_ms: int) -> dict[Any, Any] | None:
    """The guide's ``getSession`` then ``extendSession``: read, then a second call to extend. Do not use.

    Two round trips, and the extend can race an expiry (it does nothing then,
    but the caller already holds the data it read).
    """
    data = await client.hgetall(key)
    if not data:
        return None
    await client.pexpire(key, ttl_ms)
    return data


# -- the app under distance --------------------------------------------------------------------
def app_mix(
    tenants: Sequence[str], cookies: Sequence[tuple[str, str]], rows: Sequence[tuple[str, int]], n: int
) -> list[Call]:
    """``n`` calls cycling over the read mix (KPIs, a row, /me, /dashboard), sessions and tenants.

    ``cookies`` are ``(tenant, session id)``; every call carries a session (of the URL's tenant for
    tenant routes), since the app checks one on every request.
    """
    kinds = ("kpis (cache hit)", "row (cache hit)", "me (session)", "dashboard (session + cache hit)")
    by_tenant: dict[str, list[str]] = {}
    for tenant, session in cookies:
        by_tenant.setdefault(tenant, []).append(session)

    def of(tenant: str, i: int) -> tuple[tuple[str, str], ...]:
        sessions = by_tenant[tenant]
        return (("Cookie", f"session={sessions[i % len(sessions)]}"),)

    calls = []
    for i in range(n):
        tenant = tenants[i % len(tenants)]
        cookie = (("Cookie", f"session={cookies[i % len(cookies)][1]}"),)
        kind = kinds[i % len(kinds)]
        if kind.startswith("kpis"):
            calls.append(Call("GET", f"/api/tenants/{tenant}/kpis", kind, headers=of(tenant, i)))
        elif kind.startswith("row"):
            row_tenant, row_id = rows[i % len(rows)]
            url = f"/api/tenants/{row_tenant}/initiatives/{row_id}"
            calls.append(Call("GET", url, kind, headers=of(row_tenant, i)))
        elif kind.startswith("me"):
            calls.append(Call("GET", "/api/me", kind, headers=cookie))
        else:
            calls.append(Call("GET", "/api/dashboard", kind, headers=cookie))
    return calls


async def _login(
    http: httpx.AsyncClient, tenants: Sequence[str], users: int, password: str
) -> list[tuple[str, str]]:
    """``users`` sessions, spread over the tenants: ``(tenant, session id)``."""
    cookies = []
    for n in range(users):
        tenant = tenants[n % len(tenants)]
        email = f"user{n // len(tenants) + 1}@{tenant}.example"
        cookies.append((tenant, await alogin(http, email, password)))
    return cookies


async def _app_series(app: AppServer, proxy: ProxyProcess, sz: DistanceSizes) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=sz.concurrency, max_keepalive_connections=sz.concurrency)
    async with httpx.AsyncClient(base_url=app.base_url, timeout=30, limits=limits) as http:
        tenants = tenant_ids(app.accounts())
        cookies = await _login(http, tenants, max(sz.users, len(tenants)), app.seed_password)
        firsts = []
        for t, sid in cookies[: len(tenants)]:  # one session of each tenant, in the tenants' order
            page = await http.get(f"/api/tenants/{t}/initiatives?page=1", headers=cookie_header(sid))
            firsts.append(page.json()["items"])
        rows = [(t, item["id"]) for t, items in zip(tenants, firsts, strict=True) for item in items[:5]]
        mix = app_mix(tenants, cookies, rows, sz.app_requests)
        await closed_loop(http, mix[: 4 * len(cookies) * len(tenants) + 40], concurrency=4)  # caches filled
        out = []
        for rtt in sz.rtts_ms:
            proxy.set_latency(rtt / 1000)
            await closed_loop(http, mix[:40], concurrency=sz.concurrency)  # pool sized for this latency
            load = await closed_loop(http, mix, concurrency=sz.concurrency, max_seconds=sz.app_seconds)
            row: dict[str, Any] = {
                "rtt_ms": rtt,
                "requests": load.requests,
                "errors": load.errors,
                "rps": round(load.rps, 1),
                "p50_ms": load.p(50),
                "p99_ms": load.p(99),
                "hit_ratio": round(load.hit_ratio, 4),
            }
            # One client alone: each kind's latency without queueing behind the others.
            alone = await closed_loop(http, mix, concurrency=1, max_seconds=sz.app_seconds / 4)
            for kind in alone.by_kind:
                row[f"alone p50_ms {kind}"] = alone.p(50, kind)
            out.append(row)
        proxy.set_latency(0)
        return out


# -- the patterns under distance ---------------------------------------------------------------
Op = Callable[[int], Awaitable[Any]]


@dataclass(frozen=True)
class Variant:
    operation: str
    variant: str
    one_round_trip: bool  # the reference version (True) or the slower comparison (False)
    op: Op


async def _variants(rr: ResilientRedis, direct: ResilientRedis, sz: DistanceSizes) -> list[Variant]:
    """Every compared operation, with its data prepared over the direct (unproxied) client."""
    from cachelab.patterns.cache import Cache, CachePolicy
    from cachelab.patterns.naive import naive_refresh_ahead
    from cachelab.patterns.ratelimit import GCRALimiter, naive_fixed_window
    from cachelab.patterns.sessions import SessionStore

    policy = CachePolicy(ttl=3600, jitter=0)
    seed_cache = Cache(direct, "kpi", policy)
    cache = Cache(rr, "kpi", policy)
    keys = [cache.key("acme-01", "item", i) for i in range(sz.batch)]
    for i, key in enumerate(keys):
        await seed_cache.set(key, {"n": i, "title": "x" * 100})
    plain = [f"plain:{i}" for i in range(sz.batch)]
    await direct.client.mset({k: "x" * 100 for k in plain})
    naive_key = "naive:kpi:acme-01"
    await direct.client.set(naive_key, '{"total": 1}', ex=3600)

    store = SessionStore(direct, idle_timeout=1800, absolute_lifetime=12 * 3600)
    session = await store.create("1", {"role": "member", "tenant_id": "acme-01"})
    reader = SessionStore(rr, idle_timeout=1800, absolute_lifetime=12 * 3600)
    limiter = GCRALimiter(rr, 1_000_000, 60)
    client = rr.client
    clients = itertools.count()

    async def sequential(_: int) -> None:
        for key in plain:
            await client.get(key)

    async def pipelined(_: int) -> None:
        pipe = client.pipeline(transaction=False)
        for key in plain:
            pipe.get(key)
        await pipe.execute()

    async def refresh(_: int) -> None:  # never due: only the read path is timed
        return None

    return [
        Variant(f"read {sz.batch} keys", f"{sz.batch} GETs, one at a time", False, sequential),
        Variant(f"read {sz.batch} keys", f"pipeline of {sz.batch} GETs", True, pipelined),
        Variant(f"read {sz.batch} keys", "Cache.get_many (one MGET)", True, lambda _: cache.get_many(keys)),
        Variant("rate-limit check", "the guide's: INCR then EXPIRE", False,
                lambda _: naive_fixed_window(client, f"naive-{next(clients)}", 100, 60)),
        Variant("rate-limit check", "GCRA, one EVALSHA", True, lambda _: limiter.check(f"c-{next(clients)}")),
        Variant("session read + slide", "the guide's: read, then extend", False,
                lambda _: naive_session_get(client, store.session_key(session.id), 1_800_000)),
        Variant("session read + slide", "one EVALSHA", True, lambda _: reader.get(session.id)),
        Variant("cache hit", "the guide's refresh-ahead: GET then TTL", False,
                lambda _: naive_refresh_ahead(client, naive_key, 3600, lambda: refresh(0))),
        Variant("cache hit", "Cache.get (one MGET)", True, lambda _: cache.get(keys[0])),
    ]


async def time_calls(op: Op, *, seconds: float, max_ops: int) -> tuple[int, float]:
    """Call ``op`` one at a time for ``seconds`` (or ``max_ops`` calls): (calls, elapsed seconds)."""
    started = time.perf_counter()
    deadline = started + seconds
    n = 0
    while n < max_ops:
        await op(n)
        n += 1
        if time.perf_counter() > deadline:
            break
    return n, time.perf_counter() - started


async def _pattern_series(
    server: RedisServer, proxy: ProxyProcess, sz: DistanceSizes
) -> list[dict[str, Any]]:
    options = ClientOptions(command_timeout=10, connect_timeout=5)
    rr = ResilientRedis.from_url(proxy.url_for(server.url), options=options)
    direct = ResilientRedis.from_url(server.url, options=options)
    try:
        variants = await _variants(rr, direct, sz)
        for v in variants:
            await v.op(0)  # scripts loaded, connection open
        out = []
        for rtt in sz.rtts_ms:
            proxy.set_latency(rtt / 1000)
            ping = await measured_rtt_ms(rr.client)
            for v in variants:
                before = rr.round_trips.value
                n, elapsed = await time_calls(v.op, seconds=sz.pattern_seconds, max_ops=sz.pattern_ops)
                out.append(
                    {
                        "rtt_ms": rtt,
                        "ping_ms": ping,
                        "operation": v.operation,
                        "variant": v.variant,
                        "one_round_trip": v.one_round_trip,
                        "calls": n,
                        "ms_per_call": elapsed / n * 1000,
                        "calls_per_s": n / elapsed,
                        "round_trips_per_call": (rr.round_trips.value - before) / n,
                    }
                )
        proxy.set_latency(0)
        return out
    finally:
        await rr.aclose()
        await direct.aclose()


def _run(sz: DistanceSizes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    with RedisServer() as server, ProxyProcess(server.url) as proxy:
        patterns = asyncio.run(_pattern_series(server, proxy, sz))
        with AppServer(
            redis_url=proxy.url_for(server.url),
            env=APP_ENV,
            tenants=sz.tenants,
            initiatives_per_tenant=sz.initiatives_per_tenant,
        ) as app:
            app_rows = asyncio.run(_app_series(app, proxy, sz))
    return app_rows, patterns


def run(profile: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(one app row per RTT, one pattern row per RTT and variant) for ``profile``."""
    return off_loop(_run, sizes(profile))


def savings(patterns: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per operation and RTT: the slowest comparison against the best one-round-trip version."""
    out = []
    groups: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for p in patterns:
        groups.setdefault((p["rtt_ms"], p["operation"]), []).append(p)
    for (rtt, operation), group in groups.items():
        naive = max((p for p in group if not p["one_round_trip"]), key=lambda p: p["ms_per_call"])
        best = min((p for p in group if p["one_round_trip"]), key=lambda p: p["ms_per_call"])
        out.append(
            {
                "rtt_ms": rtt,
                "operation": operation,
                "naive": naive["variant"],
                "best": best["variant"],
                "naive_ms": naive["ms_per_call"],
                "best_ms": best["ms_per_call"],
                "saved_ms_per_call": naive["ms_per_call"] - best["ms_per_call"],
                "speedup": naive["ms_per_call"] / best["ms_per_call"] if best["ms_per_call"] else math.nan,
                "naive_round_trips": naive["round_trips_per_call"],
                "best_round_trips": best["round_trips_per_call"],
            }
        )
    return out


# -- plots and summary -------------------------------------------------------------------------
def plot_app(frame: Any) -> Any:
    """The app's requests/s and p99 against the added round-trip time."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2)
    labels = [f"+{v:g} ms" for v in frame["rtt_ms"]]
    x = list(range(len(frame)))
    bars = left.bar(x, frame["rps"], color="tab:blue")
    left.bar_label(bars, labels=[f"{v:,.0f}" for v in frame["rps"]], fontsize=8)
    left.set_ylabel("requests / s (closed loop)")
    left.set_title("Throughput of the dashboard read mix")
    right.plot(x, frame["p50_ms"], "o-", color="black", label="p50 under load")
    right.plot(x, frame["p99_ms"], "s-", color="tab:red", label="p99 under load")
    for column in [c for c in frame.columns if c.startswith("alone p50_ms ")]:
        label = column.removeprefix("alone p50_ms ") + ", alone (p50)"
        right.plot(x, frame[column], ":", marker=".", label=label)
    right.set_ylabel("latency (ms)")
    right.set_yscale("log")
    right.set_title("Latency per request: under load, and one client alone")
    right.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    for ax in (left, right):
        ax.set_xticks(x, labels)
        ax.set_xlabel("round-trip time added between app and Redis")
        ax.grid(alpha=0.3)
    fig.suptitle("The sample app with Redis further away (fault proxy, same Redis, same mix)")
    fig.tight_layout()
    return fig


def plot_patterns(frame: Any) -> Any:
    """Milliseconds per call against the added RTT, one panel per operation, one line per variant."""
    from matplotlib.figure import Figure

    operations = list(dict.fromkeys(frame["operation"]))
    fig = Figure(figsize=(4.2 * len(operations), 4.2))
    axes = fig.subplots(1, len(operations), squeeze=False)[0]
    for ax, operation in zip(axes, operations, strict=True):
        sub = frame[frame["operation"] == operation]
        for variant, group in sub.groupby("variant", sort=False):
            style = "-" if group["one_round_trip"].iloc[0] else "--"
            rts = group["round_trips_per_call"].iloc[-1]
            label = f"{variant} ({rts:.1f} RT)"
            ax.plot(group["rtt_ms"], group["ms_per_call"], style, marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("added RTT (ms)")
        ax.set_ylabel("ms per call (one caller)")
        ax.set_title(operation)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle("Round trips are what distance multiplies (dashed: the guide's or naive version)")
    fig.tight_layout()
    return fig


def headlines(app_rows: Sequence[dict[str, Any]], patterns: Sequence[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in app_rows:
        out[f"app requests/s, +{r['rtt_ms']:g} ms RTT"] = r["rps"]
        out[f"app p99 ms, +{r['rtt_ms']:g} ms RTT"] = round(r["p99_ms"], 2)
    for s in savings(patterns):
        out[f"{s['operation']} speedup vs naive, +{s['rtt_ms']:g} ms"] = round(s["speedup"], 2)
    return out


def capacity_rows(
    app_rows: Sequence[dict[str, Any]], patterns: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The report's distance rows: app req/s and p99 per RTT against the nearest (which is named in
    their notes rather than given a row that compares it with itself); what one round trip saves at
    the largest RTT."""
    rows = []
    if app_rows:
        base, *farther = app_rows
        rows = [
            {
                "row": f"App requests/s with Redis +{r['rtt_ms']:g} ms away",
                "value": r["rps"],
                "unit": "req/s",
                "note": f"{r['rps'] / base['rps']:.2f}× the {base['rps']:,.0f} req/s at "
                f"+{base['rtt_ms']:g} ms; p99 {r['p99_ms']:.1f} vs {base['p99_ms']:.1f} ms; "
                "closed loop, read mix with sessions and rate limits",
            }
            for r in farther
        ]
    far = max((p["rtt_ms"] for p in patterns), default=None)
    for s in savings(patterns):
        if s["rtt_ms"] == far:
            rows.append(
                {
                    "row": f"{s['operation'][:1].upper()}{s['operation'][1:]} at +{far:g} ms: "
                    f"{s['best']} vs {s['naive']}",
                    "value": round(s["saved_ms_per_call"], 2),
                    "unit": "ms saved per call",
                    "note": f"{s['speedup']:.1f}× faster; {s['best_round_trips']:.1f} vs "
                    f"{s['naive_round_trips']:.1f} round trips",
                }
            )
    return rows


def findings(app_rows: Sequence[dict[str, Any]], patterns: Sequence[dict[str, Any]]) -> str:
    """What this run measured, in sentences (Markdown), so the notebook's text quotes real numbers."""
    pings = {p["rtt_ms"]: p["ping_ms"] for p in patterns}
    lines = []
    for r in app_rows:
        alone = {k.removeprefix("alone p50_ms "): v for k, v in r.items() if k.startswith("alone p50_ms ")}
        dash = next((v for k, v in alone.items() if k.startswith("dashboard")), None)
        ping = pings.get(r["rtt_ms"])
        lines.append(
            f"- **+{r['rtt_ms']:g} ms** (PING measured {ping:.2f} ms through the proxy): "
            f"{r['rps']:,.0f} requests/s, p99 {r['p99_ms']:.1f} ms under load"
            + (f"; a dashboard request alone took {dash:.1f} ms (p50)" if dash is not None else "")
            + "."
            if ping is not None
            else f"- **+{r['rtt_ms']:g} ms**: {r['rps']:,.0f} requests/s, p99 {r['p99_ms']:.1f} ms."
        )
    for s in savings(patterns):
        if s["rtt_ms"] == max(pings, default=None):
            lines.append(
                f"- **{s['operation']} at +{s['rtt_ms']:g} ms**: {s['best']} took {s['best_ms']:.2f} ms, "
                f"{s['naive']} {s['naive_ms']:.2f} ms ({s['best_round_trips']:.0f} vs "
                f"{s['naive_round_trips']:.0f} round trips: {s['saved_ms_per_call']:.1f} ms saved per call)."
            )
    return "\n".join(lines)
