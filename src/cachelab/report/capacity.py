"""The capacity table: what 1 000 requests/s of the dashboard mix cost Redis.

Measured, not modelled: the Locust run of the dashboard mix records the
app's requests/s, the Redis commands each request sent (``X-Request-Cost``)
and, over the same window, the Redis server's CPU seconds (INFO
``used_cpu_*``), bytes in/out and memory. Dividing gives a per-request cost,
scaled to 1 000 requests/s. Those ratios transfer between
machines much better than absolute throughput does (Redis's per-command cost
barely depends on the client machine), so they are what a capacity plan
should be built on. The plan limits are examples and configurable: compare
the rows against your provider's tier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCALE_RPS = 1000.0


@dataclass(frozen=True)
class Plan:
    """A Redis plan's limits (examples; override with ``--plan``)."""

    name: str
    ops_per_sec: float
    network_mb_s: float
    memory_mb: float
    cpu_cores: float = 1.0

    @classmethod
    def parse(cls, text: str) -> Plan:
        """``name:ops=25000,net=100,mem=1024[,cpu=1]``."""
        name, _, body = text.partition(":")
        values = dict(item.split("=", 1) for item in body.split(",") if "=" in item)
        try:
            return cls(
                name=name or "plan",
                ops_per_sec=float(values["ops"]),
                network_mb_s=float(values["net"]),
                memory_mb=float(values["mem"]),
                cpu_cores=float(values.get("cpu", 1)),
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(f"bad --plan {text!r}: expected name:ops=N,net=MBps,mem=MB[,cpu=cores]") from exc


EXAMPLE_PLANS = (
    Plan("small (example)", ops_per_sec=25_000, network_mb_s=50, memory_mb=250),
    Plan("medium (example)", ops_per_sec=100_000, network_mb_s=200, memory_mb=1024),
)


def _sent_commands(totals: dict[str, Any]) -> float | None:
    """Redis commands the app sent on the requests' own paths, from ``X-Request-Cost`` (None without it)."""
    classes = (totals.get("costs") or {}).values()
    counted = [c["redis-cmd"] for c in classes if "redis-cmd" in c]
    return sum(f["mean"] * f["requests"] for f in counted) if counted else None


def marginal_cpu_seconds(redis: dict[str, Any]) -> float:
    """Redis CPU seconds of a run above its idle rate (``idle_cpu_per_s``, when it was measured)."""
    cpu = float(redis.get("cpu_seconds") or 0)
    idle = redis.get("idle_cpu_per_s")
    if idle is None:
        return cpu
    return max(0.0, cpu - float(idle) * float(redis.get("seconds") or 0))


def capacity_rows(scenario: dict[str, Any]) -> dict[str, Any] | None:
    """Per-1 000-requests/s figures from one load scenario's summary (``None`` without Redis data).

    Commands per request are what the app sent (``X-Request-Cost``), which is
    what a provider's operations limit counts; without that header, what the
    server booked, which also counts the commands scripts run inside EVALSHA.
    Redis CPU comes from the server's CPU counters, so script time is counted
    once, less what the server spends idle (``idle_cpu_per_s``: cron, polling
    workers), which does not grow with requests and would otherwise be
    charged to each of them.
    """
    redis = scenario.get("redis") or {}
    totals = scenario.get("totals") or {}
    rps = float(totals.get("rps") or 0)
    seconds = float(redis.get("seconds") or 0)
    if not redis or rps <= 0 or seconds <= 0:
        return None
    requests = rps * seconds
    scale = SCALE_RPS / rps
    sent = _sent_commands(totals)
    sent_requests = totals.get("requests") or requests
    per_request = sent / sent_requests if sent is not None else redis["commands"] / requests
    cpu = marginal_cpu_seconds(redis)
    return {
        "measured_rps": round(rps, 1),
        "redis_ops_per_s": round(per_request * SCALE_RPS, 1),
        "redis_commands_per_request": round(per_request, 2),
        "commands_counted": "sent by the app" if sent is not None else "booked by the server",
        "redis_cpu_cores": round(cpu / seconds * scale, 3),
        "redis_cpu_us_per_request": round(cpu * 1e6 / requests, 1),
        "redis_idle_cpu_cores": redis.get("idle_cpu_per_s"),
        "network_mb_s": round((redis["bytes_in"] + redis["bytes_out"]) / seconds * scale / 1e6, 3),
        "working_set_mb": round(redis.get("used_memory", 0) / 2**20, 2),
        "hit_ratio": totals.get("hit_ratio"),
    }


def headroom(rows: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """How many requests/s of this mix the plan sustains, by each limit, and which binds first."""
    limits = {
        "ops": plan.ops_per_sec / rows["redis_ops_per_s"] * SCALE_RPS if rows["redis_ops_per_s"] else None,
        "network": plan.network_mb_s / rows["network_mb_s"] * SCALE_RPS if rows["network_mb_s"] else None,
        "cpu": plan.cpu_cores / rows["redis_cpu_cores"] * SCALE_RPS if rows["redis_cpu_cores"] else None,
    }
    finite = {k: v for k, v in limits.items() if v is not None}
    binding = min(finite, key=finite.__getitem__) if finite else None
    return {
        "plan": plan.name,
        "max_rps_by": {k: (round(v) if v is not None else None) for k, v in limits.items()},
        "max_rps": round(finite[binding]) if binding else None,
        "binding_limit": binding,
        "memory_fits": rows["working_set_mb"] <= plan.memory_mb,
    }
