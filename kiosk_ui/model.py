"""What the screens show and how touches, keys and decisions move between them.

Pure Python, no pygame: the :class:`KioskModel` takes button presses, key names, events
from the engine and the passing of time, changes what is on screen, and returns the
commands the engine must carry out (pay, refund, cancel). The screens only draw it.

Screens (issue "Kiosk screens", Screens)::

  validator:  IDLE ──card──> READING ──decision──> RESULT ──timeout──> IDLE
  either:     a campaign code ──> RESULT "claim_pending" (tap your card) ──card──> RESULT
              (points collected, nothing charged), or the engine reports the lapse
  till:       KEYPAD ──Card──> WAIT_CARD ─┐
                     ──QR────> WAIT_QR  ──┴card/code──> READING ──> RESULT ──OK/timeout──> KEYPAD
              RESULT (approved) ──E-receipt──> E_RECEIPT (the entry's LPR1: code as a QR)
              ──Back──> KEYPAD
              RESULT (approved payment) / TODAY (a payment's row) ──> CASH_RECEIPT
              (kiosk_ui.cash_receipt) ──Cancel / OK once recorded──> where it came from
              KEYPAD ──Refund──> REFUND_LIST ──row──> REFUND_AMOUNT ──Refund──> READING ...
              KEYPAD ──Today───> TODAY
  till with [[clerk]]s (kiosk_ui.clerks): SIGN_IN ──name──> PIN ──right PIN──> KEYPAD;
              KEYPAD ──Refund──> PIN (a supervisor's, unless one is signed in) ──> REFUND_LIST;
              TODAY ──Close day──> Z_REPORT (terminal.zreport: recorded, then shown) ──Back──>
              KEYPAD;
              TODAY ──Sign out──> SIGN_IN. With no clerks configured the till opens on its
              keypad as before, and its commands name no clerk.
  either:     any screen but READING and RESULT ──cannot approve (SyncView.blocked)──>
              OUT_OF_SERVICE ──can again──> IDLE / KEYPAD (a sale waiting for a card is dropped)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Literal

from firmware_cfg.config import ClerkSection
from kiosk_ui import cash_receipt as crf
from kiosk_ui.clerks import PIN_MAX, PIN_MIN, ClerkDesk
from kiosk_ui.i18n import Language, won
from kiosk_ui.service import Blocker, DeviceState, can_take, corrections_ok
from terminal.core import Decision
from terminal.mpm_online import new_reference
from terminal.receipt import RECEIPT_KINDS, e_receipt
from terminal.risk import Reason
from terminal.zreport import ZReport, text_lines

Role = Literal["till", "validator"]
Outcome = Literal["approved", "declined", "already_paid", "claim_pending"]
Action = Literal["tap", "payment", "refund", "claim"]
Method = Literal["card", "qr"]

#: at most this many digits of won on the keypad (999,999,999)
MAX_DIGITS = 9

#: seconds a result stays up before the screen goes back by itself
RESULT_SECONDS: dict[tuple[Role, Outcome], float] = {
    ("validator", "approved"): 2.0,
    ("validator", "already_paid"): 2.5,
    ("validator", "declined"): 4.0,
    ("till", "approved"): 6.0,
    ("till", "already_paid"): 6.0,
    ("till", "declined"): 10.0,
    # Longer than any claim window: the engine reports the lapse (``Terminal.lapse_claim``)
    # and that decision replaces the prompt; this only keeps a lost report from freezing it.
    ("validator", "claim_pending"): 660.0,
    ("till", "claim_pending"): 660.0,
}
NOTICE_SECONDS = 2.5
#: rows per page on the till's lists
PAGE_ROWS = 6
#: lines per page of the Z report on screen
Z_ROWS = 8


class Screen(Enum):
    IDLE = "idle"
    READING = "reading"
    RESULT = "result"
    KEYPAD = "keypad"
    WAIT_CARD = "wait_card"
    WAIT_QR = "wait_qr"
    REFUND_LIST = "refund_list"
    REFUND_AMOUNT = "refund_amount"
    TODAY = "today"
    #: who is at the till (only with clerks configured)
    SIGN_IN = "sign_in"
    #: a PIN pad: a clerk's sign-in, or a supervisor's approval of a refund
    PIN = "pin"
    #: the closing of the day: "closing…", then the recorded report's lines, by page
    Z_REPORT = "z_report"
    #: the terminal cannot approve (kiosk_ui.service): no screen may ask for a card
    OUT_OF_SERVICE = "out_of_service"
    #: a till's approved result's e-receipt as a QR for the customer's phone (RESULT ──
    #: E-receipt──> E_RECEIPT ──Back──> KEYPAD)
    E_RECEIPT = "e_receipt"
    #: a cash-receipt request for one payment (kiosk_ui.cash_receipt)
    CASH_RECEIPT = "cash_receipt"


# -- what the engine reports --------------------------------------------------------------


@dataclass(frozen=True)
class ResultView:
    """One decision as shown. Points appear only when the decision carries them."""

    outcome: Outcome
    action: Action
    amount: int
    reason: Reason | None = None
    balance: int | None = None
    points_now: int | None = None
    points_week: int | None = None
    seq: int | None = None
    card: str = ""
    #: the rider category whose fare a validator charged ("" when none was)
    rider: str = ""
    #: a campaign claim's signed points that the rules held offline cannot confirm
    points_unconfirmed: int | None = None
    #: what each pocket paid (or got back), in drawing order; empty: no split was made
    split: tuple[tuple[str, int], ...] = ()
    #: the entry's e-receipt (``LPR1:``, terminal.receipt) for an approved till payment or
    #: refund, shown as a QR on request; "": none
    e_receipt: str = ""

    @classmethod
    def from_decision(cls, decision: Decision, action: Action) -> ResultView:
        # Incentive points are computed by another part of the system; a Decision that
        # carries them (``points``, ``points_week``) gets them shown, one that does not
        # shows no points line rather than a made-up zero.
        points_now = getattr(decision, "points", None)
        points_week = getattr(decision, "points_week", None)
        unconfirmed = getattr(decision, "points_unconfirmed", None)
        if decision.outcome == "claim_pending" or (
                decision.entry is not None and decision.entry.kind == "incentive"):
            action = "claim"  # a campaign code, or the card that collected it: no money
        return cls(
            outcome=decision.outcome,
            action=action,
            amount=decision.amount,
            reason=decision.reason,
            balance=decision.balance,
            points_now=points_now if isinstance(points_now, int) else None,
            points_week=points_week if isinstance(points_week, int) else None,
            seq=decision.entry.seq if decision.entry is not None else None,
            card=decision.card.display if decision.card is not None else "",
            rider=decision.rider or "",
            points_unconfirmed=unconfirmed if isinstance(unconfirmed, int) else None,
            split=tuple(getattr(decision, "split", ())),
            e_receipt=e_receipt(decision.entry) if decision.outcome == "approved"
            and decision.entry is not None and decision.entry.kind in RECEIPT_KINDS else "",
        )


#: the names of the pockets every programme has (English, Korean); an allowance's pocket is
#: shown by its programme id, which is what the citizen's notice names it by
POCKET_NAMES: dict[str, tuple[str, str]] = {"cash": ("Cash", "현금"),
                                            "points": ("Points", "포인트")}


def pocket_name(pocket: str, language: Language) -> str:
    names = POCKET_NAMES.get(pocket)
    return pocket if names is None else names[language == "ko"]


def split_text(split: tuple[tuple[str, int], ...], language: Language) -> str:
    """A payment's split as one line: ``youth 5,000원 · 현금 3,000원``."""
    return " · ".join(f"{pocket_name(p, language)} {won(w, language)}" for p, w in split)


