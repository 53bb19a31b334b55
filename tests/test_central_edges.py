"""Edge cases of the money paths that the mutation run (make mutation) showed no test stating."""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.incentives import credit_log
from central.payouts import (
    SETTLEMENT_HEADER,
    Budget,
    budget,
    payout,
    settlement_rows,
    statement,
    write_settlement,
)
from central.reconcile import Line, report
from central.service import CentralLog
from central.store import PostgresStore, Rows, SQLiteStore, Store, open_store
from firmware_cfg.keys import public_hex
from localpay.errors import (
    ChainMismatchError,
    ConfigError,
    SyncAuthError,
    SyncError,
    SyncProtocolError,
    SyncUnavailableError,
    TransactionError,
)
from sync.checkpoint import NoteSigner
from sync.protocol import request_message
from tests.incentives_data import chain, open_service, seoul_ms
from tests.pg_fixtures import pg_cluster, signed_entries, store_url  # noqa: F401

A, B, C = "a" * 32, "b" * 32, "c" * 32
WALL = 1_790_000_000_000
FOOD_BP = 30          # the shipped rules: local food earns 0.30 %
ADULT_CAP = 2900      # the shipped rules: an adult's bus points in one week


@pytest.fixture
def svc(store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    log = open_service(store_url)
    yield log
    log.store.close()


@pytest.fixture
def bare(store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    log = CentralLog(open_store(store_url), NoteSigner("test.example/log",
                                                       Ed25519PrivateKey.generate()))
    yield log
    log.store.close()


def _balance(svc: CentralLog, token: str) -> int | None:
    with svc.store.tx(write=False) as tx:
        row = tx.one("SELECT balance FROM balances WHERE card_token = ?", (token,))
    return None if row is None else int(row[0])


# -- payouts ---------------------------------------------------------------------------------


def test_a_month_is_paid_from_its_first_millisecond_after_it_ends(svc: CentralLog) -> None:
    bus = chain(svc, "BUS-1")
    svc.set_balances({A: 0})
    svc.ingest("BUS-1", [bus.tap(A, seoul_ms(2025, 3, 10, 8), fare=1400)])
    with pytest.raises(TransactionError,
                       match=r"^month 2025-03 has not ended yet \(Asia/Seoul\)$"):
        payout(svc.store, "2025-03", seoul_ms(2025, 4, 1, 0) - 1)
    done = payout(svc.store, "2025-03", seoul_ms(2025, 4, 1, 0))
    assert (done.month, done.cards, done.points, done.held_cards, done.held_points) == (
        "2025-03", 1, 1400, 0, 0)
    assert done.balance_version is not None and not done.already
    assert _balance(svc, A) == 0 - 1400 + 1400          # the fare paid, then the points


def test_a_month_before_the_programme_is_refused(svc: CentralLog) -> None:
    with pytest.raises(TransactionError, match=r"^month 2024-12 is before the programme "
                                               r"started \(2025-01-01\)$"):
        payout(svc.store, "2024-12", seoul_ms(2025, 3, 1))
    first = payout(svc.store, "2025-01", seoul_ms(2025, 3, 1))      # the first month runs
    assert (first.cards, first.points, first.balance_version) == (0, 0, None)


def test_a_second_run_answers_what_the_first_did(svc: CentralLog) -> None:
    bus = chain(svc, "BUS-1")
    svc.set_balances({A: 100})
    svc.ingest("BUS-1", [bus.tap(A, seoul_ms(2025, 3, 10, 8), fare=1000),
                         bus.tap(B, seoul_ms(2025, 3, 11, 8), fare=700)])
    first = payout(svc.store, "2025-03", seoul_ms(2025, 4, 2))
    again = payout(svc.store, "2025-03", seoul_ms(2025, 4, 3))
    assert again.already and not first.already
    assert first.as_dict() == {**again.as_dict(), "already": False}
    assert (again.cards, again.points, again.held_cards, again.held_points) == (1, 1000, 1, 700)
    assert again.balance_version == first.balance_version
    assert _balance(svc, A) == 100 - 1000 + 1000


def test_a_net_of_zero_is_settled_without_a_payment(svc: CentralLog) -> None:
    till = chain(svc, "TILL-1")
    svc.set_balances({A: 5})
    pay = till.pay(A, 100_000, seoul_ms(2025, 3, 10, 12))
    svc.ingest("TILL-1", [pay, till.refund(A, 100_000, pay.seq, seoul_ms(2025, 3, 11, 12))])
    done = payout(svc.store, "2025-03", seoul_ms(2025, 4, 2))
    assert (done.cards, done.points, done.held_cards, done.balance_version) == (0, 0, 0, None)
    st = statement(svc.store, A)
    assert st["payouts"] == [] and st["pending"] == 0 and st["earned"] == 0
    assert [e["paid_in"] for e in st["entries"]] == ["2025-03", "2025-03"]
    assert _balance(svc, A) == 5
    assert settlement_rows(svc.store, "2025-03") == []


def test_payout_versions_balances_after_the_newest(svc: CentralLog) -> None:
    bus = chain(svc, "BUS-1")
    svc.set_balances({A: 0})
    svc.ingest("BUS-1", [bus.tap(A, seoul_ms(2025, 3, 10, 8), fare=900)])   # balance -900
    v2 = svc.set_balances({C: 7})
    done = payout(svc.store, "2025-03", seoul_ms(2025, 4, 2))
    assert done.balance_version == v2 + 1
    delta = svc.balances_delta(v2)
    assert delta == {"version": v2 + 1, "balances": {A: -900 + 900}}


def test_statement_of_a_card_in_full(svc: CentralLog) -> None:
    bus, till = chain(svc, "BUS-1"), chain(svc, "TILL-1")
    svc.set_balances({A: 0})
    monday, tuesday = seoul_ms(2025, 3, 10, 8), seoul_ms(2025, 3, 11, 8)
    svc.ingest("BUS-1", [bus.tap(A, monday, fare=1500), bus.tap(A, tuesday, fare=1500)])
    svc.ingest("TILL-1", [till.pay(A, 10_000, seoul_ms(2025, 4, 7, 12))])
    payout(svc.store, "2025-03", seoul_ms(2025, 4, 8))
    st = statement(svc.store, A)
    march = 1500 + (ADULT_CAP - 1500)                 # Tuesday earns what the cap leaves
    food = 10_000 * FOOD_BP // 10_000
    assert st["card_token"] == A and st["rider"] is None
    assert (st["earned"], st["paid"], st["pending"]) == (march + food, march, food)
    assert [(e["day"], e["rule"], e["points"], e["paid_in"], e["adjustment"])
            for e in st["entries"]] == [
        ("2025-03-10", "bus", 1500, "2025-03", None),
        ("2025-03-11", "bus", ADULT_CAP - 1500, "2025-03", None),
        ("2025-04-07", "local_food", food, None, None)]
    first = st["entries"][0]
    assert (first["terminal_id"], first["seq"], first["rule_version"],
            first["payable_month"]) == ("BUS-1", 1, 1, "2025-03")
    assert first["note"] == {"bus_type": "city", "rider": "adult", "route": "85"}
    assert st["weeks"] == [{"week_start": "2025-03-10", "points": ADULT_CAP, "days": [0, 1]}]
    assert st["payouts"] == [{"month": "2025-03", "points": march, "paid": march, "carry": 0,
                              "status": "paid"}]


def test_statement_of_an_unknown_card_is_empty(svc: CentralLog) -> None:
    assert statement(svc.store, C) == {
        "card_token": C, "rider": None, "earned": 0, "paid": 0, "pending": 0,
        "entries": [], "weeks": [], "payouts": []}


def test_settlement_rows_and_file(svc: CentralLog, tmp_path: Path) -> None:
    bus, till = chain(svc, "BUS-1"), chain(svc, "TILL-1")
    svc.set_balances({A: 0, B: 0})
    pay = till.pay(A, 200_000, seoul_ms(2025, 3, 12, 12))
    svc.ingest("BUS-1", [bus.tap(A, seoul_ms(2025, 3, 10, 8), fare=1500),
                         bus.tap(B, seoul_ms(2025, 3, 10, 9), fare=1200)])
    svc.ingest("TILL-1", [pay, till.refund(A, 50_000, pay.seq, seoul_ms(2025, 3, 13, 12))])
    zero = "0" * 32                                # nets to nothing: settled, not in the file
    z_pay = till.pay(zero, 50_000, seoul_ms(2025, 3, 14, 12))
    svc.ingest("TILL-1", [z_pay, till.refund(zero, 50_000, z_pay.seq, seoul_ms(2025, 3, 14, 13))])
    payout(svc.store, "2025-03", seoul_ms(2025, 4, 2))
    food = 200_000 * FOOD_BP // 10_000
    refund = 150_000 * FOOD_BP // 10_000 - food
    want = [(A, "", "2025-03", 1500, food, refund, 0, 1500 + food + refund),
            (B, "", "2025-03", 1200, 0, 0, 0, 1200)]
    assert settlement_rows(svc.store, "2025-03") == want
    out = tmp_path / "deep" / "er" / "2025-03.csv"
    assert write_settlement(svc.store, "2025-03", out) == 2
    with open(out, newline="") as f:
        got = list(csv.reader(f))
    assert got[0] == list(SETTLEMENT_HEADER)
    assert got[1:] == [[str(v) for v in row] for row in want]
    assert out.stat().st_mode & 0o777 == 0o600
    assert out.parent.stat().st_mode & 0o777 == 0o700
    assert not out.with_name(out.name + ".tmp").exists()


def test_a_settlement_file_that_cannot_be_written_says_the_payout_is_done(
        svc: CentralLog, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"not written: .*; the payout of 2025-03 is done, "
                                          r"run it again to write the file$"):
        write_settlement(svc.store, "2025-03", blocker / "out.csv")


def test_budget_counts_paid_and_unpaid_points_of_the_year(svc: CentralLog) -> None:
    bus = chain(svc, "BUS-1")
    svc.set_balances({A: 0})
    svc.ingest("BUS-1", [bus.tap(A, seoul_ms(2025, 3, 10, 8), fare=1000),
                         bus.tap(B, seoul_ms(2025, 3, 11, 8), fare=800),
                         bus.tap(A, seoul_ms(2025, 4, 7, 8), fare=600)])
    payout(svc.store, "2025-03", seoul_ms(2025, 4, 8))
    got = budget(svc.store, 2025)
    yearly = 2_000_000_000
    assert (got.year, got.budget, got.spent, got.committed) == (2025, yearly, 1000, 800 + 600)
    assert got.left == yearly - 1000 - 1400
    assert got.as_dict() == {"year": 2025, "budget": yearly, "spent": 1000,
                             "committed": 1400, "left": yearly - 2400}
    assert budget(svc.store, 2026).spent == 0 and budget(svc.store, 2026).committed == 0
    assert Budget(2025, 10, 3, 4).left == 3


@pytest.mark.parametrize("year", [2000, 9999])
def test_budget_years_at_the_ends_are_years(svc: CentralLog, year: int) -> None:
    assert budget(svc.store, year).year == year


@pytest.mark.parametrize("year", [1999, 10000])
def test_budget_refuses_a_year_out_of_range(svc: CentralLog, year: int) -> None:
    with pytest.raises(ConfigError, match=rf"^year {year} is not a year of the programme$"):
        budget(svc.store, year)


# -- reconciliation --------------------------------------------------------------------------


def test_reconcile_lines_and_a_terminal_that_reported_nothing(bare: CentralLog) -> None:
    k1 = Ed25519PrivateKey.generate()
    bare.add_terminal("T1", bytes.fromhex(public_hex(k1)))
    day = bare.day_of(WALL)
    bare.ingest("T1", signed_entries(k1, "T1", 3, amount=700, kind="payment", wall0=WALL))
    rep = report(bare, day)
    assert rep.day == day
    assert rep.lines == [Line("T1", "payment", 3, 2100, None, None)]
    assert not rep.clean and rep.differences == rep.lines
    bare.report_totals("T1", day, {"payment": (3, 2100), "refund": (1, 50)})
    rep = report(bare, day)
    assert rep.lines == [Line("T1", "payment", 3, 2100, 3, 2100),
                         Line("T1", "refund", 0, 0, 1, 50)]
    assert rep.differences == [Line("T1", "refund", 0, 0, 1, 50)] and not rep.clean
    bare.report_totals("T1", day, {"payment": (3, 2100)})     # a report replaces the last
    rep = report(bare, day)
    assert rep.clean and rep.overdrafts == [] and rep.flags == []
    assert report(bare, "2000-01-01").clean


def test_a_line_matches_on_count_and_amount_both() -> None:
    assert Line("T", "tap", 2, 3000, 2, 3000).matches
    assert not Line("T", "tap", 2, 3000, 2, 2999).matches
    assert not Line("T", "tap", 2, 3000, 1, 3000).matches
    assert not Line("T", "tap", 0, 0, None, None).matches


def test_reconcile_lists_flags_of_the_day(svc: CentralLog) -> None:
    key = Ed25519PrivateKey.generate()
    svc.add_terminal("T1", bytes.fromhex(public_hex(key)))
    early = seoul_ms(2019, 6, 3, 8)                      # before 2020: a clock flag
    svc.ingest("T1", signed_entries(key, "T1", 1, amount=100, kind="payment", wall0=early))
    with svc.store.tx(write=False) as tx:
        day = str(tx.one("SELECT day FROM entries")[0])  # type: ignore[index]
    rep = report(svc, day)
    assert [(f["rule"], f["terminal_id"], f["seq"]) for f in rep.flags] == [("clock", "T1", 1)]
    assert '"problem"' in rep.flags[0]["detail"]
    assert not rep.clean
    bare_rep = report(svc, day)
    bare_rep.flags.clear()
    bare_rep.lines.clear()
    assert bare_rep.clean


# -- the service's refusals and answers ------------------------------------------------------


def test_terminal_registration(bare: CentralLog) -> None:
    key = Ed25519PrivateKey.generate()
    pub = bytes.fromhex(public_hex(key))
    msg = r"^a terminal needs an id and a 32-byte Ed25519 public key$"
    with pytest.raises(SyncProtocolError, match=msg):
        bare.add_terminal("", pub)
    with pytest.raises(SyncProtocolError, match=msg):
        bare.add_terminal("T1", pub[:31])
    bare.add_terminal("T1", pub, lat=1.5, lon=2.5)
    bare.add_terminal("T1", pub, lat=3.5, lon=4.5)             # same key: place updated
    with bare.store.tx(write=False) as tx:
        assert tx.all("SELECT lat, lon, last_seq FROM terminals") == [(3.5, 4.5, 0)]
    other = bytes.fromhex(public_hex(Ed25519PrivateKey.generate()))
    with pytest.raises(SyncProtocolError, match=r"^terminal 'T1' is registered with another "
                                                r"key$"):
        bare.add_terminal("T1", other)
    with pytest.raises(SyncAuthError, match=r"^unknown terminal 'T9'$"):
        bare.terminal_key("T9")
    with pytest.raises(SyncAuthError, match=r"^unknown terminal 'T9'$"):
        bare.ingest("T9", signed_entries(key, "T9", 1))


def test_an_empty_batch_is_refused(bare: CentralLog) -> None:
    with pytest.raises(SyncProtocolError, match=r"^batch has no entries$"):
        bare.ingest("T1", [])


def test_gap_and_fork_messages(bare: CentralLog) -> None:
    key = Ed25519PrivateKey.generate()
    bare.add_terminal("T1", bytes.fromhex(public_hex(key)))
    entries = signed_entries(key, "T1", 5, wall0=WALL)
    bare.ingest("T1", entries[:2])
    with pytest.raises(ChainMismatchError, match=r"^gap: terminal T1 is accepted up to entry "
                                                 r"2, the batch starts at 4$") as gap:
        bare.ingest("T1", entries[3:])
    assert gap.value.seq == 3
    forked = signed_entries(key, "T1", 1, seq0=3, wall0=WALL + 10_000)
    with pytest.raises(ChainMismatchError, match=r"^fork: entry 3 does not continue the "
                                                 r"accepted entry 2 of terminal T1$") as fork:
        bare.ingest("T1", forked)
    assert fork.value.seq == 3
    receipt = bare.ingest("T1", entries[2:])
    assert (receipt.first_seq, receipt.last_seq, receipt.accepted) == (3, 5, 3)
    assert bare.size() == 5


def test_a_first_entry_whose_stamp_repeats_the_last_is_refused(bare: CentralLog) -> None:
    from tests.incentives_data import Chain

    c = Chain("T1")
    bare.add_terminal("T1", bytes.fromhex(public_hex(c.key)))
    bare.ingest("T1", [c.tap(A, WALL)])
    c.mono -= 1                                          # the next stamp equals the last one
    same = c.tap(A, 0)
    with pytest.raises(ChainMismatchError, match=rf"^entry 2 does not link to entry 1: its "
                                                 rf"monotonic stamp {WALL} is not after "
                                                 rf"{WALL}$") as err:
        bare.ingest("T1", [same])
    assert err.value.seq == 2
    assert bare.size() == 1


def test_batch_shape_messages(bare: CentralLog) -> None:
    key = Ed25519PrivateKey.generate()
    bare.add_terminal("T1", bytes.fromhex(public_hex(key)))
    zero = signed_entries(key, "T1", 1, seq0=0)
    with pytest.raises(ChainMismatchError, match=r"^sequence numbers start at 1$") as err:
        bare.ingest("T1", zero)
    assert err.value.seq == 0
    a = signed_entries(key, "T1", 1, seq0=1)
    b = signed_entries(key, "T1", 1, seq0=3)
    with pytest.raises(ChainMismatchError, match=r"^batch is not contiguous: entry 3 follows "
                                                 r"1$") as err:
        bare.ingest("T1", a + b)
    assert err.value.seq == 2


def test_proof_checkpoint_and_leaf_refusals(bare: CentralLog) -> None:
    assert bare.size() == 0
    empty = bare.checkpoint()
    assert "\n0\n" in empty
    key = Ed25519PrivateKey.generate()
    bare.add_terminal("T1", bytes.fromhex(public_hex(key)))
    entries = signed_entries(key, "T1", 3)
    bare.ingest("T1", entries)
    assert bare.leaf(2) == entries[2].data
    with pytest.raises(SyncProtocolError, match=r"^no entry at log index 3$"):
        bare.leaf(3)
    with pytest.raises(SyncProtocolError, match=r"^no checkpoint of size 2$"):
        bare.checkpoint(2)
    assert bare.checkpoint(3) == bare.checkpoint()
    assert bare.consistency_proof(3, 3) == []
    with pytest.raises(SyncProtocolError, match=r"^the log has no size 4 yet$"):
        bare.consistency_proof(1, 4)


def test_latest_config_of_a_terminal_with_none(bare: CentralLog) -> None:
    assert bare.latest_config("T1") == {"version": 0, "body": ""}


def test_balances_delta_never_splits_a_version(bare: CentralLog) -> None:
    v1 = bare.set_balances({A: 1, B: 2})
    v2 = bare.set_balances({C: 3})
    assert bare.balances_delta(0, limit=2) == {"version": v1, "balances": {A: 1, B: 2}}
    assert bare.balances_delta(0, limit=3) == {"version": v1, "balances": {A: 1, B: 2}}
    assert bare.balances_delta(0, limit=4) == {"version": v2,
                                               "balances": {A: 1, B: 2, C: 3}}
    assert bare.balances_delta(v2) == {"version": v2, "balances": {}}
    # a single version larger than the limit still goes out, whole rows of it
    assert bare.balances_delta(0, limit=1)["version"] == v1


def test_deny_delta_keeps_the_last_word(bare: CentralLog) -> None:
    v1 = bare.deny(A, "lost")
    assert bare.deny(A, "again") == v1                  # the same word twice: no change
    v2 = bare.deny(B, "stolen")
    v3 = bare.deny(A, "found", remove=True)
    assert (v1, v2, v3) == (1, 2, 3)
    assert bare.deny_delta(0) == {"version": 3, "add": {B: "stolen"}, "remove": [A]}
    assert bare.deny_delta(1) == {"version": 3, "add": {B: "stolen"}, "remove": [A]}
    assert bare.deny_delta(3) == {"version": 3, "add": {}, "remove": []}


# -- the store -------------------------------------------------------------------------------


def _raw(url: str) -> Store:
    """A store of ``url``'s kind with no schema made yet."""
    if url.startswith("postgresql://"):
        return PostgresStore(url)
    return SQLiteStore(url[len("sqlite:///"):])


def test_an_old_store_gains_the_added_columns_and_keeps_its_times(store_url: str) -> None:  # noqa: F811
    old = _raw(store_url)
    blob = old.blob
    with old.tx() as tx:
        tx.run(f"CREATE TABLE entries (log_index BIGINT PRIMARY KEY, terminal_id TEXT NOT NULL, "
               f"seq BIGINT NOT NULL, kind TEXT NOT NULL, card_token TEXT NOT NULL, amount "
               f"BIGINT NOT NULL, place TEXT NOT NULL, wall_ms BIGINT NOT NULL, day TEXT NOT "
               f"NULL, entry_hash {blob} NOT NULL, data {blob} NOT NULL, signature {blob} NOT "
               f"NULL, UNIQUE (terminal_id, seq))")
        tx.run(f"CREATE TABLE log_state (id INTEGER PRIMARY KEY CHECK (id = 1), size BIGINT "
               f"NOT NULL, frontier {blob} NOT NULL)")
        tx.run("INSERT INTO log_state VALUES (1, 2, ?)", (b"",))
        for i in range(2):
            tx.run("INSERT INTO entries VALUES (?, 'T1', ?, 'tap', 'x', 1500, '85', ?, "
                   "'2025-03-10', ?, ?, ?)", (i, i + 1, WALL + i, b"h", b"d", b"s"))
    old.close()
    store = open_store(store_url)
    try:
        with store.tx(write=False) as tx:
            assert tx.all("SELECT seq, ref_seq, detail, effective_ms FROM entries ORDER BY seq") \
                == [(1, 0, "", WALL), (2, 0, "", WALL + 1)]
            assert tx.one("SELECT next_index FROM incentive_cursor") == (2,)
            assert tx.one("SELECT size FROM log_state") == (2,)
        store.init_schema()                                  # a second time changes nothing
        with store.tx(write=False) as tx:
            assert tx.all("SELECT effective_ms FROM entries ORDER BY seq") == [(WALL,),
                                                                                (WALL + 1,)]
            assert tx.one("SELECT next_index FROM incentive_cursor") == (2,)
    finally:
        store.close()


def test_a_new_store_starts_an_empty_log_and_cursor(store_url: str) -> None:  # noqa: F811
    store = open_store(store_url)
    try:
        with store.tx(write=False) as tx:
            assert tx.one("SELECT size, frontier FROM log_state WHERE id = 1") == (0, b"")
            assert tx.one("SELECT next_index FROM incentive_cursor WHERE id = 1") == (0,)
            cols = store.columns(tx, "terminals")
        assert {"last_mono", "last_effective_ms", "public_key"} <= cols
    finally:
        store.close()


def test_store_errors_roll_back_and_name_the_store(store_url: str) -> None:  # noqa: F811
    store = open_store(store_url)
    kind = store.kind
    try:
        with pytest.raises(SyncError, match=rf"^central store {kind}: "
                       r"(IntegrityError|UniqueViolation): ") \
                as err:
            with store.tx() as tx:
                tx.run("INSERT INTO nonces VALUES ('T1', 'n1', 1)")
                tx.run("INSERT INTO nonces VALUES ('T1', 'n1', 2)")
        assert not isinstance(err.value, SyncUnavailableError)
        with pytest.raises(ValueError, match="mine"):
            with store.tx() as tx:
                tx.run("INSERT INTO nonces VALUES ('T1', 'n2', 1)")
                raise ValueError("mine")
        with store.tx(write=False) as tx:
            assert tx.all("SELECT nonce FROM nonces") == []
        with store.tx() as tx:
            assert tx.run("INSERT INTO nonces VALUES ('T1', 'n3', 1)") == 1
            assert tx.one("SELECT ? LIKE 'ab%'", ("abc",)) in ((1,), (True,))
        with store.tx(write=False) as tx:
            assert tx.all("SELECT nonce FROM nonces") == [("n3",)]
    finally:
        store.close()


def test_a_lost_store_is_unavailable_not_refused(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'c.sqlite'}")
    try:
        with pytest.raises(SyncUnavailableError, match=r"^central store sqlite failed: "):
            with store.tx() as tx:
                tx.run("SELECT * FROM no_such_table")
    finally:
        store.close()
    (tmp_path / "dir.sqlite").mkdir()
    broken = SQLiteStore(tmp_path / "dir.sqlite", pool_size=1)
    for _ in range(3):                                       # a failed connect frees its slot
        with pytest.raises(SyncUnavailableError, match=r"^central store sqlite unreachable: "):
            with broken.tx():
                pass
    (tmp_path / "dir.sqlite").rmdir()
    with broken.tx() as tx:
        assert tx.one("SELECT 1") == (1,)
    broken.close()


def test_a_store_folder_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"^cannot create the folder of "):
        SQLiteStore(tmp_path / "file" / "sub" / "c.sqlite")


def test_store_urls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^unknown store URL 'mysql://x': use "
                                          r"sqlite:///PATH or postgresql://\.\.\.$"):
        open_store("mysql://x")
    plain = open_store(str(tmp_path / "plain.sqlite"))
    assert plain.kind == "sqlite" and plain.url == f"sqlite:///{tmp_path / 'plain.sqlite'}"
    plain.close()
    url = open_store(f"sqlite:///{tmp_path / 'u.sqlite'}")
    assert isinstance(url, SQLiteStore) and url.path == tmp_path / "u.sqlite"
    url.close()


