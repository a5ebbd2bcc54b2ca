"""Distributed Locust on loopback: one ``--master``, two ``--worker`` processes, the real app.

``docker compose up --scale locust-worker=N`` (and Locust workers on other
hosts) rely on the master merging what every worker measured: Locust's own
counters, and cachelab's plugin data (per-endpoint counts, X-Cache outcomes,
µs HdrHistograms) shipped in each worker's reports. The oracle here is
independent of that machinery: a second locustfile, loaded beside the
dashboard's in the *workers* only, tallies every request event its process
fired (endpoint, status, X-Cache, raw response time) into a JSON file at exit.
The master's totals, hit ratios and percentiles must equal those rebuilt from
the workers' own tallies — exactly, not approximately.

Bounded: a 5 s run with a few users, a hard timeout on every process, and
every process this test started is killed by its pid if it outlives it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cachelab.harness.app_server import AppServer
from cachelab.loadtest import LatencyHistogram
from cachelab.loadtest.metrics import TOTAL, hit_ratio
from cachelab.loadtest.runner import default_locustfile
from cachelab.servers.redis_server import HOST, free_port

RUN_SECONDS = 5
WORKERS = 2
MIX = "viewer=1,browser=2,editor=1,reporter=1,leaderboard=1"

# Loaded with ``-f dashboard.py,tally.py`` by the workers: counts what this process sent.
TALLY = '''
import json, os
from locust import events
from locust.runners import WorkerRunner

_seen = []

@events.request.add_listener
def _tally(request_type, name, response_time, response=None, exception=None, **_):
    headers = getattr(response, "headers", None)
    _seen.append([f"{request_type.upper()} {name}", getattr(response, "status_code", None),
                  headers.get("X-Cache") if headers is not None else None,
                  exception is not None, response_time])

@events.quitting.add_listener
def _write(environment, **_):
    if isinstance(environment.runner, WorkerRunner):
        path = os.path.join(os.environ["TALLY_DIR"], f"worker-{os.getpid()}.json")
        with open(path, "w") as fh:
            json.dump(_seen, fh)
'''


@pytest.fixture(scope="module")
def app() -> Iterator[AppServer]:
    env = {"CACHELAB_CACHE_MODE": "cache-aside", "CACHELAB_RATE_LIMIT": "100000/60s"}
    with AppServer(env=env, tenants=2, initiatives_per_tenant=200, job_workers=1) as server:
        yield server


def _locust_env(tally_dir: Path, seed_password: str) -> dict[str, str]:
    # As in the runner: ambient cachelab settings must not leak into the generator; the workers' users
    # log in with the app's seed password.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHELAB_") and k != "REDIS_URL"}
    env.update(PYTHONUNBUFFERED="1", TALLY_DIR=str(tally_dir), CACHELAB_SEED_PASSWORD=seed_password)
    return env


@contextlib.contextmanager
def _processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:  # only what this test started, each by its own process group
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def run_distributed(app: AppServer, out: Path) -> tuple[int, list[list[Any]], str]:
    """Master + ``WORKERS`` workers, headless; returns (master exit code, every worker's tally, log tail)."""
    locustfile = default_locustfile()
    tally_file = out / "tally.py"
    tally_file.write_text(TALLY)
    tally_dir = out / "tallies"
    tally_dir.mkdir()
    port = free_port()
    env = _locust_env(tally_dir, app.seed_password)
    master_cmd = [
        sys.executable, "-m", "locust", "-f", str(locustfile), "--master", "--headless",
        "--master-bind-host", HOST, "--master-bind-port", str(port),
        "--expect-workers", str(WORKERS), "--expect-workers-max-wait", "60",
        "-u", "4", "-r", "4", "-t", f"{RUN_SECONDS}s", "--host", app.base_url,
        "--only-summary", "--loglevel", "INFO", "--csv", str(out / "locust"),
        "--results-dir", str(out), "--redis-url", app.redis_url or "",
        "--mix", MIX, "--think-time", "0.05,0.15", "--seed", "3", "--tenants", str(app.tenants),
    ]
    worker_cmd = [
        sys.executable, "-m", "locust", "-f", f"{locustfile},{tally_file}", "--worker",
        "--master-host", HOST, "--master-port", str(port), "--loglevel", "INFO",
    ]
    cwd = locustfile.parent.parent
    with _processes() as procs, (out / "master.log").open("wb") as log:
        master = subprocess.Popen(master_cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                  start_new_session=True)
        procs.append(master)
        for i in range(WORKERS):
            with (out / f"worker-{i}.log").open("wb") as wlog:
                procs.append(subprocess.Popen(worker_cmd, stdout=wlog, stderr=subprocess.STDOUT, env=env,
                                              cwd=cwd, start_new_session=True))
        code = master.wait(timeout=RUN_SECONDS + 60)
        for worker in procs[1:]:
            worker.wait(timeout=30)
    tail = "\n".join((out / "master.log").read_text(errors="replace").splitlines()[-30:])
    tallies = [json.loads(p.read_text()) for p in sorted(tally_dir.glob("worker-*.json"))]
    return code, tallies, tail


@pytest.mark.slow
def test_master_totals_histograms_and_hit_ratios_equal_the_sum_of_the_workers(app, tmp_path):
    code, tallies, tail = run_distributed(app, tmp_path)
    assert code == 0, tail
    assert len(tallies) == WORKERS, tail
    assert all(len(t) > 0 for t in tallies), "each worker must have run users"

    # What the workers sent, rebuilt independently of the plugin's reports.
    requests: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    x_cache: dict[str, Counter[str]] = defaultdict(Counter)
    latency: dict[str, LatencyHistogram] = defaultdict(LatencyHistogram)
    for tally in tallies:
        for endpoint, _status, cache, failed, ms in tally:
            requests[endpoint] += 1
            failures[endpoint] += failed
            if cache:
                x_cache[endpoint][cache.upper()] += 1
            latency[endpoint].record_ms(ms)
    total = sum(requests.values())

    summary = json.loads((tmp_path / "loadtest.json").read_text())
    assert summary["meta"]["runner"] == "MasterRunner" and summary["meta"]["workers"] == WORKERS
    processes = summary["generator"]["processes"]
    assert "master" in processes and len(processes) == 1 + WORKERS

    endpoints = {k: v for k, v in summary["endpoints"].items() if k != TOTAL}
    assert set(endpoints) == set(requests)
    assert len(endpoints) >= 5  # the mix reached logins, pages, edits, reports and the leaderboard
    for name, e in endpoints.items():
        assert e["requests"] == requests[name], name
        assert e["failures"] == failures[name] == 0, name
        assert {k: v for k, v in e["x_cache"].items() if v} == dict(x_cache[name]), name
        assert e["hit_ratio"] == hit_ratio(x_cache[name]), name
        assert e["latency_ms"] == latency[name].summary_ms(), name  # merged HdrHistograms are exact
    assert summary["totals"]["requests"] == total
    merged_hits = Counter()
    for c in x_cache.values():
        merged_hits.update(c)
    assert summary["totals"]["hit_ratio"] == hit_ratio(merged_hits) and merged_hits["HIT"] > 0

    # The encoded histograms in histograms.json re-merge to the same counts.
    histograms = json.loads((tmp_path / "histograms.json").read_text())
    assert {k: LatencyHistogram.decode(v["latency"]).count for k, v in histograms.items()} == dict(requests)

    # Locust's own statistics, merged by Locust from the same workers, agree too.
    with (tmp_path / "locust_stats.csv").open() as fh:
        rows = {(r["Type"], r["Name"]): int(r["Request Count"]) for r in csv.DictReader(fh)}
    assert rows.pop(("", TOTAL)) == total
    assert {f"{t.upper()} {n}": c for (t, n), c in rows.items()} == dict(requests)
