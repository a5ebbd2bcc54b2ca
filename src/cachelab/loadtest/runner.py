"""Run one load scenario end to end from Python: app up, Locust headless, app down, numbers back.

``cachelab report`` and the notebooks need load-test figures without a
human at a terminal. :func:`run_scenario` starts the sample app
(:class:`~cachelab.harness.app_server.AppServer`: Redis, a seeded SQLite
database and uvicorn on free loopback ports) unless given a ``base_url``,
runs ``locust -f locustfiles/dashboard.py --headless`` as a subprocess
(Locust monkey-patches the interpreter it runs in, so never in-process),
and returns a :class:`ScenarioResult` read from the results folder the
plugin wrote. Every run is bounded: Locust's own ``-t`` plus a hard
subprocess timeout, after which the process group is killed.

The load generator and the app share the machine: on a 2-core box they
compete for CPU, so each result carries the generator's CPU (per Locust
process) and, when this call started the app, the app's and Redis's CPU.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from cachelab.loadtest.metrics import TOTAL
from cachelab.loadtest.results import read_summary
from cachelab.servers.children import spawn


class ScenarioFailed(RuntimeError):
    """Locust did not produce results (crashed, or was killed at the hard timeout)."""


def default_locustfile() -> Path:
    """``locustfiles/dashboard.py`` of this checkout (or ``$CACHELAB_LOCUSTFILE``)."""
    if env := os.environ.get("CACHELAB_LOCUSTFILE"):
        return Path(env)
    import cachelab

    path = Path(cachelab.__file__).resolve().parents[2] / "locustfiles" / "dashboard.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; run from a source checkout or set CACHELAB_LOCUSTFILE "
            "to the dashboard locustfile"
        )
    return path


@dataclass(frozen=True)
class EndpointResult:
    name: str
    requests: int
    failures: int
    rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    corrected_p50_ms: float | None
    corrected_p99_ms: float | None
    hit_ratio: float | None
    x_cache: dict[str, int]
    rate_limited: int
    rate_limited_expected: int

    @classmethod
    def from_summary(cls, name: str, e: dict[str, Any]) -> EndpointResult:
        lat, cor = e.get("latency_ms") or {}, e.get("corrected_latency_ms") or {}
        return cls(
            name=name, requests=e["requests"], failures=e["failures"], rps=e["rps"],
            p50_ms=lat.get("p50"), p90_ms=lat.get("p90"), p99_ms=lat.get("p99"), p999_ms=lat.get("p99.9"),
            corrected_p50_ms=cor.get("p50"), corrected_p99_ms=cor.get("p99"),
            hit_ratio=e["hit_ratio"], x_cache=dict(e["x_cache"]),
            rate_limited=e["rate_limited"], rate_limited_expected=e["rate_limited_expected"],
        )


@dataclass
class ScenarioResult:
    exit_code: int
    summary: dict[str, Any]
    endpoints: dict[str, EndpointResult]
    totals: EndpointResult
    generator: dict[str, Any]
    redis: dict[str, Any] | None
    app_cpu: dict[str, Any] | None
    results_dir: Path
    files: dict[str, Path]
    command: list[str]
    output_tail: str = ""
    thresholds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    @property
    def failures(self) -> int:
        return self.totals.failures

    @property
    def hit_ratio(self) -> float | None:
        return self.totals.hit_ratio

    @property
    def rate_limited(self) -> int:
        return self.totals.rate_limited

    @property
    def generator_saturated(self) -> bool:
        return bool(self.generator.get("saturated"))

    def table(self) -> str:
        """Per-endpoint rps, p50/p99 (µs resolution) and hit ratio, for reports and logs."""
        lines = [f"{'endpoint':<48} {'rps':>8} {'p50 ms':>8} {'p99 ms':>8} {'hit':>6} {'fail':>5} {'429':>5}"]
        for r in [*self.endpoints.values(), self.totals]:
            hit = "" if r.hit_ratio is None else f"{r.hit_ratio:.2f}"
            lines.append(f"{r.name[:48]:<48} {r.rps:>8.1f} {r.p50_ms or 0:>8.3f} {r.p99_ms or 0:>8.3f} "
                         f"{hit:>6} {r.failures:>5} {r.rate_limited:>5}")
        return "\n".join(lines)


def _format_mix(mix: str | Mapping[str, int] | None) -> str | None:
    if mix is None or isinstance(mix, str):
        return mix
    return ",".join(f"{k}={v}" for k, v in mix.items())


def build_command(
    *,
    locustfile: Path,
    base_url: str,
    results_dir: Path,
    duration: float,
    users: int,
    spawn_rate: float | None,
    mix: str | None,
    shape: str | None,
    arrival_rate: float | None,
    think_time: str | None,
    thresholds: Sequence[str],
    processes: int | None,
    seed: int,
    redis_url: str | None,
    extra_args: Sequence[str],
    python: str | None = None,
) -> list[str]:
    cmd = [
        python or sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
        "-u", str(users), "-r", f"{spawn_rate or users:g}", "-t", f"{max(1, math.ceil(duration))}s",
        "--host", base_url, "--only-summary", "--loglevel", "INFO",
        "--csv", str(results_dir / "locust"), "--html", str(results_dir / "locust.html"),
        "--results-dir", str(results_dir), "--seed", str(seed),
    ]
    for flag, value in (("--mix", mix), ("--shape", shape), ("--think-time", think_time),
                        ("--redis-url", redis_url)):
        if value:
            cmd += [flag, str(value)]
    if arrival_rate is not None:
        cmd += ["--arrival-rate", f"{arrival_rate:g}"]
    if processes:
        cmd += ["--processes", str(processes)]
    for t in thresholds:
        cmd += ["--threshold", t]
    return [*cmd, *extra_args]


class _CpuWatch:
    """CPU seconds of this process's other children (uvicorn, job workers, redis-server) over a block.

    Says which side was busy: on one machine the generator and the app compete for the same cores.
    """

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self.before: dict[int, tuple[str, float]] = {}

    @staticmethod
    def _role(proc: psutil.Process) -> str:
        cmd = " ".join(proc.cmdline())
        if "redis-server" in cmd:
            return "redis"
        if "uvicorn" in cmd:
            return "app"
        if " worker" in cmd:
            return "job_worker"
        return "other"

    def _sample(self) -> dict[int, tuple[str, float]]:
        out = {}
        skip = set(self.exclude)
        for pid in self.exclude:  # the generator and its forked --processes workers
            with contextlib.suppress(psutil.Error):
                skip.update(p.pid for p in psutil.Process(pid).children(recursive=True))
        for proc in psutil.Process().children(recursive=True):
            if proc.pid in skip:
                continue
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                out[proc.pid] = (self._role(proc), t.user + t.system + t.children_user + t.children_system)
        return out

    def start(self) -> None:
        self.before = self._sample()

    def stop(self, seconds: float) -> dict[str, Any]:
        after = self._sample()
        roles: dict[str, float] = {}
        for pid, (role, cpu) in after.items():
            if pid in self.before:
                roles[role] = roles.get(role, 0.0) + cpu - self.before[pid][1]
        return {role: {"cpu_seconds": round(s, 3), "mean_pct": round(100 * s / max(seconds, 1e-6), 1)}
                for role, s in sorted(roles.items())}


@dataclass(frozen=True)
class _Target:
    url: str
    redis_url: str | None
    own: bool  # did this call start the app
    seed_password: str | None  # what the users log in with
    tenants: int  # how many tenants' seeded users they log in as


@contextlib.contextmanager
def _app(
    base_url: str | None, redis_url: str | None, seed_password: str | None, **app_kwargs: Any
) -> Iterator[_Target]:
    from cachelab.harness.app_server import AppServer

    if base_url is not None:  # an AppServer of this process knows its password and sizes
        known = AppServer.serving(base_url)
        password = seed_password or (known.seed_password if known else None)
        password = password or os.environ.get("CACHELAB_SEED_PASSWORD")
        tenants = known.tenants if known else app_kwargs["tenants"]
        yield _Target(base_url, redis_url, False, password, tenants)
        return
    # All simulated users share this machine's address and each sends its own X-Forwarded-For, which
    # the AppServer's app believes because it is told that the generator is its proxy (127.0.0.1).
    with AppServer(**app_kwargs) as app:
        yield _Target(app.base_url, app.redis_url, True, app.seed_password, app.tenants)


def run_scenario(
    *,
    duration: float = 10.0,
    users: int = 10,
    spawn_rate: float | None = None,
    mix: str | Mapping[str, int] | None = None,
    shape: str | None = None,
    arrival_rate: float | None = None,
    think_time: str | None = None,
    thresholds: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    processes: int | None = None,
    seed: int = 1,
    results_dir: str | Path | None = None,
    base_url: str | None = None,
    redis_url: str | None = None,
    tenants: int = 3,
    initiatives_per_tenant: int = 500,
    job_workers: int = 1,
    locustfile: str | Path | None = None,
    extra_args: Sequence[str] = (),
    timeout: float | None = None,
    seed_password: str | None = None,
    python: str | None = None,
    generator_env: Mapping[str, str] | None = None,
    warmup: float = 0.0,
) -> ScenarioResult:
    """Run Locust headless for ``duration`` seconds against the app and return its figures.

    Without ``base_url`` this starts (and stops) an :class:`AppServer` with
    ``env`` (e.g. ``{"CACHELAB_CACHE_MODE": "off"}``), ``tenants``,
    ``initiatives_per_tenant`` and ``job_workers``. ``mix`` is a ``--mix``
    string or mapping; ``shape`` one of none/ramp/step/spike/soak/constant;
    ``think_time`` ``"MIN,MAX"`` seconds. Results (``loadtest.json``,
    ``endpoints.csv``, ``histograms.json``, Locust's CSV/HTML and its log) go
    to ``results_dir`` (a new temporary directory when None, left for the
    caller). The users log in as the app's seeded users with its seed password
    (for an app at ``base_url``: an AppServer of this process is recognised by
    its URL; otherwise ``seed_password`` or ``$CACHELAB_SEED_PASSWORD``, and
    ``tenants``). The subprocess is killed after ``timeout`` seconds (default
    ``duration + 90``). A failed threshold gives ``exit_code == 1``; no
    results at all raises :class:`ScenarioFailed`. ``python`` and
    ``generator_env`` run Locust (and a launched app) with another checkout's
    interpreter and environment, e.g. its ``PYTHONPATH``. ``warmup`` seconds
    run before ``duration`` and are left out of every figure (Locust's
    ``--warmup``, passed as ``CACHELAB_WARMUP`` so an older locustfile that
    lacks it still runs).
    """
    locustfile = Path(locustfile) if locustfile else default_locustfile()
    out = Path(results_dir) if results_dir else Path(tempfile.mkdtemp(prefix="cachelab-locust-"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "loadtest.json").unlink(missing_ok=True)  # never read a previous run's results
    hard_timeout = timeout if timeout is not None else warmup + duration + 90.0
    app_kwargs = {"env": {**(generator_env or {}), **(env or {})}, "tenants": tenants, "python": python,
                  "job_workers": job_workers, "initiatives_per_tenant": initiatives_per_tenant}
    with _app(base_url, redis_url, seed_password, **app_kwargs) as target:
        url, redis, own_app = target.url, target.redis_url, target.own
        cmd = build_command(
            locustfile=locustfile, base_url=url, results_dir=out, duration=warmup + duration, users=users,
            spawn_rate=spawn_rate, mix=_format_mix(mix), shape=shape, arrival_rate=arrival_rate,
            think_time=think_time, thresholds=thresholds, processes=processes, seed=seed, redis_url=redis,
            extra_args=extra_args, python=python,
        )
        # Ambient CACHELAB_* settings must not leak into the generator: the call's arguments decide.
        locust_env = {k: v for k, v in os.environ.items()
                      if not k.startswith("CACHELAB_") and k != "REDIS_URL"}
        locust_env.update(generator_env or {})
        locust_env["PYTHONUNBUFFERED"] = "1"
        # The users log in as the seeded users of this many tenants (by environment, not flags, which
        # a checkout from before log-ins would refuse).
        locust_env["CACHELAB_TENANTS"] = str(target.tenants)
        if target.seed_password:
            locust_env["CACHELAB_SEED_PASSWORD"] = target.seed_password
        if warmup > 0:
            locust_env["CACHELAB_WARMUP"] = f"{warmup:g}"
        log_path = out / "locust.log"
        with log_path.open("wb") as log_file:
            proc = spawn(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=locust_env,
                                    cwd=locustfile.parent.parent, start_new_session=True)
            watch = _CpuWatch(exclude={proc.pid})
            if own_app:
                watch.start()
            try:
                exit_code = proc.wait(timeout=hard_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                exit_code = -signal.SIGKILL
            app_cpu = watch.stop(duration) if own_app else None
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
    try:
        summary = read_summary(out)
    except FileNotFoundError:
        command = " ".join(cmd)
        raise ScenarioFailed(f"locust exited {exit_code} without results ({command}):\n{tail}") from None
    endpoints = {k: EndpointResult.from_summary(k, v) for k, v in summary["endpoints"].items() if k != TOTAL}
    files = {name: out / name for name in ("loadtest.json", "endpoints.csv", "histograms.json", "locust.html",
                                           "locust_stats.csv", "locust.log") if (out / name).exists()}
    return ScenarioResult(
        exit_code=exit_code,
        summary=summary,
        endpoints=endpoints,
        totals=EndpointResult.from_summary(TOTAL, summary["totals"]),
        generator=summary["generator"],
        redis=summary["redis"],
        app_cpu=app_cpu,
        results_dir=out,
        files=files,
        command=cmd,
        output_tail=tail,
        thresholds=summary.get("thresholds", []),
    )