def test_sqlite_connections_are_durable_and_wait(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'c.sqlite'}")
    try:
        with store.tx(write=False) as tx:
            assert tx.one("PRAGMA journal_mode") == ("wal",)
            assert tx.one("PRAGMA synchronous") == (2,)           # FULL
            assert tx.one("PRAGMA busy_timeout") == (30000,)
    finally:
        store.close()


def test_the_pool_holds_at_most_its_size_and_readers_pass_a_writer(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'c.sqlite'}", pool_size=2)
    got: list[int] = []
    try:
        with store.tx() as outer:
            outer.run("INSERT INTO nonces VALUES ('T1', 'n1', 1)")
            with store.tx(write=False) as reader:                 # WAL: readers never wait
                assert reader.all("SELECT nonce FROM nonces") == []

            def third() -> None:
                with store.tx(write=False) as tx:
                    got.append(int(tx.one("SELECT COUNT(*) FROM nonces")[0]))  # type: ignore[index]

            with store.tx(write=False):
                worker = threading.Thread(target=third)
                worker.start()
                worker.join(0.5)
                assert got == []                     # both connections in use: it waits
            worker.join(10)
            assert got == [0]                        # it read what was committed

    finally:
        store.close()


def test_a_closed_store_opens_new_connections(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'c.sqlite'}", pool_size=1)
    with store.tx() as tx:
        tx.run("INSERT INTO nonces VALUES ('T1', 'n1', 1)")
    store.close()
    with store.tx(write=False) as tx:
        assert tx.all("SELECT nonce FROM nonces") == [("n1",)]
    store.close()


