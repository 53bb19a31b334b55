"""Edges of the central books (central/books.py) that tests/test_books.py leaves unsaid: the
words of each refusal, the chart's names, times and transfer ids, reading transfers back, what
check() reports and how it reads, and the schema lock; on SQLite and PostgreSQL."""

# The fixtures `store` and `funded` come from tests/test_books.py and are parameters by name:
# ruff: noqa: F811

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from central import books
from central.books import (
    BANK_OUTSIDE,
    DEBITS_MUST_NOT_EXCEED_CREDITS,
    MAX_TOTAL,
    Account,
    Transfer,
    check,
    ensure_schema,
    open_account,
    transfer,
    transfers_of,
)
from central.store import Store, open_store
from localpay.errors import BooksError, SyncUnavailableError
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401
from tests.test_books import (  # noqa: F401 - the fixtures are used by name
    ALICE,
    BOB,
    SHOP,
    bal,
    dump,
    funded,
    opened,
    post,
    store,
)

#: what the ``funded`` fixture tops alice up with
TOPUP = 10_000
#: sorted(books.CODES), written out: the refusal lists them for whoever typed a wrong one
KNOWN_CODES = ("allowance_expiry, allowance_issue, budget, cashout, correction, fee, funding, "
               "payment, points_payout, refund, settlement, settlement_paid, "
               "settlement_returned, subsidy, topup")


def refused(message: str) -> Any:
    """pytest.raises for a BooksError whose whole message is ``message``, taken literally:
    a refusal must say what was wrong and nothing else."""
    return pytest.raises(BooksError, match=f"^{re.escape(message)}$")


# -- the chart -------------------------------------------------------------------------------

NAMERS: dict[str, tuple[Callable[[str], str], str]] = {
    "programme funding": (books.programme_funding, "programme"),
    "programme subsidy": (books.programme_subsidy, "programme"),
    "programme points": (books.programme_points, "programme"),
    "allowance": (books.allowance, "programme"),
    "merchant payable": (books.merchant_payable, "merchant"),
    "receivable": (books.receivable, "account"),
    "pocket's account": (books.pocket, "account"),
    "pocket's name": (lambda name: books.pocket("alice", name), "pocket"),
}


@pytest.mark.parametrize("case", sorted(NAMERS))
@pytest.mark.parametrize("bad", ["a:b", "a b", ""])
def test_a_bad_part_of_an_account_id_is_refused_by_its_name(case: str, bad: str) -> None:
    make, what = NAMERS[case]
    with refused(f"{what} {bad!r}: 1 to 100 characters, no ':' and no spaces"):
        make(bad)


def test_the_chart_names_every_account_as_documented() -> None:
    assert books.pocket("alice") == "pocket:alice:cash"      # the cash pocket unless named
    assert books.pocket("alice", "youth") == "pocket:alice:youth"
    assert books.receivable("alice") == "receivable:alice"
    assert books.kind_of("receivable:alice") == "receivable"
    assert books.programme_funding("p") == "programme:p:funding"
    assert books.allowance("p") == "allowance:p"
    assert books.merchant_payable("m") == "merchant:m:payable"


def test_an_offline_overdraft_is_owed_on_the_receivable(funded: Store) -> None:
    """A payment approved offline beyond the pocket: the pocket pays what it holds and the
    citizen's receivable, which has no floor, goes negative by the rest."""
    owed = books.receivable("alice")
    with funded.tx() as tx:
        account = open_account(tx, owed, at_ms=7)
    assert account == Account("default", owed, "receivable", 0, 0, 0, 7)
    price = 10_600
    post(funded, Transfer(ALICE, SHOP, TOPUP, "payment", "pay-offline"),
         Transfer(owed, SHOP, price - TOPUP, "payment", "pay-offline-rest"))
    assert (bal(funded, ALICE), bal(funded, owed), bal(funded, SHOP)) == (0, -600, 10_600)
    # the merchant refunds the uncovered part: the debt is gone
    post(funded, Transfer(SHOP, owed, price - TOPUP, "refund", "refund-rest"))
    assert (bal(funded, owed), bal(funded, SHOP)) == (0, TOPUP)
    assert check(funded).balanced


# -- accounts ----------------------------------------------------------------------------------

