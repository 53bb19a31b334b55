"""The till's cash-receipt form (현금영수증), its command and the engine's answer.

Opened from an approved payment's result (button ``cashreceipt``) or from a payment of the
day on the Today list (touch its row); the clerk keys the customer's number and picks the
purpose, and :class:`CashReceiptCmd` asks the engine to record it (:mod:`terminal.cash_receipt`).
The number is checked here as it will be checked there, so that a slip is told on the form
(in the clerk's language) before anything is asked of the ledger::

  RESULT ──Cash receipt──> CASH_RECEIPT ──OK──> (engine) ──CashReceiptDone──> shown, then back
  TODAY ──payment row──> CASH_RECEIPT ──Cancel──> back where it came from
                                      ──refused (CashReceiptNotDone)──> stays, says why

The number lives in the form and the command only (never in a repr): the engine records its
keyed token, and what is drawn after that is the masked display form.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from localpay.errors import LedgerError
from offline_ledger import Entry
from terminal import cash_receipt as cr
from terminal.core import Terminal
from terminal.receipt import ReceiptDesk, Shown

log = logging.getLogger(__name__)

#: the longest number the form takes: a cash-receipt card's 19 digits
MAX_DIGITS = 19


@dataclass(frozen=True)
class CashReceiptCmd:
    """Record a cash-receipt request for payment ``seq``."""

    seq: int
    number: str = field(repr=False)
    purpose: cr.Purpose
    #: the signed-in clerk's id; "": none configured
    clerk: str = ""


@dataclass(frozen=True)
class CashReceiptDone:
    """The request is recorded as ledger entry ``seq`` for payment ``payment_seq``."""

    seq: int
    payment_seq: int
    display: str
    purpose: str


@dataclass(frozen=True)
class CashReceiptNotDone:
    """Nothing recorded; ``code`` is a :class:`terminal.cash_receipt.CashReceiptRefused`
    code, or ``invalid`` / ``ledger_broken``."""

    payment_seq: int
    code: str


@dataclass
class CashReceiptForm:
    """The form on screen: which payment, the number typed, the purpose picked."""

    seq: int
    amount: int
    #: where Cancel and the end go: "home" (from a result) or "today"
    back: str = "home"
    purpose: cr.Purpose = "income_deduction"
    digits: str = field(default="", repr=False)
    #: the i18n key of what went wrong ("" none)
    message: str = ""
    #: the recorded request's masked identity once the engine answered ("" before)
    done: str = ""
    #: the command is with the engine
    busy: bool = False

    def press(self, button: str, clerk: str) -> CashReceiptCmd | str | None:
        """A touch on the form: the command to send, ``"back"`` to leave, else None."""
        if button == "cancel" or (button == "ok" and self.done):
            return "back"
        if self.busy or self.done:
            return None
        if button.startswith("digit:") and len(self.digits) < MAX_DIGITS:
            self.digits += button.removeprefix("digit:")
            self.message = ""
        elif button == "del":
            self.digits = self.digits[:-1]
        elif button == "clear":
            self.digits = ""
        elif button in ("cr:income", "cr:expense"):
            self.purpose = "income_deduction" if button == "cr:income" else "expense_proof"
            self.message = ""
        elif button == "cr:go" and self.digits:
            self.message = check(self.digits, self.purpose)
            if not self.message:
                self.busy = True
                return CashReceiptCmd(self.seq, self.digits, self.purpose, clerk)
        return None

    def answered(self, event: CashReceiptDone | CashReceiptNotDone) -> None:
        self.busy = False
        if isinstance(event, CashReceiptDone):
            self.digits = ""  # done with: only the masked form is drawn from here on
            self.done = event.display
        else:
            self.message = f"cr_{event.code}"


def offered(view: Any) -> bool:
    """A result (``kiosk_ui.model.ResultView``) a cash receipt may be asked for: an
    approved payment with its entry."""
    return bool(view.outcome == "approved" and view.action == "payment"
                and view.seq is not None)


def row_form(rows: Iterable[Any], seq: int) -> CashReceiptForm | None:
    """The form for payment ``seq`` of the day's rows (``kiosk_ui.model.PaymentRow``);
    None for a refund or void, or a payment given back in part (the request is refused)."""
    paid = next((r for r in rows if r.seq == seq and r.kind == "payment" and not r.refunded),
                None)
    return CashReceiptForm(paid.seq, paid.amount, back="today") if paid is not None else None


def check(digits: str, purpose: cr.Purpose) -> str:
    """The i18n key of what is wrong with ``digits`` for ``purpose``; "" when well formed."""
    try:
        cr.parse_identity(digits, purpose)
    except cr.CashReceiptInputError:
        if purpose == "expense_proof" and len(digits) == 10:
            return "cr_brn_check"
        return "cr_bad_income" if purpose == "income_deduction" else "cr_bad_expense"
    return ""


def carry_out(terminal: Terminal, cmd: CashReceiptCmd,
              receipts: ReceiptDesk | None = None) -> tuple[CashReceiptDone | CashReceiptNotDone,
                                                              str | None]:
    """The engine's side: record the request, then print the payment's receipt again with
    its cash-receipt line when a printer is there. The answer for the screen, and the
    printer's fault words (None: printed, or no printer)."""
    try:
        identity = cr.parse_identity(cmd.number, cmd.purpose)
        terminal.clerk = cmd.clerk
        entry = cr.request(terminal, cmd.seq, identity, cmd.purpose)
    except cr.CashReceiptInputError:
        return CashReceiptNotDone(cmd.seq, "invalid"), None
    except cr.CashReceiptRefused as err:
        log.info("cash receipt for payment %d refused: %s", cmd.seq, err.code)
        return CashReceiptNotDone(cmd.seq, err.code), None
    except LedgerError as err:
        log.error("cash receipt for payment %d not recorded: %s", cmd.seq, err)
        return CashReceiptNotDone(cmd.seq, "ledger_broken"), None
    request = cr.of_entry(entry)
    done = CashReceiptDone(entry.seq, cmd.seq, request.display, request.purpose)
    return done, _reprint(terminal, cmd.seq, request, receipts)


def _reprint(terminal: Terminal, seq: int, request: cr.Request,
             receipts: ReceiptDesk | None) -> str | None:
    if receipts is None or terminal.ledger is None:
        return None
    payment: Entry | None = terminal.ledger.entry(seq)
    if payment is None:  # pragma: no cover - request() found it a moment ago
        return None
    journal = receipts.journal
    shown = journal.shown(seq) if journal is not None else None
    return receipts.issue(payment, shown or Shown(), request)