def test_postgres_arrays_of_each_type(store_url: str) -> None:  # noqa: F811
    store = open_store(store_url)
    try:
        with store.tx() as tx:
            tx.run(f"CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT, f DOUBLE PRECISION, "
                   f"b {store.blob}, o BOOLEAN, z BIGINT)")
            tx.insert_all([Rows("t", ("k", "n", "f", "b", "o", "z"),
                                [("a", 1, 0.5, b"\x00\x01", True, None),
                                 ("b", 2, 1.5, b"\x02", False, 8)]),
                           Rows("t", ("k", "n", "f", "b", "o", "z"),
                                [("c", 3, 2.5, b"", True, 7)])])
            tx.bulk("t", ("k", "n"), [("d", 4)])
            tx.bulk("t", ("k", "n"), [])
            tx.many("INSERT INTO t (k, n) VALUES (?, ?)", [("e", 5), ("f", 6)])
            tx.many("INSERT INTO t (k, n) VALUES (?, ?)", [])
        with store.tx(write=False) as tx:
            rows = [(k, n, f, None if b is None else bytes(b), None if o is None else bool(o), z)
                    for k, n, f, b, o, z in tx.all("SELECT k, n, f, b, o, z FROM t ORDER BY k")]
            assert rows == [("a", 1, 0.5, b"\x00\x01", True, None),
                            ("b", 2, 1.5, b"\x02", False, 8),
                            ("c", 3, 2.5, b"", True, 7), ("d", 4, None, None, None, None),
                            ("e", 5, None, None, None, None), ("f", 6, None, None, None, None)]
            src, params = tx.values_table("v", ("k", "f", "o"), [("a", 0.5, True),
                                                                 ("b", 9.0, False)])
            assert tx.all(f"SELECT t.k FROM t JOIN {src} ON t.k = v.k AND t.f = v.f "
                          f"AND t.o = v.o", params) == [("a",)]
            marks, ps = tx.in_list(["a", "c", "zz"])
            assert sorted(tx.all(f"SELECT k FROM t WHERE k IN {marks}", ps)) == [("a",), ("c",)]
    finally:
        store.close()


