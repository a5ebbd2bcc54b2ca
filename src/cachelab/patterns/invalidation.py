"""Invalidation by pattern: SCAN + UNLINK in batches, never KEYS.

Seed version::

    const keys = await client.keys(pattern);   // O(N) over the whole keyspace,
    if (keys.length > 0) await client.del(keys); // blocking every other client

``KEYS`` walks every key while the single-threaded server answers nobody else,
``DEL`` frees large values synchronously, and the pattern is built from raw
ids, so tenant ``a*`` (or ``a?``, ``a[b]``) matches tenant ``ab``'s keys.

Here :func:`invalidate_matching` walks the keyspace incrementally with
``SCAN MATCH … COUNT`` and deletes what it finds with ``UNLINK`` (memory freed
in a background thread) in batches; on Redis Cluster it walks every primary
(``SCAN`` with ``target_nodes``), because a glob over many scopes matches keys
in many slots.
:func:`invalidate_scope` builds the pattern from escaped components
(:func:`~cachelab.patterns.keys.scope_pattern`), so an id is always a literal.

Round trips: one per SCAN page plus one per UNLINK batch (on a cluster, per
primary; plus one ``initialize`` the first time a client is used). Prefer generations
(:meth:`Cache.invalidate`, :meth:`Cache.invalidate_tag`, one round trip each)
on hot paths; pattern invalidation is for administrative sweeps.
"""

from __future__ import annotations

from typing import Any

from cachelab.client import ResilientRedis
from cachelab.patterns.keys import DEFAULT_PREFIX, scope_pattern


async def _scan_targets(rr: ResilientRedis) -> list[Any]:
    """Every primary of a cluster (redis-py ``ClusterNode``s), or ``[None]`` for one server.

    redis-py's asyncio cluster client has no per-node client (no
    ``get_redis_connection``): a node is addressed with ``target_nodes=``. Its
    node map is empty until the first command, hence ``initialize`` first.
    """
    if not rr.is_cluster:
        return [None]
    await rr.call(rr.client.initialize)
    return list(rr.client.get_primaries())


async def _scan_page(rr: ResilientRedis, node: Any, cursor: int, match: str, count: int) -> tuple[int, list]:
    if node is None:
        return await rr.call(rr.client.scan, cursor=cursor, match=match, count=count)
    # Cluster SCAN answers ({node name: cursor}, keys), even for one target node.
    cursors, keys = await rr.call(rr.client.scan, cursor=cursor, match=match, count=count, target_nodes=node)
    return int(cursors[node.name]), keys


async def invalidate_matching(rr: ResilientRedis, match: str, *, batch: int = 500) -> int:
    """Delete every key matching the glob ``match``; returns how many were unlinked.

    ``match`` is a raw glob: build it with :func:`scope_pattern` (or escape ids
    with :func:`~cachelab.patterns.keys.glob_escape`) when it contains ids.
    On a cluster, keys found on one primary may span slots: the cluster
    client's UNLINK splits them by slot (still one round trip per batch,
    since they all live on that primary).
    """
    deleted = 0
    for node in await _scan_targets(rr):
        cursor: int = 0
        pending: list[bytes] = []
        while True:
            cursor, keys = await _scan_page(rr, node, cursor, match, batch)
            pending.extend(keys)
            while len(pending) >= batch:
                chunk, pending = pending[:batch], pending[batch:]
                deleted += await rr.call(rr.client.unlink, *chunk)
            if cursor == 0:
                break
        if pending:
            deleted += await rr.call(rr.client.unlink, *pending)
    return deleted


async def invalidate_scope(
    rr: ResilientRedis, scope: object, *parts: object, prefix: str = DEFAULT_PREFIX, batch: int = 500
) -> int:
    """Delete every key under ``prefix:{scope}:parts…`` — only that scope's, whatever its id contains."""
    return await invalidate_matching(rr, scope_pattern(prefix, scope, *parts), batch=batch)
