"""The comparison notebooks' experiments, kept out of the notebooks.

Each notebook in ``notebooks/`` is thin: a ``parameters`` cell (``profile``,
``out_dir``), one call per experiment into a module here, a plot, and text
that says what the plot means. Keeping the logic in the package means it is
linted, importable from tests and from ``cachelab report``, and the same code
runs whether the notebook is opened by hand or executed by papermill.

=================  ===========================================================
module             notebook
=================  ===========================================================
:mod:`.ttl`        01 — TTL trade-offs through the sample app
:mod:`.pipelining` 02 — batch size, sync vs async, MULTI/EXEC, redis-benchmark
:mod:`.warming`    03 — cold vs warm cache, time to warm, explicit warming
:mod:`.outages`    04 — fail-open timelines under kill, hang and slow
:mod:`.stampede`   05 — loader calls and p99 when a hot key is cold or expires
:mod:`.ratelimits` 06 — burst at window edges and cost per check
:mod:`.queues`     10 — list vs Streams vs RQ queues; concurrency limiter cost
:mod:`.near_cache` 11 — near cache off vs on: round trips, staleness, memory
=================  ===========================================================

Every notebook writes the same three kinds of artefact into ``out_dir``
through :mod:`.output`, which ``cachelab report`` lifts into ``summary.md``.

Layer 5, beside :mod:`cachelab.experiments` and :mod:`cachelab.report`: it uses
the experiments, the harness and everything below (see ``cachelab._layers``).
"""

from cachelab.analysis.output import (
    PROFILES,
    for_profile,
    jsonable,
    save_figure,
    write_json,
    write_summary,
    write_table,
)

__all__ = [
    "PROFILES",
    "for_profile",
    "jsonable",
    "save_figure",
    "write_json",
    "write_summary",
    "write_table",
]
