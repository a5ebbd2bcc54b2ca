"""The report's arithmetic: verdicts from trials, exact metrics, SLOs, the capacity table, compare's CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cachelab.cli import main
from cachelab.report import stats
from cachelab.report.capacity import Plan, capacity_rows, headroom
from cachelab.report.compare import FLOOR_METRIC, compare_metrics, drift_warnings, verdict_markdown
from cachelab.report.metrics import (
    SCHEMA,
    Metric,
    MetricsError,
    exact,
    from_trials,
    info,
    load_metrics,
    proportion,
    timed,
    write_metrics,
)
from cachelab.report.run import evaluate_slos, parse_slo


def _trials(center: float, spread: float, n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(center * rng.lognormal(0.0, spread, n))


def test_the_same_distribution_sampled_twice_is_never_called_a_change_across_many_metrics():
    """An A/A test in miniature: 200 timed metrics, each drawn twice from one distribution."""
    before = {f"m{i}": timed(_trials(100, 0.1, 5, seed=i), "ms", "lower") for i in range(200)}
    after = {f"m{i}": timed(_trials(100, 0.1, 5, seed=1000 + i), "ms", "lower") for i in range(200)}
    rows = compare_metrics(before, after)
    assert [r.name for r in rows if r.verdict != stats.NO_CHANGE] == []


def test_a_real_threefold_change_is_called_even_among_two_hundred_unchanged_metrics():
    before = {f"m{i}": timed(_trials(100, 0.1, 4, seed=i), "ms", "lower") for i in range(200)}
    after = {f"m{i}": timed(_trials(100, 0.1, 4, seed=1000 + i), "ms", "lower") for i in range(200)}
    after["m7"] = timed(_trials(300, 0.1, 4, seed=7), "ms", "lower")
    after["m8"] = timed(_trials(30, 0.1, 4, seed=8), "req/s", "higher")
    verdicts = {r.name: r for r in compare_metrics(before, after)}
    assert verdicts["m7"].verdict == stats.REGRESSION and 2.5 < verdicts["m7"].comparison.ratio < 3.6
    assert verdicts["m8"].verdict == stats.REGRESSION  # higher is better, and it fell
    assert sum(r.verdict != stats.NO_CHANGE for r in verdicts.values()) == 2


def test_a_significant_change_under_the_minimum_effect_is_not_called():
    before = {"t": timed([100, 101, 99, 100, 100.5], "ms", "lower")}
    after = {"t": timed([110, 111, 109, 110, 110.5], "ms", "lower")}
    row = compare_metrics(before, after)[0]
    assert row.comparison.q_value < 0.01 and row.verdict == stats.NO_CHANGE
    assert "under the 25% (×1.25 or ×0.8) minimum" in row.why
    interleaved = compare_metrics(before, after, paired=True)[0]
    assert interleaved.verdict == stats.REGRESSION  # interleaved trials may call 10 %


def test_absolute_times_need_a_larger_change_between_runs_than_ratios_to_a_floor():
    """Server µs and p99 cannot be divided by a floor of their own trial, so between separate runs a
    35 % shift (whole-machine drift, seen in A/A runs) is not called; a ratio to PING's is."""
    before = [100, 101, 99, 100, 100.5]
    after = [135, 136, 134, 135, 135.5]
    names = ("bench.x.server_usec", "load.cache_on.p99_ms", "bench.x.ratio_to_ping")
    rows = {
        r.name: r
        for r in compare_metrics(
            {n: timed(before, "µs", "lower") for n in names}, {n: timed(after, "µs", "lower") for n in names}
        )
    }
    assert rows["bench.x.ratio_to_ping"].verdict == stats.REGRESSION
    for name in names[:2]:
        assert rows[name].verdict == stats.NO_CHANGE and "under the 50% (×1.5 or ×0.67)" in rows[name].why
    def server_usec(samples: list[float]) -> dict[str, Metric]:
        return {names[0]: timed(samples, "µs", "lower")}

    doubled = compare_metrics(server_usec(before), server_usec([2 * v for v in before]))
    assert doubled[0].verdict == stats.REGRESSION
    interleaved = compare_metrics(server_usec(before), server_usec(after), paired=True)
    assert interleaved[0].verdict == stats.REGRESSION  # side by side in one run, drift cancels


