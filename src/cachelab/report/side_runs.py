"""The full report's interleaved side runs: ``cachelab peers`` and ``cachelab hotpath``.

Both make their own verdicts from interleaved blocks (ours against the peer
libraries and the raw floor; a warm cached endpoint against the app's no-op
over HTTP), so the report runs them as they are, each in its own process (RQ
installs signal handlers; the hot path launches uvicorn), keeps their tables
in ``peers/`` and ``hotpath/``, and puts one line of each in ``summary.md``.
Only ``--full`` runs them: together they take about two minutes.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path


class SideRunFailed(RuntimeError):
    """A side run exited non-zero; its output's last lines say why."""


def run_peers(folder: Path, timeout: float = 600) -> Path:
    return _run(folder / "peers", ["peers"], timeout)


def run_hotpath(folder: Path, timeout: float = 600) -> Path | None:
    """The app as configured by default (``hotpath/``), then with fast reads (``hotpath-fast/``).
    None (nothing run) without ``wrk``: the hot path needs a real load generator."""
    if shutil.which("wrk") is None:
        return None
    _run(folder / "hotpath", ["hotpath"], timeout)
    _run(folder / "hotpath-fast", ["hotpath", "--fast-reads"], timeout)
    return folder / "hotpath"


def _run(out: Path, command: list[str], timeout: float) -> Path:
    proc = subprocess.run(
        [sys.executable, "-m", "cachelab", *command, "--out", str(out)],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise SideRunFailed(f"cachelab {' '.join(command)} exited {proc.returncode}: {tail}")
    return out


def summary_lines(folder: Path) -> list[str]:
    """The side runs' lines for ``summary.md`` (what was not measured says why)."""
    lines = [x for x in (peers_line(folder), hotpath_line(folder), hotpath_line(folder, "hotpath-fast")) if x]
    if shutil.which("wrk") is None:
        lines.append("- Hot path over HTTP not measured: `wrk` is not installed (`apt-get install wrk`)")
    return lines


def peers_line(folder: Path) -> str | None:
    """``peers: 38 pairs with a target — 36 pass, 0 fail, 2 unsure (peers/peers.md)``."""
    path = folder / "peers" / "peers.json"
    if not path.exists():
        return None
    pairs = [p for p in json.loads(path.read_text())["pairs"] if p.get("target") is not None]
    counts = {v: sum(p["verdict"] == v for p in pairs) for v in ("pass", "fail", "unsure")}
    failed = sorted({p["what"] for p in pairs if p["verdict"] == "fail"})
    line = (f"- Ours against the floor and the peer libraries, interleaved: {len(pairs)} pairs with a "
            f"target — {counts['pass']} pass, {counts['fail']} fail, {counts['unsure']} unsure "
            "(`peers/peers.md`)")  # fmt: skip
    return line + (f"; failing: {', '.join(failed)}" if failed else "")


def hotpath_line(folder: Path, name: str = "hotpath") -> str | None:
    """``hot path: warm GET …/kpis at 0.25× [0.22–0.27] the req/s of /api/live …``."""
    path = folder / name / "hotpath.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    endpoints = data["endpoints"]
    kpis, live = endpoints.get("kpis"), endpoints.get("live")
    if not kpis or not live or not kpis["rps"] or not live["rps"]:
        return None
    ratios = [a / b for a, b in zip(kpis["rps"], live["rps"], strict=False) if b]
    cpu = statistics.median(kpis["cpu_us_per_request"])
    fast = data.get("plan", {}).get("fast_reads")
    how = " with fast reads (`CACHELAB_FAST_READS=on`)" if fast else ""
    share = ""
    if outcomes := data.get("fast_reads"):  # the app's own count: did the fast path do the answering?
        answered = outcomes.get("answered", 0) + outcomes.get("not_modified", 0)
        share = f"; the fast path answered {answered / max(1, sum(outcomes.values())):.0%} of them"
    return (f"- Hot path over HTTP{how}, one uvicorn worker under wrk: warm `GET …/kpis` at "
            f"{statistics.median(ratios):.2f}× [{min(ratios):.2f}–{max(ratios):.2f}] the req/s of the no-op "
            f"`/api/live`, {cpu:.0f} server CPU µs per request{share} (`{name}/hotpath.md`)")  # fmt: skip
