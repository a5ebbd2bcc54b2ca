"""The full report's side runs: one summary line each, from the files the commands write."""

from __future__ import annotations

import json

from cachelab.report import side_runs


def test_summary_lines_count_the_peer_verdicts_and_quote_the_hot_path_ratio(tmp_path, monkeypatch):
    (tmp_path / "peers").mkdir()
    pairs = [
        {"what": "rate limit", "target": 1.0, "verdict": "pass"},
        {"what": "cache hit", "target": 1.2, "verdict": "unsure"},
        {"what": "drain", "target": 0.4, "verdict": "fail"},
        {"what": "ours vs cashews", "target": None, "verdict": "report"},  # no target: not counted
    ]
    (tmp_path / "peers" / "peers.json").write_text(json.dumps({"pairs": pairs}))
    (tmp_path / "hotpath").mkdir()
    endpoints = {
        "kpis": {"rps": [100, 200, 300], "cpu_us_per_request": [900, 1000, 1100]},
        "live": {"rps": [400, 400, 600], "cpu_us_per_request": [300, 300, 200]},
    }
    (tmp_path / "hotpath" / "hotpath.json").write_text(json.dumps({"endpoints": endpoints}))
    monkeypatch.setattr(side_runs.shutil, "which", lambda _name: "/usr/bin/wrk")
    peers, hot = side_runs.summary_lines(tmp_path)
    assert "3 pairs with a target — 1 pass, 1 fail, 1 unsure" in peers and "failing: drain" in peers
    assert "0.50× [0.25–0.50]" in hot and "1000 server CPU µs" in hot


def test_without_wrk_the_summary_says_the_hot_path_was_not_measured(tmp_path, monkeypatch):
    monkeypatch.setattr(side_runs.shutil, "which", lambda _name: None)
    assert side_runs.run_hotpath(tmp_path) is None
    assert side_runs.summary_lines(tmp_path) == [
        "- Hot path over HTTP not measured: `wrk` is not installed (`apt-get install wrk`)"
    ]
