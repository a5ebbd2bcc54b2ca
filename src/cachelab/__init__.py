"""cachelab: correct, measured Redis patterns for caching, rate limiting, sessions and queues.

The package is layered (client, patterns, settings and servers, app, harness,
experiments, command line); each module imports only from its own layer or
below, and nothing imports in a cycle. The map and the reasons are in
:mod:`cachelab._layers`.
"""

__version__ = "0.1.0"
