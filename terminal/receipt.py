"""Receipts: what a paper receipt says, and the e-receipt a phone keeps and anyone verifies.

A receipt is made from one committed ledger entry (a till's ``payment``, ``refund`` or
``void``) and the config's ``[merchant]`` facts, so a reprint years later says what the first
print said. The facts only the terminal knew at payment time are signed into a till's payment
entry too (:func:`signed_facts`): the card application's AID (``aid``) and label (``lbl``),
the points the purchase earns as shown (``pts``) and the balance left (``bal``), each only
when known. So an e-receipt proves them and a reprint needs nothing but the ledger. Entries
written before those keys existed have them in :class:`ReceiptJournal` (``receipts.jsonl``
beside the ledger, unsigned); their reprint repeats them from there, or leaves those lines
out rather than invent them. A validator's tap has no receipt and signs none of them: its
entry stays as small as the tap path wants it.

What a receipt carries (EMV Book 4 §11.4 "Transaction receipt", as far as it applies
offline): merchant name and business registration number, terminal id, date and time,
amount, the pockets that paid, the card's AID, label and PAN truncated to first 6 / last 4,
the approval reference (ledger seq and the first 4 bytes of the entry hash), points earned
and balance left, and a cash receipt's purpose and masked identity when one was requested
(a ``cash_receipt`` entry, :mod:`terminal.cash_receipt`). Lines are bilingual (Korean
first, then English), so one roll serves both.

The e-receipt (``LPR1:``) is the ledger entry itself: its canonical bytes
(:mod:`localpay.encoding`), the terminal's Ed25519 signature over them, nothing else::

    "LPR1:" base64url-without-padding( u16 length ‖ entry canonical bytes ‖ signature (64) )

Verifying an e-receipt is verifying the ledger entry with the terminal's public key, the
same check ``localpay ledger verify`` and the central audit make; a receipt cannot say
anything its entry does not. The terminal id is inside the entry bytes.

:class:`ReceiptDesk` also prints the closing's Z report (:meth:`ReceiptDesk.issue_z`, from
its ``z_report`` entry through :mod:`terminal.zreport`), with the same rule for a fault.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import struct
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from firmware_cfg.config import Config
from localpay.errors import EntryEncodingError, PrinterError, QRFormatError
from offline_ledger import Entry, EntryFields, decode, encode, entry_hash
from terminal import zreport
from terminal.cash_receipt import Request, find

log = logging.getLogger(__name__)

PREFIX = "LPR1:"
#: columns of Font A on an 80 mm roll at 512 dots; a Hangul syllable takes two
WIDTH = 42
ZONE = "Asia/Seoul"
RECEIPT_KINDS = ("payment", "refund", "void")
_TITLES = {"payment": ("결제", "Payment"), "refund": ("환불", "Refund"),
           "void": ("취소", "Void")}
_POCKETS = {"cash": ("현금", "Cash"), "points": ("포인트", "Points")}
#: a run of 11+ digits is a card number that must not be printed whole (PCI DSS 3.3)
_LONG_DIGITS = re.compile(r"[0-9]{11,}")
_SIG = 64


#: the detail keys of the facts a till signs into its payment entry for the receipt
AID, LABEL, POINTS, BALANCE = "aid", "lbl", "pts", "bal"
_FACTS = (AID, LABEL, POINTS, BALANCE)


@dataclass(frozen=True)
class Shown:
    """What the terminal showed at payment time: the card's AID and label, points earned,
    balance left (signed into the entry since those keys exist, :func:`signed_facts`)."""

    aid: str = ""
    label: str = ""
    points: int | None = None
    balance: int | None = None


def signed_facts(aid: str, label: str, points: int | None,
                 balance: int | None) -> dict[str, Any]:
    """The detail keys a till's payment entry signs for its receipt: only the facts known,
    so a card without an AID or a till without rules or balances adds no bytes for them."""
    out: dict[str, Any] = {}
    if aid:
        out[AID] = aid
    if label:
        out[LABEL] = label
    if points is not None:
        out[POINTS] = points
    if balance is not None:
        out[BALANCE] = balance
    return out


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def facts_of(detail: Mapping[str, Any]) -> Shown | None:
    """The receipt facts signed into an entry's ``detail``; None when it carries none (an
    entry written before they were signed, whose facts are in the journal)."""
    if not any(key in detail for key in _FACTS):
        return None
    return Shown(aid=str(detail.get(AID, "")), label=str(detail.get(LABEL, "")),
                 points=_whole(detail.get(POINTS)), balance=_whole(detail.get(BALANCE)))


@dataclass(frozen=True)
class Receipt:
    """One receipt's facts, all from the entry and the config, except :attr:`shown` for an
    entry written before it signed them (then from the journal)."""

    kind: str
    seq: int
    terminal_id: str
    merchant_id: str
    merchant_name: str
    brn: str
    wall_ms: int
    amount: int
    card: str
    scheme: str
    split: tuple[tuple[str, int], ...]
    ref_seq: int
    #: ledger seq and the first 4 bytes of the entry hash: unique per terminal and checkable
    approval: str
    clock: str = ""
    shown: Shown = field(default_factory=Shown)
    #: :attr:`shown` is from the signed entry (else from the journal, or nothing)
    signed: bool = False
    #: the cash receipt requested for this payment, as printed (purpose, masked identity);
    #: "": none
    cash_receipt: str = ""


def truncate_pan(text: str) -> str:
    """Any long digit run in ``text`` as first 6 / last 4 (PCI DSS 3.3, EMV Book 4 §11.4):
    the entry holds only the display form already, this is the second lock."""
    return _LONG_DIGITS.sub(lambda m: m[0][:6] + "*" * (len(m[0]) - 10) + m[0][-4:], text)


def approval_ref(entry: Entry) -> str:
    return f"{entry.seq}-{entry.entry_hash[:4].hex().upper()}"


def from_entry(entry: Entry, config: Config, shown: Shown | None = None,
               cash_receipt: Request | None = None) -> Receipt:
    """The receipt of ``entry``; :class:`~localpay.errors.EntryEncodingError` if the entry
    is not a till's payment, refund or void (a bus tap has no receipt). ``cash_receipt``
    is the request recorded for the payment (:func:`terminal.cash_receipt.find`)."""
    f = entry.fields
    if f.kind not in RECEIPT_KINDS:
        raise EntryEncodingError(f"entry {f.seq} is a {f.kind}: only {RECEIPT_KINDS} have "
                                 f"receipts")
    try:
        detail: dict[str, Any] = json.loads(f.detail)
    except ValueError as err:
        raise EntryEncodingError(f"entry {f.seq}: detail is not JSON: {err}") from err
    split = tuple((str(p), int(w)) for p, w in detail.get("split", ()))
    # the entry's own facts win: the journal's are only for entries written before them
    signed = facts_of(detail)
    m, t = config.merchant, config.terminal
    brn = m.brn.replace("-", "")
    return Receipt(
        kind=f.kind, seq=f.seq, terminal_id=f.terminal_id,
        merchant_id=m.id or f.place, merchant_name=m.name or t.merchant_name,
        brn=f"{brn[:3]}-{brn[3:5]}-{brn[5:]}" if len(brn) == 10 else "",
        wall_ms=f.wall_ms, amount=f.amount, card=truncate_pan(str(detail.get("card", ""))),
        scheme=str(detail.get("scheme", "")), split=split, ref_seq=f.ref_seq,
        approval=approval_ref(entry), clock=str(detail.get("clock", "")),
        shown=signed or shown or Shown(), signed=signed is not None,
        cash_receipt=cash_receipt.line if cash_receipt is not None and f.kind == "payment"
        and cash_receipt.payment_seq == f.seq else "")


def won(amount: int) -> str:
    return f"{amount:,}원"


def width(text: str) -> int:
    """Printed columns: East Asian wide characters (Hangul) take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def row(left: str, right: str, cols: int = WIDTH) -> str:
    """``left`` and ``right`` on one line, ``right`` flush with the margin."""
    gap = cols - width(left) - width(right)
    return f"{left}{' ' * max(1, gap)}{right}"


