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
              KEYPAD ──Refund──> REFUND_LIST ──row──> REFUND_AMOUNT ──Refund──> READING ...
              KEYPAD ──Today───> TODAY
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Literal

from kiosk_ui.i18n import Language
from terminal.core import Decision
from terminal.risk import Reason

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
        )


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


Event = Busy | Result | Ignored | Fault | SyncView | DayView


# -- what the model asks of the engine ----------------------------------------------------


@dataclass(frozen=True)
class Pay:
    amount: int
    method: Method


@dataclass(frozen=True)
class RefundCmd:
    seq: int
    amount: int


@dataclass(frozen=True)
class CancelCmd:
    pass


@dataclass(frozen=True)
class RefreshCmd:
    pass


Command = Pay | RefundCmd | CancelCmd | RefreshCmd


# -- the state machine --------------------------------------------------------------------


@dataclass
class KioskModel:
    role: Role
    language: Language = "ko"
    place: str = ""
    merchant_name: str = ""
    fare: int = 0
    demo: bool = False
    clock: Callable[[], float] = time.monotonic
    screen: Screen = Screen.IDLE
    digits: str = ""
    method: Method = "card"
    pending: int = 0
    #: the sale's reference in the merchant QR code (MPM ID 62/05), new for every sale
    sale_ref: str = ""
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
    #: bumped on every change: the app redraws when it moves
    version: int = 0

    def __post_init__(self) -> None:
        if self.role == "till" and self.screen == Screen.IDLE:
            self.screen = Screen.KEYPAD  # IDLE is the validator's; the till starts at its keypad

    @property
    def home(self) -> Screen:
        return Screen.IDLE if self.role == "validator" else Screen.KEYPAD

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
        if s == Screen.KEYPAD:
            if button in ("pay:card", "pay:qr") and self.amount > 0:
                self.method = "card" if button == "pay:card" else "qr"
                self.pending = self.amount
                self.sale_ref = f"{int(self.clock() * 1000) % 10**12:012d}"
                self._go(Screen.WAIT_CARD if self.method == "card" else Screen.WAIT_QR)
                return [Pay(self.pending, self.method)]
            if button == "menu:refund":
                self._go(Screen.REFUND_LIST)
                return [RefreshCmd()]
            if button == "menu:today":
                self._go(Screen.TODAY)
                return [RefreshCmd()]
        if s in (Screen.WAIT_CARD, Screen.WAIT_QR) and button == "cancel":
            self.pending = 0
            self._go(Screen.KEYPAD)
            return [CancelCmd()]
        if s in (Screen.REFUND_LIST, Screen.TODAY):
            if button == "back":
                self._go(Screen.KEYPAD)
                return []
            if button in ("page:prev", "page:next"):
                rows = len(self.day.refundable if s == Screen.REFUND_LIST else self.day.rows)
                pages = max(1, -(-rows // PAGE_ROWS))
                step = -1 if button == "page:prev" else 1
                self.page = min(max(self.page + step, 0), pages - 1)
                self._touch()
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
                cmd = RefundCmd(self.refund_target.seq, self.amount)
                self.refund_target = None
                self.digits = ""
                self._go(Screen.READING)
                return [cmd]
        if s == Screen.RESULT and button == "ok":
            waiting = self.result is not None and self.result.outcome == "claim_pending"
            self._back_home()
            # "Cancel" under a claim's prompt: the terminal forgets the claim
            return [CancelCmd()] if waiting else []
        return []

    def _type(self, digits: str) -> None:
        if not self.digits and digits.startswith("0"):
            return  # no leading zeros: "00" on an empty amount is a slip
        if len(self.digits) + len(digits) > MAX_DIGITS:
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
                           "page up": "page:prev", "page down": "page:next"},
            Screen.RESULT: {"return": "ok", "escape": "ok"},
        }
        button = mapping.get(s, {}).get(name)
        return self.press(button) if button else []

    # -- engine events ---------------------------------------------------------------------

    def on_event(self, event: Event) -> list[Command]:
        if isinstance(event, SyncView):
            if event != self.sync:
                self.sync = event
                self._touch()
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
            self.result_until = self.clock() + RESULT_SECONDS[(self.role, view.outcome)]
            self.pending = 0
            if self.role == "till" and view.outcome == "approved" and view.action != "claim":
                self.digits = ""  # a claim charged nothing: the keyed sale is still to pay
            self._go(Screen.RESULT)
        elif isinstance(event, Ignored):
            self._notice("enter_amount_first")
        elif isinstance(event, Fault):
            self.fault = event.message
            self._touch()
            if self.screen == Screen.READING:
                self._back_home()
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
        return []

    def snapshot(self) -> KioskModel:
        """A copy for drawing (the screens never change the model)."""
        return replace(self)
