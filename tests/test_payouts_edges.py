"""Edges of the points payout into pockets (central.payouts): what the books' transfer and
the log say of a run, the smallest net paid, and the refusals' messages."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from central import accounts, books
from central.payouts import PointsBudgetShortError, fund_points, payout
from central.service import CentralLog
from localpay.errors import ConfigError
from tests.incentives_data import chain, seoul_ms
from tests.payout_world import A_CARD, B_CARD, BUDGET, LOOSE, NOV_2, payout_world
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401
from tests.test_spending import LOCAL, pockets_of, till


@pytest.fixture
def svc(store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    yield from payout_world(store_url)


def rides(svc: CentralLog, fares: dict[str, int]) -> None:
    """One adult's first weekday ride each (Monday 12 October 2026): its fare is its points."""
    bus = chain(svc, "BUS-1")
    svc.ingest("BUS-1", [bus.tap(card, seoul_ms(2026, 10, 12, 8, n), fare=fare)
                         for n, (card, fare) in enumerate(sorted(fares.items()))])


def test_a_pocket_payout_names_card_and_month_and_is_logged(
        svc: CentralLog, caplog: pytest.LogCaptureFixture) -> None:
    with svc.store.tx() as tx:
        accounts.link(tx, "A", A_CARD)
    svc.set_balances({LOOSE: 10_000})
    rides(svc, {A_CARD: 1_500, LOOSE: 1_400, B_CARD: 1_300})
    fund_points(svc.store, 9_000, "f1", at_ms=NOV_2 - 1_000)
    with caplog.at_level(logging.INFO, logger="central.payouts"):
        result = payout(svc.store, "2026-10", NOV_2)
    assert (result.cards, result.points, result.pocket_cards, result.pocket_points,
            result.held_cards, result.held_points) == (2, 1_500 + 1_400, 1, 1_500, 1, 1_300)
    assert [r.getMessage() for r in caplog.records if r.name == "central.payouts"] == [
        "payout 2026-10: 2 cards, 2900 points (1 cards, 1500 points into pockets); 1 held"]
    with svc.store.tx(write=False) as tx:
        moved = tx.all("SELECT debit_account, credit_account, amount, at_ms, detail "
                       "FROM book_transfers WHERE code = 'points_payout'")
        funded = tx.all("SELECT ref, at_ms FROM book_transfers WHERE code IN "
                        "('funding', 'budget') ORDER BY ref")
        row = tx.one("SELECT points, paid, carry, status FROM incentive_payouts "
                     "WHERE card_token = ?", (A_CARD,))
    assert [tuple(r) for r in moved] == [
        (BUDGET, "pocket:A:points", 1_500, NOV_2,
         '{"card":"' + A_CARD + '","month":"2026-10"}')]
    assert json.loads(moved[0][4]) == {"card": A_CARD, "month": "2026-10"}
    assert [(str(r[0]), int(r[1])) for r in funded] == [
        ("points-budget:incentives:f1", NOV_2 - 1_000),
        ("points-funding:incentives:f1", NOV_2 - 1_000)]
    assert row is not None and tuple(row) == (1_500, 1_500, 0, "paid")
    assert pockets_of(svc, "A")["points"] == 1_500


def test_a_net_of_one_point_is_paid_into_the_pocket(svc: CentralLog) -> None:
    with svc.store.tx() as tx:
        accounts.link(tx, "A", A_CARD)
    rides(svc, {A_CARD: 1})
    fund_points(svc.store, 1, "f1")
    result = payout(svc.store, "2026-10", NOV_2)
    assert (result.pocket_cards, result.pocket_points, result.held_cards) == (1, 1, 0)
    assert pockets_of(svc, "A")["points"] == 1


def test_the_refusals_say_what_is_wrong(svc: CentralLog) -> None:
    with pytest.raises(ConfigError, match=r"^amount 0: a whole number of won above zero$"):
        fund_points(svc.store, 0, "f0")
    with svc.store.tx() as tx:
        accounts.link(tx, "A", A_CARD)
    rides(svc, {A_CARD: 1_500})
    fund_points(svc.store, 400, "f1")
    with pytest.raises(PointsBudgetShortError) as err:
        payout(svc.store, "2026-10", NOV_2)
    assert str(err.value) == (
        f"{BUDGET} holds 400 won; the payout into 1 points pockets needs 1,500 (1,100 short): "
        "nothing paid. Fund the points budget first (localpay central payout-fund).")


def test_points_earned_and_taken_back_in_the_month_pay_nothing(svc: CentralLog) -> None:
    with svc.store.tx() as tx:
        accounts.link(tx, "A", A_CARD)
        books.open_account(tx, books.BANK_OUTSIDE)
        books.transfer(tx, [books.Transfer(books.BANK_OUTSIDE, "pocket:A:cash", 200_000,
                                           "topup", "top-A")])
    fund_points(svc.store, 1_000, "f1")
    shop = till(svc, "TILL-L", LOCAL)
    # 100,000 won at a local-food shop earns 0.3 %, 300 points; voided the same month
    svc.ingest("TILL-L", [shop.pay(A_CARD, 100_000, seoul_ms(2026, 10, 20, 10)),
                          shop.refund(A_CARD, 100_000, 1, seoul_ms(2026, 10, 21, 10),
                                      kind="void")])
    result = payout(svc.store, "2026-10", NOV_2)
    assert (result.cards, result.points, result.pocket_cards, result.held_cards) == (0, 0, 0, 0)
    assert pockets_of(svc, "A")["points"] == 0
    with svc.store.tx(write=False) as tx:
        assert tx.all("SELECT amount FROM book_transfers WHERE code = 'points_payout'") == []
        assert books.balance(tx, BUDGET) == 1_000
