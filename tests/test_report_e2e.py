"""`cachelab report --quick` end to end: the folder an engineer attaches to a pull request."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from cachelab.harness.cost import Cost

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]  # the session fixture runs the report
COST_FIELDS = tuple(Cost().per_op(1))


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

    benchmarks = json.loads((folder / "bench" / "benchmarks.json").read_text())["benchmarks"]
    assert len(benchmarks) > 50  # quick leaves peers and fakeredis to --full
    talks_to_redis = [b for b in benchmarks if not b["group"].startswith("serialize")]  # CPU-only ones
    assert talks_to_redis and all(set(COST_FIELDS) <= set(b["extra_info"]) for b in talks_to_redis)

    for label in ("cache_off", "cache_on"):
        load = json.loads((folder / "load" / label / "loadtest.json").read_text())
        assert load["totals"]["requests"] > 0 and load["redis"]["commands"] > 0

    summary = (folder / "summary.md").read_text()
    for heading in (
        "SLOs: all passed",
        "Load: the dashboard mix",
        "Capacity: per 1 000 requests/s",
        "Microbenchmarks",
    ):
        assert heading in summary, heading
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["load.cache_on.rps"]["value"] > 0
    assert metrics["outage.jobs_lost"]["value"] == 0

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


def test_compare_against_itself_finds_no_regression(quick_report):
    folder = str(quick_report.folder)
    out = subprocess.run(
        [sys.executable, "-m", "cachelab", "compare", folder, folder, "--fail-on-regression"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "No change beyond the noise band." in out.stdout
