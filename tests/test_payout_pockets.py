"""Points paid into the points pocket (central/payouts.py): a card linked to an account is
paid by a transfer of the books from the points budget into ``pocket:<account>:points``, once
per payout; a card linked to none keeps its old single balance. Through the real ingest path
(signed entries, the crediting and spending followers), on SQLite and PostgreSQL; every
figure is set against the rules' arithmetic written out here, and the books balance after
every test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from central import accounts, books
from central.payouts import (
    POINTS_PROGRAMME,
    PointsBudgetShortError,
    budget,
    fund_points,
    payout,
    payout_ref,
    settlement_rows,
)
from central.service import CentralLog
from localpay.cli import cli
from localpay.errors import BooksError, ConfigError
from tests.incentives_data import chain, seoul_ms
from tests.payout_world import A_CARD, B_CARD, BUDGET, LOOSE, NOV_2, payout_world
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401
from tests.test_spending import LOCAL, MART, pockets_of, till

HELD = "d4" * 32
DEC_2 = seoul_ms(2026, 12, 2, 9)


@pytest.fixture
def svc(store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    yield from payout_world(store_url)


def link(svc: CentralLog, account: str, card: str) -> None:
    with svc.store.tx() as tx:
        accounts.link(tx, account, card)


def old_balance(svc: CentralLog, card: str, won: int) -> None:
    """A card of the single-balance days: a ``balances`` row and no account."""
    svc.set_balances({card: won})


def balance_of(svc: CentralLog, card: str) -> int | None:
    with svc.store.tx(write=False) as tx:
        row = tx.one("SELECT balance FROM balances WHERE card_token = ?", (card,))
    return None if row is None else int(row[0])


def bal(svc: CentralLog, account_id: str) -> int:
    with svc.store.tx(write=False) as tx:
        found = books.find_account(tx, account_id)
    return 0 if found is None else found.balance


def transfers(svc: CentralLog, code: str) -> list[tuple[Any, ...]]:
    with svc.store.tx(write=False) as tx:
        return [tuple(r) for r in tx.all(
            "SELECT debit_account, credit_account, amount, ref FROM book_transfers "
            "WHERE code = ? ORDER BY ref", (code,))]


def everything(svc: CentralLog) -> tuple[list[Any], ...]:
    """What a payout may write: a refused one leaves all of it as it was."""
    with svc.store.tx(write=False) as tx:
        return (tx.all("SELECT * FROM book_accounts ORDER BY account_id"),
                tx.all("SELECT * FROM book_transfers ORDER BY transfer_id"),
                tx.all("SELECT * FROM incentive_payouts ORDER BY card_token, month"),
                tx.all("SELECT * FROM incentive_runs ORDER BY month"),
                tx.all("SELECT * FROM balances ORDER BY card_token"),
                tx.all("SELECT terminal_id, seq, settled_month FROM incentive_credits "
                       "ORDER BY terminal_id, seq"))


def october_rides(svc: CentralLog) -> dict[str, int]:
    """Bus rides in October 2026 for four cards; the points each earned, by the default rules
    worked out by hand: an adult's first weekday ride's fare, at most 2,900 a week."""
    bus = chain(svc, "BUS-1")
    # Mon 12 and Tue 13 October: 1,500 + 1,400 (the week's cap); Thu 15 next: capped
    rides = [(seoul_ms(2026, 10, d, 8, n), card) for d in (12, 13, 15)
             for n, card in enumerate((A_CARD, LOOSE, HELD))]
    # B: Mon 19 and a second ride that day (first ride only), Sat 24 (weekend)
    rides += [(seoul_ms(2026, 10, 19, 8), B_CARD), (seoul_ms(2026, 10, 19, 18), B_CARD),
              (seoul_ms(2026, 10, 24, 9), B_CARD)]
    # a terminal's chain runs in its clock's order
    svc.ingest("BUS-1", [bus.tap(card, ms) for ms, card in sorted(rides)])
    return {A_CARD: 1_500 + 1_400, LOOSE: 1_500 + 1_400, HELD: 1_500 + 1_400, B_CARD: 1_500}


def test_a_linked_card_is_paid_into_its_points_pocket_once(svc: CentralLog) -> None:
    link(svc, "A", A_CARD)
    link(svc, "B", B_CARD)
    old_balance(svc, LOOSE, 10_000)
    earned = october_rides(svc)
    fund_points(svc.store, 10_000, "2026-10", at_ms=NOV_2)
    assert bal(svc, BUDGET) == 10_000
    result = payout(svc.store, "2026-10", NOV_2)
    into = earned[A_CARD] + earned[B_CARD]
    assert (result.cards, result.points) == (3, into + earned[LOOSE])
    assert (result.pocket_cards, result.pocket_points) == (2, into)
    assert (result.held_cards, result.held_points) == (1, earned[HELD])
    assert pockets_of(svc, "A") == {"cash": 0, "points": 2_900}
    assert pockets_of(svc, "B") == {"cash": 0, "points": 1_500}
    assert bal(svc, BUDGET) == 10_000 - into
    assert transfers(svc, "points_payout") == [
        (BUDGET, "pocket:A:points", 2_900, f"points:2026-10:{A_CARD}"),
        (BUDGET, "pocket:B:points", 1_500, f"points:2026-10:{B_CARD}")]
    assert payout_ref("2026-10", A_CARD) == f"points:2026-10:{A_CARD}"
    # the card without an account: its single balance, as before (its three fares were
    # taken from it as they came in); the pocket cards' is left alone (they have none)
    assert balance_of(svc, LOOSE) == 10_000 - 3 * 1_500 + 2_900
    assert balance_of(svc, A_CARD) is None and balance_of(svc, B_CARD) is None
    with svc.store.tx(write=False) as tx:
        rows = {str(r[0]): (int(r[1]), str(r[2]), r[3]) for r in tx.all(
            "SELECT card_token, paid, status, balance_version FROM incentive_payouts")}
    assert rows[A_CARD] == (2_900, "paid", None) and rows[B_CARD] == (1_500, "paid", None)
    assert rows[LOOSE][:2] == (2_900, "paid") and rows[LOOSE][2] is not None
    assert rows[HELD] == (0, "held", None)          # paid nothing: its points wait
    # every card paid is in the settlement file, wherever its points went
    assert {r[0]: r[-1] for r in settlement_rows(svc.store, "2026-10")} == {
        A_CARD: 2_900, B_CARD: 1_500, LOOSE: 2_900}
    assert budget(svc.store, 2026).spent == 2_900 + 1_500 + 2_900
    # a second run answers the first and moves nothing
    before = everything(svc)
    again = payout(svc.store, "2026-10", NOV_2 + 86_400_000)
    assert again.already and (again.pocket_cards, again.pocket_points) == (2, into)
    assert {**again.as_dict(), "already": False} == result.as_dict()
    assert everything(svc) == before


def test_held_points_go_to_the_pocket_once_the_card_is_linked(svc: CentralLog) -> None:
    earned = october_rides(svc)
    fund_points(svc.store, 20_000, "f1")
    first = payout(svc.store, "2026-10", NOV_2)
    assert first.pocket_cards == 0 and first.held_points == sum(earned.values())
    link(svc, "H", HELD)
    # November: HELD pays 30,000 won at a local-food shop, earning 0.3 %: 90 points
    shop = till(svc, "TILL-L", LOCAL)
    svc.ingest("TILL-L", [shop.pay(HELD, 30_000, seoul_ms(2026, 11, 20, 10))])
    # nothing in the pockets yet: the payment is owed, not paid from points
    assert bal(svc, "receivable:H") == -30_000
    nov = payout(svc.store, "2026-11", DEC_2)
    assert (nov.pocket_cards, nov.pocket_points) == (1, earned[HELD] + 30_000 * 3 // 1000)
    assert pockets_of(svc, "H")["points"] == 2_900 + 90
    assert transfers(svc, "points_payout") == [
        (BUDGET, "pocket:H:points", 2_990, f"points:2026-11:{HELD}")]
    assert bal(svc, BUDGET) == 20_000 - 2_990


def test_spending_draws_from_the_points_pocket_by_the_split(svc: CentralLog) -> None:
    link(svc, "A", A_CARD)
    october_rides(svc)
    fund_points(svc.store, 5_000, "f1")
    payout(svc.store, "2026-10", NOV_2)
    with svc.store.tx() as tx:
        books.open_account(tx, books.BANK_OUTSIDE)
        books.transfer(tx, [books.Transfer(books.BANK_OUTSIDE, "pocket:A:cash", 10_000,
                                           "topup", "top-A")])
    shop, mart = till(svc, "TILL-L", LOCAL), till(svc, "TILL-M", MART)
    # a large mart: points may not pay there, the cash does
    svc.ingest("TILL-M", [mart.pay(A_CARD, 4_000, seoul_ms(2026, 11, 3, 10), "general")])
    assert pockets_of(svc, "A") == {"cash": 6_000, "points": 2_900}
    # a local shop: the points first, then cash
    svc.ingest("TILL-L", [shop.pay(A_CARD, 3_500, seoul_ms(2026, 11, 3, 11))])
    assert pockets_of(svc, "A") == {"cash": 5_400, "points": 0}
    with svc.store.tx(write=False) as tx:
        parts = sorted((str(r), int(a)) for r, a in tx.all(
            "SELECT ref, amount FROM book_transfers WHERE code = 'payment'"))
    assert parts == [("pay:TILL-L:1:cash", 600), ("pay:TILL-L:1:points", 2_900),
                     ("pay:TILL-M:1:cash", 4_000)]


def test_a_budget_short_of_the_payout_refuses_it_whole(svc: CentralLog) -> None:
    link(svc, "A", A_CARD)
    link(svc, "B", B_CARD)
    old_balance(svc, LOOSE, 5_000)
    october_rides(svc)
    fund_points(svc.store, 4_399, "f1")             # 2,900 + 1,500 = 4,400 needed
    before = everything(svc)
    with pytest.raises(PointsBudgetShortError, match=r"holds 4,399 won.*needs 4,400"):
        payout(svc.store, "2026-10", NOV_2)
    assert isinstance(PointsBudgetShortError("x"), BooksError)
    # nothing paid: not the pockets, not the old balance, no run, no credit marked
    assert everything(svc) == before
    fund_points(svc.store, 1, "f2")
    done = payout(svc.store, "2026-10", NOV_2)
    assert done.pocket_points == 4_400 and bal(svc, BUDGET) == 0
    assert balance_of(svc, LOOSE) == 5_000 - 3 * 1_500 + 2_900


def test_a_budget_never_opened_refuses_too(svc: CentralLog) -> None:
    link(svc, "A", A_CARD)
    october_rides(svc)
    with pytest.raises(PointsBudgetShortError, match="holds 0 won"):
        payout(svc.store, "2026-10", NOV_2)


def test_a_negative_net_is_carried_and_moves_nothing(svc: CentralLog) -> None:
    link(svc, "A", A_CARD)
    fund_points(svc.store, 1_000_000, "f1")
    shop = till(svc, "TILL-L", LOCAL)
    with svc.store.tx() as tx:
        books.open_account(tx, books.BANK_OUTSIDE)
        books.transfer(tx, [books.Transfer(books.BANK_OUTSIDE, "pocket:A:cash", 200_000,
                                           "topup", "top-A")])
    # October: 100,000 won at a local-food shop earns 300 points
    svc.ingest("TILL-L", [shop.pay(A_CARD, 100_000, seoul_ms(2026, 10, 20, 10))])
    oct_ = payout(svc.store, "2026-10", NOV_2)
    assert oct_.pocket_points == 300 and pockets_of(svc, "A")["points"] == 300
    # November: the payment is refunded whole; the 300 points are taken back, with nothing
    # earned that month: a net of -300 is carried, nothing moves in the books
    svc.ingest("TILL-L", [shop.refund(A_CARD, 100_000, 1, seoul_ms(2026, 11, 5, 10),
                                      kind="void")])
    paid_before = transfers(svc, "points_payout")
    nov = payout(svc.store, "2026-11", DEC_2)
    assert (nov.cards, nov.pocket_cards, nov.held_cards) == (0, 0, 0)
    assert transfers(svc, "points_payout") == paid_before
    with svc.store.tx(write=False) as tx:
        carried = tx.one("SELECT paid, carry, status FROM incentive_payouts "
                         "WHERE card_token = ? AND month = '2026-11'", (A_CARD,))
    assert carried is not None and tuple(carried) == (0, -300, "carried")


def test_the_run_pays_pockets_of_its_own_municipality(svc: CentralLog) -> None:
    with svc.store.tx() as tx:
        accounts.link(tx, "A", A_CARD, municipality="gimpo")
    october_rides(svc)
    fund_points(svc.store, 5_000, "g1", municipality="gimpo")
    # the default municipality's run does not see the link in gimpo: A's points are held
    run = payout(svc.store, "2026-10", NOV_2)
    assert run.pocket_cards == 0 and run.held_points == 3 * 2_900 + 1_500
    with svc.store.tx(write=False) as tx:
        assert books.balance(tx, "pocket:A:points", municipality="gimpo") == 0


def test_funding_the_points_budget(svc: CentralLog) -> None:
    got = fund_points(svc.store, 50_000, "city-2026-11")
    assert (got.fresh, got.budget, got.programme) == (True, 50_000, POINTS_PROGRAMME)
    again = fund_points(svc.store, 50_000, "city-2026-11")
    assert (again.fresh, again.budget) == (False, 50_000)
    assert bal(svc, BUDGET) == 50_000 and bal(svc, "programme:incentives:funding") == 0
    assert bal(svc, books.BANK_OUTSIDE) == -50_000
    other = fund_points(svc.store, 7, "r1", programme="youth-bus")
    assert other.budget == 7 and bal(svc, "programme:youth-bus:points") == 7
    for amount, ref in ((0, "r"), (-1, "r"), (True, "r"), (1, "a:b"), (1, ""), (1, "a b")):
        with pytest.raises(ConfigError):
            fund_points(svc.store, amount, ref)
    with pytest.raises(BooksError):              # the same ref with another amount
        fund_points(svc.store, 50_001, "city-2026-11")


def test_the_commands(svc: CentralLog, store_url: str, tmp_path: Path) -> None:  # noqa: F811
    link(svc, "A", A_CARD)
    october_rides(svc)
    (tmp_path / "d").mkdir()
    base = ["--db", store_url, "--data", str(tmp_path / "d")]
    assert CliRunner().invoke(cli, ["central", "init", *base]).exit_code == 0  # the log key
    out = CliRunner().invoke(cli, ["central", "payout", *base, "--month", "2026-10"])
    assert out.exit_code == 2 and "holds 0 won" in out.output and "payout-fund" in out.output
    out = CliRunner().invoke(cli, ["central", "payout-fund", *base, "--amount", "3000",
                                   "--ref", "nov"])
    assert out.exit_code == 0 and "3,000 won" in out.output
    out = CliRunner().invoke(cli, ["central", "payout-fund", *base, "--amount", "3000",
                                   "--ref", "nov"])
    assert "nothing moved" in out.output and bal(svc, BUDGET) == 3_000
    out = CliRunner().invoke(cli, ["central", "payout", *base, "--month", "2026-10",
                                   "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert (doc["pocket_cards"], doc["pocket_points"]) == (1, 2_900)
    assert pockets_of(svc, "A")["points"] == 2_900 and bal(svc, BUDGET) == 100
    out = CliRunner().invoke(cli, ["central", "payout", *base, "--month", "2026-10"])
    assert "already paid out" in out.output and "into 1 accounts' points pockets" in out.output
