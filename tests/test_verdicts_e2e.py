"""Verdicts end to end: a known regression is caught, and ``--against`` measures two commits in one run.

The A/A half (two runs of one commit compare as "no change") and the A/B half
with a slower database are in ``test_report_e2e.py``, beside the session's
quick report they reuse.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HIT_PATH = "            read = await self._read(key, tag_keys, read_via)\n"
EXTRA_ROUND_TRIP = (
    HIT_PATH + "            await self.rr.call(self.rr.client.ping)  # the injected regression\n"
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def throwaway_repo(tmp_path: Path) -> Path:
    """This checkout's files (as they are now) committed twice: as they are, then with one more round trip
    on the cache-hit path."""
    repo = tmp_path / "repo"
    files = _git(ROOT, "ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "base")
    cache = repo / "src" / "cachelab" / "patterns" / "cache.py"
    text = cache.read_text()
    assert text.count(HIT_PATH) == 1, "the hit path moved: update HIT_PATH"
    cache.write_text(text.replace(HIT_PATH, EXTRA_ROUND_TRIP))
    _git(
        repo,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.invalid",
        "commit",
        "-qam",
        "one more round trip",
    )
    return repo


def test_against_the_previous_commit_flags_one_more_round_trip_on_the_hot_path(
    throwaway_repo: Path, tmp_path
):
    out = tmp_path / "result"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHELAB_")}
    env["PYTHONPATH"] = str(throwaway_repo / "src")  # the candidate is the throwaway repo's code
    proc = subprocess.run(
        [sys.executable, "-m", "cachelab", "report", "--quick", "--against", "HEAD~1", "--skip", "load",
         "--skip", "notebooks", "--bench-select", "test_fetch_hit or test_async_floor", "--out", str(out),
         "--fail-on-regression", "--trials", "2"],
        cwd=throwaway_repo, env=env, capture_output=True, text=True, timeout=800,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    assert "regression(s) against `HEAD~1`" in summary
    assert "`bench.test_fetch_hit.round_trips` (RT/op) | 1 | 2 |" in summary and "exact: 1 → 2" in summary
    manifest = json.loads((out / "manifest.json").read_text())
    base_commit = _git(throwaway_repo, "rev-parse", "HEAD~1").strip()
    assert manifest["parameters"]["against_commit"] == base_commit
    trials = sorted(p.name for p in (out / "bench").glob("*-trial*.json"))
    assert trials == [f"{side}-trial{k}.json" for side in ("base", "candidate") for k in (1, 2)]
    assert "worktree" not in _git(throwaway_repo, "worktree", "list").split("\n", 1)[-1]  # removed again
    base = json.loads((out / "base_metrics.json").read_text())["metrics"]
    assert base["bench.test_fetch_hit.round_trips"]["value"] == 1


def test_against_a_ref_that_does_not_exist_fails_in_one_line_before_measuring(throwaway_repo: Path, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(throwaway_repo / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "cachelab", "report", "--quick", "--against", "no-such-ref", "--skip", "load",
         "--skip", "notebooks", "--out", str(tmp_path / "r")],
        cwd=throwaway_repo, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    expected = f"cachelab report: --against 'no-such-ref' names no commit in {throwaway_repo}"
    assert proc.stderr.strip() == expected
    assert not (tmp_path / "r").exists()  # nothing measured, nothing written
