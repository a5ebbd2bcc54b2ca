"""What a block of code cost the Redis server, as a delta.

Client latency depends on the client's language and machine; the server's
cost does not, and it is what sizing a Redis needs. :class:`CostMeter` takes
an ``INFO stats`` / ``INFO commandstats`` / ``INFO memory`` snapshot before
and after a block and reports the difference:

* round trips (from the client's :class:`~cachelab.client.RoundTripCounter`),
* commands by name and in total, and the server microseconds they took,
* bytes received and sent by the server,
* keyspace hits/misses, evictions, and the change in used memory.

The meter reads INFO over its own connection (so its traffic is not counted as
round trips) and subtracts its own footprint (the INFO calls, and the bytes of
one snapshot, calibrated once). Numbers are for the whole server: measure on a
server nothing else is using, which the launcher gives you.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from cachelab.client import RoundTripCounter

_META_COMMANDS = {"info"}


@dataclass(frozen=True)
class ServerSnapshot:
    commands: dict[str, tuple[int, int]]  # name -> (calls, usec)
    net_input_bytes: int
    net_output_bytes: int
    keyspace_hits: int
    keyspace_misses: int
    evicted_keys: int
    used_memory: int


@dataclass
class Cost:
    """The delta of one measured block. ``per_op(n)`` divides it over n operations."""

    round_trips: int = 0
    commands: dict[str, int] = field(default_factory=dict)
    server_usec_by_command: dict[str, int] = field(default_factory=dict)
    total_commands: int = 0
    server_usec: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    keyspace_hits: int = 0
    keyspace_misses: int = 0
    evicted_keys: int = 0
    memory_delta: int = 0

    def per_op(self, ops: int) -> dict[str, float]:
        """Flat per-operation figures (what goes into benchmark ``extra_info``)."""
        ops = max(ops, 1)
        return {
            "round_trips_per_op": self.round_trips / ops,
            "commands_per_op": self.total_commands / ops,
            "server_usec_per_op": self.server_usec / ops,
            "bytes_in_per_op": self.bytes_in / ops,
            "bytes_out_per_op": self.bytes_out / ops,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_snapshot(
    stats: dict[str, Any], commandstats: dict[str, Any], memory: dict[str, Any]
) -> ServerSnapshot:
    commands: dict[str, tuple[int, int]] = {}
    for name, values in commandstats.items():
        cmd = name.removeprefix("cmdstat_")
        commands[cmd] = (int(values["calls"]), int(values["usec"]))
    return ServerSnapshot(
        commands=commands,
        net_input_bytes=int(stats.get("total_net_input_bytes", 0)),
        net_output_bytes=int(stats.get("total_net_output_bytes", 0)),
        keyspace_hits=int(stats.get("keyspace_hits", 0)),
        keyspace_misses=int(stats.get("keyspace_misses", 0)),
        evicted_keys=int(stats.get("evicted_keys", 0)),
        used_memory=int(memory.get("used_memory", 0)),
    )


class CostMeter:
    """Measures server-side cost of code run against one Redis server."""

    def __init__(self, url: str, round_trips: RoundTripCounter | None = None) -> None:
        self.url = url
        self.round_trips = round_trips
        self._admin = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._overhead_in = 0
        self._overhead_out = 0
        self._calibrate()

    def close(self) -> None:
        self._admin.close()

    def snapshot(self) -> ServerSnapshot:
        pipe = self._admin.pipeline(transaction=False)
        pipe.info("stats")
        pipe.info("commandstats")
        pipe.info("memory")
        stats, commandstats, memory = pipe.execute()
        return parse_snapshot(stats, commandstats, memory)

    def _calibrate(self) -> None:
        # Two back-to-back snapshots: their byte delta is the meter's own footprint.
        samples = []
        for _ in range(3):
            a = self.snapshot()
            b = self.snapshot()
            samples.append((b.net_input_bytes - a.net_input_bytes, b.net_output_bytes - a.net_output_bytes))
        self._overhead_in = min(s[0] for s in samples)
        self._overhead_out = min(s[1] for s in samples)

    def delta(self, before: ServerSnapshot, after: ServerSnapshot, round_trips: int = 0) -> Cost:
        cost = Cost(round_trips=round_trips)
        for name, (calls, usec) in after.commands.items():
            if name in _META_COMMANDS:
                continue
            prev_calls, prev_usec = before.commands.get(name, (0, 0))
            if calls - prev_calls:
                cost.commands[name] = calls - prev_calls
                cost.server_usec_by_command[name] = usec - prev_usec
        cost.total_commands = sum(cost.commands.values())
        cost.server_usec = sum(cost.server_usec_by_command.values())
        cost.bytes_in = max(0, after.net_input_bytes - before.net_input_bytes - self._overhead_in)
        cost.bytes_out = max(0, after.net_output_bytes - before.net_output_bytes - self._overhead_out)
        cost.keyspace_hits = after.keyspace_hits - before.keyspace_hits
        cost.keyspace_misses = after.keyspace_misses - before.keyspace_misses
        cost.evicted_keys = after.evicted_keys - before.evicted_keys
        cost.memory_delta = after.used_memory - before.used_memory
        return cost

    @contextlib.contextmanager
    def measure(self) -> Iterator[Cost]:
        """``with meter.measure() as cost: ...`` — ``cost`` is filled in when the block ends."""
        cost = Cost()
        # INFO commandstats grows as new commands appear, so the meter's own
        # footprint is re-measured right before each block (one extra snapshot).
        probe = self.snapshot()
        rt_before = self.round_trips.value if self.round_trips else 0
        before = self.snapshot()
        self._overhead_in = before.net_input_bytes - probe.net_input_bytes
        self._overhead_out = before.net_output_bytes - probe.net_output_bytes
        try:
            yield cost
        finally:
            after = self.snapshot()
            rt = (self.round_trips.value - rt_before) if self.round_trips else 0
            result = self.delta(before, after, rt)
            cost.__dict__.update(result.__dict__)

    def memory_usage(self, key: str) -> int | None:
        """Bytes Redis attributes to ``key`` (MEMORY USAGE), or None if it does not exist."""
        return self._admin.memory_usage(key, samples=0)
