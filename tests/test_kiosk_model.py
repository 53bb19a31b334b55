"""The screen state machine on its own: keypad rules, paging, timeouts, and that a decision
always shows even when the clerk cancelled meanwhile."""

from __future__ import annotations

from kiosk_ui.model import (
    PAGE_ROWS,
    CancelCmd,
    DayView,
    Ignored,
    KioskModel,
    Pay,
    PaymentRow,
    RefreshCmd,
    RefundCmd,
    Result,
    ResultView,
    Screen,
)
from terminal.core import Decision
from terminal.risk import Reason


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def till() -> tuple[KioskModel, Clock]:
    clock = Clock()
    return KioskModel(role="till", clock=clock), clock


def test_keypad_rules() -> None:
    m, _ = till()
    assert m.screen == Screen.KEYPAD
    m.press("digit:00")
    m.press("digit:0")
    assert m.digits == ""  # no leading zeros
    for _ in range(12):
        m.press("digit:9")
    assert m.amount == 999_999_999  # nine digits at most
    m.press("del")
    assert m.amount == 99_999_999
    m.press("clear")
    assert m.amount == 0
    assert m.press("pay:card") == []  # nothing to pay
    m.key("4")
    m.key("2")
    m.key("backspace")
    m.key("5")
    assert m.amount == 45
    assert m.key("q") == [Pay(45, "qr")]
    assert m.screen == Screen.WAIT_QR and m.sale_ref


def test_a_decision_shows_even_after_cancel() -> None:
    m, clock = till()
    m.press("digit:5")
    m.press("pay:card")
    assert m.press("cancel") == [CancelCmd()]
    assert m.screen == Screen.KEYPAD
    m.on_event(Result(ResultView("approved", "payment", 5)))
    assert m.screen == Screen.RESULT and m.digits == ""
    clock.now += 5.9
    m.tick()
    assert m.screen == Screen.RESULT
    clock.now += 0.2
    m.tick()
    assert m.screen == Screen.KEYPAD


def test_notice_goes_away() -> None:
    m, clock = till()
    m.on_event(Ignored())
    assert m.notice == "enter_amount_first"
    clock.now += 3
    m.tick()
    assert m.notice == ""


def test_paging_and_refund_pick() -> None:
    m, _ = till()
    rows = tuple(PaymentRow(100 - i, "payment", 1000 + i, 0, "09:00") for i in range(15))
    m.on_event(DayView(rows, 15, sum(r.amount for r in rows), 0))
    assert m.press("menu:refund") == [RefreshCmd()]
    for _ in range(5):
        m.press("page:next")
    assert m.page == (15 - 1) // PAGE_ROWS
    m.press("page:prev")
    m.press("page:prev")
    m.press("page:prev")
    assert m.page == 0
    m.press("row:99")
    assert m.screen == Screen.REFUND_AMOUNT and m.amount == 1001
    m.press("del")
    assert m.press("refund:go") == [RefundCmd(99, 100)]
    assert m.screen == Screen.READING


def test_validator_ignores_keypad_and_times_out() -> None:
    clock = Clock()
    m = KioskModel(role="validator", clock=clock)
    assert m.screen == Screen.IDLE
    assert m.press("digit:1") == [] and m.key("return") == []
    m.on_event(Result(ResultView("declined", "tap", 1500, reason=Reason.UNREADABLE)))
    clock.now += 3.9
    m.tick()
    assert m.screen == Screen.RESULT
    clock.now += 0.2
    m.tick()
    assert m.screen == Screen.IDLE


def test_points_come_from_the_decision_only_when_it_has_them() -> None:
    plain = ResultView.from_decision(Decision("approved", 1500, balance=100), "tap")
    assert plain.points_now is None and plain.points_week is None and plain.balance == 100
