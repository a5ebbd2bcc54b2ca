"""``cachelab report`` and ``cachelab compare``: results folders, summaries, deltas."""
