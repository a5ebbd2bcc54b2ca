"""``cachelab report --against-server valkey``: the same code on two servers, side by side.

A capacity plan that asks "Redis or Valkey?" needs the two measured the way
``--against REF`` measures two commits: one machine, one run, trials
alternating (Redis, Valkey, Valkey, Redis, …), so whatever the machine does
meanwhile lands on both. The two sides are this checkout twice, each with
``CACHELAB_SERVER`` set, so every server the benchmarks and the app launch is
of that family.

What differs between servers is shown as it is measured:

* **exact** — commands per operation (the same client code sends the same
  commands; a difference here would be a server answering differently) and
  memory per key (``MEMORY USAGE``: encodings and the allocator differ — the
  manifest names each server's allocator);
* **timed** — each benchmark's time and server µs per operation, and the
  dashboard mix's requests/s and latencies, as ratios of the two servers' trials
  paired by trial, with 95 % intervals.

This is a description of two servers, not a verdict on the code: it never
fails ``--fail-on-regression``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachelab.report.bench_trials import FLOOR, TrialRows
from cachelab.report.compare import Row, compare_metrics
from cachelab.report.metrics import Metric, timed
from cachelab.report.sides import Side, this_checkout
from cachelab.servers.redis_server import selected_server

#: One row per pattern a dashboard leans on: (what, benchmark).
SERVER_BENCHES = (
    ("PING (the floor)", FLOOR),
    ("cache-aside hit", "test_fetch_hit"),
    ("cache-aside miss: load and fill", "test_fetch_miss_fresh_key"),
    ("tag invalidation (generations)", "test_generation_tag_invalidation"),
    ("rate check, fixed window", "test_check_allowed[fixed_window]"),
    ("rate check, GCRA", "test_check_allowed[gcra]"),
    ("session: read and slide", "test_session_get_and_slide"),
    ("job: enqueue, take, finish", "test_enqueue_reserve_ack"),
    ("leaderboard: top 10 + member", "test_leaderboard_top10_with_member"),
    ("pipeline of 100 GETs", "test_pipelined_get[100-pipeline]"),
)

#: The dashboard mix (cache-aside arm) on each server: (metric suffix, label).
SERVER_LOAD = (
    ("rps", "requests/s"),
    ("p50_ms", "p50 latency, ms"),
    ("p99_ms", "p99 latency, ms"),
    ("redis_cpu_us_per_request", "server CPU µs per request"),
)


@dataclass(frozen=True)
class ServerRow:
    """One benchmark on both servers: base is the report's own server, candidate ``--against-server``."""

    what: str
    time: Row  # candidate ÷ base, paired by trial
    server_usec: Row | None
    commands: tuple[Any, Any]  # (base, candidate) per operation
    memory_per_key: tuple[Any, Any]  # (base, candidate) bytes


def server_sides(root: Path, other: str) -> tuple[Side, Side]:
    """(this checkout on the selected server, this checkout on ``other``)."""
    this = selected_server()
    other = selected_server(other)
    if other == this:
        raise ValueError(f"--against-server {other}: that is already the server measured (--server {this})")
    checkout = this_checkout(root, this)
    # An explicit binary path would pick the same server for both sides: each side names its family.
    candidate = Side(label=this, root=root, env={"CACHELAB_SERVER": this}, commit=checkout.commit)
    base = Side(
        label=other,
        root=root,
        env={"CACHELAB_SERVER": other, "CACHELAB_REDIS_SERVER": ""},
        commit=checkout.commit,
    )
    return candidate, base


def bench_rows(
    base: Sequence[TrialRows],
    candidate: Sequence[TrialRows],
    base_metrics: Mapping[str, Metric],
    metrics: Mapping[str, Metric],
) -> list[ServerRow]:
    """Each headline benchmark on both servers; trial k of each side ran back to back."""
    rows = []
    for what, name in SERVER_BENCHES:
        pairs = [(b[name]["median_us"], c[name]["median_us"]) for b, c in zip(base, candidate, strict=False)
                 if name in b and name in c]  # fmt: skip
        if len(pairs) < 2:
            continue
        time_row = compare_metrics(
            {name: timed([p[0] for p in pairs], "µs/op", "lower")},
            {name: timed([p[1] for p in pairs], "µs/op", "lower")},
            paired=True,
        )[0]
        key = f"bench.{name}"
        usec = None
        if f"{key}.server_usec" in base_metrics and f"{key}.server_usec" in metrics:
            before, after = base_metrics[f"{key}.server_usec"], metrics[f"{key}.server_usec"]
            usec = compare_metrics({"usec": before}, {"usec": after}, paired=True)[0]

        def value(suffix: str, side: Mapping[str, Metric], key: str = key) -> Any:
            metric = side.get(f"{key}.{suffix}")
            return metric.value if metric is not None else None

        rows.append(
            ServerRow(
                what,
                time_row,
                usec,
                (value("commands", base_metrics), value("commands", metrics)),
                (value("memory_per_key", base_metrics), value("memory_per_key", metrics)),
            )
        )
    return rows


def load_rows(base_metrics: Mapping[str, Metric], metrics: Mapping[str, Metric]) -> list[tuple[str, Row]]:
    """The dashboard mix (cache-aside) on both servers, trial pair by trial pair."""
    names = [f"load.cache_on.{suffix}" for suffix, _ in SERVER_LOAD]
    before = {n: base_metrics[n] for n in names if n in base_metrics}
    after = {n: metrics[n] for n in names if n in metrics}
    compared = {r.name: r for r in compare_metrics(before, after, paired=True)}
    return [(label, compared[n]) for (_, label), n in zip(SERVER_LOAD, names, strict=True) if n in compared]


@dataclass(frozen=True)
class ServersSection:
    """What ``summary.md`` shows: labels such as ``"Valkey 8.1.8"``, and the rows."""

    base_label: str
    candidate_label: str
    bench: list[ServerRow]
    load: list[tuple[str, Row]]
