"""Signed checkpoints of the central chain: C2SP ``tlog-checkpoint`` in a C2SP ``signed-note``.

A checkpoint body is three lines (c2sp.org/tlog-checkpoint)::

    <origin>
    <tree size, decimal>
    <base64 root hash>

and the note adds a blank line and one signature line per key (c2sp.org/signed-note)::

    — <key name> base64(key ID || Ed25519 signature over the body)

with ``key ID = SHA-256(key name || 0x0A || 0x01 || public key)[:4]``. A verifier key is
written ``<name>+<key ID hex>+base64(0x01 || public key)``, as Go's ``sumdb/note`` does, so
any standard verifier can check our checkpoints.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from localpay.errors import ProofError, SyncProtocolError

ED25519_TYPE = b"\x01"
DASH = "\u2014"
MAX_SIGNATURES = 16


def _raw(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, pub: Ed25519PublicKey) -> bytes:
    """c2sp.org/signed-note: the 4-byte key ID of an Ed25519 key."""
    return hashlib.sha256(name.encode() + b"\n" + ED25519_TYPE + _raw(pub)).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise SyncProtocolError(f"note key name {name!r} must be non-empty, no spaces or '+'")


@dataclass(frozen=True)
class NoteVerifier:
    """A key that may sign notes: name, ID and Ed25519 public key."""

    name: str
    public_key: Ed25519PublicKey

    @property
    def id(self) -> bytes:
        return key_id(self.name, self.public_key)

    def text(self) -> str:
        """The verifier key string: ``name+hexid+base64(0x01||pub)``."""
        raw = base64.b64encode(ED25519_TYPE + _raw(self.public_key)).decode()
        return f"{self.name}+{self.id.hex()}+{raw}"

    @classmethod
    def parse(cls, text: str) -> NoteVerifier:
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise SyncProtocolError("a verifier key is name+keyid+base64key")
        name, hexid, b64 = parts
        _check_name(name)
        try:
            raw = base64.b64decode(b64, validate=True)
            want = bytes.fromhex(hexid)
        except (binascii.Error, ValueError) as err:
            raise SyncProtocolError(f"verifier key {name!r} is not valid: {err}") from err
        if len(raw) != 33 or raw[:1] != ED25519_TYPE or len(want) != 4:
            raise SyncProtocolError(f"verifier key {name!r} is not an Ed25519 note key")
        verifier = cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
        if verifier.id != want:
            raise SyncProtocolError(f"verifier key {name!r}: key ID does not match the key")
        return verifier


@dataclass(frozen=True)
class NoteSigner:
    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        _check_name(self.name)

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, self.private_key.public_key())

    def sign(self, text: str) -> str:
        """c2sp.org/signed-note: the note for ``text`` (which must end in a newline)."""
        _check_text(text)
        sig = self.private_key.sign(text.encode())
        line = base64.b64encode(self.verifier.id + sig).decode()
        return f"{text}\n{DASH} {self.name} {line}\n"


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise SyncProtocolError("note text must end with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise SyncProtocolError("note text holds control characters")


def open_note(note: str, verifier: NoteVerifier) -> str:
    """Verify a signed note with ``verifier``; return its text.

    Unknown signers are ignored; a known signer whose signature fails rejects the note, and
    so does a note with no signature from ``verifier`` (c2sp.org/signed-note §Signatures).
    """
    if len(note) > 1 << 16:
        raise SyncProtocolError("note is too large")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise SyncProtocolError("not a signed note: no blank line before signatures")
    text = note[: split + 1]
    _check_text(text)
    lines = note[split + 2 :].splitlines()
    if not lines or len(lines) > MAX_SIGNATURES:
        raise SyncProtocolError(f"a signed note needs 1 to {MAX_SIGNATURES} signature lines")
    found = False
    for line in lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH:
            raise SyncProtocolError(f"malformed signature line {line[:40]!r}")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except binascii.Error as err:
            raise SyncProtocolError(f"signature line is not base64: {err}") from err
        if len(blob) < 5:
            raise SyncProtocolError("signature line too short")
        if parts[1] != verifier.name or blob[:4] != verifier.id:
            continue
        try:
            verifier.public_key.verify(blob[4:], text.encode())
        except InvalidSignature:
            raise ProofError(f"note signature by {verifier.name} does not verify") from None
        found = True
    if not found:
        raise ProofError(f"note is not signed by {verifier.name}")
    return text


@dataclass(frozen=True)
class Checkpoint:
    """c2sp.org/tlog-checkpoint: origin, tree size and root hash (extension lines kept)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        return "\n".join([*lines, *self.extensions]) + "\n"

    @classmethod
    def parse_body(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise SyncProtocolError("checkpoint body needs origin, size and root lines")
        origin, size_text, root_text = lines[:3]
        if not origin:
            raise SyncProtocolError("checkpoint origin is empty")
        # ASCII only: str.isdigit() also takes other scripts' digits and superscripts
        if not (size_text.isascii() and size_text.isdigit()) or (
            size_text != "0" and size_text.startswith("0")
        ):
            raise SyncProtocolError(f"checkpoint size {size_text[:20]!r} is not a decimal")
        try:
            root = base64.b64decode(root_text, validate=True)
        except binascii.Error as err:
            raise SyncProtocolError(f"checkpoint root is not base64: {err}") from err
        if len(root) != 32:
            raise SyncProtocolError(f"checkpoint root is {len(root)} bytes, not 32")
        return cls(origin, int(size_text), root, tuple(lines[3:-1]))

    def sign(self, signer: NoteSigner) -> str:
        return signer.sign(self.body())

    @classmethod
    def verify(cls, note: str, verifier: NoteVerifier, origin: str | None = None) -> Checkpoint:
        """Open a signed checkpoint; its origin must be ``origin`` (default: the key name)."""
        cp = cls.parse_body(open_note(note, verifier))
        want = origin if origin is not None else verifier.name
        if cp.origin != want:
            raise ProofError(f"checkpoint is for log {cp.origin!r}, not {want!r}")
        return cp
