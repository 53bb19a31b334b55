"""A refund at the till of an online QR payment reverses, by pocket, the posting central made
when the app paid, against a real ``localpay central serve`` on SQLite and PostgreSQL; and
that posting is :func:`central.spending.post_payment`, public, the one the log's follower
uses. Every balance is worked out by hand here."""

from __future__ import annotations

import ast
import time
from pathlib import Path

from click.testing import CliRunner

from central import books, spending
from localpay.cli import cli
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401
from tests.test_mpm_online import CARD, CASH, Stack, app_pay, balance, sell_online, stack  # noqa: F401
from tests.test_pockets_e2e import LOCAL

POINTS = 1_000
ROOT = Path(__file__).resolve().parent.parent


def posted(s: Stack, refunds: int) -> list[tuple[str, int]]:
    """Wait until the spending poster posted ``refunds`` refunds or flagged anything; the
    flags (reason, seq)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with s.svc.store.tx(write=False) as tx:
            flags = [(str(r), int(q)) for r, q in tx.all("SELECT reason, seq FROM pocket_flags")]
            done = tx.one("SELECT COUNT(*) FROM pocket_postings WHERE kind = 'refund'")[0]
        if flags or int(done) >= refunds:
            return flags
        time.sleep(0.05)
    raise AssertionError(f"the poster posted fewer than {refunds} refunds in 15 s")


def books_check(s: Stack) -> None:
    out = CliRunner().invoke(cli, ["central", "books", "check", "--db", s.srv.db,
                                   "--data", str(s.srv.data)])
    assert out.exit_code == 0 and "the books balance" in out.output, out.output


def test_refund_of_an_online_payment_reverses_its_pockets(stack: Stack) -> None:  # noqa: F811
    s = stack
    with s.svc.store.tx() as tx:
        books.transfer(tx, [books.Transfer(books.BANK_OUTSIDE, books.pocket("A", "points"),
                                           POINTS, "topup", "topup:A:points")])
    reference, waiter, out = sell_online(s, 3_500)
    assert app_pay(s, reference, 3_500, "ref-1").status_code == 200
    waiter.join(15)
    assert out and out[0].status == "approved" and out[0].decision is not None
    entry = out[0].decision.entry
    assert entry is not None
    # by hand: restricted money first, so points 1,000 then cash 2,500
    cash, points, payable = CASH - 2_500, 0, 3_500
    assert (balance(s, books.pocket("A")), balance(s, books.pocket("A", "points"))) == (
        cash, points)
    # the clerk gives 2,000 back: the newest drawn (cash) first
    refund = s.till.refund(entry.fields.seq, 2_000)
    assert refund.approved and refund.entry is not None
    assert s.client.sync_once().sent == 2
    assert posted(s, 1) == []
    cash, payable = cash + 2_000, payable - 2_000
    assert balance(s, books.pocket("A")) == cash == 9_500
    assert balance(s, books.pocket("A", "points")) == points == 0
    assert balance(s, books.merchant_payable(LOCAL.merchant_id)) == payable == 1_500
    # the rest, 1,500: the cash's last 500, then the points' 1,000
    rest = s.till.refund(entry.fields.seq)
    assert rest.approved and rest.amount == 1_500
    assert s.client.sync_once().sent == 1
    assert posted(s, 2) == []
    cash, points, payable = cash + 500, points + 1_000, payable - 1_500
    assert (cash, points, payable) == (CASH, POINTS, 0)
    assert balance(s, books.pocket("A")) == cash
    assert balance(s, books.pocket("A", "points")) == points
    assert balance(s, books.merchant_payable(LOCAL.merchant_id)) == payable
    with s.svc.store.tx(write=False) as tx:
        rows = tx.all("SELECT ref, amount FROM book_transfers WHERE code = 'refund' "
                      "ORDER BY ref")
    seq1, seq2 = refund.entry.fields.seq, rest.entry.fields.seq if rest.entry else 0
    assert sorted((str(r), int(a)) for r, a in rows) == sorted([
        (f"refund:TILL-1:{seq1}:cash", 2_000), (f"refund:TILL-1:{seq2}:cash", 500),
        (f"refund:TILL-1:{seq2}:points", 1_000)])
    books_check(s)


def test_post_payment_is_public_and_the_one_posting(stack: Stack) -> None:  # noqa: F811
    s = stack
    entry = spending.SpendEntry(-1, "TILL-1", -7, "payment", "cd" * 32, 400, 0, "",
                                int(time.time() * 1000), int(time.time() * 1000))
    with s.svc.store.tx() as tx:
        done = spending.post_payment(tx, entry)
    assert done.refused.startswith("no_account") and done.result.payments == 0
    with s.svc.store.tx() as tx:
        done = spending.post_payment(tx, entry._replace(card_token=CARD))
    assert (done.refused, done.result.payments, done.result.paid) == ("", 1, 400)
    assert balance(s, books.pocket("A")) == CASH - 400
    # no module but central/spending.py reaches into its poster
    for path in [*ROOT.glob("central/*.py"), *ROOT.glob("localpay/**/*.py")]:
        if path.name == "spending.py":
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            assert not (isinstance(node, ast.Attribute) and node.attr == "_Poster"), path
