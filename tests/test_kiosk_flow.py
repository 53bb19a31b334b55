"""Taps and key presses drive the kiosk: the real app (pygame, dummy video and audio), the
real engine threads, a real terminal over a real ledger, cards through the virtual reader.

Touches are posted as pygame events at the centre of the button the screen drew, keys as
KEYDOWN events, so the path from SDL event to ledger entry is the product's own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pygame
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pyzbar.pyzbar import ZBarSymbol, decode

from drivers.virtual import VirtualReader
from firmware_cfg.config import DEFAULT
from firmware_cfg.keys import DEMO_TOKEN_KEY
from kiosk_ui.app import KioskApp
from kiosk_ui.i18n import tr
from kiosk_ui.model import Screen
from kiosk_ui.screens import status_text
from localpay.errors import ReaderError
from localpay.types import Presentation
from offline_ledger import Ledger
from terminal.cards import card_token
from terminal.clock import ClockTrust
from terminal.core import Terminal
from terminal.qr.mpm import parse
from terminal.risk import Reason

MINJI = bytes.fromhex("08a10001")
JUNHO = bytes.fromhex("08a10002")
HOT = bytes.fromhex("08bad001")


class Clock:
    """The model's clock, moved by the test so result timeouts need no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pump(app: KioskApp, until: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Run frames until ``until()`` holds (the engine works on its own threads)."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; screen "
                                 f"{app.model.screen.value}")
        app.step()
        time.sleep(0.005)
    app.step()


def touch(app: KioskApp, ident: str) -> None:
    """A finger on button ``ident`` as drawn in the last frame, through SDL's event queue."""
    app.step()
    rect = app.button_rect(ident)
    assert rect is not None, f"no button {ident!r} on {app.model.screen.value}"
    w, h = app.screen.get_size()
    pygame.event.post(pygame.event.Event(pygame.FINGERDOWN, x=rect.centerx / w,
                                         y=rect.centery / h, touch_id=0, finger_id=0,
                                         dx=0.0, dy=0.0, pressure=1.0))
    app.step()


def key(app: KioskApp, k: int, mod: int = 0) -> None:
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=k, mod=mod, unicode="",
                                         scancode=0))
    app.step()


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., tuple[KioskApp, VirtualReader, Ledger]]]:
    made: list[tuple[KioskApp, VirtualReader, Ledger]] = []

    def make(role: str, size: tuple[int, int] = (800, 480)):
        cfg = DEFAULT.replace("terminal", role=role, id=f"T-{role}", language="ko",
                              place="85" if role == "validator" else "M0001",
                              merchant_name="Test Store")
        ledger = Ledger(tmp_path / role / "ledger.sqlite", key=Ed25519PrivateKey.generate(),
                        terminal_id=cfg.terminal.id)
        ledger.apply_deny_delta(1, {card_token(DEMO_TOKEN_KEY, "uid", HOT): "stolen"})
        # The status bar says when the clock is not trusted, and a CI machine's NTP state is
        # whatever it is: the kernel's answer (only that) is given here, "in sync".
        terminal = Terminal(cfg, ledger, DEMO_TOKEN_KEY,
                            clock_trust=ClockTrust(ledger, ntp=lambda: True))
        reader = VirtualReader("test reader")
        app = KioskApp(terminal, reader.poll, size=size)
        app.model.clock = Clock()
        app.start()
        made.append((app, reader, ledger))
        return app, reader, ledger

    yield make
    for app, reader, ledger in made:
        app.close()
        reader.close()
        ledger.close()


def test_validator_approve_duplicate_decline_and_back_to_idle(make_app) -> None:
    app, reader, ledger = make_app("validator")
    app.step()
    assert app.model.screen == Screen.IDLE

    reader.present_uid(MINJI)
    pump(app, lambda: app.model.screen == Screen.RESULT, "a decision")
    view = app.model.result
    assert view is not None and view.outcome == "approved" and view.amount == 1500
    assert ledger.head.seq == 1  # shown only after the entry is in the ledger
    assert app.latencies  # the decision reached the pixels in a frame that was drawn
    pump(app, lambda: app.model.sync.waiting == 1, "waiting count")
    text, _ = status_text(app.model)
    assert text == "오프라인 · 동기화 대기 1건"

    reader.present_uid(MINJI)  # the same card again at once: no second fare
    pump(app, lambda: app.model.result is not None and app.model.result.outcome
         == "already_paid", "already paid")
    assert ledger.head.seq == 1

    reader.present_uid(HOT)
    pump(app, lambda: app.model.result is not None and app.model.result.outcome
         == "declined", "decline")
    assert app.model.result is not None and app.model.result.reason == Reason.DENY_LISTED
    drawn = {r.name: r.text for r in app.painter.records}
    assert drawn["reason"] == Reason.DENY_LISTED.message_ko

    app.model.clock.now += 60
    pump(app, lambda: app.model.screen == Screen.IDLE, "idle after the result")


