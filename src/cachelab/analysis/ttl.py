"""Notebook 01: what a TTL trades — hit ratio and database load against staleness and memory.

Measured through the sample app on a real Redis, one fresh app per TTL:
Zipf-skewed reads (KPIs, areas, initiative list pages) at a fixed rate, while
a writer changes initiatives *directly in the database* at a fixed rate — as
an ETL job or another service would. The app invalidates its caches on its
own PATCHes, so writes through the app would hide exactly what a TTL bounds:
how long a cache keeps serving a value the database has moved past.

Per TTL (0 means caching off):

* **hit ratio** — ``X-Cache`` HIT (or STALE) over all cached reads;
* **staleness** — (a) the ``Age`` header (seconds since the served value was
  computed; whole seconds), and (b) the fraction of reads whose value was
  computed before the latest committed write to that tenant, with how many
  seconds the read was behind. A value's birth is the start of the MISS
  request that filled it (the load sends every read, so it sees every fill);
  a write counts once its commit has returned, before the read was sent;
* **database load** — the app's ``cachelab_db_queries_total`` delta, per
  request and per second;
* **Redis memory** — what the keys take (``MEMORY USAGE`` summed over a
  ``SCAN``) after the run minus after start-up; ``used_memory``, which also
  counts connection buffers, is kept in the table.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from cachelab.analysis.httpload import (
    Served,
    catalogue,
    client_limits,
    db_queries,
    hit_ratio,
    lag_report,
    redis_memory,
    run_paced,
    tenant_sessions,
    zipf_plan,
)
from cachelab.analysis.loops import off_loop, run_async
from cachelab.analysis.output import for_profile, percentiles
from cachelab.app.db import Database
from cachelab.harness.app_server import AppServer
from cachelab.loadtest.zipf import ZipfSampler


@dataclass(frozen=True)
class TTLSizes:
    ttls: tuple[float, ...]  # seconds; 0 = caching off
    seconds: float  # measured load per TTL
    rate: float  # reads per second
    writes_per_second: float  # direct database writes, spread over the tenants
    tenants: int
    initiatives_per_tenant: int
    zipf_s: float = 1.1
    max_in_flight: int = 32
    seed: int = 11


SIZES = {
    "quick": TTLSizes(
        ttls=(0, 1, 3, 30), seconds=5, rate=100, writes_per_second=4, tenants=4, initiatives_per_tenant=200
    ),
    "full": TTLSizes(
        ttls=(0, 10, 60, 300, 600, 3600),
        seconds=60,
        rate=150,
        writes_per_second=2,
        tenants=6,
        initiatives_per_tenant=1000,
    ),
}


def sizes(profile: str) -> TTLSizes:
    return for_profile(SIZES, profile)


def ttl_label(ttl: float) -> str:
    return "off" if ttl == 0 else f"{ttl:g} s"


def app_env(ttl: float) -> dict[str, str]:
    """The app's environment for one TTL: every cache this experiment reads gets ``ttl``."""
    env = {"CACHELAB_RATE_LIMIT": "1000000/60s", "CACHELAB_CACHE_MODE": "off" if ttl == 0 else "cache-aside"}
    if ttl:
        env |= {f"CACHELAB_{name}_TTL": f"{ttl:g}" for name in ("KPI", "AREAS", "LIST")}
    return env


@dataclass(frozen=True)
class Write:
    tenant: str
    committed: float  # seconds after the load's start, when the commit returned


async def _writer(
    db: Database, ids: dict[str, list[int]], sizes: TTLSizes, start: float, writes: list[Write]
) -> None:
    """Direct database writes at a fixed rate (bypassing the app and its invalidation)."""
    if sizes.writes_per_second <= 0:
        return
    rng = random.Random(sizes.seed + 1)
    tenants = sorted(ids)
    total = int(sizes.seconds * sizes.writes_per_second)
    for n in range(total):
        delay = start + n / sizes.writes_per_second - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tenant = rng.choice(tenants)
        row = await db.update_initiative(tenant, rng.choice(ids[tenant]), {"progress": rng.randint(0, 100)})
        if row is not None:
            writes.append(Write(tenant, time.monotonic() - start))


async def _initiative_ids(db: Database, tenants: Sequence[str]) -> dict[str, list[int]]:
    ids = {}
    for tenant in tenants:
        page = await db.list_initiatives(tenant, page=1, page_size=1000)
        ids[tenant] = [item["id"] for item in page["items"]]
    return ids


