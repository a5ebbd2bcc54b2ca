"""Wiring cachelab's measurements into Locust's events (what the locustfile installs).

``install(events)`` registers, once per process:

* ``init_command_line_parser`` — cachelab's options (:mod:`cachelab.loadtest.options`);
* ``init`` — validates them, applies ``--mix`` weights (master or local only:
  the master decides who runs where), drops the shape class for
  ``--shape none``, and builds a :class:`LoadTestSession`;
* ``request`` — records every request into :class:`~cachelab.loadtest.metrics.LoadMetrics`;
* ``report_to_master`` / ``worker_report`` — workers ship their counters and
  encoded histograms with each stats report; the master merges them;
* ``test_start`` / ``test_stop`` — the run's clock, CPU meters, Redis deltas;
* ``quitting`` — evaluates thresholds (a failure sets ``process_exit_code = 1``),
  logs a per-endpoint table and writes the results folder.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from typing import Any

import gevent
import locust
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

import cachelab
from cachelab.loadtest.cpu import CpuMeter, generator_summary
from cachelab.loadtest.faults import ProxyController, parse_faults
from cachelab.loadtest.metrics import TOTAL, LoadMetrics
from cachelab.loadtest.options import add_arguments, parse_mix, parse_think_time
from cachelab.loadtest.redis_stats import RedisRunMeter
from cachelab.loadtest.results import not_modified, write_results
from cachelab.loadtest.shapes import normalize_shape
from cachelab.loadtest.thresholds import ThresholdResult, evaluate, load_thresholds, parse_thresholds

log = logging.getLogger("cachelab.loadtest")
REPORT_KEY = "cachelab"


class LoadTestSession:
    """One Locust process's share of the measurements (on the master: everyone's, merged)."""

    def __init__(self, environment: Any) -> None:
        self.environment = environment
        opts = environment.parsed_options
        self.metrics = LoadMetrics()
        self.cpu = CpuMeter()
        self.worker_cpu: dict[str, dict[str, Any]] = {}
        self.started_at: float | None = None  # wall clock, for the results
        self._t0: float | None = None
        self._t1: float | None = None
        self.redis: RedisRunMeter | None = None
        self.redis_result: dict[str, Any] | None = None
        self.results: list[ThresholdResult] = []
        self.paths: dict[str, Any] = {}
        self.faults: ProxyController | None = None
        self._sampler: gevent.Greenlet | None = None
        self.thresholds = parse_thresholds(getattr(opts, "cachelab_threshold", None) or [])
        env_thresholds = os.environ.get("CACHELAB_THRESHOLDS", "")
        self.thresholds += parse_thresholds(env_thresholds.split(";"))
        if getattr(opts, "cachelab_thresholds_file", ""):
            self.thresholds += load_thresholds(opts.cachelab_thresholds_file)
        self.finalized = False

    @property
    def runner(self) -> Any:
        return self.environment.runner

    @property
    def is_worker(self) -> bool:
        return isinstance(self.runner, WorkerRunner)

    @property
    def is_master(self) -> bool:
        return isinstance(self.runner, MasterRunner)

    # -- recording ---------------------------------------------------------------
    def on_request(
        self,
        request_type: str,
        name: str,
        response_time: float,
        response: Any = None,
        context: dict[str, Any] | None = None,
        exception: BaseException | None = None,
        **_: Any,
    ) -> None:
        status = getattr(response, "status_code", None)
        headers = getattr(response, "headers", None)
        x_cache = headers.get("X-Cache") if headers is not None else None
        cost = headers.get("X-Request-Cost") if headers is not None else None
        lag = context.get("cachelab_lag") if context else None
        self.metrics.record(
            request_type, name, response_time or 0.0, status=status, x_cache=x_cache,
            failed=exception is not None, lag_s=lag, cost=cost,
        )

    def on_report_to_master(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        cpu = self.cpu.report() if self.cpu.started else None
        data[REPORT_KEY] = {"metrics": self.metrics.drain(), "cpu": cpu}

    def on_worker_report(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        payload = data.get(REPORT_KEY)
        if not payload:
            return
        self.metrics.merge_report(payload.get("metrics") or {})
        if payload.get("cpu"):
            self.worker_cpu[client_id] = payload["cpu"]

    # -- the run's clock -------------------------------------------------------------
    def on_test_start(self, **_: Any) -> None:
        self.metrics.reset()
        self.worker_cpu.clear()
        self.cpu.start()
        self._t0, self._t1 = time.monotonic(), None
        self.started_at = time.time()
        if self._sampler is None:
            self._sampler = gevent.spawn(self._sample_cpu)
        if not self.is_worker:
            self._start_redis()
            if self.faults is not None:
                self.faults.schedule()
        warmup = float(getattr(self.environment.parsed_options, "cachelab_warmup", 0) or 0)
        if warmup > 0:
            gevent.spawn_later(warmup, self._end_warmup)

    def _end_warmup(self) -> None:
        """Measure from now: the log-ins, cold connections and ramp of the first seconds are left out.

        Every process resets its own figures at its own ``--warmup`` mark (a worker drops what it
        has not yet shipped); the master or local runner also resets Locust's statistics, the CPU
        meters and the Redis deltas, so every result covers the same window.
        """
        if self._t1 is not None:  # the run ended first
            return
        self.metrics.reset()
        self.cpu.start()
        self._t0 = time.monotonic()
        self.started_at = time.time()
        if not self.is_worker:
            self.runner.stats.reset_all()
            self._start_redis()

    def _sample_cpu(self) -> None:
        while True:
            gevent.sleep(1.0)
            if self._t1 is None:
                self.cpu.sample()

    def _start_redis(self) -> None:
        url = getattr(self.environment.parsed_options, "cachelab_redis_url", "")
        if not url:
            return
        try:
            if self.redis is None:
                self.redis = RedisRunMeter(url)
            self.redis.start()
            self.redis_result = None
        except Exception as exc:  # measuring Redis must never stop the test
            log.warning("cachelab: cannot read Redis INFO at the start (%s); no Redis deltas", exc)
            self.redis = None

    def on_test_stop(self, **_: Any) -> None:
        if self.faults is not None:
            self.faults.stop()
        if self._t0 is None or self._t1 is not None:
            return
        self._t1 = time.monotonic()
        self.cpu.sample()
        if self.redis is not None and self.redis.started:
            try:
                self.redis_result = self.redis.finish()
            except Exception as exc:
                log.warning("cachelab: cannot read Redis INFO at the end (%s)", exc)

    def on_reset_stats(self, **_: Any) -> None:
        self.metrics.reset()

    @property
    def duration(self) -> float:
        if self._t0 is None:
            return 0.0
        return (self._t1 or time.monotonic()) - self._t0

    # -- the end ---------------------------------------------------------------------
    def generator(self) -> dict[str, Any]:
        own = self.cpu.report() if self.cpu.started else {}
        processes = {"master": own, **self.worker_cpu} if self.is_master else {"local": own}
        return generator_summary(processes)

    def summary(self) -> dict[str, Any]:
        opts = self.environment.parsed_options
        shape = normalize_shape(getattr(opts, "cachelab_shape", "none"))
        duration = self.duration
        endpoints = self.metrics.summary(duration)
        return {
            "meta": {
                "started_at": dt.datetime.fromtimestamp(self.started_at or time.time(), dt.UTC).isoformat(),
                "duration_s": round(duration, 3),
                "host": self.environment.host,
                "users": getattr(opts, "num_users", None),
                "spawn_rate": getattr(opts, "spawn_rate", None),
                "run_time": getattr(opts, "run_time", None),
                "shape": shape,
                "arrival_rate": getattr(opts, "cachelab_arrival_rate", None) if shape == "constant" else None,
                "mix": parse_mix(getattr(opts, "cachelab_mix", None)),
                "think_time": list(parse_think_time(getattr(opts, "cachelab_think_time", None))),
                "seed": getattr(opts, "cachelab_seed", None),
                "zipf_s": getattr(opts, "cachelab_zipf_s", None),
                "runner": type(self.runner).__name__,
                "workers": len(self.worker_cpu) if self.is_master else 0,
                "locust_version": locust.__version__,
                "cachelab_version": cachelab.__version__,
            },
            "totals": endpoints[TOTAL],
            "endpoints": endpoints,
            "generator": self.generator(),
            "redis": self.redis_result,
            "thresholds": [r.as_dict() for r in self.results],
            "thresholds_passed": all(r.passed for r in self.results),
            "faults": self.faults.windows if self.faults is not None else [],
        }

    def finalize(self) -> None:
        """Thresholds, the exit code, the summary table and the results folder (once, at quit)."""
        if self.finalized or self.is_worker:
            return
        self.finalized = True
        if self._t0 is not None and self._t1 is None:
            # Quitting mid-run (Ctrl-C): stop first, so workers send their final reports.
            self.runner.quit()
            self.on_test_stop()
        self.results = evaluate(self.thresholds, self.metrics, self.duration, self.generator())
        failed = [r for r in self.results if not r.passed]
        summary = self.summary()
        log_table(summary)
        for r in self.results:
            (log.error if not r.passed else log.info)(
                "threshold %s %s: %s", r.expression, "FAILED" if not r.passed else "passed", r.message
            )
        if failed:
            self.environment.process_exit_code = 1
            log.error("cachelab: %d of %d thresholds failed: %s", len(failed), len(self.results),
                      ", ".join(r.expression for r in failed))
        if not summary["totals"]["requests"]:
            # A run that measured nothing must not pass: typically every user stopped at log-in.
            self.environment.process_exit_code = 1
            log.error("cachelab: no request was measured (did the users log in? see the errors above)")
        if summary["generator"]["saturated"]:
            log.warning("cachelab: the load generator was CPU-saturated (a process averaged %.0f%% of a "
                        "core); latencies include generator queueing — add --processes or machines",
                        summary["generator"]["max_mean_pct"])
        directory = getattr(self.environment.parsed_options, "cachelab_results_dir", "")
        if directory:
            self.paths = write_results(directory, summary, self.metrics.histograms())
            log.info("cachelab: results written to %s", directory)
        if self.redis is not None:
            self.redis.close()


def log_table(summary: dict[str, Any]) -> None:
    """A compact per-endpoint table (µs-resolution percentiles), after Locust's own."""
    lines = [f"{'cachelab endpoint':<46} {'reqs':>7} {'fail':>5} {'429':>5} {'304':>5} {'rps':>8} "
             f"{'p50 ms':>8} {'p99 ms':>8} {'p99.9':>8} {'hit%':>6}"]
    for name, e in summary["endpoints"].items():
        lat = e["latency_ms"] or {}
        hit = "" if e["hit_ratio"] is None else f"{100 * e['hit_ratio']:.1f}"
        lines.append(
            f"{name[:46]:<46} {e['requests']:>7} {e['failures']:>5} {e['rate_limited']:>5} "
            f"{not_modified(e):>5} {e['rps']:>8.1f} "
            f"{lat.get('p50', 0):>8.3f} {lat.get('p99', 0):>8.3f} {lat.get('p99.9', 0):>8.3f} {hit:>6}"
        )
    gen = summary["generator"]
    lines.append(f"generator CPU: busiest process {gen['max_mean_pct']:.0f}% of a core"
                 f"{' (SATURATED)' if gen['saturated'] else ''}")
    if summary["redis"]:
        r = summary["redis"]
        lines.append(f"redis: {r['ops_per_sec']} ops/s, cpu {r['cpu_pct']}%, keyspace hit ratio "
                     f"{r['keyspace_hit_ratio']}, evicted {r['evicted_keys']}, "
                     f"memory delta {r['memory_delta']} B")
    log.info("\n%s", "\n".join(lines))


