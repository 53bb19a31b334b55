"""EMVCo QR Consumer-Presented Mode (EMV QRCPS CPM v1.0): the customer's phone shows the code.

The payload is BER-TLV, Base64-encoded (RFC 4648 §4, with padding) for the QR code (CPM
§3.2). Its structure (CPM §3.3, §4):

- Payload Format Indicator ``85`` with the value ``"CPV01"`` comes first;
- one or more Application Templates ``61``, each with an ADF Name (AID, ``4F``, 5-16
  bytes) and optionally label, PAN, track 2, cardholder name, language, issuer URL,
  version, token requestor ID, PAR, last 4 digits, and an Application Specific
  Transparent Template ``63``;
- at most one Common Data Template ``62`` with the same kinds of data and a Common Data
  Transparent Template ``64`` (cryptogram, ATC, IAD, unpredictable number ...);
- a PAN (``5A``) or track 2 (``57``) is in an application template or the common data;
- tags the terminal does not know are kept and otherwise ignored.

Any violation raises :class:`~localpay.errors.QRFormatError` naming the rule.
:func:`encode` / :func:`parse` are a symmetric pair.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass

from localpay.errors import QRFormatError, TLVError
from terminal import tlv
from terminal.tlv import Tlv

PFI = b"CPV01"
MAX_PAYLOAD = 1024  # far beyond any code a phone shows; bounds work on hostile input

_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")

#: tag -> (name, min bytes, max bytes) for data objects in templates 61 and 62 (CPM §4.2)
DATA_OBJECTS: dict[int, tuple[str, int, int]] = {
    0x4F: ("ADF Name", 5, 16),
    0x50: ("Application Label", 1, 16),
    0x57: ("Track 2 Equivalent Data", 1, 19),
    0x5A: ("Application PAN", 1, 10),
    0x5F20: ("Cardholder Name", 2, 26),
    0x5F2D: ("Language Preference", 2, 8),
    0x5F50: ("Issuer URL", 1, 255),
    0x9F08: ("Application Version Number", 2, 2),
    0x9F12: ("Application Preferred Name", 1, 16),
    0x9F19: ("Token Requestor ID", 6, 6),
    0x9F24: ("Payment Account Reference", 29, 29),
    0x9F25: ("Last 4 Digits of PAN", 2, 2),
}


@dataclass(frozen=True, slots=True)
class Cpm:
    """A parsed consumer-presented code."""

    objects: tuple[Tlv, ...]
    payload: str

    @property
    def applications(self) -> list[Tlv]:
        return [o for o in self.objects if o.tag == 0x61]

    @property
    def common(self) -> Tlv | None:
        return next((o for o in self.objects if o.tag == 0x62), None)

    def value(self, tag: int) -> bytes | None:
        """``tag`` from the first application template, else from the common data."""
        for template in [*self.applications[:1], *([self.common] if self.common else [])]:
            hit = template.find(tag)
            if hit is not None:
                return hit.value
        return None

    @property
    def aid(self) -> bytes:
        found = self.applications[0].find(0x4F)
        return found.value if found is not None else b""

    @property
    def atc(self) -> int | None:
        raw = self.value(0x9F36)
        return int.from_bytes(raw, "big") if raw is not None and len(raw) == 2 else None

    def pan(self) -> str:
        """The full PAN (from 5A, else from 57): in memory only, token it and drop it."""
        raw = self.value(0x5A)
        if raw is not None:
            digits = raw.hex().upper().rstrip("F")
        else:
            track2 = self.value(0x57)
            if track2 is None:
                raise QRFormatError("conditional: the code carries no PAN (5A) or track 2 (57)")
            digits = track2.hex().upper().split("D", 1)[0]
        if not digits.isdigit() or not 12 <= len(digits) <= 19:
            raise QRFormatError("bad value: the code's PAN is not 12-19 digits")
        return digits


def _check_template(t: Tlv, where: str) -> None:
    if t.children is None:
        raise QRFormatError(f"structure: {where} is not a constructed template")
    seen: set[int] = set()
    for obj in t.children:
        if obj.tag in seen:
            raise QRFormatError(f"duplicate tag: {obj.tag_hex} appears twice in {where}")
        seen.add(obj.tag)
        rule = DATA_OBJECTS.get(obj.tag)
        if rule is not None:
            name, lo, hi = rule
            if not lo <= len(obj.value) <= hi:
                raise QRFormatError(
                    f"bad length: {name} ({obj.tag_hex}) in {where} is {len(obj.value)} bytes, "
                    f"must be {lo}-{hi}"
                )
    transparent = 0x63 if t.tag == 0x61 else 0x64
    for obj in t.children:
        if obj.tag in (0x63, 0x64) and obj.tag != transparent:
            raise QRFormatError(f"structure: template {obj.tag_hex} does not belong in {where}")
        if obj.tag == transparent and obj.children is None:
            raise QRFormatError(f"structure: {obj.tag_hex} in {where} must be constructed")


def parse(payload: str) -> Cpm:
    """Decode the Base64 text and check every CPM rule."""
    if not isinstance(payload, str):
        raise QRFormatError(f"a CPM payload is text, not {type(payload).__name__}")
    text = payload.strip()
    if len(text) > MAX_PAYLOAD:
        raise QRFormatError(f"bad length: payload of {len(text)} characters")
    if not _B64.fullmatch(text) or len(text) % 4:
        raise QRFormatError("encoding: a CPM payload is Base64 text (RFC 4648) with padding")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise QRFormatError(f"encoding: not valid Base64: {err}") from err
    try:
        objs = tlv.decode(raw)
    except TLVError as err:
        raise QRFormatError(f"BER-TLV: {err}") from err
    return _check(tuple(objs), text)


def _check(objs: tuple[Tlv, ...], text: str) -> Cpm:
    if not objs or objs[0].tag != 0x85:
        raise QRFormatError("order: the Payload Format Indicator (85) must come first")
    if objs[0].value != PFI:
        raise QRFormatError(f"bad value: Payload Format Indicator is {objs[0].value!r}, "
                            "not 'CPV01'")
    apps = [o for o in objs if o.tag == 0x61]
    commons = [o for o in objs if o.tag == 0x62]
    if not apps:
        raise QRFormatError("missing mandatory: at least one Application Template (61)")
    if len(commons) > 1:
        raise QRFormatError("duplicate tag: more than one Common Data Template (62)")
    if sum(1 for o in objs if o.tag == 0x85) > 1:
        raise QRFormatError("duplicate tag: more than one Payload Format Indicator (85)")
    for i, app in enumerate(apps, 1):
        _check_template(app, f"application template {i}")
        if not any(c.tag == 0x4F for c in app.children or ()):
            raise QRFormatError(f"missing mandatory: ADF Name (4F) in application template {i}")
    if commons:
        _check_template(commons[0], "common data template")
    common_has = bool(commons) and any(c.tag in (0x5A, 0x57) for c in commons[0].children or ())
    for i, app in enumerate(apps, 1):
        own = any(c.tag in (0x5A, 0x57) for c in app.children or ())
        if not own and not common_has:
            raise QRFormatError(f"conditional: no PAN (5A) or track 2 (57) for application "
                                f"template {i} nor in the common data")
    return Cpm(objs, text)


def encode(objects: Iterable[Tlv]) -> str:
    """BER-TLV then Base64; the result is checked like any code we read."""
    objs = tuple(objects)
    text = base64.b64encode(tlv.encode(objs)).decode("ascii")
    _check(objs, text)
    return text


def build(aid: bytes, pan: str, *, label: str = "", atc: int | None = None,
          cryptogram: bytes | None = None, expiry: str = "") -> str:
    """A CPM code for one application (tests and the demo); ``expiry`` is YYMM for 57."""
    if not pan.isdigit() or not 12 <= len(pan) <= 19:
        raise QRFormatError("bad value: the PAN must be 12-19 digits")
    app = [Tlv.build(0x4F, aid)]
    if label:
        app.append(Tlv.build(0x50, label.encode("ascii")))
    if expiry:
        t2 = f"{pan}D{expiry}201" + ("F" if (len(pan) + 8) % 2 else "")
        app.append(Tlv.build(0x57, bytes.fromhex(t2)))
    else:
        app.append(Tlv.build(0x5A, bytes.fromhex(pan + ("F" if len(pan) % 2 else ""))))
    objs = [Tlv.build(0x85, PFI), Tlv.build(0x61, app)]
    transparent = []
    if atc is not None:
        transparent.append(Tlv.build(0x9F36, atc.to_bytes(2, "big")))
    if cryptogram is not None:
        transparent.append(Tlv.build(0x9F26, cryptogram))
    if transparent:
        objs.append(Tlv.build(0x62, [Tlv.build(0x64, transparent)]))
    return encode(objs)
