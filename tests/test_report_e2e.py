"""`cachelab report --quick` end to end: the folder an engineer attaches to a pull request, and the
acceptance test of its verdicts — two runs of one commit compare as "no change" (A/A), and a slower
database is called a regression (A/B)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cachelab.harness.cost import Cost

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]  # the session fixture runs the report
COST_FIELDS = tuple(Cost().per_op(1))


def _report(out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CACHELAB_")}
    return subprocess.run(
        [sys.executable, "-m", "cachelab", "report", "--quick", "--out", str(out), *args],
        capture_output=True, text=True, timeout=1200, env={**clean, **(env or {})},
    )  # fmt: skip


def _compare(a: Path, b: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cachelab", "compare", str(a), str(b), "--fail-on-regression"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_quick_report_writes_a_complete_folder_and_passes_its_slos(quick_report):
    folder = quick_report.folder
    assert quick_report.returncode == 0, quick_report.output[-4000:]
    for name in ("manifest.json", "metrics.json", "summary.md", "report.html"):
        assert (folder / name).is_file(), name

    manifest = json.loads((folder / "manifest.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{40}", manifest["git"]["commit"] or "")
    assert manifest["packages"]["redis"] and manifest["redis"]["version"]
    assert manifest["machine"]["cpus"] >= 1 and manifest["parameters"]["profile"] == "quick"
    assert all(step["ok"] for step in manifest["steps"]), manifest["steps"]

    trials = sorted((folder / "bench").glob("this-trial*.json"))
    assert len(trials) == manifest["parameters"]["bench_trials"] >= 3
    benchmarks = json.loads(trials[0].read_text())["benchmarks"]
    assert len(benchmarks) > 50  # quick leaves peers, fakeredis and the CPU-only rows to --full
    talks_to_redis = [b for b in benchmarks if b["group"] not in ("cache-keys", "ratelimit-local")]
    assert talks_to_redis and all(set(COST_FIELDS) <= set(b["extra_info"]) for b in talks_to_redis)

    load_trials = manifest["parameters"]["load"]["trials"]
    for label in ("cache_off", "cache_on"):
        for k in range(1, load_trials + 1):
            load = json.loads((folder / "load" / label / f"trial{k}" / "loadtest.json").read_text())
            assert load["totals"]["requests"] > 0 and load["redis"]["commands"] > 0

    metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
    rps = metrics["load.cache_on.rps"]
    assert rps["kind"] == "timed" and len(rps["samples"]) == load_trials and rps["value"] > 0
    fetch_hit = metrics["bench.test_fetch_hit.round_trips"]
    assert fetch_hit == {"kind": "exact", "unit": "RT/op", "better": "lower", "value": 1.0}
    assert metrics["load.cache_on.miss_ratio"]["kind"] == "proportion"
    assert metrics["outage.jobs_lost"]["value"] == 0
    exact_costs = [
        k for k, m in metrics.items() if k.startswith("load.cache_on.cost[") and m["kind"] == "exact"
    ]
    assert any("200 HIT" in k and k.endswith(".redis-rt") for k in exact_costs)

    summary = (folder / "summary.md").read_text()
    assert len(summary.splitlines()) <= 90, "summary.md must fit a pull request"
    for heading in (
        "**Verdict:** SLOs: all passed",
        "Cache-aside against no cache",
        "Capacity per 1 000 requests/s",
        "Our patterns against the guide's versions",
        "### SLOs",
    ):
        assert heading in summary, heading

    executed = sorted(p.stem for p in (folder / "notebooks").glob("*.ipynb"))
    assert executed and all((folder / "notebooks" / f"{nb}.html").is_file() for nb in executed)
    assert manifest["notebooks"] and not [n for n in manifest["notebooks"] if n["error"]]
    figures = list((folder / "figures").glob("*.png"))
    assert len(figures) >= len(executed)


def test_report_html_is_self_contained(quick_report):
    html = (quick_report.folder / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(list((quick_report.folder / "figures").glob("*.png")))
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # no external asset
    assert "<link" not in html and "<script src" not in html
    assert "Every metric (metrics.json)" in html


def test_report_html_renders_in_headless_chromium(quick_report, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium); the screenshot test needs it")
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--hide-scrollbars",
            "--window-size=1280,2400",
            f"--screenshot={shot}",
            (quick_report.folder / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert shot.is_file() and shot.stat().st_size > 20_000  # a rendered page, not a blank one
    from PIL import Image

    with Image.open(shot) as image:
        colours = image.convert("L").getextrema()
    assert colours[0] < 100 < colours[1]  # text and background: something was drawn


@pytest.fixture(scope="module")
def second_run(quick_report, tmp_path_factory) -> Path:
    """Another quick report of the same commit (benchmarks and load; the notebooks' headlines are
    single measurements, shown but never judged, so they add nothing to an A/A test)."""
    out = tmp_path_factory.mktemp("aa") / "b"
    proc = _report(out, "--skip", "notebooks")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def test_a_a_two_runs_of_one_commit_compare_as_no_change(quick_report, second_run):
    proc = _compare(quick_report.folder, second_run)
    assert proc.returncode == 0, proc.stdout[-6000:]
    called = [line for line in proc.stdout.splitlines() if line.startswith("| **")]
    assert "**0 regression(s), 0 improvement(s)" in proc.stdout, "\n".join(called)
    unchanged = int(re.search(r"; (\d+) metrics unchanged", proc.stdout).group(1))
    assert unchanged > 300  # most of the metrics were actually compared, not skipped


def test_a_b_a_slower_database_is_called_a_regression_of_the_uncached_path(quick_report, tmp_path):
    """The database is the only change, so only the load step is run (the benchmarks never touch
    the database), with the profile's trials: fewer leave too little power after FDR control."""
    out = tmp_path / "slow-db"
    # 40 ms a query: on a loaded CI machine the baseline's uncached p50 was 19-28 ms (6-10 ms quiet), and
    # 15 ms of delay was lost in that noise in 2 of 3 runs.
    proc = _report(out, "--skip", "notebooks", "--skip", "benchmarks", env={"CACHELAB_DB_DELAY_MS": "40"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    verdict = _compare(quick_report.folder, out)
    assert verdict.returncode == 1, verdict.stdout[-6000:]
    regressed = set(re.findall(r"\*\*regression\*\* \| `([^`]+)`", verdict.stdout))
    assert {"load.cache_off.p50_ms", "load.cache_off.rps"} <= regressed, verdict.stdout[-6000:]
    assert all(name.startswith("load.") for name in regressed), regressed
