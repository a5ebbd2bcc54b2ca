"""The layers of ``cachelab``: a module imports only from its own layer or below.

Each layer is what the ones above it are built from, so a change low down is
visible to everything above, and nothing low down depends on an experiment,
the app or the command line. ``tests/test_layers.py`` checks every import in
``src/cachelab`` (module level or inside a function, and ``"module:attr"``
strings that are imported by name) against this map, checks that there is no
import cycle at all, and checks the README's layout table against it.

0. ``client``, ``pool``, ``resilience``, ``request_cost``, ``errors``: the Redis
   client, its connection pool and its breaker; it takes options, never settings, so everything can use it.
1. ``patterns/``, ``census``: what runs on a client — the reference patterns,
   ``inspect``'s SCAN census.
2. ``config``, ``servers/``: settings (validated with the parsers of 0 and 1);
   what launches processes (redis-server, a cluster, PostgreSQL, the fault proxy).
3. ``app/``: the sample API, built from patterns and settings; it may launch a
   private Redis from ``servers``.
4. ``harness/``, ``loadtest/``, ``testing``: what experiments, load tests and
   tests need — the app as a process, logging in, cost, faults, Locust.
5. ``experiments/``, ``analysis/``, ``report/``: whole experiments, the
   notebooks' analyses, and the report that runs them.
6. ``cli``, ``worker``, ``__main__``: the ``cachelab`` command and the job worker.
"""

from __future__ import annotations

#: Module or package (and everything inside it) → layer. ``cachelab`` itself is only its ``__init__``.
LAYERS: dict[str, int] = {
    "cachelab": 0,
    "cachelab._layers": 0,
    "cachelab.errors": 0,
    "cachelab.request_cost": 0,
    "cachelab.resilience": 0,
    "cachelab.client": 0,
    "cachelab.pool": 0,
    "cachelab.patterns": 1,
    "cachelab.census": 1,
    "cachelab.config": 2,
    "cachelab.servers": 2,
    "cachelab.app": 3,
    "cachelab.harness": 4,
    "cachelab.loadtest": 4,
    "cachelab.testing": 4,
    "cachelab.experiments": 5,
    "cachelab.analysis": 5,
    "cachelab.report": 5,
    "cachelab.cli": 6,
    "cachelab.worker": 6,
    "cachelab.__main__": 6,
}


def layer_of(module: str) -> int | None:
    """The layer of a dotted module name (its longest listed prefix), or None if it has none."""
    if module in LAYERS:
        return LAYERS[module]
    parts = module.split(".")
    for end in range(len(parts) - 1, 1, -1):  # never falls back to the bare "cachelab"
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    return None
