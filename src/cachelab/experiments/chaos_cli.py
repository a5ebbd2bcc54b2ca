"""``cachelab chaos``: fault injection from the command line.

* ``cachelab chaos proxy --target URL`` puts a :class:`FaultProxy` in front
  of any Redis (a ``REDIS_URL`` server included: it is never touched, only the
  traffic to it) and applies a schedule of bounded faults, e.g.
  ``--fault hang@10+5 --fault slow@30+10:rtt=0.05``; point the app's
  ``REDIS_URL`` at the printed address. It exits after ``--duration``.
* ``cachelab chaos experiment --fault kill@5+5`` runs the outage experiment
  (launched Redis, app, worker, paced load) for each ``--config`` and prints
  the summary; ``--out`` keeps the timelines as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cachelab.harness.faults import KINDS, FaultSchedule, parse_fault
from cachelab.servers.fault_proxy import FaultProxy


def add_parser(sub: argparse._SubParsersAction) -> None:
    chaos = sub.add_parser("chaos", help="inject Redis faults: a fault proxy, or a full outage experiment")
    modes = chaos.add_subparsers(dest="chaos_command", metavar="MODE", required=True)

    proxy = modes.add_parser("proxy", help="a fault proxy in front of any Redis, with a fault schedule")
    proxy.add_argument("--target", required=True, help="the Redis URL to forward to")
    proxy.add_argument("--port", type=int, help="listen port on 127.0.0.1 (default: a free port)")
    proxy.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND@START+DURATION[:rtt=S]",
        help="slow, hang or reset (repeatable)",
    )
    proxy.add_argument(
        "--duration", type=float, default=60.0, help="exit after this many seconds (default 60)"
    )
    proxy.add_argument(
        "--control-stdin",
        action="store_true",
        help="also take commands on stdin, one per line: slow <rtt s>, hang, reset, heal "
        "(what the Locust plugin's --fault option drives); exits at EOF",
    )
    proxy.set_defaults(handler=_run_proxy)

    exp = modes.add_parser("experiment", help="the outage experiment: app under paced load, one fault")
    exp.add_argument(
        "--fault",
        required=True,
        metavar="KIND@START+DURATION[:rtt=S]",
        help=f"one of {', '.join(KINDS)}, e.g. kill@5+5",
    )
    exp.add_argument("--total", type=float, default=20.0, help="seconds of measured load (default 20)")
    exp.add_argument("--rate", type=float, default=40.0, help="requests per second (default 40)")
    exp.add_argument(
        "--config",
        action="append",
        choices=["breaker", "no-breaker", "limiter-open", "limiter-closed", "limiter-local"],
        help="configurations to compare (default: breaker, no-breaker)",
    )
    exp.add_argument(
        "--topology",
        choices=["split", "shared"],
        default="split",
        help="split (default): sessions and queue on a second Redis the fault spares; shared: one Redis",
    )
    exp.add_argument("--out", type=Path, help="write the timelines and summaries here (JSON)")
    exp.set_defaults(handler=_run_experiment)


def _run_proxy(args: argparse.Namespace) -> int:
    from cachelab.client import redact_url

    try:
        specs = [parse_fault(f) for f in args.fault]
    except ValueError as exc:
        print(f"cachelab chaos: {exc}", file=sys.stderr)
        return 2
    bad = [s.kind for s in specs if s.kind not in ("slow", "hang", "reset")]
    if bad:
        print(
            f"cachelab chaos proxy: {bad} need a launched server; the proxy does slow, hang, reset",
            file=sys.stderr,
        )
        return 2
    with FaultProxy.for_url(args.target, port=args.port) as proxy:
        print(f"proxy: {redact_url(proxy.url_for(args.target))} -> {redact_url(args.target)}", flush=True)
        schedules = [FaultSchedule(spec, proxy=proxy).begin() for spec in specs]
        try:
            if args.control_stdin:
                _follow_commands(proxy, time.monotonic() + args.duration)
            else:
                deadline = time.monotonic() + args.duration
                while time.monotonic() < deadline:
                    time.sleep(min(1.0, deadline - time.monotonic()))
        except KeyboardInterrupt:
            pass
        finally:
            for schedule in schedules:
                schedule.end()
        print(f"proxy stats: {proxy.stats}")
    return 0


def _follow_commands(proxy: FaultProxy, deadline: float) -> None:
    """Apply stdin commands until EOF or the deadline; every fault is healed on the way out."""
    import select

    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([sys.stdin], [], [], min(1.0, max(0.0, deadline - time.monotonic())))
            if not ready:
                continue
            line = sys.stdin.readline()
            if not line:
                return  # EOF: the controller went away
            command, *rest = line.split()
            if command == "slow":
                proxy.set_latency(float(rest[0]) if rest else 0.05)
            elif command == "hang":
                proxy.hang()
            elif command == "reset":
                proxy.refuse(True)
                proxy.reset()
            elif command == "heal":
                proxy.heal()
            print(f"proxy: {line.strip()}", flush=True)
    finally:
        proxy.heal()


def _run_experiment(args: argparse.Namespace) -> int:
    from cachelab.experiments.outage import LIMITER_CONFIGS, STANDARD_CONFIGS, OutagePlan, run_outage

    try:
        spec = parse_fault(args.fault)
    except ValueError as exc:
        print(f"cachelab chaos: {exc}", file=sys.stderr)
        return 2
    if spec.start + spec.duration > args.total:
        print("cachelab chaos: the fault must end before the load does (--total)", file=sys.stderr)
        return 2
    known = {c.name: c for c in (*STANDARD_CONFIGS, *LIMITER_CONFIGS)}
    configs = [known[name] for name in (args.config or ["breaker", "no-breaker"])]
    plan = OutagePlan(spec, duration=args.total, rate=args.rate, topology=args.topology)
    results = []
    for config in configs:
        print(
            f"running {config.name} ({plan.topology} topology): {spec.kind} from {spec.start}s "
            f"for {spec.duration}s ...",
            flush=True,
        )
        result = run_outage(plan, config)
        results.append(result.as_dict())
        s = result.summary
        print(
            f"  read 5xx during fault {s['reads_5xx_during_fault']}, p99 steady {s['p99_steady_ms']:.0f} ms, "
            f"p99 fault {s['p99_fault_ms']:.0f} ms, breaker open after {s['breaker_open_after_s']} s, "
            f"hit ratio back after {s['hit_ratio_recovered_after_s']} s, jobs lost {s['jobs_lost']}"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {args.out}")
    return 0
