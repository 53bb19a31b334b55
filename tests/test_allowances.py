"""Allowance programmes: funding, issuing from a recipients file, expiry, the report and the
``localpay central allowance`` commands, on SQLite and PostgreSQL.

Every figure is checked against arithmetic written out here, never against the module's
own helpers."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from central import accounts, allowances, books
from central.allowances import BudgetShortError, RecipientFileError
from central.store import Store, open_store
from localpay.cli.allowances import allowance as allowance_cli
from localpay.errors import BooksError, ConfigError
from tests.central_data import initialised_data
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401

SEOUL = ZoneInfo("Asia/Seoul")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:  # noqa: F811
    s = open_store(store_url)
    yield s
    # whatever a test did, the books still balance
    assert books.check(s).balanced
    s.close()


def people(store: Store, *names: str, municipality: str = "default") -> None:
    """Accounts ``names``, each with a card ``c-<name>``."""
    with store.tx() as tx:
        for name in names:
            accounts.link(tx, name, f"c-{name}", municipality=municipality)


def spend(store: Store, account_id: str, programme: str, amount: int, ref: str, *,
          municipality: str = "default", at_ms: int | None = None) -> None:
    """A payment out of the allowance pocket to a shop, as settled payments are booked."""
    shop = books.merchant_payable("shop1")
    with store.tx() as tx:
        books.open_account(tx, shop, municipality=municipality)
        books.transfer(tx, [books.Transfer(books.pocket(account_id, programme), shop, amount,
                                           "payment", ref)],
                       municipality=municipality, at_ms=at_ms)


def refund(store: Store, account_id: str, programme: str, amount: int, ref: str, *,
           at_ms: int | None = None) -> None:
    with store.tx() as tx:
        books.transfer(tx, [books.Transfer(books.merchant_payable("shop1"),
                                           books.pocket(account_id, programme), amount,
                                           "refund", ref)], at_ms=at_ms)


def bal(store: Store, account_id: str, municipality: str = "default") -> int:
    with store.tx(write=False) as tx:
        found = books.find_account(tx, account_id, municipality=municipality)
        return 0 if found is None else found.balance


def dump(store: Store) -> tuple[list[Any], ...]:
    """Everything that issuing may write, to show that a refusal wrote nothing."""
    with store.tx(write=False) as tx:
        return (tx.all("SELECT * FROM book_accounts ORDER BY account_id"),
                tx.all("SELECT * FROM book_transfers ORDER BY transfer_id"),
                tx.all("SELECT * FROM allowance_grants ORDER BY ref"))


def grant_rows(store: Store) -> dict[str, tuple[int, int | None]]:
    """ref -> (amount, expired_amount)."""
    with store.tx(write=False) as tx:
        return {str(r[0]): (int(r[1]), None if r[2] is None else int(r[2])) for r in tx.all(
            "SELECT ref, amount, expired_amount FROM allowance_grants")}


def ms(year: int, month: int, day: int, hour: int = 12, minute: int = 0) -> int:
    """A time in Seoul, in ms."""
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=SEOUL).timestamp()) * 1000


# -- funding -----------------------------------------------------------------------------------

def test_funding_moves_the_citys_money_into_the_budget_once_per_ref(store: Store) -> None:
    first = allowances.fund(store, "youth", 300_000, "f1")
    again = allowances.fund(store, "youth", 300_000, "f1")
    allowances.fund(store, "youth", 50_000, "f2")
    assert (first.fresh, again.fresh) == (True, False)
    assert bal(store, "allowance:youth") == 300_000 + 50_000
    assert bal(store, "programme:youth:funding") == 0      # passed through
    assert bal(store, "bank:outside") == -(300_000 + 50_000)
    with pytest.raises(BooksError):
        allowances.fund(store, "youth", 1, "f1")            # the same ref, another amount
    with store.tx(write=False) as tx:
        codes = sorted(str(r[0]) for r in tx.all("SELECT code FROM book_transfers"))
    assert codes == ["budget", "budget", "funding", "funding"]


# -- issuing -----------------------------------------------------------------------------------

def test_issue_grants_each_recipient_and_a_second_run_moves_nothing(store: Store) -> None:
    people(store, "alice", "bob", "carol")
    allowances.fund(store, "youth", 100_000, "f1")
    text = "recipient,amount\nalice,\nc-bob,25000\ncarol\n"
    first = allowances.issue(store, "youth", text, 20_000, "2026-12-31", "2026-11")
    assert (first.new, first.repeated, first.new_amount) == (3, 0, 20_000 + 25_000 + 20_000)
    assert [(g.recipient, g.account_id, g.amount) for g in first.grants] == [
        ("alice", "alice", 20_000), ("c-bob", "bob", 25_000), ("carol", "carol", 20_000)]
    assert [g.ref for g in first.grants] == ["allowance:youth:alice:2026-11",
                                             "allowance:youth:bob:2026-11",
                                             "allowance:youth:carol:2026-11"]
    assert bal(store, "pocket:alice:youth") == 20_000
    assert bal(store, "pocket:bob:youth") == 25_000
    assert bal(store, "allowance:youth") == 100_000 - 65_000
    before = dump(store)
    again = allowances.issue(store, "youth", text, 20_000, "2026-12-31", "2026-11")
    assert dump(store) == before
    assert (again.new, again.repeated, again.new_amount) == (0, 3, 0)
    assert again.grants == first.grants
    # a file with one more line issues only that one
    people(store, "dave")
    more = allowances.issue(store, "youth", text + "dave\n", 20_000, "2026-12-31", "2026-11")
    assert (more.new, more.repeated, more.new_amount) == (1, 3, 20_000)
    assert bal(store, "allowance:youth") == 100_000 - 65_000 - 20_000
    with store.tx(write=False) as tx:
        codes = {str(r[0]) for r in tx.all(
            "SELECT code FROM book_transfers WHERE credit_account LIKE 'pocket:%'")}
    assert codes == {"allowance_issue"}


def test_the_next_period_is_a_new_grant(store: Store) -> None:
    people(store, "alice")
    allowances.fund(store, "youth", 100_000, "f1")
    allowances.issue(store, "youth", "recipient\nalice\n", 30_000, "2026-12-31", "2026-11")
    allowances.issue(store, "youth", "recipient\nalice\n", 30_000, "2027-01-31", "2026-12")
    assert bal(store, "pocket:alice:youth") == 30_000 + 30_000


def test_several_bad_lines_are_each_told_and_nothing_is_applied(store: Store) -> None:
    people(store, "alice", "bob")
    allowances.fund(store, "youth", 100_000, "f1")
    allowances.issue(store, "youth", "recipient\nbob\n", 10_000, "2026-12-31", "2026-11")
    before = dump(store)
    text = ("recipient,amount\n"
            "alice,5000\n"        # 2: good
            "nobody,5000\n"       # 3: unknown
            "c-alice,1000\n"      # 4: alice again, by her card
            "alice\n"             # 5: alice again, by name
            "\n"                  # 6: blank, skipped
            "bob,12000\n"         # 7: bob was granted 10,000 for this period
            "w:ghost\n"           # 8: a wallet linked to nobody
            ",5000\n"             # 9: no recipient
            "carol,0\n"           # 10: bad amount (and unknown, told once)
            "dave,1.5\n"          # 11: bad amount
            "eve,-3\n"            # 12: bad amount
            "frank,5,x\n")        # 13: a cell too many
    with pytest.raises(RecipientFileError) as caught:
        allowances.issue(store, "youth", text, 20_000, "2026-12-31", "2026-11")
    lines = [n for n, _ in caught.value.problems]
    assert lines == [3, 4, 5, 7, 8, 9, 10, 11, 12, 13]
    why = dict(caught.value.problems)
    assert "unknown recipient 'nobody'" in why[3]
    assert "account alice, also named on line 2" in why[4]
    assert "also on line 2" in why[5]
    assert "10,000 won" in why[7] and "12,000 won" in why[7]
    assert "unknown recipient" in why[8]
    assert why[9] == "no recipient"
    assert all("bad amount" in why[n] for n in (10, 11, 12))
    assert "3 cells" in why[13]
    assert dump(store) == before


def test_the_same_period_with_another_expiry_is_a_bad_line(store: Store) -> None:
    people(store, "alice")
    allowances.fund(store, "youth", 100_000, "f1")
    allowances.issue(store, "youth", "recipient\nalice\n", 10_000, "2026-12-31", "2026-11")
    with pytest.raises(RecipientFileError, match=r"<recipients>:2: .*until 2026-12-31"):
        allowances.issue(store, "youth", "recipient\nalice\n", 10_000, "2027-01-31", "2026-11")


@pytest.mark.parametrize("text, match", [
    ("", "empty file"),
    ("who,amount\nalice\n", "no 'recipient' column"),
    ("recipient,amout\nalice,5\n", "unknown column"),
    ("recipient,recipient\nalice,alice\n", "named twice"),
])
def test_a_bad_header_is_told(store: Store, text: str, match: str) -> None:
    people(store, "alice")
    allowances.fund(store, "youth", 100_000, "f1")
    before = dump(store)
    with pytest.raises(RecipientFileError, match=match):
        allowances.issue(store, "youth", text, 10_000, "2026-12-31", "2026-11")
    assert dump(store) == before


def test_a_budget_short_of_the_file_refuses_it_whole(store: Store) -> None:
    people(store, "alice", "bob")
    with pytest.raises(BudgetShortError, match="holds 0 won"):
        allowances.issue(store, "youth", "recipient\nalice\n", 10_000, "2026-12-31", "2026-11")
    allowances.fund(store, "youth", 15_000, "f1")
    before = dump(store)
    with pytest.raises(BudgetShortError, match=r"holds 15,000 won.*need 20,000 won.*5,000 won"):
        allowances.issue(store, "youth", "recipient\nalice\nbob\n", 10_000, "2026-12-31",
                         "2026-11")
    assert dump(store) == before
    # one won short is short; the exact sum is enough
    with pytest.raises(BudgetShortError, match="1 won short"):
        allowances.issue(store, "youth", "recipient,amount\nalice,10000\nbob,5001\n", 1,
                         "2026-12-31", "2026-11")
    allowances.issue(store, "youth", "recipient,amount\nalice,10000\nbob,5000\n", 1,
                     "2026-12-31", "2026-11")
    assert bal(store, "allowance:youth") == 15_000 - 10_000 - 5_000


@pytest.mark.parametrize("kwargs, match", [
    ({"programme": "cash"}, "cash pocket"),
    ({"programme": "points"}, "points pocket"),
    ({"programme": "Youth Fund"}, "programme"),
    ({"period": "2026-13"}, "period"),
    ({"expires": "2026-02-30"}, "expiry"),
    ({"expires": "2026-10-31"}, "before the period"),
    ({"amount": 0}, "default amount"),
    ({"amount": True}, "default amount"),
])
def test_odd_arguments_are_refused(store: Store, kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"programme": "youth", "amount": 10_000, "expires": "2026-12-31",
                            "period": "2026-11"}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        allowances.issue(store, args["programme"], "recipient\nalice\n", args["amount"],
                         args["expires"], args["period"])


# -- expiry ------------------------------------------------------------------------------------

def test_expiry_returns_what_was_not_spent(store: Store) -> None:
    people(store, "alice", "bob")
    allowances.fund(store, "youth", 100_000, "f1")
    allowances.issue(store, "youth", "recipient\nalice\nbob\n", 10_000, "2026-11-30",
                     "2026-11")
    spend(store, "alice", "youth", 3_500, "pay-1")
    spend(store, "bob", "youth", 10_000, "pay-2")
    # the last day is still a day to spend
    assert allowances.expire(store, "2026-11-30").grants == 0
    done = allowances.expire(store, "2026-12-01")
    assert (done.grants, done.pockets, done.amount) == (2, 2, 10_000 - 3_500)
    assert done.by_programme == {"youth": 10_000 - 3_500}
    assert bal(store, "pocket:alice:youth") == 0
    assert bal(store, "pocket:bob:youth") == 0
    assert bal(store, "allowance:youth") == 100_000 - 20_000 + 6_500
    assert grant_rows(store) == {"allowance:youth:alice:2026-11": (10_000, 6_500),
                                 "allowance:youth:bob:2026-11": (10_000, 0)}
    with store.tx(write=False) as tx:
        assert tx.all("SELECT ref, amount, code FROM book_transfers WHERE code = "
                      "'allowance_expiry'") == [("expiry:allowance:youth:alice:2026-11", 6_500,
                                                 "allowance_expiry")]


def test_two_grants_in_one_pocket_spend_the_soonest_expiring_first(store: Store) -> None:
    people(store, "alice", "bob")
    allowances.fund(store, "youth", 100_000, "f1")
    # October's grant lasts to the end of November, November's to the end of December
    allowances.issue(store, "youth", "recipient\nalice\nbob\n", 10_000, "2026-11-30",
                     "2026-10")
    allowances.issue(store, "youth", "recipient\nalice\nbob\n", 8_000, "2026-12-31",
                     "2026-11")
    spend(store, "alice", "youth", 4_000, "a1")    # all of it from October's
    spend(store, "bob", "youth", 12_000, "b1")     # October's whole, 2,000 of November's
    # soonest first, by hand: what each grant has left
    alice_oct, alice_nov = 10_000 - 4_000, 8_000
    bob_oct, bob_nov = 0, 8_000 - (12_000 - 10_000)
    done = allowances.expire(store, "2026-12-01")
    assert done.amount == alice_oct + bob_oct
    assert bal(store, "pocket:alice:youth") == alice_nov
    assert bal(store, "pocket:bob:youth") == bob_nov
    spend(store, "alice", "youth", 500, "a2")
    later = allowances.expire(store, "2027-01-01")
    assert later.amount == (alice_nov - 500) + bob_nov
    assert grant_rows(store) == {
        "allowance:youth:alice:2026-10": (10_000, alice_oct),
        "allowance:youth:alice:2026-11": (8_000, alice_nov - 500),
        "allowance:youth:bob:2026-10": (10_000, bob_oct),
        "allowance:youth:bob:2026-11": (8_000, bob_nov)}
    assert bal(store, "allowance:youth") == 100_000 - 36_000 + alice_oct + alice_nov - 500 \
        + bob_nov
    assert bal(store, "pocket:alice:youth") == 0 and bal(store, "pocket:bob:youth") == 0


def test_a_late_run_expires_both_grants_by_the_same_rule(store: Store) -> None:
    people(store, "alice")
    allowances.fund(store, "youth", 100_000, "f1")
    allowances.issue(store, "youth", "recipient\nalice\n", 10_000, "2026-11-30", "2026-10")
    allowances.issue(store, "youth", "recipient\nalice\n", 8_000, "2026-12-31", "2026-11")
    spend(store, "alice", "youth", 13_000, "a1")
    # both past expiry at once: October's 10,000 spent first, November's keeps 5,000
    done = allowances.expire(store, "2027-02-01")
    assert (done.grants, done.amount) == (2, 18_000 - 13_000)
    assert grant_rows(store) == {"allowance:youth:alice:2026-10": (10_000, 0),
                                 "allowance:youth:alice:2026-11": (8_000, 5_000)}


def test_a_grant_on_its_last_day_keeps_its_money(store: Store) -> None:
    people(store, "alice")
    allowances.fund(store, "youth", 100_000, "f1")
    allowances.issue(store, "youth", "recipient\nalice\n", 10_000, "2026-11-30", "2026-10")
    allowances.issue(store, "youth", "recipient\nalice\n", 8_000, "2026-12-01", "2026-11")
    spend(store, "alice", "youth", 6_000, "a1")
    # on 1 December November's 8,000 is still good; October's keeps 10,000 - 6,000
    done = allowances.expire(store, "2026-12-01")
    assert (done.grants, done.amount) == (1, 10_000 - 6_000)
    assert bal(store, "pocket:alice:youth") == 8_000


def test_expiry_run_twice_moves_nothing_more(store: Store) -> None:
    people(store, "alice")
    allowances.fund(store, "youth", 100_000, "f1")
    allowances.issue(store, "youth", "recipient\nalice\n", 10_000, "2026-11-30", "2026-11")
    spend(store, "alice", "youth", 1_000, "a1")
    assert allowances.expire(store, "2026-12-01").amount == 9_000
    before = dump(store)
    again = allowances.expire(store, "2026-12-01")
    assert (again.grants, again.pockets, again.amount) == (0, 0, 0)
    assert allowances.expire(store, "2027-06-01").amount == 0
    assert dump(store) == before


def test_a_stopped_expiry_goes_on_where_it_stopped(store: Store) -> None:
    names = [f"p{i}" for i in range(5)]
    people(store, *names)
    allowances.fund(store, "youth", 100_000, "f1")
    allowances.issue(store, "youth", "recipient\n" + "\n".join(names), 10_000, "2026-11-30",
                     "2026-11")
    for i, name in enumerate(names):
        spend(store, name, "youth", 1_000 * (i + 1), f"s{i}")

    def stop(pockets: int, grants: int) -> None:
        if pockets == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        allowances.expire(store, "2026-12-01", chunk=1, progress=stop)
    # two pockets were done, each in its own transaction
    assert bal(store, "allowance:youth") == 100_000 - 50_000 + (9_000 + 8_000)
    rest = allowances.expire(store, "2026-12-01", chunk=2)
    assert (rest.grants, rest.amount) == (3, 7_000 + 6_000 + 5_000)
    assert bal(store, "allowance:youth") == 100_000 - 50_000 + (9_000 + 8_000 + 7_000
                                                                 + 6_000 + 5_000)


# -- the report --------------------------------------------------------------------------------

def test_the_report_counts_each_month_in_seoul(store: Store) -> None:
    people(store, "alice", "bob")
    allowances.fund(store, "youth", 100_000, "f1", at_ms=ms(2026, 10, 1))
    allowances.fund(store, "elder", 100_000, "f2", at_ms=ms(2026, 10, 1))
    allowances.issue(store, "youth", "recipient\nalice\nbob\n", 10_000, "2026-11-30",
                     "2026-10", at_ms=ms(2026, 10, 2))
    allowances.issue(store, "elder", "recipient\nbob\n", 7_000, "2027-03-31", "2026-10",
                     at_ms=ms(2026, 10, 2))
    # 23:30 on 31 October in Seoul is 14:30 UTC: still October
    spend(store, "alice", "youth", 3_000, "a1", at_ms=ms(2026, 10, 31, 23, 30))
    spend(store, "alice", "youth", 2_000, "a2", at_ms=ms(2026, 11, 1, 0, 30))
    refund(store, "alice", "youth", 500, "r1", at_ms=ms(2026, 11, 3))
    spend(store, "bob", "elder", 1_000, "b1", at_ms=ms(2026, 11, 5))
    spend(store, "bob", "youth", 4_000, "b2", at_ms=ms(2026, 11, 5))
    allowances.expire(store, "2026-12-01", at_ms=ms(2026, 12, 1, 0, 10))
    youth_oct = (20_000, 3_000, 0)
    youth_nov = (0, 2_000 - 500 + 4_000, 0)
    youth_dec = (0, 0, (10_000 - 3_000 - 2_000 + 500) + (10_000 - 4_000))
    out_oct = 20_000 - 3_000
    out_nov = out_oct - (2_000 - 500 + 4_000)
    out_dec = out_nov - youth_dec[2]
    rows = allowances.report(store, now_ms=ms(2026, 12, 15))
    assert [(r.programme, r.month, r.issued, r.spent, r.expired, r.outstanding)
            for r in rows] == [
        ("elder", "2026-10", 7_000, 0, 0, 7_000),
        ("elder", "2026-11", 0, 1_000, 0, 6_000),
        ("elder", "2026-12", 0, 0, 0, 6_000),
        ("youth", "2026-10", *youth_oct, out_oct),
        ("youth", "2026-11", *youth_nov, out_nov),
        ("youth", "2026-12", *youth_dec, out_dec)]
    assert out_dec == 0 == bal(store, "pocket:alice:youth") + bal(store, "pocket:bob:youth")
    only = allowances.report(store, "youth", "2026-11", now_ms=ms(2026, 12, 15))
    assert [(r.programme, r.month, r.outstanding) for r in only] == [
        ("youth", "2026-11", out_nov)]


# -- the commands ------------------------------------------------------------------------------

def cli(store_url: str, *args: str) -> tuple[int, str, str]:  # noqa: F811
    result = CliRunner().invoke(allowance_cli, [args[0], "--db", store_url, "--data",
                                                initialised_data(), *args[1:]])
    return result.exit_code, result.stdout, result.stderr


def test_the_commands(store: Store, store_url: str, tmp_path: Path  # noqa: F811
                      ) -> None:
    people(store, "alice", "bob")
    good = tmp_path / "youth.csv"
    good.write_text("recipient,amount\nc-alice\nbob,30000\n", encoding="utf-8")
    bad = tmp_path / "bad.csv"
    bad.write_text("recipient,amount\nnobody\nalice,zero\nalice\n", encoding="utf-8")
    issue = ["issue", "--programme", "youth", "--amount", "20000", "--expires", "2026-12-31",
             "--period", "2026-11", "--recipients"]
    code, _, err = cli(store_url, *issue, str(good))
    assert code == 1 and "holds 0 won" in err
    code, out, _ = cli(store_url, "fund", "--programme", "youth", "--amount", "100000",
                       "--ref", "f1")
    assert code == 0 and "its budget holds 100,000 won" in out
    code, out, _ = cli(store_url, "fund", "--programme", "youth", "--amount", "100000",
                       "--ref", "f1")
    assert "nothing moved" in out and bal(store, "allowance:youth") == 100_000
    before = dump(store)
    code, out, err = cli(store_url, *issue, str(bad))
    assert code == 1
    assert err.splitlines() == [
        f"{bad}:2: unknown recipient 'nobody': neither an account nor a card or wallet "
        "linked to one",
        f"{bad}:3: bad amount 'zero': a positive whole number of won",
        "2 bad line(s); nothing applied"]
    assert dump(store) == before
    code, out, _ = cli(store_url, *issue, str(good))
    assert code == 0 and "2 grant(s), 50,000 won; 2 new" in out
    code, out, _ = cli(store_url, *issue, str(good))
    assert code == 0 and "0 new (0 won), 2 already issued" in out
    spend(store, "bob", "youth", 12_345, "p1")
    code, out, _ = cli(store_url, "expire", "--date", "2027-01-01")
    assert code == 0 and f"{20_000 + 30_000 - 12_345:,} won returned" in out
    code, out, _ = cli(store_url, "report", "--programme", "youth", "--json")
    rows = json.loads(out)
    assert [(r["issued"], r["spent"], r["expired"]) for r in rows] == [
        (50_000, 12_345, 50_000 - 12_345)]
    assert rows[0]["outstanding"] == 0
    code, out, _ = cli(store_url, "report")
    assert code == 0 and "youth" in out and "12,345" in out
    code, _, err = cli(store_url, "report", "--month", "2026-13")
    assert code == 2 and "YYYY-MM" in err
    code, _, err = cli(store_url, "expire", "--date", "2026-02-30")
    assert code == 2


def test_a_big_file_shows_progress(tmp_path: Path) -> None:
    # on SQLite only: the progress lines are the same code whatever the store
    url = f"sqlite:///{tmp_path / 'central.sqlite'}"
    store = open_store(url)
    count = 10_000
    with store.tx() as tx:
        for i in range(count):
            accounts.create(tx, f"r{i}")
    allowances.fund(store, "youth", count * 1_000, "f1")
    big = tmp_path / "big.csv"
    big.write_text("recipient\n" + "".join(f"r{i}\n" for i in range(count)), encoding="utf-8")
    code, _, err = cli(url, "issue", "--programme", "youth", "--amount", "1000",
                         "--expires", "2026-12-31", "--period", "2026-11", "--recipients",
                         str(big))
    assert code == 0, err
    assert "checked 10,000 / 10,000" in err and "issued 10,000 / 10,000" in err
    assert bal(store, "allowance:youth") == 0
    assert books.check(store).balanced
    store.close()


# -- a property --------------------------------------------------------------------------------

_RUN = itertools.count()
PERSONS = ("ann", "ben", "cho")
PROGRAMMES = ("youth", "care")
DAYS = [f"2026-12-{d:02d}" for d in range(1, 10)]

OPS = st.lists(st.one_of(
    st.tuples(st.just("grant"), st.sampled_from(PERSONS), st.sampled_from(PROGRAMMES),
              st.integers(1, 4), st.integers(1, 30_000), st.sampled_from(DAYS)),
    st.tuples(st.just("spend"), st.sampled_from(PERSONS), st.sampled_from(PROGRAMMES),
              st.integers(1, 40_000)),
    st.tuples(st.just("expire"), st.sampled_from(DAYS))), min_size=1, max_size=25)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_random_grants_spendings_and_expiries_keep_every_won(store: Store,
                                                             ops: list[tuple[Any, ...]]) -> None:
    town = f"m{next(_RUN)}"      # each example its own municipality: a fresh set of books
    people(store, *PERSONS, municipality=town)
    for p in PROGRAMMES:
        allowances.fund(store, p, 10**9, "f", municipality=town)
    # the model: each grant [amount, expires, expired?]; pockets; totals per programme
    grants: dict[tuple[str, str, int], list[Any]] = {}
    held: dict[tuple[str, str], int] = {}
    issued = dict.fromkeys(PROGRAMMES, 0)
    spent = dict.fromkeys(PROGRAMMES, 0)
    expired = dict.fromkeys(PROGRAMMES, 0)
    gone: dict[tuple[str, str], int] = {}       # expired, by pocket
    for n, op in enumerate(ops):
        if op[0] == "grant":
            _, who, p, month, amount, expires = op
            key = (who, p, month)
            period = f"2026-{month:02d}"
            try:
                got = allowances.issue(store, p, f"recipient\nc-{who}\n", amount, expires,
                                       period, town)
            except RecipientFileError:
                # only another amount or expiry for a period granted before is refused
                assert key in grants and grants[key][:2] != [amount, expires]
                continue
            if key in grants:
                assert grants[key][:2] == [amount, expires] and got.new == 0
                continue
            grants[key] = [amount, expires, False]
            held[who, p] = held.get((who, p), 0) + amount
            issued[p] += amount
        elif op[0] == "spend":
            _, who, p, want = op
            amount = min(want, held.get((who, p), 0))
            if amount:
                spend(store, who, p, amount, f"s{n}", municipality=town)
                held[who, p] -= amount
                spent[p] += amount
        else:
            day = op[1]
            back = 0
            for who, p in {(w, q) for w, q, _ in grants}:
                mine = {k: g for k, g in grants.items() if k[:2] == (who, p) and not g[2]}
                valid = sum(g[0] for g in mine.values() if g[1] >= day)
                due = [g for g in mine.values() if g[1] < day]
                hold = held[who, p]
                for g in due:
                    # what is left for g once the grants still valid and the due ones that
                    # expire after it have taken theirs from the pocket
                    after = sum(o[0] for o in due if o[1] > g[1])
                    ties = [o for o in due if o[1] == g[1]]
                    # grants of one expiry share what is left as a whole: count it once
                    left = max(0, min(sum(o[0] for o in ties), hold - valid - after)) \
                        if g is ties[0] else 0
                    g[2] = True
                    held[who, p] -= left
                    expired[p] += left
                    gone[who, p] = gone.get((who, p), 0) + left
                    back += left
            assert allowances.expire(store, day, town).amount == back
    assert books.check(store, town).balanced
    rows = allowances.report(store, municipality=town)
    for p in PROGRAMMES:
        mine = [r for r in rows if r.programme == p]
        pockets = sum(bal(store, f"pocket:{who}:{p}", town) for who in PERSONS)
        assert pockets == sum(v for (w, q), v in held.items() if q == p)
        assert sum(r.issued for r in mine) == issued[p]
        assert sum(r.spent for r in mine) == spent[p]
        assert sum(r.expired for r in mine) == expired[p]
        outstanding = mine[-1].outstanding if mine else 0
        assert issued[p] == spent[p] + expired[p] + outstanding
        assert outstanding == pockets
    with store.tx(write=False) as tx:
        rows_by_pocket = {(str(a), str(p)): int(won) for a, p, won in tx.all(
            "SELECT account_id, programme, SUM(expired_amount) FROM allowance_grants "
            "WHERE municipality_id = ? AND expired_ms IS NOT NULL "
            "GROUP BY account_id, programme", (town,))}
    assert {k: v for k, v in rows_by_pocket.items() if v} == \
        {k: v for k, v in gone.items() if v}
    for who in PERSONS:
        for p in PROGRAMMES:
            assert bal(store, f"pocket:{who}:{p}", town) >= 0


# -- concurrency on PostgreSQL -----------------------------------------------------------------

def test_expiry_while_citizens_pay_neither_deadlocks_nor_loses_won(
        pg_cluster: Any) -> None:  # noqa: F811
    import threading

    store = open_store(pg_cluster.new_schema(), pool_size=6)
    try:
        names = [f"p{i}" for i in range(20)]
        people(store, *names)
        allowances.fund(store, "youth", 10**6, "f1")
        allowances.issue(store, "youth", "recipient\n" + "\n".join(names), 5_000, "2026-11-30",
                         "2026-10")
        allowances.issue(store, "youth", "recipient\n" + "\n".join(names), 3_000, "2026-12-31",
                         "2026-11")
        paid: list[int] = []
        errors: list[BaseException] = []

        def pay() -> None:
            try:
                for round_ in range(3):
                    for i, name in enumerate(names):
                        try:
                            spend(store, name, "youth", 1_500, f"pay-{round_}-{i}")
                            paid.append(1_500)
                        except BooksError:
                            pass    # the pocket no longer holds it
            except BaseException as err:  # told by the main thread
                errors.append(err)

        payer = threading.Thread(target=pay)
        payer.start()
        done = allowances.expire(store, "2026-12-01", chunk=1)
        payer.join(60)
        assert not payer.is_alive() and not errors
        assert done.grants == len(names)
        pockets = sum(bal(store, f"pocket:{n}:youth") for n in names)
        issued = len(names) * (5_000 + 3_000)
        assert issued == sum(paid) + done.amount + pockets
        assert all(bal(store, f"pocket:{n}:youth") >= 0 for n in names)
        rows = allowances.report(store)
        assert sum(r.spent for r in rows) == sum(paid)
        assert rows[-1].outstanding == pockets
        assert books.check(store).balanced
    finally:
        store.close()
