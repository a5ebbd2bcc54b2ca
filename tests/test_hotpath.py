"""``cachelab hotpath``: interleaved wrk blocks against one uvicorn worker, and its table."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from cachelab.analysis.hotpath import EndpointRuns, HotpathPlan, HotpathResult, markdown


def test_ratios_pair_each_block_with_the_floors_same_block_and_the_table_says_which_floor():
    runs = {
        "kpis": EndpointRuns("/api/tenants/t/kpis", rps=[100, 300], cpu_us=[900, 1000]),
        "live": EndpointRuns("/api/live", rps=[400, 600], cpu_us=[300, 200]),
        "openapi": EndpointRuns("/openapi.json"),  # not served by an older app
    }
    result = HotpathResult(HotpathPlan(blocks=2), runs, "this checkout")
    assert result.ratio("kpis", "live") == [0.25, 0.5]
    assert result.ratio("kpis", "live", "cpu") == pytest.approx([3.0, 5.0])
    table = markdown(result)
    assert "| `/api/tenants/t/kpis` | 200 [100–300] | 950 [900–1000] | 0.38 [0.25–0.50] |" in table
    assert "not served by this app" in table and "Floor: `/api/live`" in table


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
@pytest.mark.parametrize("flags", [[], ["--fast-reads"]], ids=["route", "fast-reads"])
def test_hotpath_serves_every_endpoint_without_refusals_and_writes_its_files(tmp_path, flags):
    proc = subprocess.run(
        [sys.executable, "-m", "cachelab", "hotpath", "--blocks", "2", "--seconds", "1", "--connections", "4",
         "--out", str(tmp_path), *flags],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "hotpath.json").read_text())
    assert data["plan"]["fast_reads"] is bool(flags)
    for name in ("kpis", "live", "openapi"):
        endpoint = data["endpoints"][name]
        assert len(endpoint["rps"]) == 2 and min(endpoint["rps"]) > 0, name
        assert endpoint["refused"] == 0, name
        assert all(us > 0 for us in endpoint["cpu_us_per_request"]), name
    assert (tmp_path / "hotpath.md").read_text() == proc.stdout
    if flags:  # the app's own count says the fast path did the answering, not the route
        outcomes = data["fast_reads"]
        assert outcomes["answered"] > sum(v for k, v in outcomes.items() if k != "answered"), outcomes
        assert "Fast reads answered" in proc.stdout