def test_language_switch_by_touch_and_key(make_app) -> None:
    app, _, _ = make_app("validator")
    app.step()
    assert app.model.language == "ko"
    assert {r.name: r.text for r in app.painter.records}["tap_card"] == tr("ko", "tap_card")
    touch(app, "lang")
    assert app.model.language == "en"
    assert {r.name: r.text for r in app.painter.records}["tap_card"] == "Tap card"
    key(app, pygame.K_l)
    assert app.model.language == "ko"


def _type_amount(app: KioskApp, digits: str) -> None:
    for d in digits:
        touch(app, f"digit:{d}")


def test_till_card_payment_today_list_and_refund(make_app) -> None:
    app, reader, ledger = make_app("till")
    app.step()
    assert app.model.screen == Screen.KEYPAD
    assert app.button_rect("pay:card") is None  # nothing to pay yet: the button is off
    _type_amount(app, "880")
    touch(app, "digit:0")
    assert app.model.amount == 8800
    touch(app, "pay:card")
    assert app.model.screen == Screen.WAIT_CARD

    reader.present_uid(MINJI)
    pump(app, lambda: app.model.screen == Screen.RESULT, "payment decision")
    assert app.model.result is not None and app.model.result.outcome == "approved"
    assert app.model.result.amount == 8800
    seq = ledger.head.seq
    paid = ledger.entry(seq)
    assert paid is not None and paid.kind == "payment" and paid.amount == 8800
    touch(app, "ok")
    assert app.model.screen == Screen.KEYPAD and app.model.digits == ""

    touch(app, "menu:today")
    pump(app, lambda: app.model.day.count == 1, "today's list")
    assert app.model.screen == Screen.TODAY
    assert app.model.day.paid == 8800 and app.model.day.rows[0].seq == seq
    drawn = {r.name: r.text for r in app.painter.records}
    assert "8,800원" in drawn["today_totals"]
    touch(app, "back")

    touch(app, "menu:refund")
    pump(app, lambda: app.button_rect(f"row:{seq}") is not None, "refund row")
    touch(app, f"row:{seq}")
    assert app.model.screen == Screen.REFUND_AMOUNT and app.model.amount == 8800
    key(app, pygame.K_BACKSPACE)
    key(app, pygame.K_BACKSPACE)
    key(app, pygame.K_BACKSPACE)  # 8
    _type_amount(app, "000")  # 8,000 of 8,800
    assert app.model.amount == 8000
    touch(app, "refund:go")
    pump(app, lambda: app.model.screen == Screen.RESULT, "refund decision")
    assert app.model.result is not None and app.model.result.action == "refund"
    assert app.model.result.outcome == "approved"
    refund = ledger.entry(ledger.head.seq)
    assert refund is not None and refund.kind == "refund" and refund.amount == 8000
    assert refund.fields.ref_seq == seq
    assert {r.name: r.text for r in app.painter.records}["headline"] == tr("ko", "refunded")
    pump(app, lambda: app.model.day.refunded == 8000, "today's totals after the refund")
    assert app.model.day.net == 800
    assert app.model.day.refundable[0].remaining == 800


def test_till_cancel_then_a_card_is_not_charged(make_app) -> None:
    app, reader, ledger = make_app("till")
    _type_amount(app, "5")
    key(app, pygame.K_0)
    key(app, pygame.K_0)
    key(app, pygame.K_RETURN)  # Enter pays by card
    assert app.model.screen == Screen.WAIT_CARD and app.model.pending == 500
    key(app, pygame.K_ESCAPE)
    assert app.model.screen == Screen.KEYPAD
    reader.present_uid(JUNHO)
    pump(app, lambda: app.model.notice == "enter_amount_first", "the notice")
    assert ledger.head.seq == 0
    drawn = {r.name: r.text for r in app.painter.records}
    assert drawn["notice"] == tr("ko", "enter_amount_first")


