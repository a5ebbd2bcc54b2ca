"""The ``cachelab`` command.

Each subcommand lives in the module that owns its logic; this file only wires
argparse to them, so ``cachelab <cmd> --help`` documents every flag.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

from cachelab import __version__
from cachelab.config import ConfigError
from cachelab.servers.redis_server import SERVERS, RedisServerFailed, RedisServerNotFound, selected_server

Handler = Callable[[argparse.Namespace], int]


def _first_line(exc: BaseException) -> str:
    """An exception as one line: its message's first line, or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _add_seed_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenants", type=int, default=5, help="tenants to generate when seeding (default 5)")
    p.add_argument(
        "--initiatives-per-tenant",
        type=int,
        default=2000,
        help="initiatives per tenant when seeding (default 2000)",
    )


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from cachelab.config import settings_help

    p = sub.add_parser(
        "serve",
        help="run the sample Initiative Dashboard API",
        description=textwrap.fill(
            "Run the sample API under uvicorn. Without REDIS_URL a private redis-server is launched; "
            "without DATABASE_URL a SQLite file (./cachelab.db) is created and seeded.", 100
        ),
        epilog="settings (from the environment or a .env file):\n" + settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    p.add_argument(
        "--job-workers", type=int, default=1, help="report-job worker processes to run (default 1)"
    )
    p.add_argument("--cache-mode", default=None, help="override CACHELAB_CACHE_MODE")
    p.add_argument("--rate-limit", default=None, help="override CACHELAB_RATE_LIMIT, e.g. 1000/60s")
    p.add_argument(
        "--db-delay-ms",
        type=float,
        default=None,
        help="model a remote database: added delay per query in ms (off by default)",
    )
    p.add_argument(
        "--near-cache",
        action="store_true",
        help="keep the hot caches in process too, invalidated by Redis (CACHELAB_NEAR_CACHE=on)",
    )
    p.add_argument(
        "--fast-reads",
        action="store_true",
        help="with --near-cache: answer warm cached reads in process, trusting sessions for "
        "CACHELAB_SESSION_TRUST seconds and leasing rate-limit units (CACHELAB_FAST_READS=on)",
    )
    p.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")

    _add_seed_flags(p)

    def run(args: argparse.Namespace) -> int:
        from cachelab.app.serve import serve_command

        return serve_command(args)

    p.set_defaults(handler=run)


def _add_seed_db(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "seed-db", help="fill the database (DATABASE_URL, default ./cachelab.db) with sample data"
    )
    p.add_argument("--reset", action="store_true", help="drop and recreate existing tables first")

    _add_seed_flags(p)

    def run(args: argparse.Namespace) -> int:
        from cachelab.app.serve import seed_db_command

        return seed_db_command(args)

    p.set_defaults(handler=run)


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="SCAN-based census of a Redis: key prefixes, counts, memory, TTLs (read-only)",
        description="Walks the keyspace with SCAN (never KEYS) and writes nothing.",
    )
    p.add_argument("--url", help="Redis URL (default: REDIS_URL)")
    p.add_argument("--match", default="*", help="SCAN MATCH pattern (default *)")
    p.add_argument("--depth", type=int, default=3, help="key segments that make a prefix (default 3)")
    p.add_argument("--max-keys", type=int, default=200_000, help="stop after this many keys (default 200000)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    def run(args: argparse.Namespace) -> int:
        import json

        import redis

        from cachelab.census import take_census
        from cachelab.client import create_sync_client, redact_url
        from cachelab.config import load_settings

        url = args.url or load_settings().redis_url
        if not url:
            print("cachelab inspect: no Redis to inspect: set REDIS_URL or pass --url", file=sys.stderr)
            return 2
        unreachable = (redis.RedisError, redis.exceptions.RedisClusterException)
        try:
            client = create_sync_client(url)  # a cluster client connects here already
        except ConfigError as exc:  # a malformed --url (REDIS_URL was checked by load_settings)
            print(f"cachelab inspect: {str(exc).replace('REDIS_URL', '--url', 1)}", file=sys.stderr)
            return 2
        except unreachable as exc:
            print(f"cachelab inspect: {redact_url(url)}: {_first_line(exc)}", file=sys.stderr)
            return 1
        try:
            census = take_census(client, match=args.match, depth=args.depth, max_keys=args.max_keys)
        except unreachable as exc:
            print(f"cachelab inspect: {redact_url(url)}: {_first_line(exc)}", file=sys.stderr)
            return 1
        finally:
            client.close()
        print(json.dumps(census.as_dict(), indent=2) if args.json else census.table())
        return 0

    p.set_defaults(handler=run)


def _add_locust_options(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "locust-options",
        help="list the options cachelab adds to `locust -f locustfiles/dashboard.py`",
        description="Locust prints --help before it loads a locustfile, so the options the "
        "dashboard locustfile adds are listed here instead.",
    )

    def run(args: argparse.Namespace) -> int:
        from cachelab.loadtest.options import options_help

        print(options_help(), end="")
        return 0

    p.set_defaults(handler=run)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="run benchmarks, load scenarios, outage experiments and notebooks; write results/<run-id>/",
        description=(
            "Runs everything and writes results/<timestamp>-<git-sha>/ (in the checkout) with manifest.json, "
            "metrics.json (every trial), summary.md (verdicts, capacity, SLOs: paste into a PR), report.html "
            "(self-contained), raw data and executed notebooks. Benchmarks and load runs are repeated, "
            "interleaved trials; comparisons come with 95% intervals. Exit code 1 when an SLO fails or a "
            "step could not run."
        ),
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_const", const="quick", dest="profile",
                       help="short runs: about 6 minutes on 2 cores (default)")
    group.add_argument("--full", action="store_const", const="full", dest="profile",
                       help="longer runs and more configurations")
    p.set_defaults(profile="quick")
    p.add_argument(
        "--against",
        metavar="REF",
        help="also measure git REF (a worktree with its own venv), its trials interleaved with this "
        "checkout's, and lead with the verdict against it (like `asv continuous`)",
    )
    p.add_argument(
        "--against-server",
        choices=sorted(SERVERS),
        metavar="SERVER",
        help="also measure this checkout on another server family (redis or valkey), trials interleaved, "
        "and show the two side by side (a description, never a regression)",
    )
    p.add_argument("--baseline", type=Path, help="an earlier result folder to judge this run against")
    p.add_argument(
        "--out", type=Path, help="write here (a new or empty folder) instead of results/<timestamp>-<sha>/"
    )
    p.add_argument("--slo", action="append", default=[], metavar="METRIC<OP>VALUE",
                   help="an extra SLO, e.g. 'load.cache_on.p99_ms<200' (repeatable; see metrics.json)")
    p.add_argument("--plan", action="append", default=[], metavar="NAME:ops=N,net=MBps,mem=MB",
                   help="a Redis plan to size against (repeatable; default: two example plans)")
    p.add_argument("--skip", action="append", default=[], choices=["benchmarks", "load", "notebooks"],
                   help="leave a step out (repeatable)")
    p.add_argument("--bench-select", metavar="EXPR",
                   help="only the benchmarks matching this pytest -k expression")
    p.add_argument("--fail-on-regression", action="store_true",
                   help="exit 1 when a regression is called against --against or --baseline")
    p.add_argument("--trials", type=int, metavar="N",
                   help="benchmark and load trials per side (quick: 4, full: 5 and 6); more narrow the "
                        "intervals, at the cost of time")

    def run(args: argparse.Namespace) -> int:
        from cachelab.report.capacity import EXAMPLE_PLANS, Plan
        from cachelab.report.metrics import MetricsError
        from cachelab.report.run import run_report
        from cachelab.report.sides import SideError

        try:
            plans = tuple(Plan.parse(t) for t in args.plan) or EXAMPLE_PLANS
            outcome = run_report(profile_name=args.profile, out=args.out, baseline=args.baseline,
                                 against=args.against, against_server=args.against_server, slos=args.slo,
                                 plans=plans, skip=set(args.skip), bench_select=args.bench_select,
                                 fail_on_regression=args.fail_on_regression, trials=args.trials)
        except (ValueError, FileNotFoundError, RuntimeError, MetricsError, SideError) as exc:
            print(f"cachelab report: {exc}", file=sys.stderr)
            return 2
        print(outcome.folder / "summary.md")
        return outcome.exit_code

    p.set_defaults(handler=run)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="judge one result folder against another: regressions, improvements, how much did not change",
        description=(
            "Exact metrics (round trips, commands, bytes, statements) change or do not; timed metrics are "
            "compared from their trials (Welch t on log values, 95% intervals, Benjamini-Hochberg over all "
            "metrics) and called only when significant and beyond the minimum effect; miss ratios as "
            "proportions. Exit 2 when a folder cannot be read."
        ),
    )
    p.add_argument("baseline", type=Path, help="the earlier result folder")
    p.add_argument("candidate", type=Path, help="the later result folder")
    p.add_argument("--min-effect", type=float, metavar="FRACTION",
                   help="smallest relative change to call for timed metrics (default between runs: 0.25, "
                   "0.5 for server µs and p99)")
    p.add_argument("--fail-on-regression", action="store_true",
                   help="exit 1 if a regression is called, or a judged metric of the baseline is missing "
                   "(a failed step; skipped steps and --bench-select are allowed for)")

    def run(args: argparse.Namespace) -> int:
        from cachelab.report.compare import compare_folders, failures
        from cachelab.report.metrics import MetricsError

        if args.min_effect is not None and not 0 <= args.min_effect < 10:
            print("cachelab compare: --min-effect must be a fraction such as 0.1", file=sys.stderr)
            return 2
        try:
            text, rows = compare_folders(args.baseline, args.candidate, min_effect=args.min_effect)
        except (FileNotFoundError, MetricsError) as exc:
            print(f"cachelab compare: {exc}", file=sys.stderr)
            return 2
        print(text)
        return 1 if failures(rows) and args.fail_on_regression else 0

    p.set_defaults(handler=run)