def when(wall_ms: int, zone: str = ZONE) -> str:
    """Date and time as printed: the shop's own zone, named."""
    at = dt.datetime.fromtimestamp(wall_ms / 1000, ZoneInfo(zone))
    return f"{at:%Y-%m-%d %H:%M:%S} {at.tzname()}"


def lines(receipt: Receipt, *, zone: str = ZONE, cols: int = WIDTH) -> list[str]:
    """The receipt as printed, line by line, Korean then English on each line."""
    r, s = receipt, receipt.shown
    rule = "-" * cols
    ko, en = _TITLES[r.kind]
    out = [r.merchant_name, f"가맹점 Merchant {r.merchant_id}"]
    if r.brn:
        out.append(f"사업자번호 BRN {r.brn}")
    out += [f"단말기 Terminal {r.terminal_id}",
            f"일시 Date {when(r.wall_ms, zone)}"]
    if r.clock == "unknown":
        # the terminal had no trusted time: the printed date may be wrong, and says so
        out.append("(시각 미확인 clock unverified)")
    out += [rule, row(f"{ko} {en}", won(r.amount), cols)]
    if r.ref_seq:
        out.append(f"원거래 Original {r.ref_seq}")
    for pocket, amount in r.split:
        names = _POCKETS.get(pocket)
        name = f"{names[0]} {names[1]}" if names else pocket
        out.append(row(f"  {name}", won(amount), cols))
    out.append(rule)
    if r.card:
        out.append(f"카드 Card {r.card}")
    if s.label:
        out.append(f"  {s.label}")
    if s.aid:
        out.append(f"  AID {s.aid}")
    out.append(f"승인번호 Approval {r.approval}")
    if r.cash_receipt:
        out += ["현금영수증 Cash receipt", f"  {r.cash_receipt}"]
    if s.points is not None:
        out.append(row("적립 포인트 Points earned", f"{s.points:,}P", cols))
    if s.balance is not None:
        out.append(row("잔액 Balance left", won(s.balance), cols))
    out.append("감사합니다 Thank you")
    return out