def test_a_moved_ping_floor_warns_that_the_runs_saw_different_machines():
    def floor(us: float) -> dict[str, Metric]:
        return {FLOOR_METRIC: info(us, "µs/op")}

    assert drift_warnings(floor(80), floor(90)) == []  # within the minimum: the same machine
    (warning,) = drift_warnings(floor(80), floor(50))
    assert "from 80 to 50 µs" in warning and "--against" in warning
    assert drift_warnings({}, floor(50)) == []  # a load-only run has no floor to judge by


def test_exact_metrics_change_by_any_amount_and_cannot_hide_in_noise():
    rows = {
        r.name: r
        for r in compare_metrics(
            {"rt": exact(1, "RT/op"), "same": exact(3, "RT/op"), "mem": exact(200, "B", "lower")},
            {"rt": exact(2, "RT/op"), "same": exact(3, "RT/op"), "mem": exact(180, "B", "lower")},
        )
    }
    assert rows["rt"].verdict == stats.REGRESSION and rows["rt"].why == "exact: 1 → 2"
    assert rows["same"].verdict == stats.NO_CHANGE
    assert rows["mem"].verdict == stats.IMPROVEMENT


def test_a_figure_that_should_be_exact_but_varies_between_trials_is_compared_as_timed():
    assert from_trials([3.0, 3.0, 3.0], "RT/op").kind == "exact"
    varied = from_trials([1.01, 2.97, 1.02], "RT/op")
    assert varied.kind == "timed" and varied.samples == [1.01, 2.97, 1.02] and "varied" in varied.note


def test_hit_ratios_are_compared_as_miss_ratios_so_0_99_to_0_95_is_five_times_the_misses():
    before = {"miss": proportion([10, 10, 10, 10], [1000] * 4)}
    after = {"miss": proportion([50, 50, 50, 50], [1000] * 4)}
    row = compare_metrics(before, after)[0]
    assert row.verdict == stats.REGRESSION
    assert row.comparison.ratio == pytest.approx(5.0) and 3 < row.comparison.low < 5 < row.comparison.high


def test_bursty_misses_widen_the_interval_instead_of_faking_significance():
    calm = stats.compare_proportions([50, 50], [1000, 1000], [60, 60], [1000, 1000])
    bursty = stats.compare_proportions([5, 95], [1000, 1000], [10, 110], [1000, 1000])
    assert stats.dispersion([5, 95], [1000, 1000]) > 10
    assert (bursty.high / bursty.low) > 3 * (calm.high / calm.low)


def test_one_sided_descriptive_and_single_trial_metrics_are_reported_not_judged():
    rows = {
        r.name: r
        for r in compare_metrics(
            {"gone": exact(1, ""), "desc": info(5), "one": timed([1.0], "ms", "lower")},
            {"new": exact(1, ""), "desc": info(50), "one": timed([9.0], "ms", "lower")},
            not_measured=lambda name: name == "gone",  # e.g. its step was skipped this time
        )
    }
    assert {n: r.verdict for n, r in rows.items()} == dict.fromkeys(
        ("gone", "desc", "one", "new"), "not compared"
    )
    text = verdict_markdown(list(rows.values()), title="t")
    assert "0 regression(s)" in text and "4 not compared" in text


def test_the_verdict_lists_regressions_then_improvements_then_counts_the_rest():
    before = {"a": exact(1, "RT"), "b": exact(5, "RT"), "c": exact(2, "RT")}
    after = {"a": exact(1, "RT"), "b": exact(4, "RT"), "c": exact(3, "RT")}
    text = verdict_markdown(compare_metrics(before, after), title="t")
    assert text.index("**regression** | `c`") < text.index("**improvement** | `b`")
    assert "1 regression(s), 1 improvement(s); 1 metrics unchanged" in text