# -- crediting -------------------------------------------------------------------------------


def _points(svc: CentralLog, token: str) -> list[tuple[str, str, int]]:
    return [(e["day"], e["rule"], e["points"]) for e in statement(svc.store, token)["entries"]]


def test_crediting_in_chunks_reports_its_progress(store_url: str) -> None:  # noqa: F811
    svc = open_service(store_url, followers=[])
    try:
        bus = chain(svc, "BUS-1")
        svc.ingest("BUS-1", [bus.tap(A, seoul_ms(2025, 3, 10, 8), fare=1000),
                             bus.tap(B, seoul_ms(2025, 3, 10, 9), fare=1200),
                             bus.tap(A, seoul_ms(2025, 3, 11, 8), fare=1300)])
        with pytest.raises(ConfigError, match=r"^the crediting chunk must be at least 1 "
                                              r"entry$"):
            credit_log(svc.store, chunk=0)
        seen: list[tuple[int, int]] = []
        done = credit_log(svc.store, chunk=1, progress=lambda d, n: seen.append((d, n)))
        assert seen == [(1, 3), (2, 3), (3, 3)]
        assert (done.credits, done.points) == (3, 1000 + 1200 + 1300)
        again = credit_log(svc.store, chunk=1, progress=lambda d, n: seen.append((d, n)))
        assert (again.credits, again.points) == (0, 0) and len(seen) == 3
        assert _points(svc, A) == [("2025-03-10", "bus", 1000), ("2025-03-11", "bus", 1300)]
        svc.ingest("BUS-1", [bus.tap(A, seoul_ms(2025, 3, 12, 8), fare=1500)])
        more = credit_log(svc.store, chunk=2)
        assert (more.credits, more.points) == (1, ADULT_CAP - 1000 - 1300)
    finally:
        svc.store.close()


