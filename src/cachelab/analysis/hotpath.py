"""``cachelab hotpath``: a warm cached endpoint against the app's floor, over real HTTP.

``bench/bench_app.py`` times one request in process; this asks the capacity
question the way an operator would: requests per second from **one uvicorn
worker** under a closed-loop load generator (``wrk``, 16 connections), for

* ``kpis`` — a warm ``GET /api/tenants/{t}/kpis`` (session, two rate limits and
  the cache read, one pipelined round trip);
* ``live`` — ``GET /api/live``, the app's no-op: the framework's floor;
* ``openapi`` — ``GET /openapi.json``, a cached 14 KB document the framework
  serves itself (present in every version of the app, so a run against an older
  checkout has a common reference).

The endpoints run in interleaved blocks (the order rotated each block) so a
noisy moment of the machine falls on all of them, and each block also reads
the uvicorn process's CPU time: **server CPU µs per request** is what the
worker would need with a core to itself, the figure that survives a loaded
machine best. Ratios are per block (same moment) with median [min–max].

``wrk`` must be on PATH (``apt-get install wrk``): a Python load generator on
the same two cores would measure itself. ``--pythonpath`` runs the app from
another checkout's ``src`` (the "before" of a change). ``--fast-reads`` runs it
with ``CACHELAB_NEAR_CACHE=on`` and ``CACHELAB_FAST_READS=on``
(:mod:`cachelab.app.fast_reads`): the warm read answered in process, in front
of FastAPI, with trusted sessions and leased rate-limit units.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

from cachelab.harness.app_client import app_sessions
from cachelab.harness.app_server import AppServer

ENDPOINTS: dict[str, str] = {
    "kpis": "/api/tenants/{tenant}/kpis",
    "live": "/api/live",
    "openapi": "/openapi.json",
}
#: A benchmark's requests must be served, not refused by the app's own limiter.
GENEROUS = {"CACHELAB_RATE_LIMIT": "1000000000/60s"}
FAST_READS = {"CACHELAB_NEAR_CACHE": "on", "CACHELAB_FAST_READS": "on"}


class WrkMissing(RuntimeError):
    """``wrk`` is not installed."""


@dataclass(frozen=True)
class HotpathPlan:
    blocks: int = 6
    seconds: float = 3.0
    connections: int = 16
    endpoints: tuple[str, ...] = ("kpis", "live", "openapi")
    fast_reads: bool = False  # CACHELAB_NEAR_CACHE=on, CACHELAB_FAST_READS=on


@dataclass
class EndpointRuns:
    path: str
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # server CPU per request
    refused: int = 0  # non-2xx answers (must stay 0)


@dataclass
class HotpathResult:
    plan: HotpathPlan
    runs: dict[str, EndpointRuns]
    app: str  # which code served: this checkout or --pythonpath
    #: With --fast-reads, the app's own count of what became of each fast-read request, by outcome
    #: (``cachelab_fast_reads`` in /metrics): says whether the fast path did the answering.
    fast_reads: dict[str, int] = field(default_factory=dict)

    def ratio(self, name: str, floor: str, metric: str = "rps") -> list[float]:
        """Per block: ``name``'s req/s as a share of ``floor``'s (1.0 is as fast as the no-op; higher
        is better), or with ``metric="cpu"`` its server CPU per request as a multiple of the floor's
        (1.0 costs what the no-op costs; lower is better). Two views of one block: the first is what a
        client sees, the second is robust to other load on the machine."""
        a, b = self.runs[name], self.runs[floor]
        if metric == "rps":
            return [x / y for x, y in zip(a.rps, b.rps, strict=True) if y]
        return [x / y for x, y in zip(a.cpu_us, b.cpu_us, strict=True) if y]

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.__dict__,
            "app": self.app,
            "fast_reads": self.fast_reads,
            "endpoints": {
                n: {"path": r.path, "rps": r.rps, "cpu_us_per_request": r.cpu_us, "refused": r.refused}
                for n, r in self.runs.items()
            },
        }


def _spread(values: Sequence[float], digits: int = 2) -> str:
    if not values:
        return "–"
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}–{max(values):.{digits}f}]"


def markdown(result: HotpathResult) -> str:
    """The table a pull request quotes."""
    lines = [
        f"One uvicorn worker, wrk -c{result.plan.connections}, {result.plan.blocks} interleaved blocks of "
        f"{result.plan.seconds:g} s ({result.app}"
        + ("; fast reads on: CACHELAB_NEAR_CACHE=on CACHELAB_FAST_READS=on" if result.plan.fast_reads else "")
        + ").",
        "",
        "| endpoint | req/s | server CPU µs/request | speed: req/s ÷ floor's (higher is better) "
        "| cost: CPU/request ÷ floor's (lower is better) |",
        "|---|---|---|---|---|",
    ]
    floor = "live" if "live" in result.runs and result.runs["live"].rps else "openapi"
    for name, runs in result.runs.items():
        if not runs.rps:
            lines.append(f"| `{runs.path}` | not served by this app | | | |")
            continue
        lines.append(
            f"| `{runs.path}` | {_spread(runs.rps, 0)} | {_spread(runs.cpu_us, 0)} | "
            f"{_spread(result.ratio(name, floor))} | {_spread(result.ratio(name, floor, 'cpu'))} |"
        )
    lines += ["", f"Floor: `{result.runs[floor].path}`; ratios per block, median [min–max]."]
    if result.fast_reads:
        total = sum(result.fast_reads.values())
        answered = result.fast_reads.get("answered", 0) + result.fast_reads.get("not_modified", 0)
        to_route = ", ".join(f"{k} {v}" for k, v in sorted(result.fast_reads.items())
                             if v and k not in ("answered", "not_modified"))  # fmt: skip
        lines.append(
            f"Fast reads answered {answered} of {total} `kpis` requests ({answered / max(1, total):.1%})"
            + (f"; to the route: {to_route}." if to_route else ".")
        )
    refused = {n: r.refused for n, r in result.runs.items() if r.refused}
    if refused:
        lines.append(f"**Refused (non-2xx) answers, figures not comparable:** {refused}")
    return "\n".join(lines) + "\n"


def write(result: HotpathResult, out_dir: Path) -> None:
    """``hotpath.md`` (the table) and ``hotpath.json`` (every block) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "hotpath.md").write_text(markdown(result))
    (out_dir / "hotpath.json").write_bytes(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2))


