"""The JSON depth check reads a body without backslashes its own faster way
(central/http_limits.py): both ways must refuse exactly the same bodies.

The reference here is written apart from the module: a scanner byte by byte, strings skipped
with their escapes, then the innermost pairs taken away one level a pass."""

from __future__ import annotations

import base64
import json
import os

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from central.http_limits import json_too_deep


def _reference(body: bytes, limit: int) -> bool | None:
    """Too deep or not; None when a string is left open (not a body either way reads)."""
    kept = bytearray()
    in_string = escaped = False
    for b in body:
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:
                in_string = False
        elif b == 0x22:
            in_string = True
        elif b in b"[]{}":
            kept.append(b)
    if in_string:
        return None
    text = bytes(kept)
    for _ in range(limit):
        if not text:
            return False
        text = text.replace(b"[]", b"\x00").replace(b"{}", b"\x00").replace(b"\x00", b"")
    return bool(text)


BODY_BYTES = st.lists(st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b"a", b":",
                                       b",", b" ", b"\\\""]), max_size=80).map(b"".join)


@settings(max_examples=1500, deadline=None)
@given(BODY_BYTES, st.integers(min_value=1, max_value=6), st.booleans())
def test_both_ways_agree_with_a_reference_scanner(body: bytes, limit: int,
                                                  plain: bool) -> None:
    if plain:  # the fast way: no backslash anywhere
        body = body.replace(b"\\", b"")
    want = _reference(body, limit)
    assume(want is not None)
    assert json_too_deep(body, limit) is want


def test_a_batch_body_without_escapes_reads_as_its_parser_nests_it() -> None:
    entries = [{"data": base64.b64encode(os.urandom(150)).decode(),
                "sig": base64.b64encode(os.urandom(64)).decode()} for _ in range(500)]
    body = json.dumps({"terminal": "T1", "entries": entries}).encode()
    assert b"\\" not in body
    assert json_too_deep(body, 3) is False   # an object of a list of objects: 3 deep
    assert json_too_deep(body, 2) is True
    # brackets inside strings are text, whichever way the body is read
    quoted = json.dumps({"a": "[[[[{{{{" * 10}).encode()
    assert json_too_deep(quoted, 1) is False
    assert json_too_deep(json.dumps({"a": "\\[[[["}).encode(), 1) is False
