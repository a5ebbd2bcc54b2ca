"""Layer 2: what launches processes — redis-server, a Redis Cluster, PostgreSQL, a fault proxy, kernels.

Every server here runs on a free loopback port, in a temporary directory, and
is always stopped (on Linux children also die with their parent, see
:mod:`.children`). These modules know the client (layer 0) and nothing above
it: the app (layer 3) launches its private Redis from here, and the harness
(layer 4) builds experiments on top. See ``cachelab._layers``.
"""

from cachelab.servers.redis_server import (
    RedisServer,
    RedisServerConfig,
    RedisServerFailed,
    RedisServerNotFound,
    find_redis_server,
    free_port,
    redis_target,
)

__all__ = [
    "RedisServer",
    "RedisServerConfig",
    "RedisServerFailed",
    "RedisServerNotFound",
    "find_redis_server",
    "free_port",
    "redis_target",
]
