"""The till's sale QR paid from the citizen's app, through the running kiosk (issue #17): the
real app (pygame, dummy video), the real engine threads over a real ledger, a real
``localpay central serve`` (SQLite and PostgreSQL) and the app's payment POSTed to it.

The kiosk opens the sale's reference at central when it shows the code and long-polls on a
thread of its own; the worker records the payment; no network is said on screen while a card
still pays; a cancelled sale is closed at central, so no app pays it afterwards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import books
from central.keys import load_signer
from drivers.virtual import VirtualReader
from firmware_cfg.config import DEFAULT
from firmware_cfg.keys import DEMO_TOKEN_KEY
from kiosk_ui.app import KioskApp
from kiosk_ui.i18n import tr
from kiosk_ui.model import Screen
from localpay.cli.bench.stacks import free_port
from offline_ledger import Ledger
from sync.client import SyncClient
from sync.mpm import MpmLink
from terminal.clock import ClockTrust
from terminal.core import Terminal
from tests.faultproxy import CuttingProxy
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401
from tests.test_kiosk_flow import MINJI, Clock, pump, touch
from tests.test_mpm_online import CASH, Stack, app_pay, balance, moved, stack  # noqa: F401
from tests.test_pockets_e2e import LOCAL


def make_kiosk(terminal: Terminal, link: MpmLink) -> tuple[KioskApp, VirtualReader]:
    reader = VirtualReader("test reader")
    app = KioskApp(terminal, reader.poll, size=(800, 480), language="en", sound=False,
                   mpm=link)
    app.engine.mpm_wait_s = 1.0  # a cancel is closed at central within a second
    app.model.clock = Clock()
    app.start()
    return app, reader


@pytest.fixture
def kiosk(stack: Stack) -> Iterator[tuple[Stack, KioskApp, VirtualReader]]:  # noqa: F811
    app, reader = make_kiosk(stack.till, stack.link)
    try:
        yield stack, app, reader
    finally:
        app.close()
        reader.close()


def key_in(app: KioskApp, amount: int) -> None:
    pump(app, lambda: app.model.screen == Screen.KEYPAD, "the keypad")
    for digit in str(amount):
        touch(app, f"digit:{digit}")
    assert app.model.amount == amount


def sale_opened(s: Stack, reference: str, timeout: float = 10.0) -> None:
    """Wait until the kiosk's own thread has opened ``reference`` at central."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with s.svc.store.tx(write=False) as tx:
            row = tx.one("SELECT amount FROM mpm_sales WHERE reference = ?", (reference,))
        if row is not None:
            return
        time.sleep(0.02)
    raise AssertionError(f"{reference} was not opened at central")


def sale_row(s: Stack, reference: str) -> tuple[object, ...] | None:
    with s.svc.store.tx(write=False) as tx:
        return tx.one("SELECT payment_id, closed_ms FROM mpm_sales WHERE reference = ?",
                      (reference,))


def test_app_pays_the_shown_code_and_the_till_records_it(kiosk) -> None:
    s, app, _reader = kiosk
    key_in(app, 3_500)
    touch(app, "pay:qr")
    assert app.model.screen == Screen.WAIT_QR
    reference = app.model.sale_ref
    sale_opened(s, reference)
    # the screen stays responsive while the kiosk long-polls
    # a step that waited on the long-poll would take its 10 s; a step on a loaded
    # machine takes well under a few seconds
    started = time.perf_counter()
    app.step(force=True)
    assert time.perf_counter() - started < 5
    assert s.ledger.head.seq == 0 and app.model.screen == Screen.WAIT_QR

    paid = app_pay(s, reference, 3_500, "app-1")
    assert paid.status_code == 200, paid.text
    payment = paid.json()["payment"]
    pump(app, lambda: app.model.screen == Screen.RESULT, "the approval")
    view = app.model.result
    assert view is not None and (view.outcome, view.action, view.amount) == (
        "approved", "payment", 3_500)
    # shown only once the entry naming the central payment is in the ledger
    assert s.ledger.head.seq == 1 and view.seq == 1
    entry = s.ledger.entry(1)
    assert (entry.fields.kind, entry.fields.amount, entry.fields.card_token) == (
        "payment", 3_500, "")
    detail = json.loads(entry.fields.detail)
    assert (detail["mpm_payment"], detail["reference"]) == (payment, reference)
    # central's books moved once
    assert moved(s) == {next(iter(moved(s))): 3_500} and len(moved(s)) == 1
    assert balance(s, books.pocket("A")) == CASH - 3_500
    assert balance(s, books.merchant_payable(LOCAL.merchant_id)) == 3_500
    # the sale's thread is done; the same code paid again is refused, nothing moves
    assert app.engine.online_settled(10)
    again = app_pay(s, reference, 3_500, "app-2")
    assert again.status_code == 409
    assert sum(moved(s).values()) == 3_500 and s.ledger.head.seq == 1
    # and the keypad is back for the next sale
    touch(app, "ok")
    assert app.model.screen == Screen.KEYPAD and app.model.amount == 0