def staleness(served: Sequence[Served], writes: Sequence[Write]) -> list[dict[str, Any]]:
    """Per read: was its value older than the tenant's latest committed write, and by how long?

    A value is born when the MISS (or BYPASS) request that computed it was
    sent; a HIT serves the value of the last fill of its URL before it.
    """
    by_tenant: dict[str, list[float]] = defaultdict(list)
    for w in sorted(writes, key=lambda w: w.committed):
        by_tenant[w.tenant].append(w.committed)
    born: dict[str, float] = {}
    rows = []
    for r in sorted(served, key=lambda r: r.sent):
        if r.status != 200:
            continue
        url = r.resource.url
        if r.hit:
            value_born = born.get(url, r.done - (r.age or 0) - 1.0)  # the Age header is whole seconds
        else:
            value_born = r.sent
            if r.x_cache == "MISS":
                born[url] = r.sent
        commits = by_tenant.get(r.resource.tenant, [])
        # The first write after the value was born that had committed before the read was sent.
        i = bisect.bisect_right(commits, value_born)
        missed = i < len(commits) and commits[i] <= r.sent
        rows.append(
            {
                "t": r.t,
                "url": url,
                "tenant": r.resource.tenant,
                "x_cache": r.x_cache,
                "age_s": r.age,
                "stale": missed,
                "behind_s": (r.sent - commits[i]) if missed else 0.0,
                "latency_ms": r.latency_ms,
            }
        )
    return rows


