"""Daily merchant settlement (central/settlement.py), on SQLite and PostgreSQL.

Payments and refunds are posted straight into the books, as the spending poster would, and
every figure a run gives is set against a tally computed here from what was posted.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from central import books
from central.merchants import Merchant, Registry
from central.settlement import (
    FeeRules,
    confirm,
    mark_returned,
    mark_sent,
    runs,
    seoul_day,
    settle,
    settlements_of,
    split_fee,
)
from central.settlement_check import check
from central.settlement_file import FILE_HEADER, bank_file_rows, write_bank_file
from central.store import Store, open_store
from firmware_cfg.config import brn_check_digit
from localpay.cli import cli
from localpay.errors import ConfigError, TransactionError
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401

SEOUL = dt.timezone(dt.timedelta(hours=9))
D1, D2, D3, D4 = "2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"
#: a time after every day the tests settle
LATER = int(dt.datetime(2026, 11, 25, 3, tzinfo=SEOUL).timestamp() * 1000)


def brn(n: int) -> str:
    first9 = f"{120_000_000 + n:09d}"
    return f"{first9}{brn_check_digit(first9)}"


def noon_ms(day: str) -> int:
    return int(dt.datetime.fromisoformat(f"{day}T12:00:00+09:00").timestamp() * 1000)


class Books:
    """The merchants, citizens and postings of a test, with the tally kept independently."""

    def __init__(self, store: Store, municipality: str = "default") -> None:
        self.store = store
        self.m = municipality
        self.registry = Registry(store, municipality)
        self.n = 0
        #: (merchant, day, pocket) -> [payments, refunds], what was posted
        self.posted: dict[tuple[str, str, str], list[int]] = {}

    def merchant(self, mid: str, *, bank: bool = True, category: str = "ksic:47121") -> None:
        self.n += 1
        details: dict[str, Any] = ({"bank_code": "011", "account_no": f"301-0000-{self.n:04d}-11",
                                    "account_holder": f"Owner {mid}"} if bank else {})
        self.registry.add(Merchant(mid, f"Shop {mid}", brn(self.n), category, **details))
        with self.store.tx() as tx:
            books.open_account(tx, books.merchant_payable(mid), municipality=self.m)

    def citizen(self, who: str, pockets: dict[str, int]) -> None:
        with self.store.tx() as tx:
            books.open_account(tx, books.BANK_OUTSIDE, municipality=self.m)
            for name, amount in pockets.items():
                books.open_account(tx, books.pocket(who, name), municipality=self.m)
                books.transfer(tx, [books.Transfer(books.BANK_OUTSIDE, books.pocket(who, name),
                                                   amount, "topup", f"top:{who}:{name}")],
                               municipality=self.m)

    def pay(self, who: str, mid: str, amount: int, day: str, pocket: str = "cash", *,
            ref: str | None = None, detail_day: bool = True, at_ms: int | None = None) -> None:
        self.n += 1
        detail = json.dumps({"day": day}) if detail_day else ""
        with self.store.tx() as tx:
            books.transfer(tx, [books.Transfer(books.pocket(who, pocket),
                                               books.merchant_payable(mid), amount, "payment",
                                               ref or f"pay:{self.n}", detail)],
                           at_ms=at_ms if at_ms is not None else noon_ms(day),
                           municipality=self.m)
        self.posted.setdefault((mid, day, pocket), [0, 0])[0] += amount

    def refund(self, who: str, mid: str, amount: int, day: str, pocket: str = "cash") -> None:
        self.n += 1
        with self.store.tx() as tx:
            books.transfer(tx, [books.Transfer(books.merchant_payable(mid),
                                               books.pocket(who, pocket), amount, "refund",
                                               f"ref:{self.n}", json.dumps({"day": day}))],
                           at_ms=noon_ms(day), municipality=self.m)
        self.posted.setdefault((mid, day, pocket), [0, 0])[1] += amount

    def payments(self, mid: str, day: str | None = None) -> int:
        return sum(v[0] for (m, d, _), v in self.posted.items()
                   if m == mid and (day is None or d == day))

    def refunds(self, mid: str) -> int:
        return sum(v[1] for (m, _, _), v in self.posted.items() if m == mid)

    def balance(self, account: str) -> int:
        with self.store.tx(write=False) as tx:
            return books.balance(tx, account, municipality=self.m)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:  # noqa: F811
    s = open_store(store_url)
    yield s
    assert books.check(s).balanced
    s.close()


@pytest.fixture
def bk(store: Store) -> Books:
    b = Books(store)
    b.citizen("kim", {"cash": 10_000_000, "points": 1_000_000, "youth": 1_000_000})
    b.citizen("lee", {"cash": 10_000_000})
    return b


def by_merchant(run: Any) -> dict[str, Any]:
    return {s.merchant_id: s for s in run.settlements}


# -- fees ----------------------------------------------------------------------------------------

def test_fee_rules_parse_and_refuse() -> None:
    rules = FeeRules.from_toml('[settlement]\nfee_bp = 25\n[settlement.category_fee_bp]\n'
                               '"ksic:47" = 10\n"ksic:4712" = 5\n"mcc:5411" = 0\n')
    assert rules.bp_for("ksic:47121") == 5       # the longest prefix wins
    assert rules.bp_for("ksic:47300") == 10
    assert rules.bp_for("ksic:56111") == 25
    assert rules.bp_for("mcc:5411") == 0
    assert rules.bp_for("mcc:5412") == 25
    assert FeeRules.from_toml("[settlement]\n") == FeeRules()
    for bad in ("fee_bp = 1", "[settlement]\nfee_bp = 1001", "[settlement]\nfee_bp = -1",
                "[settlement]\nfee_bp = 2.5", "[settlement]\nfee_bp = true",
                "[settlement]\nfee = 1", "[settlement]\ncategory_fee_bp = 3",
                '[settlement.category_fee_bp]\n"ksic:4" = 1',
                '[settlement.category_fee_bp]\n"mcc:54" = 1', "[settlement", "x = ["):
        with pytest.raises(ConfigError):
            FeeRules.from_toml(bad)


def test_fee_rules_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        FeeRules.load(tmp_path / "none.toml")


@pytest.mark.parametrize(("fee", "gross"), [
    (0, {"cash": 5}), (7, {"cash": 1, "points": 1, "youth": 1}), (10, {"a": 3, "b": 3}),
    (99, {"cash": 9999, "points": 1}), (5, {"cash": 0, "points": 10})])
def test_split_fee_adds_up(fee: int, gross: dict[str, int]) -> None:
    parts = split_fee(fee, gross)
    assert sum(parts.values()) == fee
    total = sum(gross.values())
    for p, g in gross.items():  # each part within one won of its exact share
        assert fee * g // total <= parts[p] <= fee * g // total + 1


def test_fees_floor_at_basis_points_and_net_by_pocket(store: Store, bk: Books) -> None:
    bk.merchant("m1")                              # ksic:47121 -> 37 bp
    bk.merchant("m2", category="ksic:56111")       # the default 150 bp
    bk.merchant("m3", category="mcc:5411")         # 0 bp
    bk.pay("kim", "m1", 12_345, D1, "cash")
    bk.pay("kim", "m1", 6_789, D1, "points")
    bk.pay("kim", "m1", 3_003, D1, "youth")
    bk.refund("kim", "m1", 1_000, D1, "cash")
    with store.tx() as tx:  # the part of an offline payment that no pocket covered
        books.open_account(tx, "receivable:kim", "receivable", flags=0)
        books.transfer(tx, [books.Transfer("receivable:kim", books.merchant_payable("m1"), 500,
                                           "payment", "owed", json.dumps({"day": D1}))])
    bk.pay("lee", "m2", 9_999, D1)
    bk.pay("lee", "m3", 5_000, D1)
    rules = FeeRules(150, (("ksic:4712", 37), ("mcc:5411", 0)))
    run = settle(store, D1, fee_rules=rules, now_ms=LATER)
    got = by_merchant(run)
    gross1 = 12_345 + 6_789 + 3_003 + 500
    fee1 = gross1 * 37 // 10_000
    assert fee1 == 83                              # 83.78: floored
    assert (got["m1"].gross, got["m1"].refunds, got["m1"].fees, got["m1"].net) == \
        (gross1, 1_000, fee1, gross1 - 1_000 - fee1)
    assert got["m2"].fees == 9_999 * 150 // 10_000 == 149
    assert got["m3"].fees == 0 and got["m3"].net == 5_000
    pockets = got["m1"].by_pocket
    assert {p: (v["gross"], v["refunds"]) for p, v in pockets.items()} == {
        "cash": (12_345, 1_000), "points": (6_789, 0), "youth": (3_003, 0),
        "receivable": (500, 0)}
    assert sum(v["fees"] for v in pockets.values()) == fee1
    assert sum(v["net"] for v in pockets.values()) == got["m1"].net
    assert {s.status for s in run.settlements} == {"pending"}
    # the books: fees to the operator, nets in transit, payables emptied
    assert bk.balance(books.OPERATOR_FEES) == fee1 + 149
    assert bk.balance(books.SETTLEMENT_IN_TRANSIT) == sum(s.net for s in run.settlements)
    for m in ("m1", "m2", "m3"):
        assert bk.balance(books.merchant_payable(m)) == 0


# -- a day, run once ------------------------------------------------------------------------------

def test_second_run_answers_the_first_and_moves_nothing(store: Store, bk: Books) -> None:
    bk.merchant("m1")
    bk.pay("kim", "m1", 7_000, D1)
    first = settle(store, D1, fee_rules=FeeRules(100), now_ms=LATER)
    before = books.check(store)
    again = settle(store, D1, fee_rules=FeeRules(900), now_ms=LATER + 1)
    assert again.already and not first.already
    assert again.settlements == first.settlements
    assert books.check(store).transfers == before.transfers


def test_day_not_ended_is_refused(store: Store, bk: Books) -> None:
    with pytest.raises(TransactionError):
        settle(store, D1, now_ms=noon_ms(D1))
    with pytest.raises(ConfigError):
        settle(store, "2026-02-30", now_ms=LATER)


def test_business_day_from_detail_else_seoul_day_of_at_ms(store: Store, bk: Books) -> None:
    bk.merchant("m1")
    # 23:30 on D1 in Seoul is 14:30 UTC: Seoul's day, not UTC's, counts
    late_evening = int(dt.datetime.fromisoformat(f"{D1}T23:30:00+09:00").timestamp() * 1000)
    early = int(dt.datetime.fromisoformat(f"{D2}T00:10:00+09:00").timestamp() * 1000)
    assert seoul_day(late_evening) == D1 and seoul_day(early) == D2
    bk.pay("kim", "m1", 100, D1, detail_day=False, at_ms=late_evening)
    bk.pay("kim", "m1", 200, D1, detail_day=False, at_ms=early - 24 * 3_600_000 + 1)
    # posted on D2 but its entry's day is D1: the detail decides
    bk.pay("kim", "m1", 400, D1, at_ms=early)
    bk.pay("kim", "m1", 800, D2, detail_day=False, at_ms=early)
    with store.tx() as tx:  # a day that is not a date is not taken: the time decides
        books.transfer(tx, [books.Transfer(books.pocket("kim"), books.merchant_payable("m1"),
                                           1_600, "payment", "odd", '{"day": "soon"}')],
                       at_ms=early)
    run = settle(store, D1, now_ms=LATER)
    assert by_merchant(run)["m1"].gross == 100 + 200 + 400
    run2 = settle(store, D2, now_ms=LATER)
    assert by_merchant(run2)["m1"].gross == 800 + 1_600


# -- held and carried -----------------------------------------------------------------------------

def test_merchant_without_bank_details_is_held_never_dropped(store: Store, bk: Books) -> None:
    bk.merchant("m1")
    bk.merchant("m2", bank=False)
    bk.pay("kim", "m1", 3_000, D1)
    bk.pay("kim", "m2", 4_000, D1)
    run = settle(store, D1, fee_rules=FeeRules(100), now_ms=LATER)
    got = by_merchant(run)
    assert got["m2"].status == "held" and "bank account" in got["m2"].reason
    assert got["m2"].gross == 4_000 and [s.merchant_id for s in run.held] == ["m2"]
    assert bk.balance(books.merchant_payable("m2")) == 4_000     # nothing moved
    assert [r[6] for r in bank_file_rows(store, D1)] == ["m1"]
    # with an account, the next run pays it, once, as late money of D1
    bk.registry.update("m2", bank_code="004", account_no="123456789", account_holder="Park")
    bk.pay("kim", "m2", 500, D2)
    got2 = by_merchant(settle(store, D2, fee_rules=FeeRules(100), now_ms=LATER))
    assert (got2["m2"].status, got2["m2"].gross, got2["m2"].late_gross) == ("pending", 4_500,
                                                                             4_000)
    assert got2["m2"].fees == 4_500 // 100
    assert bk.balance(books.merchant_payable("m2")) == 0
    assert "m1" not in got2


def test_net_of_zero_or_less_is_carried(store: Store, bk: Books) -> None:
    bk.merchant("m1")
    bk.pay("kim", "m1", 1_000, D1)
    bk.pay("kim", "m1", 500, D2)
    bk.refund("kim", "m1", 1_500, D2)   # refunds are taken at the first run after them
    got = by_merchant(settle(store, D1, now_ms=LATER))
    assert (got["m1"].status, got["m1"].net) == ("carried", -500)
    assert bk.balance(books.merchant_payable("m1")) == 0
    got2 = by_merchant(settle(store, D2, now_ms=LATER))
    assert (got2["m1"].status, got2["m1"].gross, got2["m1"].refunds, got2["m1"].net) == (
        "carried", 1_500, 1_500, 0)
    bk.pay("lee", "m1", 2_000, D3)
    got3 = by_merchant(settle(store, D3, now_ms=LATER))
    assert (got3["m1"].status, got3["m1"].gross, got3["m1"].refunds, got3["m1"].net,
            got3["m1"].late_gross) == ("pending", 3_500, 1_500, 2_000, 1_500)


# -- late batches ---------------------------------------------------------------------------------

def test_late_payment_goes_to_the_next_run_exactly_once(store: Store, bk: Books) -> None:
    bk.merchant("m1")
    bk.pay("kim", "m1", 1_000, D1)
    assert by_merchant(settle(store, D1, now_ms=LATER))["m1"].gross == 1_000
    bk.pay("kim", "m1", 250, D1, "points")      # a batch of D1 arriving after D1 was run
    bk.pay("kim", "m1", 700, D3)                # a day not run yet: waits for its own run
    assert settle(store, D1, now_ms=LATER).already
    got = by_merchant(settle(store, D2, now_ms=LATER))["m1"]
    assert (got.gross, got.late_gross, got.by_pocket["points"]["gross"]) == (250, 250, 250)
    got3 = by_merchant(settle(store, D3, now_ms=LATER))["m1"]
    assert (got3.gross, got3.late_gross) == (700, 0)
    settled = sum(s.gross for d in (D1, D2, D3) for s in settlements_of(store, d).paid)
    assert settled == bk.payments("m1") == 1_950
    report = check(store, D1)
    assert report.clean
    line = report.lines[0]
    assert (line.books_gross, line.on_time, line.late, line.open) == (1_250, 1_000, 250, 0)


def test_days_settled_out_of_order(store: Store, bk: Books) -> None:
    bk.merchant("m1")
    bk.pay("kim", "m1", 100, D1)
    bk.pay("kim", "m1", 200, D2)
    assert by_merchant(settle(store, D2, now_ms=LATER))["m1"].gross == 200
    assert by_merchant(settle(store, D1, now_ms=LATER))["m1"].gross == 100
    bk.pay("kim", "m1", 40, D1)                  # late for D1, and D2 is run already
    assert by_merchant(settle(store, D3, now_ms=LATER))["m1"].late_gross == 40


# -- after the run --------------------------------------------------------------------------------

def test_status_moves_sent_confirmed(store: Store, bk: Books) -> None:
    bk.merchant("m1")
    bk.merchant("m2")
    bk.pay("kim", "m1", 1_000, D1)
    bk.pay("kim", "m2", 2_000, D1)
    settle(store, D1, now_ms=LATER)
    with pytest.raises(TransactionError):
        confirm(store, D1, "m1", now_ms=LATER)   # not sent yet
    with pytest.raises(TransactionError):
        mark_sent(store, D2)                      # no run
    assert mark_sent(store, D1, now_ms=LATER + 1) == 2
    assert mark_sent(store, D1) == 0
    done = confirm(store, D1, "m1", now_ms=LATER + 2)
    assert [(s.merchant_id, s.status, s.confirmed_ms) for s in done] == [
        ("m1", "confirmed", LATER + 2)]
    assert bk.balance(books.SETTLEMENT_IN_TRANSIT) == 2_000
    assert confirm(store, D1, "m1") == []         # again: nothing
    assert [s.merchant_id for s in confirm(store, D1, now_ms=LATER + 3)] == ["m2"]
    assert bk.balance(books.SETTLEMENT_IN_TRANSIT) == 0
    assert bk.balance(books.BANK_OUTSIDE) == -20_000_000 - 2_000_000 + 3_000
    statuses = {s.merchant_id: (s.status, s.sent_ms) for s in settlements_of(store, D1).settlements}
    assert statuses == {"m1": ("confirmed", LATER + 1), "m2": ("confirmed", LATER + 1)}
    (head,) = runs(store)
    assert head["day"] == D1 and head["statuses"] == {"confirmed": {"count": 2, "net": 3_000}}


def test_returned_then_settled_again(store: Store, bk: Books) -> None:
    bk.merchant("m1")
    bk.pay("kim", "m1", 5_000, D1)
    first = by_merchant(settle(store, D1, fee_rules=FeeRules(100), now_ms=LATER))["m1"]
    with pytest.raises(TransactionError):
        mark_returned(store, D1, "m1", "account closed")   # not sent
    mark_sent(store, D1)
    with pytest.raises(ConfigError):
        mark_returned(store, D1, "m1", "  ")
    back = mark_returned(store, D1, "m1", "account closed", now_ms=LATER + 5)
    assert (back.status, back.reason, back.returned_ms) == ("returned", "account closed",
                                                            LATER + 5)
    assert mark_returned(store, D1, "m1", "again") == back
    with pytest.raises(TransactionError):
        confirm(store, D1, "m1")
    assert bk.balance(books.merchant_payable("m1")) == first.net
    assert bk.balance(books.SETTLEMENT_IN_TRANSIT) == 0
    bk.registry.update("m1", account_no="999-8888-7777")
    bk.pay("kim", "m1", 1_000, D2)
    again = by_merchant(settle(store, D2, fee_rules=FeeRules(100), now_ms=LATER))["m1"]
    # the returned net is paid again without a second fee
    assert (again.gross, again.returned, again.fees, again.net) == (
        1_000, first.net, 10, first.net + 990)
    assert again.account_no == "999-8888-7777"
    assert check(store, D1).clean and check(store, D2).clean


# -- the bank file ---------------------------------------------------------------------------------

def test_bank_file_rows_and_permissions(store: Store, bk: Books, tmp_path: Path) -> None:
    bk.merchant("m2")
    bk.merchant("m1")
    bk.merchant("m3", bank=False)
    bk.pay("kim", "m1", 1_200, D1)
    bk.pay("kim", "m2", 3_400, D1)
    bk.pay("kim", "m3", 5_600, D1)
    settle(store, D1, fee_rules=FeeRules(50), now_ms=LATER)
    path = tmp_path / "settlements" / f"merchants-{D1}.csv"
    assert write_bank_file(store, D1, path) == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf") and raw.count(b"\r\n") == 3
    rows = list(csv.reader(raw.decode("utf-8").splitlines()))
    m1, m2 = bk.registry.get("m1"), bk.registry.get("m2")
    assert m1 is not None and m2 is not None
    assert rows == [list(FILE_HEADER),
                    ["1", "011", m1.account_no.replace("-", ""), m1.account_holder,
                     str(1_200 - 1_200 * 50 // 10_000), f"LOCALPAY {D1}", "m1", m1.brn],
                    ["2", "011", m2.account_no.replace("-", ""), m2.account_holder,
                     str(3_400 - 3_400 * 50 // 10_000), f"LOCALPAY {D1}", "m2", m2.brn]]
    assert write_bank_file(store, D1, path) == 2 and path.read_bytes() == raw
    assert {s.merchant_id: s.file for s in settlements_of(store, D1).settlements} == {
        "m1": str(path), "m2": str(path), "m3": ""}
    assert not list(path.parent.glob("*.tmp"))


# -- the check -------------------------------------------------------------------------------------

def test_check_against_terminal_totals(store: Store, bk: Books) -> None:
    bk.merchant("m1")
    bk.merchant("m2")
    bk.registry.assign_terminal("T1", "m1")
    bk.registry.assign_terminal("T2", "m1")
    bk.registry.assign_terminal("T3", "m2")
    bk.pay("kim", "m1", 1_000, D1)
    bk.pay("kim", "m1", 2_000, D1)
    bk.refund("kim", "m1", 300, D1)
    bk.pay("kim", "m2", 700, D1)
    with store.tx() as tx:
        tx.many("INSERT INTO terminal_totals VALUES (?, ?, ?, ?, ?, 0)", [
            ("T1", D1, "payment", 1, 1_000), ("T2", D1, "payment", 1, 2_000),
            ("T2", D1, "void", 1, 300), ("T3", D1, "payment", 2, 900)])
    settle(store, D1, now_ms=LATER)
    bk.pay("lee", "m2", 200, D1)   # reaches the books after the run: open, not a problem
    report = check(store, D1)
    lines = {x.merchant_id: x for x in report.lines}
    assert not lines["m1"].problems
    assert (lines["m1"].terminal_gross, lines["m1"].terminal_refunds) == (3_000, 300)
    assert (lines["m2"].books_gross, lines["m2"].on_time, lines["m2"].open) == (900, 700, 200)
    assert not lines["m2"].problems       # the terminal counted the late one too
    with store.tx() as tx:
        tx.run("UPDATE terminal_totals SET amount = 950 WHERE terminal_id = 'T3'")
        # a settlement whose figure is not its items'
        tx.run("UPDATE settlements SET gross = gross + 1 WHERE merchant_id = 'm1'")
    report = check(store, D1)
    assert [x.merchant_id for x in report.problems] == ["m1", "m2"]
    assert "items" in report.problems[0].problems[0]
    assert "terminals reported 950" in report.problems[1].problems[0]


# -- the command line ------------------------------------------------------------------------------

def test_cli_run_sent_confirm_status(store: Store, bk: Books, tmp_path: Path) -> None:
    bk.merchant("m1")
    bk.merchant("m2", bank=False)
    bk.pay("kim", "m1", 10_000, D1)
    bk.pay("kim", "m2", 1_000, D1)
    fees = tmp_path / "fees.toml"
    fees.write_text("[settlement]\nfee_bp = 30\n", encoding="utf-8")
    base = ["central", "settlement"]
    where = ["--db", store.url, "--data", str(tmp_path / "data")]
    runner = CliRunner()
    assert runner.invoke(cli, ["central", "init", *where]).exit_code == 0  # the log key
    out = runner.invoke(cli, [*base, "run", "--date", D1, "--fees", str(fees), "--json",
                              *where])
    assert out.exit_code == 0, out.output
    answer = json.loads(out.output)
    assert (answer["paid"], answer["fees"], answer["held"]) == (1, 30, ["m2"])
    path = tmp_path / "data" / "settlements" / f"merchants-{D1}.csv"
    assert path.exists() and answer["file"] == str(path)
    out = runner.invoke(cli, [*base, "run", "--date", D1, *where])
    assert out.exit_code == 0 and "already" in out.output
    out = runner.invoke(cli, [*base, "run", "--date", D2, "--fees", str(tmp_path / "x"),
                              *where])
    assert out.exit_code != 0 and "Traceback" not in out.output
    for args in (["sent", "--date", D1], ["confirm", "--date", D1, "--merchant", "m1"]):
        out = runner.invoke(cli, [*base, *args, *where])
        assert out.exit_code == 0, out.output
    out = runner.invoke(cli, [*base, "status", "--date", D1, "--json", *where])
    assert out.exit_code == 0, out.output
    status = json.loads(out.output)
    assert {s["merchant_id"]: s["status"] for s in status["settlements"]} == {
        "m1": "confirmed", "m2": "held"}
    assert status["check"]["clean"]
    out = runner.invoke(cli, [*base, "status", *where])
    assert out.exit_code == 0 and D1 in out.output
    out = runner.invoke(cli, [*base, "returned", "--date", D1, "--merchant", "m1",
                              "--reason", "closed", *where])
    assert out.exit_code != 0 and "confirmed" in out.output


# -- the property ----------------------------------------------------------------------------------

MERCHANTS = ("m1", "m2", "m3")
DAYS = (D1, D2, D3, D4)
_event = st.one_of(
    st.tuples(st.just("pay"), st.sampled_from(MERCHANTS), st.sampled_from(DAYS),
              st.sampled_from(("cash", "points")), st.integers(1, 50_000)),
    st.tuples(st.just("refund"), st.sampled_from(MERCHANTS), st.sampled_from(DAYS),
              st.sampled_from(("cash", "points")), st.integers(1, 50_000)),
    st.tuples(st.just("settle"), st.just(""), st.sampled_from(DAYS), st.just(""),
              st.integers(0, 300)))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(_event, max_size=30))
def test_property_every_won_settled_once(store_url: str,  # noqa: F811
                                         events: list[tuple[str, str, str, str, int]]) -> None:
    # a municipality of its own for each example: runs, refs and accounts never meet
    municipality = f"p{secrets.token_hex(6)}"
    store = open_store(store_url)
    try:
        bk = Books(store, municipality)
        who = "citizen"
        bk.citizen(who, {"cash": 10**9, "points": 10**9})
        for m in MERCHANTS:
            bk.merchant(m, bank=m != "m3")
        ran: set[str] = set()
        for kind, m, day, pocket, amount in events:
            if kind == "pay":
                bk.pay(who, m, amount, day, pocket)
            elif kind == "refund":
                owed = bk.balance(books.merchant_payable(m))
                if owed > 0:
                    bk.refund(who, m, min(amount, owed), day, pocket)
            elif day not in ran:
                ran.add(day)
                run = settle(store, day, fee_rules=FeeRules(amount), municipality=municipality,
                             now_ms=LATER)
                for s in run.settlements:
                    assert s.fees == s.gross * amount // 10_000
                    assert s.net == s.gross - s.refunds - s.fees
        tally: dict[str, list[int]] = {m: [0, 0, 0] for m in MERCHANTS}
        for day in ran:
            for s in settlements_of(store, day, municipality=municipality).settlements:
                if s.status == "pending":
                    tally[s.merchant_id][0] += s.net
                    tally[s.merchant_id][1] += s.fees
        with store.tx(write=False) as tx:
            items = tx.all("SELECT transfer_id FROM settlement_items WHERE municipality_id = ?",
                           (municipality,))
            open_rows = tx.all(
                "SELECT t.debit_account, t.credit_account, t.code, t.amount FROM book_transfers "
                "t WHERE t.municipality_id = ? AND t.code IN ('payment', 'refund') AND NOT "
                "EXISTS (SELECT 1 FROM settlement_items i WHERE i.municipality_id = "
                "t.municipality_id AND i.transfer_id = t.transfer_id)", (municipality,))
        assert len(items) == len({r[0] for r in items})          # nothing covered twice
        for debit, credit, code, amount in open_rows:
            m = (credit if code == "payment" else debit).split(":")[1]
            tally[m][2] += int(amount) if code == "payment" else -int(amount)
        for m in MERCHANTS:
            net, fees, still_open = tally[m]
            assert net + fees + still_open == bk.payments(m) - bk.refunds(m)
            assert bk.balance(books.merchant_payable(m)) == still_open
            if m == "m3":
                assert net == fees == 0                          # held, never paid
        assert books.check(store, municipality).balanced
        for day in ran:
            assert check(store, day, municipality=municipality).clean
    finally:
        store.close()


def test_run_stopped_midway_is_finished_by_running_again(
        store: Store, bk: Books, monkeypatch: pytest.MonkeyPatch) -> None:
    from central import settlement

    for m in ("m1", "m2", "m3"):
        bk.merchant(m)
        bk.pay("kim", m, 1_000, D1)
    monkeypatch.setattr(settlement, "POST_CHUNK", 1)
    real = books.transfer
    calls = []

    def failing(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("power cut")
        return real(*args, **kw)

    monkeypatch.setattr(books, "transfer", failing)
    with pytest.raises(OSError):
        settle(store, D1, now_ms=LATER)
    assert bk.balance(books.SETTLEMENT_IN_TRANSIT) == 1_000      # the first chunk only
    with pytest.raises(TransactionError, match="run it again"):
        mark_sent(store, D1)
    again = settle(store, D1, now_ms=LATER)
    assert again.already and [s.status for s in again.settlements] == ["pending"] * 3
    assert bk.balance(books.SETTLEMENT_IN_TRANSIT) == 3_000
    assert mark_sent(store, D1) == 3


def test_refund_between_decision_and_posting_holds(
        store: Store, bk: Books, monkeypatch: pytest.MonkeyPatch) -> None:
    from central import settlement

    bk.merchant("m1")
    bk.merchant("m2")
    bk.pay("kim", "m1", 1_000, D1)
    bk.pay("kim", "m2", 2_000, D1)
    real = settlement._post_pending

    def refund_first(*args: Any) -> None:
        bk.refund("kim", "m1", 600, D2)   # the payable now holds less than was decided
        real(*args)

    monkeypatch.setattr(settlement, "_post_pending", refund_first)
    got = by_merchant(settle(store, D1, now_ms=LATER))
    assert (got["m1"].status, got["m2"].status) == ("held", "pending")
    assert bk.balance(books.merchant_payable("m1")) == 400
    monkeypatch.setattr(settlement, "_post_pending", real)
    got2 = by_merchant(settle(store, D2, now_ms=LATER))["m1"]
    assert (got2.gross, got2.refunds, got2.net, got2.late_gross) == (1_000, 600, 400, 1_000)
