"""The spending poster, and online payments, against another worker moving the same money
(PostgreSQL).

The poster read an account's pockets, split a till's offline payment over them, and only
then transferred; the books re-check each balance under a row lock and refuse a transfer
the pocket cannot pay, and the poster flagged the refusal (``not_posted``) and moved on:
when the citizen's app paid an online QR sale from the same pockets in between, the till's
approved payment was never posted (the merchant unpaid, the overdraft unrecorded). A refund
did the same when the settlement of its payment's day drained the merchant's payable
between the poster's read and its transfer: neither posted nor waiting, the citizen's money
never given back. Reproduced by a review with two workers, 3 payments lost of 40 and 1-2
refunds of 30-40. The poster now holds the rows first, then reads.

The other worker is made to land in the gap: the poster's read is wrapped, in this test
only, to start it there and wait for it (at most a few seconds: with the rows held it
waits for the poster instead).
"""

from __future__ import annotations

import base64
import secrets
import threading
from collections.abc import Callable
from typing import Any

import pytest

from central import books, spending, waiting_refunds
from central import mpm_payments as mp
from central.service import CentralLog
from central.settlement import FeeRules, settle
from central.store import Store, open_store
from tests.books_world import shop_lf01
from tests.incentives_data import Chain, open_service, seoul_ms
from tests.pg_fixtures import pg_cluster  # noqa: F401

NOON = seoul_ms(2026, 6, 1, 12)


def _in_the_gap(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str,
                other: Callable[[], None]) -> list[threading.Thread]:
    """Wrap ``owner.name`` so that its first call starts ``other`` in a thread once the
    wrapped read is done, and waits for it a while (it may wait on the rows instead)."""
    real = getattr(owner, name)
    started: list[threading.Thread] = []

    def wrapped(*args: Any, **kw: Any) -> Any:
        out = real(*args, **kw)
        if not started:
            started.append(threading.Thread(target=other))
            started[0].start()
            started[0].join(timeout=3)
        return out

    monkeypatch.setattr(owner, name, wrapped)
    return started


def _shop(url: str, cash: int) -> tuple[CentralLog, Chain, mp.AppPartner]:
    """Shop LF01 and its till, an app partner, and citizen A (``card-a``) with ``cash``."""
    svc = open_service(url, followers=[])
    till = shop_lf01(svc)
    partner = mp.authenticate(svc.store, mp.add_app_partner(svc.store, "app1"))
    with svc.store.tx() as tx:
        books.open_account(tx, books.pocket("A", "cash"))
        books.transfer(tx, [books.Transfer(books.BANK_OUTSIDE, books.pocket("A", "cash"),
                                           cash, "topup", "seed-a")])
    return svc, till, partner


def _sales(svc: CentralLog, amount: int, n: int) -> list[str]:
    """``n`` sales of ``amount`` opened at the till (references: 24 characters A-Z, 2-7)."""
    sales = [base64.b32encode(secrets.token_bytes(15)).decode() for _ in range(n)]
    for sale in sales:
        mp.open_sale(svc.store, "T-LF01", sale, amount)
    return sales


def _worker(url: str, partner: mp.AppPartner) -> Store:
    """Another worker's store, its tables made already (as after its first request): nothing
    of the schema orders it against the first."""
    store = open_store(url)
    mp.ensure_schema(store)
    spending.ensure_schema(store, partner.municipality)
    return store


