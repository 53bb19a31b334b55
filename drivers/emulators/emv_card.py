"""A payment card in software: an EMV application answering command APDUs.

Plug it into the virtual reader (``VirtualCard(uid=..., handler=EmvCard(...).handle)``) or
into any emulated reader (vpcd, nfcpy ``udp``) that forwards APDUs to a Python callable.

=========================  ===========================================================
answers                    SELECT PPSE ``2PAY.SYS.DDF01`` (contactless) or PSE
                           ``1PAY.SYS.DDF01`` + READ RECORD of its directory (contact),
                           SELECT AID (exact or partial, first and next occurrence, EMV
                           Book 1 §12.3.3) among several applications, GET PROCESSING
                           OPTIONS (format 2, tag 77, Book 3 §6.5.8), READ RECORD over its
                           AFL (Book 3 §6.5.11), GET DATA for ATC ``9F36`` and LATC ``9F13``
                           (Book 3 §6.5.7), GET RESPONSE when behaving as a T=0 card
behaves as T=0             (``t0=True``) case-4 commands answer ``61xx``; a case-2 command
                           with a wrong Le answers ``6Cxx`` (EMV Book 1 §9.3.1.1)
does not                   cryptograms (GENERATE AC answers ``6985``), offline data
                           authentication, PIN; secure messaging
=========================  ===========================================================

Nothing here raises for a malformed command: every input gets a status word, as a card would.

A card with several applications (a Korean check card with its domestic and international
ones, a phone wallet with several cards) is one :class:`EmvCard`, the chip, holding the
others added with :meth:`EmvCard.add_application`; each is an :class:`EmvCard` of its own
(PAN, expiry, label, ATC, records), selected by its AID.
"""

from __future__ import annotations

import calendar
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

PPSE = b"2PAY.SYS.DDF01"
PSE = b"1PAY.SYS.DDF01"

SW_OK = b"\x90\x00"
SW_WRONG_LENGTH = b"\x67\x00"
SW_CONDITIONS = b"\x69\x85"
SW_WRONG_DATA = b"\x6a\x80"
SW_FILE_NOT_FOUND = b"\x6a\x82"
SW_RECORD_NOT_FOUND = b"\x6a\x83"
SW_WRONG_P1P2 = b"\x6a\x86"
SW_DATA_NOT_FOUND = b"\x6a\x88"
SW_INS_NOT_SUPPORTED = b"\x6d\x00"
SW_CLA_NOT_SUPPORTED = b"\x6e\x00"

#: SFI of the PSE directory file (EMV Book 1 §12.2.2)
DIRECTORY_SFI = 1


