"""Fixtures shared by several test files (the Redis fixtures live in cachelab.testing)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class ReportRun:
    folder: Path
    returncode: int
    output: str


@pytest.fixture(scope="session")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> ReportRun:
    """One ``cachelab report --quick`` for the whole session: it executes every notebook too,
    so the report and the notebooks are checked from the same run instead of twice."""
    folder = tmp_path_factory.mktemp("report") / "quick"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHELAB_")}
    proc = subprocess.run(
        [sys.executable, "-m", "cachelab", "report", "--quick", "--out", str(folder)],
        capture_output=True,
        text=True,
        timeout=1200,
        env=env,
    )
    return ReportRun(folder, proc.returncode, proc.stdout + proc.stderr)
