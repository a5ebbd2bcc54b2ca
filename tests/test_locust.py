"""Locust scenarios against the real app: user types, metrics, thresholds, shapes, distribution.

Locust always runs as a subprocess (``cachelab.loadtest.runner``): its import
monkey-patches the interpreter, which must not happen inside pytest. Runs are
a few seconds with a handful of users; assertions are about behaviour and
counts (no failures, hit ratio above a floor, corrected >= raw), never speed.
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cachelab.harness.app_server import AppServer
from cachelab.loadtest import (
    LatencyHistogram,
    LoadMetrics,
    ScenarioResult,
    ShapeParams,
    ThresholdError,
    ZipfSampler,
    evaluate,
    load_thresholds,
    parse_mix,
    parse_threshold,
    run_scenario,
    shape_target,
)
from cachelab.loadtest.options import add_arguments
from cachelab.loadtest.pacing import Pacer
from cachelab.loadtest.runner import default_locustfile

# -- pure pieces (no app, no Locust) ---------------------------------------------------


def test_zipf_sampler_is_deterministic_and_skewed_towards_low_ranks():
    a, b = ZipfSampler(50, s=1.1, seed=7), ZipfSampler(50, s=1.1, seed=7)
    draws = [a.sample() for _ in range(5000)]
    assert draws == [b.sample() for _ in range(5000)]
    counts = Counter(draws)
    assert counts[0] > counts[1] > counts[5] > counts.get(40, 0)
    assert abs(counts[0] / 5000 - a.probability(0)) < 0.03
    assert sum(a.probability(k) for k in range(50)) == pytest.approx(1.0)
    assert all(0 <= d < 50 for d in draws)
    assert ZipfSampler(3, s=1.0, seed=1).choice(["x"]) == "x"


def test_histograms_merged_from_workers_equal_one_histogram_of_everything():
    rng = random.Random(3)
    values = [rng.lognormvariate(6, 1.2) for _ in range(20_000)]  # µs, ~400 µs median with a long tail
    whole, parts = LatencyHistogram(), [LatencyHistogram() for _ in range(3)]
    for i, v in enumerate(values):
        whole.record_us(v)
        parts[i % 3].record_us(v)
    merged = LatencyHistogram()
    for part in parts:
        merged.merge_encoded(part.encode())  # the trip through a worker report
    assert merged.count == whole.count == len(values)
    assert merged.summary_ms() == whole.summary_ms()
    exact_p99 = sorted(values)[int(0.99 * len(values))] / 1000
    assert merged.summary_ms()["p99"] == pytest.approx(exact_p99, rel=0.01)  # µs resolution, 3 digits


def test_metrics_drained_from_workers_merge_to_the_same_totals():
    def record(m: LoadMetrics, i: int) -> None:
        status = 429 if i % 10 == 0 else 200
        m.record("GET", "/api/tenants/{t}/kpis", 0.3 + i % 7, status=status,
                 x_cache="HIT" if i % 3 else "MISS", failed=False, lag_s=0.001 * (i % 5))

    single, master = LoadMetrics(), LoadMetrics()
    workers = [LoadMetrics(), LoadMetrics()]
    for i in range(1000):
        record(single, i)
        record(workers[i % 2], i)
        if i % 250 == 0:  # periodic reports, as Locust sends every few seconds
            master.merge_report(workers[0].drain())
    for w in workers:
        master.merge_report(json.loads(json.dumps(w.drain())))
    assert master.summary(10.0) == single.summary(10.0)
    kpis = single.summary(10.0)["GET /api/tenants/{t}/kpis"]
    assert kpis["rate_limited"] == kpis["rate_limited_expected"] == 100
    assert kpis["hit_ratio"] == pytest.approx(666 / 1000, abs=0.002)
    assert kpis["corrected_latency_ms"]["p99"] >= kpis["latency_ms"]["p99"]


def test_thresholds_parse_units_and_endpoint_selectors(tmp_path):
    assert parse_threshold("p99<50ms").limit == 50
    assert parse_threshold("p99.9 <= 800us").limit == pytest.approx(0.8)
    assert parse_threshold("p95<0.2s").limit == 200
    assert parse_threshold("error_rate<0.1%").limit == pytest.approx(0.001)
    t = parse_threshold("kpis:hit_ratio>0.9")
    assert (t.selector, t.metric, t.op, t.limit) == ("kpis", "hit_ratio", ">", 0.9)
    assert parse_threshold("PATCH initiatives/{id}:p99<20ms").selector == "PATCH initiatives/{id}"
    for bad in ("p99 50ms", "latency<5ms", "hit_ratio>5ms", "p99<5%"):
        with pytest.raises(ThresholdError):
            parse_threshold(bad)
    (tmp_path / "t.yaml").write_text("all: [rps>1]\nkpis:\n  - p99<20ms\n  - hit_ratio>0.5\n")
    (tmp_path / "t.txt").write_text("# comment\np99<50ms\n\nerror_rate<1%\n")
    assert [t.expression for t in load_thresholds(tmp_path / "t.yaml")] == ["rps>1", "kpis:p99<20ms",
                                                                           "kpis:hit_ratio>0.5"]
    assert len(load_thresholds(tmp_path / "t.txt")) == 2

    m = LoadMetrics()
    for i in range(100):
        m.record("GET", "/api/tenants/{t}/kpis", 1.0, status=200, x_cache="HIT", failed=False)
        m.record("GET", "/api/tenants/{t}/initiatives", 9.0, status=200, x_cache="MISS", failed=i < 5)
        m.record("GET", "/api/tenants/{t}/initiatives/{id}", 4.0, status=200, x_cache="HIT", failed=False)
    verdicts = {r.expression: r.passed for r in evaluate(
        [parse_threshold(x) for x in ("kpis:p99<2ms", "initiatives:p99<2ms", "initiatives/{id}:p50<5ms",
                                      "error_rate<1%", "initiatives:error_rate<10%", "hit_ratio>0.6",
                                      "rps>20", "dashboard:p99<1s")], m, duration_s=10.0)}
    assert verdicts == {"kpis:p99<2ms": True, "initiatives:p99<2ms": False, "initiatives/{id}:p50<5ms": True,
                        "error_rate<1%": False, "initiatives:error_rate<10%": True, "hit_ratio>0.6": True,
                        "rps>20": True, "dashboard:p99<1s": False}  # no data is a failure, not a pass


def test_shapes_follow_their_schedules_and_end():
    p = ShapeParams(users=20, spawn_rate=2, duration=100, steps=4)
    ramp = [shape_target("ramp", t, p)[0] for t in (0, 45, 89, 95)]
    assert ramp[0] <= ramp[1] <= ramp[2] == ramp[3] == 20 and ramp[1] == 10
    assert [shape_target("step", t, p)[0] for t in (0, 30, 60, 99)] == [5, 10, 15, 20]
    assert [shape_target("spike", t, p)[0] for t in (10, 45, 70)] == [4, 20, 4]
    assert shape_target("soak", 5, p)[0] == 10 and shape_target("soak", 50, p)[0] == 20
    assert shape_target("constant", 0, p) == (20, 20)
    assert shape_target("none", 0, p) == (20, 2)
    assert all(shape_target(s, 100, p) is None for s in ("none", "ramp", "step", "spike", "soak", "constant"))
    assert shape_target("soak", 10_000, ShapeParams(users=3)) == (3, 3)  # no -t: runs until stopped
    with pytest.raises(ValueError):
        shape_target("sawtooth", 0, p)


def test_pacer_keeps_a_schedule_and_reports_lateness():
    pacer = Pacer(0.5, phase=0.0)
    assert pacer.wait() == pytest.approx(0.0, abs=0.01)
    pacer.due -= 2.0  # as if the first task had stalled for 2 s
    assert pacer.lag() == pytest.approx(2.0, abs=0.05)
    assert pacer.wait() == 0.0  # the next task is overdue: no sleep, catch up
    assert pacer.lag() == pytest.approx(1.5, abs=0.05)


def test_mix_names_each_user_type():
    assert parse_mix("browser=3") == {"viewer": 0, "browser": 3, "editor": 0, "reporter": 0, "leaderboard": 0,
                                      "abuser": 0, "poller": 0}
    for bad in ("browser", "robot=1", "viewer=0"):
        with pytest.raises(ValueError):
            parse_mix(bad)


# -- against the real app (AppServer: redis-server, seeded SQLite, uvicorn) ---------------

ALL_TYPES = "viewer=1,browser=1,editor=1,reporter=1,leaderboard=1"


@pytest.fixture(scope="module")
def app() -> Iterator[AppServer]:
    env = {"CACHELAB_CACHE_MODE": "cache-aside", "CACHELAB_RATE_LIMIT": "1000/60s"}
    # Locust's simulated clients all come from 127.0.0.1, each with its own X-Forwarded-For: the app
    # is told the generator is its proxy, as run_scenario does for the apps it starts.
    with AppServer(env=env, tenants=2, initiatives_per_tenant=200, job_workers=1,
                   trusted_proxies="127.0.0.1") as server:
        yield server


def scenario(app: AppServer, results: Path, **kwargs: Any) -> ScenarioResult:
    params: dict[str, Any] = {"duration": 3, "users": 2, "think_time": "0.05,0.15", "timeout": 60}
    params.update(kwargs)
    return run_scenario(base_url=app.base_url, redis_url=app.redis_url, results_dir=results,
                        seed_password=app.seed_password, tenants=app.tenants, **params)


def explain(result: ScenarioResult) -> str:
    return f"exit {result.exit_code}\n{result.table()}\n{result.output_tail}"


@pytest.mark.slow
def test_every_user_type_logs_in_and_runs_against_the_app_without_failures(app, tmp_path):
    result = scenario(app, tmp_path, mix=ALL_TYPES, users=5, duration=4,
                      thresholds=["error_rate<1%", "rps>0"])
    assert result.exit_code == 0, explain(result)
    assert result.failures == 0, explain(result)
    names = set(result.endpoints)
    for expected in ("POST /api/login", "GET /api/dashboard", "GET /api/tenants/{t}/kpis",
                     "GET /api/tenants/{t}/initiatives", "PATCH /api/tenants/{t}/initiatives/{id}",
                     "POST /api/tenants/{t}/reports", "GET /api/jobs/{id}",
                     "POST /api/tenants/{t}/leaderboard", "GET /api/tenants/{t}/leaderboard"):
        assert expected in names, explain(result)
    written = json.loads((tmp_path / "loadtest.json").read_text())
    x_cache = Counter()
    for endpoint in written["endpoints"].values():
        x_cache.update(endpoint["x_cache"])
    assert x_cache["HIT"] > 0 and x_cache["MISS"] > 0, x_cache  # cache-aside: both outcomes seen
    assert written["endpoints"]["GET /api/dashboard"]["x_cache"]["HIT"] + \
        written["endpoints"]["GET /api/dashboard"]["x_cache"]["MISS"] > 0
    # Every user logged in once and carried its session: not one request was refused for it.
    statuses = Counter()
    for endpoint in written["endpoints"].values():
        statuses.update(endpoint["statuses"])
    assert statuses["401"] == statuses["403"] == 0, statuses
    assert written["endpoints"]["POST /api/login"]["requests"] == 5
    assert written["redis"]["commands"] > 0 and written["redis"]["keyspace_hits"] > 0
    assert written["generator"]["processes"]["local"]["cpu_seconds"] > 0
    assert [t["passed"] for t in written["thresholds"]] == [True, True]
    with (tmp_path / "endpoints.csv").open() as fh:
        assert {row["endpoint"] for row in csv.DictReader(fh)} == names | {"Aggregated"}
    assert (tmp_path / "locust_stats.csv").exists() and (tmp_path / "locust.html").exists()


@pytest.mark.slow
def test_browser_heavy_mix_is_mostly_cache_hits_and_worker_processes_merge_exactly(app, tmp_path):
    result = scenario(app, tmp_path, mix="browser=1", users=4, duration=4, processes=2)
    assert result.exit_code == 0 and result.failures == 0, explain(result)
    assert result.hit_ratio is not None and result.hit_ratio > 0.5, explain(result)
    assert result.summary["meta"]["workers"] == 2
    assert len(result.generator["processes"]) == 3  # master + 2 workers
    with (tmp_path / "locust_stats.csv").open() as fh:
        locust_total = next(int(r["Request Count"]) for r in csv.DictReader(fh) if r["Name"] == "Aggregated")
    assert result.totals.requests == locust_total > 0  # every worker's histogram and counters arrived once
    assert result.summary["totals"]["latency_ms"]["count"] == locust_total


@pytest.mark.slow
def test_abusive_client_429s_are_counted_as_expected_not_as_failures(tmp_path):
    # Its own app with a tight limit (20 requests a minute per client address, log-in included).
    result = run_scenario(
        env={"CACHELAB_RATE_LIMIT": "20/60s"}, tenants=1, initiatives_per_tenant=50, job_workers=0,
        mix="abuser=1", users=1, duration=3, results_dir=tmp_path, timeout=60,
    )
    assert result.exit_code == 0, explain(result)
    assert result.failures == 0, explain(result)
    kpis = result.endpoints["GET /api/tenants/{t}/kpis"]
    assert kpis.rate_limited > 0 and kpis.rate_limited_expected == kpis.rate_limited, explain(result)
    assert result.summary["endpoints"]["GET /api/tenants/{t}/kpis"]["statuses"]["429"] == kpis.rate_limited
    assert result.app_cpu and result.app_cpu["app"]["cpu_seconds"] > 0  # this call started the app


@pytest.mark.slow
def test_a_polling_tab_revalidates_with_its_etag_and_gets_304s_without_a_body(app, tmp_path):
    result = scenario(app, tmp_path, mix="poller=1", users=2, duration=3)
    assert result.exit_code == 0 and result.failures == 0, explain(result)
    for name in ("GET /api/tenants/{t}/kpis", "GET /api/tenants/{t}/areas"):
        statuses = result.summary["endpoints"][name]["statuses"]
        # The first read of each tab is a 200 that hands out the tag; unchanged values are 304s after.
        assert 1 <= statuses.get("200", 0) < statuses.get("304", 0), explain(result)
    with (tmp_path / "endpoints.csv").open() as fh:  # the spreadsheet shows them too, not only the JSON
        rows = {row["endpoint"]: row for row in csv.DictReader(fh)}
    kpis = result.summary["endpoints"]["GET /api/tenants/{t}/kpis"]["statuses"]["304"]
    assert int(rows["GET /api/tenants/{t}/kpis"]["not_modified"]) == kpis


@pytest.mark.slow
def test_an_impossible_threshold_fails_the_run(app, tmp_path):
    result = scenario(app, tmp_path, mix="browser=1", users=1, duration=2,
                      thresholds=["p99<0.001ms", "initiatives:error_rate<1%"])
    assert result.exit_code == 1, explain(result)
    assert [(t["expression"], t["passed"]) for t in result.thresholds] == [
        ("p99<0.001ms", False), ("initiatives:error_rate<1%", True)]
    assert "p99<0.001ms FAILED" in result.output_tail


@pytest.mark.slow
def test_constant_arrival_rate_reports_corrected_percentiles_at_least_raw(app, tmp_path):
    rate, seconds = 30, 4
    result = scenario(app, tmp_path, mix="browser=1", users=3, duration=seconds, shape="constant",
                      arrival_rate=rate, think_time="0")
    assert result.exit_code == 0 and result.failures == 0, explain(result)
    assert result.summary["meta"]["shape"] == "constant"
    for name, endpoint in result.summary["endpoints"].items():
        raw, corrected = endpoint["latency_ms"], endpoint["corrected_latency_ms"]
        assert corrected is not None and corrected["count"] == raw["count"], name
        for p in ("p50", "p90", "p99", "p99.9", "max"):
            assert corrected[p] >= raw[p], (name, p, raw, corrected)
    # Paced, not closed-loop: with no think time, free-running users would send far more.
    on_start = result.endpoints["GET /api/tenants"].requests + result.endpoints["POST /api/login"].requests
    assert result.totals.requests - on_start <= rate * seconds * 1.5, explain(result)


def test_locust_options_command_lists_every_option_the_locustfile_adds_with_its_variable():
    class Recorder:
        def __init__(self) -> None:
            self.flags: list[tuple[str, str | None]] = []

        def add_argument(self, flag: str, **kwargs: Any) -> None:
            self.flags.append((flag, kwargs.get("env_var")))

    recorder = Recorder()
    add_arguments(recorder)
    listed = subprocess.run(
        [sys.executable, "-m", "cachelab", "locust-options"], capture_output=True, text=True, timeout=60,
        check=True,
    ).stdout
    listed = " ".join(listed.split())  # help text wraps anywhere
    assert len(recorder.flags) >= 10
    for flag, env_var in recorder.flags:
        assert f" {flag} " in listed, flag
        assert env_var is None or f"[env {env_var}]" in listed, env_var
    assert "CACHELAB_THRESHOLDS" in listed  # read by the plugin, not by a flag


@pytest.mark.slow
def test_the_locustfile_runs_from_any_working_directory(app, tmp_path):
    """`locust -f <path>/dashboard.py` from elsewhere: nothing in it depends on the current folder."""
    locustfile = default_locustfile().resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", "1", "-r", "1",
         "-t", "2s", "--host", app.base_url, "--only-summary", "--mix", "browser=1", "--shape", "step",
         "--results-dir", "out"],
        # The app's password, not whatever ~/.local/state/cachelab/seed-password holds on this machine.
        env={**os.environ, "CACHELAB_SEED_PASSWORD": app.seed_password},
        cwd=elsewhere, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    summary = json.loads((elsewhere / "out" / "loadtest.json").read_text())  # relative to where we ran
    assert summary["totals"]["requests"] > 0
