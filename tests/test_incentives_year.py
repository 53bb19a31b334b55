"""Money that stays right over months: payouts in any order pay every point exactly once,
held points are paid once the card has an account, and nothing a terminal sends can block a
payout. Real ingest and crediting, on SQLite and a real PostgreSQL.

Every figure of points is compared with one computed in the test from the fares and rates
written here, not read back from the service.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.incentives import IncentiveCrediter, payout, statement
from central.rules import default_hooks
from central.service import CentralLog
from central.store import open_store
from firmware_cfg.keys import public_hex
from sync.checkpoint import NoteSigner
from tests.incentives_data import Chain, seoul_ms
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401

X, Y, Z = "7" * 32, "8" * 32, "9" * 32
FOOD_RATE_BP = 30  # the shipped rules: 0.3 % of a local-food payment


@pytest.fixture
def svc(store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    log = CentralLog(open_store(store_url), NoteSigner("test.example/log",
                                                       Ed25519PrivateKey.generate()),
                     hooks=default_hooks(), followers=[IncentiveCrediter()])
    yield log
    log.store.close()


def chain(svc: CentralLog, tid: str) -> Chain:
    c = Chain(tid)
    svc.add_terminal(tid, bytes.fromhex(public_hex(c.key)))
    return c


def balance(svc: CentralLog, token: str) -> int:
    with svc.store.tx(write=False) as tx:
        row = tx.one("SELECT balance FROM balances WHERE card_token = ?", (token,))
    return int(row[0]) if row else 0


def after(year: int, month: int) -> int:
    """A moment just after ``month`` ended in Seoul."""
    return seoul_ms(year + month // 12, month % 12 + 1, 1, 0, 5)


def test_held_card_is_paid_once_whatever_order_months_are_paid_in(svc: CentralLog) -> None:
    """Reproduced on the old code: held in September, November paid before October, an
    account opened, then October and December paid: 'earned 1,450; paid 2,900'."""
    bus = chain(svc, "BUS-1")
    fare = 1450
    svc.ingest("BUS-1", [bus.tap(X, seoul_ms(2025, 9, 2, 8), fare=fare)])   # a Tuesday
    earned = fare                                  # first ride of a weekday: its fare back
    assert statement(svc.store, X)["earned"] == earned
    sep = payout(svc.store, "2025-09", after(2025, 9))
    assert (sep.cards, sep.held_cards, sep.held_points) == (0, 1, earned)
    nov = payout(svc.store, "2025-11", after(2025, 11))
    assert (nov.cards, nov.held_cards, nov.held_points) == (0, 1, earned)
    svc.set_balances({X: 0})                       # the card gets a balance account
    octo = payout(svc.store, "2025-10", after(2025, 10))
    assert (octo.cards, octo.points, octo.held_cards) == (1, earned, 0)
    dec = payout(svc.store, "2025-12", after(2025, 12))
    assert (dec.cards, dec.points, dec.held_cards) == (0, 0, 0)
    st = statement(svc.store, X)
    assert (st["earned"], st["paid"], st["pending"]) == (earned, earned, 0)
    assert balance(svc, X) == earned
    assert [(p["month"], p["status"], p["paid"]) for p in st["payouts"]] == [
        ("2025-09", "held", 0), ("2025-10", "paid", earned), ("2025-11", "held", 0)]
    assert [e["paid_in"] for e in st["entries"]] == ["2025-10"]


def test_months_paid_in_any_order_pay_every_point_once(svc: CentralLog) -> None:
    bus, till = chain(svc, "BUS-1"), chain(svc, "TILL-1")
    svc.set_balances({X: 0, Y: 0, Z: 0})
    pay = till.pay(Y, 100_000, seoul_ms(2025, 5, 14, 12))
    svc.ingest("BUS-1", [bus.tap(X, seoul_ms(2025, 4, 8, 8)),            # April, Tuesday
                         bus.tap(X, seoul_ms(2025, 5, 13, 8), fare=1200),  # May, Tuesday
                         bus.tap(Z, seoul_ms(2025, 6, 10, 8))])            # June, Tuesday
    svc.ingest("TILL-1", [pay, till.refund(Y, 40_000, pay.seq, seoul_ms(2025, 6, 2, 12))])
    food = 100_000 * FOOD_RATE_BP // 10_000                     # 300 in May
    back = (100_000 - 40_000) * FOOD_RATE_BP // 10_000 - food   # -120 in June
    want = {X: {"2025-04": 1500, "2025-05": 1200}, Y: {"2025-05": food, "2025-06": back},
            Z: {"2025-06": 1500}}
    # what each card spent from its balance (taps and payments, less the refund)
    spent = {X: 1500 + 1200, Y: 100_000 - 40_000, Z: 1500}
    # June first, then April, May twice, June again.
    jun = payout(svc.store, "2025-06", after(2025, 6))
    # Y's June net is negative: carried, not paid; Z is paid.
    assert (jun.cards, jun.points) == (1, 1500)
    apr = payout(svc.store, "2025-04", after(2025, 6))
    assert (apr.cards, apr.points) == (1, 1500)
    may = payout(svc.store, "2025-05", after(2025, 6))
    # May pays X's May, and Y's May with June's carried refund netted against it.
    assert (may.cards, may.points) == (2, 1200 + food + back)
    assert payout(svc.store, "2025-05", after(2025, 6)).already
    assert payout(svc.store, "2025-06", after(2025, 6)).already
    for token, months in want.items():
        earned = sum(months.values())
        st = statement(svc.store, token)
        assert st["earned"] == earned and st["paid"] == earned and st["pending"] == 0, token
        assert balance(svc, token) == earned - spent[token], token