def _apply_mix(environment: Any) -> None:
    """Set each user class's weight from ``--mix`` and drop the zero-weight ones."""
    opts = environment.parsed_options
    mix = parse_mix(getattr(opts, "cachelab_mix", None))
    if getattr(opts, "user_classes", None):
        return  # classes named on the command line win over the mix
    for cls in environment.user_classes:
        key = getattr(cls, "mix_key", "")
        if key in mix:
            cls.weight = mix[key]
    kept = [c for c in environment.user_classes if c.weight > 0 or getattr(c, "fixed_count", 0) > 0]
    if not kept:
        raise SystemExit("cachelab: --mix leaves no user class with a weight > 0")
    environment.user_classes[:] = kept


def _on_init(environment: Any, runner: Any = None, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is None or not hasattr(opts, "cachelab_mix"):
        return  # not started from the command line (e.g. a library test): nothing to configure
    try:
        parse_mix(opts.cachelab_mix)
        parse_think_time(opts.cachelab_think_time)
        shape = normalize_shape(opts.cachelab_shape)
        session = LoadTestSession(environment)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"cachelab: {exc}") from None
    if shape == "none":
        environment.shape_class = None  # plain -u/-r/-t, exactly as without a shape
    elif environment.shape_class is None and not isinstance(environment.runner, WorkerRunner):
        raise SystemExit(f"cachelab: --shape {shape} needs a SelectableShape subclass in the locustfile")
    if isinstance(environment.runner, MasterRunner | LocalRunner):
        _apply_mix(environment)
        faults = getattr(opts, "cachelab_fault", None) or []
        if faults:
            if not opts.cachelab_fault_proxy:
                raise SystemExit("cachelab: --fault needs --fault-proxy <the app's real Redis URL>")
            try:
                specs = parse_faults(faults)
            except ValueError as exc:
                raise SystemExit(f"cachelab: {exc}") from None
            limit = (opts.run_time or 3600) + 120
            session.faults = ProxyController(
                opts.cachelab_fault_proxy, opts.cachelab_fault_proxy_port or None, specs, max_seconds=limit
            )
    environment.cachelab = session
    events = environment.events
    events.request.add_listener(session.on_request)
    events.report_to_master.add_listener(session.on_report_to_master)
    events.worker_report.add_listener(session.on_worker_report)
    events.test_start.add_listener(session.on_test_start)
    events.test_stop.add_listener(session.on_test_stop)
    events.reset_stats.add_listener(session.on_reset_stats)
    events.quitting.add_listener(lambda environment, **kw: session.finalize())


def install(events: Any = None) -> None:
    """Register cachelab's listeners on Locust's ``events`` (idempotent)."""
    events = events or locust.events
    if getattr(events, "_cachelab_installed", False):
        return
    events._cachelab_installed = True
    events.init_command_line_parser.add_listener(add_arguments)
    events.init.add_listener(_on_init)
