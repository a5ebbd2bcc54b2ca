"""Key naming: safe components, hash tags, glob escaping, canonical request keys.

The seed builds keys as ``kpi:${tenantId}`` and invalidates with
``KEYS pattern``: a tenant id containing ``*``, ``?``, ``[`` or ``:`` then
matches, or impersonates, other tenants' keys. Here:

* every caller-supplied component is percent-encoded outside ``[A-Za-z0-9_.-]``
  (:func:`safe`), so an id can never contain a separator, a glob character or
  a hash-tag brace; the encoding is injective (two different ids never share
  a key, so never a cache entry or a rate-limit quota) and readable (``a-b.c``
  stays ``a-b.c``);
* every key of a scope (a tenant) shares a hash tag ``{scope}``, so multi-key
  commands and Lua scripts over one tenant's keys work on Redis Cluster;
* :func:`glob_escape` escapes a literal for use inside ``SCAN MATCH`` as a
  second line of defence;
* :func:`canonical_query` builds parameter-order-independent request keys (the
  seed's ``JSON.stringify(req.query)`` makes ``?a=1&b=2`` and ``?b=2&a=1`` two
  entries).
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Iterable, Mapping

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\^])")

DEFAULT_PREFIX = "cl"


def safe(component: object) -> str:
    """Percent-encode one key component so it holds no ``:``, glob, brace or space.

    Components are compared by ``str()`` (``7`` and ``"7"`` are one id). Every
    character outside ``[A-Za-z0-9_.-]`` becomes ``%XX`` per UTF-8 byte
    (uppercase hex; ``%`` itself is ``%25``), and the empty string becomes a
    lone ``%``, which no non-empty string encodes to (an escape always has two
    hex digits after it). So each output decodes to exactly one input: the
    encoding is injective. (An earlier version wrote "" as ``%00``, which is
    also the encoding of ``"\\x00"``: two identifiers shared one rate-limit
    quota.) Lone surrogates are encoded with ``surrogatepass`` rather than
    raising. No Redis round trips: keys are built in process, and a short
    component seen recently is answered from a bounded memo.
    """
    text = component if type(component) is str else str(component)
    done = _SAFE_MEMO.get(text)
    if done is None:
        # an empty id must not collapse two separators into one
        done = _UNSAFE.sub(_escape, text) if text else "%"
        if len(text) <= 64:  # ids and key parts seen again and again; one lookup from then on
            if len(_SAFE_MEMO) >= 8192:
                _SAFE_MEMO.clear()
            _SAFE_MEMO[text] = done
    return done


#: :func:`safe`'s recent answers for short components (bounded: cleared when full).
_SAFE_MEMO: dict[str, str] = {}


def _escape(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in match.group().encode("utf-8", "surrogatepass"))


def glob_escape(literal: str) -> str:
    """Escape ``*``, ``?``, ``[``, ``]``, ``^`` and ``\\`` for a SCAN/KEYS MATCH pattern."""
    return _GLOB_SPECIAL.sub(r"\\\1", literal)


def hash_tag(scope: object) -> str:
    return "{" + safe(scope) + "}"


def make_key(prefix: str, scope: object, *parts: object) -> str:
    """``prefix:{scope}:part:part`` with every caller-supplied piece made safe."""
    return ":".join([prefix, hash_tag(scope), *(safe(p) for p in parts)])


def scope_pattern(prefix: str, scope: object, *parts: object) -> str:
    """A SCAN pattern matching every key under ``prefix:{scope}:parts...``, and nothing else."""
    literal = ":".join([prefix, hash_tag(scope), *(safe(p) for p in parts)])
    return glob_escape(literal) + ":*"


def canonical_query(params: Mapping[str, object] | Iterable[tuple[str, object]]) -> str:
    """A stable encoding of query parameters: sorted by name, then value; empty values dropped."""
    items = params.items() if isinstance(params, Mapping) else params
    flat: list[tuple[str, str]] = []
    for name, value in items:
        values = value if isinstance(value, list | tuple) else [value]
        flat.extend((str(name), str(v)) for v in values if v is not None and v != "")
    return urllib.parse.urlencode(sorted(flat))


def request_key(
    prefix: str, scope: object, path: str, params: Mapping[str, object] | Iterable[tuple[str, object]]
) -> str:
    """A response-cache key: path plus canonical query, hashed to a bounded length."""
    canonical = f"{path}?{canonical_query(params)}"
    digest = hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()
    return make_key(prefix, scope, "resp", digest)


class KeyBuilder:
    """``make_key(prefix, scope, *parts)`` for fixed ``prefix`` and ``parts``: the same keys, built faster.

    For a hot path that builds one kind of key per call (a rate-limit check):
    the parts are made safe once, at construction, and the escaped scope is
    remembered in a bounded dict (cleared when it reaches ``max_cached``; only
    scopes up to 256 characters are kept), so an identifier seen before costs
    one dict lookup instead of three regex substitutions. The escaping is
    :func:`safe`'s, unchanged: ``KeyBuilder(p, *parts)(s) == make_key(p, s, *parts)``
    for every ``s``.
    """

    __slots__ = ("_cache", "_head", "_max", "_tail")

    def __init__(self, prefix: str, *parts: object, max_cached: int = 4096) -> None:
        self._head = prefix + ":{"
        self._tail = "}" + "".join(":" + safe(p) for p in parts)
        self._cache: dict[str, str] = {}
        self._max = max_cached

    def __call__(self, scope: object) -> str:
        text = scope if type(scope) is str else str(scope)  # as safe(): compared by str()
        key = self._cache.get(text)
        if key is None:
            key = self._head + safe(text) + self._tail
            if len(text) <= 256:
                if len(self._cache) >= self._max:
                    self._cache.clear()
                self._cache[text] = key
        return key