def receipt_lines(view: ResultView, language: Language) -> list[str]:
    """The receipt of an approved payment or refund, line by line: what, how much, from
    which pockets, with which card, and the ledger entry that records it."""
    if view.outcome != "approved" or view.action == "claim":
        return []
    ko = language == "ko"
    what = {"refund": ("Refund", "환불")}.get(view.action, ("Payment", "결제"))[ko]
    lines = [f"{what} {won(view.amount, language)}"]
    if view.split:
        lines.append(split_text(view.split, language))
    if view.card:
        lines.append(f"{'카드' if ko else 'Card'} {view.card}")
    if view.seq is not None:
        lines.append(f"{'거래번호' if ko else 'Entry'} {view.seq}")
    return lines


@dataclass(frozen=True)
class PaymentRow:
    """One of today's entries on the till: payment, refund or void."""

    seq: int
    kind: str
    amount: int
    wall_ms: int
    time: str
    card: str = ""
    ref_seq: int | None = None
    #: for a payment, won already given back
    refunded: int = 0

    @property
    def remaining(self) -> int:
        return self.amount - self.refunded if self.kind == "payment" else 0


@dataclass(frozen=True)
class DayView:
    rows: tuple[PaymentRow, ...] = ()
    count: int = 0
    paid: int = 0
    refunded: int = 0

    @property
    def net(self) -> int:
        return self.paid - self.refunded

    @property
    def refundable(self) -> tuple[PaymentRow, ...]:
        return tuple(r for r in self.rows if r.kind == "payment" and r.remaining > 0)