def test_an_account_reads_back_whole_in_its_municipality(store: Store) -> None:
    with store.tx() as tx:
        got = open_account(tx, ALICE, municipality="gimpo", at_ms=0)   # the epoch is a time
        assert got == Account("gimpo", ALICE, "pocket", DEBITS_MUST_NOT_EXCEED_CREDITS, 0, 0, 0)
        assert books.get_account(tx, ALICE, municipality="gimpo") == got
        assert books.find_account(tx, ALICE) is None          # not open in "default"
        # opening again returns the account as first opened, time and all
        assert open_account(tx, ALICE, municipality="gimpo", at_ms=9) == got
        with refused(f"account {ALICE} is open as pocket with flags 2, not pocket with "
                     "flags 0"):
            open_account(tx, ALICE, "pocket", flags=0, municipality="gimpo")
        with refused(f"unknown account {BOB} in municipality gimpo"):
            books.get_account(tx, BOB, municipality="gimpo")


def test_times_default_to_now_in_ms(store: Store) -> None:
    before = int(time.time() * 1000) - 1      # a float's ms may round either way
    with store.tx() as tx:
        account = open_account(tx, ALICE)
        open_account(tx, BANK_OUTSIDE)
        [p] = transfer(tx, [Transfer(BANK_OUTSIDE, ALICE, 1, "topup", "now")])
    after = int(time.time() * 1000) + 1
    assert before <= account.opened_ms <= p.at_ms <= after


@pytest.mark.parametrize("bad", [-1, True, False, 1.5, "5"])
def test_a_time_that_is_not_whole_ms_since_the_epoch_is_refused(funded: Store,
                                                                bad: Any) -> None:
    before = dump(funded)
    with funded.tx() as tx:
        with refused(f"at_ms {bad!r} is not a time in ms"):
            open_account(tx, books.pocket("carol"), at_ms=bad)
        with refused(f"at_ms {bad!r} is not a time in ms"):
            transfer(tx, [Transfer(ALICE, BOB, 1, "correction", "r")], at_ms=bad)
    assert dump(funded) == before


def test_opening_an_account_refuses_each_wrong_argument_by_name(store: Store) -> None:
    with store.tx() as tx:
        with refused("account 'a b': 1 to 300 characters, no spaces"):
            open_account(tx, "a b")
        with refused("account 'loan:x' is not in the chart: name its kind and flags"):
            open_account(tx, "loan:x")
        with refused("account kind 'loan' has no usual flags: name them"):
            open_account(tx, "loan:x", "loan")


@pytest.mark.parametrize("bad", [1, 6, 8, -1, 3, True, False, 2.0, "2"])
def test_flags_other_than_one_of_the_two_rules_or_none_are_refused(store: Store,
                                                                   bad: Any) -> None:
    # bool is an int to Python: False would open an account with flags 0 by accident
    with store.tx() as tx, refused(f"account flags {bad!r}: DEBITS_MUST_NOT_EXCEED_CREDITS "
                                   "or CREDITS_MUST_NOT_EXCEED_DEBITS or neither, not both"):
        open_account(tx, "loan:x", "loan", flags=bad)
    with store.tx(write=False) as tx:
        assert books.find_account(tx, "loan:x") is None
    with store.tx() as tx:
        assert [open_account(tx, f"loan:{f}", "loan", flags=f).flags for f in (0, 2, 4)] == \
            [0, 2, 4]


# -- refusals of a transfer --------------------------------------------------------------------

TRANSFER_REFUSALS: dict[str, tuple[Transfer, str]] = {
    "same account": (Transfer(ALICE, ALICE, 1, "payment", "r1"),
                     f"transfer r1: debits and credits the same account {ALICE}"),
    "bad debit": (Transfer("pocket:a b:cash", SHOP, 1, "payment", "r1"),
                  "transfer r1: debit account 'pocket:a b:cash': 1 to 300 characters, "
                  "no spaces"),
    "bad credit": (Transfer(ALICE, "", 1, "payment", "r1"),
                   "transfer r1: credit account '': 1 to 300 characters, no spaces"),
    "unknown code": (Transfer(ALICE, SHOP, 1, "gift", "r1"),
                     f"transfer r1: unknown code 'gift' (known: {KNOWN_CODES})"),
    "float": (Transfer(ALICE, SHOP, 1.0, "payment", "r1"),  # type: ignore[arg-type]
              "transfer r1: amount 1.0 is not a whole number of won"),
    "zero": (Transfer(ALICE, SHOP, 0, "payment", "r1"),
             f"transfer r1: amount 0 won is not between 1 and {2**63 - 1}"),
    "bad ref": (Transfer(ALICE, SHOP, 1, "payment", "r 1"),
                "transfer ref 'r 1': 1 to 300 characters, no spaces"),
}


