"""The local-currency wallet's own QR code: short-lived, Ed25519-signed, checkable offline.

Text form: ``LPW1:`` followed by RFC 4648 Base32 (upper case, no padding) of the signed
body and its 64-byte signature, so the whole code fits the QR alphanumeric mode.

Body (big-endian)::

    version      1 byte   = 1
    flags        1 byte   bit 0: an offline allowance follows
    wallet id    1 byte length (1-32) + that many ASCII bytes [A-Za-z0-9._-]
    issued at    4 bytes  Unix seconds
    expires at   4 bytes  Unix seconds, after issued at, at most MAX_LIFETIME_S later
    nonce        12 bytes random, one use only
    allowance    4 bytes  won, only when flags bit 0 is set

The signature is Ed25519 (RFC 8032) by the issuer over ``DOMAIN + body``; the domain
string keeps a wallet signature from ever verifying as any other signed message of ours.
The terminal checks the signature against the issuer keys it was provisioned with, the
time window with a configurable clock skew, and the nonce against the ledger (replay).
"""

from __future__ import annotations

import base64
import re
import secrets
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from localpay.errors import QRFormatError
from terminal.qr import signed

PREFIX = "LPW1:"
VERSION = 1
DOMAIN = b"localpay wallet qr v1\x00"
NONCE_BYTES = 12
SIGNATURE_BYTES = 64
MAX_LIFETIME_S = 600
#: the longest code make() can write: version, flags, id length, a 32-byte id, two times,
#: the nonce, an allowance and the signature, in Base32 after the prefix
_MAX_BYTES = 3 + 32 + 8 + NONCE_BYTES + 4 + SIGNATURE_BYTES
MAX_TEXT = len(PREFIX) + -(-_MAX_BYTES * 8 // 5)
_WALLET_ID = re.compile(rb"[A-Za-z0-9._-]{1,32}")
_FLAG_ALLOWANCE = 0x01


@dataclass(frozen=True, slots=True)
class WalletCode:
    """The signed content of a wallet code."""

    wallet_id: str
    issued_at: int
    expires_at: int
    nonce: bytes
    allowance: int | None = None
    version: int = VERSION

    @property
    def nonce_key(self) -> str:
        """The ledger's one-time key for this code."""
        return "w:" + self.nonce.hex()

    def body(self) -> bytes:
        wid = self.wallet_id.encode("ascii")
        flags = _FLAG_ALLOWANCE if self.allowance is not None else 0
        out = struct.pack(">BBB", self.version, flags, len(wid)) + wid
        out += struct.pack(">II", self.issued_at, self.expires_at) + self.nonce
        if self.allowance is not None:
            out += struct.pack(">I", self.allowance)
        return out


@dataclass(frozen=True, slots=True)
class SignedCode:
    code: WalletCode
    body: bytes
    signature: bytes


def _b32decode(text: str) -> bytes:
    return signed.b32decode(text, "wallet code", "LPW1:")


def decode(text: str) -> SignedCode:
    """Split a wallet code into its fields and signature; no signature check yet."""
    if not isinstance(text, str):
        raise QRFormatError(f"a wallet code is text, not {type(text).__name__}")
    if not text.startswith(PREFIX):
        raise QRFormatError(f"not a wallet code: it must start with {PREFIX!r}")
    if len(text) > MAX_TEXT:
        raise QRFormatError(f"bad length: wallet code of {len(text)} characters")
    raw = _b32decode(text[len(PREFIX):])
    if len(raw) < 3 + SIGNATURE_BYTES:
        raise QRFormatError("bad length: wallet code is truncated")
    body, signature = raw[:-SIGNATURE_BYTES], raw[-SIGNATURE_BYTES:]
    version, flags, id_len = body[0], body[1], body[2]
    if version != VERSION:
        raise QRFormatError(f"bad value: wallet code version {version} is not {VERSION}")
    if flags & ~_FLAG_ALLOWANCE:
        raise QRFormatError(f"bad value: unknown wallet code flags {flags:#04x}")
    want = 3 + id_len + 8 + NONCE_BYTES + (4 if flags & _FLAG_ALLOWANCE else 0)
    if len(body) != want:
        raise QRFormatError(f"bad length: wallet code body is {len(body)} bytes, expected {want}")
    wid = body[3 : 3 + id_len]
    if not _WALLET_ID.fullmatch(wid):
        raise QRFormatError("bad value: wallet id must be 1-32 of A-Z a-z 0-9 . _ -")
    i = 3 + id_len
    issued, expires = struct.unpack_from(">II", body, i)
    i += 8
    nonce = body[i : i + NONCE_BYTES]
    i += NONCE_BYTES
    allowance = struct.unpack_from(">I", body, i)[0] if flags & _FLAG_ALLOWANCE else None
    if expires <= issued:
        raise QRFormatError("bad value: wallet code expires before it was issued")
    if expires - issued > MAX_LIFETIME_S:
        raise QRFormatError(f"bad value: wallet code lives {expires - issued} s; at most "
                            f"{MAX_LIFETIME_S}")
    code = WalletCode(wid.decode("ascii"), issued, expires, nonce, allowance, version)
    return SignedCode(code, body, signature)


def verify(text: str, issuer_keys: Iterable[Ed25519PublicKey]) -> WalletCode:
    """Decode and check the signature against any of ``issuer_keys``; time is not checked."""
    code = decode(text)
    signed.check_signature(code.signature, DOMAIN + code.body, issuer_keys, "wallet code")
    return code.code


def time_problem(code: WalletCode, now_ms: int, skew_s: int) -> str | None:
    """``"expired"``, ``"not yet valid"`` or ``None``, allowing ``skew_s`` either way."""
    return signed.window_problem(code.issued_at, code.expires_at, now_ms, skew_s)


def make(key: Ed25519PrivateKey, wallet_id: str, *, now: float | None = None,
         ttl_s: int = 60, allowance: int | None = None, nonce: bytes | None = None) -> str:
    """Issue a wallet code valid for ``ttl_s`` seconds from ``now`` (the wallet app's job;
    here for tests, the demo and ``localpay qr wallet``)."""
    issued = int(time.time() if now is None else now)
    if not 0 < ttl_s <= MAX_LIFETIME_S:
        raise QRFormatError(f"bad value: lifetime {ttl_s} s is not 1-{MAX_LIFETIME_S}")
    if allowance is not None and (type(allowance) is not int or not 0 <= allowance < 2**32):
        raise QRFormatError(f"bad value: allowance {allowance!r} is not won in 0..2^32-1")
    if not _WALLET_ID.fullmatch(wallet_id.encode("ascii", "replace")):
        raise QRFormatError("bad value: wallet id must be 1-32 of A-Z a-z 0-9 . _ -")
    if not 0 <= issued < 2**32 - ttl_s:
        raise QRFormatError("bad value: issue time out of range")
    nonce = secrets.token_bytes(NONCE_BYTES) if nonce is None else nonce
    if len(nonce) != NONCE_BYTES:
        raise QRFormatError(f"bad value: a nonce is {NONCE_BYTES} bytes")
    code = WalletCode(wallet_id, issued, issued + ttl_s, nonce, allowance)
    body = code.body()
    signature = key.sign(DOMAIN + body)
    return PREFIX + base64.b32encode(body + signature).decode("ascii").rstrip("=")
