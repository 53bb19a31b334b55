"""The sync protocol, shared by the terminal's client and the central service.

HTTP with JSON bodies. Every request from a terminal carries four headers::

    X-LP-Terminal   terminal id
    X-LP-Time       Unix time in milliseconds
    X-LP-Nonce      32 hex digits, never reused
    X-LP-Signature  base64 Ed25519 signature by the terminal key over request_message()

and every answer to an authenticated request carries ``X-LP-Signature``: the signature of the
service's *answer key* over :func:`response_message` (the request's nonce and the SHA-256 of
the answer body), so neither a deny list nor a balance can be forged on the way down, and
``X-LP-Answer-Key``: that key's ID (8 hex digits). The answer key is not the log key: the
log key signs only the log's notes (checkpoints) and one statement naming the answer key
(:func:`answer_key_text`, a signed note served unauthenticated at ``GET /v1/answer-key`` and
in the enrolment answer), so no text holding a caller's nonce is ever a note of the log.
A terminal checks the statement with the log key it trusts (:func:`open_answer_key`) and the
answers with the key it names.

Batch upload, ``POST /v1/batches``::

    {"terminal_id": "...", "entries": [{"data": b64(encoding), "sig": b64(signature)}, ...]}

``data`` is the ledger's canonical entry encoding (``LPE1``, see ``offline_ledger.encoding``);
the central leaf is ``SHA-256(0x00 || data)``. The service decodes it with
:func:`decode_entry` here, a second reading of the same format kept in step by tests, because
the service must not import the terminal's ledger.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from localpay import encoding
from localpay.errors import EntryEncodingError, SyncProtocolError
from sync.checkpoint import NoteVerifier, open_note

API = "/v1"
H_TERMINAL = "X-LP-Terminal"
H_TIME = "X-LP-Time"
H_NONCE = "X-LP-Nonce"
H_SIGNATURE = "X-LP-Signature"
H_ANSWER_KEY = "X-LP-Answer-Key"
#: the route that serves the log key's statement of the answer key (no authentication)
ANSWER_KEY_PATH = "/v1/answer-key"
#: HTTP statuses that, unsigned, say the service is away for now (a proxy in front of it, or
#: a server failing before the service could answer): retried, never taken for a forgery.
#: A forger gains nothing from them, as it could as well drop the connection.
UNAVAILABLE = frozenset({500, 502, 503, 504})
#: the statement's first line: no checkpoint's (a log's origin has no spaces)
ANSWER_KEY_LINE = "localpay answer key"
#: requests older or newer than this (ms) are refused as stale
STALE_MS = 300_000
MAX_BATCH = 10_000
ZERO_HASH = encoding.ZERO_HASH


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise SyncProtocolError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as err:
        raise SyncProtocolError(f"{what} is not base64: {err}") from err


# -- request and answer signing ----------------------------------------------------------------


def request_message(method: str, path: str, time_ms: int, nonce: str, body: bytes) -> bytes:
    """What a terminal signs: method, path with query, time, nonce and the body's SHA-256."""
    digest = hashlib.sha256(body).hexdigest()
    return f"LPREQ1\n{method.upper()}\n{path}\n{time_ms}\n{nonce}\n{digest}\n".encode()