def test_refunds_take_back_points_in_proportion(svc: CentralLog) -> None:
    till = chain(svc, "TILL-1")
    day = seoul_ms(2025, 3, 10, 12)
    pay = till.pay(A, 100_000, day)
    svc.ingest("TILL-1", [pay, till.refund(A, 30_000, pay.seq, day + 60_000)])
    svc.ingest("TILL-1", [till.refund(A, 50_000, pay.seq, day + 120_000, kind="void")])
    svc.ingest("TILL-1", [till.refund(A, 90_000, pay.seq, day + 180_000)])
    earned = 100_000 * FOOD_BP // 10_000
    left1 = 70_000 * FOOD_BP // 10_000
    left2 = 20_000 * FOOD_BP // 10_000
    assert _points(svc, A) == [("2025-03-10", "local_food", earned),
                               ("2025-03-10", "refund", left1 - earned),
                               ("2025-03-10", "refund", left2 - left1),
                               ("2025-03-10", "refund", 0 - left2)]
    assert statement(svc.store, A)["earned"] == 0
    notes = [e["note"] for e in statement(svc.store, A)["entries"][1:]]
    assert notes == [{"payment": pay.seq, "kind": "refund"}, {"payment": pay.seq, "kind": "void"},
                     {"payment": pay.seq, "kind": "refund"}]


def test_refunds_of_payments_that_earned_nothing_take_nothing(svc: CentralLog) -> None:
    till = chain(svc, "TILL-1")
    day = seoul_ms(2025, 3, 10, 12)
    other = till.pay(A, 100_000, day, category="electronics")
    small = till.pay(A, 300, day + 1000)                       # 300 * 0.30 % < 1 point
    svc.ingest("TILL-1", [other, small,
                          till.refund(A, 100_000, other.seq, day + 2000),
                          till.refund(A, 300, small.seq, day + 3000),
                          till.entry("refund", A, 10, day + 4000, place="M-1")])   # no ref
    assert _points(svc, A) == []


