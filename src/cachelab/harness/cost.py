"""What a block of code cost the Redis server, as a delta.

Client latency depends on the client's language and machine; the server's
cost does not, and it is what sizing a Redis needs. :class:`CostMeter` takes
an ``INFO stats`` / ``INFO commandstats`` / ``INFO memory`` snapshot before
and after a block and reports the difference:

* round trips, and the commands the client sent by name (from the client's
  :class:`~cachelab.client.RoundTripCounter`),
* commands the server ran, by name, and the server microseconds they took,
* bytes received and sent by the server,
* keyspace hits/misses, evictions, and the change in used memory.

**Server time is counted once.** INFO commandstats books a command that a
script (EVALSHA, EVAL, FCALL) or a transaction (EXEC) runs under its own name
*and* inside the script's or EXEC's time, so summing every line counts that
time twice (a fixed-window check is one EVALSHA whose 15 µs already include
its INCR and PEXPIRE). With the client's tally of what it sent, each
command's booked time is scaled by the share of its calls the client sent
directly: a name called only inside scripts or queued in MULTI contributes
nothing of its own (its time is in EVALSHA/EXEC), a name only sent directly
contributes all of it, and a name seen both ways contributes its direct
share of the average (the one approximation: both kinds of call are assumed
to cost the same). ``server_usec_booked`` keeps the plain sum, double count
and all, for comparison. Without a tally (another process's traffic) the
meter cannot tell the two apart and says so (``counted_once`` is False);
where the question is CPU, the server's own CPU counters (``INFO cpu``, as
the load runs use) count every microsecond exactly once.

The meter reads INFO over its own connection (so its traffic is not counted as
round trips) and subtracts its own footprint (the INFO calls, and the bytes of
one snapshot, calibrated once). Numbers are for the whole server: measure on a
server nothing else is using, which the launcher gives you. On a Redis Cluster,
:class:`ClusterCostMeter` runs one meter per primary and adds them up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import redis
from redis.utils import str_if_bytes

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
    """The delta of one measured block. ``per_op(n)`` divides it over n operations.

    ``total_commands`` is what the client sent (top-level commands, MULTI and
    EXEC included) when the client's tally is known, else everything the
    server booked; ``inner_commands`` is what scripts ran on top of that.
    ``server_usec`` is counted once (see the module docstring).
    """

    round_trips: int = 0
    commands: dict[str, int] = field(default_factory=dict)
    server_usec_by_command: dict[str, int] = field(default_factory=dict)
    total_commands: int = 0
    inner_commands: int = 0
    server_usec: float = 0
    server_usec_booked: int = 0
    counted_once: bool = False
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
            "inner_commands_per_op": self.inner_commands / ops,
            "server_usec_per_op": self.server_usec / ops,
            "server_usec_booked_per_op": self.server_usec_booked / ops,
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

    def delta(
        self,
        before: ServerSnapshot,
        after: ServerSnapshot,
        round_trips: int = 0,
        sent: Mapping[str, int] | None = None,
        queued: Mapping[str, int] | None = None,
    ) -> Cost:
        """The cost between two snapshots; ``sent``/``queued`` are the client's tally over the block."""
        cost = Cost(round_trips=round_trips)
        for name, (calls, usec) in after.commands.items():
            if name in _META_COMMANDS:
                continue
            prev_calls, prev_usec = before.commands.get(name, (0, 0))
            if calls - prev_calls:
                cost.commands[name] = calls - prev_calls
                cost.server_usec_by_command[name] = usec - prev_usec
        booked = sum(cost.commands.values())
        cost.server_usec_booked = sum(cost.server_usec_by_command.values())
        if sent is not None and booked and not any(n for k, n in sent.items() if k not in _META_COMMANDS):
            sent = None  # the tally saw none of this traffic: another client's, which it cannot split
        if sent is None:
            cost.total_commands, cost.server_usec = booked, cost.server_usec_booked
        else:
            direct = _direct_calls(sent, queued or {}, cost.commands)
            cost.total_commands = sum(n for name, n in sent.items() if name not in _META_COMMANDS)
            cost.inner_commands = max(0, booked - cost.total_commands)
            cost.server_usec = sum(
                usec * min(1.0, direct.get(name, 0) / cost.commands[name])
                for name, usec in cost.server_usec_by_command.items()
            )
            cost.counted_once = True
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
        tally_before = self.round_trips.snapshot() if self.round_trips else None
        before = self.snapshot()
        self._overhead_in = before.net_input_bytes - probe.net_input_bytes
        self._overhead_out = before.net_output_bytes - probe.net_output_bytes
        try:
            yield cost
        finally:
            after = self.snapshot()
            if self.round_trips and tally_before is not None:
                rt, sent, queued = self.round_trips.snapshot()
                result = self.delta(
                    before,
                    after,
                    rt - tally_before[0],
                    sent=_minus(sent, tally_before[1]),
                    queued=_minus(queued, tally_before[2]),
                )
            else:
                result = self.delta(before, after)
            cost.__dict__.update(result.__dict__)

    def memory_usage(self, key: str) -> int | None:
        """Bytes Redis attributes to ``key`` (see :func:`settled_memory_usage`), or None if absent."""
        return settled_memory_usage(self._admin, key)


