"""Server-side sessions: sliding idle timeout, absolute lifetime, rotation, log-out-everywhere.

The seed's version
------------------
``storeSession(id, data, ttl)`` does ``SET session:<id> JSON EX ttl``, ``getSession`` a GET
and ``extendSession`` a separate EXPIRE. Its flaws:

* the id is whatever the caller passes: a client-chosen id is stored and adopted
  (session fixation), and ids are never rotated on login or privilege change;
* the only limit is a TTL that every extend pushes forward: a session kept busy lives forever;
* reading and extending are two round trips, and an extend can race an expiry;
* the whole session is one JSON blob: two requests that change different fields each write
  back their own copy and one change is lost; a write after logout recreates the session.

The fix
-------
* Ids are ``secrets.token_urlsafe(32)`` (256 bits). An id that is not exactly that shape is
  refused without touching Redis; a well-shaped unknown id is just a miss. Only
  :meth:`SessionStore.create` and :meth:`SessionStore.rotate` mint ids, so a client can never
  plant one.
* A session is a Redis **hash**: meta fields ``m.uid``, ``m.created``, ``m.seen``, ``m.abs``
  (absolute deadline, server ms), ``m.size``, and one ``d.<name>`` field per data key holding
  that value as JSON (orjson; never pickle, which would turn a Redis write into code
  execution). A hash rather than one blob merged in Lua because an update then sends and
  writes only the changed fields, and updates of different fields commute by construction
  (updates of the *same* field: last writer wins).
* ``get`` is one EVALSHA (``session_get.lua``): refuse if missing or past the absolute deadline
  (deleting it), else set ``TTL = min(idle, deadline - now)`` on the server's clock and return
  the fields. The key therefore never outlives its absolute deadline.
* ``update`` is one EVALSHA that writes only if the session exists, so a late update can never
  bring back a destroyed session, and that checks the size limit before writing.
* Each user has an index, a sorted set of session ids scored by absolute deadline, pruned and
  given a TTL on every insertion, so it holds at most the sessions started within one absolute
  lifetime; ``prune_user_index`` also drops ids whose keys have gone (idle expiry).

Redis Cluster
-------------
A session key is hash-tagged by its own id (``cl:{<id>}:session``), so sessions spread over
all slots and the hot path needs only the id. The user index (``cl:{<user>}:user-sessions``)
lives in another slot, so create, destroy, rotate and log-out-everywhere take several round
trips (they are rare) and are ordered so that every interleaving is safe:

* create: add the id to the index, *then* write the session, refusing if the key exists;
* log-out-everywhere: atomically move the index into a "revoking" set, then overwrite every
  listed id with a short-lived tombstone, then drop them from the set. A login racing it is
  either not in the moved index (it happened after) or finds its id tombstoned and retries with
  a fresh id (it happened after); the session write also refuses to happen more than half the
  tombstone TTL after the index insertion, so a stalled create cannot outlive its tombstone;
* rotate: take the old session out (read + delete in one script: the old id is dead), move the
  index entry only if the old id is still indexed (a concurrent log-out-everywhere wins), then
  write the new id. A failure between the steps loses the session: the user logs in again,
  which is the safe direction. Rotation keeps ``created_at`` and the absolute deadline, so it
  can never be used to extend a session.

Failure policy
--------------
Every call goes through the breaker (``rr.run_script`` / ``rr.call``); when Redis is unavailable
``get`` raises :class:`~cachelab.resilience.RedisUnavailable`. Sessions cannot fail open:
answering "no Redis, assume the session is valid" would accept any id, i.e. unauthenticated
users; answering "no session" logs everybody out silently and looks like a bug. The caller
decides (typically a 503).

Round trips: ``get`` 1, ``update`` 1, ``create`` 2 (+3 now and then, when a user's index is
past ``index_prune_threshold`` and it is pruned),
``destroy`` 2 (1 for an unknown id), ``rotate`` 3, ``destroy_all_for_user`` 1 + 2 per 500
sessions (a pipeline of tombstones, and redis-py's SCRIPT EXISTS check before it); on Redis
Cluster, where redis-py refuses scripts in pipelines, 1 + one per session (sent concurrently,
500 at a time) + 1 per 500.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from cachelab.client import ResilientRedis, ScriptCall
from cachelab.patterns.keys import DEFAULT_PREFIX, make_key

#: ``secrets.token_urlsafe(32)``: 32 random bytes, 43 base64url characters, no padding.
ID_BYTES = 32
_ID_RE = re.compile(r"[A-Za-z0-9_-]{43}")

_META = "m."
_DATA = "d."
_JSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
)


@dataclass
class Session:
    """One session as read from Redis. Times are Unix seconds on the Redis server's clock."""

    id: str
    user_id: str
    data: dict[str, Any]
    created_at: float
    last_seen: float
    expires_at: float  # when it dies if not used again: min(last_seen + idle, absolute deadline)
    absolute_expires_at: float = field(default=0.0)  # when it dies however busy it is


