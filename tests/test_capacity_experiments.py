"""Capacity-planning experiments: memory sizing (07), persistence cost (08), network distance (09).

Each notebook is executed with the quick profile through papermill, the way
``cachelab report`` runs it, and must leave its figures, tables and a summary
whose ``capacity`` rows the report lifts into its capacity table — which is
checked by assembling a real report from those summaries. What the runs
measure is checked where it is a count and not a speed: state lost on an
evicting instance, acknowledged writes lost on kill -9, round trips per call.

The accounting the notebooks rest on is pinned by fast tests: the
interpolation of the memory needed for a target hit ratio, acked-vs-lost
counting on a real kill -9, the state each eviction policy starts from, the
warm-up rule and the model check of the memory curve, and the classification
of the app's keys. One slow test runs the memory experiment itself (LRU, the
quick sizes) and holds its curve to Che's approximation.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from cachelab.analysis import memory_sizing, network_distance, persistence
from cachelab.analysis.cache_model import che_lru, zipf_popularity
from cachelab.report.metrics import load_metrics
from cachelab.servers.redis_server import RedisServer, RedisServerConfig

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
MINE = ("07_memory_sizing", "08_persistence", "09_network_distance")


@pytest.fixture(scope="module")
def executed(quick_report) -> Callable[[str], Path]:
    """``run(name)``: the out_dir where the session's ``cachelab report --quick`` (tests/conftest.py)
    executed the notebook with papermill, exactly as a user's report does — run once, not twice."""

    def run(name: str) -> Path:
        assert (quick_report.folder / "notebooks" / f"{name}.ipynb").is_file(), quick_report.output[-3000:]
        return quick_report.folder / "figures"

    return run


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