def _wrk(url: str, seconds: float, connections: int, headers: Mapping[str, str]) -> tuple[float, int, int]:
    """(req/s, requests, non-2xx) of one wrk run."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    if rps is None or count is None:
        raise RuntimeError(f"wrk gave no result for {url}:\n{out[-500:]}")
    refused = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return float(rps.group(1)), int(count.group(1)), int(refused.group(1)) if refused else 0


def _cpu_seconds(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with_cpu = p.cpu_times()
        total += with_cpu.user + with_cpu.system
    return total


def run(plan: HotpathPlan | None = None, *, pythonpath: str | None = None) -> HotpathResult:
    """Launch the app (Redis, SQLite, one uvicorn worker), warm it, and load each endpoint in turn."""
    plan = plan or HotpathPlan()
    if shutil.which("wrk") is None:
        raise WrkMissing("cachelab hotpath needs wrk on PATH (apt-get install wrk)")
    env = dict(GENEROUS, **FAST_READS) if plan.fast_reads else dict(GENEROUS)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, os.environ.get("PYTHONPATH")]))
    with AppServer(env=env, tenants=1, initiatives_per_tenant=50, workers=1) as app:
        tenant, headers = next(iter(app_sessions(app).items()))
        server = psutil.Process(app.pid)
        runs = {n: EndpointRuns(ENDPOINTS[n].format(tenant=tenant)) for n in plan.endpoints}
        with httpx.Client(base_url=app.base_url, headers=headers, timeout=10) as http:
            served = {n for n, r in runs.items() if http.get(r.path).status_code == 200}
            for _ in range(2):  # warm: fill the cache, open the pool's connections
                for n in served:
                    http.get(runs[n].path)
        order = [n for n in plan.endpoints if n in served]
        for block in range(plan.blocks):
            shift = block % len(order)
            for name in order[shift:] + order[:shift]:
                before = _cpu_seconds(server)
                rps, count, refused = _wrk(app.base_url + runs[name].path, plan.seconds, plan.connections,
                                           headers if name == "kpis" else {})  # fmt: skip
                runs[name].rps.append(rps)
                runs[name].cpu_us.append((_cpu_seconds(server) - before) / max(1, count) * 1e6)
                runs[name].refused += refused
        fast_reads = _fast_read_outcomes(app.base_url) if plan.fast_reads else {}
    return HotpathResult(plan, runs, f"app from {pythonpath}" if pythonpath else "this checkout", fast_reads)


def _fast_read_outcomes(base_url: str) -> dict[str, int]:
    """``cachelab_fast_reads_total`` by outcome from the app's /metrics ({} from an app without it)."""
    text = httpx.get(base_url + "/metrics", timeout=10).text
    return {
        m[1]: int(float(m[2]))
        for m in re.finditer(r'cachelab_fast_reads_total\{outcome="(\w+)"\} (\S+)', text)
    }