@pytest.mark.parametrize("case", sorted(TRANSFER_REFUSALS))
def test_a_malformed_transfer_is_refused_naming_its_ref_and_fault(funded: Store,
                                                                 case: str) -> None:
    bad, message = TRANSFER_REFUSALS[case]
    with funded.tx() as tx, refused(message):
        transfer(tx, [bad])


def test_an_unknown_account_is_refused_naming_the_transfer_that_names_it(
        funded: Store) -> None:
    before = dump(funded)
    nobody = books.pocket("nobody")
    with refused(f"transfer second: unknown account {nobody} in municipality default"):
        post(funded, Transfer(BANK_OUTSIDE, ALICE, 5, "topup", "first"),
             Transfer(ALICE, nobody, 5, "payment", "second"))
    assert dump(funded) == before


def test_each_transfer_of_a_call_sees_the_debits_of_those_before_it(funded: Store) -> None:
    post(funded, Transfer(ALICE, SHOP, 2_500, "payment", "pay-1"))
    before = dump(funded)
    # what books.py must work out itself: the database would refuse too, but vaguely
    held = TOPUP - 2_500 - 3_000
    with refused(f"transfer pay-3: {ALICE} holds {held:,} won, {held + 100:,} won asked "
                 "(payment)"):
        post(funded, Transfer(ALICE, SHOP, 3_000, "payment", "pay-2"),
             Transfer(ALICE, SHOP, held + 100, "payment", "pay-3"))
    assert dump(funded) == before
    post(funded, Transfer(ALICE, SHOP, 3_000, "payment", "pay-2"),
         Transfer(ALICE, SHOP, held, "payment", "pay-3"))
    assert bal(funded, ALICE) == 0


@pytest.fixture
def full(store: Store) -> Store:
    """free:a has debited and free:b credited the largest total a BIGINT holds."""
    with store.tx() as tx:
        for account_id in ("free:a", "free:b", "free:c"):
            open_account(tx, account_id, "free", flags=0)
        transfer(tx, [Transfer("free:a", "free:b", MAX_TOTAL, "correction", "all")])
    return store


@pytest.mark.parametrize("side", ["debit", "credit"])
def test_either_total_passing_a_bigint_is_refused_before_the_database(full: Store,
                                                                      side: str) -> None:
    # one side at the limit is enough; the other, free:c, has posted nothing
    bad = (Transfer("free:a", "free:c", 1, "correction", "more") if side == "debit"
           else Transfer("free:c", "free:b", 1, "correction", "more"))
    before = dump(full)
    with refused(f"transfer more: posted totals would pass {2**63 - 1}"):
        post(full, bad)
    assert dump(full) == before


# -- postings and reading them back ------------------------------------------------------------

def test_a_posting_names_its_municipality_and_an_id_that_starts_with_its_time(
        store: Store) -> None:
    opened(store, BANK_OUTSIDE, ALICE, municipality="gimpo")
    with store.tx() as tx:
        [early] = transfer(tx, [Transfer(BANK_OUTSIDE, ALICE, 7, "topup", "t1")],
                           municipality="gimpo", at_ms=42)
        # the id keeps 48 bits of the time: later times wrap around
        [late] = transfer(tx, [Transfer(BANK_OUTSIDE, ALICE, 8, "topup", "t2")],
                          municipality="gimpo", at_ms=2**48 + 5)
    assert (early.municipality, early.at_ms, early.fresh) == ("gimpo", 42, True)
    assert re.fullmatch(r"00000000002a[0-9a-f]{20}", early.transfer_id)
    assert re.fullmatch(r"000000000005[0-9a-f]{20}", late.transfer_id)
    with store.tx(write=False) as tx:
        back = transfers_of(tx, ALICE, municipality="gimpo")
        assert transfers_of(tx, ALICE) == []                  # nothing of it in "default"
    # read back whole, newest first, and never fresh
    assert back == [replace(late, fresh=False), replace(early, fresh=False)]