def _add_hotpath(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hotpath",
        help="a warm cached endpoint against the app's no-op floor, one uvicorn worker under wrk",
        description=textwrap.fill(
            "Launch the sample app (private Redis, SQLite, one uvicorn worker), warm it, and load a warm "
            "cached endpoint, the no-op /api/live and /openapi.json in interleaved wrk blocks: req/s, "
            "server CPU per request, and each against the floor. Needs wrk (apt-get install wrk).", 100
        ),
    )
    p.add_argument("--blocks", type=int, default=6, help="interleaved blocks per endpoint (default 6)")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per block (default 3)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    p.add_argument("--pythonpath", help="run the app from another checkout's src folder (a 'before')")
    p.add_argument(
        "--fast-reads",
        action="store_true",
        help="run the app with CACHELAB_NEAR_CACHE=on and CACHELAB_FAST_READS=on",
    )
    p.add_argument("--out", type=Path, help="also write hotpath.md and hotpath.json into this folder")

    def run(args: argparse.Namespace) -> int:
        from cachelab.analysis.hotpath import HotpathPlan, WrkMissing, markdown, write
        from cachelab.analysis.hotpath import run as run_hotpath

        if args.blocks < 1 or args.seconds <= 0 or args.connections < 1:
            print("cachelab hotpath: --blocks, --seconds and --connections must be positive", file=sys.stderr)
            return 2
        plan = HotpathPlan(blocks=args.blocks, seconds=args.seconds, connections=args.connections,
                           fast_reads=args.fast_reads)  # fmt: skip
        try:
            result = run_hotpath(plan, pythonpath=args.pythonpath)
        except WrkMissing as exc:
            print(f"cachelab hotpath: {exc}", file=sys.stderr)
            return 2
        print(markdown(result), end="")
        if args.out:
            write(result, args.out)
        return 0

    p.set_defaults(handler=run)