# -- the notebooks, as the report runs them ---------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("name", MINE)
def test_notebook_runs_quick_and_writes_figures_tables_and_capacity_rows(name: str, executed):
    out_dir = executed(name)
    number = name[:2]
    summary = json.loads((out_dir / f"{number}_summary.json").read_text())
    assert summary["title"] and summary["headlines"] and summary["profile"] == "quick"
    for label, value in summary["headlines"].items():
        assert value is None or (isinstance(value, int | float) and math.isfinite(value)), (label, value)
    assert summary["figures"] and summary["tables"]
    for artefact in [*summary["figures"], *summary["tables"]]:
        path = out_dir / artefact
        assert artefact.startswith(f"{number}_") and path.is_file() and path.stat().st_size > 0
    for png in summary["figures"]:
        assert (out_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for table in summary["tables"]:
        assert len(_csv(out_dir / table)) >= 1
    capacity = summary["capacity"]
    assert capacity
    for row in capacity:
        assert set(row) == {"row", "value", "unit", "note"} and row["row"] and row["unit"]
        assert row["value"] is None or (isinstance(row["value"], int | float) and math.isfinite(row["value"]))


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_sessions_and_jobs_are_evicted_on_one_lru_instance_and_kept_on_a_separate_noeviction_one(executed):
    out_dir = executed("07_memory_sizing")
    single, split = _csv(out_dir / "07_eviction.csv")
    assert single["setup"].startswith("single") and single["queue_guard_refused"] == "True"
    assert int(single["sessions_lost"]) > 0 and int(single["jobs_lost"]) > 0
    assert int(split["sessions_lost"]) == 0 and int(split["jobs_lost"]) == 0
    curve = _csv(out_dir / "07_memory_curve.csv")
    for policy in ("allkeys-lru", "allkeys-lfu"):
        points = sorted((float(p["fraction"]), float(p["hit_ratio"])) for p in curve if p["policy"] == policy)
        assert len(points) == len(memory_sizing.sizes("quick").fractions)
        assert points[-1][1] > points[0][1]  # more memory, more hits
    objects = {o["object"]: int(o["bytes_per_object"]) for o in _csv(out_dir / "07_bytes_per_object.csv")}
    for kind in ("KPI entry", "dashboard entry", "session", "rate-limit key", "queued job"):
        assert objects[kind] > 0, kind


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_measured_lru_curve_through_the_app_is_within_tolerance_of_ches_approximation():
    """The real experiment (redis-server, the app, HTTP), LRU only, at the quick profile's sizes.

    Che's approximation is recomputed here from the Zipf parameters and the rows each point held,
    not taken from the point. Tolerance per point: MODEL_ALLOWANCE (0.015) + 3 binomial standard
    errors of the measured hit ratio (~0.02 at 4 000 requests).
    """
    sz = replace(memory_sizing.sizes("quick"), policies=("allkeys-lru",), requests=4000)
    result = memory_sizing.run_memory_sizing(sz)
    popularity = zipf_popularity(result.rows, sz.zipf_s)
    points = sorted(result.points, key=lambda p: p["fraction"])
    assert [p["fraction"] for p in points] == sorted(sz.fractions)
    for p in points:
        assert p["steady"] and p["errors"] == 0, p  # the warm-up rule was met (warmup_needed)
        che = che_lru(popularity, p["rows_cached"]).hit_ratio
        served = p["reads"]  # every read answers with X-Cache
        se = math.sqrt(p["hit_ratio"] * (1 - p["hit_ratio"]) / served)
        tolerance = memory_sizing.MODEL_ALLOWANCE + 3 * se
        assert abs(p["hit_ratio"] - che) <= tolerance, (p["fraction"], p["hit_ratio"], che, tolerance)
        # Bytes are not rows: the server's other memory takes its share of every byte budget.
        assert p["objects_fraction"] < p["fraction"]
    assert points[-1]["hit_ratio"] > points[0]["hit_ratio"]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_kill_minus_9_loses_all_acked_writes_without_persistence_some_with_rdb_none_with_fsync_always(
    executed,
):
    kills = {k["mode"]: k for k in _csv(executed("08_persistence") / "08_kill_loss.csv")}
    off, rdb, always = kills["off"], kills["rdb"], kills["aof_always"]
    assert int(off["acked"]) > 0 and int(off["lost"]) == int(off["acked"])
    # What came after the last completed snapshot is lost, and only that.
    assert 0 < int(rdb["lost"]) < int(rdb["acked"])
    assert int(always["acked"]) > 0 and int(always["lost"]) == 0


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_distance_experiment_counts_the_round_trips_of_each_variant(executed):
    out_dir = executed("09_network_distance")
    rows = _csv(out_dir / "09_patterns_by_distance.csv")
    trips = {(r["operation"], r["variant"]): float(r["round_trips_per_call"]) for r in rows}
    batch = network_distance.sizes("quick").batch
    expected = {
        f"{batch} GETs, one at a time": batch,
        f"pipeline of {batch} GETs": 1,
        "Cache.get_many (one MGET)": 1,
        "the guide's: INCR then EXPIRE": 2,
        "GCRA, one EVALSHA": 1,
        "the guide's: read, then extend": 2,
        "one EVALSHA": 1,
        "the guide's refresh-ahead: GET then TTL": 2,
        "Cache.get (one MGET)": 1,
    }
    for (_operation, variant), value in trips.items():
        assert value == expected[variant], variant
    app = _csv(out_dir / "09_app_by_distance.csv")
    assert [float(r["rtt_ms"]) for r in app] == list(network_distance.sizes("quick").rtts_ms)
    assert all(int(r["errors"]) == 0 and float(r["rps"]) > 0 for r in app)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_report_capacity_table_gains_memory_persistence_and_distance_rows(executed, tmp_path):
    from cachelab.report.run import run_report

    figures = tmp_path / "report" / "figures"
    figures.mkdir(parents=True)
    for name in MINE:
        shutil.copy(executed(name) / f"{name[:2]}_summary.json", figures)
    skip = {"benchmarks", "load", "notebooks"}
    run_report(profile_name="quick", out=tmp_path / "report", skip=skip, allow_existing=True)
    summary = (tmp_path / "report" / "summary.md").read_text()
    section = summary.split("### Capacity: memory, persistence and network distance", 1)[1].split("###")[0]
    for needle in ("Bytes per session", "Write throughput, AOF",
                   "lost on kill -9", "App requests/s with Redis +5 ms away", "Read 10 keys at +5 ms"):
        assert needle in section, needle
    # The quick profile's cache sizes may never reach 90 %: then the row is left out and said so,
    # never shown as an empty cell.
    # One such row per eviction policy: each is shown exactly when it was reached.
    rows = json.loads((figures / "07_summary.json").read_text())["capacity"]
    sizings = [r for r in rows if r["row"].startswith("Cache memory for a 90% hit ratio")]
    assert sizings
    for sizing in sizings:
        assert (f"| {sizing['row']} |" in section) is (sizing["value"] is not None), sizing
    if any(s["value"] is None for s in sizings):
        assert "Not reached at the largest size this run measured" in section
    metrics = load_metrics(tmp_path / "report")  # metrics.json is {"schema", "metrics"} since schema 2
    assert any(k.startswith("08.acked writes lost on kill -9") for k in metrics)


# -- the accounting, fast ----------------------------------------------------------------------
def test_memory_for_a_target_hit_ratio_interpolates_in_log_memory():
    points = [(1.0, 0.95), (0.25, 0.70), (0.5, 0.85), (0.75, math.nan)]  # any order; NaN ignored
    assert memory_sizing.memory_for_hit_ratio(points, 0.9) == pytest.approx(0.5 * math.sqrt(2))
    assert memory_sizing.memory_for_hit_ratio(points, 0.85) == pytest.approx(0.5)
    assert memory_sizing.memory_for_hit_ratio(points, 0.6) == 0.25  # reached already at the smallest
    assert memory_sizing.memory_for_hit_ratio(points, 0.99) is None  # never reached
    assert memory_sizing.memory_for_hit_ratio([], 0.9) is None
    # A dip from noise: the first crossing going up in memory is the (conservative) answer.
    dip = [(0.25, 0.5), (0.5, 0.92), (0.75, 0.88), (1.0, 0.97)]
    assert memory_sizing.memory_for_hit_ratio(dip, 0.9) < 0.5


def test_acked_vs_lost_accounting_counts_only_acknowledged_keys_missing(redis_admin: redis.Redis):
    redis_admin.mset({f"seq:{i}": i for i in range(10) if i not in (3, 5)})
    redis_admin.set("seq:10", 10)  # written after the last acknowledged one: not counted
    present = persistence.count_present(redis_admin, 10, batch=4)
    outcome = persistence.KillOutcome(acked=10, present=present)
    assert (present, outcome.lost, outcome.lost_fraction) == (8, 2, 0.2)
    assert math.isnan(persistence.KillOutcome(0, 0).lost_fraction)


def test_a_real_kill_loses_every_acked_write_without_persistence_and_none_with_fsync_always(private_redis):
    volatile = persistence.kill_and_count(private_redis, 0.3)
    assert volatile.acked > 0 and volatile.lost == volatile.acked
    with RedisServer(RedisServerConfig(appendonly=True, appendfsync="always")) as durable:
        outcome = persistence.kill_and_count(durable, 0.3)
    assert outcome.acked > 0 and outcome.lost == 0


def test_a_kill_after_an_rdb_snapshot_loses_only_the_writes_since_it():
    with RedisServer(RedisServerConfig(save="1 1")) as server:
        outcome = persistence.kill_and_count(server, 0.3, after_snapshot=True)
    assert 0 < outcome.lost < outcome.acked


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-lfu"])
def test_lfu_starts_from_counters_that_follow_popularity_and_lru_from_equally_recent_rows(policy: str):
    with RedisServer(RedisServerConfig(maxmemory_policy=policy)) as server:
        client = server.client()
        keys = [f"cl:{{t}}:initiative:row:{i}" for i in range(4)]
        client.mset({k: "x" * 50 for k in keys})
        snapshot = memory_sizing.snapshot_keys(client, keys)
        client.flushall()
        memory_sizing.restore_start(client, snapshot, policy)
        if policy.endswith("lru"):
            # No ranking: LRU's steady state is what was requested last, which the warm-up builds.
            assert all(client.object("idletime", k) <= 1 for k in keys)
        else:
            freq = [client.object("freq", k) for k in keys]
            assert freq == sorted(freq, reverse=True) and freq[0] > freq[-1]
        client.close()


def test_rows_are_counted_without_their_generation_keys_or_other_keys(redis_admin: redis.Redis):
    redis_admin.mset({f"cl:{{acme}}:initiative:row:{i}": "r" for i in range(450)})
    redis_admin.mset({f"cl:{{acme}}:initiative:row:{i}:~gen": 1 for i in range(30)})
    redis_admin.mset({"cl:{acme}:kpi:kpis": "k", "cl:{acme}:initiatives:resp:x": "l"})
    assert memory_sizing.count_rows(redis_admin) == 450


def test_lru_is_measured_after_settle_tc_characteristic_times_since_its_sweep_began_and_one_at_its_size():
    sz = memory_sizing.MemorySizes(
        tenants=1, initiatives_per_tenant=10, fractions=(0.5,), requests=10, warmup=500, settle_tc=2.0
    )

    def need(sent: int, warmed: int, t_c: float, policy: str = "allkeys-lru") -> int:
        return memory_sizing.warmup_needed(policy, sent, warmed, t_c, sz)

    assert need(0, 0, 4000) == 8000  # a fresh sweep: 2 T_C
    assert need(6000, 6000, 4000) == 2000
    assert need(8000, 8000, 4000) == 0
    assert need(20_000, 0, 1500) == 1500  # a smaller size after a shrink: one T_C of its own
    assert need(20_000, 1500, 1500) == 0
    assert need(20_000, 0, 100) == 500  # never less than the per-size minimum
    assert need(0, 0, math.inf) == 500  # every row fits: nothing is evicted, nothing to forget
    # LFU starts from its converged state: the per-size minimum only.
    assert need(0, 0, 4000, "allkeys-lfu") == 500
    assert need(0, 500, 4000, "allkeys-lfu") == 0


def test_an_lru_point_passes_the_model_check_within_the_allowance_plus_three_standard_errors():
    def point(fraction: float, measured: float, che: float, se: float = 0.005) -> dict[str, object]:
        return {"policy": "allkeys-lru", "fraction": fraction, "objects_fraction": fraction / 2,
                "hit_ratio": measured, "che_hit_ratio": che, "hit_ratio_se": se, "steady": True}

    tolerance = memory_sizing.MODEL_ALLOWANCE + 3 * 0.005
    check = memory_sizing.model_check([
        point(0.5, 0.83 + tolerance - 0.001, 0.83),
        point(0.25, 0.70 - tolerance - 0.001, 0.70),
        {**point(0.25, 0.9, 0.7), "policy": "allkeys-lfu"},  # LFU is not checked against Che
    ])
    assert [c["fraction"] for c in check] == [0.25, 0.5]
    assert [c["within"] for c in check] == [False, True]
    assert check[0]["tolerance"] == pytest.approx(tolerance)
    # The old quick profile's error (+0.04 at half the working set) fails at its own sample size.
    assert not memory_sizing.model_check([point(0.5, 0.87, 0.83, se=0.0075)])[0]["within"]


def test_object_types_follow_the_keys_the_patterns_build(redis_url: str):
    from cachelab.client import ResilientRedis
    from cachelab.patterns.cache import Cache
    from cachelab.patterns.queue import JobQueue
    from cachelab.patterns.ratelimit import GCRALimiter
    from cachelab.patterns.sessions import SessionStore, new_session_id

    rr = ResilientRedis.from_url(redis_url)  # builds keys only; never connects
    queue = JobQueue(rr, "reports")
    kpi = Cache(rr, "kpi")
    shapes = {
        kpi.key("acme-01", "kpis"): "KPI entry",
        kpi._gen_key(kpi.key("acme-01", "kpis")): "generation / tag counter",
        Cache(rr, "dashboard").key("acme-01", "dashboard", "member", 7): "dashboard entry",
        Cache(rr, "initiative").key("acme-01", "row", 12): "initiative row",
        SessionStore(rr, idle_timeout=1, absolute_lifetime=2).session_key(new_session_id()): "session",
        SessionStore(rr, idle_timeout=1, absolute_lifetime=2).index_key("7"): "session index (per user)",
        GCRALimiter(rr, 10, 60, prefix="cl:ip").key("10.0.0.1"): "rate-limit key",
        queue.job_key("abc123"): "queued job",
        queue.pending_key: "queue bookkeeping",
    }
    for key, kind in shapes.items():
        assert memory_sizing.object_type(key) == kind, key


def test_persistence_ratios_compare_each_path_with_no_persistence_at_the_same_caller_count():
    rows = [
        {"mode": "off", "path": "enqueue", "callers": 1, "ops_per_s": 1000.0, "p99_ms": 1.0},
        {"mode": "off", "path": "enqueue", "callers": 16, "ops_per_s": 4000.0, "p99_ms": 4.0},
        {"mode": "aof_always", "path": "enqueue", "callers": 1, "ops_per_s": 250.0, "p99_ms": 4.0},
        {"mode": "aof_always", "path": "enqueue", "callers": 16, "ops_per_s": 3000.0, "p99_ms": 6.0},
    ]
    rated = {(r["mode"], r["callers"]): r for r in persistence.with_ratios(rows)}
    assert rated[("aof_always", 1)]["throughput_vs_off"] == 0.25
    assert rated[("aof_always", 16)]["throughput_vs_off"] == 0.75
    assert rated[("aof_always", 16)]["p99_vs_off"] == 1.5
    assert persistence.mode_throughput(persistence.with_ratios(rows), 1)["aof_always"] == pytest.approx(0.25)


def test_round_trip_savings_compare_the_slowest_naive_with_the_fastest_one_round_trip_variant():
    def row(variant: str, ms: float, one: bool, rts: float) -> dict[str, object]:
        return {"rtt_ms": 5.0, "operation": "read 10 keys", "variant": variant, "one_round_trip": one,
                "ms_per_call": ms, "round_trips_per_call": rts}

    saved = network_distance.savings(
        [row("10 GETs", 60.0, False, 10), row("pipeline", 7.0, True, 1), row("MGET", 6.0, True, 1)]
    )
    assert saved == [
        {
            "rtt_ms": 5.0, "operation": "read 10 keys", "naive": "10 GETs", "best": "MGET",
            "naive_ms": 60.0, "best_ms": 6.0, "saved_ms_per_call": 54.0, "speedup": 10.0,
            "naive_round_trips": 10, "best_round_trips": 1,
        }
    ]


def test_distance_rows_compare_each_farther_server_with_the_nearest_and_never_the_nearest_with_itself():
    app = [{"rtt_ms": 0.1, "rps": 1000.0, "p99_ms": 4.0}, {"rtt_ms": 5.0, "rps": 600.0, "p99_ms": 20.0}]
    rows = network_distance.capacity_rows(app, [])
    assert [r["row"] for r in rows] == ["App requests/s with Redis +5 ms away"]
    assert rows[0]["value"] == 600.0
    assert rows[0]["note"].startswith("0.60× the 1,000 req/s at +0.1 ms; p99 20.0 vs 4.0 ms")
    assert network_distance.capacity_rows([], []) == []
