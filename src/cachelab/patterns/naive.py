"""The seed's flawed cache patterns, kept only so benchmarks and tests can compare.

Do not use these. Each mirrors the guide's TypeScript faithfully, flaw included:

* :func:`naive_cache_aside` — ``if (cached)``: a cached ``0``, ``""``, ``[]``,
  ``false`` or ``null`` is treated as a miss and reloaded every time; no
  stampede protection; the fill may overwrite a newer value.
* :func:`naive_refresh_ahead` — ``GET`` then ``TTL`` (two round trips), and
  every reader near expiry starts its own unbounded background refresh.
* :func:`naive_invalidate_pattern` — ``KEYS`` (blocks the server) then ``DEL``;
  the raw pattern lets glob characters in ids reach other tenants' keys.
* :func:`naive_invalidate_tag` — ``SMEMBERS`` then ``DEL``: not atomic, and the
  tag set never expires.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio

_background: set[asyncio.Task[Any]] = set()


async def naive_cache_aside(
    client: redis.asyncio.Redis, key: str, loader: Callable[[], Awaitable[Any]], ttl: int = 300
) -> Any:
    raw = await client.get(key)
    cached = json.loads(raw) if raw else None
    if cached:
        return cached
    result = await loader()
    await client.set(key, json.dumps(result), ex=ttl)  # the seed's SETEX
    return result


async def naive_refresh_ahead(
    client: redis.asyncio.Redis, key: str, ttl: int, refresh: Callable[[], Awaitable[Any]]
) -> Any:
    data = await client.get(key)
    ttl_remaining = await client.ttl(key)
    if ttl_remaining < ttl * 0.2:
        task = asyncio.ensure_future(refresh())  # one per reader, unbounded
        _background.add(task)
        task.add_done_callback(_background.discard)
    return json.loads(data) if data else None


async def naive_invalidate_pattern(client: redis.asyncio.Redis, pattern: str) -> int:
    keys = await client.keys(pattern)
    if keys:
        return int(await client.delete(*keys))
    return 0


async def naive_tag(client: redis.asyncio.Redis, tag: str, key: str) -> None:
    await client.sadd(f"tag:{tag}", key)


async def naive_invalidate_tag(client: redis.asyncio.Redis, tag: str) -> int:
    keys = await client.smembers(f"tag:{tag}")
    deleted = 0
    if keys:
        deleted = int(await client.delete(*keys))
        await client.delete(f"tag:{tag}")
    return deleted