# -- the e-receipt -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EReceipt:
    """A verified e-receipt: the entry's fields and its signature."""

    fields: EntryFields
    signature: bytes

    @property
    def entry(self) -> Entry:
        return Entry(self.fields, entry_hash(encode(self.fields)), self.signature)


def e_receipt(entry: Entry) -> str:
    """The ``LPR1:`` payload of ``entry`` (see the module docstring)."""
    raw = entry.encoded()
    body = struct.pack(">H", len(raw)) + raw + entry.signature
    return PREFIX + base64.urlsafe_b64encode(body).rstrip(b"=").decode("ascii")


def parse_e_receipt(payload: str) -> EReceipt:
    """The entry and signature in ``payload``, unverified; QRFormatError when malformed."""
    text = payload.strip()
    if not text.startswith(PREFIX):
        raise QRFormatError(f"an e-receipt starts with {PREFIX!r}")
    b64 = text[len(PREFIX):]
    if not re.fullmatch(r"[A-Za-z0-9_-]*", b64):
        raise QRFormatError("an e-receipt's body is base64url without padding")
    try:
        body = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
    except ValueError as err:
        raise QRFormatError(f"an e-receipt's body is not base64url: {err}") from err
    if len(body) < 2:
        raise QRFormatError("e-receipt too short")
    (n,) = struct.unpack(">H", body[:2])
    if len(body) != 2 + n + _SIG:
        raise QRFormatError(f"e-receipt of {len(body)} bytes; its length says {2 + n + _SIG}")
    try:
        fields = decode(body[2:2 + n])
    except EntryEncodingError as err:
        raise QRFormatError(f"e-receipt entry: {err}") from err
    return EReceipt(fields, body[2 + n:])


def verify(payload: str, public_key: Ed25519PublicKey) -> EReceipt:
    """The e-receipt in ``payload`` if the terminal's key signed its entry; else
    :class:`~localpay.errors.QRFormatError` (a tampered code is not a valid code)."""
    found = parse_e_receipt(payload)
    try:
        public_key.verify(found.signature, encode(found.fields))
    except InvalidSignature:
        raise QRFormatError(f"e-receipt for entry {found.fields.seq} of terminal "
                            f"{found.fields.terminal_id!r}: the signature does not verify "
                            f"with this key") from None
    if found.fields.kind not in RECEIPT_KINDS:
        raise QRFormatError(f"entry {found.fields.seq} is a {found.fields.kind}, not a receipt")
    return found


# -- printing and the journal ------------------------------------------------------------------


