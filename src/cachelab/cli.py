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
