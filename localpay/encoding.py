"""The one canonical byte encoding of a ledger entry: what is hashed and what is signed.

Shared by the terminal's ledger and the central service, so both read the same bytes the
same way; errors are :class:`~localpay.errors.EntryEncodingError`.

Version 1 (``LPE1``). All integers are big-endian; a *string* is a 2-byte length then that
many UTF-8 bytes; ``detail`` is a string holding canonical JSON (keys sorted, no spaces,
UTF-8, values only str, int or bool, or a list of ``[str, int]`` pairs such as a payment's
split by pocket ``"split": [["youth", 5000], ["cash", 3000]]``)::

    magic        4 bytes  b"LPE1"
    seq          8 bytes  unsigned
    kind         string   one of KINDS
    terminal_id  string
    card_token   string   hex keyed token, or "" when the entry has no card
    amount       8 bytes  signed, integer won
    ref_seq      8 bytes  unsigned, 0 when the entry refers to nothing
    place        string   merchant id (till) or route (validator)
    wall_ms      8 bytes  signed, Unix time in milliseconds as the terminal saw it
    mono         8 bytes  unsigned, strictly increasing across the whole ledger
    detail       string   canonical JSON object
    prev_hash    32 bytes SHA-256 entry hash of the previous entry (32 zero bytes first)

``entry_hash = SHA-256(encoding)`` and ``signature = Ed25519(terminal key, encoding)``.
The central chain's leaf for an entry is ``SHA-256(0x00 || encoding)`` (RFC 9162 §2.1.1).
Test vectors: ``tests/data/entry_vectors.json``.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

from localpay.errors import EntryEncodingError

MAGIC = b"LPE1"
ZERO_HASH = bytes(32)
KINDS = (
    "payment",
    "refund",
    "void",
    "tap",
    "incentive",
    "deny_update",
    "config_change",
    "sync_receipt",
    # a till's closing of the day (terminal.zreport): totals only, amount 0, no card; the
    # money paths of both ends select their own kinds, so it never counts as money
    "z_report",
    # a cash-receipt request for one payment (terminal.cash_receipt): amount 0, no card, the
    # identity only as a keyed token; no money path selects it
    "cash_receipt",
)
_MAX_STR = 0xFFFF
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")


@dataclass(frozen=True, slots=True)
class EntryFields:
    """Everything about an entry that is covered by its hash and signature."""

    seq: int
    kind: str
    terminal_id: str
    card_token: str
    amount: int
    ref_seq: int
    place: str
    wall_ms: int
    mono: int
    detail: str
    prev_hash: bytes


def _is_pairs(value: object) -> bool:
    """A list of ``[str, int]`` pairs (a split by pocket); nothing deeper, so the canonical
    text stays one obvious form."""
    return isinstance(value, list) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str)
        and isinstance(p[1], int) and not isinstance(p[1], bool) for p in value)


def canonical_detail(detail: dict[str, Any] | None) -> str:
    """The canonical JSON text of an entry's detail object."""
    if not detail:
        return "{}"
    for key, value in detail.items():
        if not isinstance(key, str) or not (isinstance(value, (str, int, bool))
                                            or _is_pairs(value)):
            raise EntryEncodingError(
                f"detail {key!r}: only str, int and bool values or lists of [str, int] pairs "
                f"are allowed, not {type(value).__name__}"
            )
    return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _string(value: str, name: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > _MAX_STR:
        raise EntryEncodingError(f"{name} is {len(raw)} bytes; at most {_MAX_STR} fit")
    return struct.pack(">H", len(raw)) + raw


def encode(fields: EntryFields) -> bytes:
    """The canonical bytes of an entry (see the module docstring).

    Every entry is encoded when it is written and again for each upload, so the common case
    (a well-formed entry) is packed with one ``pack`` per run of fixed fields; anything else
    is encoded again by :func:`_encode_careful`, which names the defect."""
    try:
        kind = fields.kind.encode("utf-8")
        terminal_id = fields.terminal_id.encode("utf-8")
        card_token = fields.card_token.encode("utf-8")
        place = fields.place.encode("utf-8")
        detail = fields.detail.encode("utf-8")
        # a string over 65,535 bytes fails its length's pack ("H") like a number out of range
        if fields.kind not in KINDS or len(fields.prev_hash) != 32:
            raise _Defective
        return b"".join((
            MAGIC, _SEQ_LEN.pack(fields.seq, len(kind)), kind,
            _LEN.pack(len(terminal_id)), terminal_id,
            _LEN.pack(len(card_token)), card_token,
            _AMOUNT_REF_LEN.pack(fields.amount, fields.ref_seq, len(place)), place,
            _WALL_MONO_LEN.pack(fields.wall_ms, fields.mono, len(detail)), detail,
            fields.prev_hash))
    except (_Defective, struct.error, AttributeError, TypeError, UnicodeError):
        return _encode_careful(fields)


def _encode_careful(fields: EntryFields) -> bytes:
    """:func:`encode` field by field, naming the first defect."""
    if fields.kind not in KINDS:
        raise EntryEncodingError(f"unknown entry kind {fields.kind!r}; expected one of {KINDS}")
    if len(fields.prev_hash) != 32:
        raise EntryEncodingError("prev_hash must be 32 bytes")
    try:
        return b"".join(
            (
                MAGIC,
                _U64.pack(fields.seq),
                _string(fields.kind, "kind"),
                _string(fields.terminal_id, "terminal_id"),
                _string(fields.card_token, "card_token"),
                _I64.pack(fields.amount),
                _U64.pack(fields.ref_seq),
                _string(fields.place, "place"),
                _I64.pack(fields.wall_ms),
                _U64.pack(fields.mono),
                _string(fields.detail, "detail"),
                fields.prev_hash,
            )
        )
    except struct.error as err:
        raise EntryEncodingError(f"entry {fields.seq}: a number is out of range: {err}") from err


_LEN = struct.Struct(">H")
_SEQ_LEN = struct.Struct(">QH")
_AMOUNT_REF_LEN = struct.Struct(">qQH")
_WALL_MONO_LEN = struct.Struct(">qQH")


#: an entry's fields in :class:`EntryFields` order
FieldValues = tuple[int, str, str, str, int, int, str, int, int, str, bytes]


class _Defective(Exception):
    """The fast reading met a defect: the careful one says which."""


def decode_values(data: bytes) -> FieldValues:
    """The fields of canonical bytes, in :class:`EntryFields` order, as a tuple; raise
    ``EntryEncodingError`` on any defect.

    Central reads every entry of every batch through here, so the common case (a well-formed
    entry) is read with one ``unpack_from`` per run of fixed fields and no copies; anything
    else is read again by :func:`_decode_careful`, which names the defect."""
    try:
        if not isinstance(data, bytes) or data[:4] != MAGIC:
            raise _Defective
        seq, n = _SEQ_LEN.unpack_from(data, 4)
        q = 14 + n
        kind = data[14:q].decode("utf-8")
        (n,) = _LEN.unpack_from(data, q)
        p, q = q + 2, q + 2 + n
        terminal_id = data[p:q].decode("utf-8")
        (n,) = _LEN.unpack_from(data, q)
        p, q = q + 2, q + 2 + n
        card_token = data[p:q].decode("utf-8")
        amount, ref_seq, n = _AMOUNT_REF_LEN.unpack_from(data, q)
        p, q = q + 18, q + 18 + n
        place = data[p:q].decode("utf-8")
        wall_ms, mono, n = _WALL_MONO_LEN.unpack_from(data, q)
        p, q = q + 18, q + 18 + n
        detail = data[p:q].decode("utf-8")
        # every position only grows, so a string that ran past the end shows here too
        if q + 32 != len(data) or kind not in KINDS:
            raise _Defective
        return (seq, kind, terminal_id, card_token, amount, ref_seq, place, wall_ms, mono,
                detail, data[q:])
    except (_Defective, struct.error, UnicodeDecodeError):
        return _decode_careful(data)


def decode(data: bytes) -> EntryFields:
    """Parse canonical bytes back into fields; raise ``EntryEncodingError`` on any defect."""
    return EntryFields(*decode_values(data))


def _decode_careful(data: bytes) -> FieldValues:
    """:func:`decode_values` byte by byte, naming the first defect (or reading the bytes
    given as another bytes-like object)."""
    view = memoryview(data)
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(view):
            raise EntryEncodingError(f"entry encoding truncated at byte {pos} (needs {n} more)")
        chunk = bytes(view[pos : pos + n])
        pos += n
        return chunk

    def string() -> str:
        (length,) = struct.unpack(">H", take(2))
        try:
            return take(length).decode("utf-8")
        except UnicodeDecodeError as err:
            raise EntryEncodingError(f"entry encoding has invalid UTF-8: {err}") from err

    if take(4) != MAGIC:
        raise EntryEncodingError("entry encoding does not start with LPE1")
    seq = _U64.unpack(take(8))[0]
    kind = string()
    terminal_id = string()
    card_token = string()
    amount = _I64.unpack(take(8))[0]
    ref_seq = _U64.unpack(take(8))[0]
    place = string()
    wall_ms = _I64.unpack(take(8))[0]
    mono = _U64.unpack(take(8))[0]
    detail = string()
    prev_hash = take(32)
    if pos != len(view):
        raise EntryEncodingError(f"entry encoding has {len(view) - pos} bytes after its end")
    if kind not in KINDS:
        raise EntryEncodingError(f"entry encoding has unknown kind {kind!r}")
    return (seq, kind, terminal_id, card_token, amount, ref_seq, place, wall_ms, mono, detail,
            prev_hash)


def entry_hash(encoded: bytes) -> bytes:
    """SHA-256 of the canonical bytes: the chain link."""
    return hashlib.sha256(encoded).digest()
