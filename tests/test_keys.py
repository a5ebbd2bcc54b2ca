"""Key components: the encoding is injective, readable and glob-safe (no Redis needed)."""

from __future__ import annotations

import itertools
import re
import urllib.parse

import pytest

from cachelab.patterns.keys import glob_escape, hash_tag, make_key, safe

#: What :func:`safe` may emit: a lone ``%`` (the empty string), or safe characters and ``%XX`` escapes.
_GRAMMAR = re.compile(r"%|(?:[A-Za-z0-9_.\-]|%[0-9A-F]{2})+")
_GLOB_AND_STRUCTURE = set("*?[]\\^:{} \t\r\n")


def decode(encoded: str) -> str:
    """The inverse of :func:`safe`: if it exists on every output, no two inputs share one."""
    if encoded == "%":
        return ""
    return urllib.parse.unquote_to_bytes(encoded).decode("utf-8", "surrogatepass")


TRICKY = [
    "", "\x00", "%", "%00", "%25", "%%", "%2A", "*", "?", "[", "]", "\\", ":", "{", "}", "^", "{}",
    "{a}", "a}", "{a", "a:b", "a*", "a?b", "[ab]", "\\*", "a b", " ", "\t", "\n", "~", "~gen",
    "ü", "u\u0308", "日本", "\ud800", "🙂", "a.b-c_d", ".", "..", "-", "_", "0", "00",
]


@pytest.mark.parametrize("text", TRICKY)
def test_every_encoding_is_in_the_grammar_and_decodes_back(text):
    encoded = safe(text)
    assert _GRAMMAR.fullmatch(encoded), encoded
    assert decode(encoded) == text


def test_tricky_identifiers_never_share_an_encoding():
    pairs = [(a, b) for a, b in itertools.combinations(TRICKY, 2) if safe(a) == safe(b)]
    assert pairs == []


def test_empty_and_nul_identifiers_are_two_keys():
    assert safe("") == "%"
    assert safe("\x00") == "%00"
    assert make_key("cl", "", "rl") != make_key("cl", "\x00", "rl")


try:  # hypothesis is not a declared dependency; the parametrised set above always runs
    from hypothesis import given
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None

if given is not None:

    @given(st.text())
    def test_safe_is_injective_on_any_text(text):
        encoded = safe(text)
        assert _GRAMMAR.fullmatch(encoded)
        assert decode(encoded) == text

    @given(st.text(), st.text())
    def test_two_different_texts_never_encode_alike(a, b):
        assert (safe(a) == safe(b)) == (a == b)

    @given(st.text())
    def test_encodings_hold_no_glob_separator_or_brace_and_need_no_glob_escaping(text):
        encoded = safe(text)
        assert not _GLOB_AND_STRUCTURE & set(encoded)
        assert glob_escape(encoded) == encoded  # SCAN MATCH takes it literally as it is


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_encodings_hold_no_glob_separator_or_brace(text):
    encoded = safe(text)
    assert not _GLOB_AND_STRUCTURE & set(encoded)
    assert glob_escape(encoded) == encoded


def test_readable_identifiers_stay_as_they_are():
    for text in ["acme", "tenant-42", "user_7", "v1.2", "A-Z.a-z_0-9"]:
        assert safe(text) == text
    assert safe(7) == safe("7") == "7"  # components are compared by str()


def test_hash_tag_wraps_exactly_one_brace_pair_around_any_scope():
    for text in TRICKY:
        tag = hash_tag(text)
        assert tag.count("{") == 1 and tag.count("}") == 1
        assert tag.startswith("{") and tag.endswith("}") and len(tag) > 2  # never an empty tag