def _add_peers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "peers",
        help="ours beside cashews, aiocache, limits and RQ: interleaved, each on its own default client",
        description=(
            "Launches a private redis-server and compares ours with the floor (raw redis-py) and the peer "
            "libraries, each on its own default client and pool, in interleaved blocks (order rotated each "
            "block). Prints a markdown table (per-block ratio ours/theirs: median [min-max], 95 percent "
            "CI, target, pass/fail/unsure) and, with --out, writes peers.md and peers.json there. A peer "
            "that is not installed is skipped with a line saying so."
        ),
    )
    p.add_argument("--blocks", type=int, help="interleaved blocks per comparison (default 15; --quick 3)")
    p.add_argument("--ops", type=int, help="operations (drain: jobs) per contender per block (default 100)")
    p.add_argument("--keys", type=int, help="keys/identifiers in the spread cases (default 1000)")
    p.add_argument("--only", action="append", choices=["cache", "ratelimit", "drain"],
                   help="run only this section (repeatable)")
    p.add_argument("--out", type=Path, help="also write peers.md and peers.json into this folder")
    p.add_argument("--quick", action="store_true", help="a few seconds: 3 blocks of 20 ops, 50 keys")

    def run(args: argparse.Namespace) -> int:
        from cachelab.analysis.peers import main as peers_main
        from cachelab.worker import Worker  # handed in: analysis/ sits below the worker command

        return peers_main(args, worker=Worker)

    p.set_defaults(handler=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cachelab", description="Redis pattern benchmarks, load tests and reports."
    )
    parser.add_argument("--version", action="version", version=f"cachelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_serve(sub)
    _add_seed_db(sub)
    from cachelab.worker import add_parser as add_worker

    add_worker(sub)
    _add_inspect(sub)
    _add_locust_options(sub)
    _add_report(sub)
    _add_compare(sub)
    _add_hotpath(sub)
    _add_peers(sub)
    from cachelab.experiments.chaos_cli import add_parser as add_chaos

    add_chaos(sub)
    for command in ("serve", "report", "chaos"):  # the commands that launch a server of their own
        sub.choices[command].add_argument(
            "--server",
            choices=sorted(SERVERS),
            help="which server to launch when REDIS_URL is unset: redis (default) or valkey "
            "(sets CACHELAB_SERVER for everything this command starts)",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    if getattr(args, "server", None):
        os.environ["CACHELAB_SERVER"] = args.server  # inherited by the app, worker and pytest children
    try:
        if hasattr(args, "server"):
            selected_server()  # a bad CACHELAB_SERVER stops a launching command before it starts
        return handler(args)
    except (ConfigError, RedisServerNotFound) as exc:
        print(f"cachelab: {exc}", file=sys.stderr)
        return 2
    except RedisServerFailed as exc:
        print(f"cachelab: {_first_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
