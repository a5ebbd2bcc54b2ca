"""Layer 5: whole experiments — outage timelines, stampedes, and ``cachelab chaos``.

Each one launches what it needs (servers, the app), drives load, injects
faults and returns numbers; the notebooks' :mod:`cachelab.analysis` and
``cachelab report`` (same layer) call them. They import from the harness
and below, never from the command line. See ``cachelab._layers``.
"""
