"""Invalidation by pattern: SCAN + UNLINK in batches, never KEYS.

Seed version::

    const keys = await client.keys(pattern);   // O(N) over the whole keyspace,
    if (keys.length > 0) await client.del(keys); // blocking every other client

``KEYS`` walks every key while the single-threaded server answers nobody else,
``DEL`` frees large values synchronously, and the pattern is built from raw
ids, so tenant ``a*`` (or ``a?``, ``a[b]``) matches tenant ``ab``'s keys.

Here :func:`invalidate_matching` walks the keyspace incrementally with
``SCAN MATCH … COUNT`` and deletes what it finds with ``UNLINK`` (memory freed
in a background thread) in batches; on Redis Cluster it walks every primary.
:func:`invalidate_scope` builds the pattern from escaped components
(:func:`~cachelab.patterns.keys.scope_pattern`), so an id is always a literal.

Round trips: one per SCAN page plus one per UNLINK batch. Prefer generations
(:meth:`Cache.invalidate`, :meth:`Cache.invalidate_tag`, one round trip each)
on hot paths; pattern invalidation is for administrative sweeps.
"""

from __future__ import annotations

from typing import Any

from cachelab.client import ResilientRedis
from cachelab.patterns.keys import DEFAULT_PREFIX, scope_pattern


def _scan_targets(client: Any) -> list[Any]:
    """Every primary of a cluster, or the client itself."""
    get_primaries = getattr(client, "get_primaries", None)
    if get_primaries is None:
        return [client]
    return [client.get_redis_connection(node) for node in get_primaries()]


async def invalidate_matching(rr: ResilientRedis, match: str, *, batch: int = 500) -> int:
    """Delete every key matching the glob ``match``; returns how many were unlinked.

    ``match`` is a raw glob: build it with :func:`scope_pattern` (or escape ids
    with :func:`~cachelab.patterns.keys.glob_escape`) when it contains ids.
    """
    deleted = 0
    for node in _scan_targets(rr.client):
        cursor: int = 0
        pending: list[bytes] = []
        while True:
            cursor, keys = await rr.call(node.scan, cursor=cursor, match=match, count=batch)
            pending.extend(keys)
            while len(pending) >= batch:
                chunk, pending = pending[:batch], pending[batch:]
                deleted += await rr.call(node.unlink, *chunk)
            if cursor == 0:
                break
        if pending:
            deleted += await rr.call(node.unlink, *pending)
    return deleted


async def invalidate_scope(
    rr: ResilientRedis, scope: object, *parts: object, prefix: str = DEFAULT_PREFIX, batch: int = 500
) -> int:
    """Delete every key under ``prefix:{scope}:parts…`` — only that scope's, whatever its id contains."""
    return await invalidate_matching(rr, scope_pattern(prefix, scope, *parts), batch=batch)
