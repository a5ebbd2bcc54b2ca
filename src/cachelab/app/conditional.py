"""A cached read's response: its JSON bytes as they are, an ETag, and 304 when the client's copy is current.

Why not return the value and let FastAPI encode it: FastAPI validates a returned
``dict``/``list`` against the endpoint's annotation and serialises it again,
which for a cached read is work on data that was checked when it was cached
(the cache stores plain JSON only). Here the value is encoded once, by orjson,
into the body.

Why an ETag: a dashboard polls the same KPI block every few seconds and it
changes a few times an hour. The tag is a hash of the body, so it is the same
on every worker and after every refill of an unchanged value, and a client that
sends it back in ``If-None-Match`` gets ``304 Not Modified`` and no body. The
request is still authenticated, rate limited and read from the cache first:
a 304 saves bandwidth and the client's parsing, never a check.

Every header set on the request's ``Response`` so far (rate limits,
``Cache-Control: private``, ``X-Cache``, ``Age``) goes on the answer, 304
included (RFC 9110 §15.4.5 asks for the ``Cache-Control`` and ``ETag`` a 200
would have had).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

JSON = "application/json"
#: A row read on a miss (or with caching off) is a dict of SQLAlchemy's ``quoted_name`` keys, a
#: ``str`` subclass that orjson refuses as a key without this; they are written as the strings they are.
_OPTIONS = orjson.OPT_NON_STR_KEYS


def encode(value: Any) -> bytes:
    """``value`` as the JSON body of a cached read."""
    return orjson.dumps(value, option=_OPTIONS)


def entity_tag(body: bytes) -> str:
    """A strong ETag for ``body``: 96 bits of BLAKE2b, quoted."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """Does ``If-None-Match`` name ``etag``? Weak comparison (RFC 9110 §13.1.2), ``*`` matches any."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def json_response(request: Request, response: Response, value: Any) -> Response:
    """``value`` as a JSON body with an ETag and the headers set on ``response``, or a 304."""
    body = encode(value)
    etag = entity_tag(body)
    if matches(request.headers.get("if-none-match"), etag):
        out = Response(status_code=304)
    else:
        out = Response(body, media_type=JSON)
    out.raw_headers.extend(response.raw_headers)
    out.raw_headers.append((b"etag", etag.encode()))
    return out
