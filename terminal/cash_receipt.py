"""Cash-receipt requests (현금영수증): the customer's identity for one payment, recorded at the
till and reported to central for the issuing service.

The clerk keys, after an approved payment or for a payment of the day, who the receipt is
for and why:

- **purpose** ``income_deduction`` (소득공제, an individual): a mobile phone number
  (``010`` then 7 or 8 digits) or a cash-receipt card number (13 to 19 digits);
- **purpose** ``expense_proof`` (지출증빙, a business): its business registration number
  (10 digits, check digit verified as ``firmware_cfg.config.parse_brn`` does) or a
  cash-receipt card number.

A card number's Luhn digit is not checked: the National Tax Service's own cash-receipt cards
are numbered by their issuer, not all of them under ISO/IEC 7812, and the issuing service
checks the number it resolves. Hyphens and blanks typed with a number are dropped.

The request is one signed ledger entry of its own, kind ``cash_receipt`` (entries are never
updated): amount 0 and no card token (no money moves, no counter changes), ``ref_seq`` the
payment's seq, and in its detail the payment's amount and hash prefix, the purpose, the kind
of identity, its keyed token (HMAC-SHA-256 with the scheme's token key, as a PAN is
tokenised: :func:`terminal.cards.card_token`, namespace ``cash_receipt_<kind>``) and a
display form with the last 4 digits only. The number itself is never written, logged or
sent. One request per payment; none for a payment refunded or voided, even in part (the
receipt would name a figure the customer did not pay).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from firmware_cfg.config import parse_brn
from localpay.errors import ConfigError, ParseError, TransactionError
from offline_ledger import Entry, Ledger
from terminal.cards import card_token

if TYPE_CHECKING:  # receipts read requests back without the transaction core
    from terminal.core import Terminal

KIND = "cash_receipt"
Purpose = Literal["income_deduction", "expense_proof"]
IdentityKind = Literal["phone", "card", "brn"]

#: purpose -> (Korean, English), as receipts and screens name it
PURPOSES: dict[str, tuple[str, str]] = {
    "income_deduction": ("소득공제", "Income deduction"),
    "expense_proof": ("지출증빙", "Expense proof"),
}
_PURPOSE_WORDS = {"income_deduction": "income_deduction", "income": "income_deduction",
                  "소득공제": "income_deduction", "expense_proof": "expense_proof",
                  "expense": "expense_proof", "지출증빙": "expense_proof"}
_PHONE = re.compile(r"010[0-9]{7,8}")
_CARD = re.compile(r"[0-9]{13,19}")
#: payment ``hash`` prefix length in hex: the approval reference's 4 bytes (terminal.receipt)
HASH_HEX = 8


class CashReceiptInputError(ParseError):
    """A cash-receipt identity or purpose that is not well formed."""


class CashReceiptRefused(TransactionError):
    """A cash-receipt request the ledger cannot take; ``code`` names why: ``unknown_entry``,
    ``not_a_payment``, ``refunded``, ``already_requested``, ``not_a_till``,
    ``ledger_broken``."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Identity:
    """Who a cash receipt is for; ``digits`` only in memory (never in a repr or a log)."""

    kind: IdentityKind
    digits: str = field(repr=False)

    def token(self, token_key: bytes) -> str:
        return card_token(token_key, f"cash_receipt_{self.kind}", self.digits)

    @property
    def display(self) -> str:
        """The last 4 digits, the rest masked: ``010-****-5678``, ``***************1234``."""
        d = self.digits
        if self.kind == "phone":
            return f"010-{'*' * (len(d) - 7)}-{d[-4:]}"
        return "*" * (len(d) - 4) + d[-4:]


def parse_purpose(text: str) -> Purpose:
    """``income_deduction`` (or ``income``, ``소득공제``) or ``expense_proof`` (``expense``,
    ``지출증빙``)."""
    found = _PURPOSE_WORDS.get(text.strip().lower())
    if found is None:
        raise CashReceiptInputError(f"cash receipt purpose {text!r}: expected income_deduction "
                                    "(소득공제) or expense_proof (지출증빙)")
    return "income_deduction" if found == "income_deduction" else "expense_proof"


