"""Layer 1: the reference patterns, one module per family, on :class:`cachelab.client.ResilientRedis`.

They know nothing of HTTP, databases, settings or benchmarks: the app (layer 3)
configures them, ``bench/`` measures them. See ``cachelab._layers``.
"""