def test_till_decline_says_why_and_the_keypad_starts_empty(make_app) -> None:
    app, reader, ledger = make_app("till")
    _type_amount(app, "14000")  # over the 10,000 won limit of a UID-only card
    touch(app, "pay:card")
    reader.present_uid(JUNHO)
    pump(app, lambda: app.model.screen == Screen.RESULT, "decision")
    assert app.model.result is not None and app.model.result.reason == Reason.OVER_LIMIT
    assert ledger.head.seq == 0
    touch(app, "ok")
    # issue #17: the keypad starts empty after every result, a decline too
    assert app.model.screen == Screen.KEYPAD and app.model.amount == 0


@pytest.mark.parametrize("size", [(800, 480), (1280, 720)], ids=["800x480", "1280x720"])
def test_till_merchant_qr_on_screen_scans(make_app, size: tuple[int, int]) -> None:
    app, reader, _ledger = make_app("till", size)
    _type_amount(app, "12500")
    touch(app, "pay:qr")
    assert app.model.screen == Screen.WAIT_QR
    pump(app, lambda: app.statics.qr(12500, app.model.sale_ref, 1) is not None, "the QR code")
    app.step(force=True)
    w, h = app.screen.get_size()
    gray = pygame.image.tobytes(app.screen, "RGB")[0::3]
    found = decode((gray, w, h), symbols=[ZBarSymbol.QRCODE])
    assert len(found) == 1
    mpm = parse(found[0].data.decode("ascii"))
    assert mpm.amount == "12500" and mpm.currency == "410" and mpm.dynamic
    assert mpm.reference == app.model.sale_ref
    # a wallet code shown to the till's scanner while the QR is up pays (or declines)
    reader.present_code("NOT-A-PAYMENT-CODE")
    pump(app, lambda: app.model.screen == Screen.RESULT, "decision on the code")
    assert app.model.result is not None and app.model.result.outcome == "declined"


def test_reader_failure_shows_in_the_status_bar(tmp_path: Path) -> None:
    cfg = DEFAULT.replace("terminal", role="validator", id="T-broken-reader")
    with Ledger(tmp_path / "l.sqlite", key=Ed25519PrivateKey.generate(),
                terminal_id=cfg.terminal.id) as ledger:
        terminal = Terminal(cfg, ledger, DEMO_TOKEN_KEY)

        def broken(timeout: float) -> Presentation | None:
            # a real reader that lost its USB link raises this from poll(); none exists here
            raise ReaderError("reader unplugged")

        app = KioskApp(terminal, broken, language="en")
        try:
            app.start()
            pump(app, lambda: not app.model.sync.reader_ok, "reader fault in status", 15)
            text, _ = status_text(app.model)
            assert "Reader problem" in text
        finally:
            app.close()


def test_broken_ledger_declines_and_says_needs_service(tmp_path: Path) -> None:
    from localpay.errors import LedgerCorruptError

    cfg = DEFAULT.replace("terminal", role="validator", id="T-broken-ledger")
    terminal = Terminal(cfg, None, DEMO_TOKEN_KEY,
                        ledger_fault=LedgerCorruptError("entry 7: bad signature", 7))
    reader = VirtualReader("r")
    app = KioskApp(terminal, reader.poll, language="en")
    try:
        app.start()
        reader.present_uid(MINJI)
        pump(app, lambda: app.model.screen == Screen.RESULT, "decision")
        assert app.model.result is not None
        assert app.model.result.reason == Reason.LEDGER_BROKEN
        assert status_text(app.model)[0] == "Needs service"
    finally:
        app.close()
        reader.close()


def test_an_unknown_clock_shows_in_the_status_bar(tmp_path: Path) -> None:
    cfg = DEFAULT.replace("terminal", role="validator", id="T-epoch")
    with Ledger(tmp_path / "l.sqlite", key=Ed25519PrivateKey.generate(),
                terminal_id=cfg.terminal.id) as ledger:
        # the kernel's NTP answer cannot be set on a CI machine: the probe is given, and
        # says "not in sync", as on a Raspberry Pi booted at the epoch with no network
        epoch = ClockTrust(ledger, wall=lambda: 5.0, ntp=lambda: False)
        terminal = Terminal(cfg, ledger, DEMO_TOKEN_KEY, clock=lambda: 5.0, clock_trust=epoch)
        reader = VirtualReader("r")
        app = KioskApp(terminal, reader.poll, language="en")
        try:
            app.start()
            pump(app, lambda: app.model.sync.clock == "unknown", "clock state in status", 15)
            text, _ = status_text(app.model)
            assert "Clock not set" in text
            reader.present_uid(MINJI)        # payments go on
            pump(app, lambda: app.model.screen == Screen.RESULT, "decision")
            assert app.model.result is not None and app.model.result.outcome == "approved"
        finally:
            app.close()
            reader.close()
