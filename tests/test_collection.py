"""What `pytest` and `pytest --benchmark-only` collect from the repository root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _collected(*args: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return [line for line in proc.stdout.splitlines() if "::" in line]


@pytest.mark.slow  # two collections of the whole repository in a second pytest: ~40 s on 2 cores
def test_benchmark_only_collects_bench_alone_and_plain_pytest_collects_both():
    measured = _collected("--benchmark-only")
    assert measured and all(node.startswith("bench/") for node in measured)
    everything = _collected()
    assert {node.split("/")[0] for node in everything} == {"bench", "tests"}
    assert set(measured) < set(everything)


def test_benchmark_only_still_runs_a_tests_file_named_explicitly():
    assert _collected("--benchmark-only", "tests/test_collection.py")