class LinePrinter(Protocol):
    """What a receipt printer offers the terminal (``drivers.printer`` implements it)."""

    def print_lines(self, lines: Sequence[str]) -> None: ...


class ReceiptJournal:
    """``receipts.jsonl``: per seq, whether the receipt printed, and for entries written
    before the receipt facts were signed, what was shown at payment time. Append-only lines,
    the last one for a seq wins. Not money and not signed: losing it loses the
    AID/label/points/balance lines of those older entries' reprints, nothing else."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, seq: int, shown: Shown, *, printed: bool, fault: str = "") -> None:
        line = json.dumps({"seq": seq, **asdict(shown), "printed": printed, "fault": fault},
                          ensure_ascii=False, sort_keys=True)
        try:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except OSError as err:
            # a full or read-only disk must not turn a standing payment into a fault
            log.warning("receipt journal %s not written: %s", self.path, err)

    def _rows(self) -> dict[int, dict[str, Any]]:
        rows: dict[int, dict[str, Any]] = {}
        if not self.path.exists():
            return rows
        for text in self.path.read_text(encoding="utf-8").splitlines():
            try:
                item = json.loads(text)
                rows[int(item["seq"])] = item
            except (ValueError, KeyError, TypeError):
                log.warning("receipt journal %s: unreadable line skipped", self.path)
        return rows

    def shown(self, seq: int) -> Shown | None:
        item = self._rows().get(seq)
        if item is None:
            return None
        return Shown(aid=str(item.get("aid", "")), label=str(item.get("label", "")),
                     points=item.get("points"), balance=item.get("balance"))

    def unprinted(self) -> list[int]:
        """Seqs whose last print failed: the clerk's "print later" list."""
        return sorted(seq for seq, item in self._rows().items() if not item.get("printed"))


def cash_receipt_of(ledger: Any, entry: Entry) -> Request | None:
    """The cash receipt requested for payment ``entry`` in ``ledger``, for a reprint;
    None for any other entry or when none was."""
    return find(ledger, entry.seq) if entry.kind == "payment" else None


def journal_path(ledger_path: Path) -> Path:
    return ledger_path.with_name("receipts.jsonl")


class ReceiptDesk:
    """Prints the receipt of each approved till payment, and never lets a printer fault
    touch the payment: :meth:`issue` returns the clerk's words for a fault instead."""

    def __init__(self, config: Config, printer: LinePrinter | None,
                 journal: ReceiptJournal | None = None, *, zone: str = ZONE) -> None:
        self.config = config
        self.printer = printer
        self.journal = journal
        self.zone = zone

    def issue(self, entry: Entry, shown: Shown,
              cash_receipt: Request | None = None) -> str | None:
        """Print ``entry``'s receipt (with the ``cash_receipt`` requested for it, if any);
        ``None`` when printed (or no printer), else the fault's words for the clerk
        (:attr:`~localpay.errors.PrinterError.fault`: "out of paper")."""
        fault = ""
        made = from_entry(entry, self.config, shown, cash_receipt)
        if self.printer is not None:
            try:
                self.printer.print_lines(lines(made, zone=self.zone))
            except PrinterError as err:
                log.warning("receipt for seq %d not printed: %s", entry.seq, err)
                fault = err.fault
        if self.journal is not None:
            # facts the entry signs are not copied where they could be edited unseen
            self.journal.record(entry.seq, Shown() if made.signed else shown,
                                printed=self.printer is not None and not fault, fault=fault)
        return fault or None

    def issue_z(self, entry: Entry, names: Mapping[str, str] | None = None) -> str | None:
        """Print the Z report recorded as ``entry`` (Korean, then English lines), as
        :meth:`issue` does a receipt: the report is in the ledger already, so a fault only
        comes back as the clerk's words, and ``localpay receipt print SEQ`` prints it later."""
        fault = ""
        if self.printer is not None:
            try:
                self.printer.print_lines(zreport.printed_lines(zreport.from_entry(entry),
                                                               names, WIDTH))
            except PrinterError as err:
                log.warning("Z report %d not printed: %s", entry.seq, err)
                fault = err.fault
        if self.journal is not None:
            self.journal.record(entry.seq, Shown(),
                                printed=self.printer is not None and not fault, fault=fault)
        return fault or None
