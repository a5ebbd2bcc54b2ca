"""Cache entries: a value plus the metadata the patterns need, in one string.

The seed stores bare JSON and reads it back with ``JSON.parse`` and
``if (cached)``: a cached ``0``, ``""`` or ``[]`` looks like a miss, corrupt
bytes throw into the request, and refresh-ahead needs a second round trip
(``TTL``) to know how old the value is.

An entry here is ``MAGIC | FORMAT | FLAGS | body`` where body is orjson of
``[value, created_ms, soft_expires_ms, compute_ms, negative, tag_generations]``:

* the value is wrapped, so any JSON value, including ``null`` and ``0``, is a
  hit, and "absent" is the :data:`MISSING` sentinel, never a falsy value;
* ``soft_expires_ms`` and ``compute_ms`` let refresh-ahead, stale-while-
  revalidate and XFetch decide from the single GET that fetched the value;
* an unknown magic byte or format version, or bytes that do not decode, raise
  :class:`CorruptEntry`, which readers treat as a miss and repair — so a format
  change rolls out as a wave of misses, not a wave of exceptions;
* bodies above ``compress_min_bytes`` are zlib-compressed (flag bit 0).

Values must be *plain JSON*, and anything else is refused, never converted.
orjson natively writes a ``datetime``/``date``/``time`` and a ``UUID`` as
strings, a dataclass as an object, a tuple as an array, an enum as its value,
and ``NaN``/``±inf`` as ``null``; each would come back from the cache as a
different type (or a different value) than the loader returned, so a hit and a
miss would disagree. :meth:`EntryCodec.encode` therefore accepts exactly
``str``, ``int``, ``float`` (finite), ``bool``, ``None``, ``list`` and ``dict``
with ``str`` keys, values by exact type (no subclasses, so no ``IntEnum`` or
``StrEnum`` member), and raises before anything is written: :class:`TypeError` naming the type and
where it sits in the value, or :class:`ValueError` for a non-finite float. We
chose refusing over round-tripping (a tagged encoding) because cached values
are API responses: the caller converts explicitly (``.isoformat()``,
``str(uuid)``, ``dataclasses.asdict``), once, where it knows the format it
wants — the same rule as the session store. Dict *keys* may be ``str``
subclasses (SQLAlchemy's row mappings use ``quoted_name``): they come back as
plain ``str``, which hashes and compares equal, so every lookup behaves the
same. The check costs one pass over the
value on writes only (a few µs for a KPI block); reads are unchanged.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Final

import orjson

MAGIC: Final = 0xC1
FORMAT: Final = 1
_FLAG_ZLIB: Final = 0x01


class _Missing:
    """The one "no value" marker: falsy values are values."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()


class CorruptEntry(ValueError):
    """Bytes under a cache key that are not a valid entry of this format."""


class ValueTooLarge(ValueError):
    """An encoded value exceeds the configured maximum; it is not cached."""


_SCALARS: Final = (str, int, bool, type(None))
_MAX_DEPTH: Final = 255  # orjson's own nesting limit


def _is_plain(value: Any) -> bool:
    """Is ``value`` plain JSON, by exact type? Iterative: ``value`` is known to be acyclic."""
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is str or t is int or t is bool or v is None:
            continue
        if t is float:
            if not math.isfinite(v):
                return False
        elif t is list:
            stack.extend(v)
        elif t is dict:
            for k in v:
                if not isinstance(k, str):
                    return False
            stack.extend(v.values())
        else:
            return False
    return True


