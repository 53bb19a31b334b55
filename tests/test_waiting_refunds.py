"""A refund waiting for a merchant's payable waits a bounded time: then the refund float pays
the citizen's pockets, the merchant owes the float, and settlement takes it back from the
merchant's next payments. On SQLite and PostgreSQL, through the real central service.

Shop LF01 (ksic:47211, 30 bp) is paid 20,000 won by citizen A on 1 September (5,000 from
points, 15,000 from cash: points are drawn before cash), settled that night, then refunds
18,000 won of it on the 2nd with an empty payable. Every figure expected below is worked out
in the test from those numbers, not by the modules.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from central import books, receivables, refund_float
from central import settlement_check as check
from central.reconcile import report
from central.settlement import FeeRules, settle
from central.settlement_file import write_bank_file
from central.spending import SpendingPoster, post_log
from localpay.cli import cli
from tests.books_world import shop_lf01
from tests.incentives_data import Chain, open_service, seoul_ms
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401

FEES = FeeRules(50, (("ksic:47", 30),))
BP = 30  # LF01's category, ksic:47211
DAY_MS = 86_400_000
PAID, REFUND = 20_000, 18_000
DRAWN = [("points", 5_000), ("cash", 15_000)]  # in the order the payment drew them
START = {"points": 5_000, "cash": 50_000}


def noon(day: int, hour: int = 12) -> int:
    return seoul_ms(2026, 9, day, hour)


def iso(day: int) -> str:
    return dt.date(2026, 9, day).isoformat()


def expected_after_refund(refund: int) -> dict[str, int]:
    """A's pockets after the payment and a refund of ``refund``, newest drawn first."""
    held = {p: START[p] for p in START}
    for pocket, won in DRAWN:
        held[pocket] -= won
    left = refund
    for pocket, won in reversed(DRAWN):
        back = min(won, left)
        held[pocket] += back
        left -= back
    return held


@pytest.fixture
def svc(store_url: str) -> Iterator[Any]:  # noqa: F811
    service = open_service(store_url, followers=[SpendingPoster()])
    yield service
    service.store.close()


def _shop(svc: Any) -> Chain:
    till = shop_lf01(svc)
    with svc.store.tx() as tx:
        for account, pocket, won in (("A", "points", START["points"]),
                                     ("A", "cash", START["cash"]), ("B", "cash", 100_000)):
            books.open_account(tx, books.pocket(account, pocket))
            books.transfer(tx, [books.Transfer(books.BANK_OUTSIDE, books.pocket(account, pocket),
                                               won, "topup", f"top-{account}-{pocket}")])
    return till


