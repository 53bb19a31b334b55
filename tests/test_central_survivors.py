"""Edges of the central log and its store that the broader tests pass over: which entry a
refused batch names, what the anchor policy trusts, monotonic stamps across batches, the
receipts and log lines of duplicates, clock flags as stored, deny-list and balance versions,
and the store's locking reads, folders, pool and PostgreSQL connection settings."""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from central import service as service_module
from central.incentives import CREDIT_COLUMNS
from central.service import CentralLog, check_batch
from central.store import PostgresStore, Rows, SQLiteStore, open_store
from localpay.errors import ChainMismatchError, ConfigError, ProofError, SyncAuthError
from offline_ledger.encoding import EntryFields, encode, entry_hash
from sync.protocol import WireEntry, decode_entry
from tests.incentives_data import Chain, chain, open_service, seoul_ms
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401

A, B = "a" * 32, "b" * 32


@pytest.fixture
def svc(store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    log = open_service(store_url, followers=[])
    yield log
    log.store.close()


def stamped(c: Chain, wall_ms: int, mono: int, token: str = A) -> WireEntry:
    """An entry of ``c``'s chain with a monotonic stamp of the test's choosing (a chain's own
    stamps follow its wall clock)."""
    c.seq += 1
    f = EntryFields(c.seq, "tap", c.terminal_id, token, 1500, 0, "85", wall_ms, mono,
                    '{"bus_type":"city"}', c.prev)
    data = encode(f)
    c.prev = entry_hash(data)
    return decode_entry(data, c.key.sign(data))


def column(svc: CentralLog, sql: str) -> list[Any]:
    with svc.store.tx(write=False) as tx:
        return [r[0] for r in tx.all(sql)]


# -- what a refused batch names -------------------------------------------------------------


def test_a_batch_naming_another_terminal_is_refused_at_that_entry(svc: CentralLog) -> None:
    chain(svc, "T-1")
    other = Chain("T-2")
    with pytest.raises(ChainMismatchError, match="entry 1 names terminal 'T-2'") as err:
        check_batch("T-1", svc.terminal_key("T-1"), [other.tap(A, seoul_ms(2025, 3, 10, 7))],
                    "every")
    assert err.value.seq == 1


def test_an_equal_monotonic_stamp_breaks_the_link(svc: CentralLog) -> None:
    c = chain(svc, "T-1")
    first = stamped(c, seoul_ms(2025, 3, 10, 7), 100)
    second = stamped(c, seoul_ms(2025, 3, 10, 8), 100)      # not after the first
    with pytest.raises(ChainMismatchError, match=r"^entry 2 does not link to entry 1$") as err:
        svc.ingest("T-1", [first, second])
    assert err.value.seq == 2


def test_the_anchor_policy_trusts_the_links_and_the_last_signature(svc: CentralLog) -> None:
    """Under ``anchor`` the last signature covers the earlier entries through their hash
    links; under ``every`` each signature is checked and the bad one named."""
    c = chain(svc, "T-1")
    batch = [c.tap(A, seoul_ms(2025, 3, 10 + d, 7)) for d in range(3)]
    batch[1] = dataclasses.replace(batch[1], signature=bytes(64))
    key = svc.terminal_key("T-1")
    check_batch("T-1", key, batch, "anchor")
    with pytest.raises(ChainMismatchError, match="entry 2 has a bad signature") as err:
        check_batch("T-1", key, batch, "every")
    assert err.value.seq == 2


def test_monotonic_stamps_are_compared_with_stamps_across_batches(svc: CentralLog) -> None:
    """The next batch's first stamp must pass the last one accepted, whatever the times:
    a counter far below the wall clock is fine."""
    c = chain(svc, "T-1")
    svc.ingest("T-1", [stamped(c, seoul_ms(2025, 3, 10, 7), 5)])
    assert svc.ingest("T-1", [stamped(c, seoul_ms(2025, 3, 10, 8), 6, B)]).accepted == 1
    with pytest.raises(ChainMismatchError, match="stamp 6 is not after 6"):
        svc.ingest("T-1", [stamped(c, seoul_ms(2025, 3, 10, 9), 6)])


def test_an_unknown_terminal_is_named_in_the_refusal(svc: CentralLog) -> None:
    c = Chain("T-9")
    with pytest.raises(SyncAuthError, match=r"^unknown terminal 'T-9'$"):
        svc.ingest("T-9", [c.tap(A, seoul_ms(2025, 3, 10, 7))])


def test_a_stale_request_says_how_far_its_time_is_from_ours(svc: CentralLog) -> None:
    c = chain(svc, "T-1")
    hour_ago = service_module._now() - 3_600_000
    with pytest.raises(SyncAuthError, match=r"its time is \+3600 s from ours"):
        svc.authenticate("T-1", hour_ago, "n" * 32, c.key.sign(b"request"), b"request")


# -- receipts, duplicates and log lines ----------------------------------------------------


def test_receipts_name_their_terminal_and_a_resent_batch_is_logged(
        svc: CentralLog, caplog: pytest.LogCaptureFixture) -> None:
    c = chain(svc, "T-1")
    batch = [c.tap(A, seoul_ms(2025, 3, 10, 7)), c.tap(B, seoul_ms(2025, 3, 10, 8))]
    first = svc.ingest("T-1", batch)
    assert first.terminal_id == "T-1" and svc.checkpoint() == first.checkpoint
    with caplog.at_level(logging.INFO, logger="central.service"):
        again = svc.ingest("T-1", batch)
    assert (again.terminal_id, again.accepted, again.checkpoint) == ("T-1", 0, first.checkpoint)
    assert "batch T-1 1..2 already held" in [r.getMessage() for r in caplog.records]


def test_a_held_entry_without_its_batch_is_named(svc: CentralLog) -> None:
    c = chain(svc, "T-1")
    batch = [c.tap(A, seoul_ms(2025, 3, 10, 7))]
    svc.ingest("T-1", batch)
    with svc.store.tx() as tx:
        tx.run("DELETE FROM batches")
    with pytest.raises(ChainMismatchError, match="entry 1 is held but its batch is not") as err:
        svc.ingest("T-1", batch)
    assert err.value.seq == 1


class _Broken:
    name = "the broken follower"

    def follow(self, service: CentralLog) -> None:
        raise RuntimeError("down")


def test_a_failing_follower_is_logged_by_name(store_url: str,  # noqa: F811
                                              caplog: pytest.LogCaptureFixture) -> None:
    log = open_service(store_url, followers=[_Broken()])
    try:
        c = chain(log, "T-1")
        with caplog.at_level(logging.ERROR, logger="central.service"):
            assert log.ingest("T-1", [c.tap(A, seoul_ms(2025, 3, 10, 7))]).accepted == 1
        assert [r.getMessage() for r in caplog.records if r.name == "central.service"] == [
            "the broken follower could not follow the log; it resumes on the next batch"]
    finally:
        log.store.close()


def test_a_store_without_its_log_state_refuses_to_append(svc: CentralLog) -> None:
    c = chain(svc, "T-1")
    with svc.store.tx() as tx:
        tx.run("DELETE FROM log_state")
    with pytest.raises(ProofError, match=r"^the store has no log state$"):
        svc.ingest("T-1", [c.tap(A, seoul_ms(2025, 3, 10, 7))])


def test_an_entry_from_an_unknown_clock_is_flagged_in_canonical_json(svc: CentralLog) -> None:
    c = chain(svc, "T-1")
    wall = seoul_ms(2025, 3, 10, 7)
    unknown = '{"bus_type":"city","clock":"unknown","rider":"adult"}'
    known = c.tap(B, wall - 60_000)
    svc.ingest("T-1", [known, c.entry("tap", A, 1500, wall, detail=unknown)])
    flags = column(svc, "SELECT detail FROM flags WHERE rule = 'clock'")
    assert len(flags) == 1
    doc = json.loads(flags[0])
    assert (doc["wall_ms"], doc["problem"]) == (wall, "the terminal's clock was unknown")
    assert flags[0] == json.dumps(doc, sort_keys=True)
    assert column(svc, "SELECT effective_ms FROM entries ORDER BY log_index")[0] == wall - 60_000


# -- deny list and balances ---------------------------------------------------------------


def test_deny_changes_are_recorded_as_add_and_remove(svc: CentralLog) -> None:
    svc.deny(A, "lost")
    svc.deny(A, "found", remove=True)
    svc.deny(A, "lost again")
    assert column(svc, "SELECT action FROM deny_changes ORDER BY version") == [
        "add", "remove", "add"]
    delta = svc.deny_delta(0)
    # denied again after its removal: added, and no longer in the removals
    assert (delta["add"], delta["remove"]) == ({A: "lost again"}, [])


def test_balance_versions_count_up_by_one(svc: CentralLog) -> None:
    svc.set_balances({A: 100})
    svc.set_balances({B: 200})
    assert svc.balances_delta(0)["version"] == 2


# -- the store ----------------------------------------------------------------------------


def test_a_locking_read_returns_its_row_on_both_stores(svc: CentralLog) -> None:
    with svc.store.tx() as tx:
        assert tx.one_for_update("SELECT size FROM log_state WHERE id = ?", (1,)) == (0,)
        assert tx.all(svc.store.for_update("SELECT size FROM log_state WHERE id = 1")) == [(0,)]


def test_reads_never_wait_for_a_writer(svc: CentralLog) -> None:
    """A terminal's key and an inclusion proof are read while a batch is being written
    (SQLite in WAL mode lets readers through; a write transaction would queue)."""
    c = chain(svc, "T-1")
    svc.ingest("T-1", [c.tap(A, seoul_ms(2025, 3, 10, 7))])
    got: list[Any] = []
    fresh = CentralLog(svc.store, svc.signer)  # its keys not yet read: the store is asked
    with svc.store.tx():
        reader = threading.Thread(target=lambda: got.extend(
            [fresh.terminal_key("T-1"), fresh.inclusion_proof(0, 1)]))
        reader.start()
        reader.join(5)
        finished = not reader.is_alive()
    reader.join()
    assert finished and got[1] == []


def test_a_sqlite_store_makes_the_folders_of_its_path(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/a/b/central.db")
    try:
        assert (tmp_path / "a" / "b" / "central.db").exists()
    finally:
        store.close()


def test_closing_a_store_closes_its_pooled_connections(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[sqlite3.Connection] = []
    connect = SQLiteStore.connect

    def recording(self: SQLiteStore) -> sqlite3.Connection:
        made.append(connect(self))
        return made[-1]

    monkeypatch.setattr(SQLiteStore, "connect", recording)
    store = open_store(f"sqlite:///{tmp_path}/c.db")
    with store.tx(write=False) as tx:
        tx.one("SELECT 1")
    store.close()
    assert made
    for conn in made:
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")


def test_a_connection_broken_by_an_error_frees_its_place_in_the_pool(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "p.db", pool_size=1)
    try:
        with pytest.raises(Exception, match="failed"), store.tx() as tx:
            tx.run("SELEC 1")             # an OperationalError: the connection is dropped
        # the one place is free again: no wait for a connection that will never return
        with store.tx(write=False) as tx:
            assert tx.one("SELECT 1") == (1,)
    finally:
        store.close()


def test_postgresql_without_psycopg_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)    # import psycopg fails
    with pytest.raises(ConfigError) as err:
        PostgresStore("postgresql://localhost/none")
    assert str(err.value) == "PostgreSQL needs psycopg: pip install 'localpay[central]'"


def test_a_postgresql_connection_gives_up_after_ten_seconds() -> None:
    # psycopg is replaced by a recorder: a server that never answers a connection cannot be
    # made here in less than the ten seconds the test is about
    store = PostgresStore("postgresql://localhost/none")
    seen: list[tuple[str, dict[str, Any]]] = []

    class _Fake:
        @staticmethod
        def connect(url: str, **kw: Any) -> str:
            seen.append((url, kw))
            return "connection"

    store._psycopg = _Fake()  # type: ignore[assignment]
    assert store.connect() == "connection"
    assert seen == [("postgresql://localhost/none", {"connect_timeout": 10})]


def test_a_text_column_of_nulls_is_inserted_as_nulls(svc: CentralLog) -> None:
    """A column with no value but NULL in a bulk insert (here: credits not yet settled)."""
    credit = ("T-1", 1, 0, A, "bus", 1500, 1500, 0, 1, "2025-03-10", "2025-03", 0, "{}")
    with svc.store.tx() as tx:
        tx.insert_all([Rows("incentive_credits", (*CREDIT_COLUMNS, "settled_month"),
                            [(*credit, None)])])
    assert column(svc, "SELECT settled_month FROM incentive_credits") == [None]


def test_the_report_json_names_every_part_of_the_day() -> None:
    """``central report --json`` is read by operators' scripts: its keys are a contract, and
    each line says whether the terminal's totals match central's."""
    from central.reconcile import Line, Report

    lines = [Line("T1", "payment", 2, 9_000, 2, 9_000), Line("T1", "refund", 1, 500, None, None)]
    od = [{"card_token": "c1", "terminal_id": "T1", "seq": 3, "amount": 9_000,
           "balance_after": -1_000}]
    fl = [{"rule": "velocity", "card_token": "c1"}]
    pod = [{"account": "a1", "pocket": "cash", "amount": 700}]
    pfl = [{"reason": "no_account", "terminal_id": "T1", "seq": 4}]
    report = Report("2026-11-25", lines, od, fl, pod, pfl)
    assert report.as_json() == {
        "day": "2026-11-25", "municipality": "default", "clean": False, "overdrafts": od,
        "flags": fl,
        "pocket_overdrafts": pod, "pocket_flags": pfl, "config_rejections": [],
        "never_synced": [], "z_reports": [], "z_report_differences": [],
        "waiting_refunds": [],
        "lines": [
            {"terminal_id": "T1", "kind": "payment", "central_count": 2,
             "central_amount": 9_000, "terminal_count": 2, "terminal_amount": 9_000,
             "matches": True},
            {"terminal_id": "T1", "kind": "refund", "central_count": 1, "central_amount": 500,
             "terminal_count": None, "terminal_amount": None, "matches": False},
        ]}
    assert Report("2026-11-25", lines[:1]).as_json()["clean"] is True
