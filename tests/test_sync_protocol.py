"""The service reads the ``LPE1`` entry encoding as its specification says, byte for byte.

The ledger and the service share one codec (:mod:`localpay.encoding`), so comparing the two
proves nothing: the expectations here are written independently, as hand-assembled bytes and
as a reference encoder built from the format's description, not from the codec."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from localpay.errors import SyncProtocolError
from offline_ledger.encoding import EntryFields, encode
from sync.protocol import batch_body, decode_entry, parse_batch
from tests.strategies_sync import entry_fields

SIG = bytes(64)


def reference_encoding(f: EntryFields) -> bytes:
    """``LPE1`` from its description: big-endian integers, strings as a 2-byte length then
    UTF-8, fields in the documented order, the previous hash last."""

    def string(text: str) -> bytes:
        raw = text.encode("utf-8")
        return len(raw).to_bytes(2, "big") + raw

    def u64(n: int) -> bytes:
        return n.to_bytes(8, "big")

    def i64(n: int) -> bytes:
        return n.to_bytes(8, "big", signed=True)

    return (b"LPE1" + u64(f.seq) + string(f.kind) + string(f.terminal_id)
            + string(f.card_token) + i64(f.amount) + u64(f.ref_seq) + string(f.place)
            + i64(f.wall_ms) + u64(f.mono) + string(f.detail) + f.prev_hash)


def _same(f: EntryFields, data: bytes) -> None:
    w = decode_entry(data, SIG)
    assert (w.seq, w.kind, w.terminal_id, w.card_token, w.amount, w.ref_seq, w.place,
            w.wall_ms, w.mono, w.detail, w.prev_hash) == (
        f.seq, f.kind, f.terminal_id, f.card_token, f.amount, f.ref_seq, f.place, f.wall_ms,
        f.mono, f.detail, f.prev_hash)
    assert w.data == data and w.signature == SIG
    assert w.entry_hash == hashlib.sha256(data).digest()


def test_hand_assembled_entry_decodes() -> None:
    data = bytes.fromhex(
        "4c504531"               # magic "LPE1"
        "0000000000000007"       # seq 7
        "0007" "7061796d656e74"  # kind "payment"
        "0001" "54"              # terminal_id "T"
        "0002" "6331"            # card_token "c1"
        "fffffffffffffffb"       # amount -5, signed
        "0000000000000003"       # ref_seq 3
        "0003" "ec8898"          # place "수": one character, three UTF-8 bytes
        "ffffffffffffffff"       # wall_ms -1, signed
        "0000000000000009"       # mono 9
        "0007" "7b2261223a317d"  # detail '{"a":1}'
        + "ab" * 32              # prev_hash
    )
    f = EntryFields(7, "payment", "T", "c1", -5, 3, "수", -1, 9, '{"a":1}', b"\xab" * 32)
    _same(f, data)
    assert encode(f) == data


@settings(max_examples=200, deadline=None)
@given(entry_fields())
def test_decode_matches_the_reference_encoding(f: EntryFields) -> None:
    data = reference_encoding(f)
    _same(f, data)
    assert encode(f) == data  # what the ledger signs is what the service reads


def test_ledger_vectors_decode() -> None:
    doc = json.loads((Path(__file__).parent / "data" / "entry_vectors.json").read_text())
    for v in doc["vectors"]:
        fields = dict(v["fields"])
        fields["prev_hash"] = bytes.fromhex(fields["prev_hash"])
        f = EntryFields(**fields)
        data = bytes.fromhex(v["encoding"])
        assert reference_encoding(f) == data
        _same(f, data)
        assert decode_entry(data, SIG).entry_hash.hex() == v["entry_hash"]


@settings(max_examples=100, deadline=None)
@given(entry_fields())
def test_truncated_or_padded_is_refused(f: EntryFields) -> None:
    data = reference_encoding(f)
    for bad in (data[:-1], data + b"\x00", b"LPE2" + data[4:], data[: len(data) // 2]):
        with pytest.raises(SyncProtocolError):
            decode_entry(bad, SIG)
    with pytest.raises(SyncProtocolError):
        decode_entry(data, SIG[:10])


def test_batch_body_round_trip_and_refusals() -> None:
    f = EntryFields(1, "tap", "T", "c", 1500, 0, "85", 1, 1, "{}", bytes(32))
    data = reference_encoding(f)
    body = batch_body("T", [(data, SIG)])
    # the documented wire form: Base64 of the encoding and of the signature
    assert json.loads(body) == {"terminal_id": "T", "entries": [
        {"data": base64.b64encode(data).decode(),
         "sig": base64.b64encode(SIG).decode()}]}
    tid, entries = parse_batch(body)
    assert tid == "T" and len(entries) == 1
    _same(f, entries[0].data)
    for bad in (b"nope", b"[]", b'{"terminal_id":"T","entries":[]}',
                b'{"entries":[{"data":"AA==","sig":"AA=="}]}',
                b'{"terminal_id":"T","entries":[{"data":"***","sig":""}]}',
                b'{"terminal_id":"T","entries":[1]}'):
        with pytest.raises(SyncProtocolError):
            parse_batch(bad)
