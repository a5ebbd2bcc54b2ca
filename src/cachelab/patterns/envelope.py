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
"""

from __future__ import annotations

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
    """Encode and decode :class:`Entry` bytes; values must be JSON-serialisable."""

    def __init__(self, *, compress_min_bytes: int | None = 16_384, max_bytes: int = 1_000_000) -> None:
        self.compress_min_bytes = compress_min_bytes
        self.max_bytes = max_bytes

    def encode(self, entry: Entry) -> bytes:
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
                option=orjson.OPT_NON_STR_KEYS,
            )
        except TypeError as exc:
            raise TypeError(f"cache values must be JSON-serialisable: {exc}") from None
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
