"""Reading an EMV card: application selection, GET PROCESSING OPTIONS, READ RECORD.

EMV 4.3 Book 1 §12 (application selection) and Book 3 §10.1-10.2 (initiate application
processing, read application data):

1. Candidate list (Book 1 §12.3). Contactless: SELECT the PPSE ``2PAY.SYS.DDF01`` and take
   the directory entries (tag 61 in BF0C) whose AID the terminal supports. Contact: SELECT
   the PSE ``1PAY.SYS.DDF01`` and READ RECORD its directory SFI (tag 88) from record 1 until
   ``6A83``. Without a directory, or with nothing usable in it, the list of AIDs (§12.3.3):
   SELECT each terminal AID; a DF name equal to it is a candidate, a longer one that starts
   with it is one when the terminal allows partial selection for that AID (its Application
   Selection Indicator, :class:`TerminalAid`), and SELECT next occurrence (P2=02) goes on
   through the card's other applications under the same name.
2. Choose by Application Priority Indicator (87, low nibble 1 = highest, 0/absent =
   lowest); an application that asks for cardholder confirmation (87 b8) is left out, since
   validators and tills here cannot ask (Book 1 §12.4). SELECT it; if it fails, drop it and
   take the next.
3. GPO with the PDOL (9F38) filled from terminal data; the response is format 1 (80: AIP,
   AFL) or format 2 (77 with 82 and 94).
4. READ RECORD over the AFL; records of SFI 1-10 must be template 70; a primitive data
   object seen twice ends the transaction (Book 3 §7.5).

The PAN lives only in the :class:`CardData` returned, in memory, for the caller to token
and drop. Nothing here logs it or puts it in an error message.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from firmware_cfg.config import EmvSection
from localpay.errors import APDUError, TLVError
from terminal import tlv
from terminal.emv import dol
from terminal.transmission import Response, Transmission, describe

log = logging.getLogger(__name__)

PPSE = b"2PAY.SYS.DDF01"
PSE = b"1PAY.SYS.DDF01"

#: most SELECT next occurrence rounds under one terminal AID; a card that keeps answering is
#: broken, and a real one holds a handful of applications
MAX_OCCURRENCES = 16


class NoApplicationError(APDUError):
    """The card holds no application this terminal accepts (it may hold others)."""


class TerminalAid(bytes):
    """An AID of the terminal's list with its Application Selection Indicator (Book 1
    §12.3.1): ``partial`` lets it match a card AID that is longer and starts with it.

    It is ``bytes`` because ``emv_aids`` is also read as a plain list of AID prefixes (the CPM
    QR application does): a plain ``bytes`` entry there counts as partial, as it always did.
    """

    partial: bool

    def __new__(cls, aid: bytes, partial: bool = True) -> TerminalAid:
        self = super().__new__(cls, aid)
        self.partial = partial
        return self

    def matches(self, card_aid: bytes) -> bool:
        return card_aid == self or (self.partial and card_aid.startswith(self))

    def __repr__(self) -> str:
        return f"TerminalAid({self.hex().upper()}{'*' if self.partial else ''})"


def terminal_aids(section: EmvSection) -> tuple[TerminalAid, ...]:
    """The config's ``[emv] aids`` as the ``emv_aids`` read option."""
    return tuple(TerminalAid(aid, partial) for aid, partial in section.entries())


def as_terminal_aid(aid: bytes) -> TerminalAid:
    return aid if isinstance(aid, TerminalAid) else TerminalAid(aid, True)


#: the config's defaults (firmware_cfg.config.DEFAULT_EMV_AIDS, sources named there): the
#: local-currency scheme's own application first, then Korean domestic and international ones
DEFAULT_AIDS: tuple[TerminalAid, ...] = terminal_aids(EmvSection())


@dataclass(frozen=True, slots=True)
class Candidate:
    aid: bytes
    label: str = ""
    priority: int = 0  # 87 low nibble; 0 = none given
    confirm: bool = False  # 87 b8: cardholder confirmation required

    @property
    def rank(self) -> int:
        return self.priority if 1 <= self.priority <= 15 else 16


@dataclass(slots=True)
class CardData:
    """What the card gave. ``pan`` is the full PAN: in memory only, token it and drop it."""

    aid: bytes
    label: str
    pan: str = field(repr=False)
    pan_sequence: int | None
    expiry: dt.date | None
    effective: dt.date | None
    atc: int | None
    latc: int | None
    lcol: int | None
    ucol: int | None
    iac_denial: bytes | None
    iac_default: bytes | None
    icc_data_missing: bool
    exchanges: int = 0


