"""The ``cachelab`` command.

Each subcommand lives in the module that owns its logic; this file only wires
argparse to them, so ``cachelab <cmd> --help`` documents every flag.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from cachelab import __version__
from cachelab.config import ConfigError

Handler = Callable[[argparse.Namespace], int]


def _add_worker(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run job-queue workers")
    p.add_argument("--queue", default="reports", help="queue name (default: reports)")
    p.add_argument("--concurrency", type=int, default=1, help="jobs processed at once per process")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.add_argument(
        "--allow-evicting-redis",
        action="store_true",
        help="run even if the server's maxmemory-policy could evict queue keys",
    )
    p.add_argument(
        "--handlers",
        action="append",
        metavar="MODULE:ATTR",
        help="extra job handlers: a {job_type: async fn(payload)} mapping, or a callable returning "
        "one (repeatable; built-ins: echo, sleep)",
    )
    p.add_argument(
        "--lease-seconds",
        type=float,
        default=30.0,
        help="visibility timeout before a silent worker's job is re-delivered (default: 30)",
    )
    p.add_argument(
        "--max-deliveries", type=int, default=5, help="deliveries before a job is dead-lettered (default: 5)"
    )
    p.add_argument(
        "--grace-period",
        type=float,
        default=8.0,
        help="seconds to finish jobs in hand after SIGTERM before handing them back "
        "(default: 8, inside docker's 10 s stop timeout)",
    )

    def run(args: argparse.Namespace) -> int:
        from cachelab.worker import main as worker_main

        return worker_main(args)

    p.set_defaults(handler=run)


def _add_seed_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenants", type=int, default=5, help="tenants to generate when seeding (default 5)")
    p.add_argument(
        "--initiatives-per-tenant",
        type=int,
        default=2000,
        help="initiatives per tenant when seeding (default 2000)",
    )


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the sample Initiative Dashboard API",
        description=(
            "Run the sample API under uvicorn. Without REDIS_URL a private redis-server is launched; "
            "without DATABASE_URL a SQLite file (./cachelab.db) is created and seeded. Settings come from "
            "the environment / .env: REDIS_URL, DATABASE_URL, CACHELAB_CACHE_MODE (off, cache-aside, "
            "refresh-ahead, swr, xfetch, lock), CACHELAB_RATE_LIMIT ('<requests>/<seconds>s'), "
            "CACHELAB_RATE_LIMIT_ALGORITHM (fixed_window, sliding_log, sliding_window, token_bucket, gcra), "
            "CACHELAB_RATE_LIMIT_FAILURE (open, closed, local), CACHELAB_BREAKER_ENABLED, "
            "CACHELAB_BREAKER_FAILURE_THRESHOLD, CACHELAB_BREAKER_RESET_TIMEOUT, "
            "CACHELAB_REDIS_CONNECT_TIMEOUT, CACHELAB_REDIS_COMMAND_TIMEOUT, CACHELAB_KPI_TTL, "
            "CACHELAB_AREAS_TTL, CACHELAB_LIST_TTL, "
            "CACHELAB_DASHBOARD_SOFT_TTL, CACHELAB_DASHBOARD_TTL, CACHELAB_TTL_JITTER, CACHELAB_DB_DELAY_MS, "
            "CACHELAB_SEED_PASSWORD (every seeded user's password; unset: a random one kept in a 0600 file "
            "on a loopback bind, refused on any other), CACHELAB_SEED_PASSWORD_FILE, "
            "CACHELAB_TRUSTED_PROXIES (whose X-Forwarded-For to believe; default nobody's), "
            "CACHELAB_LOGIN_RATE_LIMIT_IP, CACHELAB_LOGIN_RATE_LIMIT_ACCOUNT."
        ),
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

        from cachelab.census import take_census
        from cachelab.client import create_sync_client
        from cachelab.config import load_settings

        url = args.url or load_settings().redis_url
        if not url:
            print("cachelab inspect: no Redis to inspect: set REDIS_URL or pass --url", file=sys.stderr)
            return 2
        client = create_sync_client(url)
        try:
            census = take_census(client, match=args.match, depth=args.depth, max_keys=args.max_keys)
        finally:
            client.close()
        print(json.dumps(census.as_dict(), indent=2) if args.json else census.table())
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
            "interleaved trials; comparisons come with 95%% intervals. Exit code 1 when an SLO fails or a "
            "step could not run."
        ),
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_const", const="quick", dest="profile",
                       help="short runs: about 5 minutes on 2 cores (default)")
    group.add_argument("--full", action="store_const", const="full", dest="profile",
                       help="longer runs and more configurations")
    p.set_defaults(profile="quick")
    p.add_argument(
        "--against",
        metavar="REF",
        help="also measure git REF (a worktree with its own venv), its trials interleaved with this "
        "checkout's, and lead with the verdict against it (like `asv continuous`)",
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

    def run(args: argparse.Namespace) -> int:
        from cachelab.report.capacity import EXAMPLE_PLANS, Plan
        from cachelab.report.metrics import MetricsError
        from cachelab.report.run import run_report
        from cachelab.report.sides import SideError

        try:
            plans = tuple(Plan.parse(t) for t in args.plan) or EXAMPLE_PLANS
            outcome = run_report(profile_name=args.profile, out=args.out, baseline=args.baseline,
                                 against=args.against, slos=args.slo, plans=plans, skip=set(args.skip),
                                 bench_select=args.bench_select, fail_on_regression=args.fail_on_regression)
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
            "compared from their trials (Welch t on log values, 95%% intervals, Benjamini-Hochberg over all "
            "metrics) and called only when significant and beyond the minimum effect; miss ratios as "
            "proportions. Exit 2 when a folder cannot be read."
        ),
    )
    p.add_argument("baseline", type=Path, help="the earlier result folder")
    p.add_argument("candidate", type=Path, help="the later result folder")
    p.add_argument("--min-effect", type=float, metavar="FRACTION",
                   help="smallest relative change to call for timed metrics (default 0.25 between runs)")
    p.add_argument("--fail-on-regression", action="store_true", help="exit 1 if any regression is called")

    def run(args: argparse.Namespace) -> int:
        from cachelab.report.compare import compare_folders, regressions
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
        return 1 if regressions(rows) and args.fail_on_regression else 0

    p.set_defaults(handler=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cachelab", description="Redis pattern benchmarks, load tests and reports."
    )
    parser.add_argument("--version", action="version", version=f"cachelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_serve(sub)
    _add_seed_db(sub)
    _add_worker(sub)
    _add_inspect(sub)
    _add_report(sub)
    _add_compare(sub)
    from cachelab.harness.chaos_cli import add_parser as add_chaos

    add_chaos(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"cachelab: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
