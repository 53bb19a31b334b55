"""Campaign codes: an event's signed claim to incentive points for one wallet.

The flow: at an event (a tree-planting day, a car-free day), the rider checks in with the
wallet app and the campaign's system issues a code *for that wallet*; the rider shows it to
any terminal's scanner (a validator or a till, no purchase needed), which records a ledger
entry of kind ``incentive`` for the wallet's card token; the central service credits the
campaign's points once per card per campaign. A code names its wallet, so one copied from a
screen or shared online earns nothing for anyone else, and a plain card tap is never slowed
by a two-step "scan, then tap" dialogue at a bus door.

Text form: ``LPC1:`` followed by RFC 4648 Base32 (upper case, no padding) of the signed
body and its 64-byte signature, so the whole code fits the QR alphanumeric mode.

Body (big-endian)::

    version      1 byte   = 1
    flags        1 byte   = 0 (reserved)
    campaign id  1 byte length (1-32) + that many ASCII bytes [A-Za-z0-9._-]
    wallet id    1 byte length (1-32) + that many ASCII bytes [A-Za-z0-9._-]
    points       4 bytes  what the terminal shows; the central rules decide what is credited
    valid from   4 bytes  Unix seconds
    valid until  4 bytes  Unix seconds, after valid from, at most MAX_LIFETIME_S later

The signature is Ed25519 (RFC 8032) by the operator's campaign key over ``DOMAIN + body``;
the domain string keeps it from ever verifying as a wallet code or any other signed message
of ours. The terminal checks the signature against the keys it was provisioned with, the
validity window with a configurable clock skew, and records ``campaign:wallet`` as a
one-time nonce so the same code is refused at the same terminal; the central service keys
claims by campaign and card, so another terminal cannot credit it twice either.
"""

from __future__ import annotations

import base64
import re
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from localpay.errors import QRFormatError
from terminal.qr import signed

PREFIX = "LPC1:"
VERSION = 1
DOMAIN = b"localpay campaign qr v1\x00"
SIGNATURE_BYTES = 64
MAX_LIFETIME_S = 400 * 86_400
MAX_TEXT = 300
_ID = re.compile(rb"[A-Za-z0-9._-]{1,32}")


@dataclass(frozen=True, slots=True)
class CampaignCode:
    """The signed content of a campaign code."""

    campaign_id: str
    wallet_id: str
    points: int
    valid_from: int
    valid_until: int
    version: int = VERSION

    @property
    def nonce_key(self) -> str:
        """The ledger's one-time key: one claim per campaign and wallet at a terminal."""
        return f"p:{self.campaign_id}:{self.wallet_id}"

    def body(self) -> bytes:
        cid, wid = self.campaign_id.encode("ascii"), self.wallet_id.encode("ascii")
        return (struct.pack(">BBB", self.version, 0, len(cid)) + cid
                + struct.pack(">B", len(wid)) + wid
                + struct.pack(">III", self.points, self.valid_from, self.valid_until))


@dataclass(frozen=True, slots=True)
class SignedCampaign:
    code: CampaignCode
    body: bytes
    signature: bytes


def _b32decode(text: str) -> bytes:
    return signed.b32decode(text, "campaign code", "LPC1:")


def decode(text: str) -> SignedCampaign:
    """Split a campaign code into its fields and signature; no signature check yet."""
    if not isinstance(text, str):
        raise QRFormatError(f"a campaign code is text, not {type(text).__name__}")
    if not text.startswith(PREFIX):
        raise QRFormatError(f"not a campaign code: it must start with {PREFIX!r}")
    if len(text) > MAX_TEXT:
        raise QRFormatError(f"bad length: campaign code of {len(text)} characters")
    raw = _b32decode(text[len(PREFIX):])
    if len(raw) < 4 + SIGNATURE_BYTES:
        raise QRFormatError("bad length: campaign code is truncated")
    body, signature = raw[:-SIGNATURE_BYTES], raw[-SIGNATURE_BYTES:]
    version, flags, cid_len = body[0], body[1], body[2]
    if version != VERSION:
        raise QRFormatError(f"bad value: campaign code version {version} is not {VERSION}")
    if flags:
        raise QRFormatError(f"bad value: unknown campaign code flags {flags:#04x}")
    if len(body) < 4 + cid_len:
        raise QRFormatError("bad length: campaign code body is truncated")
    cid = body[3 : 3 + cid_len]
    wid_len = body[3 + cid_len]
    want = 4 + cid_len + wid_len + 12
    if len(body) != want:
        raise QRFormatError(f"bad length: campaign code body is {len(body)} bytes, "
                            f"expected {want}")
    wid = body[4 + cid_len : 4 + cid_len + wid_len]
    if not _ID.fullmatch(cid):
        raise QRFormatError("bad value: campaign id must be 1-32 of A-Z a-z 0-9 . _ -")
    if not _ID.fullmatch(wid):
        raise QRFormatError("bad value: wallet id must be 1-32 of A-Z a-z 0-9 . _ -")
    points, start, until = struct.unpack_from(">III", body, 4 + cid_len + wid_len)
    if until <= start:
        raise QRFormatError("bad value: campaign code ends before it starts")
    if until - start > MAX_LIFETIME_S:
        raise QRFormatError(f"bad value: campaign code lives {until - start} s; at most "
                            f"{MAX_LIFETIME_S}")
    code = CampaignCode(cid.decode("ascii"), wid.decode("ascii"), points, start, until, version)
    return SignedCampaign(code, body, signature)


def verify(text: str, keys: Iterable[Ed25519PublicKey]) -> CampaignCode:
    """Decode and check the signature against any of ``keys``; time is not checked."""
    code = decode(text)
    signed.check_signature(code.signature, DOMAIN + code.body, keys, "campaign code")
    return code.code


def time_problem(code: CampaignCode, now_ms: int, skew_s: int) -> str | None:
    """``"expired"``, ``"not yet valid"`` or ``None``, allowing ``skew_s`` either way."""
    return signed.window_problem(code.valid_from, code.valid_until, now_ms, skew_s)


def make(key: Ed25519PrivateKey, campaign_id: str, wallet_id: str, points: int, *,
         valid_from: int | None = None, valid_until: int | None = None) -> str:
    """Issue a code (the campaign system's job; here for tests, the demo and the CLI).
    Default window: from now for one day."""
    start = int(time.time()) if valid_from is None else valid_from
    until = start + 86_400 if valid_until is None else valid_until
    for name, value in (("campaign id", campaign_id), ("wallet id", wallet_id)):
        if not isinstance(value, str) or not _ID.fullmatch(value.encode("ascii", "replace")):
            raise QRFormatError(f"bad value: {name} must be 1-32 of A-Z a-z 0-9 . _ -")
    if type(points) is not int or not 0 < points < 2**32:
        raise QRFormatError(f"bad value: points {points!r} is not 1..2^32-1")
    if not 0 <= start < until < 2**32 or until - start > MAX_LIFETIME_S:
        raise QRFormatError(f"bad value: window {start}..{until} is not a valid lifetime")
    code = CampaignCode(campaign_id, wallet_id, points, start, until)
    body = code.body()
    return PREFIX + base64.b32encode(body + key.sign(DOMAIN + body)).decode("ascii").rstrip("=")