def _waiting_refund(svc: Any) -> Chain:
    """The payment settled on the 1st, the refund on the 2nd waiting for an empty payable."""
    till = _shop(svc)
    svc.ingest("T-LF01", [till.pay("card-a", PAID, noon(1), "general")])
    first = settle(svc.store, iso(1), fee_rules=FEES, now_ms=noon(2, 1))
    assert [(s.gross, s.net) for s in first.settlements] == [(PAID, PAID - PAID * BP // 10_000)]
    svc.ingest("T-LF01", [till.refund("card-a", REFUND, 1, noon(2))])
    assert _pockets(svc) == expected_after_refund(0)
    assert _waiting(svc) == [(2, 1)]
    return till


def _pockets(svc: Any, account: str = "A") -> dict[str, int]:
    with svc.store.tx(write=False) as tx:
        return {p: books.balance(tx, books.pocket(account, p)) for p in START}


def _waiting(svc: Any) -> list[tuple[int, int]]:
    with svc.store.tx(write=False) as tx:
        return [(int(s), int(r)) for s, r in tx.all(
            "SELECT seq, ref_seq FROM pocket_waiting_refunds ORDER BY seq")]


def _balance(svc: Any, account_id: str) -> int:
    with svc.store.tx(write=False) as tx:
        found = books.find_account(tx, account_id)
        return 0 if found is None else found.balance


def _bank_amounts(svc: Any, day: str, tmp_path: Path) -> dict[str, int]:
    path = tmp_path / f"bank-{day}.csv"
    write_bank_file(svc.store, day, path)
    with path.open(newline="") as f:
        return {row["merchant_id"]: int(row["amount"]) for row in csv.DictReader(f)}


def test_a_refund_past_the_wait_is_paid_from_the_float_into_the_pockets_it_came_from(
        svc: Any) -> None:
    _waiting_refund(svc)
    refund_float.fund(svc.store, 100_000, "float-1")
    # not yet: the wait is three days from the refund
    early = refund_float.pay_overdue(svc.store, now_ms=noon(2) + 3 * DAY_MS - 1)
    assert early.paid == 0 and _waiting(svc) == [(2, 1)]
    assert _pockets(svc) == expected_after_refund(0)
    done = refund_float.pay_overdue(svc.store, now_ms=noon(2) + 3 * DAY_MS)
    assert (done.paid, done.paid_won, done.short) == (1, REFUND, [])
    assert _pockets(svc) == expected_after_refund(REFUND) == {"points": 3_000, "cash": 50_000}
    assert _waiting(svc) == []
    assert _balance(svc, receivables.FLOAT) == 100_000 - REFUND
    assert _balance(svc, receivables.merchant_receivable("LF01")) == -REFUND
    assert _balance(svc, receivables.ADVANCED) == REFUND
    assert _balance(svc, books.merchant_payable("LF01")) == 0
    with svc.store.tx(write=False) as tx:
        assert receivables.outstanding(tx, "default") == {"LF01": REFUND}
    assert books.check(svc.store).balanced


def test_replays_post_it_once(svc: Any) -> None:
    till = _waiting_refund(svc)
    refund_float.fund(svc.store, 100_000, "float-1")
    refund_float.fund(svc.store, 100_000, "float-1")  # the same ref funds once
    later = noon(2) + 4 * DAY_MS
    for _ in range(2):
        refund_float.pay_overdue(svc.store, now_ms=later)
    with svc.store.tx() as tx:
        tx.run("UPDATE spending_cursor SET next_index = 0")
    post_log(svc.store)
    refund_float.pay_overdue(svc.store, now_ms=later)
    assert _pockets(svc) == expected_after_refund(REFUND)
    assert _balance(svc, receivables.FLOAT) == 100_000 - REFUND
    # a payment at the merchant afterwards fills the payable: the refund is not paid again
    svc.ingest("T-LF01", [till.pay("card-b", 30_000, noon(6), "general")])
    refund_float.pay_overdue(svc.store, now_ms=later)
    assert _pockets(svc) == expected_after_refund(REFUND)
    assert _balance(svc, books.merchant_payable("LF01")) == 30_000
    with svc.store.tx(write=False) as tx:
        assert tx.one("SELECT COUNT(*) FROM book_transfers WHERE code = 'refund'") == (
            len(DRAWN),)
    assert books.check(svc.store).balanced


def test_settlement_takes_the_debt_back_from_the_next_payments(svc: Any, tmp_path: Path
                                                               ) -> None:
    till = _waiting_refund(svc)
    refund_float.fund(svc.store, 100_000, "float-1")
    refund_float.pay_overdue(svc.store, now_ms=noon(2) + 3 * DAY_MS)
    svc.report_totals("T-LF01", iso(2), {"refund": (1, REFUND)})
    # the float, not the payable, paid the 2nd's refund: the merchant's books lack it yet
    assert [(x.terminal_refunds, x.books_refunds) for x in check.check(
        svc.store, iso(2)).lines] == [(REFUND, 0)]
    # the 2nd: nothing else at LF01, so nothing to settle or take back
    assert settle(svc.store, iso(2), fee_rules=FEES, now_ms=noon(3, 1)).settlements == []
    # the 6th: 10,000 won, all of it (less its fee) taken back; the 7th: the rest
    svc.ingest("T-LF01", [till.pay("card-b", 10_000, noon(6), "general")])
    six = settle(svc.store, iso(6), fee_rules=FEES, now_ms=noon(7, 1))
    taken6 = 10_000 - 10_000 * BP // 10_000
    assert [(s.gross, s.refunds, s.net, s.status) for s in six.settlements] == [
        (10_000, taken6, 0, "carried")]
    assert _bank_amounts(svc, iso(6), tmp_path) == {}
    with svc.store.tx(write=False) as tx:
        assert receivables.summary(tx, iso(6), "default") == [
            {"merchant_id": "LF01", "recovered": taken6, "outstanding": REFUND - taken6}]
    svc.ingest("T-LF01", [till.pay("card-b", 30_000, noon(7), "general")])
    seven = settle(svc.store, iso(7), fee_rules=FEES, now_ms=noon(8, 1))
    gross7 = 10_000 + 30_000  # the carried day's payment comes along
    fee7 = gross7 * BP // 10_000
    net7 = gross7 - REFUND - fee7
    assert [(s.gross, s.refunds, s.fees, s.net, s.status) for s in seven.settlements] == [
        (gross7, REFUND, fee7, net7, "pending")]
    assert seven.settlements[0].by_pocket["programme"]["refunds"] == REFUND
    assert _bank_amounts(svc, iso(7), tmp_path) == {"LF01": net7}
    assert _balance(svc, receivables.FLOAT) == 100_000
    assert _balance(svc, receivables.merchant_receivable("LF01")) == 0
    assert _balance(svc, receivables.ADVANCED) == 0
    assert _balance(svc, books.merchant_payable("LF01")) == 0
    with svc.store.tx(write=False) as tx:
        assert receivables.summary(tx, iso(7), "default") == [
            {"merchant_id": "LF01", "recovered": REFUND - taken6, "outstanding": 0}]
    assert _pockets(svc) == expected_after_refund(REFUND)
    assert _pockets(svc, "B") == {"points": 0, "cash": 100_000 - 40_000}
    # repaid as refunds of the 2nd: the merchant's books now hold the refund its till gave
    assert check.check(svc.store, iso(2)).clean
    assert books.check(svc.store).balanced


def test_an_empty_float_leaves_it_waiting_and_the_report_says_so(svc: Any) -> None:
    _waiting_refund(svc)
    late = noon(2) + 5 * DAY_MS
    short = refund_float.pay_overdue(svc.store, now_ms=late)
    assert short.paid == 0
    assert short.short == [{"terminal_id": "T-LF01", "seq": 2, "amount": REFUND,
                            "since_ms": noon(2)}]
    assert _waiting(svc) == [(2, 1)] and _pockets(svc) == expected_after_refund(0)
    svc.report_totals("T-LF01", iso(2), {"refund": (1, REFUND)})  # the day agrees
    rep = report(svc, iso(2))
    assert rep.waiting_refunds == [{"terminal_id": "T-LF01", "seq": 2, "amount": REFUND,
                                    "since_ms": noon(2)}]
    assert not rep.clean and not rep.differences
    # a float holding less than the refund is short too; once it holds it, it pays
    refund_float.fund(svc.store, REFUND - 1, "float-1")
    assert refund_float.pay_overdue(svc.store, now_ms=late).paid == 0
    assert _waiting(svc) == [(2, 1)]
    refund_float.fund(svc.store, 1, "float-2")
    assert refund_float.pay_overdue(svc.store, now_ms=late).paid == 1
    assert _pockets(svc) == expected_after_refund(REFUND)
    assert _balance(svc, receivables.FLOAT) == 0
    assert report(svc, iso(2)).clean
    assert books.check(svc.store).balanced


def test_the_commands_say_what_waits_and_what_is_owed(svc: Any, store_url: str,  # noqa: F811
                                                      tmp_path: Path) -> None:
    _waiting_refund(svc)
    svc.report_totals("T-LF01", iso(2), {"refund": (1, REFUND)})  # the day agrees
    assert CliRunner().invoke(cli, ["central", "init", "--db", store_url, "--data",
                                    str(tmp_path)]).exit_code == 0  # the log key

    def central(*args: str) -> tuple[int, str]:
        """``localpay central <command...> --db --data <options...>``."""
        cut = 2 if args[0] == "settlement" else 1
        result = CliRunner().invoke(cli, ["central", *args[:cut], "--db", store_url,
                                          "--data", str(tmp_path), *args[cut:]])
        return result.exit_code, result.output

    code, out = central("report", "--date", iso(2))
    assert code == 1 and f"REFUND WAITING T-LF01 2 {REFUND:,} since {noon(2)}" in out
    code, out = central("settlement", "run", "--date", iso(2))
    assert code == 0 and f"REFUND WAITING T-LF01 2 {REFUND:,} won" in out
    code, out = central("settlement", "float-fund", "--amount", "100000", "--ref", "f1")
    assert code == 0 and "holds 100,000 won" in out
    code, out = central("settlement", "run", "--date", iso(3))
    assert code == 0, out
    assert f"refund float paid 1 waiting refunds, {REFUND:,} won" in out
    assert f"RECEIVABLE LF01: recovered 0 won, outstanding {REFUND:,}" in out
    code, out = central("report", "--date", iso(2))
    assert code == 0 and "REFUND WAITING" not in out and "all terminals reconcile" in out
    assert _pockets(svc) == expected_after_refund(REFUND)
