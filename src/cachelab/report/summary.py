"""``summary.md``: what a reviewer reads on the pull request, in at most 90 lines (a test holds it to that).

Verdicts first, exact figures before timed ones, every timed comparison with
its interval; the capacity table with units; the SLOs. Everything else (every
benchmark, every metric, the notebooks' findings and figures, the manifest)
goes to ``report.html``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cachelab.report import stats
from cachelab.report.capacity import Plan, headroom
from cachelab.report.compare import Row, fmt_ratio, fmt_value, missing, verdict_markdown
from cachelab.report.render import md_table
from cachelab.report.servers import ServersSection

#: Our pattern against the guide's version of it, measured in the same trials:
#: (what, our benchmark, the guide's benchmark).
GUIDE_PAIRS = (
    ("cache-aside hit", "test_fetch_hit", "test_naive_cache_aside_hit"),
    ("cache-aside miss (load and fill)", "test_fetch_miss_fresh_key", "test_naive_cache_aside_miss"),
    ("refresh-ahead read", "test_refresh_ahead", "test_naive_refresh_ahead"),
    ("fixed-window rate check", "test_check_allowed[fixed_window]", "test_check_allowed[naive_fixed_window]"),
    ("tag invalidation", "test_generation_tag_invalidation", "test_naive_tag_invalidation"),
    ("enqueue", "test_enqueue", "test_naive_enqueue"),
    ("job: enqueue, take, finish", "test_enqueue_reserve_ack", "test_naive_enqueue_dequeue"),
)


#: What ours buys with any time it costs over the guide's version (``../shared/design.md``'s catalogue).
GUIDE_BUYS = {
    "cache-aside hit": "0, \"\" and [] are hits; tag generations checked in the same read",
    "cache-aside miss (load and fill)": "one load per key under a stampede; no stale overwrite after a write",
    "refresh-ahead read": "the TTL in the same read; one refresher per key",
    "fixed-window rate check": "atomic, on the server's clock, a counter that always expires",
    "tag invalidation": "atomic, O(1) for any number of keys",
    "enqueue": "a job record (status, deliveries), delays, idempotency keys",
    "job: enqueue, take, finish": "a leased job: a crashed worker's job runs again, not lost",
}

#: The app's request path against its floor (``bench_app.py``): a whole request, in process.
HOTPATH_PAIRS = (
    ("`GET …/kpis`, warm, through the route", "test_app_cached_read[route-kpis]", "test_app_floor[route]"),
    ("`GET …/kpis`, warm, with fast reads (`CACHELAB_FAST_READS=on`)",
     "test_app_cached_read[fast-kpis]", "test_app_floor[fast]"),
)  # fmt: skip

#: Ours against other libraries on the same server in the same trials (``bench_peers.py``, --full).
PEER_PAIRS = (
    ("cache hit, against cashews", "test_cachelab_get_hit", "test_cashews_hit"),
    ("cache hit, against aiocache", "test_cachelab_get_hit", "test_aiocache_hit"),
    ("enqueue, against RQ", "test_cachelab_enqueue", "test_rq_enqueue"),
    ("job cycle, against RQ", "test_cachelab_job_cycle", "test_rq_job_cycle"),
    *(
        (
            f"{algorithm.replace('_', ' ')} check ({path}), against limits",
            f"test_rate_check[{path}-cachelab-{algorithm}]",
            f"test_rate_check[{path}-limits-{algorithm}]",
        )
        for path in ("allowed", "denied")
        for algorithm in ("fixed_window", "sliding_log", "sliding_window")
    ),
)

#: One row of a same-trials comparison: (what, time row ours ÷ theirs, round trips ours, theirs).
PairRow = tuple[str, Row, Any, Any]


@dataclass
class SummaryInput:
    title: str
    context_line: str
    slos: list[dict[str, Any]]
    cache_rows: list[tuple[str, Row]] = field(default_factory=list)  # cache-aside against off, paired
    guide_rows: list[PairRow] = field(default_factory=list)  # ours against the guide's version
    peer_rows: list[PairRow] = field(default_factory=list)  # ours against other libraries
    hotpath_rows: list[PairRow] = field(default_factory=list)  # a cached request against the app's floor
    side_lines: list[str] = field(default_factory=list)  # --full: cachelab peers' and hotpath's verdicts
    capacity: dict[str, Any] | None = None
    plans: Sequence[Plan] = ()
    against: tuple[str, list[Row]] | None = None  # (title, rows) base vs candidate, or baseline folder
    problems: list[str] = field(default_factory=list)
    trials_line: str = ""
    extra_capacity: list[list[Any]] = field(default_factory=list)  # notebook rows: what, value, unit, against
    hit_line: str = ""  # the cache-aside arm's hit ratio with its interval
    servers: ServersSection | None = None  # --against-server: this commit on two servers


def _verdict_line(s: SummaryInput) -> str:
    failed = [x for x in s.slos if x["passed"] is False]
    unmeasured = [x for x in s.slos if x["passed"] is None]
    if failed:
        parts = [f"SLOs: **{len(failed)} failed**"]
    else:
        why = ", ".join(sorted({x.get("note") or "no data" for x in unmeasured}))
        parts = ["SLOs: all passed" + (f" ({len(unmeasured)} not measured: {why})" if unmeasured else "")]
    if s.against is not None:
        regressions = sum(r.verdict == stats.REGRESSION for r in s.against[1])
        gone = len(missing(s.against[1]))
        parts.append(
            f"{regressions} regression(s) against {s.against[0]}"
            if regressions
            else f"no regression against {s.against[0]}"
        )
        if gone:
            parts.append(f"**{gone} metric(s) missing**")
    if s.problems:
        parts.append(f"**{len(s.problems)} step(s) could not run**")
    return "**Verdict:** " + "; ".join(parts) + "."


def build(s: SummaryInput) -> str:
    lines = [f"## {s.title}", "", s.context_line, "", _verdict_line(s), ""]
    if s.against is not None:
        lines += [verdict_markdown(s.against[1], title=f"Against {s.against[0]}", limit=15), ""]
    if s.servers is not None:
        lines += _servers_tables(s.servers)
    if s.cache_rows:
        lines += [
            "### Cache-aside against no cache (the dashboard mix, interleaved trials)",
            "",
            md_table(
                ["metric", "no cache", "cache-aside", "ratio [95 % CI]", "verdict"],
                [
                    [what, fmt_value(r.before), fmt_value(r.after), fmt_ratio(r), _direction(r)]
                    for what, r in s.cache_rows
                ],
            ),
            "",
        ]
    if s.capacity:
        cap = s.capacity
        lines += [
            "### Capacity per 1 000 requests/s of the dashboard mix (cache-aside)",
            "",
            md_table(
                [
                    "Redis ops/s",
                    "commands/request",
                    "Redis CPU (cores, above idle)",
                    "Redis CPU µs/request (above idle)",
                    "network MB/s",
                    "working set MB",
                    "measured at req/s",
                ],
                [
                    [
                        cap.get("redis_ops_per_s"),
                        cap.get("redis_commands_per_request"),
                        cap.get("redis_cpu_cores"),
                        cap.get("redis_cpu_us_per_request"),
                        cap.get("network_mb_s"),
                        cap.get("working_set_mb"),
                        cap.get("measured_rps"),
                    ]
                ],
            ),
            "",
        ]
        if s.hit_line:
            lines += [s.hit_line, ""]
        if s.plans:
            rows = []
            for plan in s.plans:
                h = headroom(cap, plan)
                rows.append(
                    [_plan_label(plan), h["max_rps"], h["binding_limit"], "yes" if h["memory_fits"] else "NO"]
                )
            lines += [
                md_table(
                    ["plan (example limits)", "max req/s of this mix", "binding limit", "working set fits"],
                    rows,
                ),
                "",
            ]
    measured = [row for row in s.extra_capacity if row[1] is not None]
    if measured:
        unreached = [str(row[0]) for row in s.extra_capacity if row[1] is None]
        lines += [
            "### Capacity: memory, persistence and network distance (notebooks: one run each, no interval; "
            "read a value against the comparison beside it)",
            "",
            md_table(["", "value", "unit", "against"], measured),
            "",
        ]
        if unreached:
            lines += [f"_Not reached at the largest size this run measured: {'; '.join(unreached)}._", ""]
    if s.guide_rows:
        lines += _pair_table("Our patterns against the guide's versions (benchmarks, same trials)", "theirs",
                             s.guide_rows, buys=GUIDE_BUYS)
    if s.hotpath_rows:
        lines += _floor_table(s.hotpath_rows)
    if s.peer_rows:
        lines += _pair_table("Ours against other libraries (benchmarks, same server, same trials)",
                             "theirs", s.peer_rows)
    if s.side_lines:
        lines += ["### Interleaved side runs", "", *s.side_lines, ""]
    lines += _slo_section(s.slos)
    if s.problems:
        lines += ["### Problems", "", *[f"- {p}" for p in s.problems], ""]
    lines.append(
        f"<sub>{s.trials_line} Ratios are of geometric means over trials, with 95 % t intervals; a change is "
        "called only when significant after false-discovery control and larger than the minimum effect. "
        "Compare two runs with `cachelab compare A B`. Everything else: `report.html`.</sub>"
    )
    return "\n".join(lines)


def _pair_table(
    title: str, theirs: str, rows: list[PairRow], *, buys: dict[str, str] | None = None
) -> list[str]:
    """``buys``: per operation, what ours does that theirs does not, so a "slower" reads as a price."""
    header = ["operation", f"round trips: ours / {theirs}", f"time: ours ÷ {theirs} [95 % CI]", "ours is"]
    body = [[what, f"{fmt_value(a)} / {fmt_value(b)}", fmt_ratio(r), _faster(r)] for what, r, a, b in rows]
    if buys is not None:
        header.append("what ours adds")
        body = [[*cells, buys.get(row[0], "")] for cells, row in zip(body, rows, strict=True)]
    return [
        f"### {title}",
        "",
        md_table(header, body),
        "",
    ]


def _servers_tables(sv: ServersSection) -> list[str]:
    a, b = sv.base_label.split()[0], sv.candidate_label.split()[0]  # "Redis", "Valkey"

    def pair(values: tuple[Any, Any]) -> str:
        x, y = (fmt_value(v) if v is not None else "–" for v in values)
        return x if x == y else f"{x} / {y}"

    header = [
        "operation",
        f"commands/op ({a} / {b})",
        f"memory per key, B ({a} / {b})",
        f"server µs/op: {b} ÷ {a} [95 % CI]",
        f"time: {b} ÷ {a} [95 % CI]",
        f"{b} is",
    ]
    rows = [
        [
            r.what,
            pair(r.commands),
            pair(r.memory_per_key),
            fmt_ratio(r.server_usec) if r.server_usec else "–",
            fmt_ratio(r.time),
            _faster(r.time),
        ]
        for r in sv.bench
    ]
    lines = [
        f"### Servers side by side: {sv.candidate_label} against {sv.base_label} "
        "(this commit on both, trials interleaved)",
        "",
        md_table(header, rows),
        "",
    ]
    if sv.load:
        load = [[w, fmt_value(r.before), fmt_value(r.after), fmt_ratio(r), _direction(r)] for w, r in sv.load]
        lines += [md_table(["dashboard mix, cache-aside", a, b, f"{b} ÷ {a} [95 % CI]", "verdict"], load), ""]
    lines += ["_Every metric on both servers: `servers.md`; each server's allocator: `manifest.json`._", ""]
    return lines


def _floor_table(rows: list[PairRow]) -> list[str]:
    """The API's warm read as a cost over the same app's no-op. A real request is expected to cost more
    than the no-op, so "slower" is not a finding here; the multiple is."""
    return [
        "### The API's warm read: its cost over the app's no-op `GET /api/live` (in process, same trials)",
        "",
        md_table(
            ["request", "round trips: request / no-op", "time: request ÷ no-op [95 % CI]"],
            [[what, f"{fmt_value(a)} / {fmt_value(b)}", fmt_ratio(r)] for what, r, a, b in rows],
        ),
        "",
        "_No socket, and the time includes waiting on Redis: a cost multiple, not a throughput "
        "(`cachelab hotpath` measures req/s over HTTP). A fast read can cost less than the no-op: it is "
        "answered before FastAPI's routing, which the no-op goes through._",
        "",
    ]


def _faster(row: Row) -> str:
    direction = _direction(row)
    return {"higher": "slower", "lower": "faster"}.get(direction, direction)


def _plan_label(plan: Plan) -> str:
    return (
        f"{plan.name}: {plan.ops_per_sec:,.0f} ops/s, {plan.network_mb_s:g} MB/s, "
        f"{plan.memory_mb:g} MB, {plan.cpu_cores:g} core"
    )


def _slo_section(slos: list[dict[str, Any]]) -> list[str]:
    """A table when any SLO failed or went unmeasured; one line when all passed, since the verdict
    line already said so and a pull request's summary should spend its lines on what needs reading."""
    if slos and all(x["passed"] is True for x in slos):
        measured = ", ".join(f"`{x['slo']}` ({_plain(x['value'])})" for x in slos)
        return ["### SLOs", "", f"All {len(slos)} passed: {measured}.", ""]
    rows = [[f"`{x['slo']}`", _plain(x["value"]), _slo_result(x)] for x in slos]
    return ["### SLOs", "", md_table(["SLO", "measured", "result"], rows), ""]


def _slo_result(slo: dict[str, Any]) -> str:
    if slo["passed"] is None:
        return f"not measured ({slo['note']})"
    return "pass" if slo["passed"] else f"**FAIL** {slo['note']}".strip()


def _direction(row: Row) -> str:
    """Within one run the question is which way, not better or worse: more commands buy fewer queries."""
    if row.verdict in (stats.REGRESSION, stats.IMPROVEMENT, stats.CHANGED) and row.comparison is not None:
        return "higher" if row.comparison.ratio > 1 else "lower"
    return "no significant change" if row.verdict == stats.NO_CHANGE else row.verdict


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 4)
    return value
