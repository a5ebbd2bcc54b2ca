"""Health and server metrics from one PING and one INFO round trip.

Seed version: times ``getRedisClient()`` *and* PING together, so its
"latency" includes connecting; its metrics return the raw ``CLIENT LIST``
(every connection's details, a cost that grows with the fleet).

Here PING latency is measured alone on a pooled connection, and the figures an
operator needs — role, memory and its limit, eviction policy and evictions,
keyspace hit ratio, connected clients, ops/s — come from ``INFO``. Round
trips: 2 (PING, then one pipelined batch of INFO sections, which also works on
Redis 6.2 where INFO takes one section at a time).
"""

from __future__ import annotations

import time
from typing import Any

from cachelab.client import ResilientRedis
from cachelab.resilience import RedisUnavailable

SECTIONS = ("server", "replication", "memory", "stats", "clients")


async def server_info(rr: ResilientRedis) -> dict[str, Any]:
    pipe = rr.client.pipeline(transaction=False)
    for section in SECTIONS:
        pipe.info(section)
    merged: dict[str, Any] = {}
    for part in await rr.call(pipe.execute):
        merged.update(part)
    return merged


async def redis_health(rr: ResilientRedis) -> dict[str, Any]:
    """``{"status": "ok"|"down", "latency_ms", "role", …}``; never raises for an outage."""
    try:
        started = time.perf_counter()
        await rr.call(rr.client.ping)
        latency_ms = (time.perf_counter() - started) * 1000
        info = await server_info(rr)
    except RedisUnavailable as exc:
        return {"status": "down", "error": str(exc), "breaker": rr.breaker.state.value}
    hits, misses = int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))
    return {
        "status": "ok",
        "latency_ms": round(latency_ms, 3),
        "breaker": rr.breaker.state.value,
        "version": info.get("redis_version"),
        "role": info.get("role"),
        "used_memory": int(info.get("used_memory", 0)),
        "maxmemory": int(info.get("maxmemory", 0)),
        "maxmemory_policy": info.get("maxmemory_policy"),
        "evicted_keys": int(info.get("evicted_keys", 0)),
        "keyspace_hits": hits,
        "keyspace_misses": misses,
        "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
        "connected_clients": int(info.get("connected_clients", 0)),
        "ops_per_sec": int(info.get("instantaneous_ops_per_sec", 0)),
    }