def response_message(nonce: str, status: int, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return f"LPRES1\n{nonce}\n{status}\n{digest}\n".encode()


def answer_key_name(log_name: str) -> str:
    """The answer key's name in its verifier key and signature lines: the log's name with
    ``/answers``, so no one mistakes the one key for the other."""
    return f"{log_name}/answers"


def answer_key_text(answer_key: NoteVerifier) -> str:
    """The text of the log key's statement naming ``answer_key``, to be signed as a note::

        localpay answer key
        <answer key's verifier key>
    """
    return f"{ANSWER_KEY_LINE}\n{answer_key.text()}\n"


def open_answer_key(note: str, log_key: NoteVerifier) -> NoteVerifier:
    """The answer key a statement names, once the statement verifies with ``log_key``;
    :class:`~localpay.errors.ProofError` or :class:`SyncProtocolError` otherwise."""
    if not isinstance(note, str):
        raise SyncProtocolError("the answer key statement must be text")
    lines = open_note(note, log_key).split("\n")
    if len(lines) != 3 or lines[0] != ANSWER_KEY_LINE or lines[2] != "":
        raise SyncProtocolError("the note is not a statement of the answer key")
    named = NoteVerifier.parse(lines[1])
    if named.name != answer_key_name(log_key.name):
        raise SyncProtocolError(f"the answer key statement names {named.name!r}, not "
                                f"{answer_key_name(log_key.name)!r}")
    return named


def new_nonce() -> str:
    return secrets.token_hex(16)


def check_nonce(nonce: str) -> None:
    if len(nonce) != 32 or any(c not in "0123456789abcdef" for c in nonce):
        raise SyncProtocolError("nonce must be 32 lowercase hex digits")


# -- entries -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WireEntry(encoding.EntryFields):
    """One ledger entry as the service sees it: the decoded fields plus the raw bytes."""

    data: bytes
    signature: bytes

    @property
    def entry_hash(self) -> bytes:
        return hashlib.sha256(self.data).digest()


def decode_entry(data: bytes, signature: bytes) -> WireEntry:
    """Parse an ``LPE1`` entry encoding (:mod:`localpay.encoding`, the one definition);
    raise :class:`SyncProtocolError` on any defect."""
    try:
        values = encoding.decode_values(data)
    except EntryEncodingError as err:
        raise SyncProtocolError(str(err)) from err
    if len(signature) != 64:
        raise SyncProtocolError(f"entry {values[0]}: signature is {len(signature)} bytes, "
                                "not 64")
    return WireEntry(*values, data, signature)


def batch_body(terminal_id: str, entries: list[tuple[bytes, bytes]]) -> bytes:
    """The JSON body of a batch upload from ``(encoding, signature)`` pairs."""
    return json.dumps(
        {"terminal_id": terminal_id,
         "entries": [{"data": b64(d), "sig": b64(s)} for d, s in entries]},
        separators=(",", ":"),
    ).encode()


def parse_batch(body: bytes) -> tuple[str, list[WireEntry]]:
    """The terminal id and decoded entries of a batch body."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise SyncProtocolError(f"batch is not JSON: {err}") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise SyncProtocolError("batch must be an object with an 'entries' list")
    terminal_id = doc.get("terminal_id")
    if not isinstance(terminal_id, str) or not terminal_id:
        raise SyncProtocolError("batch needs a terminal_id")
    items = doc["entries"]
    if not items:
        raise SyncProtocolError("batch has no entries")
    if len(items) > MAX_BATCH:
        raise SyncProtocolError(f"batch has {len(items)} entries; at most {MAX_BATCH}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise SyncProtocolError(f"batch entry {i} is not an object")
        out.append(decode_entry(unb64(item.get("data"), f"entry {i} data"),
                                unb64(item.get("sig"), f"entry {i} sig")))
    return terminal_id, out


@dataclass(frozen=True)
class BatchReceipt:
    """The service's answer to a batch: what it now holds, and the proof of it."""

    terminal_id: str
    first_seq: int
    last_seq: int
    accepted: int
    log_index: int
    checkpoint: str
    proof: list[bytes]

    def to_json(self) -> dict[str, Any]:
        return {
            "terminal_id": self.terminal_id,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "accepted": self.accepted,
            "log_index": self.log_index,
            "checkpoint": self.checkpoint,
            "inclusion_proof": [b64(p) for p in self.proof],
        }

    @classmethod
    def from_json(cls, doc: Any) -> BatchReceipt:
        try:
            return cls(
                terminal_id=str(doc["terminal_id"]),
                first_seq=_int(doc["first_seq"]),
                last_seq=_int(doc["last_seq"]),
                accepted=_int(doc["accepted"]),
                log_index=_int(doc["log_index"]),
                checkpoint=str(doc["checkpoint"]),
                proof=[unb64(p, "proof hash") for p in doc["inclusion_proof"]],
            )
        except (KeyError, TypeError) as err:
            raise SyncProtocolError(f"batch receipt is missing {err}") from err


def _int(value: Any) -> int:
    if type(value) is not int:  # bool must not pass for a number
        raise SyncProtocolError(f"expected an integer, got {value!r}")
    return value


def get_int(doc: Any, key: str) -> int:
    if not isinstance(doc, dict) or key not in doc:
        raise SyncProtocolError(f"answer lacks {key!r}")
    return _int(doc[key])