def terminal_data(amount: int, now: dt.datetime, *, country: int = 410, currency: int = 410,
                  terminal_type: int = 0x23, contactless: bool = True) -> dict[int, bytes]:
    """Values the terminal gives to DOLs (Book 3 Annex A), amounts in won (exponent 0)."""
    return {
        0x9F02: dol.bcd(amount, 6),
        0x9F03: dol.bcd(0, 6),
        0x9F1A: dol.bcd(country, 2),
        0x5F2A: dol.bcd(currency, 2),
        0x5F36: b"\x00",
        0x9A: bytes.fromhex(now.strftime("%y%m%d")),
        0x9F21: bytes.fromhex(now.strftime("%H%M%S")),
        0x9C: b"\x00",
        0x9F37: secrets.token_bytes(4),
        0x9F35: bytes([terminal_type]),
        # offline-only: Terminal Capabilities without online PIN; TTQ: EMV mode, offline only
        0x9F33: bytes.fromhex("E00800"),
        0x9F66: bytes.fromhex("28000000") if contactless else b"",
        0x95: bytes(5),
    }


def _bcd_digits(raw: bytes) -> str:
    return raw.hex().upper()


def _date(raw: bytes | None, what: str) -> dt.date | None:
    if raw is None:
        return None
    text = raw.hex()
    if len(raw) != 3 or not text.isdigit():
        raise APDUError(f"{what} is not a YYMMDD date")
    try:
        return dt.date(2000 + int(text[:2]), int(text[2:4]), int(text[4:]))
    except ValueError as err:
        raise APDUError(f"{what} is not a valid date") from err


