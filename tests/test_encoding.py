"""The canonical entry encoding: fixed vectors, round trips, and typed errors on bad bytes."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from localpay import encoding as shared_encoding
from localpay.errors import EntryEncodingError
from offline_ledger import encoding
from offline_ledger.encoding import KINDS, EntryFields

VECTORS = json.loads((Path(__file__).parent / "data" / "entry_vectors.json").read_text())

texts = st.text(max_size=40)
fields_strategy = st.builds(
    EntryFields,
    seq=st.integers(0, 2**64 - 1),
    kind=st.sampled_from(KINDS),
    terminal_id=texts,
    card_token=texts,
    amount=st.integers(-(2**63), 2**63 - 1),
    ref_seq=st.integers(0, 2**64 - 1),
    place=texts,
    wall_ms=st.integers(-(2**63), 2**63 - 1),
    mono=st.integers(0, 2**64 - 1),
    detail=texts,
    prev_hash=st.binary(min_size=32, max_size=32),
)


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["fields"]["kind"])
def test_vectors(vector: dict) -> None:
    raw = dict(vector["fields"])
    raw["prev_hash"] = bytes.fromhex(raw["prev_hash"])
    fields = EntryFields(**raw)
    data = encoding.encode(fields)
    assert data.hex() == vector["encoding"]
    assert encoding.entry_hash(data).hex() == vector["entry_hash"]
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["private_key_seed"]))
    assert key.sign(data).hex() == vector["signature"]
    assert encoding.decode(data) == fields


@given(fields_strategy)
def test_round_trip(fields: EntryFields) -> None:
    assert encoding.decode(encoding.encode(fields)) == fields


@given(st.binary(max_size=300))
def test_decode_any_bytes_gives_fields_or_typed_error(data: bytes) -> None:
    try:
        result = encoding.decode(data)
    except EntryEncodingError:
        return
    assert isinstance(result, EntryFields)


@given(fields_strategy, st.data())
def test_truncation_is_a_typed_error(fields: EntryFields, data: st.DataObject) -> None:
    encoded = encoding.encode(fields)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(EntryEncodingError):
        encoding.decode(encoded[:cut])


def test_trailing_bytes_refused() -> None:
    raw = dict(VECTORS["vectors"][0]["fields"], prev_hash=bytes(32))
    data = encoding.encode(EntryFields(**raw))
    with pytest.raises(EntryEncodingError, match="after its end"):
        encoding.decode(data + b"\x00")


def test_unknown_kind_and_bad_values_refused() -> None:
    base = EntryFields(1, "tap", "T", "", 1, 0, "", 0, 1, "{}", bytes(32))
    with pytest.raises(EntryEncodingError, match="unknown entry kind"):
        encoding.encode(dataclasses.replace(base, kind="gift"))
    with pytest.raises(EntryEncodingError, match="out of range"):
        encoding.encode(dataclasses.replace(base, seq=-1))
    with pytest.raises(EntryEncodingError, match="32 bytes"):
        encoding.encode(dataclasses.replace(base, prev_hash=b"\x00"))
    with pytest.raises(EntryEncodingError, match="at most"):
        encoding.encode(dataclasses.replace(base, place="x" * 70_000))


def test_canonical_detail_is_sorted_and_typed() -> None:
    assert encoding.canonical_detail({"b": 1, "a": "가"}) == '{"a":"가","b":1}'
    assert encoding.canonical_detail(None) == "{}"
    with pytest.raises(EntryEncodingError, match="only str, int and bool"):
        encoding.canonical_detail({"amount": 1.5})


def _careful_or_error(data: bytes) -> object:
    try:
        return shared_encoding._decode_careful(data)
    except EntryEncodingError as err:
        return ("error", str(err))


def _fast_or_error(data: bytes) -> object:
    try:
        return shared_encoding.decode_values(data)
    except EntryEncodingError as err:
        return ("error", str(err))


@given(fields_strategy, st.data())
def test_the_fast_reading_agrees_with_the_careful_one(fields: EntryFields,
                                                      data: st.DataObject) -> None:
    """Central reads entries through a fast path that hands anything odd to the careful,
    byte-by-byte reading: on an entry with a few bytes changed, cut or grown, both give the
    same fields or the same error."""
    raw = bytearray(encoding.encode(fields))
    for _ in range(data.draw(st.integers(0, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw) + 3))
    mangled = bytes(raw[:cut]) + bytes(max(0, cut - len(raw)))
    assert _fast_or_error(mangled) == _careful_or_error(mangled)


@given(st.binary(max_size=200))
def test_the_fast_reading_agrees_on_any_bytes(data: bytes) -> None:
    assert _fast_or_error(b"LPE1" + data) == _careful_or_error(b"LPE1" + data)


def _outcome(encode: Callable[[EntryFields], bytes], fields: EntryFields) -> object:
    try:
        return encode(fields)
    except Exception as err:
        return (type(err), str(err))


#: values a caller might pass wrongly: numbers out of range or of the wrong type, strings
#: too long or not text, a short hash, an unknown kind (and a few right ones at the edges)
ODD: dict[str, list[Any]] = {
    "seq": [-1, 2**64, "7", 2**64 - 1],
    "kind": ["gift", None, ""],
    "terminal_id": ["T" * 65_536, b"T", "\ud800", "T" * 65_535],
    "card_token": ["c" * 65_536, None],
    "amount": [-(2**63) - 1, 2**63, 1.5, True],
    "ref_seq": [-1, 2**64],
    "place": ["수" * 21_846, "수" * 21_845],
    "wall_ms": [-(2**63) - 1, 2**63],
    "mono": [-1, 2**64, None],
    "detail": ["d" * 65_535, "d" * 65_536],
    "prev_hash": [b"", bytes(31), bytes(33), bytearray(32), "h" * 32],
}
_BASE = EntryFields(1, "tap", "T", "c", 1, 0, "P", 0, 1, "{}", bytes(32))


def _agree(fields: EntryFields) -> None:
    fast = _outcome(shared_encoding.encode, fields)
    assert fast == _outcome(shared_encoding._encode_careful, fields)
    if isinstance(fast, bytes):
        assert encoding.decode(fast) == dataclasses.replace(fields, prev_hash=bytes(
            fields.prev_hash))


@pytest.mark.parametrize(("name", "value"), [(k, v) for k, vs in ODD.items() for v in vs])
def test_the_fast_encoding_fails_as_the_careful_one(name: str, value: Any) -> None:
    """Every entry is encoded through a fast path that hands anything odd to the careful,
    field-by-field encoding: each odd value gives the same bytes or the same error."""
    _agree(dataclasses.replace(_BASE, **{name: value}))


@given(fields_strategy, st.data())
def test_the_fast_encoding_agrees_with_the_careful_one(fields: EntryFields,
                                                       data: st.DataObject) -> None:
    """With up to three fields spoiled at once, the first defect the careful encoding
    names is the one reported."""
    spoiled = data.draw(st.sets(st.sampled_from(sorted(ODD)), max_size=3))
    _agree(dataclasses.replace(fields, **{k: data.draw(st.sampled_from(ODD[k]))
                                          for k in sorted(spoiled)}))