@dataclass(frozen=True)
class SyncView:
    """Network and sync state for the status bar."""

    online: bool = False
    waiting: int = 0
    head_seq: int = 0
    ledger_ok: bool = True
    reader_ok: bool = True
    #: how far the terminal trusts its clock (terminal.clock): for the technician
    clock: str = ""
    #: why the terminal cannot approve at all (empty: it can): the out-of-service screen
    blocked: tuple[Blocker, ...] = ()
    #: the readers and scanners the kiosk opens itself, and whether each works now
    devices: tuple[DeviceState, ...] = ()


@dataclass(frozen=True)
class Busy:
    """The terminal started on a presentation (state PRESENTED)."""


@dataclass(frozen=True)
class Result:
    view: ResultView
    #: ``time.perf_counter()`` when the engine had the decision, to measure decision→pixels
    at: float = 0.0


@dataclass(frozen=True)
class Ignored:
    """A card or code came while the till was not waiting for one."""


@dataclass(frozen=True)
class Fault:
    """The engine could not carry out a command (a bug or a broken part): needs service."""

    message: str


@dataclass(frozen=True)
class ReceiptFault:
    """An approved payment's receipt did not print: the payment stands, the clerk sees why
    (``fault``: "out of paper", "offline", "missing") and can reprint entry ``seq`` later."""

    seq: int
    fault: str

    @property
    def key(self) -> str:
        """The fault's words on screen (kiosk_ui.i18n); anything else is a "printer fault"."""
        return {"out of paper": "receipt_paper_out", "offline": "receipt_offline",
                "missing": "receipt_missing"}.get(self.fault, "receipt_fault")


@dataclass(frozen=True)
class Closed:
    """The day's Z report, recorded as ledger entry ``seq``."""

    report: ZReport
    seq: int


@dataclass(frozen=True, slots=True)
class OnlineQrDown:
    """The till could not reach central for the online payment of its QR code
    (terminal.mpm_online ``no_network``): the wallet QR or a card still pays offline.

    With ``notice`` (a kiosk_ui.i18n key) the code is not shown and the notice says why
    (``qr_expired``: the wait ended unpaid; ``qr_checking``: central was lost after the
    code was shown, the app may have paid); ``""``: the code shows again."""

    notice: str | None = None


Event = (Busy | Result | Ignored | Fault | SyncView | DayView | ReceiptFault | Closed
         | OnlineQrDown | crf.CashReceiptDone | crf.CashReceiptNotDone)