def _pan_from(records: Mapping[int, bytes]) -> tuple[str, dt.date | None]:
    """PAN from 5A, else from track 2 (57); the expiry from track 2 as a fallback."""
    track2 = records.get(0x57)
    t2_pan, t2_expiry = "", None
    if track2 is not None:
        digits = _bcd_digits(track2).rstrip("F")
        sep = digits.find("D")
        if sep < 0:
            raise APDUError("track 2 equivalent data has no separator")
        t2_pan = digits[:sep]
        yymm = digits[sep + 1 : sep + 5]
        if len(yymm) == 4 and yymm.isdigit() and 1 <= int(yymm[2:]) <= 12:
            year, month = 2000 + int(yymm[:2]), int(yymm[2:])
            next_month = dt.date(year + month // 12, month % 12 + 1, 1)
            t2_expiry = next_month - dt.timedelta(days=1)
    raw_pan = records.get(0x5A)
    pan = _bcd_digits(raw_pan).rstrip("F") if raw_pan is not None else t2_pan
    if not pan.isdigit() or not 12 <= len(pan) <= 19:
        raise APDUError("the card gave no valid PAN (5A or 57)")
    return pan, t2_expiry


class EmvReader:
    """One read of one card over a :class:`Transmission`."""

    def __init__(self, tx: Transmission, *, contactless: bool,
                 aids: Iterable[bytes] = DEFAULT_AIDS) -> None:
        self.tx = tx
        self.contactless = contactless
        self.aids = tuple(as_terminal_aid(a) for a in aids)
        #: what the card's directory listed, once :meth:`candidates` has looked
        self.listed: list[Candidate] = []

    # -- step 1 and 2: application selection -----------------------------------------------

    def accepts(self, card_aid: bytes) -> bool:
        """Whether a card AID matches the terminal's list (Book 1 §12.3.1)."""
        return any(t.matches(card_aid) for t in self.aids)

    @staticmethod
    def _entries(objs: Iterable[tlv.Tlv]) -> list[Candidate]:
        out = []
        for obj in tlv.walk(objs):
            if obj.tag != 0x61 or obj.children is None:
                continue
            fields = {c.tag: c.value for c in obj.children}
            aid = fields.get(0x4F)
            if aid is None or not 5 <= len(aid) <= 16:
                continue
            prio = fields.get(0x87, b"\x00")
            out.append(Candidate(
                aid, fields.get(0x50, b"").decode("ascii", "replace"),
                prio[0] & 0x0F if prio else 0, bool(prio and prio[0] & 0x80),
            ))
        return out

    def directory(self) -> list[Candidate]:
        """Every application the card's PPSE / PSE lists, supported or not (Book 1 §12.3.2);
        [] when it has no directory."""
        # a contactless card should have a PPSE; some dual-interface cards only have a PSE
        for name in (PPSE, PSE) if self.contactless else (PSE,):
            rsp = self.tx.select(name)
            if not rsp.ok:
                log.debug("no %s directory: %s", name.decode(), describe(rsp.sw))
                continue
            fci = tlv.decode(rsp.data)
            if name == PPSE:
                return self._entries(fci)
            return self._pse_records(fci)
        return []

    def _pse_records(self, fci: list[tlv.Tlv]) -> list[Candidate]:
        sfi_obj = tlv.find(fci, 0x88)
        if sfi_obj is None or len(sfi_obj.value) != 1 or not 1 <= sfi_obj.value[0] <= 10:
            raise APDUError("PSE FCI has no valid directory SFI (88)")
        found: list[Candidate] = []
        for number in range(1, 256):
            rec = self.tx.read_record(sfi_obj.value[0], number)
            if rec.sw == 0x6A83:
                break
            rec.check(f"READ RECORD of PSE directory record {number}")
            found += self._entries(tlv.decode(rec.data, padding=True))
        return found

    @staticmethod
    def _from_fci(name: bytes, fci: tlv.Tlv) -> Candidate:
        label, prio = fci.find(0x50), fci.find(0x87)
        p = prio.value[0] if prio is not None and len(prio.value) == 1 else 0
        return Candidate(name, label.value.decode("ascii", "replace") if label else "",
                         p & 0x0F, bool(p & 0x80))

    def list_of_aids(self, aids: Iterable[TerminalAid] | None = None,
                     *, every: bool = False) -> list[Candidate]:
        """Book 1 §12.3.3: SELECT each terminal AID, then its next occurrences while the card
        answers with a longer DF name. ``every`` keeps the card's applications that do not
        match (for ``localpay read``); a payment keeps only those that do."""
        found: dict[bytes, Candidate] = {}
        for t in self.aids if aids is None else aids:
            rsp = self.tx.select(t)
            for _ in range(MAX_OCCURRENCES):
                if rsp.sw == 0x6A81:
                    raise APDUError(f"SELECT {t.hex().upper()}: card answered "
                                    f"{describe(rsp.sw)}")
                if not rsp.ok and rsp.sw != 0x6283:  # 6283: that application is blocked
                    break
                fci = tlv.decode_single(rsp.data, 0x6F)
                name_obj = fci.find(0x84)
                name = name_obj.value if name_obj is not None else bytes(t)
                if not name.startswith(t):
                    break  # an answer for another name: nothing more to find under this one
                if rsp.ok and (every or t.matches(name)) and name not in found:
                    found[name] = self._from_fci(name, fci)
                if name == t:
                    break
                rsp = self.tx.select(t, next_occurrence=True)
        return list(found.values())

    def candidates(self) -> list[Candidate]:
        """The candidate list (Book 1 §12.3): the directory's entries this terminal supports,
        or, when there are none, what the list of AIDs finds."""
        self.listed = self.directory()
        found = [c for c in self.listed if self.accepts(c.aid)]
        return found or self.list_of_aids()

    def select_final(self, candidates: list[Candidate]) -> tuple[Candidate, tlv.Tlv]:
        """Book 1 §12.4: the highest priority first; a failed SELECT drops that one."""
        usable = [c for c in candidates if not c.confirm]
        usable.sort(key=lambda c: c.rank)  # stable: card order breaks ties (Book 1 §12.4)
        for cand in usable:
            rsp = self.tx.select(cand.aid)
            if not rsp.ok:
                log.debug("SELECT %s: %s", cand.aid.hex(), describe(rsp.sw))
                continue
            fci = tlv.decode_single(rsp.data, 0x6F)
            name = fci.find(0x84)
            if name is not None and name.value != cand.aid:
                log.debug("SELECT %s answered for %s", cand.aid.hex(), name.value.hex())
                continue
            return cand, fci
        listed = ", ".join(f"{c.aid.hex().upper()} {c.label}".strip()
                           for c in self.listed)
        raise NoApplicationError("no application on the card that this terminal accepts"
                                 + (f" (the card lists {listed})" if listed else ""))

    # -- steps 3 and 4 ---------------------------------------------------------------------

    def read(self, terminal_values: Mapping[int, bytes]) -> CardData:
        try:
            candidate, fci = self.select_final(self.candidates())
            return self.read_selected(candidate, fci, terminal_values)
        except TLVError as err:
            raise APDUError(f"malformed card data: {err}") from err

    def read_selected(self, candidate: Candidate, fci: tlv.Tlv,
                      terminal_values: Mapping[int, bytes]) -> CardData:
        """GPO and READ RECORD of the application just selected (``fci`` is its FCI)."""
        try:
            return self._read_selected(candidate, fci, terminal_values)
        except TLVError as err:
            raise APDUError(f"malformed card data: {err}") from err

    def _read_selected(self, candidate: Candidate, fci: tlv.Tlv,
                       terminal_values: Mapping[int, bytes]) -> CardData:
        pdol_obj = fci.find(0x9F38)
        pdol_data = dol.build(pdol_obj.value, terminal_values) if pdol_obj else b""
        gpo = self.tx.get_processing_options(pdol_data)
        gpo_data = gpo.check("GET PROCESSING OPTIONS")
        aip, afl, gpo_objs = self._gpo(gpo_data)
        found: dict[int, bytes] = {}
        for obj in gpo_objs:
            found.setdefault(obj.tag, obj.value)
        for sfi, first, last in self._afl(afl):
            for number in range(first, last + 1):
                rec = self.tx.read_record(sfi, number)
                self._collect(rec, sfi, number, found)
        pan, t2_expiry = _pan_from(found)
        expiry = _date(found.get(0x5F24), "application expiration date (5F24)") or t2_expiry
        missing = 0x5F24 not in found or 0x5A not in found
        atc = _u16(found.get(0x9F36))
        latc = None
        lcol, ucol = _u8(found.get(0x9F14)), _u8(found.get(0x9F23))
        if lcol is not None and ucol is not None:
            atc = self._get_data_u16(0x9F36) if atc is None else atc
            latc = self._get_data_u16(0x9F13)
        elif atc is None:
            atc = self._get_data_u16(0x9F36)
        label = found.get(0x50)
        psn = found.get(0x5F34)
        del aip  # the AIP says what the card supports; this terminal does neither ODA nor CVM
        return CardData(
            aid=candidate.aid,
            label=label.decode("ascii", "replace") if label else candidate.label,
            pan=pan,
            pan_sequence=psn[0] if psn and len(psn) == 1 else None,
            expiry=expiry,
            effective=_date(found.get(0x5F25), "application effective date (5F25)"),
            atc=atc, latc=latc, lcol=lcol, ucol=ucol,
            iac_denial=found.get(0x9F0E), iac_default=found.get(0x9F0D),
            icc_data_missing=missing, exchanges=self.tx.exchanges,
        )

    @staticmethod
    def _gpo(data: bytes) -> tuple[bytes, bytes, list[tlv.Tlv]]:
        obj = tlv.decode_single(data)
        if obj.tag == 0x80:  # format 1: AIP (2) then AFL
            if len(obj.value) < 2:
                raise APDUError("GPO format 1 response is too short")
            return obj.value[:2], obj.value[2:], []
        if obj.tag == 0x77 and obj.children is not None:
            aip, afl = obj.find(0x82), obj.find(0x94)
            if aip is None or afl is None or len(aip.value) != 2:
                raise APDUError("GPO format 2 response lacks AIP (82) or AFL (94)")
            rest = [c for c in obj.children if c.tag not in (0x82, 0x94)]
            return aip.value, afl.value, rest
        raise APDUError(f"GPO response template {obj.tag:X} is neither 80 nor 77")

    @staticmethod
    def _afl(afl: bytes) -> list[tuple[int, int, int]]:
        """AFL entries (SFI, first, last), checked as Book 3 §10.2 asks."""
        if not afl or len(afl) % 4:
            raise APDUError(f"AFL of {len(afl)} bytes is not a non-empty multiple of 4")
        out = []
        for i in range(0, len(afl), 4):
            sfi, first, last, oda = afl[i] >> 3, afl[i + 1], afl[i + 2], afl[i + 3]
            if afl[i] & 0x07 or not 1 <= sfi <= 30 or first == 0 or last < first or \
                    oda > last - first + 1:
                raise APDUError(f"AFL entry {afl[i:i + 4].hex()} is invalid")
            out.append((sfi, first, last))
        return out

    @staticmethod
    def _collect(rec: Response, sfi: int, number: int, found: dict[int, bytes]) -> None:
        data = rec.check(f"READ RECORD SFI {sfi} record {number}")
        objs = tlv.decode(data)
        if sfi <= 10 and (len(objs) != 1 or objs[0].tag != 0x70 or objs[0].children is None):
            raise APDUError(f"record {number} of SFI {sfi} is not a 70 template")
        for obj in tlv.walk(objs):
            if obj.children is not None:
                continue
            if obj.tag in found:
                raise APDUError(f"data object {obj.tag:X} appears twice in the card's records")
            found[obj.tag] = obj.value

    def _get_data_u16(self, tag: int) -> int | None:
        rsp = self.tx.get_data(tag)
        if not rsp.ok:
            return None
        try:
            obj = tlv.decode_single(rsp.data, tag)
        except TLVError:
            return None
        return _u16(obj.value)


def _u16(raw: bytes | None) -> int | None:
    return int.from_bytes(raw, "big") if raw is not None and len(raw) == 2 else None


def _u8(raw: bytes | None) -> int | None:
    return raw[0] if raw is not None and len(raw) == 1 else None
