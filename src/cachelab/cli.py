"""The ``cachelab`` command.

Each subcommand lives in the module that owns its logic; this file only wires
argparse to them, so ``cachelab <cmd> --help`` documents every flag.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

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
    p.add_argument("--lease-seconds", type=float, default=30.0,
                   help="visibility timeout before a silent worker's job is re-delivered (default: 30)")
    p.add_argument("--max-deliveries", type=int, default=5,
                   help="deliveries before a job is dead-lettered (default: 5)")
    p.add_argument("--grace-period", type=float, default=8.0,
                   help="seconds to finish jobs in hand after SIGTERM before handing them back "
                   "(default: 8, inside docker's 10 s stop timeout)")

    def run(args: argparse.Namespace) -> int:
        from cachelab.worker import main as worker_main

        return worker_main(args)

    p.set_defaults(handler=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cachelab", description="Redis pattern benchmarks, load tests and reports."
    )
    parser.add_argument("--version", action="version", version=f"cachelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_worker(sub)
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
