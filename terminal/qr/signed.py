"""What the signed local-currency codes (wallet ``LPW1:``, campaign ``LPC1:``) share:
canonical Base32 text, an Ed25519 signature by one of the provisioned keys, and a validity
window checked with a clock skew allowance."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from localpay.errors import QRFormatError

_B32 = re.compile(r"[A-Z2-7]+")


def b32decode(text: str, what: str, prefix: str) -> bytes:
    """The bytes of unpadded upper-case Base32 ``text``, refusing any non-canonical spelling
    (the decoder ignores the last character's spare bits: one code must have one text)."""
    if not _B32.fullmatch(text):
        raise QRFormatError(f"encoding: a {what} is upper-case Base32 after {prefix!r}")
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError) as err:
        raise QRFormatError(f"encoding: not valid Base32: {err}") from err
    if base64.b32encode(raw).decode("ascii").rstrip("=") != text:
        raise QRFormatError("encoding: not the canonical Base32 of its bytes")
    return raw


def check_signature(signature: bytes, message: bytes, keys: Iterable[Ed25519PublicKey],
                    what: str) -> None:
    """Accept when any of ``keys`` verifies; raise :class:`QRFormatError` otherwise."""
    for key in keys:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return
    raise QRFormatError(f"signature: the {what} is not signed by a provisioned key")


def window_problem(start_s: int, end_s: int, now_ms: int, skew_s: int) -> str | None:
    """``"expired"``, ``"not yet valid"`` or ``None``, allowing ``skew_s`` either way."""
    if now_ms > (end_s + skew_s) * 1000:
        return "expired"
    if now_ms < (start_s - skew_s) * 1000:
        return "not yet valid"
    return None