def test_cancelled_sale_is_closed_at_central(kiosk) -> None:
    s, app, _reader = kiosk
    key_in(app, 2_000)
    touch(app, "pay:qr")
    reference = app.model.sale_ref
    sale_opened(s, reference)
    touch(app, "cancel")
    assert app.model.screen == Screen.KEYPAD
    assert app.engine.online_settled(10)
    row = sale_row(s, reference)
    assert row is not None and row[0] is None and row[1] is not None  # closed, unpaid
    late = app_pay(s, reference, 2_000, "late-1")
    assert late.status_code == 404 and "no longer shows" in late.json()["message"]
    assert moved(s) == {} and balance(s, books.pocket("A")) == CASH
    assert s.ledger.head.seq == 0 and app.model.screen == Screen.KEYPAD


def test_a_card_that_paid_the_sale_closes_its_code(kiosk) -> None:
    s, app, reader = kiosk
    key_in(app, 1_200)
    touch(app, "pay:qr")
    reference = app.model.sale_ref
    sale_opened(s, reference)
    reader.present_uid(MINJI)
    pump(app, lambda: app.model.screen == Screen.RESULT, "the card's decision")
    view = app.model.result
    assert view is not None and (view.outcome, view.amount) == ("approved", 1_200)
    assert app.engine.online_settled(10)
    row = sale_row(s, reference)
    assert row is not None and row[0] is None and row[1] is not None
    assert app_pay(s, reference, 1_200, "late-2").status_code == 404
    assert moved(s) == {} and s.ledger.head.seq == 1


class Slow:
    """The real link, whose long-poll hears nothing until the clerk cancels: the app's
    payment comes just before the close, and central's answer to the close names it."""

    def __init__(self, link: MpmLink) -> None:
        self.link = link
        self.waits = 0

    def open(self, reference: str, amount: int) -> None:
        self.link.open(reference, amount)

    def wait(self, reference: str, wait_s: float) -> str | None:
        self.waits += 1
        time.sleep(wait_s)
        return None

    def close(self, reference: str) -> str | None:
        return self.link.close(reference)


def test_paid_just_before_the_cancel_is_recorded(stack: Stack) -> None:  # noqa: F811
    s = stack
    slow = Slow(s.link)
    app, reader = make_kiosk(s.till, s.link)
    app.engine.mpm = slow
    try:
        key_in(app, 2_500)
        touch(app, "pay:qr")
        reference = app.model.sale_ref
        sale_opened(s, reference)
        paid = app_pay(s, reference, 2_500, "app-9")
        assert paid.status_code == 200
        touch(app, "cancel")
        assert app.model.screen == Screen.KEYPAD
        # the money moved: the close hears of it, the worker records it, the screen says so
        pump(app, lambda: app.model.screen == Screen.RESULT, "the late approval")
        view = app.model.result
        assert view is not None and (view.outcome, view.amount) == ("approved", 2_500)
        assert s.ledger.head.seq == 1
        detail = json.loads(s.ledger.entry(1).fields.detail)
        assert detail["mpm_payment"] == paid.json()["payment"]
        assert sum(moved(s).values()) == 2_500
        assert app.engine.online_settled(10)
    finally:
        app.close()
        reader.close()


