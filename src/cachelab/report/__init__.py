"""``cachelab report`` and ``cachelab compare``: result folders, trials, verdicts, summaries."""
