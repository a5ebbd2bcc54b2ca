"""The report's arithmetic: noise-banded comparisons, SLOs, the capacity table, compare's CLI."""

from __future__ import annotations

import json

import pytest

from cachelab.cli import main
from cachelab.report.capacity import Plan, capacity_rows, headroom
from cachelab.report.compare import compare_metrics, deltas_markdown
from cachelab.report.run import evaluate_slos, parse_slo


def metric(value, better="lower", noise=0.1, unit="ms"):
    return {"value": value, "unit": unit, "better": better, "noise": noise}


def test_changes_inside_the_noise_band_are_not_verdicts():
    before = {
        "p99": metric(100),
        "rps": metric(1000, "higher"),
        "rt": metric(1, noise=0.0),
        "hits": metric(0.5, "none"),
    }
    after = {
        "p99": metric(108),
        "rps": metric(850, "higher"),
        "rt": metric(2, noise=0.0),
        "hits": metric(0.9, "none"),
    }
    verdicts = {d.name: d.verdict for d in compare_metrics(before, after)}
    assert verdicts == {"p99": "within noise", "rps": "regression", "rt": "regression", "hits": "changed"}
    better = {d.name: d.verdict for d in compare_metrics(after, before)}
    assert better["rps"] == "improvement" and better["rt"] == "improvement"


def test_new_gone_and_missing_values_are_reported_not_crashed_on():
    deltas = compare_metrics({"a": metric(1), "b": metric(None)}, {"b": metric(2), "c": metric(3)})
    assert {d.name: d.verdict for d in deltas} == {"a": "gone", "b": "n/a", "c": "new"}
    text = deltas_markdown(deltas)
    assert "| a (ms) |" in text and "No change beyond the noise band." in text


def test_slos_parse_evaluate_and_fail_without_data():
    assert parse_slo("load.cache_on.p99_ms < 200") == ("load.cache_on.p99_ms", "<", 200.0)
    with pytest.raises(ValueError, match="bad SLO"):
        parse_slo("p99 is small")
    results = evaluate_slos({"x": metric(5), "y": metric(0.99)}, ["x<10", "y>=0.995", "z<1", "x<3"])
    assert [(r["slo"], r["passed"]) for r in results] == [("x<3", False), ("y>=0.995", False), ("z<1", False)]
    assert results[2]["note"] == "no data"


def test_capacity_scales_measured_costs_to_1000_requests_per_second():
    scenario = {
        "totals": {"rps": 250.0, "hit_ratio": 0.9},
        "redis": {
            "seconds": 10.0,
            "commands": 7500,
            "cpu_seconds": 0.5,
            "server_usec": 75_000,
            "bytes_in": 1_000_000,
            "bytes_out": 4_000_000,
            "used_memory": 50 * 2**20,
        },
    }
    rows = capacity_rows(scenario)
    assert rows["redis_ops_per_s"] == 3000.0  # 750 ops/s at 250 req/s
    assert rows["redis_commands_per_request"] == 3.0
    assert rows["redis_cpu_cores"] == 0.2
    assert rows["network_mb_s"] == 2.0
    assert rows["redis_server_usec_per_request"] == 30.0
    plan = Plan.parse("tier:ops=30000,net=10,mem=40,cpu=1")
    h = headroom(rows, plan)
    assert h["max_rps_by"] == {"ops": 10000, "network": 5000, "cpu": 5000}
    assert h["binding_limit"] in {"network", "cpu"} and h["max_rps"] == 5000
    assert h["memory_fits"] is False
    with pytest.raises(ValueError, match="bad --plan"):
        Plan.parse("nonsense")
    assert capacity_rows({"totals": {"rps": 0}, "redis": {}}) is None


def test_compare_command_prints_deltas_and_can_gate_on_regressions(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, p99 in ((a, 100), (b, 200)):
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps({"load.p99_ms": metric(p99, noise=0.2)}))
        (folder / "manifest.json").write_text(
            json.dumps({"machine": {"cpus": 2}, "parameters": {"profile": "quick"}})
        )
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "regression" in out and "+100.0%" in out
    assert main(["compare", str(a), str(b), "--fail-on-regression"]) == 1
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2
