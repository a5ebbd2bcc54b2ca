"""What a load test cost the Redis server, read from INFO only.

The client side of a run (latency, hit ratio) says how users fared; the
server side says what it took: commands per second and by name, CPU,
memory growth, evictions and the keyspace hit ratio. This takes
:class:`~cachelab.harness.cost.CostMeter` snapshots at the start and end of
the run, plus ``INFO cpu``. It never writes to the server, so pointing it at
a shared Redis is safe; the numbers are server-wide, so they are only
meaningful on a Redis the run has to itself.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cachelab.harness.cost import CostMeter, ServerSnapshot
from cachelab.patterns.health import server_label


def _redact(url: str) -> str:
    """The URL without its password, fit for a results file."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    netloc = f"{user}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisRunMeter:
    def __init__(self, url: str) -> None:
        self.url = url
        self._meter = CostMeter(url)
        self._before: ServerSnapshot | None = None
        self._cpu_before = 0.0
        self._t0 = 0.0

    def _cpu(self) -> float:
        info = self._meter._admin.info("cpu")
        return float(info.get("used_cpu_user", 0.0)) + float(info.get("used_cpu_sys", 0.0))

    def start(self) -> None:
        self._before = self._meter.snapshot()
        self._cpu_before = self._cpu()
        self._t0 = time.monotonic()

    @property
    def started(self) -> bool:
        return self._before is not None

    def finish(self) -> dict[str, Any]:
        """The deltas since :meth:`start` (call once, at the end of the run)."""
        if self._before is None:
            raise RuntimeError("RedisRunMeter.finish() before start()")
        after = self._meter.snapshot()
        elapsed = max(time.monotonic() - self._t0, 1e-6)
        cpu = self._cpu() - self._cpu_before
        cost = self._meter.delta(self._before, after)
        lookups = cost.keyspace_hits + cost.keyspace_misses
        server = self._meter._admin.info("server")
        memory = self._meter._admin.info("memory")
        return {
            "url": _redact(self.url),
            "redis_version": server_label(server),
            "seconds": round(elapsed, 3),
            "commands": cost.total_commands,
            "ops_per_sec": round(cost.total_commands / elapsed, 1),
            "commands_by_name": dict(sorted(cost.commands.items(), key=lambda kv: -kv[1])),
            "server_usec_by_command": cost.server_usec_by_command,
            "server_usec": cost.server_usec,
            "cpu_seconds": round(cpu, 3),
            "cpu_pct": round(100.0 * cpu / elapsed, 1),
            "bytes_in": cost.bytes_in,
            "bytes_out": cost.bytes_out,
            "keyspace_hits": cost.keyspace_hits,
            "keyspace_misses": cost.keyspace_misses,
            "keyspace_hit_ratio": round(cost.keyspace_hits / lookups, 4) if lookups else None,
            "evicted_keys": cost.evicted_keys,
            "used_memory": after.used_memory,
            "memory_delta": cost.memory_delta,
            "maxmemory_policy": memory.get("maxmemory_policy"),
        }

    def close(self) -> None:
        self._meter.close()
