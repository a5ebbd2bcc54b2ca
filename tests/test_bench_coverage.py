"""The pattern benchmarks: every pattern module is benchmarked, and every row carries its server cost."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cachelab.harness.bench import COST_FIELDS

ROOT = Path(__file__).resolve().parents[1]
PATTERNS = ROOT / "src" / "cachelab" / "patterns"
BENCH = ROOT / "bench"
PATTERN_BENCH_FILES = [
    "bench_cache.py",
    "bench_stampede.py",
    "bench_invalidation.py",
    "bench_ratelimit.py",
    "bench_sessions.py",
    "bench_queue.py",
    "bench_leaderboard.py",
    "bench_peers.py",
    "bench_concurrency.py",
]


def test_every_pattern_module_is_imported_by_a_benchmark():
    modules = sorted(p.stem for p in PATTERNS.glob("*.py") if p.stem != "__init__")
    sources = "\n".join(p.read_text() for p in BENCH.glob("bench_*.py"))
    imported = set(re.findall(r"cachelab\.patterns\.(\w+)", sources))
    missing = [m for m in modules if m not in imported]
    assert not missing, f"pattern modules without a benchmark: {missing}"


# The measuring run below takes ~50 s on 2 cores (every pattern benchmark, in a second pytest): the
# checks that need it are in the long set. The fast loop still runs every benchmark once, in process.
needs_a_measuring_run = pytest.mark.slow


@pytest.fixture(scope="module")
def pattern_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """One short measuring run of the pattern benchmarks (rounds cut to the minimum)."""
    out = tmp_path_factory.mktemp("bench") / "patterns.json"
    cmd = [
        sys.executable, "-m", "pytest", *(f"bench/{f}" for f in PATTERN_BENCH_FILES), "--benchmark-only",
        f"--benchmark-json={out}", "--benchmark-max-time=0.01", "--benchmark-min-rounds=1",
        "-p", "no:cacheprovider", "-q",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {b["fullname"].split("/")[-1]: b for b in json.loads(out.read_text())["benchmarks"]}


def _row(results: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    return results[name]["extra_info"]


@needs_a_measuring_run
def test_every_pattern_benchmark_records_server_cost_and_a_group(pattern_results: dict[str, dict[str, Any]]):
    assert len(pattern_results) >= 60
    for name, bench in pattern_results.items():
        info = bench["extra_info"]
        missing = [f for f in COST_FIELDS if f not in info]
        assert not missing, f"{name} lacks {missing}"
        assert bench["group"], f"{name} has no group"
        assert info["time_unit"] in ("op", "experiment"), name


@needs_a_measuring_run
def test_round_trips_match_each_modules_documented_cost(pattern_results: dict[str, dict[str, Any]]):
    expected = {
        "bench_cache.py::test_fetch_hit": 1,
        "bench_cache.py::test_fetch_hit_with_tag": 1,
        "bench_cache.py::test_fetch_stale_while_revalidate": 1,
        "bench_cache.py::test_fetch_miss_fresh_key": 2,
        "bench_cache.py::test_fetch_miss_with_lock": 4,
        "bench_cache.py::test_refresh_ahead": 1,
        "bench_cache.py::test_naive_refresh_ahead": 2,
        "bench_cache.py::test_write_through": 1,
        "bench_cache.py::test_get_many_100": 1,
        "bench_invalidation.py::test_generation_tag_invalidation": 1,
        "bench_invalidation.py::test_naive_tag_invalidation": 3,
        "bench_invalidation.py::test_naive_keys_invalidation": 2,
        "bench_sessions.py::test_session_get_and_slide": 1,
        "bench_sessions.py::test_session_create": 2,
        "bench_queue.py::test_enqueue_reserve_ack": 3,
        "bench_leaderboard.py::test_leaderboard_top10_with_member": 1,
        "bench_stampede.py::test_token_lock_acquire_release": 2,
        "bench_queue.py::test_stream_enqueue": 1,
        "bench_queue.py::test_drain[list]": 2,
        "bench_queue.py::test_drain_ack_and_reserve": 1,
        "bench_concurrency.py::test_acquire_release": 2,
        "bench_concurrency.py::test_acquire_refused": 1,
    }
    for algorithm in ("fixed_window", "sliding_log", "sliding_window", "token_bucket", "gcra"):
        expected[f"bench_ratelimit.py::test_check_allowed[{algorithm}]"] = 1
        expected[f"bench_ratelimit.py::test_check_denied[{algorithm}]"] = 1
    for name, round_trips in expected.items():
        assert _row(pattern_results, name)["round_trips_per_op"] == pytest.approx(round_trips), name
    naive_falsy = _row(pattern_results, "bench_cache.py::test_naive_cache_aside_falsy_value")
    assert naive_falsy["loader_calls_per_op"] == 1.0  # the seed reloads a cached 0 on every read
    assert (
        _row(pattern_results, "bench_cache.py::test_naive_refresh_ahead")["refreshes_started_per_op"] == 1.0
    )
    assert _row(pattern_results, "bench_cache.py::test_refresh_ahead")["refreshes_started"] == 1
    assert _row(pattern_results, "bench_cache.py::test_fetch_hit")["memory_per_key"] > 100
    scan = _row(pattern_results, "bench_invalidation.py::test_scan_unlink_invalidation[500]")
    assert "keys" not in scan["commands"] and scan["commands"]["scan"] >= 20


@needs_a_measuring_run
def test_stampede_rows_count_loader_calls_per_strategy(pattern_results: dict[str, dict[str, Any]]):
    rows = {
        s: _row(pattern_results, f"bench_stampede.py::test_stampede_at_expiry[{s}]")
        for s in ("none", "single_flight", "lock", "xfetch", "lock+xfetch")
    }
    # Unprotected rows load once per caller that misses before the first fill: timing-dependent.
    assert all(rows[s]["callers"] == 100 and rows[s]["loader_calls"] >= 1 for s in ("none", "xfetch"))
    assert rows["single_flight"]["loader_calls"] == 1
    # The lock elects one loader per lease; a waiter past lock_wait (3 s) would load too, never here.
    assert rows["lock"]["loader_calls"] == rows["lock+xfetch"]["loader_calls"] == 1
    for row in rows.values():
        assert row["p99_ms"] > 0 and row["round_trips_per_op"] >= 1