def test_metrics_files_round_trip_and_old_or_corrupt_ones_are_refused_in_one_line(tmp_path):
    metrics = {"x": timed([1.0, 2.0], "ms", "lower"), "y": exact(3, "RT"), "z": proportion([1], [10])}
    write_metrics(tmp_path / "metrics.json", metrics)
    loaded = load_metrics(tmp_path)
    assert loaded["x"].samples == [1.0, 2.0] and loaded["y"].value == 3 and loaded["z"].lookups == [10]
    assert json.loads((tmp_path / "metrics.json").read_text())["schema"] == SCHEMA
    for body, reason in (
        ("{not json", "not valid JSON"),
        ("{}", "older cachelab"),
        (json.dumps({"load.p99_ms": {"value": 1, "noise": 0.2}}), "older cachelab"),
        (json.dumps({"schema": SCHEMA, "metrics": {}}), "holds no metrics"),
        (json.dumps({"schema": SCHEMA, "metrics": {"a": {"kind": "guess"}}}), "no valid kind"),
    ):
        (tmp_path / "metrics.json").write_text(body)
        with pytest.raises(MetricsError, match=reason) as err:
            load_metrics(tmp_path)
        assert "\n" not in str(err.value)


def test_slos_parse_evaluate_fail_without_data_and_skip_what_was_not_measured():
    assert parse_slo("load.cache_on.p99_ms < 200") == ("load.cache_on.p99_ms", "<", 200.0)
    with pytest.raises(ValueError, match="bad SLO"):
        parse_slo("p99 is small")
    metrics = {"x": timed([4, 5, 6], "ms", "lower"), "y": exact(0.99, "ratio", "higher")}
    results = evaluate_slos(
        metrics, ["x<10", "y>=0.995", "z<1", "x<3", "outage.jobs_lost<=0"], skipped={"notebooks"}
    )
    assert [(r["slo"], r["passed"]) for r in results] == [
        ("x<3", False),
        ("y>=0.995", False),
        ("z<1", False),
        ("outage.jobs_lost<=0", None),
    ]
    assert results[2]["note"] == "no data" and results[3]["note"] == "notebooks step skipped"


def test_capacity_scales_measured_costs_to_1000_requests_per_second():
    scenario = {
        "totals": {
            "rps": 250.0,
            "hit_ratio": 0.9,
            "requests": 2500,
            "costs": {
                "200 HIT": {"redis-cmd": {"requests": 2000, "min": 2, "max": 2, "mean": 2.0}},
                "200 MISS": {"redis-cmd": {"requests": 500, "min": 4, "max": 4, "mean": 4.0}},
            },
        },
        "redis": {
            "seconds": 10.0,
            "commands": 9999,  # what the server booked, scripts' inner commands included: not used
            "cpu_seconds": 0.5,
            "bytes_in": 1_000_000,
            "bytes_out": 4_000_000,
            "used_memory": 50 * 2**20,
        },
    }
    rows = capacity_rows(scenario)
    assert rows["redis_commands_per_request"] == 2.4 and rows["commands_counted"] == "sent by the app"
    assert rows["redis_ops_per_s"] == 2400.0
    assert rows["redis_cpu_cores"] == 0.2 and rows["redis_cpu_us_per_request"] == 200.0
    assert rows["network_mb_s"] == 2.0
    plan = Plan.parse("tier:ops=24000,net=10,mem=40,cpu=1")
    h = headroom(rows, plan)
    assert h["max_rps_by"] == {"ops": 10000, "network": 5000, "cpu": 5000}
    assert h["binding_limit"] in {"network", "cpu"} and h["max_rps"] == 5000
    assert h["memory_fits"] is False
    with pytest.raises(ValueError, match="bad --plan"):
        Plan.parse("nonsense")
    assert capacity_rows({"totals": {"rps": 0}, "redis": {}}) is None
    scenario["redis"]["idle_cpu_per_s"] = 0.01  # cron and polling: 0.1 s of the 0.5 s over 10 s
    assert capacity_rows(scenario)["redis_cpu_us_per_request"] == 160.0
    del scenario["totals"]["costs"]
    assert capacity_rows(scenario)["commands_counted"] == "booked by the server"