def test_no_network_says_so_and_a_card_still_pays(tmp_path: Path) -> None:
    cfg = DEFAULT.replace("terminal", role="till", id="TILL-1", language="en", place="M0001",
                          merchant_name="Test Store")
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "till.sqlite"
    ledger = Ledger(path, key=key, terminal_id="TILL-1")
    terminal = Terminal(cfg, ledger, DEMO_TOKEN_KEY,
                        clock_trust=ClockTrust(ledger, ntp=lambda: True))
    # nothing listens on this port
    verifier = load_signer(tmp_path / "data", create=True).verifier.text()
    client = SyncClient(path, key, f"http://127.0.0.1:{free_port()}", verifier, timeout_s=2)
    app, reader = make_kiosk(terminal, MpmLink(client, "TILL-1"))
    try:
        key_in(app, 4_500)
        touch(app, "pay:qr")
        assert app.model.screen == Screen.WAIT_QR
        pump(app, lambda: app.model.qr_offline, "the no-network line")
        app.step(force=True)
        drawn = {r.name: r.text for r in app.painter.records}
        assert drawn["qr_no_network"] == tr("en", "qr_no_network")
        assert "qr_hint" not in drawn
        assert app.model.screen == Screen.WAIT_QR and ledger.head.seq == 0
        # the sale still waits for a card (or the wallet's code), which the till approves
        reader.present_uid(MINJI)
        pump(app, lambda: app.model.screen == Screen.RESULT, "the card's decision")
        view = app.model.result
        assert view is not None and (view.outcome, view.amount) == ("approved", 4_500)
        assert ledger.head.seq == 1
        assert "mpm_payment" not in json.loads(ledger.entry(1).fields.detail)
        assert app.engine.online_settled(10)
    finally:
        app.close()
        reader.close()
        client.close()
        ledger.close()


def test_quitting_closes_the_shown_code_and_keeps_a_payment(stack: Stack) -> None:  # noqa: F811
    s = stack
    slow = Slow(s.link)
    app, reader = make_kiosk(s.till, s.link)
    app.engine.mpm = slow
    app.engine.mpm_wait_s = 8.0  # a long-poll still waiting when the kiosk quits
    try:
        key_in(app, 1_700)
        touch(app, "pay:qr")
        paid_ref = app.model.sale_ref
        sale_opened(s, paid_ref)
        paid = app_pay(s, paid_ref, 1_700, "app-q")
        assert paid.status_code == 200
    finally:
        started = time.monotonic()
        app.close()
        reader.close()
    assert time.monotonic() - started < 6  # quitting does not wait for the long-poll
    # the payment that came before the quit is recorded; the code is no longer payable
    assert s.ledger.head.seq == 1
    detail = json.loads(s.ledger.entry(1).fields.detail)
    assert (detail["mpm_payment"], detail["reference"]) == (paid.json()["payment"], paid_ref)
    row = sale_row(s, paid_ref)
    assert row is not None and row[0] == paid.json()["payment"]
    assert sum(moved(s).values()) == 1_700

    # a sale nobody paid, shown when the kiosk quits: closed at central
    app, reader = make_kiosk(s.till, s.link)
    app.engine.mpm = Slow(s.link)
    app.engine.mpm_wait_s = 8.0
    try:
        key_in(app, 900)
        touch(app, "pay:qr")
        ref = app.model.sale_ref
        sale_opened(s, ref)
    finally:
        app.close()
        reader.close()
    row = sale_row(s, ref)
    assert row is not None and row[0] is None and row[1] is not None
    assert app_pay(s, ref, 900, "app-r").status_code == 404
    assert s.ledger.head.seq == 1 and sum(moved(s).values()) == 1_700


def code_pixels(app: KioskApp) -> int:
    """Light pixels in the sale code's square (QR modules are drawn on white): every 2nd
    pixel of the square the WAIT_QR screen gives the code."""
    surface = app.screen
    sx, sy = surface.get_width() / 800, surface.get_height() / 480
    light = 0
    for x in range(int(16 * sx), int(436 * sx), 2):
        for y in range(int(52 * sy), int(472 * sy), 2):
            r, g, b, *_ = surface.get_at((x, y))
            light += r + g + b > 700
    return light


