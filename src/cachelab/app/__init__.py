"""Layer 3: the sample Initiative Dashboard API (FastAPI) and its database, built from the patterns.

It reads :mod:`cachelab.config` and may launch a private Redis from
:mod:`cachelab.servers`; it never imports the harness, load tests or
experiments that drive it. See ``cachelab._layers``.
"""