def _tlv(tag: int, value: bytes) -> bytes:
    """One BER-TLV object (EMV Book 3 Annex B); definite lengths up to 65535."""
    tag_bytes = tag.to_bytes((tag.bit_length() + 7) // 8 or 1, "big")
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    elif n < 0x100:
        length = bytes([0x81, n])
    else:
        length = bytes([0x82]) + n.to_bytes(2, "big")
    return tag_bytes + length + value


def _dol_length(dol: bytes) -> int | None:
    """Total length a DOL asks for (Book 3 §5.4), or ``None`` if the DOL is malformed."""
    total, i = 0, 0
    while i < len(dol):
        first = dol[i]
        i += 1
        if first & 0x1F == 0x1F:
            while i < len(dol) and dol[i] & 0x80:
                i += 1
            i += 1
        if i >= len(dol):
            return None
        total += dol[i]
        i += 1
    return total


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """One application the card lists in its PPSE / PSE directory (tag 61)."""

    aid: bytes
    label: str
    priority: int = 1


@dataclass(frozen=True, slots=True)
class _Command:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    le: int | None  # None: no Le field; 256 for Le = 00


def _parse(apdu: bytes) -> _Command | None:
    """A short command APDU (ISO/IEC 7816-3 §12.1): cases 1-4, or None if malformed."""
    if len(apdu) < 4:
        return None
    cla, ins, p1, p2 = apdu[:4]
    body = apdu[4:]
    if not body:
        return _Command(cla, ins, p1, p2, b"", None)
    if len(body) == 1:
        return _Command(cla, ins, p1, p2, b"", body[0] or 256)
    lc = body[0]
    if lc == 0:
        return None  # extended length is not used by EMV cards
    if len(body) == 1 + lc:
        return _Command(cla, ins, p1, p2, body[1:], None)
    if len(body) == 2 + lc:
        return _Command(cla, ins, p1, p2, body[1 : 1 + lc], body[-1] or 256)
    return None


class EmvCard:
    """One EMV payment application on a contact or contactless card.

    ``expiry`` is YYMM (the card stores the last day of that month as 5F24, YYMMDD).
    ``pdol``, when given, is the PDOL (tag 9F38) the card asks for in its FCI; the GPO data
    must then be exactly as long as the PDOL says. Attributes that tests may change after
    construction: ``lcol`` / ``ucol`` (9F14 / 9F23, None leaves them off the card), ``latc``
    (9F13, None: GET DATA answers 6A88), ``aip``, ``priority`` (87 in the application's FCI),
    ``directory`` (what the PPSE / PSE lists: it may list applications the card cannot
    select, or leave out some it can), ``extra_records``.
    """

    def __init__(self, pan: str = "9410123456789012", expiry: str = "2812",
                 label: str = "LOCALPAY", aid: bytes = bytes.fromhex("D4100000030001"),
                 atc: int = 1, *, contact: bool = False, t0: bool = False,
                 pdol: bytes | None = None) -> None:
        if not pan.isdigit() or not 12 <= len(pan) <= 19:
            raise ValueError("a PAN is 12 to 19 digits")
        if len(expiry) != 4 or not expiry.isdigit() or not 1 <= int(expiry[2:]) <= 12:
            raise ValueError("expiry is YYMM")
        self.pan = pan
        self.expiry = expiry
        self.label = label
        self.aid = aid
        self.atc = atc
        self.contact = contact
        self.t0 = t0
        self.pdol = pdol
        self.aip = bytes.fromhex("0800" if contact else "0880")  # TRM to be performed
        self.lcol: int | None = 5
        self.ucol: int | None = 10
        self.latc: int | None = 0
        self.pan_sequence = 1
        self.priority = 1
        self.directory: list[DirectoryEntry] = [DirectoryEntry(aid, label, 1)]
        #: the chip's other applications, in the order the card finds them
        self.others: list[EmvCard] = []
        self.extra_records: dict[tuple[int, int], bytes] = {}
        #: the last GPO command data (tag 83 value), for tests to inspect
        self.gpo_data: bytes | None = None
        self._selected: str | None = None  # "ppse", "pse", "app"
        self._active: EmvCard = self  # the application selected, when _selected is "app"
        self._pending = b""  # T=0: response data waiting for GET RESPONSE

    def add_application(self, app: EmvCard, priority: int | None = None, *,
                        listed: bool = True) -> EmvCard:
        """Put another application on this chip; ``listed`` adds it to the PPSE / PSE
        directory with ``priority`` (87: low nibble 1 highest, b8 asks for confirmation; the
        application's own ``priority`` when None). Returns ``app``."""
        self.others.append(app)
        if priority is not None:
            app.priority = priority
        if listed:
            self.directory.append(DirectoryEntry(app.aid, app.label, app.priority))
        return app

    @property
    def applications(self) -> list[EmvCard]:
        return [self, *self.others]

    # -- the card's files ------------------------------------------------------------------

    @property
    def expiry_date(self) -> bytes:
        yy, mm = int(self.expiry[:2]), int(self.expiry[2:])
        last_day = calendar.monthrange(2000 + yy, mm)[1]
        return bytes.fromhex(f"{yy:02d}{mm:02d}{last_day:02d}")

    def _pan_bcd(self) -> bytes:
        digits = self.pan + ("F" if len(self.pan) % 2 else "")
        return bytes.fromhex(digits)

    def _track2(self) -> bytes:
        # Track 2 equivalent data (tag 57, Book 3 Annex A): PAN 'D' YYMM service code
        # discretionary data, padded with F to whole bytes.
        text = f"{self.pan}D{self.expiry}20100000"
        if len(text) % 2:
            text += "F"
        return bytes.fromhex(text)

    def afl(self) -> bytes:
        """AFL (tag 94): SFI 1 record 1 (track 2), SFI 2 records 1-2 (PAN, limits)."""
        return bytes([1 << 3, 1, 1, 0, 2 << 3, 1, 2, 1])

    def records(self) -> dict[tuple[int, int], bytes]:
        """(SFI, record number) -> record template 70."""
        rec_2_2 = b"".join([
            _tlv(0x5F28, b"\x04\x10"),  # issuer country: Korea
            _tlv(0x9F07, b"\xff\x00"),
            _tlv(0x9F14, bytes([self.lcol])) if self.lcol is not None else b"",
            _tlv(0x9F23, bytes([self.ucol])) if self.ucol is not None else b"",
            _tlv(0x9F42, b"\x04\x10"),  # application currency code 410 (KRW)
        ])
        recs = {
            (1, 1): _tlv(0x70, _tlv(0x57, self._track2()) + _tlv(0x5F20, b"LOCALPAY/CARD")),
            (2, 1): _tlv(0x70, _tlv(0x5A, self._pan_bcd()) + _tlv(0x5F24, self.expiry_date)
                         + _tlv(0x5F25, b"\x24\x01\x01")
                         + _tlv(0x5F34, bytes([self.pan_sequence]))),
            (2, 2): _tlv(0x70, rec_2_2),
        }
        recs.update(self.extra_records)
        return recs

    def _directory_entries(self) -> bytes:
        out = b""
        for app in self.directory:
            out += _tlv(0x61, _tlv(0x4F, app.aid) + _tlv(0x50, app.label.encode("ascii"))
                        + _tlv(0x87, bytes([app.priority])))
        return out

    def _fci_ppse(self) -> bytes:
        return _tlv(0x6F, _tlv(0x84, PPSE) + _tlv(0xA5, _tlv(0xBF0C, self._directory_entries())))

    def _fci_pse(self) -> bytes:
        return _tlv(0x6F, _tlv(0x84, PSE) + _tlv(0xA5, _tlv(0x88, bytes([DIRECTORY_SFI]))
                                                  + _tlv(0x5F2D, b"koen")))

    def _fci_app(self) -> bytes:
        prop = _tlv(0x50, self.label.encode("ascii")) + _tlv(0x87, bytes([self.priority]))
        if self.pdol is not None:
            prop += _tlv(0x9F38, self.pdol)
        prop += _tlv(0x5F2D, b"koen")
        return _tlv(0x6F, _tlv(0x84, self.aid) + _tlv(0xA5, prop))

    # -- APDU handling ---------------------------------------------------------------------

    def handle(self, apdu: bytes) -> bytes:
        """Answer one command APDU with response data followed by SW1 SW2."""
        cmd = _parse(apdu)
        if cmd is None:
            return SW_WRONG_LENGTH
        if cmd.cla == 0x00 and cmd.ins == 0xC0:
            return self._get_response(cmd)
        self._pending = b""
        case4 = bool(cmd.data) or cmd.ins == 0xA8
        data, sw = self._dispatch(cmd)
        if sw != SW_OK:
            return sw
        if not self.t0:
            return data + sw
        if case4:
            # T=0 cannot send data back on a command that carried data: tell the reader
            # how much is waiting, for GET RESPONSE (ISO/IEC 7816-4 §5.1.3).
            self._pending = data
            return bytes([0x61, len(data) & 0xFF]) if data else SW_OK
        if cmd.le is not None and cmd.le != len(data) and len(data) < 256:
            return bytes([0x6C, len(data)])
        return data + sw

    def _get_response(self, cmd: _Command) -> bytes:
        if not self.t0 or not self._pending:
            return SW_CONDITIONS
        if cmd.p1 or cmd.p2:
            return SW_WRONG_P1P2
        le = cmd.le if cmd.le is not None else 256
        if le > len(self._pending) and le != 256:
            return bytes([0x6C, len(self._pending)])
        chunk, self._pending = self._pending[:le], self._pending[le:]
        if self._pending:
            return chunk + bytes([0x61, min(len(self._pending), 256) & 0xFF])
        return chunk + SW_OK

    def _dispatch(self, cmd: _Command) -> tuple[bytes, bytes]:
        if cmd.ins == 0xA4 and cmd.cla == 0x00:
            return self._select(cmd)
        if cmd.ins == 0xB2 and cmd.cla == 0x00:
            return self._read_record(cmd)
        if cmd.ins == 0xA8 and cmd.cla == 0x80:
            return self._gpo(cmd)
        if cmd.ins == 0xCA and cmd.cla == 0x80:
            return self._get_data(cmd)
        if cmd.ins == 0xAE and cmd.cla == 0x80:
            return b"", SW_CONDITIONS
        if cmd.cla not in (0x00, 0x80):
            return b"", SW_CLA_NOT_SUPPORTED
        return b"", SW_INS_NOT_SUPPORTED

    def _select(self, cmd: _Command) -> tuple[bytes, bytes]:
        if cmd.p1 != 0x04 or cmd.p2 not in (0x00, 0x02):
            return b"", SW_WRONG_P1P2
        name = cmd.data
        if name == PPSE:
            if self.contact:
                self._selected = None
                return b"", SW_FILE_NOT_FOUND
            self._selected = "ppse"
            return self._fci_ppse(), SW_OK
        if name == PSE:
            if not self.contact:
                self._selected = None
                return b"", SW_FILE_NOT_FOUND
            self._selected = "pse"
            return self._fci_pse(), SW_OK
        # partial selection: a shorter name selects the first application it starts, P2=02
        # the next one after the one selected (Book 1 §12.3.3, ISO/IEC 7816-4 §7.1.1)
        apps = self.applications
        start = 0
        if cmd.p2 == 0x02 and self._selected == "app" and self._active.aid.startswith(name):
            start = apps.index(self._active) + 1
        for app in apps[start:] if len(name) >= 5 else ():
            if app.aid.startswith(name):
                self._selected, self._active = "app", app
                return app._fci_app(), SW_OK
        self._selected, self._active = None, self
        return b"", SW_FILE_NOT_FOUND

    def _read_record(self, cmd: _Command) -> tuple[bytes, bytes]:
        if cmd.p2 & 0x07 != 0x04 or cmd.p1 == 0:
            return b"", SW_WRONG_P1P2
        sfi, number = cmd.p2 >> 3, cmd.p1
        if self._selected == "pse" and sfi == DIRECTORY_SFI:
            if number == 1:
                return _tlv(0x70, self._directory_entries()), SW_OK
            return b"", SW_RECORD_NOT_FOUND
        if self._selected != "app":
            return b"", SW_CONDITIONS
        record = self._active.records().get((sfi, number))
        if record is None:
            return b"", SW_RECORD_NOT_FOUND
        return record, SW_OK

    def _gpo(self, cmd: _Command) -> tuple[bytes, bytes]:
        if self._selected != "app" or cmd.p1 or cmd.p2:
            return b"", SW_CONDITIONS if self._selected != "app" else SW_WRONG_P1P2
        return self._active._gpo_app(cmd.data)

    def _gpo_app(self, data: bytes) -> tuple[bytes, bytes]:
        if len(data) < 2 or data[0] != 0x83 or data[1] != len(data) - 2:
            return b"", SW_WRONG_DATA
        expected = _dol_length(self.pdol) if self.pdol is not None else 0
        if expected is None or len(data) - 2 != expected:
            return b"", SW_WRONG_LENGTH
        if self.atc >= 0xFFFF:
            return b"", SW_CONDITIONS  # the ATC must never wrap (Book 3 §7.3)
        self.atc += 1
        self.gpo_data = data[2:]
        body = (_tlv(0x82, self.aip) + _tlv(0x94, self.afl())
                + _tlv(0x9F36, self.atc.to_bytes(2, "big")))
        return _tlv(0x77, body), SW_OK

    def _get_data(self, cmd: _Command) -> tuple[bytes, bytes]:
        if self._active is not self:
            return self._active._get_data(cmd)
        tag = (cmd.p1 << 8) | cmd.p2
        if tag == 0x9F36:
            return _tlv(0x9F36, self.atc.to_bytes(2, "big")), SW_OK
        if tag == 0x9F13 and self.latc is not None:
            return _tlv(0x9F13, self.latc.to_bytes(2, "big")), SW_OK
        return b"", SW_DATA_NOT_FOUND

    def __repr__(self) -> str:
        masked = f"{self.pan[:6]}…{self.pan[-4:]}"
        return f"<EmvCard {masked} aid={self.aid.hex().upper()} atc={self.atc}>"