# -- what the model asks of the engine ----------------------------------------------------


@dataclass(frozen=True)
class Pay:
    amount: int
    method: Method
    #: the signed-in clerk's id, for the entry's detail (``clerk``); "": none configured
    clerk: str = ""


@dataclass(frozen=True)
class RefundCmd:
    seq: int
    amount: int
    #: the signed-in clerk's id (a supervisor approved it with a PIN); "": none configured
    clerk: str = ""


@dataclass(frozen=True)
class CancelCmd:
    pass


@dataclass(frozen=True)
class RefreshCmd:
    pass


@dataclass(frozen=True)
class CloseDayCmd:
    """Close the day: compute and record the Z report, with the declines the kiosk counted
    (reason, count; they are in no ledger)."""

    declines: tuple[tuple[str, int], ...] = ()


Command = Pay | RefundCmd | CancelCmd | RefreshCmd | CloseDayCmd | crf.CashReceiptCmd


# -- the state machine --------------------------------------------------------------------


@dataclass
class KioskModel:
    role: Role
    language: Language = "ko"
    place: str = ""
    merchant_name: str = ""
    fare: int = 0
    demo: bool = False
    #: the most one sale may be (the config's ``risk.max_amount``); the keypad refuses, as
    #: it is typed, a digit that would go past it. 0: only :data:`MAX_DIGITS` applies.
    max_amount: int = 0
    clock: Callable[[], float] = time.monotonic
    screen: Screen = Screen.IDLE
    digits: str = ""
    method: Method = "card"
    pending: int = 0
    #: the sale's reference in the merchant QR code (MPM ID 62/05), new for every sale
    sale_ref: str = ""
    #: the sale's online payment cannot be confirmed: no network (issue #17)
    qr_offline: bool = False
    #: in place of the sale's code: why it is not shown (kiosk_ui.i18n key; OnlineQrDown)
    qr_notice: str = ""
    result: ResultView | None = None
    result_until: float = 0.0
    result_at: float = 0.0
    sync: SyncView = field(default_factory=SyncView)
    day: DayView = field(default_factory=DayView)
    page: int = 0
    refund_target: PaymentRow | None = None
    notice: str = ""
    notice_until: float = 0.0
    fault: str = ""
    #: the last payment's receipt that did not print (till); cleared by the next decision
    receipt_fault: ReceiptFault | None = None
    #: the till's clerks and its PIN pad's lockout; None: no clerks configured
    desk: ClerkDesk | None = None
    #: who signed in (None: nobody, or no clerks configured)
    clerk: ClerkSection | None = None
    #: the PIN being typed, never drawn, and whose it is: a clerk's id or "supervisor"
    pin: str = field(default="", repr=False)  # never in a traceback or a log line
    pin_for: str = ""
    #: declines shown since the start or the last Z report, by reason (terminal.zreport)
    declines: dict[str, int] = field(default_factory=dict)
    #: the Z report on screen (None while it is being made)
    closing: ZReport | None = None
    #: the whole seconds of a PIN lockout last drawn: the countdown redraws as it moves
    lock_shown: int = 0
    #: the cash-receipt form on screen (None: none open)
    cash: crf.CashReceiptForm | None = None
    #: bumped on every change: the app redraws when it moves
    version: int = 0

    def __post_init__(self) -> None:
        if self.role == "till" and self.screen == Screen.IDLE:
            self.screen = self.home  # IDLE is the validator's; the till starts at its keypad

    @property
    def signed_out(self) -> bool:
        return self.role == "till" and self.desk is not None and self.clerk is None

    @property
    def clerk_id(self) -> str:
        return self.clerk.id if self.clerk is not None else ""

    @property
    def home(self) -> Screen:
        if self.sync.blocked:
            return Screen.OUT_OF_SERVICE
        if self.signed_out:
            return Screen.SIGN_IN
        return Screen.IDLE if self.role == "validator" else Screen.KEYPAD

    @property
    def menus_open(self) -> bool:
        """The till's Refund and Today: from its keypad, and out of service while refunds
        still work (:func:`kiosk_ui.service.corrections_ok`)."""
        return self.role == "till" and not self.signed_out and (
            self.screen == Screen.KEYPAD or (self.screen == Screen.OUT_OF_SERVICE
                                             and corrections_ok(self.sync.blocked)))

    @property
    def amount(self) -> int:
        return int(self.digits) if self.digits else 0

    def _go(self, screen: Screen) -> None:
        self.screen = screen
        self.page = 0
        self.version += 1

    def _touch(self) -> None:
        self.version += 1

    def _notice(self, key: str) -> None:
        self.notice = key
        self.notice_until = self.clock() + NOTICE_SECONDS
        self._touch()

    # -- input -----------------------------------------------------------------------------

    def press(self, button: str) -> list[Command]:
        """A touch on the button ``button`` (ids as the screens draw them)."""
        if button == "lang":
            self.language = "en" if self.language == "ko" else "ko"
            self._touch()
            return []
        if self.role == "validator":
            return []
        s = self.screen
        if s in (Screen.SIGN_IN, Screen.PIN):
            return self._press_pin(s, button)
        if s == Screen.CASH_RECEIPT:
            return self._press_cash(button)
        if s in (Screen.KEYPAD, Screen.REFUND_AMOUNT):
            if button.startswith("digit:"):
                self._type(button.removeprefix("digit:"))
                return []
            if button == "del":
                self.digits = self.digits[:-1]
                self._touch()
                return []
            if button == "clear":
                self.digits = ""
                self._touch()
                return []
        if s == Screen.OUT_OF_SERVICE and self.menus_open and button in ("menu:refund",
                                                                         "menu:today"):
            if button == "menu:refund" and self._ask_supervisor():
                return []
            self._go(Screen.REFUND_LIST if button == "menu:refund" else Screen.TODAY)
            return [RefreshCmd()]
        if s == Screen.KEYPAD:
            if button in ("pay:card", "pay:qr") and self.amount > 0 and (
                    button == "pay:qr" or can_take(self.sync.devices, "card")):
                self.method = "card" if button == "pay:card" else "qr"
                self.pending = self.amount
                # unguessable: an app pays only the sale it read off this screen
                self.sale_ref = new_reference()
                self.qr_offline = False
                self.qr_notice = ""
                self._go(Screen.WAIT_CARD if self.method == "card" else Screen.WAIT_QR)
                return [Pay(self.pending, self.method, self.clerk_id)]
            if button == "menu:refund":
                if self._ask_supervisor():
                    return []
                self._go(Screen.REFUND_LIST)
                return [RefreshCmd()]
            if button == "menu:today":
                self._go(Screen.TODAY)
                return [RefreshCmd()]
        if s in (Screen.WAIT_CARD, Screen.WAIT_QR) and button == "cancel":
            self.pending = 0
            self._go(Screen.KEYPAD)
            return [CancelCmd()]
        if s == Screen.TODAY and button == "close:day":
            self.closing = None
            self._go(Screen.Z_REPORT)
            return [CloseDayCmd(tuple(sorted(self.declines.items())))]
        if s == Screen.Z_REPORT:
            if button == "back":
                self._go(self.home)
            elif button in ("page:prev", "page:next") and self.closing is not None:
                pages = -(-len(text_lines(self.closing, self.language)) // Z_ROWS)
                step = -1 if button == "page:prev" else 1
                self.page = min(max(self.page + step, 0), pages - 1)
                self._touch()
            return []
        if s == Screen.TODAY and button == "signout" and self.clerk is not None:
            self.clerk = None
            self._go(self.home)
            return []
        if s in (Screen.REFUND_LIST, Screen.TODAY):
            if button == "back":
                self._go(self.home)
                return []
            if button in ("page:prev", "page:next"):
                rows = len(self.day.refundable if s == Screen.REFUND_LIST else self.day.rows)
                pages = max(1, -(-rows // PAGE_ROWS))
                step = -1 if button == "page:prev" else 1
                self.page = min(max(self.page + step, 0), pages - 1)
                self._touch()
                return []
            if s == Screen.TODAY and button.startswith("row:"):
                self.cash = crf.row_form(self.day.rows, int(button.removeprefix("row:")))
                if self.cash is not None:
                    self._go(Screen.CASH_RECEIPT)
                return []
            if s == Screen.REFUND_LIST and button.startswith("row:"):
                seq = int(button.removeprefix("row:"))
                row = next((r for r in self.day.refundable if r.seq == seq), None)
                if row is not None:
                    self.refund_target = row
                    self.digits = str(row.remaining)
                    self._go(Screen.REFUND_AMOUNT)
                return []
        if s == Screen.REFUND_AMOUNT:
            if button == "cancel":
                self.refund_target = None
                self.digits = ""
                self._go(Screen.REFUND_LIST)
                return []
            if button == "refund:go" and self.refund_target is not None and self.amount > 0:
                cmd = RefundCmd(self.refund_target.seq, self.amount, self.clerk_id)
                self.refund_target = None
                self.digits = ""
                self._go(Screen.READING)
                return [cmd]
        if s == Screen.RESULT and button == "ereceipt" and self.result is not None \
                and self.result.e_receipt:
            self._go(Screen.E_RECEIPT)  # no timeout: the customer's phone takes its time
            return []
        if s == Screen.RESULT and button == "cashreceipt" and self.result is not None \
                and self.result.seq is not None and crf.offered(self.result):
            self.cash = crf.CashReceiptForm(self.result.seq, self.result.amount)
            self._go(Screen.CASH_RECEIPT)  # no timeout: the customer reads out a number
            return []
        if s == Screen.E_RECEIPT and button == "back":
            self._back_home()
            return []
        if s == Screen.RESULT and button == "ok":
            waiting = self.result is not None and self.result.outcome == "claim_pending"
            self._back_home()
            # "Cancel" under a claim's prompt: the terminal forgets the claim
            return [CancelCmd()] if waiting else []
        return []

    def _press_cash(self, button: str) -> list[Command]:
        form = self.cash
        done = form.press(button, self.clerk_id) if form is not None else "back"
        if done != "back":
            self._touch()
            return [done] if isinstance(done, crf.CashReceiptCmd) else []
        self.cash = None
        if form is not None and form.back == "today":
            self._go(Screen.TODAY)
            return [RefreshCmd()]
        self._back_home()
        return []

    def _ask_supervisor(self) -> bool:
        """Put up the supervisor's PIN pad before the refunds, unless no clerks are
        configured or a supervisor is the one signed in. True when it did."""
        if self.desk is None or (self.clerk is not None and self.clerk.role == "supervisor"):
            return False
        self._pin_pad("supervisor")
        return True

    def _pin_pad(self, whose: str) -> None:
        self.pin = ""
        self.pin_for = whose
        self._go(Screen.PIN)

    def _press_pin(self, s: Screen, button: str) -> list[Command]:
        desk = self.desk
        if desk is None:  # pragma: no cover - neither screen is shown without clerks
            return []
        if s == Screen.SIGN_IN:
            if button.startswith("clerk:") and desk.find(button.removeprefix("clerk:")):
                self._pin_pad(button.removeprefix("clerk:"))
            elif button.startswith("digit:") and button[6:].isdigit():
                # the n-th name by its number on a keyboard, as the screen numbers them
                n = int(button[6:]) - 1
                if 0 <= n < len(desk.clerks):
                    self._pin_pad(desk.clerks[n].id)
            return []
        if button.startswith("digit:"):
            if len(self.pin) + len(button) - 6 <= PIN_MAX:
                self.pin += button.removeprefix("digit:")
                self._touch()
        elif button in ("del", "clear"):
            self.pin = self.pin[:-1] if button == "del" else ""
            self._touch()
        elif button == "cancel":
            self.pin = ""
            self._go(self.home)
        elif button == "pin:go" and len(self.pin) >= PIN_MIN:  # shorter: a slip, not a try
            pin, self.pin = self.pin, ""
            if desk.locked_for() > 0:
                self._notice("pin_locked")
                return []
            supervisor = self.pin_for == "supervisor"
            who = desk.check(pin, clerk_id=None if supervisor else self.pin_for,
                             supervisor=supervisor)
            if who is None:
                self._notice("pin_locked" if desk.locked_for() > 0 else "pin_wrong")
                return []
            self.notice = ""
            if supervisor:
                self._go(Screen.REFUND_LIST)
                return [RefreshCmd()]
            self.clerk = who
            self._go(self.home)
        return []

    def _type(self, digits: str) -> None:
        if not self.digits and digits.startswith("0"):
            return  # no leading zeros: "00" on an empty amount is a slip
        if len(self.digits) + len(digits) > MAX_DIGITS:
            return
        # Only the sale's keypad: a refund is capped by what its payment has left, which
        # that screen shows. risk.max_amount rather than the lesser of it and the card's
        # limits: no card is known while the amount is typed, and a UID card's lower
        # uid_max_amount is told by its decline's reason.
        if (self.max_amount and self.screen == Screen.KEYPAD
                and int(self.digits + digits) > self.max_amount):
            self._notice("over_max")
            return
        self.digits += digits
        self._touch()

    def key(self, name: str) -> list[Command]:
        """A key press by name: ``"0"``–``"9"``, ``"backspace"``, ``"return"``,
        ``"escape"``, ``"c"`` (card), ``"q"`` (QR), ``"l"`` (language)."""
        if name == "l":
            return self.press("lang")
        if self.role == "validator":
            return []
        s = self.screen
        if name.isdigit() and len(name) == 1:
            return self.press(f"digit:{name}")
        mapping = {
            Screen.PIN: {"backspace": "del", "delete": "clear", "return": "pin:go",
                         "escape": "cancel"},
            Screen.KEYPAD: {"backspace": "del", "delete": "clear", "return": "pay:card",
                            "c": "pay:card", "q": "pay:qr", "r": "menu:refund",
                            "t": "menu:today"},
            Screen.REFUND_AMOUNT: {"backspace": "del", "delete": "clear",
                                   "return": "refund:go", "escape": "cancel"},
            Screen.WAIT_CARD: {"escape": "cancel"},
            Screen.WAIT_QR: {"escape": "cancel"},
            Screen.REFUND_LIST: {"escape": "back", "up": "page:prev", "down": "page:next",
                                 "page up": "page:prev", "page down": "page:next"},
            Screen.TODAY: {"escape": "back", "up": "page:prev", "down": "page:next",
                           "page up": "page:prev", "page down": "page:next", "o": "signout",
                           "z": "close:day"},
            Screen.Z_REPORT: {"escape": "back", "return": "back", "up": "page:prev",
                              "down": "page:next", "page up": "page:prev",
                              "page down": "page:next"},
            Screen.RESULT: {"return": "ok", "escape": "ok", "e": "ereceipt",
                            "h": "cashreceipt"},
            Screen.CASH_RECEIPT: {"backspace": "del", "delete": "clear", "escape": "cancel",
                                  "return": "ok" if self.cash is not None and self.cash.done
                                  else "cr:go", "i": "cr:income", "x": "cr:expense"},
            Screen.E_RECEIPT: {"return": "back", "escape": "back"},
        }
        button = mapping.get(s, {}).get(name)
        return self.press(button) if button else []

    # -- engine events ---------------------------------------------------------------------

    def on_event(self, event: Event) -> list[Command]:
        if isinstance(event, SyncView):
            if event != self.sync:
                self.sync = event
                self._touch()
                return self._follow_service()
        elif isinstance(event, DayView):
            if event != self.day:
                self.day = event
                self.page = 0
                self._touch()
        elif isinstance(event, Busy):
            self._go(Screen.READING)
        elif isinstance(event, Result):
            # A decision always shows, even if the clerk pressed Cancel meanwhile: money moved
            # (or did not) and the screen must say which.
            view = event.view
            self.result = view
            self.result_at = event.at
            self.receipt_fault = None
            self.result_until = self.clock() + RESULT_SECONDS[(self.role, view.outcome)]
            self.pending = 0
            # The keypad starts empty after every result, approved or not (issue #17: a
            # declined 5,200 then 3500 typed showed 52,003,500). A campaign claim is the
            # exception: it charged nothing and was not the keyed sale, which is still to pay.
            if self.role == "till" and view.action != "claim":
                self.digits = ""
            if self.role == "till" and view.outcome == "declined" and view.reason is not None:
                reason = view.reason.value
                self.declines[reason] = self.declines.get(reason, 0) + 1
            self._go(Screen.RESULT)
        elif isinstance(event, Ignored):
            self._notice("enter_amount_first")
        elif isinstance(event, Fault):
            self.fault = event.message
            self._touch()
            if self.screen == Screen.READING or (self.screen == Screen.Z_REPORT
                                                 and self.closing is None):
                self._back_home()  # a closing that failed: the fault line says so
        elif isinstance(event, OnlineQrDown):
            if event.notice is None:
                self.qr_offline = True
            else:
                self.qr_notice = event.notice
            self._touch()
        elif isinstance(event, Closed):
            self.closing = event.report
            self.declines = {}  # counted into the recorded report
            # a receipt fault from here on is the Z report's own (the engine prints it next)
            self.receipt_fault = None
            self._touch()
        elif isinstance(event, ReceiptFault):
            self.receipt_fault = event
            self._touch()
        elif isinstance(event, crf.CashReceiptDone | crf.CashReceiptNotDone):
            if self.cash is not None and self.cash.seq == event.payment_seq:
                self.cash.answered(event)
                self._touch()
        return []

    def _follow_service(self) -> list[Command]:
        """Out of service, or back in: every screen but a transaction's own follows (a
        decision in progress or on screen still shows; a sale waiting for a card is dropped)."""
        clerk = self.screen in (Screen.REFUND_LIST, Screen.REFUND_AMOUNT, Screen.TODAY,
                                Screen.CASH_RECEIPT)
        if self.sync.blocked and self.screen not in (Screen.READING, Screen.RESULT,
                                                     Screen.OUT_OF_SERVICE) and not (
                clerk and corrections_ok(self.sync.blocked)):
            waiting = self.screen in (Screen.WAIT_CARD, Screen.WAIT_QR)
            self.pending = 0
            self.refund_target = None
            self._go(Screen.OUT_OF_SERVICE)
            return [CancelCmd()] if waiting else []
        if not self.sync.blocked and self.screen == Screen.OUT_OF_SERVICE:
            self._go(self.home)
        return []

    def _back_home(self) -> None:
        self.result = None
        if self.role == "till" and self.pending:
            self.pending = 0
        self._go(self.home)

    def tick(self) -> list[Command]:
        """Let time pass: results and notices go away on their own."""
        now = self.clock()
        if self.screen == Screen.RESULT and now >= self.result_until:
            self._back_home()
        if self.notice and now >= self.notice_until:
            self.notice = ""
            self._touch()
        if self.screen == Screen.PIN and self.desk is not None:
            left = math.ceil(self.desk.locked_for())
            if left != self.lock_shown:
                self.lock_shown = left
                self._touch()
        return []

    def snapshot(self) -> KioskModel:
        """A copy for drawing (the screens never change the model)."""
        return replace(self)