#: A lookup of one member, and the member count, for each type Redis may keep as a hash table.
_LOOKUP_AND_SIZE = {"hash": ("HEXISTS", "HLEN"), "set": ("SISMEMBER", "SCARD"), "zset": ("ZSCORE", "ZCARD")}
#: Lookups are pipelined this many at a time, and never more than the cap in all.
_SETTLE_CHUNK, _SETTLE_CAP = 1000, 200_000
_ABSENT_MEMBER = "\x00cachelab:settle"


def settled_memory_usage(client: redis.Redis, key: str) -> int | None:
    """``MEMORY USAGE key SAMPLES 0`` once the value's hash table has finished resizing.

    Why not MEMORY USAGE alone: a hash, set or sorted set kept as a hash table
    grows by allocating a table twice the size and moving the buckets over a
    few at a time, on later lookups of that key. A key written once and never
    read again (a queued job's hash) stays half-moved with both tables booked,
    and how far the move got depends on which buckets its fields fell in, that
    is on the server's random hash seed. Two servers booked one job hash at 648
    and 680 B, so an exact metric "changed" between two runs of one commit.
    Each lookup moves at least one bucket (or skips ten empty ones); a table
    being shrunk holds at most ten slots per member, so twice the member count
    plus a few lookups of an absent member always finish the move. What is
    left is the value's size at rest; sorted sets still vary by a fraction of
    a percent, because a skiplist node's height is random.
    """
    if str_if_bytes(client.object("encoding", key)) in ("hashtable", "skiplist"):
        lookup, size = _LOOKUP_AND_SIZE[str_if_bytes(client.type(key))]
        remaining = min(2 * int(client.execute_command(size, key)) + 16, _SETTLE_CAP)
        while remaining > 0:
            pipe = client.pipeline(transaction=False)
            for _ in range(min(remaining, _SETTLE_CHUNK)):
                pipe.execute_command(lookup, key, _ABSENT_MEMBER)
            pipe.execute()
            remaining -= _SETTLE_CHUNK
    return client.memory_usage(key, samples=0)


def _minus(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def _direct_calls(
    sent: Mapping[str, int], queued: Mapping[str, int], booked: Mapping[str, int]
) -> dict[str, int]:
    """Calls of each booked name that the client sent itself, outside MULTI (so not inside EXEC).

    The client names a subcommand (``client|setinfo``) where Redis 6.2 books
    only the command (``client``): such names are folded into their family.
    """
    direct: dict[str, int] = {}
    for name, n in sent.items():
        own = n - queued.get(name, 0)
        key = name if name in booked or "|" not in name else name.split("|", 1)[0]
        direct[key] = direct.get(key, 0) + own
    return direct


def sum_costs(parts: Sequence[Cost], round_trips: int = 0) -> Cost:
    """One :class:`Cost` from per-node costs: counters and per-command maps added up."""
    total = Cost(round_trips=round_trips)
    for part in parts:
        for f in fields(Cost):
            if f.name == "round_trips":
                continue
            value = getattr(part, f.name)
            if isinstance(value, dict):
                merged = getattr(total, f.name)
                for name, n in value.items():
                    merged[name] = merged.get(name, 0) + n
            else:
                setattr(total, f.name, getattr(total, f.name) + value)
    return total


class ClusterCostMeter:
    """:class:`CostMeter` over every primary of a cluster: ``with meter.measure() as cost``.

    Round trips come from the client's counter once (not per node). Like the
    single-server meter, it measures whole servers: use a cluster nothing else
    is using, such as one :class:`RedisClusterServer` launched.
    """

    def __init__(self, node_urls: Sequence[str], round_trips: RoundTripCounter | None = None) -> None:
        self.round_trips = round_trips
        self.meters = [CostMeter(url) for url in node_urls]

    def close(self) -> None:
        for meter in self.meters:
            meter.close()

    @contextlib.contextmanager
    def measure(self) -> Iterator[Cost]:
        total = Cost()
        parts: list[Cost] = []
        rt_before = 0
        try:
            with contextlib.ExitStack() as stack:
                parts = [stack.enter_context(meter.measure()) for meter in self.meters]
                rt_before = self.round_trips.value if self.round_trips else 0
                yield total
        finally:
            rt = (self.round_trips.value - rt_before) if self.round_trips else 0
            total.__dict__.update(sum_costs(parts, rt).__dict__)
