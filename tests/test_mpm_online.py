"""Online payment of the till's QR code (issue #17), end to end against a real
``localpay central serve`` on SQLite and PostgreSQL: the till opens its sale, the citizen's
app pays it with an app partner key, the till's long-poll hears it and records its entry,
and the books show the payment once, also after the till's batch arrives. Every figure is
worked out by hand here."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import accounts, books, mpm_payments
from central import open_service as open_central
from central.keys import load_signer
from central.merchants import Registry
from central.service import CentralLog
from central.topups import add_partner
from firmware_cfg.keys import DEMO_TOKEN_KEY, public_hex
from localpay.cli.bench.stacks import CentralProcess, free_port, start_central
from offline_ledger import Ledger
from sync.client import SyncClient
from sync.mpm import MpmLink
from terminal.core import Terminal
from terminal.mpm_online import OnlineResult, new_reference, take_online
from terminal.qr.mpm import build_dynamic, parse
from tests.conftest import FakeClock
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401
from tests.test_pockets_e2e import LOCAL, config_of

CARD = "ab" * 32
CASH = 10_000


@dataclass
class Stack:
    svc: CentralLog
    srv: CentralProcess
    app_key: str
    topup_key: str
    till: Terminal
    ledger: Ledger
    client: SyncClient
    link: MpmLink


@pytest.fixture
def stack(store_url: str, tmp_path: Path) -> Iterator[Stack]:  # noqa: F811
    svc = open_central(store_url, tmp_path / "data")
    svc.store.init_schema()
    Registry(svc.store).add(LOCAL)
    with svc.store.tx() as tx:
        accounts.link(tx, "A", CARD)
        books.open_account(tx, books.BANK_OUTSIDE)
        books.transfer(tx, [books.Transfer(books.BANK_OUTSIDE, books.pocket("A"), CASH,
                                           "topup", "topup:A")])
    key = Ed25519PrivateKey.generate()
    svc.add_terminal("TILL-1", bytes.fromhex(public_hex(key)))
    Registry(svc.store).assign_terminal("TILL-1", LOCAL.merchant_id)
    app_key = mpm_payments.add_app_partner(svc.store, "cityapp")
    topup_key = add_partner(svc.store, "bank1")
    srv = start_central(store_url, tmp_path / "data",
                        command=("-m", "localpay", "central", "serve"))
    path = tmp_path / "till.sqlite"
    ledger = Ledger(path, key=key, terminal_id="TILL-1")
    till = Terminal(config_of(LOCAL, "TILL-1"), ledger, DEMO_TOKEN_KEY,
                    clock=FakeClock(time.time()))
    client = SyncClient(path, key, srv.url, srv.verifier)
    try:
        yield Stack(svc, srv, app_key, topup_key, till, ledger, client,
                    MpmLink(client, "TILL-1"))
    finally:
        client.close()
        srv.stop()
        ledger.close()
        try:
            assert books.check(svc.store).balanced
        finally:
            svc.store.close()


def app_pay(s: Stack, reference: str, amount: int, app_ref: str, *, key: str | None = None,
            payer: str = CARD) -> httpx.Response:
    return httpx.post(s.srv.url + "/v1/mpm-payments", json={
        "reference": reference, "amount": amount, "payer": payer, "app_reference": app_ref},
        headers={"Authorization": f"Bearer {key or s.app_key}"}, timeout=10)


def moved(s: Stack) -> dict[str, int]:
    with s.svc.store.tx(write=False) as tx:
        rows = tx.all("SELECT ref, amount FROM book_transfers WHERE code = 'payment'")
    return {str(r): int(a) for r, a in rows}


def balance(s: Stack, account: str) -> int:
    with s.svc.store.tx(write=False) as tx:
        return books.balance(tx, account)


def sell_online(s: Stack, amount: int, timeout_s: float = 20
                ) -> tuple[str, threading.Thread, list[OnlineResult]]:
    """The till shows a code for ``amount`` and waits in a thread; returns once the sale is
    open at central."""
    reference = new_reference()
    out: list[OnlineResult] = []
    opened = threading.Event()

    class Watched:
        def open(self, ref: str, won: int) -> None:
            try:
                s.link.open(ref, won)
            finally:
                opened.set()

        def wait(self, ref: str, wait_s: float) -> str | None:
            return s.link.wait(ref, wait_s)

        def close(self, ref: str) -> str | None:
            return s.link.close(ref)

    t = threading.Thread(target=lambda: out.append(
        take_online(s.till, Watched(), amount, reference, timeout_s=timeout_s, wait_s=1)))
    t.start()
    assert opened.wait(10)
    time.sleep(0.05)
    assert not out, out
    return reference, t, out


def test_reference_fits_the_code_and_is_unguessable() -> None:
    refs = {new_reference() for _ in range(1000)}
    assert len(refs) == 1000
    for ref in refs:
        assert mpm_payments.REFERENCE_RE.fullmatch(ref)
    ref = next(iter(refs))
    payload = build_dynamic(3_500, merchant_name="FARM", city="GOYANG", reference=ref,
                            merchant_id="M-LOCAL")
    assert parse(payload).reference == ref


def test_app_pays_till_records_books_once(stack: Stack) -> None:
    s = stack
    reference, waiter, out = sell_online(s, 3_500)
    r = app_pay(s, reference, 3_500, "app-1")
    assert r.status_code == 200, r.text
    first = r.json()
    assert (first["amount"], first["account"], first["replayed"]) == (3_500, "A", False)
    waiter.join(15)
    assert out and out[0].status == "approved", out
    entry = out[0].decision.entry if out[0].decision else None
    assert entry is not None and entry.fields.kind == "payment"
    assert entry.fields.amount == 3_500 and entry.fields.card_token == ""
    detail = json.loads(entry.fields.detail)
    assert (detail["mpm_payment"], detail["reference"]) == (first["payment"], reference)
    # books: the cash pocket paid the merchant, once
    refs = moved(s)
    assert sum(refs.values()) == 3_500 and len(refs) == 1
    assert balance(s, books.pocket("A")) == CASH - 3_500
    assert balance(s, books.merchant_payable(LOCAL.merchant_id)) == 3_500
    # the till's batch arrives and is posted by the spending poster: nothing moves again
    assert s.client.sync_once().sent == 1
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with s.svc.store.tx(write=False) as tx:
            row = tx.one("SELECT till_seq FROM mpm_payments WHERE payment_id = ?",
                         (first["payment"],))
        if row is not None and row[0] is not None:
            break
        time.sleep(0.05)
    assert row is not None and int(row[0]) == entry.fields.seq
    assert moved(s) == refs
    assert balance(s, books.pocket("A")) == CASH - 3_500
    with s.svc.store.tx(write=False) as tx:
        assert tx.all("SELECT reason FROM pocket_flags") == []
    # a second entry naming the same payment (a till that recorded it twice) is flagged,
    # never posted
    assert s.till.paid_online(first["payment"], reference, 3_500).approved
    assert s.client.sync_once().sent == 1
    deadline = time.monotonic() + 10
    flags: list[tuple[object, ...]] = []
    while time.monotonic() < deadline and not flags:
        with s.svc.store.tx(write=False) as tx:
            flags = tx.all("SELECT reason, seq FROM pocket_flags")
        time.sleep(0.05)
    assert [(str(r), int(q)) for r, q in flags] == [("not_posted", entry.fields.seq + 1)]
    assert moved(s) == refs
    # the app replays its request: the first answer, nothing moved
    again = app_pay(s, reference, 3_500, "app-1")
    assert again.status_code == 200
    assert {**again.json(), "time_ms": 0} == {**first, "replayed": True, "time_ms": 0}
    # another payment of the same reference: refused, naming the first
    twice = app_pay(s, reference, 3_500, "app-2")
    assert twice.status_code == 409 and twice.json()["payment"] == first["payment"]
    assert moved(s) == refs


def test_refusals(stack: Stack) -> None:
    s = stack
    reference, waiter, out = sell_online(s, 2_000)
    wrong = app_pay(s, reference, 2_001, "x-1")
    assert wrong.status_code == 422 and wrong.json()["error"] == "amount_mismatch"
    unknown = app_pay(s, new_reference(), 2_000, "x-2")
    assert unknown.status_code == 404
    topup_key = app_pay(s, reference, 2_000, "x-3", key=s.topup_key)
    assert topup_key.status_code == 401
    # and the app's key opens no top-up
    r = httpx.post(s.srv.url + "/v1/topups", json={"reference": "t", "account": CARD,
                                                     "face_value": 1, "paid": 1},
                   headers={"Authorization": f"Bearer {s.app_key}"}, timeout=10)
    assert r.status_code == 401
    # a made-up reference that is not 20 base32 characters
    assert app_pay(s, "TILL-1:1", 2_000, "x-4").status_code == 400
    assert moved(s) == {} and balance(s, books.pocket("A")) == CASH
    # more than the pockets hold: refused, nothing moved
    big, waiter2, out2 = sell_online(s, CASH + 1, timeout_s=2)
    poor = app_pay(s, big, CASH + 1, "x-5")
    assert poor.status_code == 422 and poor.json()["error"] == "insufficient_funds"
    assert moved(s) == {} and balance(s, books.pocket("A")) == CASH
    # the app's reference reused for another sale
    ok = app_pay(s, reference, 2_000, "x-6")
    assert ok.status_code == 200
    reused = app_pay(s, big, CASH + 1, "x-6")
    assert reused.status_code == 409 and reused.json()["error"] == "reference_reused"
    waiter.join(15)
    assert out[0].status == "approved"
    # the other sale times out at the till: nobody paid it, and it is closed at central
    waiter2.join(10)
    assert out2[0].status == "timeout" and out2[0].message == ""
    late = app_pay(s, big, CASH + 1, "x-7")
    assert late.status_code == 404 and "no longer shows" in late.json()["message"]


def test_no_network_at_the_till(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "till.sqlite"
    ledger = Ledger(path, key=key, terminal_id="TILL-1")
    till = Terminal(config_of(LOCAL, "TILL-1"), ledger, DEMO_TOKEN_KEY,
                    clock=FakeClock(time.time()))
    # nothing listens on this port
    verifier = load_signer(tmp_path / "data", create=True).verifier.text()
    client = SyncClient(path, key, f"http://127.0.0.1:{free_port()}", verifier, timeout_s=2)
    try:
        result = take_online(till, MpmLink(client, "TILL-1"), 1_000, new_reference())
        # the screen says so and offers the wallet QR or a card; nothing was recorded
        assert result.status == "no_network" and result.decision is None
        assert ledger.head.seq == 0
    finally:
        client.close()
        ledger.close()


def test_the_kiosk_says_no_network_and_offers_the_others() -> None:
    import pygame

    from kiosk_ui.draw import Painter
    from kiosk_ui.fonts import load_fonts
    from kiosk_ui.i18n import tr
    from kiosk_ui.model import KioskModel, OnlineQrDown, Screen
    from kiosk_ui.screens import Statics, render

    m = KioskModel(role="till", language="en", merchant_name="Farm")
    m.press("digit:5")
    m.press("pay:qr")
    assert m.screen == Screen.WAIT_QR
    assert mpm_payments.REFERENCE_RE.fullmatch(m.sale_ref)
    painter = Painter(pygame.Surface((800, 480)), load_fonts())
    render(painter, m.snapshot(), Statics())
    assert "qr_hint" in {r.name for r in painter.records}
    m.on_event(OnlineQrDown())
    assert m.screen == Screen.WAIT_QR and m.qr_offline
    for language in ("en", "ko"):
        m.language = language
        painter = Painter(pygame.Surface((800, 480)), load_fonts())
        render(painter, m.snapshot(), Statics())
        drawn = {r.name: r.text for r in painter.records}
        assert drawn["qr_no_network"] == tr(language, "qr_no_network")
        assert "qr_hint" not in drawn
    # the next sale starts with the app payment offered again
    m.press("cancel")
    m.press("digit:5")
    m.press("pay:qr")
    assert not m.qr_offline


def test_app_partner_added_by_command(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from localpay.cli import cli

    db = f"sqlite:///{tmp_path / 'central.sqlite'}"
    where = ["--db", db, "--data", str(tmp_path / "data")]
    assert CliRunner().invoke(cli, ["central", "init", *where]).exit_code == 0
    added = CliRunner().invoke(cli, ["central", "mpm", "partner-add", *where, "cityapp"])
    assert added.exit_code == 0, added.output
    key = added.stdout.strip().splitlines()[-1]
    again = CliRunner().invoke(cli, ["central", "mpm", "partner-add", *where, "cityapp"])
    assert again.exit_code == 2 and "already has a key" in again.output
    svc = open_central(db, tmp_path / "data")
    try:
        assert mpm_payments.authenticate(svc.store, key) == mpm_payments.AppPartner(
            "cityapp", "default")
        with pytest.raises(mpm_payments.MpmPartnerAuthError):
            mpm_payments.authenticate(svc.store, key + "x")
    finally:
        svc.store.close()


def test_two_apps_pay_one_reference_at_once(stack: Stack) -> None:
    s = stack
    reference, waiter, out = sell_online(s, 1_000)
    answers: list[httpx.Response] = []
    barrier = threading.Barrier(4)

    def one(n: int) -> None:
        barrier.wait()
        answers.append(app_pay(s, reference, 1_000, f"race-{n}"))

    racers = [threading.Thread(target=one, args=(n,)) for n in range(4)]
    for t in racers:
        t.start()
    for t in racers:
        t.join(20)
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 409, 409, 409], [r.text for r in answers]
    paid = next(r.json()["payment"] for r in answers if r.status_code == 200)
    assert {r.json()["payment"] for r in answers} == {paid}
    assert sum(moved(s).values()) == 1_000
    assert balance(s, books.pocket("A")) == CASH - 1_000
    waiter.join(15)
    assert out[0].status == "approved"


def test_a_payment_just_before_the_close_is_recorded(stack: Stack) -> None:
    s = stack
    reference = new_reference()
    s.link.open(reference, 1_500)
    paid = app_pay(s, reference, 1_500, "late-1")
    assert paid.status_code == 200

    class Blind:
        """The till cancels before its poll saw the payment."""

        def open(self, ref: str, won: int) -> None:
            s.link.open(ref, won)  # the same details again: the same answer

        def wait(self, ref: str, wait_s: float) -> str | None:
            raise AssertionError("cancelled before any wait")

        def close(self, ref: str) -> str | None:
            return s.link.close(ref)

    result = take_online(s.till, Blind(), 1_500, reference, cancelled=lambda: True)
    assert result.status == "approved" and result.decision is not None
    entry = result.decision.entry
    assert entry is not None
    assert json.loads(entry.fields.detail)["mpm_payment"] == paid.json()["payment"]
    # closing a sale nobody paid: no app pays it afterwards
    other = new_reference()
    s.link.open(other, 700)
    assert s.link.close(other) is None
    assert app_pay(s, other, 700, "late-2").status_code == 404
    assert sum(moved(s).values()) == 1_500