def test_the_wait_ends_unpaid_the_code_goes_and_says_so(kiosk) -> None:
    s, app, _reader = kiosk
    app.engine.mpm_timeout_s = 2.0
    key_in(app, 2_200)
    touch(app, "pay:qr")
    reference = app.model.sale_ref
    sale_opened(s, reference)
    pump(app, lambda: code_pixels(app) > 1_000, "the code")  # drawn in the background
    assert "qr_notice" not in {r.name for r in app.painter.records}
    pump(app, lambda: app.model.qr_notice == "qr_expired", "the expired notice")
    for language in ("en", "ko"):
        app.model.language = language
        app.step(force=True)
        drawn = {r.name: r.text for r in app.painter.records}
        assert drawn["qr_notice"] == tr(language, "qr_expired")
        assert "qr_hint" not in drawn
        assert code_pixels(app) == 0  # the code is no longer shown
    assert tr("ko", "qr_expired").startswith("시간이 지났습니다")
    # it was closed at central: no app pays it now; the sale still waits for a card
    row = sale_row(s, reference)
    assert row is not None and row[0] is None and row[1] is not None
    assert app_pay(s, reference, 2_200, "late-x").status_code == 404
    assert app.model.screen == Screen.WAIT_QR and s.ledger.head.seq == 0
    assert moved(s) == {} and balance(s, books.pocket("A")) == CASH
    # the next sale's code shows again
    touch(app, "cancel")
    touch(app, "clear")
    key_in(app, 700)
    touch(app, "pay:qr")
    assert app.model.qr_notice == ""
    pump(app, lambda: code_pixels(app) > 1_000, "the next sale's code")


def test_network_lost_after_the_app_paid_is_asked_again(stack: Stack) -> None:  # noqa: F811
    s = stack
    net = CuttingProxy(s.srv.port, cut_connections=False)  # the till's network
    client = SyncClient(s.client.ledger_path, s.client.key, f"http://127.0.0.1:{net.port}",
                        s.srv.verifier, timeout_s=5)
    app, reader = make_kiosk(s.till, MpmLink(client, "TILL-1"))
    app.engine.mpm_retry_s = 0.2
    try:
        key_in(app, 3_000)
        touch(app, "pay:qr")
        reference = app.model.sale_ref
        sale_opened(s, reference)
        pump(app, lambda: code_pixels(app) > 1_000, "the code")
        # the till's network goes; the app, on its own network, pays
        cut = net.down()  # the long-poll in flight is cut, new connections dropped
        paid = app_pay(s, reference, 3_000, "app-net")
        assert paid.status_code == 200, paid.text
        pump(app, lambda: app.model.qr_notice == "qr_checking", "the checking notice")
        app.step(force=True)
        drawn = {r.name: r.text for r in app.painter.records}
        assert drawn["qr_notice"] == tr("en", "qr_checking")
        assert code_pixels(app) == 0 and s.ledger.head.seq == 0
        # the clerk tries a card meanwhile: not taken while the answer is unknown
        reader.present_uid(MINJI)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            app.step()
            time.sleep(0.01)
        assert app.model.screen == Screen.WAIT_QR and s.ledger.head.seq == 0
        assert app.model.qr_notice == "qr_checking"
        # the network comes back: the till hears of the payment and records it, once
        net.up()
        pump(app, lambda: app.model.screen == Screen.RESULT, "the approval")
        view = app.model.result
        assert view is not None and (view.outcome, view.amount) == ("approved", 3_000)
        assert s.ledger.head.seq == 1
        detail = json.loads(s.ledger.entry(1).fields.detail)
        assert (detail["mpm_payment"], detail["reference"]) == (paid.json()["payment"],
                                                                reference)
        assert app.engine.online_settled(10)
        assert s.ledger.head.seq == 1
        assert list(moved(s).values()) == [3_000]
        assert balance(s, books.pocket("A")) == CASH - 3_000
        assert cut >= 1
    finally:
        app.close()
        reader.close()
        client.close()
        net.close()