def test_the_random_part_of_an_id_leaves_room_to_count_up() -> None:
    # 76 random bits in a field of 80: whatever the draw, a call counts up 15 × 2**76 ids
    # before the field would carry into the time. 64 draws all start with a 0 digit.
    ids = [books._new_ids(1, 0)[0] for _ in range(64)]
    assert all(len(i) == 32 and i[12] == "0" for i in ids)
    assert len(set(ids)) == 64


def test_transfers_of_gives_the_latest_hundred_newest_first(store: Store) -> None:
    opened(store, BANK_OUTSIDE, ALICE, SHOP)
    # posted later but stated earlier: time orders, not the order of posting
    with store.tx() as tx:
        transfer(tx, [Transfer(BANK_OUTSIDE, ALICE, 1, "topup", f"a{n}") for n in range(60)],
                 at_ms=2_000)
        transfer(tx, [Transfer(ALICE, SHOP, 1, "payment", f"b{n}") if n % 2 else
                      Transfer(BANK_OUTSIDE, ALICE, 1, "topup", f"b{n}") for n in range(41)],
                 at_ms=1_000)
        everything = transfers_of(tx, ALICE, limit=1_000)
        latest = transfers_of(tx, ALICE)
        three = transfers_of(tx, ALICE, limit=3)
        shop = transfers_of(tx, SHOP)
    # within one call the ids count up, so newest first is the call's order reversed
    expected = [f"a{n}" for n in reversed(range(60))] + [f"b{n}" for n in reversed(range(41))]
    assert [p.ref for p in everything] == expected
    assert [p.ref for p in latest] == expected[:100]
    assert [p.ref for p in three] == ["a59", "a58", "a57"]
    assert [p.ref for p in shop] == [f"b{n}" for n in reversed(range(41)) if n % 2]
    assert not any(p.fresh for p in everything)


# -- what the database refuses, and what it fails at -------------------------------------------

@pytest.fixture
def lite(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'books.sqlite'}")
    ensure_schema(s)
    yield s
    s.close()


def test_a_database_failure_that_is_no_refusal_reaches_the_caller_unchanged(
        lite: Store) -> None:
    """Only a refusal (a constraint or trigger) is a BooksError; a database that fails
    otherwise (here a function it calls) is the store's trouble, reported as such."""
    opened(lite, BANK_OUTSIDE, ALICE)

    def fail() -> int:
        raise RuntimeError("disk on fire")

    with pytest.raises(SyncUnavailableError, match="user-defined function raised"), \
            lite.tx() as tx:
        tx.conn.create_function("fail", 0, fail)
        tx.run("CREATE TEMP TRIGGER fail BEFORE INSERT ON book_transfers "
               "BEGIN SELECT fail(); END")
        transfer(tx, [Transfer(BANK_OUTSIDE, ALICE, 1, "topup", "r")])
    assert bal(lite, ALICE) == 0


def test_only_class_23_errors_are_refusals() -> None:
    import psycopg
    assert books._refused_by_database(sqlite3.IntegrityError("CHECK constraint failed"))
    assert books._refused_by_database(psycopg.errors.UniqueViolation())
    assert books._refused_by_database(psycopg.errors.CheckViolation())
    assert not books._refused_by_database(sqlite3.OperationalError("database is locked"))
    assert not books._refused_by_database(psycopg.OperationalError("connection lost"))
    # a BIGINT overflow (22003) is a bug to report, not a refusal to answer
    assert not books._refused_by_database(psycopg.errors.NumericValueOutOfRange())


# -- check() -----------------------------------------------------------------------------------

