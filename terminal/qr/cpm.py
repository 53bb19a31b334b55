"""EMVCo QR Consumer-Presented Mode (EMV QRCPS CPM v1.0): the customer's phone shows the code.

The payload is BER-TLV, Base64-encoded (RFC 4648 §4, with padding) for the QR code (CPM
§3.2). Its structure (CPM §3.3, §4):

- Payload Format Indicator ``85`` with the value ``"CPV01"`` comes first;
- one or two Application Templates ``61`` (CPM Table 3.1), each with an ADF Name (AID,
  ``4F``, 5-16 bytes) and optionally label, PAN, track 2, cardholder name, language, issuer
  URL, version, token requestor ID, PAR, last 4 digits, and an Application Specific
  Transparent Template ``63``. A template without a usable ADF Name is skipped, not
  fatal (CPM §5.1.1.4): the code is refused only when no template is left;
- at most one Common Data Template ``62``, after the application templates, with the same
  kinds of data and a Common Data Transparent Template ``64`` (cryptogram, ATC, IAD,
  unpredictable number ...); a data object may not be in both a used application
  template and the common data (CPM §5.1.1.10);
- a PAN (``5A``) or track 2 (``57``) is in an application template or the common data;
- tags the terminal does not know are kept and otherwise ignored.

A payment uses the data of the one template the terminal accepted (CPM §5.1.1.7):
:meth:`Cpm.accepting` picks it by AID, and :attr:`Cpm.aid`, :meth:`Cpm.pan` and
:meth:`Cpm.value` read that template (the first usable one until a choice is made).

Any violation raises :class:`~localpay.errors.QRFormatError` naming the rule.
:func:`encode` / :func:`parse` are a symmetric pair.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass

from localpay.errors import QRFormatError, TLVError
from terminal import tlv
from terminal.emv.reader import as_terminal_aid
from terminal.tlv import Tlv

PFI = b"CPV01"
MAX_APPLICATIONS = 2  # CPM Table 3.1: one Application Template, a second one optional
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


def _skip_reason(template: Tlv) -> str | None:
    """Why CPM §5.1.1.4 skips an application template: its ADF Name (4F) is missing or not
    5-16 bytes. None for a template that is used."""
    adf = next((c for c in template.children or () if c.tag == 0x4F), None)
    if adf is None:
        return "no ADF Name (4F)"
    if not 5 <= len(adf.value) <= 16:
        return f"bad length: ADF Name (4F) is {len(adf.value)} bytes, must be 5-16"
    return None


@dataclass(frozen=True, slots=True)
class Cpm:
    """A parsed consumer-presented code, bound to one of its application templates.

    ``chosen`` indexes :attr:`applications`: the template whose data a payment uses.
    """

    objects: tuple[Tlv, ...]
    payload: str
    chosen: int = 0

    @property
    def applications(self) -> list[Tlv]:
        """The usable application templates (with a 5-16 byte ADF Name), in code order."""
        return [o for o in self.objects if o.tag == 0x61 and _skip_reason(o) is None]

    @property
    def common(self) -> Tlv | None:
        return next((o for o in self.objects if o.tag == 0x62), None)

    @property
    def application(self) -> Tlv | None:
        """The template a payment uses (CPM §5.1.1.7)."""
        return next(iter(self.applications[self.chosen:]), None)

    def accepting(self, aids: Iterable[bytes]) -> Cpm | None:
        """This code bound to its first template whose AID one of ``aids`` (the terminal's
        ``[emv] aids``, the ``emv_aids`` read option) matches, or None when the terminal
        accepts none of them. The match is the card path's own
        (:meth:`terminal.emv.reader.TerminalAid.matches`, EMV Book 1 §12.3.1): an AID
        configured without ``*`` matches only the same AID, one with ``*`` (or a plain
        ``bytes``) any AID that starts with it."""
        accepted = [as_terminal_aid(aid) for aid in aids]
        for i, template in enumerate(self.applications):
            adf = template.find(0x4F)
            if adf is not None and any(aid.matches(adf.value) for aid in accepted):
                return dataclasses.replace(self, chosen=i)
        return None

    def value(self, tag: int) -> bytes | None:
        """``tag`` from the chosen application template, else from the common data."""
        for template in (self.application, self.common):
            hit = template.find(tag) if template is not None else None
            if hit is not None:
                return hit.value
        return None

    @property
    def aid(self) -> bytes:
        app = self.application
        found = app.find(0x4F) if app is not None else None
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


def _data_tags(template: Tlv) -> set[int]:
    """The data objects of a template, those of its transparent template included (63 is
    only ever in a template 61 and 64 in the 62, so neither makes a duplicate by itself)."""
    return {o.tag for o in tlv.walk(template.children or ())}


def _check(objs: tuple[Tlv, ...], text: str) -> Cpm:
    if not objs or objs[0].tag != 0x85:
        raise QRFormatError("order: the Payload Format Indicator (85) must come first")
    if objs[0].value != PFI:
        raise QRFormatError(f"bad value: Payload Format Indicator is {objs[0].value!r}, "
                            "not 'CPV01'")
    tags = [o.tag for o in objs]
    commons = [o for o in objs if o.tag == 0x62]
    if 0x61 not in tags:
        raise QRFormatError("missing mandatory: at least one Application Template (61)")
    if tags.count(0x61) > MAX_APPLICATIONS:
        raise QRFormatError(f"structure: {tags.count(0x61)} Application Templates (61), at "
                            f"most {MAX_APPLICATIONS} (CPM Table 3.1)")
    if len(commons) > 1:
        raise QRFormatError("duplicate tag: more than one Common Data Template (62)")
    if tags.count(0x85) > 1:
        raise QRFormatError("duplicate tag: more than one Payload Format Indicator (85)")
    if commons and 0x61 in tags[tags.index(0x62):]:
        raise QRFormatError("order: the Application Templates (61) come before the Common "
                            "Data Template (62) (CPM Table 3.1)")
    # numbered among all templates 61, so that a message names the one in the code
    apps = list(enumerate((o for o in objs if o.tag == 0x61), 1))
    used = [(i, app) for i, app in apps if _skip_reason(app) is None]
    if not used:
        reasons = "; ".join(f"template {i}: {_skip_reason(app)}" for i, app in apps)
        raise QRFormatError(f"missing mandatory: no Application Template (61) with an ADF "
                            f"Name (4F) of 5-16 bytes (CPM §5.1.1.4): {reasons}")
    for i, app in used:
        _check_template(app, f"application template {i}")
    common = commons[0] if commons else None
    if common is not None:
        _check_template(common, "common data template")
    common_tags = _data_tags(common) if common is not None else set()
    for i, app in used:
        own = _data_tags(app)
        both = sorted(own & common_tags)
        if both:
            raise QRFormatError(f"duplicate tag: {tlv.tag_bytes(both[0]).hex().upper()} is "
                                f"in application template {i} and in the common data "
                                "template (CPM §5.1.1.10)")
        if not (own | common_tags) & {0x5A, 0x57}:
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
