"""``cachelab report`` and ``cachelab compare``: result folders, trials, verdicts, summaries.

Layer 5, beside :mod:`cachelab.experiments` and :mod:`cachelab.analysis` (see ``cachelab._layers``).
"""
