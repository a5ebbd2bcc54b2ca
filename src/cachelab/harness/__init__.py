"""What experiments need: a Redis of their own, fault injection, cost capture, workloads."""

from cachelab.harness.cost import Cost, CostMeter
from cachelab.harness.redis_server import (
    RedisServer,
    RedisServerConfig,
    RedisServerFailed,
    RedisServerNotFound,
    find_redis_server,
    free_port,
    redis_target,
)

__all__ = [
    "Cost",
    "CostMeter",
    "RedisServer",
    "RedisServerConfig",
    "RedisServerFailed",
    "RedisServerNotFound",
    "find_redis_server",
    "free_port",
    "redis_target",
]
