"""The service's own reading of the ledger encoding agrees with the ledger's, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from localpay.errors import SyncProtocolError
from offline_ledger.encoding import EntryFields, encode
from sync.protocol import batch_body, decode_entry, parse_batch
from tests.strategies_sync import entry_fields

SIG = bytes(64)


def _same(f: EntryFields, data: bytes) -> None:
    w = decode_entry(data, SIG)
    assert (w.seq, w.kind, w.terminal_id, w.card_token, w.amount, w.ref_seq, w.place,
            w.wall_ms, w.mono, w.detail, w.prev_hash) == (
        f.seq, f.kind, f.terminal_id, f.card_token, f.amount, f.ref_seq, f.place, f.wall_ms,
        f.mono, f.detail, f.prev_hash)
    assert w.data == data


@settings(max_examples=200, deadline=None)
@given(entry_fields())
def test_decode_matches_ledger_encoding(f: EntryFields) -> None:
    _same(f, encode(f))


def test_ledger_vectors_decode() -> None:
    doc = json.loads((Path(__file__).parent / "data" / "entry_vectors.json").read_text())
    for v in doc["vectors"]:
        fields = dict(v["fields"])
        fields["prev_hash"] = bytes.fromhex(fields["prev_hash"])
        f = EntryFields(**fields)
        data = bytes.fromhex(v["encoding"])
        _same(f, data)
        assert decode_entry(data, SIG).entry_hash.hex() == v["entry_hash"]


@settings(max_examples=100, deadline=None)
@given(entry_fields())
def test_truncated_or_padded_is_refused(f: EntryFields) -> None:
    data = encode(f)
    for bad in (data[:-1], data + b"\x00", b"LPE2" + data[4:], data[: len(data) // 2]):
        with pytest.raises(SyncProtocolError):
            decode_entry(bad, SIG)
    with pytest.raises(SyncProtocolError):
        decode_entry(data, SIG[:10])


def test_batch_body_round_trip_and_refusals() -> None:
    f = EntryFields(1, "tap", "T", "c", 1500, 0, "85", 1, 1, "{}", bytes(32))
    tid, entries = parse_batch(batch_body("T", [(encode(f), SIG)]))
    assert tid == "T" and entries[0].seq == 1
    for bad in (b"nope", b"[]", b'{"terminal_id":"T","entries":[]}',
                b'{"entries":[{"data":"AA==","sig":"AA=="}]}',
                b'{"terminal_id":"T","entries":[{"data":"***","sig":""}]}',
                b'{"terminal_id":"T","entries":[1]}'):
        with pytest.raises(SyncProtocolError):
            parse_batch(bad)
