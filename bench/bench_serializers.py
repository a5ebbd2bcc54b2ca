"""Serializers on the payload this project actually caches: a tenant dashboard.

json vs orjson, each with and without zlib (level 1, what
:class:`~cachelab.patterns.envelope.EntryCodec` uses), encode and decode, on a
~2 KB and a ~50 KB dashboard; plus ``EntryCodec`` itself (orjson, compressed
from 16 KB up, with its envelope). No Redis is involved: these rows carry
``encoded_bytes`` instead of server cost, and bytes saved here are bytes the
server does not send (compare ``bytes_out_per_op`` in the value-size group).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from cachelab.harness.payloads import LARGE_BYTES, SMALL_BYTES, dashboard_of_size
from cachelab.patterns.envelope import Entry, EntryCodec

PAYLOADS = {"2KB": dashboard_of_size(SMALL_BYTES), "50KB": dashboard_of_size(LARGE_BYTES)}
ZLIB_LEVEL = 1
CODEC = EntryCodec()

Codec = tuple[Callable[[Any], bytes], Callable[[bytes], Any]]

CODECS: dict[str, Codec] = {
    "json": (lambda v: json.dumps(v).encode(), json.loads),
    "orjson": (orjson.dumps, orjson.loads),
    "json+zlib": (
        lambda v: zlib.compress(json.dumps(v).encode(), ZLIB_LEVEL),
        lambda b: json.loads(zlib.decompress(b)),
    ),
    "orjson+zlib": (
        lambda v: zlib.compress(orjson.dumps(v), ZLIB_LEVEL),
        lambda b: orjson.loads(zlib.decompress(b)),
    ),
    "EntryCodec": (
        lambda v: CODEC.encode(
            Entry(value=v, created_ms=1_700_000_000_000, soft_expires_ms=1_700_000_060_000)
        ),
        CODEC.decode,
    ),
}
OPS = {"2KB": 200, "50KB": 20}


@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("size", list(PAYLOADS))
def test_encode(size: str, codec: str, bench_sync: Any):
    value = PAYLOADS[size]
    encode, _ = CODECS[codec]
    encoded = encode(value)
    bench_sync(
        lambda: encode(value),
        group=f"serialize-encode-{size}",
        ops=OPS[size],
        cost=False,
        extra={"encoded_bytes": len(encoded), "json_bytes": len(orjson.dumps(value))},
    )


@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("size", list(PAYLOADS))
def test_decode(size: str, codec: str, bench_sync: Any):
    value = PAYLOADS[size]
    encode, decode = CODECS[codec]
    encoded = encode(value)
    decoded = decode(encoded)
    assert (decoded.value if isinstance(decoded, Entry) else decoded) == value
    bench_sync(
        lambda: decode(encoded),
        group=f"serialize-decode-{size}",
        ops=OPS[size],
        cost=False,
        extra={"encoded_bytes": len(encoded), "json_bytes": len(orjson.dumps(value))},
    )