def parse_identity(text: str, purpose: Purpose) -> Identity:
    """The identity keyed for ``purpose`` (see the module docstring); the message never
    repeats the number."""
    digits = re.sub(r"[\s-]", "", text)
    if not digits.isdigit() or not digits.isascii():
        raise CashReceiptInputError("cash receipt number: digits only (hyphens allowed)")
    if _CARD.fullmatch(digits):
        return Identity("card", digits)
    if purpose == "income_deduction":
        if _PHONE.fullmatch(digits):
            return Identity("phone", digits)
        raise CashReceiptInputError(
            f"cash receipt number of {len(digits)} digits: an individual's is a mobile "
            "number (010, 10 or 11 digits) or a cash-receipt card (13 to 19 digits)")
    if len(digits) != 10:
        raise CashReceiptInputError(
            f"cash receipt number of {len(digits)} digits: a business's is its registration "
            "number (10 digits) or a cash-receipt card (13 to 19 digits)")
    try:
        return Identity("brn", parse_brn(digits, "business registration number"))
    except ConfigError:
        raise CashReceiptInputError("business registration number fails its check digit "
                                    "(a digit mistyped?)") from None


@dataclass(frozen=True)
class Request:
    """A recorded cash-receipt request (a ``cash_receipt`` entry read back)."""

    seq: int
    payment_seq: int
    payment_hash: str
    amount: int
    purpose: Purpose
    identity: IdentityKind
    token: str
    display: str
    wall_ms: int

    @property
    def line(self) -> str:
        """``소득공제 Income deduction 010-****-5678``, as the receipt prints it."""
        ko, en = PURPOSES[self.purpose]
        return f"{ko} {en} {self.display}"


def of_entry(entry: Entry) -> Request:
    """The request a ``cash_receipt`` entry records; :class:`CashReceiptInputError` for any
    other entry or a detail without the request's keys."""
    f = entry.fields
    if f.kind != KIND:
        raise CashReceiptInputError(f"entry {f.seq} is a {f.kind}, not a {KIND}")
    try:
        d: dict[str, Any] = json.loads(f.detail)
        identity = d["identity"]
        if identity not in ("phone", "card", "brn"):
            raise ValueError(f"identity {identity!r}")
        return Request(f.seq, f.ref_seq, str(d["payment_hash"]), int(d["amount"]),
                       parse_purpose(str(d["purpose"])), identity, str(d["token"]),
                       str(d["display"]), f.wall_ms)
    except (ValueError, KeyError, TypeError) as err:
        raise CashReceiptInputError(f"entry {f.seq}: not a cash-receipt request's detail "
                                    f"({err})") from None


def find(ledger: Ledger, payment_seq: int) -> Request | None:
    """The request recorded for payment ``payment_seq``, if any: a scan of the entries after
    it (a till's day, and only when a clerk asks or a receipt is reprinted)."""
    for e in ledger.entries(payment_seq + 1):
        if e.kind == KIND and e.fields.ref_seq == payment_seq:
            return of_entry(e)
    return None


def request(terminal: Terminal, payment_seq: int, identity: Identity,
            purpose: Purpose) -> Entry:
    """Record a cash-receipt request for payment ``payment_seq``; the committed entry.
    :class:`CashReceiptRefused` when the ledger cannot take it; ``LedgerError`` when the
    ledger fails (nothing recorded)."""
    if terminal.role != "till":
        raise CashReceiptRefused("a cash receipt is requested at a till", "not_a_till")
    ledger = terminal.ledger
    if terminal.fault is not None or ledger is None:
        raise CashReceiptRefused(f"the ledger is not usable: {terminal.fault}", "ledger_broken")
    payment = ledger.entry(payment_seq)
    if payment is None:
        raise CashReceiptRefused(f"entry {payment_seq} is not in this ledger", "unknown_entry")
    if payment.kind != "payment":
        raise CashReceiptRefused(f"entry {payment_seq} is a {payment.kind}, not a payment",
                                 "not_a_payment")
    if ledger.refunded_total(payment_seq):
        raise CashReceiptRefused(f"payment {payment_seq} was refunded or voided: no cash "
                                 "receipt for it", "refunded")
    held = find(ledger, payment_seq)
    if held is not None:
        raise CashReceiptRefused(f"payment {payment_seq} already has a cash receipt "
                                 f"(entry {held.seq})", "already_requested")
    wall_ms = int(terminal.clock() * 1000)
    detail: dict[str, Any] = {
        "payment_hash": payment.entry_hash[:HASH_HEX // 2].hex(),
        "amount": payment.amount, "purpose": purpose, "identity": identity.kind,
        "token": identity.token(terminal.token_key), "display": identity.display,
    }
    if terminal.clock_trust is not None:
        detail["clock"] = terminal.clock_trust.judge(wall_ms).state
    if terminal.clerk:
        detail["clerk"] = terminal.clerk
    return ledger.append(KIND, ref_seq=payment_seq, place=payment.fields.place,
                         detail=detail, wall_ms=wall_ms)