def test_an_online_payment_between_the_read_and_the_transfer_loses_no_till_payment(
        pg_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    url = pg_cluster.new_schema()
    svc, till, partner = _shop(url, 10_000)
    svc.ingest("T-LF01", [till.pay("card-a", 8_000, NOON, "general")])
    sale, = _sales(svc, 7_000, 1)
    app_store = open_store(url)
    paid: list[str] = []

    def app() -> None:  # the citizen's app, through another worker
        paid.append(mp.pay(app_store, partner, sale, 7_000, "card-a", "app-1").payment_id)

    other = _in_the_gap(monkeypatch, spending._Poster, "balances", app)
    try:
        spending.post_log(open_store(url))
        for t in other:
            t.join(timeout=30)
        assert len(paid) == 1, "the app's payment should go through"
        with svc.store.tx(write=False) as tx:
            posting = tx.one("SELECT parts FROM pocket_postings WHERE terminal_id = 'T-LF01' "
                             "AND seq = 1")
            flags = tx.all("SELECT reason FROM pocket_flags WHERE terminal_id = 'T-LF01'")
            cash = books.balance(tx, books.pocket("A", "cash"))
            owed = books.balance(tx, books.receivable("A"))
        # worked out here: 10,000 in cash, 7,000 paid online first, so the till's 8,000 takes
        # the 3,000 left and 5,000 is owed by the citizen
        assert posting is not None and flags == []
        assert posting[0] == '[["cash",3000],["",5000]]'
        assert cash == 10_000 - 7_000 - 3_000 == 0
        assert owed == -(8_000 - 3_000)
        assert books.check(svc.store).balanced
    finally:
        app_store.close()
        svc.store.close()


def test_a_settlement_between_the_read_and_the_transfer_drops_no_refund(
        pg_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    url = pg_cluster.new_schema()
    svc, till, _ = _shop(url, 100_000)
    svc.ingest("T-LF01", [till.pay("card-a", 20_000, NOON, "general")])
    spending.post_log(svc.store)
    svc.ingest("T-LF01", [till.refund("card-a", 5_000, 1, NOON + 3_600_000)])
    settle_store = open_store(url)
    failed: list[BaseException] = []

    def settlement() -> None:  # the day's settlement, through another worker
        try:
            settle(settle_store, "2026-06-01", fee_rules=FeeRules(50, (("ksic:47", 30),)),
                   now_ms=NOON + 86_400_000)
        except BaseException as err:  # reported by the test below
            failed.append(err)

    other = _in_the_gap(monkeypatch, waiting_refunds.books, "find_account", settlement)
    try:
        spending.post_log(open_store(url))
        for t in other:
            t.join(timeout=30)
        with svc.store.tx(write=False) as tx:
            posted = tx.one("SELECT parts FROM pocket_postings WHERE terminal_id = 'T-LF01' "
                            "AND seq = 2")
            waiting = tx.one("SELECT 1 FROM pocket_waiting_refunds WHERE terminal_id = "
                             "'T-LF01' AND seq = 2")
            flags = tx.all("SELECT reason FROM pocket_flags WHERE terminal_id = 'T-LF01'")
            cash = books.balance(tx, books.pocket("A", "cash"))
            payable = books.balance(tx, books.merchant_payable("LF01"))
            status = tx.one("SELECT status FROM settlements WHERE merchant_id = 'LF01'")
        # held first: the refund is posted before the settlement takes the payable
        assert flags == [] and waiting is None and posted is not None
        assert cash == 100_000 - 20_000 + 5_000
        # The settlement, which decided before the refund, finds the payable short once it
        # may read it and holds the day for the merchant (its rule for a refund posted
        # since it decided): it neither fails nor pays out what was given back.
        assert failed == []
        assert status is not None and status[0] == "held"
        assert payable == 20_000 - 5_000
        assert books.check(svc.store).balanced
    finally:
        settle_store.close()
        svc.store.close()


def test_one_app_reference_for_two_sales_at_once_is_refused_as_reused(
        pg_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Not money (the unique key held it), an answer: the second request of one app
    reference, for another sale, failed at the unique key with an error of the store (HTTP
    500) instead of being refused as a reference reused (409)."""
    url = pg_cluster.new_schema()
    svc, _, partner = _shop(url, 50_000)
    sales = _sales(svc, 4_000, 2)
    second_store = _worker(url, partner)
    second: list[BaseException] = []

    def other() -> None:  # the app's same reference for the other sale, another worker
        try:
            mp.pay(second_store, partner, sales[1], 4_000, "card-a", "app-ref-1")
        except BaseException as err:  # reported by the test below
            second.append(err)

    # the gap: the first request has posted its payment and not yet committed
    other_run = _in_the_gap(monkeypatch, mp, "_post", other)
    first_store = open_store(url)
    try:
        paid = mp.pay(first_store, partner, sales[0], 4_000, "card-a", "app-ref-1")
        for t in other_run:
            t.join(timeout=30)
        assert paid.reference == sales[0]
        assert len(second) == 1 and isinstance(second[0], mp.MpmAppReferenceReusedError)
        with svc.store.tx(write=False) as tx:
            payments = tx.all("SELECT reference FROM mpm_payments WHERE app_ref = 'app-ref-1'")
            cash = books.balance(tx, books.pocket("A", "cash"))
        assert payments == [(sales[0],)]
        assert cash == 50_000 - 4_000
        assert books.check(svc.store).balanced
    finally:
        first_store.close()
        second_store.close()
        svc.store.close()


def test_an_online_payment_whose_pockets_were_drained_in_the_gap_is_refused_for_funds(
        pg_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """An online payment is posted through the till's own path: another payment drawing the
    same pockets between its read and its transfers made the books refuse it, answered as
    an unknown sale (404); held first, read again, it is refused for want of funds (422)."""
    url = pg_cluster.new_schema()
    svc, _, partner = _shop(url, 10_000)
    sales = _sales(svc, 6_000, 2)
    stores = [_worker(url, partner), _worker(url, partner)]
    drained: list[str] = []

    def other() -> None:  # the same citizen's other payment, through another worker
        drained.append(mp.pay(stores[1], partner, sales[1], 6_000, "card-a", "app-2").reference)

    other_run = _in_the_gap(monkeypatch, spending._Poster, "balances", other)
    try:
        with pytest.raises(mp.MpmFundsError, match=r"hold 4,000 won usable here; the sale "
                                                   r"is 6,000 won$"):
            mp.pay(stores[0], partner, sales[0], 6_000, "card-a", "app-1")
        for t in other_run:
            t.join(timeout=30)
        assert drained == [sales[1]]
        with svc.store.tx(write=False) as tx:
            cash = books.balance(tx, books.pocket("A", "cash"))
            paid = tx.all("SELECT reference FROM mpm_payments")
        # worked out here: 10,000, the other payment's 6,000 taken, 4,000 left and untouched
        assert paid == [(sales[1],)] and cash == 10_000 - 6_000
        assert books.check(svc.store).balanced
    finally:
        for store in stores:
            store.close()
        svc.store.close()
