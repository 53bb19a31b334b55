"""Payments and refunds of the central log reach the books, split by pocket: through the real
ingest path with signed entries, on SQLite and a real PostgreSQL. Every figure is set against
one worked out here by hand or by an independent tally, and the books balance after each
test."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from central import accounts, books
from central import open_service as open_central_service
from central.merchants import Merchant, Registry
from central.reconcile import report
from central.service import CentralLog
from central.spending import (
    SpendingPoster,
    active_rules,
    load_rules,
    post_log,
    rules_text,
    rules_versions,
)
from localpay.errors import ConfigError
from localpay.pockets import DEFAULT_POCKET_RULES, DEFAULT_RULES, parse_rules, terminal_split
from tests.books_world import CAFE, LOCAL, MART, balanced_world
from tests.incentives_data import Chain, chain, open_service, seoul_ms
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401

#: cash anywhere; points anywhere but large marts; the youth allowance only in retail
#: (KSIC 47), at most 3,000 won a day
RULES = DEFAULT_RULES + """
[[pocket]]
id = "youth"
kind = "allowance"
allow_categories = ["ksic:47"]
per_day = 3000
"""

DAY = (2026, 11, 20)
A_CARD, B_CARD, LOOSE_CARD = "a1" * 32, "b2" * 32, "c3" * 32


@pytest.fixture
def svc(store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    service = open_service(store_url, followers=[SpendingPoster()])
    yield from balanced_world(service, (LOCAL, MART, CAFE))


def fund(svc: CentralLog, account: str, card: str | None = None, *, cash: int = 0,
         points: int = 0, allowance: dict[str, int] | None = None) -> None:
    """Open ``account``, link ``card`` and put money in its pockets the way the programme
    does: top-up, points payout, allowance issue, each from its budget."""
    with svc.store.tx() as tx:
        accounts.create(tx, account)
        if card:
            accounts.link(tx, account, card)
        for a in (books.BANK_OUTSIDE, books.programme_funding("goyang"),
                  books.programme_points("goyang")):
            books.open_account(tx, a)
        moves = [books.Transfer(books.BANK_OUTSIDE, books.programme_funding("goyang"),
                                10**9, "funding", f"fund:{account}")]
        if cash:
            moves.append(books.Transfer(books.BANK_OUTSIDE, books.pocket(account, "cash"),
                                        cash, "topup", f"topup:{account}"))
        if points:
            moves += [books.Transfer(books.programme_funding("goyang"),
                                     books.programme_points("goyang"), points, "budget",
                                     f"budget-points:{account}"),
                      books.Transfer(books.programme_points("goyang"),
                                     books.pocket(account, "points"), points,
                                     "points_payout", f"payout:{account}")]
        for programme, won in (allowance or {}).items():
            books.open_account(tx, books.allowance(programme))
            books.open_account(tx, books.pocket(account, programme))
            if not won:
                continue
            moves += [books.Transfer(books.programme_funding("goyang"),
                                     books.allowance(programme), won, "budget",
                                     f"budget-{programme}:{account}"),
                      books.Transfer(books.allowance(programme),
                                     books.pocket(account, programme), won,
                                     "allowance_issue", f"issue-{programme}:{account}")]
        books.transfer(tx, moves, at_ms=0)


def till(svc: CentralLog, tid: str, merchant: Merchant | None) -> Chain:
    c = chain(svc, tid)
    if merchant is not None:
        Registry(svc.store).assign_terminal(tid, merchant.merchant_id)
    return c


def pay(c: Chain, card: str, amount: int, hour: int = 10, *,
        split: list[list[Any]] | None = None) -> Any:
    detail: dict[str, Any] = {"card": "1234", "merchant_category": "local_food",
                              "rider": "adult", "scheme": "uid"}
    if split is not None:
        detail["split"] = split
    return c.entry("payment", card, amount, seoul_ms(*DAY, hour),
                   detail=json.dumps(detail, sort_keys=True, separators=(",", ":")),
                   place="M")


def back(c: Chain, card: str, amount: int, seq: int, kind: str = "refund",
         hour: int = 12) -> Any:
    return c.entry(kind, card, amount, seoul_ms(*DAY, hour), ref_seq=seq, place="M")


def bal(svc: CentralLog, account_id: str) -> int:
    with svc.store.tx(write=False) as tx:
        found = books.find_account(tx, account_id)
    return 0 if found is None else found.balance


def pockets_of(svc: CentralLog, account: str) -> dict[str, int]:
    with svc.store.tx(write=False) as tx:
        return {p.name: p.balance for p in accounts.pockets(tx, account)}


def refs(svc: CentralLog, prefix: str) -> dict[str, int]:
    with svc.store.tx(write=False) as tx:
        rows = tx.all("SELECT ref, amount FROM book_transfers WHERE code IN "
                      "('payment', 'refund')")
    return {str(r): int(a) for r, a in rows if str(r).startswith(prefix)}


def rows(svc: CentralLog, sql: str) -> list[tuple[Any, ...]]:
    with svc.store.tx(write=False) as tx:
        return tx.all(sql)


def day() -> str:
    return "-".join(f"{n:02d}" for n in DAY)


# -- splitting -----------------------------------------------------------------------------------


def test_a_local_merchant_is_paid_from_points_then_cash(svc: CentralLog) -> None:
    fund(svc, "A", A_CARD, cash=10_000, points=3_000)
    t = till(svc, "TILL-L", LOCAL)
    svc.ingest("TILL-L", [pay(t, A_CARD, 5_000)])
    # restricted money first: all 3,000 points, then 2,000 of the cash
    assert pockets_of(svc, "A") == {"cash": 8_000, "points": 0}
    assert bal(svc, "merchant:M-LOCAL:payable") == 5_000
    assert refs(svc, "pay:") == {"pay:TILL-L:1:points": 3_000, "pay:TILL-L:1:cash": 2_000}
    rep = report(svc, day())
    assert rep.pocket_overdrafts == [] and rep.pocket_flags == []


def test_a_large_mart_is_paid_from_cash_only(svc: CentralLog) -> None:
    fund(svc, "A", A_CARD, cash=10_000, points=3_000)
    t = till(svc, "TILL-M", MART)
    svc.ingest("TILL-M", [pay(t, A_CARD, 5_000)])
    assert pockets_of(svc, "A") == {"cash": 5_000, "points": 3_000}
    assert bal(svc, "merchant:M-MART:payable") == 5_000
    assert refs(svc, "pay:") == {"pay:TILL-M:1:cash": 5_000}


def test_an_allowance_pays_first_within_its_rules(svc: CentralLog) -> None:
    load_rules(svc.store, RULES)
    fund(svc, "A", A_CARD, cash=10_000, points=1_000, allowance={"youth": 5_000})
    shop, cafe = till(svc, "TILL-L", LOCAL), till(svc, "TILL-C", CAFE)
    # 4,000 at a retail shop: youth gives its 3,000 a day, points 1,000
    svc.ingest("TILL-L", [pay(shop, A_CARD, 4_000)])
    assert pockets_of(svc, "A") == {"cash": 10_000, "points": 0, "youth": 2_000}
    # the day's youth limit is used up: 1,000 more comes from cash
    svc.ingest("TILL-L", [pay(shop, A_CARD, 1_000, hour=11)])
    assert pockets_of(svc, "A") == {"cash": 9_000, "points": 0, "youth": 2_000}
    # a cafe is not retail: the allowance never pays there
    svc.ingest("TILL-C", [pay(cafe, A_CARD, 500)])
    assert pockets_of(svc, "A") == {"cash": 8_500, "points": 0, "youth": 2_000}
    assert refs(svc, "pay:") == {
        "pay:TILL-L:1:youth": 3_000, "pay:TILL-L:1:points": 1_000, "pay:TILL-L:2:cash": 1_000,
        "pay:TILL-C:1:cash": 500}
    # the next day the limit is new again
    svc.ingest("TILL-L", [shop.entry("payment", A_CARD, 2_500,
                                     seoul_ms(DAY[0], DAY[1], DAY[2] + 1, 9), place="M")])
    assert pockets_of(svc, "A")["youth"] == 0 and pockets_of(svc, "A")["cash"] == 8_000


def test_an_allowance_past_its_grants_expiry_pays_nothing(svc: CentralLog) -> None:
    load_rules(svc.store, RULES)
    fund(svc, "A", A_CARD, cash=10_000, allowance={"youth": 2_000})
    with svc.store.tx() as tx:
        tx.run("INSERT INTO allowance_grants (municipality_id, programme, period, account_id, "
               "recipient, amount, expires, ref, issued_ms) VALUES ('default', 'youth', "
               "'2026-10', 'A', 'A', 2000, '2026-11-19', 'grant-A', 0)")
    t = till(svc, "TILL-L", LOCAL)
    svc.ingest("TILL-L", [pay(t, A_CARD, 1_000)])          # the 20th: a day too late
    assert pockets_of(svc, "A") == {"cash": 9_000, "points": 0, "youth": 2_000}


# -- overdrafts ------------------------------------------------------------------------------------


def test_offline_approvals_beyond_the_books_are_owed_and_shown_by_pocket(
        svc: CentralLog, store_url: str, tmp_path: Path) -> None:  # noqa: F811
    fund(svc, "A", A_CARD, cash=3_000, points=1_000)
    t = till(svc, "TILL-L", LOCAL)
    # The terminal approved all three offline; by the books the second is short 1,000 won
    # of points it thought were there, the third all of its 2,500 cash.
    svc.ingest("TILL-L", [
        pay(t, A_CARD, 2_500, split=[["points", 1_000], ["cash", 1_500]]),
        pay(t, A_CARD, 3_000, split=[["cash", 2_000], ["points", 1_000]], hour=11),
        pay(t, A_CARD, 2_500, hour=13)])
    # 1: points 1,000 + cash 1,500. 2: cash 1,500 left, 1,500 owed: 1,000 the points the
    # terminal drew and could not have, 500 of its cash. 3: 2,500 owed, no split: cash.
    assert pockets_of(svc, "A") == {"cash": 0, "points": 0}
    assert bal(svc, "receivable:A") == -(1_500 + 2_500)
    assert bal(svc, "merchant:M-LOCAL:payable") == 2_500 + 3_000 + 2_500
    assert refs(svc, "pay-owed:") == {"pay-owed:TILL-L:2": 1_500, "pay-owed:TILL-L:3": 2_500}
    rep = report(svc, day())
    assert [(o["seq"], o["account"], o["pocket"], o["amount"]) for o in rep.pocket_overdrafts
            ] == [(2, "A", "cash", 500), (2, "A", "points", 1_000), (3, "A", "cash", 2_500)]
    assert rep.pocket_flags == [] and not rep.clean
    from localpay.cli import cli

    args = ["central", "report", "--db", store_url, "--data", str(tmp_path / "d"),
            "--date", day()]
    assert CliRunner().invoke(cli, ["central", "init", *args[2:6]]).exit_code == 0
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 1
    assert out.output.count("POCKET OVERDRAFT account A") == 3
    assert "2,500 won beyond pocket cash" in out.output
    doc = json.loads(CliRunner().invoke(cli, [*args, "--json"]).stdout)
    assert doc["clean"] is False and len(doc["pocket_overdrafts"]) == 3


def test_a_payment_nothing_may_pay_for_is_owed_whole(svc: CentralLog) -> None:
    fund(svc, "A", A_CARD, points=5_000)
    t = till(svc, "TILL-M", MART)
    svc.ingest("TILL-M", [pay(t, A_CARD, 1_200, split=[["points", 1_200]])])
    assert pockets_of(svc, "A") == {"cash": 0, "points": 5_000}   # points never at marts
    assert bal(svc, "receivable:A") == -1_200
    assert [(o["pocket"], o["amount"]) for o in report(svc, day()).pocket_overdrafts] == [
        ("points", 1_200)]


# -- refunds ---------------------------------------------------------------------------------------


def test_a_refund_reverses_newest_pocket_first_and_never_more_than_was_paid(
        svc: CentralLog) -> None:
    fund(svc, "A", A_CARD, cash=10_000, points=3_000)
    t = till(svc, "TILL-L", LOCAL)
    svc.ingest("TILL-L", [pay(t, A_CARD, 5_000)])             # points 3,000 then cash 2,000
    svc.ingest("TILL-L", [back(t, A_CARD, 2_500, 1)])        # cash 2,000 back, points 500
    assert pockets_of(svc, "A") == {"cash": 10_000, "points": 500}
    assert refs(svc, "refund:") == {"refund:TILL-L:2:cash": 2_000,
                                    "refund:TILL-L:2:points": 500}
    svc.ingest("TILL-L", [back(t, A_CARD, 3_000, 1)])        # 2,500 left of the payment
    assert pockets_of(svc, "A") == {"cash": 10_000, "points": 3_000}
    assert bal(svc, "merchant:M-LOCAL:payable") == 0
    assert refs(svc, "refund:TILL-L:3") == {"refund:TILL-L:3:points": 2_500}
    flags = report(svc, day()).pocket_flags
    assert [(f["reason"], f["seq"], json.loads(f["detail"])) for f in flags] == [
        ("refund_exceeds", 3, {"payment": 1, "asked": 3_000, "left": 2_500})]


def test_a_void_pays_off_the_debt_before_it_refills_a_pocket(svc: CentralLog) -> None:
    fund(svc, "A", A_CARD, cash=1_000)
    t = till(svc, "TILL-L", LOCAL)
    svc.ingest("TILL-L", [pay(t, A_CARD, 4_000), back(t, A_CARD, 4_000, 1, kind="void")])
    assert pockets_of(svc, "A") == {"cash": 1_000, "points": 0}
    assert bal(svc, "receivable:A") == 0
    assert bal(svc, "merchant:M-LOCAL:payable") == 0
    assert refs(svc, "refund") == {"refund-owed:TILL-L:2": 3_000, "refund:TILL-L:2:cash": 1_000}


def test_a_refund_of_a_payment_the_books_do_not_hold_is_flagged(svc: CentralLog) -> None:
    t = till(svc, "TILL-L", LOCAL)
    svc.ingest("TILL-L", [pay(t, LOOSE_CARD, 1_000), back(t, LOOSE_CARD, 1_000, 1),
                          back(t, LOOSE_CARD, 10, 99)])
    reasons = [(f["seq"], f["reason"]) for f in report(svc, day()).pocket_flags]
    assert reasons == [(1, "no_account"), (2, "unknown_payment"), (3, "unknown_payment")]
    assert refs(svc, "") == {}


# -- what cannot be posted -----------------------------------------------------------------------


def test_a_card_without_account_and_a_terminal_without_merchant_are_flagged(
        svc: CentralLog) -> None:
    fund(svc, "A", A_CARD, cash=5_000)
    shop, stray = till(svc, "TILL-L", LOCAL), till(svc, "TILL-X", None)
    svc.ingest("TILL-L", [pay(shop, LOOSE_CARD, 700)])
    svc.ingest("TILL-X", [pay(stray, A_CARD, 800)])
    rep = report(svc, day())
    assert [(f["terminal_id"], f["reason"], json.loads(f["detail"])) for f in rep.pocket_flags
            ] == [("TILL-L", "no_account", {"amount": 700}),
                  ("TILL-X", "no_merchant", {"amount": 800, "account": "A"})]
    assert not rep.clean
    assert refs(svc, "") == {} and pockets_of(svc, "A")["cash"] == 5_000


def test_the_terminals_split_disagreeing_is_flagged(svc: CentralLog) -> None:
    fund(svc, "A", A_CARD, cash=10_000, points=1_000)
    t = till(svc, "TILL-L", LOCAL)
    svc.ingest("TILL-L", [
        pay(t, A_CARD, 3_000, split=[["cash", 3_000]]),                        # differs
        pay(t, A_CARD, 2_000, split=[["cash", 2_000]]),                        # agrees
        pay(t, A_CARD, 1_000, split=[["cash", 900]]),                          # short
        pay(t, A_CARD, 1_000, split="cash")])                      # type: ignore[arg-type]
    flags = report(svc, day()).pocket_flags
    assert [(f["seq"], f["reason"]) for f in flags] == [
        (1, "split_differs"), (3, "split_invalid"), (4, "split_invalid")]
    assert json.loads(flags[0]["detail"]) == {"terminal": [["cash", 3_000]],
                                              "central": [["points", 1_000], ["cash", 2_000]]}
    # a flag says what differs; the books follow the contract's split all the same
    assert pockets_of(svc, "A") == {"cash": 10_000 - 2_000 - 2_000 - 1_000 - 1_000,
                                    "points": 0}


def test_terminal_split_reads_only_well_formed_parts() -> None:
    assert terminal_split("") is None and terminal_split("{}") is None
    assert terminal_split("not json") is None
    assert terminal_split('{"split":[["cash",5]]}') == (("cash", 5),)
    for bad in ('{"split":[]}', '{"split":[["cash",0]]}', '{"split":[["cash",true]]}',
                '{"split":[["cash",1],["cash",2]]}', '{"split":[[1,2]]}'):
        assert isinstance(terminal_split(bad), str), bad


# -- following the log -------------------------------------------------------------------------


def test_posting_twice_or_after_a_crash_mid_chunk_posts_once(store_url: str) -> None:  # noqa: F811
    svc = open_service(store_url, followers=[])
    try:
        Registry(svc.store).add(LOCAL)
        fund(svc, "A", A_CARD, cash=20_000, points=2_000)
        t = till(svc, "TILL-L", LOCAL)
        svc.ingest("TILL-L", [pay(t, A_CARD, 1_000 * n, hour=9 + n) for n in range(1, 6)]
                   + [back(t, A_CARD, 500, 2)])
        seen: list[int] = []

        def crash(entry: Any) -> None:
            seen.append(entry.seq)
            if entry.seq == 3:
                raise RuntimeError("power cut")

        with pytest.raises(RuntimeError, match="power cut"):
            post_log(svc.store, chunk=4, on_entry=crash)
        assert seen == [1, 2, 3]
        assert refs(svc, "") == {} and rows(svc, "SELECT next_index FROM spending_cursor") == [
            (0,)]
        done = post_log(svc.store, chunk=4)
        assert (done.payments, done.refunds, done.paid, done.refunded) == (5, 1, 15_000, 500)
        again = post_log(svc.store)
        assert (again.payments, again.refunds, again.flagged) == (0, 0, 0)
        # even a cursor set back by hand posts nothing twice
        with svc.store.tx() as tx:
            tx.run("UPDATE spending_cursor SET next_index = 0")
        assert post_log(svc.store, chunk=2).payments == 0
        # points 2,000 paid first, then cash 13,000; the refund of entry 2 gives 500 cash
        assert pockets_of(svc, "A") == {"cash": 20_000 - 13_000 + 500, "points": 0}
        assert bal(svc, "merchant:M-LOCAL:payable") == 15_000 - 500
        assert books.check(svc.store).balanced
    finally:
        svc.store.close()


def test_two_posters_at_once_post_each_entry_once(store_url: str) -> None:  # noqa: F811
    svc = open_service(store_url, followers=[])
    try:
        Registry(svc.store).add(LOCAL)
        fund(svc, "A", A_CARD, cash=100_000)
        t = till(svc, "TILL-L", LOCAL)
        svc.ingest("TILL-L", [pay(t, A_CARD, 100 + n) for n in range(40)])
        results: list[int] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                results.append(post_log(svc.store, chunk=7).payments)
            except BaseException as err:  # pragma: no cover - shown by the assert
                errors.append(err)

        threads = [threading.Thread(target=run) for _ in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == [] and sum(results) == 40
        assert pockets_of(svc, "A")["cash"] == 100_000 - sum(100 + n for n in range(40))
        assert books.check(svc.store).balanced
    finally:
        svc.store.close()


def test_the_service_posts_after_every_batch_and_a_failure_refuses_none(
        store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    svc = open_central_service(store_url, tmp_path / "data")
    try:
        assert [f.name for f in svc.followers] == ["incentive crediting", "pocket spending"]
        Registry(svc.store).add(LOCAL)
        fund(svc, "A", A_CARD, cash=5_000)
        t = till(svc, "TILL-L", LOCAL)
        import central.spending as spending

        def broken(*args: Any, **kw: Any) -> None:
            raise RuntimeError("store trouble")

        monkeypatch.setattr(spending, "post_log", broken)
        receipt = svc.ingest("TILL-L", [pay(t, A_CARD, 1_000)])   # accepted all the same
        assert receipt.accepted == 1 and pockets_of(svc, "A")["cash"] == 5_000
        monkeypatch.undo()
        svc.ingest("TILL-L", [pay(t, A_CARD, 2_000)])               # catches up
        assert pockets_of(svc, "A")["cash"] == 2_000
        assert books.check(svc.store).balanced
    finally:
        svc.store.close()


# -- rules and the commands ---------------------------------------------------------------------


def test_rules_are_versions_and_an_unchanged_text_is_not_one(svc: CentralLog) -> None:
    assert active_rules(svc.store) == DEFAULT_POCKET_RULES
    assert rules_text(svc.store) == DEFAULT_RULES and rules_versions(svc.store) == []
    first, stored = load_rules(svc.store, RULES)
    assert (first.version, stored) == (1, True)
    again, stored = load_rules(svc.store, RULES)
    assert (again, stored) == (first, False)
    assert active_rules(svc.store) == parse_rules(RULES)
    second, stored = load_rules(svc.store, DEFAULT_RULES)
    assert (second.version, stored) == (2, True)
    assert active_rules(svc.store) == DEFAULT_POCKET_RULES
    assert [v.version for v in rules_versions(svc.store)] == [1, 2]
    with pytest.raises(ConfigError, match="no cash pocket"):
        load_rules(svc.store, "[[pocket]]\nid = \"p\"\nkind = \"points\"\n")
    assert len(rules_versions(svc.store)) == 2


def test_the_commands(store_url: str, tmp_path: Path) -> None:  # noqa: F811
    from localpay.cli import cli

    base = ["--db", store_url, "--data", str(tmp_path / "data")]
    rules_file = tmp_path / "pockets.toml"
    rules_file.write_text(RULES, encoding="utf-8")
    run = CliRunner().invoke
    assert run(cli, ["central", "init", *base]).exit_code == 0
    out = run(cli, ["central", "pockets", "rules", "show", *base])
    assert out.exit_code == 0 and out.output == DEFAULT_RULES
    out = run(cli, ["central", "pockets", "rules", "load", str(rules_file), *base])
    assert out.exit_code == 0 and "pocket rules version 1 in force" in out.output
    out = run(cli, ["central", "pockets", "rules", "load", str(rules_file), *base])
    assert "already in force" in out.output
    assert run(cli, ["central", "pockets", "rules", "show", *base]).output == RULES
    assert run(cli, ["central", "pockets", "rules", "show", "--default", *base]
               ).output == DEFAULT_RULES
    assert "version 1  sha256" in run(cli, ["central", "pockets", "rules", "versions",
                                            *base]).output
    rules_file.write_text("[[pocket]]\nid = \"cash\"\nkind = \"cash\"\nper_dya = 1\n")
    out = run(cli, ["central", "pockets", "rules", "load", str(rules_file), *base])
    assert out.exit_code == 2 and "did you mean 'per_day'" in out.output
    out = run(cli, ["central", "spend", "--json", *base])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["payments"] == 0


# -- a property ------------------------------------------------------------------------------


@dataclass
class Op:
    what: str          # "pay" or "refund"
    account: int
    shop: int
    amount: int
    payment: int = 0   # which earlier payment a refund is of
    split: list[list[Any]] | None = None


@dataclass
class World:
    funds: list[dict[str, int]]
    ops: list[Op] = field(default_factory=list)


SHOPS = (("TILL-L", LOCAL), ("TILL-M", MART), ("TILL-C", CAFE))
CARDS = (A_CARD, B_CARD)


@st.composite
def worlds(draw: st.DrawFn) -> World:
    funds = [{"cash": draw(st.integers(0, 20_000)), "points": draw(st.integers(0, 5_000)),
              "youth": draw(st.integers(0, 6_000))} for _ in CARDS]
    world = World(funds)
    payments: list[int] = []
    for _ in range(draw(st.integers(1, 12))):
        if payments and draw(st.booleans()):
            which = draw(st.sampled_from(payments))
            world.ops.append(Op("refund", world.ops[which].account, world.ops[which].shop,
                                draw(st.integers(1, 8_000)), payment=which))
        else:
            payments.append(len(world.ops))
            amount = draw(st.integers(1, 9_000))
            split = draw(st.sampled_from([None, [["cash", amount]], [["points", amount]]]))
            world.ops.append(Op("pay", draw(st.integers(0, 1)), draw(st.integers(0, 2)),
                                amount, split=split))
    return world


def check_world(store_url: str, world: World) -> None:  # noqa: F811
    svc = open_service(store_url, followers=[SpendingPoster(chunk=3)])
    try:
        load_rules(svc.store, RULES)
        for _, m in SHOPS:
            Registry(svc.store).add(m)
        for n, money in enumerate(world.funds):
            fund(svc, f"P{n}", CARDS[n], cash=money["cash"], points=money["points"],
                 allowance={"youth": money["youth"]})
        chains = [till(svc, tid, m) for tid, m in SHOPS]
        seqs: dict[int, int] = {}
        batches: list[list[Any]] = [[] for _ in SHOPS]
        for i, op in enumerate(world.ops):
            c = chains[op.shop]
            if op.what == "pay":
                batches[op.shop].append(pay(c, CARDS[op.account], op.amount, hour=8 + i % 12,
                                            split=op.split))
                seqs[i] = c.seq
            else:
                batches[op.shop].append(back(c, CARDS[op.account], op.amount, seqs[op.payment],
                                             hour=20))
        for (tid, _), batch in zip(SHOPS, batches, strict=True):
            if batch:
                svc.ingest(tid, batch)
        # the independent tally: what each merchant is owed, what each account holds
        left = {i: op.amount for i, op in enumerate(world.ops) if op.what == "pay"}
        payable = {m.merchant_id: 0 for _, m in SHOPS}
        held = [sum(money.values()) for money in world.funds]
        for op in world.ops:
            merchant = SHOPS[op.shop][1].merchant_id
            if op.what == "pay":
                payable[merchant] += op.amount
                held[op.account] -= op.amount
            else:
                given = min(op.amount, left[op.payment])
                left[op.payment] -= given
                payable[merchant] -= given
                held[op.account] += given
        assert books.check(svc.store).balanced
        for merchant, owed in payable.items():
            assert bal(svc, books.merchant_payable(merchant)) == owed
        for n in range(len(CARDS)):
            pockets = pockets_of(svc, f"P{n}")
            assert all(b >= 0 for b in pockets.values()), pockets
            debt = -bal(svc, f"receivable:P{n}")
            assert debt >= 0
            # pockets and debt together moved by exactly the payments and refunds
            assert sum(pockets.values()) - debt == held[n]
            overdrawn = sum(int(a) for (a,) in rows(
                svc, f"SELECT amount FROM pocket_overdrafts WHERE account_id = 'P{n}'"))
            paid_off = sum(a for r, a in refs(svc, "refund-owed:").items()
                           if _account_of_refund(svc, r) == f"P{n}")
            assert debt == overdrawn - paid_off
    finally:
        svc.store.close()


def _account_of_refund(svc: CentralLog, ref: str) -> str:
    with svc.store.tx(write=False) as tx:
        row = tx.one("SELECT credit_account FROM book_transfers WHERE ref = ?", (ref,))
    assert row is not None
    return str(row[0]).split(":", 1)[1]


_PROPERTY = settings(max_examples=25, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@_PROPERTY
@given(world=worlds())
def test_property_sqlite(tmp_path_factory: pytest.TempPathFactory, world: World) -> None:
    path = tmp_path_factory.mktemp("spend") / "central.sqlite"
    check_world(f"sqlite:///{path}", world)


@_PROPERTY
@given(world=worlds())
def test_property_postgresql(pg_cluster: Any, world: World) -> None:  # noqa: F811
    check_world(pg_cluster.new_schema(), world)