def _type_name(value: Any) -> str:
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def not_plain_json(value: Any) -> TypeError | ValueError | None:
    """The error for the first part of ``value`` that is not plain JSON, naming its type and path.

    None if the whole value is plain JSON. Walks depth-first with the path, so
    it is only called once a value is already known to be refused.
    """
    stack: list[tuple[Any, str, int]] = [(value, "value", 0)]
    while stack:
        v, path, depth = stack.pop()
        t = type(v)
        if t in _SCALARS:
            continue
        if depth > _MAX_DEPTH:
            return TypeError(f"cache value is nested more than {_MAX_DEPTH} levels deep at {path}")
        if t is float:
            if not math.isfinite(v):
                return ValueError(
                    f"cache values must be plain JSON: float {v!r} at {path} would come back as null"
                )
        elif t is list:
            stack.extend((x, f"{path}[{i}]", depth + 1) for i, x in reversed(list(enumerate(v))))
        elif t is dict:
            for k in v:
                if not isinstance(k, str):
                    return TypeError(
                        f"cache values must be plain JSON: dict key {k!r} ({_type_name(k)}) at {path} "
                        f"is not a str; convert the keys explicitly"
                    )
            stack.extend((x, f"{path}[{k!r}]", depth + 1) for k, x in reversed(list(v.items())))
        else:
            return TypeError(
                f"cache values must be plain JSON (str, int, finite float, bool, None, list, dict with "
                f"str keys), so they come back as they were stored; {_type_name(v)} at {path} is not: "
                f"convert it explicitly (e.g. .isoformat(), str(), dataclasses.asdict(), list())"
            )
    return None


@dataclass(frozen=True, slots=True)
class Entry:
    value: Any
    created_ms: int
    soft_expires_ms: int
    compute_ms: int = 0
    negative: bool = False
    tag_generations: tuple[int, ...] | None = None

    def is_fresh(self, now_ms: int) -> bool:
        return now_ms < self.soft_expires_ms


class EntryCodec:
    """Encode and decode :class:`Entry` bytes; values must be plain JSON (see the module docstring)."""

    def __init__(self, *, compress_min_bytes: int | None = 16_384, max_bytes: int = 1_000_000) -> None:
        self.compress_min_bytes = compress_min_bytes
        self.max_bytes = max_bytes

    def encode(self, entry: Entry) -> bytes:
        """The entry's bytes; TypeError/ValueError (naming the type) for a value that is not plain JSON."""
        try:
            body = orjson.dumps(
                [
                    entry.value,
                    entry.created_ms,
                    entry.soft_expires_ms,
                    entry.compute_ms,
                    1 if entry.negative else 0,
                    list(entry.tag_generations) if entry.tag_generations is not None else None,
                ],
                option=orjson.OPT_NON_STR_KEYS,  # for str-subclass keys; other keys are refused below
            )
        except TypeError as exc:  # a cycle, an unknown type, an int beyond 64 bits, a non-str key…
            raise not_plain_json(entry.value) or TypeError(
                f"cache values must be JSON-serialisable: {exc}"
            ) from None
        # orjson wrote it, so it is acyclic; refuse what orjson converted silently.
        if not _is_plain(entry.value):
            raise not_plain_json(entry.value) or TypeError("cache value is not plain JSON")
        flags = 0
        if self.compress_min_bytes is not None and len(body) >= self.compress_min_bytes:
            body = zlib.compress(body, 1)
            flags |= _FLAG_ZLIB
        if len(body) + 3 > self.max_bytes:
            raise ValueTooLarge(f"encoded entry is {len(body) + 3} bytes; the limit is {self.max_bytes}")
        return bytes((MAGIC, FORMAT, flags)) + body

    def decode(self, raw: bytes) -> Entry:
        if len(raw) < 4 or raw[0] != MAGIC:
            raise CorruptEntry("not a cachelab entry")
        if raw[1] != FORMAT:
            raise CorruptEntry(f"entry format {raw[1]} is not {FORMAT}")
        body = raw[3:]
        try:
            if raw[2] & _FLAG_ZLIB:
                body = zlib.decompress(body)
            value, created, soft, compute, negative, tags = orjson.loads(body)
            return Entry(
                value=value,
                created_ms=int(created),
                soft_expires_ms=int(soft),
                compute_ms=int(compute),
                negative=bool(negative),
                tag_generations=tuple(int(t) for t in tags) if tags is not None else None,
            )
        except (zlib.error, orjson.JSONDecodeError, ValueError, TypeError) as exc:
            raise CorruptEntry(f"undecodable entry: {exc}") from None