def test_food_points_round_down(svc: CentralLog) -> None:
    till = chain(svc, "TILL-1")
    day = seoul_ms(2025, 3, 10, 12)
    svc.ingest("TILL-1", [till.pay(A, 334, day), till.pay(A, 33_399, day + 1000),
                          till.pay(A, 0, day + 2000)])
    assert _points(svc, A) == [("2025-03-10", "local_food", 334 * FOOD_BP // 10_000),
                               ("2025-03-10", "local_food", 33_399 * FOOD_BP // 10_000)]
    assert [p for _, _, p in _points(svc, A)] == [1, 100]


def test_bus_rides_that_earn_nothing(svc: CentralLog) -> None:
    bus = chain(svc, "BUS-1")
    monday = seoul_ms(2025, 3, 10, 8)
    svc.ingest("BUS-1", [bus.tap(A, monday, fare=0),
                         bus.tap(B, monday + 1000, bus_type="express"),
                         bus.tap(C, monday + 2000, rider="senior"),
                         bus.tap("", monday + 3000),
                         bus.tap(A, seoul_ms(2025, 3, 15, 8))])            # Saturday
    assert _points(svc, A) == [] and _points(svc, B) == [] and _points(svc, C) == []
    other = chain(svc, "BUS-2")
    svc.ingest("BUS-2", [other.tap(A, monday + 60_000, fare=1)])          # Monday's first
    assert _points(svc, A) == [("2025-03-10", "bus", 1)]


def test_the_weekly_cap_to_the_point(svc: CentralLog) -> None:
    bus = chain(svc, "BUS-1")
    youth_cap = 2020
    svc.ingest("BUS-1", [bus.tap(A, seoul_ms(2025, 3, 10, 8), fare=1450),
                         bus.tap(A, seoul_ms(2025, 3, 11, 8), fare=1450),
                         bus.tap(A, seoul_ms(2025, 3, 12, 8), fare=1450)])
    other = chain(svc, "BUS-2")
    svc.ingest("BUS-2", [other.tap(B, seoul_ms(2025, 3, 10, 8), fare=1100, rider="youth"),
                         other.tap(B, seoul_ms(2025, 3, 11, 8), fare=1100, rider="youth"),
                         other.tap(B, seoul_ms(2025, 3, 12, 8), fare=1100, rider="youth")])
    assert [p for _, _, p in _points(svc, A)] == [1450, ADULT_CAP - 1450]
    assert [p for _, _, p in _points(svc, B)] == [1100, youth_cap - 1100]
    assert statement(svc.store, A)["weeks"] == [
        {"week_start": "2025-03-10", "points": ADULT_CAP, "days": [0, 1, 2]}]


def test_an_earlier_ride_takes_the_first_ride_credit(svc: CentralLog) -> None:
    late, early = chain(svc, "BUS-1"), chain(svc, "BUS-2")
    svc.ingest("BUS-1", [late.tap(A, seoul_ms(2025, 3, 10, 9), fare=1500)])
    svc.ingest("BUS-2", [early.tap(A, seoul_ms(2025, 3, 10, 7), fare=1200)])
    entries = statement(svc.store, A)["entries"]
    # in log order; the adjustment comes with the entry that caused it, before its credit
    assert [(e["terminal_id"], e["rule"], e["points"], e["adjustment"]) for e in entries] == [
        ("BUS-1", "bus", 1500, None),
        ("BUS-1", "bus", -1500, "first ride moved to BUS-2/1"),
        ("BUS-2", "bus", 1200, None)]
    assert statement(svc.store, A)["earned"] == 1200
    assert entries[[e["adjustment"] for e in entries].index(
        "first ride moved to BUS-2/1")]["note"] == {"moved_to": "BUS-2/1"}
    moved = next(e for e in entries if e["terminal_id"] == "BUS-2")
    assert moved["note"] == {"bus_type": "city", "rider": "adult", "route": "85",
                             "moved_from": "BUS-1/1"}
    assert statement(svc.store, A)["weeks"][0]["points"] == 1200
    # a later ride of the same day changes nothing
    svc.ingest("BUS-1", [late.tap(A, seoul_ms(2025, 3, 10, 10), fare=1500)])
    svc.ingest("BUS-2", [early.tap(A, seoul_ms(2025, 3, 10, 7, 0, 1), fare=1500)])
    assert statement(svc.store, A)["earned"] == 1200


def test_rules_versions_refusals_name_the_versions(svc: CentralLog) -> None:
    from central.incentive_rules import default_rules_text
    from central.incentives import current_rules, rules_versions
    from central.versions import load_rules

    assert current_rules(svc.store).version == 1
    listed = rules_versions(svc.store)
    assert [v["version"] for v in listed] == [1] and len(listed[0]["sha256"]) == 64
    text = default_rules_text().replace("version = 1", "version = 3").replace(
        "effective_from = 2025-01-01", "effective_from = 2099-01-01")
    assert load_rules(svc.store, text)[1] is True
    with pytest.raises(ConfigError, match=r"^incentive rules version 3 is already held with "
                                          r"other content: raise the version for a change$"):
        load_rules(svc.store, text.replace("rate_bp = 30", "rate_bp = 31"))
    with pytest.raises(ConfigError, match=r"^incentive rules version 2 is older than the "
                                          r"version 3 in force$"):
        load_rules(svc.store, text.replace("version = 3", "version = 2"))
    assert [v["version"] for v in rules_versions(svc.store)] == [1, 3]


def test_points_delta_never_splits_a_version(svc: CentralLog) -> None:
    from central.incentives import points_delta

    bus = chain(svc, "BUS-1")
    now = seoul_ms(2025, 3, 12, 9)
    svc.ingest("BUS-1", [bus.tap(A, seoul_ms(2025, 3, 10, 8), fare=1000),
                         bus.tap(B, seoul_ms(2025, 3, 10, 8), fare=1100)])    # one version
    svc.ingest("BUS-1", [bus.tap(C, seoul_ms(2025, 3, 10, 9), fare=1200)])    # the next
    whole = points_delta(svc.store, 0, now)
    assert whole["points"] == {A: [1000, 1, ""], B: [1100, 1, ""], C: [1200, 1, ""]}
    first = points_delta(svc.store, 0, now, limit=3)
    assert first["points"] == {A: [1000, 1, ""], B: [1100, 1, ""]}
    assert first["version"] < whole["version"]
    rest = points_delta(svc.store, first["version"], now)
    assert rest["points"] == {C: [1200, 1, ""]} and rest["version"] == whole["version"]
    assert points_delta(svc.store, whole["version"] + 5, now)["version"] == whole["version"] + 5
    other_week = points_delta(svc.store, 0, seoul_ms(2025, 3, 20, 9))
    assert other_week["points"] == {} and other_week["week_start"] == "2025-03-17"


# -- request authentication, config, totals, followers ---------------------------------------


def _auth(svc: CentralLog, key: Ed25519PrivateKey, time_ms: int, nonce: str) -> None:
    msg = request_message("GET", "/v1/deny?since=0", time_ms, nonce, b"")
    svc.authenticate("T1", time_ms, nonce, key.sign(msg), msg)


def test_a_request_is_stale_beyond_the_window_to_the_millisecond(
        bare: CentralLog, monkeypatch: pytest.MonkeyPatch) -> None:
    import central.service as service

    key = Ed25519PrivateKey.generate()
    bare.add_terminal("T1", bytes.fromhex(public_hex(key)))
    now = 1_800_000_000_000
    monkeypatch.setattr(service, "_now", lambda: now)
    stale = bare.stale_ms
    _auth(bare, key, now - stale, "01" * 16)                  # on the edge: accepted
    _auth(bare, key, now + stale, "02" * 16)
    with pytest.raises(SyncAuthError, match=rf"^request is stale: its time is \+301 s from "
                                            rf"ours \(at most {stale // 1000} s\)$"):
        _auth(bare, key, now - stale - 1000, "03" * 16)
    with pytest.raises(SyncAuthError, match=r"^request is stale: its time is -300 s from ours"):
        _auth(bare, key, now + stale + 1, "04" * 16)
    with pytest.raises(SyncAuthError, match=r"^replayed request from 'T1' \(nonce seen "
                                            r"before\)$"):
        _auth(bare, key, now, "01" * 16)
    with pytest.raises(SyncProtocolError, match="nonce"):
        _auth(bare, key, now, "XY" * 16)
    other = Ed25519PrivateKey.generate()
    msg = request_message("GET", "/", now, "05" * 16, b"")
    with pytest.raises(SyncAuthError, match=r"^request signature of 'T1' does not verify$"):
        bare.authenticate("T1", now, "05" * 16, other.sign(msg), msg)


def test_old_nonces_are_forgotten_every_500_checks(
        bare: CentralLog, monkeypatch: pytest.MonkeyPatch) -> None:
    import central.service as service

    key = Ed25519PrivateKey.generate()
    bare.add_terminal("T1", bytes.fromhex(public_hex(key)))
    now = 1_800_000_000_000
    monkeypatch.setattr(service, "_now", lambda: now)
    keep_from = now - 2 * bare.stale_ms

    def seed(nonce: str, at: int) -> None:
        with bare.store.tx() as tx:
            tx.run("INSERT INTO nonces VALUES ('T1', ?, ?)", (nonce, at))

    def held() -> list[str]:
        with bare.store.tx(write=False) as tx:
            return sorted(str(r[0]) for r in tx.all("SELECT nonce FROM nonces"))

    seed("old", keep_from - 1)
    seed("edge", keep_from)
    _auth(bare, key, now, "a0" * 16)                          # the first check purges
    assert held() == ["a0" * 16, "edge"]
    seed("old", keep_from - 1)
    for _ in range(499):                                      # replays count as checks
        with pytest.raises(SyncAuthError, match="replayed"):
            _auth(bare, key, now, "a0" * 16)
    assert "old" in held()
    with pytest.raises(SyncAuthError, match="replayed"):
        _auth(bare, key, now, "a0" * 16)                      # the 501st purges again
    assert held() == ["a0" * 16, "edge"]


def test_config_bundles_rise_per_terminal(bare: CentralLog) -> None:
    from firmware_cfg import bundle as bundles
    from firmware_cfg.config import DEFAULT, dumps

    operator = Ed25519PrivateKey.generate()
    bare.add_terminal("T1", bytes.fromhex(public_hex(Ed25519PrivateKey.generate())))
    bare.add_terminal("T2", bytes.fromhex(public_hex(Ed25519PrivateKey.generate())))
    v2 = bundles.make(operator, "T1", 2, dumps(DEFAULT)).decode()
    assert bare.publish_config(v2) == 2
    assert bare.latest_config("T1") == {"version": 2, "body": v2}
    for v in (1, 2):
        with pytest.raises(ConfigError, match=rf"^config bundle version {v} for T1 is not "
                                              r"newer than the published version 2$"):
            bare.publish_config(bundles.make(operator, "T1", v, dumps(DEFAULT)).decode())
    assert bare.publish_config(bundles.make(operator, "T2", 1, dumps(DEFAULT)).decode()) == 1
    v3 = bundles.make(operator, "T1", 3, dumps(DEFAULT)).decode()
    assert bare.publish_config(v3) == 3 and bare.latest_config("T1")["body"] == v3
    with pytest.raises(ConfigError, match=r"^config bundle is for 'T9', which is not "
                                          r"registered$"):
        bare.publish_config(bundles.make(operator, "T9", 1, dumps(DEFAULT)).decode())


def test_a_failing_follower_leaves_the_batch_accepted(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    calls: list[str] = []

    class Broken:
        name = "broken"

        def follow(self, service: CentralLog) -> None:
            calls.append("broken")
            raise RuntimeError("down")

    class Works:
        name = "works"

        def follow(self, service: CentralLog) -> None:
            calls.append("works")

    svc = CentralLog(open_store(store_url), NoteSigner("test.example/log",
                                                       Ed25519PrivateKey.generate()),
                     followers=[Broken(), Works()])
    try:
        key = Ed25519PrivateKey.generate()
        svc.add_terminal("T1", bytes.fromhex(public_hex(key)))
        with caplog.at_level("ERROR", logger="central.service"):
            receipt = svc.ingest("T1", signed_entries(key, "T1", 2))
        assert receipt.accepted == 2 and svc.size() == 2
        assert calls == ["broken", "works"]
        assert "broken could not follow the log; it resumes on the next batch" in caplog.text
    finally:
        svc.store.close()


def test_a_batch_across_midnight_is_split_by_day(bare: CentralLog) -> None:
    key = Ed25519PrivateKey.generate()
    bare.add_terminal("T1", bytes.fromhex(public_hex(key)))
    midnight = seoul_ms(2025, 3, 11, 0)
    batch = signed_entries(key, "T1", 4, wall0=midnight - 2, step_ms=1)
    bare.ingest("T1", batch)
    with bare.store.tx(write=False) as tx:
        assert tx.all("SELECT seq, day, effective_ms FROM entries ORDER BY seq") == [
            (1, "2025-03-10", midnight - 2), (2, "2025-03-10", midnight - 1),
            (3, "2025-03-11", midnight), (4, "2025-03-11", midnight + 1)]
    assert bare.day_of(midnight - 1) == "2025-03-10" and bare.day_of(midnight) == "2025-03-11"


def test_entries_before_the_programme_start_are_flagged(store_url: str) -> None:  # noqa: F811
    start = seoul_ms(2025, 1, 1, 0)
    svc = CentralLog(open_store(store_url), NoteSigner("test.example/log",
                                                       Ed25519PrivateKey.generate()),
                     programme_start=lambda tx: start)
    try:
        key = Ed25519PrivateKey.generate()
        svc.add_terminal("T1", bytes.fromhex(public_hex(key)))
        svc.ingest("T1", signed_entries(key, "T1", 2, wall0=start - 1, step_ms=1))
        with svc.store.tx(write=False) as tx:
            rows = tx.all("SELECT seq, effective_ms FROM entries ORDER BY seq")
            flags = tx.all("SELECT seq, rule, detail FROM flags ORDER BY seq")
        assert rows == [(1, start), (2, start)]
        assert [(s, r) for s, r, _ in flags] == [(1, "clock")]
        assert json.loads(flags[0][2]) == {"wall_ms": start - 1, "effective_ms": start,
                                           "problem": "before the programme started"}
    finally:
        svc.store.close()


def test_a_hook_denies_a_card_once_per_batch(bare: CentralLog) -> None:
    from central.service import HookContext

    with bare.store.tx() as tx:
        ctx = HookContext(bare, "T1", None, None, 0)
        ctx.deny(tx, A, "overdraft")
        ctx.deny(tx, A, "again")
        ctx.deny(tx, "", "nobody")
        assert ctx.denied == [A]
    assert bare.deny_delta(0) == {"version": 1, "add": {A: "overdraft"}, "remove": []}


def test_resent_batches_are_answered_and_overlaps_checked(bare: CentralLog) -> None:
    key = Ed25519PrivateKey.generate()
    bare.add_terminal("T1", bytes.fromhex(public_hex(key)))
    entries = signed_entries(key, "T1", 5, wall0=WALL)
    first = bare.ingest("T1", entries[:3])
    assert (first.first_seq, first.last_seq, first.accepted, first.log_index) == (1, 3, 3, 2)
    again = bare.ingest("T1", entries[1:3])
    assert (again.first_seq, again.last_seq, again.accepted, again.log_index) == (2, 3, 0, 2)
    assert again.checkpoint == first.checkpoint and again.proof == first.proof
    middle = bare.ingest("T1", entries[:2])
    assert (middle.first_seq, middle.last_seq, middle.accepted, middle.log_index) == (1, 2, 0, 1)
    assert middle.checkpoint == first.checkpoint
    more = bare.ingest("T1", entries)                        # 1..3 held, 4..5 new
    assert (more.first_seq, more.last_seq, more.accepted, more.log_index) == (4, 5, 2, 4)
    assert bare.size() == 5
    other = signed_entries(Ed25519PrivateKey.generate(), "T1", 2, wall0=WALL)
    with pytest.raises(ChainMismatchError, match=r"^entry 1 has a bad signature$"):
        bare.ingest("T1", other)
    forged = signed_entries(key, "T1", 2, wall0=WALL + 7)
    with pytest.raises(ChainMismatchError, match=r"^fork: entry 1 differs from the one "
                                                 r"accepted before$") as err:
        bare.ingest("T1", forged)
    assert err.value.seq == 1
    with bare.store.tx() as tx:
        tx.run("DELETE FROM batches WHERE last_seq = 5")
    with pytest.raises(ChainMismatchError, match=r"^entry 5 is held but its batch is not$"):
        bare.ingest("T1", entries[3:])
    with bare.store.tx() as tx:
        tx.run("DELETE FROM entries WHERE seq = 2")
    with pytest.raises(ChainMismatchError, match=r"^entry 2 of T1 was accepted but is no "
                                                 r"longer held$") as err:
        bare.ingest("T1", entries[:3])
    assert err.value.seq == 2


def test_reads_pass_a_held_write_lock(svc: CentralLog) -> None:
    """Reports, proofs, deltas and statements never wait for an ingest (SQLite: a write
    transaction holds the one write lock; a reader that asked for it would wait 30 s)."""
    from central.incentives import points_delta, rules_versions

    key = Ed25519PrivateKey.generate()
    svc.add_terminal("T1", bytes.fromhex(public_hex(key)))
    svc.ingest("T1", signed_entries(key, "T1", 2, wall0=WALL))
    day = svc.day_of(WALL)
    with svc.store.tx() as writer:
        writer.run("INSERT INTO nonces VALUES ('T1', 'w', 1)")
        assert report(svc, day).lines[0].central_count == 2
        assert svc.consistency_proof(1, 2) != []
        assert svc.checkpoint(2) == svc.checkpoint()
        assert svc.leaf(0) != b""
        assert svc.deny_delta(0)["version"] == 0
        assert svc.balances_delta(0)["version"] == 0
        assert budget(svc.store, 2025).spent == 0
        assert points_delta(svc.store, 0, seoul_ms(2025, 3, 12))["points"] == {}
        assert statement(svc.store, A)["earned"] == 0
        assert settlement_rows(svc.store, "2025-03") == []
        assert len(rules_versions(svc.store)) == 1
        assert svc.size() == 2
        assert svc.latest_config("T1")["version"] == 0


def test_reading_the_budget_or_points_stores_no_rules(bare: CentralLog) -> None:
    from central.incentives import points_delta, rules_versions

    assert budget(bare.store, 2025).budget == 2_000_000_000
    assert points_delta(bare.store, 0, seoul_ms(2025, 3, 12))["version"] == 0
    assert rules_versions(bare.store) == []


def test_reconcile_overdrafts_in_full(svc: CentralLog) -> None:
    key = Ed25519PrivateKey.generate()
    svc.add_terminal("T1", bytes.fromhex(public_hex(key)))
    card = "c" * 64
    svc.set_balances({card: 1000})
    svc.ingest("T1", signed_entries(key, "T1", 2, cards=[card], amount=700, kind="payment",
                                    place="M1", wall0=WALL))
    rep = report(svc, svc.day_of(WALL))
    assert rep.overdrafts == [{"card_token": card, "terminal_id": "T1", "seq": 2,
                               "amount": 700, "balance_after": 1000 - 700 - 700}]


def test_the_programme_starts_at_midnight_in_its_zone(bare: CentralLog) -> None:
    from central import incentives
    from central.incentive_rules import default_rules_text
    from central.versions import load_rules

    with bare.store.tx() as tx:
        assert incentives.programme_start_ms(tx) == seoul_ms(2025, 1, 1, 0)
    text = default_rules_text().replace("version = 1", "version = 2").replace(
        "effective_from = 2025-01-01", "effective_from = 2099-01-01").replace(
        "start = 2025-01-01", "start = 2024-06-01")
    load_rules(bare.store, default_rules_text())
    load_rules(bare.store, text)
    incentives._PARSED.clear()                       # read from the store, not the cache
    with bare.store.tx() as tx:
        assert incentives.programme_start_ms(tx) == seoul_ms(2024, 6, 1, 0)
    with bare.store.tx() as tx:                      # and again from the cache
        assert incentives.programme_start_ms(tx) == seoul_ms(2024, 6, 1, 0)
