"""Health and server metrics from one PING and one INFO round trip.

Seed version: times ``getRedisClient()`` *and* PING together, so its
"latency" includes connecting; its metrics return the raw ``CLIENT LIST``
(every connection's details, a cost that grows with the fleet).

Here PING latency is measured alone on a pooled connection, and the figures an
operator needs — role, memory and its limit, eviction policy and evictions,
keyspace hit ratio, connected clients, ops/s — come from ``INFO``. Round
trips: 2 (PING, then one pipelined batch of INFO sections, which also works on
Redis 6.2 where INFO takes one section at a time). On Redis Cluster: PING one
node, then one INFO per primary (sent concurrently), counters summed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from cachelab.client import ResilientRedis
from cachelab.resilience import RedisUnavailable

SECTIONS = ("server", "replication", "memory", "stats", "clients")


def server_identity(info: Mapping[str, Any]) -> tuple[str, str]:
    """``(family, version)`` from ``INFO server``: ``("valkey", "8.1.8")`` or ``("redis", "7.0.15")``.

    Valkey answers ``redis_version`` too (7.2.4, for clients that gate features on
    it), so ``redis_version`` alone would call every Valkey a Redis 7.2; its own
    ``valkey_version`` (or ``server_name: valkey``) says what actually ran.
    """
    if info.get("valkey_version") or str(info.get("server_name", "")).lower() == "valkey":
        return "valkey", str(info.get("valkey_version") or info.get("redis_version") or "unknown")
    return "redis", str(info.get("redis_version") or "unknown")


def server_label(info: Mapping[str, Any]) -> str:
    """``"Valkey 8.1.8"`` / ``"Redis 7.0.15"``: what a report prints."""
    family, version = server_identity(info)
    return f"{family.capitalize()} {version}"


#: Counters that add up across a cluster's primaries (the rest are taken from the first one).
_SUMMED = ("used_memory", "maxmemory", "evicted_keys", "keyspace_hits", "keyspace_misses",
           "connected_clients", "instantaneous_ops_per_sec")


async def cluster_info(rr: ResilientRedis) -> dict[str, Any]:
    """INFO of every primary, merged: counters summed, ``nodes`` = how many answered.

    redis-py refuses INFO in a cluster pipeline, and a bare INFO goes to one
    node; a cluster's hit ratio, memory and evictions are the sum over its
    primaries. One INFO (default sections) per primary, sent concurrently.
    """
    import redis.asyncio

    reply = await rr.call(rr.client.info, target_nodes=redis.asyncio.RedisCluster.PRIMARIES)
    parts = list(reply.values()) if all(isinstance(v, dict) for v in reply.values()) else [reply]
    merged: dict[str, Any] = dict(parts[0])
    for name in _SUMMED:
        merged[name] = sum(int(p.get(name, 0)) for p in parts)
    merged["nodes"] = len(parts)
    return merged


async def server_info(rr: ResilientRedis) -> dict[str, Any]:
    if rr.is_cluster:
        return await cluster_info(rr)
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
        "server": server_identity(info)[0],
        "version": server_identity(info)[1],
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
        "nodes": int(info.get("nodes", 1)),
    }