def test_the_json_of_a_check_names_every_figure(funded: Store) -> None:
    tampered = 3
    with funded.tx() as tx:
        tx.run("UPDATE book_accounts SET debits_posted = debits_posted + ? "
               "WHERE account_id = ?", (tampered, BANK_OUTSIDE))
    disagreement = {"municipality": "default", "account_id": BANK_OUTSIDE,
                    "debits_posted": TOPUP + tampered, "credits_posted": 0,
                    "debits_of_transfers": TOPUP, "credits_of_transfers": 0}
    for municipality in ("default", None):
        got = check(funded, municipality).as_json()
        assert got == {"municipality": municipality, "balanced": False, "accounts": 5,
                       "transfers": 1, "transfers_amount": TOPUP,
                       "debits_posted": TOPUP + tampered, "credits_posted": TOPUP,
                       "unbalanced": ["default"], "disagreements": [disagreement]}
        assert json.loads(json.dumps(got)) == got
    assert check(funded, "gimpo").as_json() == {
        "municipality": "gimpo", "balanced": True, "accounts": 0, "transfers": 0,
        "transfers_amount": 0, "debits_posted": 0, "credits_posted": 0, "unbalanced": [],
        "disagreements": []}


class _AfterFirstRead:
    """A transaction that runs ``meanwhile`` once its first row has been read."""

    def __init__(self, tx: Any, meanwhile: Callable[[], None]) -> None:
        self._tx = tx
        self._meanwhile: Callable[[], None] | None = meanwhile

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def one(self, sql: str, params: Any = ()) -> Any:
        row = self._tx.one(sql, params)
        if self._meanwhile is not None:
            meanwhile, self._meanwhile = self._meanwhile, None
            meanwhile()
        return row


def test_check_reads_one_snapshot_while_transfers_commit(funded: Store,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """A transfer committed between check()'s statements is wholly unseen: otherwise the
    accounts read before it and the transfers read after it would disagree."""
    real_tx = funded.tx

    def meanwhile() -> None:
        with real_tx() as tx:
            transfer(tx, [Transfer(ALICE, BOB, 250, "correction", "meanwhile")])

    @contextmanager
    def meddled(write: bool = True) -> Iterator[Any]:
        with real_tx(write) as tx:
            yield _AfterFirstRead(tx, meanwhile)

    monkeypatch.setattr(funded, "tx", meddled)
    result = check(funded)
    monkeypatch.undo()
    assert (result.balanced, result.transfers, result.transfers_amount,
            result.debits_posted, result.disagreements) == (True, 1, TOPUP, TOPUP, ())
    after = check(funded)
    assert (after.balanced, after.transfers, after.transfers_amount) == (True, 2, TOPUP + 250)


def test_check_neither_waits_for_a_writer_nor_sees_its_work(funded: Store) -> None:
    got: list[books.BooksCheck] = []
    with funded.tx() as tx:
        transfer(tx, [Transfer(ALICE, BOB, 250, "correction", "uncommitted")])
        reader = threading.Thread(target=lambda: got.append(check(funded)))
        reader.start()
        # a read-only check answers in milliseconds; one that took the write lock would
        # wait here for this transaction
        reader.join(5)
        waited = reader.is_alive()
    reader.join()
    assert not waited
    assert (got[0].balanced, got[0].transfers, got[0].transfers_amount) == (True, 1, TOPUP)


# -- the schema --------------------------------------------------------------------------------

def test_making_the_schema_waits_for_another_worker_making_it(pg_cluster: Any) -> None:
    """Workers starting at once take turns (a PostgreSQL advisory lock): two CREATE OR
    REPLACE FUNCTION at once fail with 'tuple concurrently updated'."""
    url = pg_cluster.new_schema()
    worker, holder = open_store(url, pool_size=1), open_store(url, pool_size=1)
    finished = threading.Event()
    try:
        with worker.tx() as tx:
            [pid] = tx.one("SELECT pg_backend_pid()") or [None]
        with holder.tx() as tx:
            tx.one("SELECT pg_advisory_xact_lock(?)", (books._SCHEMA_LOCK,))

            def make() -> None:
                ensure_schema(worker)
                finished.set()

            thread = threading.Thread(target=make)
            thread.start()
            waiting = False
            deadline = time.monotonic() + 20
            while not waiting and not finished.is_set() and time.monotonic() < deadline:
                # pg_locks shows the live locks, even inside this transaction
                row = tx.one("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' "
                             "AND NOT granted AND pid = ?", (pid,))
                waiting = bool(row and row[0])
                time.sleep(0.02)
        thread.join(60)
        assert waiting and finished.is_set()
        assert check(worker).balanced
    finally:
        worker.close()
        holder.close()