def run_one(ttl: float, sz: TTLSizes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One TTL on a fresh app and Redis: the summary row and the per-read rows."""
    with AppServer(
        env=app_env(ttl), tenants=sz.tenants, initiatives_per_tenant=sz.initiatives_per_tenant
    ) as app:
        assert app.redis_url is not None and app.database_url is not None

        async def log_in() -> dict[str, dict[str, str]]:
            async with httpx.AsyncClient(base_url=app.base_url, timeout=10) as http:
                return await tenant_sessions(http, app)

        sessions = run_async(log_in)  # before the memory baseline: the sessions are not the cache's
        memory_before = redis_memory(app.redis_url)

        async def go() -> tuple[list[Served], list[Write], float, float]:
            db = Database.from_url(app.database_url)
            limits = client_limits(sz.max_in_flight)
            try:
                async with httpx.AsyncClient(base_url=app.base_url, timeout=10, limits=limits) as http:
                    tenants = sorted(sessions)
                    ids = await _initiative_ids(db, tenants)
                    plan = zipf_plan(
                        catalogue(tenants, sz.initiatives_per_tenant, seed=sz.seed),
                        int(sz.seconds * sz.rate),
                        sz.rate,
                        s=sz.zipf_s,
                        seed=sz.seed,
                    )
                    queries_before = await db_queries(http)
                    start = time.monotonic() + 0.05
                    writes: list[Write] = []
                    served, _ = await asyncio.gather(
                        run_paced(http, plan, start, max_in_flight=sz.max_in_flight, sessions=sessions),
                        _writer(db, ids, sz, start, writes),
                    )
                    elapsed = time.monotonic() - start
                    return served, writes, await db_queries(http) - queries_before, elapsed
            finally:
                await db.close()

        served, writes, queries, elapsed = run_async(go)
        memory_after = redis_memory(app.redis_url)

    reads = staleness(served, writes)
    ok = reads  # 200s only: staleness() skips errors
    ages = [r["age_s"] for r in ok if r["age_s"] is not None and r["x_cache"] in ("HIT", "STALE")]
    lat = percentiles([r["latency_ms"] for r in ok], (50, 99))
    requests = len(served)
    row = {
        "ttl_s": ttl,
        "ttl": ttl_label(ttl),
        "requests": requests,
        "errors": sum(1 for r in served if r.status != 200),
        "writes": len(writes),
        "hit_ratio": 0.0 if ttl == 0 else hit_ratio(served),
        "stale_fraction": sum(r["stale"] for r in ok) / len(ok) if ok else math.nan,
        "mean_behind_s": sum(r["behind_s"] for r in ok) / len(ok) if ok else math.nan,
        "max_behind_s": max((r["behind_s"] for r in ok), default=math.nan),
        "mean_age_s": sum(ages) / len(ages) if ages else 0.0,
        "max_age_s": max(ages, default=0),
        "db_queries_per_request": queries / requests if requests else math.nan,
        "db_queries_per_s": queries / elapsed if elapsed else math.nan,
        "redis_memory_kb": (memory_after["key_bytes"] - memory_before["key_bytes"]) / 1024,
        "redis_used_memory_kb": (memory_after["used_memory"] - memory_before["used_memory"]) / 1024,
        "redis_keys": memory_after["keys"] - memory_before["keys"],
        "p50_ms": lat["p50"],
        "p99_ms": lat["p99"],
        **lag_report(served),
    }
    for r in reads:
        r["ttl"] = row["ttl"]
    return row, reads


def run(profile: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every TTL of the profile: (one summary row per TTL, every read of every run)."""
    sz = sizes(profile)
    rows, reads = [], []
    for ttl in sz.ttls:
        # AppServer seeds its database with asyncio.run: off the notebook's event loop.
        row, per_read = off_loop(run_one, ttl, sz)
        rows.append(row)
        reads.extend(per_read)
    return rows, reads


def describe(sz: TTLSizes) -> dict[str, Any]:
    return asdict(sz)


# -- beyond the run: the same workload, simulated -------------------------------
def simulate(sz: TTLSizes, ttl: float, seconds: float, *, warmup: float = 0.0, jitter: float = 0.1
             ) -> dict[str, float]:
    """The measured workload replayed against a model cache, for runs longer than the real ones.

    Same catalogue size, Zipf exponent, read rate, write rate and TTL jitter as
    :func:`run_one`, in virtual time and without Redis: a read hits while its
    resource's entry is younger than its (jittered) TTL, and is stale when its
    tenant was written after the entry was filled. Statistics count only reads
    after ``warmup`` seconds, so a warm-up of one TTL gives the steady state a
    short real run cannot reach. Validated against the measured runs (same
    ``seconds``, no warm-up) in the notebook.
    """
    import numpy as np

    tenants = [f"t{i}" for i in range(sz.tenants)]
    resources = catalogue(tenants, sz.initiatives_per_tenant, seed=sz.seed)
    rng = np.random.default_rng(sz.seed)
    reads = int((warmup + seconds) * sz.rate)
    ranks = ZipfSampler(len(resources), s=sz.zipf_s, seed=sz.seed)
    picks = [ranks.sample() for _ in range(reads)]
    tenant_of = [tenants.index(r.tenant) for r in resources]
    # The writer's exact sequence: the same seeded choices as _writer (tenant, row, value).
    writer_rng = random.Random(sz.seed + 1)
    per_tenant_lists: list[list[float]] = [[] for _ in tenants]
    for n in range(int((warmup + seconds) * sz.writes_per_second)):
        tenant = writer_rng.choice(range(sz.tenants))
        writer_rng.randrange(sz.initiatives_per_tenant)
        writer_rng.randint(0, 100)
        per_tenant_lists[tenant].append(n / sz.writes_per_second)
    per_tenant = [np.asarray(ts) for ts in per_tenant_lists]
    factors = 1 + rng.uniform(-jitter, jitter, size=reads) if jitter else np.ones(reads)
    born = np.full(len(resources), -np.inf)
    expires = np.full(len(resources), -np.inf)
    hits = stale = counted = 0
    behind = 0.0
    for n, k in enumerate(picks):
        t = n / sz.rate
        if ttl > 0 and t < expires[k]:
            hit = True
        else:
            hit = False
            born[k] = t
            expires[k] = t + ttl * factors[n]
        if t < warmup:
            continue
        counted += 1
        if hit:
            hits += 1
            commits = per_tenant[tenant_of[k]]
            i = int(np.searchsorted(commits, born[k], side="right"))
            if i < len(commits) and commits[i] <= t:
                stale += 1
                behind += t - commits[i]
    end = (warmup + seconds)
    return {
        "ttl_s": ttl,
        "seconds": seconds,
        "warmup_s": warmup,
        "hit_ratio": hits / counted if counted else math.nan,
        "stale_fraction": stale / counted if counted else math.nan,
        "mean_behind_s": behind / counted if counted else math.nan,
        "resident_keys": int(np.sum(expires > end)),
    }


def simulate_all(sz: TTLSizes, ttls: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """For every TTL: the model over the measured run's length (to check it against the
    measurement) and in steady state (after a warm-up of one TTL, over max(TTL, run) seconds)."""
    rows = []
    for ttl in ttls or [t for t in sz.ttls if t > 0]:
        rows.append({"model": "same length as the run", **simulate(sz, ttl, sz.seconds)})
        steady = max(ttl, sz.seconds)
        rows.append({"model": "steady state", **simulate(sz, ttl, steady, warmup=ttl)})
    return rows


# -- plots ---------------------------------------------------------------------
def plot_tradeoffs(frame: Any) -> Any:
    """Four panels over the TTLs: hit ratio, staleness, database load, Redis memory."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7.5))
    axes = fig.subplots(2, 2)
    x = list(range(len(frame)))
    labels = list(frame["ttl"])

    def panel(ax: Any, column: str, title: str, ylabel: str, color: str, fmt: str) -> None:
        bars = ax.bar(x, frame[column], color=color)
        ax.bar_label(bars, labels=[fmt.format(v) for v in frame[column]], fontsize=8)
        ax.set_xticks(x, labels)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("TTL")
        ax.margins(y=0.15)

    panel(axes[0][0], "hit_ratio", "Hit ratio", "hits / cached reads", "tab:green", "{:.2f}")
    panel(axes[0][1], "stale_fraction", "Reads behind the database", "fraction of reads", "tab:red",
          "{:.0%}")
    twin = axes[0][1].twinx()
    twin.plot(x, frame["mean_behind_s"], "o--", color="black", label="mean seconds behind (all reads)")
    twin.set_ylabel("seconds behind")
    twin.legend(loc="upper left", fontsize=8)
    twin.set_ylim(bottom=0)
    panel(axes[1][0], "db_queries_per_request", "Database load", "SQL statements per request",
          "tab:blue", "{:.2f}")
    panel(axes[1][1], "redis_memory_kb", "Redis memory", "cached keys (KiB, MEMORY USAGE)", "tab:purple",
          "{:.0f}")
    fig.suptitle("What a TTL trades (direct DB writes, Zipf reads, measured through the app)")
    fig.tight_layout()
    return fig


def plot_age(reads: Any) -> Any:
    """Distribution of the ``Age`` header over cache hits, per TTL (an empirical CDF)."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    hits = reads[reads["x_cache"].isin(["HIT", "STALE"])]
    for ttl, group in hits.groupby("ttl", sort=False):
        ages = np.sort(group["age_s"].dropna().to_numpy())
        if len(ages):
            ax.step(ages, np.arange(1, len(ages) + 1) / len(ages), where="post", label=f"TTL {ttl}")
    ax.set_xlabel("Age header of the served value (s)")
    ax.set_ylabel("fraction of cache hits")
    ax.set_title("How old are the values the cache serves?")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def findings(rows: Sequence[dict[str, Any]], sz: TTLSizes) -> str:
    """What this run measured, in sentences (Markdown), so the notebook text quotes real numbers."""
    cached = [r for r in rows if r["ttl_s"]]
    off = next((r for r in rows if not r["ttl_s"]), None)
    if not cached:
        return "No cached run in this profile."
    short, long_ = cached[0], cached[-1]
    lines = []
    if off:
        cut = 1 - short["db_queries_per_request"] / off["db_queries_per_request"]
        lines.append(
            f"- **Database load.** Without a cache every read cost {off['db_queries_per_request']:.2f} SQL "
            f"statements; a {short['ttl']} TTL already cut that to {short['db_queries_per_request']:.2f} "
            f"({cut:.0%} fewer), and {long_['ttl']} to {long_['db_queries_per_request']:.2f}."
        )
    lines.append(
        f"- **Hit ratio** went from {short['hit_ratio']:.2f} at {short['ttl']} to "
        f"{long_['hit_ratio']:.2f} at {long_['ttl']}."
    )
    lines.append(
        f"- **Staleness is the price.** With {sz.writes_per_second:g} direct writes/s spread over "
        f"{sz.tenants} tenants, {short['stale_fraction']:.0%} of reads at {short['ttl']} returned a value "
        f"older than their tenant's latest write (on average {short['mean_behind_s']:.2f} s behind per "
        f"read, worst {short['max_behind_s']:.1f} s); at {long_['ttl']} it was "
        f"{long_['stale_fraction']:.0%} (worst {long_['max_behind_s']:.1f} s behind)."
    )
    never = [r["ttl"] for r in cached if r["ttl_s"] >= sz.seconds]
    if never:
        lines.append(
            f"- TTLs of {', '.join(never)} are at least as long as this profile's {sz.seconds:g} s run: "
            "nothing expired, so their remaining misses are first reads of each resource (compulsory "
            "misses), and their staleness only grows with the run's length — in production it grows "
            "until the TTL ends it (the model below shows where)."
        )
    if off and (off.get("send_lag_p99_ms") or 0) > 100:
        lines.append(
            f"- **Without a cache the app could not keep up** with {sz.rate:g} reads/s on this machine: "
            f"requests queued (p50 {off['p50_ms']:.0f} ms from their intended start, against "
            f"{short['p50_ms']:.1f} ms with a {short['ttl']} TTL). That, too, is what the cache buys."
        )
    lines.append(
        f"- **Memory.** At {long_['ttl']} the cache held {long_['redis_memory_kb']:.0f} KiB in "
        f"{long_['redis_keys']} keys (against {short['redis_memory_kb']:.0f} KiB at {short['ttl']}): "
        "a longer TTL keeps more of the Zipf tail resident at once."
    )
    return "\n".join(lines)


def plot_model(frame: Any, model: Any) -> Any:
    """Measured points against the model over the same length, and the model's steady state."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.2))
    axes = fig.subplots(1, 3)
    measured = frame[frame["ttl_s"] > 0]
    same = model[model["model"] == "same length as the run"]
    steady = model[model["model"] == "steady state"]
    panels = (
        ("hit_ratio", "Hit ratio", "hits / reads", False),
        ("stale_fraction", "Reads behind the database", "fraction of reads", False),
        ("mean_behind_s", "Mean seconds behind (all reads)", "seconds", True),
    )
    for ax, (column, title, ylabel, log_y) in zip(axes, panels, strict=True):
        ax.plot(steady["ttl_s"], steady[column], "-", color="tab:grey", marker="s", ms=4,
                label="model, steady state")
        ax.plot(same["ttl_s"], same[column], "o", mfc="none", color="tab:blue", ms=9,
                label="model, same length as the run")
        ax.plot(measured["ttl_s"], measured[column], "o", color="black", ms=4,
                label="measured (through the app)")
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("TTL (s)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def model_findings(rows: Sequence[dict[str, Any]], model: Sequence[dict[str, Any]], sz: TTLSizes) -> str:
    same = {m["ttl_s"]: m for m in model if m["model"] == "same length as the run"}
    steady = [m for m in model if m["model"] == "steady state"]
    pairs = [(r, same[r["ttl_s"]]) for r in rows if r["ttl_s"] in same]
    if not pairs or not steady:
        return ""
    d_hit = max(abs(r["hit_ratio"] - m["hit_ratio"]) for r, m in pairs)
    d_stale = max(abs(r["stale_fraction"] - m["stale_fraction"]) for r, m in pairs)
    longest = steady[-1]
    verdict = (
        "at this write rate a long TTL means most reads are behind the database, and only invalidation on "
        "write can fix that."
        if longest["stale_fraction"] > 0.5
        else "at this write rate most reads still see current data."
    )
    return "\n".join([
        f"- **The model reproduces the measurement**: over the same {sz.seconds:g} s, its hit ratio is "
        f"within {d_hit:.3f} and its share of reads behind the database within {d_stale:.3f} of what the app "
        "served — the cache's behaviour is the workload's arithmetic, which is what lets the model run "
        "longer than the experiment.",
        f"- **In steady state at a {longest['ttl_s']:g} s TTL** the model serves {longest['hit_ratio']:.1%} "
        f"hits, but {longest['stale_fraction']:.1%} of reads are behind the database, on average by "
        f"{longest['mean_behind_s']:.0f} s: {verdict}",
    ])


def headlines(rows: Sequence[dict[str, Any]], model: Sequence[dict[str, Any]] = ()) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in rows:
        t = r["ttl"]
        if r["ttl_s"]:
            out[f"hit ratio, TTL {t}"] = round(r["hit_ratio"], 3)
            out[f"reads behind the DB, TTL {t}"] = round(r["stale_fraction"], 3)
        out[f"DB statements per request, TTL {t}"] = round(r["db_queries_per_request"], 3)
    longest = max(rows, key=lambda r: r["ttl_s"])
    out[f"Redis memory KiB, TTL {longest['ttl']}"] = round(longest["redis_memory_kb"], 1)
    steady = [m for m in model if m["model"] == "steady state"]
    if steady:
        m = steady[-1]
        out[f"model steady state hit ratio, TTL {ttl_label(m['ttl_s'])}"] = round(m["hit_ratio"], 3)
        out[f"model steady state reads behind the DB, TTL {ttl_label(m['ttl_s'])}"] = round(
            m["stale_fraction"], 3)
    return out
