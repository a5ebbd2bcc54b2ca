"""``cachelab inspect``: a SCAN-based census of a Redis keyspace. Read-only.

The guide debugs with ``KEYS *`` (blocks the server for the whole walk) and
``FLUSHDB`` (destroys everything, sessions and queues included). A census
walks the keyspace incrementally with ``SCAN``, groups keys by prefix (ids
folded away), and reports per prefix: how many keys, their types, memory (from
``MEMORY USAGE`` on a bounded sample, extrapolated), and a TTL distribution —
including keys without a TTL, which is where leaks and "cache" keys that never
expire show up. It sends only SCAN, TYPE, PTTL and MEMORY USAGE, pipelined per
SCAN page, and stops after ``max_keys``. On Redis Cluster it walks every
primary (SCAN is per node) and adds the nodes up.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import redis

_ID_LIKE = re.compile(r"^(\d+|[0-9a-f]{16,}|[A-Za-z0-9_-]{32,})$")
TTL_BUCKETS = (("no-ttl", None), ("<1m", 60_000), ("<1h", 3_600_000), ("<1d", 86_400_000), (">=1d", None))


def prefix_of(key: str, depth: int = 3) -> str:
    """``cl:{acme-01}:kpi:kpis`` → ``cl:{*}:kpi``: ids and hash tags folded, ``depth`` segments kept."""
    parts = key.split(":")[:depth]
    folded = []
    for part in parts:
        if part.startswith("{") and part.endswith("}"):
            folded.append("{*}")
        elif _ID_LIKE.match(part):
            folded.append("*")
        else:
            folded.append(part)
    return ":".join(folded) + (":…" if key.count(":") >= depth else "")


def _ttl_bucket(pttl: int) -> str:
    if pttl < 0:
        return "no-ttl"
    for name, limit in TTL_BUCKETS[1:4]:
        if limit is not None and pttl < limit:
            return name
    return ">=1d"


@dataclass
class PrefixStats:
    prefix: str
    keys: int = 0
    types: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    ttl: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sampled: int = 0
    sampled_bytes: int = 0

    @property
    def est_bytes(self) -> int:
        return int(self.sampled_bytes / self.sampled * self.keys) if self.sampled else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "keys": self.keys,
            "est_bytes": self.est_bytes,
            "bytes_per_key": round(self.sampled_bytes / self.sampled) if self.sampled else None,
            "types": dict(self.types),
            "ttl": {name: self.ttl.get(name, 0) for name, _ in TTL_BUCKETS},
        }


@dataclass
class Census:
    scanned: int
    truncated: bool
    dbsize: int
    prefixes: list[PrefixStats]

    def as_dict(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "truncated": self.truncated,
            "dbsize": self.dbsize,
            "prefixes": [p.as_dict() for p in self.prefixes],
        }

    def table(self) -> str:
        lines = [
            f"{'prefix':40} {'keys':>8} {'~bytes':>12} {'B/key':>7}  ttl (no-ttl/<1m/<1h/<1d/>=1d)  types",
        ]
        for p in self.prefixes:
            d = p.as_dict()
            ttl = "/".join(str(v) for v in d["ttl"].values())
            types = ",".join(f"{k}:{v}" for k, v in sorted(d["types"].items()))
            per_key = d["bytes_per_key"] or "-"
            lines.append(f"{p.prefix[:40]:40} {p.keys:>8} {p.est_bytes:>12} {per_key:>7}  {ttl:30} {types}")
        note = f" (stopped at {self.scanned} keys)" if self.truncated else ""
        lines.append(f"scanned {self.scanned} of {self.dbsize} keys{note}")
        return "\n".join(lines)


def take_census(
    client: redis.Redis | redis.RedisCluster,
    *,
    match: str = "*",
    depth: int = 3,
    max_keys: int = 200_000,
    sample_per_prefix: int = 50,
    page: int = 1000,
) -> Census:
    """Census of ``client``'s keyspace; for a cluster client, of every primary's."""
    if isinstance(client, redis.RedisCluster):
        nodes = [client.get_redis_connection(node) for node in client.get_primaries()]
    else:
        nodes = [client]
    stats: dict[str, PrefixStats] = {}
    scanned = dbsize = 0
    truncated = False
    for node in nodes:
        dbsize += int(node.dbsize())
        if truncated:
            continue
        scanned, truncated = _scan_node(
            node, stats, scanned, match=match, depth=depth, max_keys=max_keys,
            sample_per_prefix=sample_per_prefix, page=page,
        )
    ordered = sorted(stats.values(), key=lambda p: (-p.est_bytes, -p.keys))
    return Census(scanned=scanned, truncated=truncated, dbsize=dbsize, prefixes=ordered)


def _scan_node(
    client: redis.Redis,
    stats: dict[str, PrefixStats],
    scanned: int,
    *,
    match: str,
    depth: int,
    max_keys: int,
    sample_per_prefix: int,
    page: int,
) -> tuple[int, bool]:
    """Walk one node into ``stats``; returns (keys scanned so far, stopped early)."""
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor=cursor, match=match, count=page)
        if keys:
            pipe = client.pipeline(transaction=False)
            planned: list[tuple[PrefixStats, bool]] = []
            queued: dict[str, int] = defaultdict(int)  # samples queued in this page, per prefix
            for raw in keys:
                key = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
                prefix = prefix_of(key, depth)
                ps = stats.setdefault(prefix, PrefixStats(prefix))
                take_sample = ps.sampled + queued[prefix] < sample_per_prefix
                queued[prefix] += take_sample
                planned.append((ps, take_sample))
                pipe.type(raw)
                pipe.pttl(raw)
                if take_sample:
                    pipe.memory_usage(raw, samples=0)
            replies = iter(pipe.execute())
            for ps, take_sample in planned:
                kind, pttl = next(replies), next(replies)
                if kind in (b"none", "none"):  # expired between SCAN and TYPE
                    if take_sample:
                        next(replies)
                    continue
                ps.keys += 1
                ps.types[kind.decode() if isinstance(kind, bytes) else kind] += 1
                ps.ttl[_ttl_bucket(int(pttl))] += 1
                if take_sample:
                    size = next(replies)
                    if size is not None:
                        ps.sampled += 1
                        ps.sampled_bytes += int(size)
            scanned += len(keys)
        if cursor == 0:
            return scanned, False
        if scanned >= max_keys:
            return scanned, True