def test_compare_command_prints_a_verdict_gates_on_regressions_and_refuses_bad_folders(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, p99, rt in ((a, 100, 1), (b, 300, 2)):
        folder.mkdir()
        write_metrics(
            folder / "metrics.json",
            {
                "load.p99_ms": timed([p99 * f for f in (1.0, 1.05, 0.97, 1.02)], "ms", "lower"),
                "bench.x.round_trips": exact(rt, "RT/op"),
            },
        )
        (folder / "manifest.json").write_text(
            json.dumps({"machine": {"cpus": 2}, "parameters": {"profile": "quick"}})
        )
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "2 regression(s)" in out and "exact: 1 → 2" in out and "**regression** | `load.p99_ms`" in out
    assert main(["compare", str(a), str(b), "--fail-on-regression"]) == 1
    assert main(["compare", str(a), str(a), "--fail-on-regression"]) == 0
    capsys.readouterr()
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2
    capsys.readouterr()
    (b / "metrics.json").write_text("{}")
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "older cachelab" in err


def test_ours_against_a_peer_is_judged_trial_by_trial_from_the_same_passes():
    from cachelab.report.run import pair_rows
    from cachelab.report.summary import PEER_PAIRS

    trials = [
        {"test_cachelab_get_hit": {"median_us": 100 * f}, "test_cashews_hit": {"median_us": 150 * f}}
        for f in (1.0, 1.3, 0.8, 1.1)  # the machine's speed moved; the ratio did not
    ]
    metrics = {"bench.test_cachelab_get_hit.round_trips": exact(1, "RT/op"),
               "bench.test_cashews_hit.round_trips": exact(1, "RT/op")}  # fmt: skip
    [(what, row, ours, theirs)] = pair_rows(trials, metrics, PEER_PAIRS)
    assert what == "cache hit, against cashews" and (ours, theirs) == (1, 1)
    assert row.comparison.ratio == pytest.approx(100 / 150) and row.comparison.low == row.comparison.high
    assert row.verdict == "improvement"  # the same ratio in every trial, however the machine moved


def test_the_apis_warm_read_is_a_cost_over_its_no_op_in_its_own_table_not_a_slower_verdict():
    from cachelab.report.run import pair_rows
    from cachelab.report.summary import HOTPATH_PAIRS, SummaryInput, build

    trials = [{"test_app_cached_read[route-kpis]": {"median_us": 700 * f},
               "test_app_floor[route]": {"median_us": 100 * f}} for f in (1.0, 1.2, 0.9)]  # fmt: skip
    metrics = {"bench.test_app_cached_read[route-kpis].round_trips": exact(1, "RT/op"),
               "bench.test_app_floor[route].round_trips": exact(0, "RT/op")}  # fmt: skip
    rows = pair_rows(trials, metrics, HOTPATH_PAIRS)
    summary = build(SummaryInput(title="t", context_line="c", slos=[], hotpath_rows=rows))
    heading = next(line for line in summary.splitlines() if "no-op" in line and line.startswith("###"))
    assert "cost over" in heading
    [line] = [x for x in summary.splitlines() if x.startswith("| `GET …/kpis`, warm, through the route")]
    assert "| 1 / 0 |" in line and "7×" in line and "slower" not in line
    assert "Our patterns against the guide" not in summary  # no guide rows, no guide table


def test_slos_that_all_passed_take_one_line_and_a_failed_one_brings_back_the_table():
    from cachelab.report.summary import SummaryInput, build

    slos = ["load.cache_on.p99_ms<1000", "outage.jobs_lost<=0"]
    p99 = timed([5.0], "ms", "lower")
    passing = evaluate_slos({"load.cache_on.p99_ms": p99, "outage.jobs_lost": exact(0, "jobs")}, slos)
    summary = build(SummaryInput(title="t", context_line="c", slos=passing))
    assert "All 2 passed: `load.cache_on.p99_ms<1000` (5.0), `outage.jobs_lost<=0` (0)." in summary
    assert "| SLO |" not in summary

    failing = evaluate_slos({"load.cache_on.p99_ms": p99, "outage.jobs_lost": exact(2, "jobs")}, slos)
    summary = build(SummaryInput(title="t", context_line="c", slos=failing))
    [row] = [line for line in summary.splitlines() if line.startswith("| `outage.jobs_lost<=0`")]
    assert "**FAIL**" in row and "All 2 passed" not in summary


def test_a_slower_pattern_row_says_what_ours_adds_and_unreached_capacity_rows_are_named():
    from cachelab.report.run import pair_rows
    from cachelab.report.summary import GUIDE_PAIRS, SummaryInput, build

    [(what, ours, guides)] = [p for p in GUIDE_PAIRS if p[0] == "fixed-window rate check"]
    trials = [{ours: {"median_us": 130 * f}, guides: {"median_us": 100 * f}} for f in (1.0, 1.2, 0.9)]
    rows = pair_rows(trials, {}, ((what, ours, guides),))
    unreached = "Cache memory for a 90% hit ratio, lru"
    capacity = [["Bytes per session", 421, "B", "MEMORY USAGE"], [unreached, None, "MB", "not reached"]]
    summary = build(
        SummaryInput(title="t", context_line="c", slos=[], guide_rows=rows, extra_capacity=capacity)
    )
    [line] = [x for x in summary.splitlines() if x.startswith("| fixed-window rate check")]
    assert "slower" in line and "server's clock" in line
    assert "what ours adds" in summary
    assert f"_Not reached at the largest size this run measured: {unreached}._" in summary
    assert f"| {unreached}" not in summary  # never an empty cell


def _report_cli(cwd, *args):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "cachelab", "report", "--quick", "--skip", "benchmarks", "--skip", "load",
         "--skip", "notebooks", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_report_run_from_another_folder_records_the_checkouts_commit(tmp_path):
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    proc = _report_cli(tmp_path, "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["git"]["commit"] == head
    assert f"Commit `{head[:7]}" in (tmp_path / "r" / "summary.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no results/ in the current folder


def test_a_report_refuses_a_non_empty_out_folder_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    proc = _report_cli(tmp_path, "--out", str(out))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "exists and is not empty" in proc.stderr
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_run_that_lost_a_step_fails_the_gate_and_one_that_skipped_it_does_not(tmp_path, capsys):
    base, lost, skipped = tmp_path / "base", tmp_path / "lost", tmp_path / "skipped"
    rps = timed([1, 2], "req/s", "higher")
    for folder, metrics, skip in (
        (base, {"bench.x.round_trips": exact(1, "RT/op"), "load.cache_on.rps": rps}, []),
        (lost, {"load.cache_on.rps": rps}, []),
        (skipped, {"load.cache_on.rps": rps}, ["benchmarks"]),
    ):
        folder.mkdir()
        write_metrics(folder / "metrics.json", metrics)
        (folder / "manifest.json").write_text(json.dumps({"parameters": {"skip": skip}}))
    assert main(["compare", str(base), str(lost), "--fail-on-regression"]) == 1
    assert "1 metric(s) missing" in capsys.readouterr().out
    assert main(["compare", str(base), str(skipped), "--fail-on-regression"]) == 0


def test_a_report_with_an_unreachable_redis_url_stops_at_once_in_one_line(tmp_path, unused_tcp_port):
    import os
    import subprocess
    import sys

    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{unused_tcp_port}/0"}
    cmd = [sys.executable, "-m", "cachelab", "report", "--quick", "--out", str(tmp_path / "r")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "REDIS_URL does not answer" in proc.stderr and not (tmp_path / "r").exists()


def test_a_clock_sized_reply_keeps_its_round_trips_exact_and_its_bytes_timed(tmp_path):
    """Two runs an hour-digit apart send 55 and 57 B for the same denied check; that is the clock,
    not a change. Declared by the benchmark, the bytes are judged as timed; round trips stay exact."""
    from cachelab.report.bench_trials import bench_metrics, parse_trial

    def trial(name: str, bytes_out: float) -> dict:
        row = {"name": name, "group": "g", "stats": {"median": 1e-4},
               "extra_info": {"round_trips_per_op": 1.0, "bytes_out_per_op": bytes_out,
                              "bytes_vary": "ms left in the window"}}  # fmt: skip
        ping = {"name": "test_ping_floor", "group": "floor", "stats": {"median": 5e-5}, "extra_info": {}}
        path = tmp_path / f"{name}-{bytes_out}.json"
        path.write_text(json.dumps({"benchmarks": [row, ping]}))
        return parse_trial(path)

    run_a = bench_metrics([trial("test_check_denied[fixed_window]", 57.2)] * 3)
    run_b = bench_metrics([trial("test_check_denied[fixed_window]", 55.1)] * 3)
    key = "bench.test_check_denied[fixed_window]"
    assert run_a[f"{key}.round_trips"].kind == "exact"
    assert run_a[f"{key}.bytes_out"].kind == "timed" and "varies" in run_a[f"{key}.bytes_out"].note
    rows = compare_metrics(run_a, run_b)
    assert not [r for r in rows if r.verdict in ("regression", "improvement", "change")]


def test_each_benchmark_is_divided_by_the_floor_that_moves_with_it(tmp_path):
    """A blocking socket and an event loop wake differently: beside a busy core the sync PING fell
    to 0.55× the async one (1.4× when idle), while interpreter work slowed. Each row over the floor
    of its own kind (sync PING, async PING, or CPU work for a row with no round trips) keeps its
    ratio when the machine's state moves between runs; over the async PING they 'changed' 2.5×."""
    from cachelab.report.bench_trials import bench_metrics, parse_trial

    def trial(k: int, async_ping: float, sync_ping: float, cpu: float) -> dict:
        def row(name: str, seconds: float, client: str, round_trips: float | None = 1.0) -> dict:
            return {"name": name, "group": "g", "stats": {"median": seconds},
                    "extra_info": {"floor": client, "round_trips_per_op": round_trips}}  # fmt: skip

        rows = [
            row("test_async_floor[ping]", async_ping, "async"),
            row("test_sync_floor[ping]", sync_ping, "sync"),
            row("test_cpu_floor", cpu, "sync", round_trips=0.0),
            row("test_sync_get", 1.1 * sync_ping, "sync"),
            row("test_async_get", 1.2 * async_ping, "async"),
            row("test_make_key", 0.3 * cpu, "sync", round_trips=0.0),
            row("test_leased_check", 0.8 * cpu, "async", round_trips=0.01),
        ]
        path = tmp_path / f"{async_ping}-{sync_ping}-{k}.json"
        path.write_text(json.dumps({"benchmarks": rows}))
        return parse_trial(path)

    def run(async_ping: float, sync_ping: float, cpu: float) -> dict:
        return bench_metrics([trial(k, async_ping * (1 + k / 100), sync_ping, cpu) for k in range(4)])

    idle, busy = run(80e-6, 110e-6, 2e-6), run(52e-6, 28e-6, 3.5e-6)
    assert idle["bench.test_sync_get.ratio_to_ping"].value == pytest.approx(1.1, rel=0.03)
    assert idle["bench.test_make_key.ratio_to_ping"].value == pytest.approx(0.3, rel=0.03)
    assert idle["bench.test_make_key.ratio_to_ping"].unit == "× CPU floor"
    assert idle["bench.test_leased_check.ratio_to_ping"].value == pytest.approx(0.8, rel=0.03)
    for floor in ("test_sync_floor[ping]", "test_cpu_floor"):
        assert idle[f"bench.{floor}.ratio_to_ping"].kind == "info"  # floor over floor: shown, not judged
    assert "bench.test_async_floor[ping].ratio_to_ping" not in idle
    rows = compare_metrics(idle, busy)
    assert not [r for r in rows if r.verdict in ("regression", "improvement")], [r for r in rows if r.judged]