def new_session_id() -> str:
    """A fresh 256-bit, URL-safe session id."""
    return secrets.token_urlsafe(ID_BYTES)


def is_valid_session_id(session_id: object) -> bool:
    """Is this the shape of an id we mint? Anything else is refused before touching Redis."""
    return isinstance(session_id, str) and _ID_RE.fullmatch(session_id) is not None


def encode_data(data: Mapping[str, Any]) -> dict[str, bytes]:
    """``{"d.<name>": JSON}`` for each item; TypeError naming the field that is not plain JSON.

    datetimes, dataclasses and subclasses of builtins are refused rather than converted, so what
    ``get`` returns equals what was stored. (orjson still writes NaN/Infinity as ``null``.)
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"session data must be a mapping, got {type(data).__name__}")
    encoded: dict[str, bytes] = {}
    for name, value in data.items():
        if not isinstance(name, str):
            raise TypeError(f"session field names must be str, got {type(name).__name__}: {name!r}")
        try:
            encoded[_DATA + name] = orjson.dumps(value, option=_JSON_OPTIONS)
        except TypeError as exc:
            raise TypeError(f"session field {name!r} is not JSON-serialisable: {exc}") from None
    return encoded


def _size(encoded: Mapping[str, bytes]) -> int:
    return sum(len(k.encode()) + len(v) for k, v in encoded.items())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pairs(flat: list[Any]) -> dict[str, bytes]:
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


class SessionStore:
    """Sessions in Redis; see the module docstring for the design and its costs."""

    def __init__(
        self,
        rr: ResilientRedis,
        *,
        idle_timeout: float,
        absolute_lifetime: float,
        prefix: str = DEFAULT_PREFIX,
        max_bytes: int = 64 * 1024,
        tombstone_ttl: float = 60.0,
        index_prune_threshold: int = 64,
        batch_size: int = 500,
    ) -> None:
        if idle_timeout <= 0 or absolute_lifetime <= 0:
            raise ValueError("idle_timeout and absolute_lifetime must be > 0")
        if max_bytes <= 0 or tombstone_ttl <= 0 or batch_size < 1:
            raise ValueError("max_bytes, tombstone_ttl and batch_size must be positive")
        self.rr = rr
        self.prefix = prefix
        self.idle_timeout = float(idle_timeout)
        self.absolute_lifetime = float(absolute_lifetime)
        self.idle_ms = max(1, math.ceil(idle_timeout * 1000))
        self.absolute_ms = max(1, math.ceil(absolute_lifetime * 1000))
        self.max_bytes = max_bytes
        self.tombstone_ms = max(2, math.ceil(tombstone_ttl * 1000))
        self.index_prune_threshold = index_prune_threshold
        self.batch_size = batch_size

    # -- keys ---------------------------------------------------------------------------

    def session_key(self, session_id: str) -> str:
        return make_key(self.prefix, session_id, "session")

    def index_key(self, user_id: str) -> str:
        return make_key(self.prefix, user_id, "user-sessions")

    def revoking_key(self, user_id: str) -> str:
        return make_key(self.prefix, user_id, "user-sessions-revoking")

    # -- public API ---------------------------------------------------------------------

    async def create(self, user_id: str, data: Mapping[str, Any] | None = None) -> Session:
        """A new session for ``user_id`` (call on login). TypeError / ValueError write nothing."""
        if not isinstance(user_id, str) or not user_id:
            raise TypeError("user_id must be a non-empty str")
        data = dict(data or {})
        encoded = self._encode_checked(data)
        size = _size(encoded)
        for _attempt in range(3):
            session_id = new_session_id()
            _ok, fence, deadline, indexed = await self._index_add(user_id, session_id)
            now = await self._write(session_id, user_id, fence, fence, deadline, size, encoded)
            if now is not None:
                # Prune with probability threshold/size: amortised O(threshold) work per create,
                # even for a user who really holds thousands of live sessions.
                if (
                    indexed > self.index_prune_threshold
                    and random.random() * indexed < self.index_prune_threshold
                ):
                    await self.prune_user_index(user_id)
                return self._session(session_id, user_id, data, fence, now, deadline)
        # Only a log-out-everywhere racing every attempt (or a broken clock) gets here.
        raise RuntimeError(f"could not create a session for user {user_id!r}")

    async def get(self, session_id: str) -> Session | None:
        """The live session, with its idle timeout slid; None if unknown. One round trip."""
        call = self.get_call(session_id)
        if call is None:
            return None
        reply = await self.rr.run_script(call.script, call.keys, call.args)
        return self.session_from_reply(session_id, reply)

    def get_call(self, session_id: str) -> ScriptCall | None:
        """The script call :meth:`get` sends (None for an id that cannot exist), so a caller can
        batch it with independent calls (:meth:`ResilientRedis.batch`) and read the reply with
        :meth:`session_from_reply`."""
        if not is_valid_session_id(session_id):
            return None
        return ScriptCall("session_get", [self.session_key(session_id)], [self.idle_ms])

    def session_from_reply(self, session_id: str, reply: Any) -> Session | None:
        """The session :meth:`get_call`'s reply describes, or None."""
        if not reply:
            return None
        now, ttl, flat = int(reply[0]), int(reply[1]), reply[2]
        return self._from_fields(session_id, _pairs(flat), last_seen_ms=now, expires_ms=now + ttl)

    async def update(
        self, session_id: str, changes: Mapping[str, Any], *, remove: Iterable[str] = ()
    ) -> bool:
        """Merge ``changes`` into the session (and drop ``remove``); False if it does not exist.

        One round trip. Never recreates a destroyed or expired session. Does not slide the idle
        timeout (``get`` does, and a request reads before it writes).
        """
        encoded = encode_data(changes)
        dropped = [_DATA + name for name in remove]
        if set(dropped) & encoded.keys():
            raise ValueError("a field cannot be both set and removed in one update")
        if _size(encoded) > self.max_bytes:
            raise ValueError(f"session update is {_size(encoded)} bytes, over max_bytes={self.max_bytes}")
        if not is_valid_session_id(session_id):
            return False
        args: list[Any] = [self.max_bytes, len(encoded)]
        for name, value in encoded.items():
            args += [name, value]
        args += dropped
        result = int(await self.rr.run_script("session_update", [self.session_key(session_id)], args))
        if result == -2:
            raise ValueError(f"session {session_id[:6]}… would exceed max_bytes={self.max_bytes}")
        return result >= 0

    async def destroy(self, session_id: str) -> bool:
        """Delete the session (log out); True if it existed."""
        if not is_valid_session_id(session_id):
            return False
        uid = await self.rr.run_script("session_destroy", [self.session_key(session_id)], [])
        if not uid:
            return False
        await self.rr.call(self.rr.client.zrem, self.index_key(_text(uid)), session_id)
        return True

    async def rotate(self, session_id: str) -> Session | None:
        """Move the session to a fresh id (call on login and privilege change); None if unknown.

        The old id is invalid as soon as this starts. The data, ``created_at`` and the absolute
        deadline carry over. Three round trips; see the module docstring for the ordering.
        """
        if not is_valid_session_id(session_id):
            return None
        reply = await self.rr.run_script("session_claim", [self.session_key(session_id)], [])
        if not reply:
            return None
        fields = _pairs(reply[1])
        user_id = _text(fields[_META + "uid"])
        created = int(fields[_META + "created"])
        deadline = int(fields[_META + "abs"])
        size = int(fields[_META + "size"])
        encoded = {k: v for k, v in fields.items() if k.startswith(_DATA)}
        new_id = new_session_id()
        ok, fence, _deadline, _n = await self._index_add(
            user_id, new_id, old_id=session_id, deadline=deadline
        )
        if not ok:  # a log-out-everywhere took the old id first
            return None
        now = await self._write(new_id, user_id, created, fence, deadline, size, encoded)
        if now is None:
            return None
        data = {k.removeprefix(_DATA): orjson.loads(v) for k, v in encoded.items()}
        return self._session(new_id, user_id, data, created, now, deadline)

    async def destroy_all_for_user(self, user_id: str) -> int:
        """Log out everywhere: end every session of ``user_id``; returns how many were live."""
        index, revoking = self.index_key(user_id), self.revoking_key(user_id)
        ids = [_text(i) for i in await self.rr.run_script("session_revoke_begin", [index, revoking], [])]
        revoked = 0
        script = self.rr.script("session_revoke")
        for start in range(0, len(ids), self.batch_size):
            batch = ids[start : start + self.batch_size]
            if self.rr.is_cluster:
                # redis-py refuses scripts inside a cluster pipeline (the ids span slots anyway):
                # run this batch's tombstones concurrently, then drop them from the set.
                results = await asyncio.gather(*(
                    self.rr.run_script("session_revoke", [self.session_key(sid)], [self.tombstone_ms])
                    for sid in batch
                ))
                await self.rr.call(self.rr.client.zrem, revoking, *batch)
                revoked += sum(int(r) for r in results)
                continue
            pipe = self.rr.client.pipeline(transaction=False)
            for sid in batch:
                await script(keys=[self.session_key(sid)], args=[self.tombstone_ms], client=pipe)
            pipe.zrem(revoking, *batch)  # last: it runs only after this batch's tombstones
            results = await self.rr.call(pipe.execute)
            revoked += sum(int(r) for r in results[:-1])
        return revoked

    async def prune_user_index(self, user_id: str) -> int:
        """Drop ids whose session key has gone (idle expiry) from the user's index; returns how many.

        A missing key might also be a create that indexed its id but has not written it yet, so
        each missing id is claimed with a tombstone (SET NX) before it is dropped: that create
        then fails and retries with a fresh id instead of leaving an unindexed session (a rotation
        caught there returns None: the user logs in again, the safe direction).
        """
        index = self.index_key(user_id)
        ids = [_text(i) for i in await self.rr.call(self.rr.client.zrange, index, 0, -1)]
        dead: list[str] = []
        for start in range(0, len(ids), self.batch_size):
            batch = ids[start : start + self.batch_size]
            pipe = self.rr.client.pipeline(transaction=False)
            for sid in batch:
                pipe.set(self.session_key(sid), "revoked", nx=True, px=self.tombstone_ms)
            results = await self.rr.call(pipe.execute)
            dead += [sid for sid, claimed in zip(batch, results, strict=True) if claimed]
        for start in range(0, len(dead), self.batch_size):
            await self.rr.call(self.rr.client.zrem, index, *dead[start : start + self.batch_size])
        return len(dead)

    # -- internals ----------------------------------------------------------------------

    def _encode_checked(self, data: Mapping[str, Any]) -> dict[str, bytes]:
        encoded = encode_data(data)
        if _size(encoded) > self.max_bytes:
            raise ValueError(f"session data is {_size(encoded)} bytes, over max_bytes={self.max_bytes}")
        return encoded

    async def _index_add(
        self, user_id: str, session_id: str, *, old_id: str = "", deadline: int | None = None
    ) -> tuple[bool, int, int, int]:
        reply = await self.rr.run_script(
            "session_index_add",
            [self.index_key(user_id)],
            [session_id, self.absolute_ms, old_id, "" if deadline is None else deadline],
        )
        return bool(int(reply[0])), int(reply[1]), int(reply[2]), int(reply[3])

    async def _write(
        self,
        session_id: str,
        user_id: str,
        created: int,
        fence: int,
        deadline: int,
        size: int,
        encoded: Mapping[str, bytes],
    ) -> int | None:
        """Write the session hash; the server time of the write, or None if it was refused."""
        args: list[Any] = [self.idle_ms, created, deadline, user_id, size, fence, self.tombstone_ms // 2]
        for name, value in encoded.items():
            args += [name, value]
        now = int(await self.rr.run_script("session_create", [self.session_key(session_id)], args))
        return now if now >= 0 else None

    def _session(
        self, session_id: str, user_id: str, data: dict[str, Any], created: int, now: int, deadline: int
    ) -> Session:
        return Session(
            id=session_id,
            user_id=user_id,
            data=data,
            created_at=created / 1000,
            last_seen=now / 1000,
            expires_at=min(now + self.idle_ms, deadline) / 1000,
            absolute_expires_at=deadline / 1000,
        )

    def _from_fields(
        self, session_id: str, fields: dict[str, bytes], *, last_seen_ms: int, expires_ms: int
    ) -> Session:
        data = {k.removeprefix(_DATA): orjson.loads(v) for k, v in fields.items() if k.startswith(_DATA)}
        return Session(
            id=session_id,
            user_id=_text(fields[_META + "uid"]),
            data=data,
            created_at=int(fields[_META + "created"]) / 1000,
            last_seen=last_seen_ms / 1000,
            expires_at=expires_ms / 1000,
            absolute_expires_at=int(fields[_META + "abs"]) / 1000,
        )
