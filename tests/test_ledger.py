"""The offline ledger: append, verify, append-only, faults, side tables, pruning."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from localpay.errors import (
    LedgerCorruptError,
    LedgerError,
    LedgerStateError,
    LedgerWriteError,
)
from offline_ledger import Ledger, encoding
from offline_ledger.encoding import EntryFields


def fill(ledger: Ledger, n: int, token: str = "card-a") -> None:
    for i in range(n):
        ledger.append("tap", card_token=token, amount=1500, place="85", wall_ms=1_000_000 + i,
                      offline_delta=1500, tap=True)


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_append_chains_and_verifies(ledger: Ledger) -> None:
    fill(ledger, 5)
    report = ledger.verify()
    assert (report.entries, report.first_seq, report.last_seq) == (5, 1, 5)
    entries = list(ledger.entries())
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].fields.prev_hash == bytes(32)
    for before, after in itertools.pairwise(entries):
        assert after.fields.prev_hash == before.entry_hash
        assert after.fields.mono > before.fields.mono
    assert report.head_hash == ledger.head.entry_hash == entries[-1].entry_hash


def test_append_is_durable_across_reopen(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(path, key=key, terminal_id="T1") as led:
        fill(led, 3)
        head = led.head
    with Ledger(path, key=key, terminal_id="T1") as led:
        assert led.head == head
        assert led.exposure == 4500
        assert led.card_state("card-a").offline_count == 3
    with Ledger(path) as ro:
        assert ro.verify().last_seq == 3
        with pytest.raises(LedgerStateError, match="read-only"):
            ro.append("tap", amount=1)


def test_wal_and_full_sync(ledger: Ledger) -> None:
    conn = ledger._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    names = [r[0] for r in conn.execute("SELECT name FROM migrations ORDER BY name")]
    assert names == ["0001_entries", "0002_side_tables", "0003_points", "0004_riders",
                     "0005_clock_anchor", "0006_pockets", "0007_pruned_sums"]


def test_update_and_delete_refused_by_triggers(ledger: Ledger) -> None:
    fill(ledger, 2)
    assert ledger.path is not None
    conn = raw(ledger.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE entries SET amount = 1 WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM entries WHERE seq = 2")
    conn.close()
    assert ledger.verify().entries == 2


def tamper(path: Path, sql: str) -> None:
    """What an attacker with the file could do: drop the trigger and edit a row."""
    conn = raw(path)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("DROP TRIGGER entries_no_delete")
    conn.execute(sql)
    conn.close()


@pytest.mark.parametrize(
    ("sql", "bad_seq", "message"),
    [
        ("UPDATE entries SET amount = 99 WHERE seq = 4", 4, "does not match its hash"),
        ("UPDATE entries SET signature = zeroblob(64) WHERE seq = 3", 3, "bad signature"),
        ("DELETE FROM entries WHERE seq = 5", 5, "missing"),
        ("UPDATE entries SET prev_hash = zeroblob(32) WHERE seq = 6", 6, "does not link"),
    ],
)
def test_tampering_found_with_its_seq(tmp_path: Path, key: Ed25519PrivateKey, sql: str,
                                      bad_seq: int, message: str) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(path, key=key, terminal_id="T1") as led:
        fill(led, 8)
    tamper(path, sql)
    with Ledger(path) as ro, pytest.raises(LedgerCorruptError, match=message) as err:
        ro.verify()
    assert err.value.seq == bad_seq


def test_rehashed_forgery_fails_on_signature(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Changing an amount and recomputing every hash still cannot forge the signature."""
    from offline_ledger import encoding

    path = tmp_path / "l.sqlite"
    with Ledger(path, key=key, terminal_id="T1") as led:
        fill(led, 3)
        e = led.entry(2)
    assert e is not None
    forged = encoding.encode(e.fields.__class__(**{
        **{n: getattr(e.fields, n) for n in e.fields.__dataclass_fields__}, "amount": 10})
    )
    tamper(path, f"UPDATE entries SET amount = 10, entry_hash = x'"
                 f"{encoding.entry_hash(forged).hex()}' WHERE seq = 2")
    with Ledger(path) as ro, pytest.raises(LedgerCorruptError) as err:
        ro.verify()
    assert err.value.seq == 2


def test_open_for_writing_refuses_broken_tail(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(path, key=key, terminal_id="T1") as led:
        fill(led, 10)
    tamper(path, "UPDATE entries SET amount = 1 WHERE seq = 9")
    with pytest.raises(LedgerCorruptError, match="entry 9") as err:
        Ledger(path, key=key, terminal_id="T1")
    assert err.value.seq == 9


def test_garbage_file_is_a_clear_error(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "l.sqlite"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(LedgerCorruptError, match="not a database"):
        Ledger(path, key=key, terminal_id="T1")
    with pytest.raises(LedgerCorruptError):
        Ledger(path)


def test_truncated_file_is_a_clear_error(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(path, key=key, terminal_id="T1") as led:
        fill(led, 400)
        led._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(LedgerCorruptError) as err:
        with Ledger(path) as ro:
            ro.verify()
    assert "malformed" in str(err.value) or "missing" in str(err.value) \
        or "unreadable" in str(err.value)


def test_other_sqlite_file_is_not_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    conn = raw(path)
    conn.execute("CREATE TABLE x (a)")
    conn.close()
    with pytest.raises(LedgerCorruptError, match="not a localpay ledger"):
        Ledger(path)


def test_missing_ledger_for_reading(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="no ledger at"):
        Ledger(tmp_path / "nope.sqlite")


def test_wrong_key_or_terminal_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "l.sqlite"
    Ledger(path, key=key, terminal_id="T1").close()
    with pytest.raises(LedgerStateError, match="does not match"):
        Ledger(path, key=Ed25519PrivateKey.generate(), terminal_id="T1")
    with pytest.raises(LedgerStateError, match="belongs to terminal"):
        Ledger(path, key=key, terminal_id="T2")


def test_disk_full_records_nothing(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """SQLite's own size cap gives the same SQLITE_FULL a full disk gives."""
    path = tmp_path / "l.sqlite"
    with Ledger(path, key=key, terminal_id="T1") as led:
        pages = led._conn.execute("PRAGMA page_count").fetchone()[0]
    with Ledger(path, key=key, terminal_id="T1", max_pages=pages + 3) as led:
        with pytest.raises(LedgerWriteError, match="full"):
            for i in range(10_000):
                led.append("tap", card_token=f"card-{i}", amount=1500, detail={"pad": "x" * 900},
                           offline_delta=1500, tap=True)
        head = led.head
        assert head.seq >= 1
        assert led.count() == head.seq
        assert led.exposure == 1500 * head.seq
        assert led.verify().last_seq == head.seq


def test_amount_must_be_int(ledger: Ledger) -> None:
    with pytest.raises(LedgerStateError, match="integer won"):
        ledger.append("payment", amount=1.5)  # type: ignore[arg-type]
    with pytest.raises(LedgerStateError, match="integer won"):
        ledger.append("payment", amount=True)
    assert ledger.head.seq == 0


def test_clock_backwards_keeps_order(ledger: Ledger) -> None:
    ledger.append("tap", amount=1, wall_ms=5_000)
    ledger.append("tap", amount=1, wall_ms=1_000)  # the clock was set back
    ledger.append("tap", amount=1, wall_ms=1_001)
    monos = [e.fields.mono for e in ledger.entries()]
    assert monos == [5_000, 5_001, 5_002]
    assert [e.fields.wall_ms for e in ledger.entries()] == [5_000, 1_000, 1_001]
    assert ledger.verify().entries == 3


def test_card_state_and_side_tables(ledger: Ledger) -> None:
    assert ledger.card_state("x").offline_amount == 0
    fill(ledger, 2, "x")
    ledger.append("refund", card_token="x", amount=1000, ref_seq=1, offline_delta=-1000)
    ledger.apply_deny_delta(3, {"bad": "stolen"})
    ledger.set_balances({"x": 10_000}, as_of_seq=0)
    state = ledger.card_state("x")
    assert (state.offline_amount, state.offline_count, state.last_tap_seq) == (2000, 2, 2)
    assert state.balance == 10_000 and state.denied is None
    assert ledger.card_state("bad").denied == "stolen"
    assert ledger.refunded_total(1) == 1000
    assert ledger.last_amount("x") == 1500 and ledger.last_amount("nobody") is None
    ledger.append("payment", card_token="x", amount=700, offline_delta=700)
    assert ledger.last_amount("x") == 700
    with pytest.raises(LedgerStateError, match="not newer"):
        ledger.apply_deny_delta(3, {})
    ledger.apply_deny_delta(4, {}, ["bad"])
    assert ledger.card_state("bad").denied is None
    ledger.append("payment", card_token="q", amount=5, nonce=("n1", 99))
    assert ledger.nonce_used("n1") and not ledger.nonce_used("n2")
    with pytest.raises(LedgerError):
        ledger.append("payment", card_token="q", amount=5, nonce=("n1", 99))


def test_mark_synced_restarts_counters_from_unsynced(ledger: Ledger) -> None:
    fill(ledger, 3, "x")
    fill(ledger, 2, "y")
    ledger.mark_synced(4, "checkpoint-4")
    assert ledger.card_state("x").offline_amount == 0
    assert ledger.card_state("y").offline_amount == 1500
    assert ledger.card_state("y").offline_count == 1
    assert ledger.exposure == 1500
    with pytest.raises(LedgerStateError):
        ledger.mark_synced(9, "beyond the head")


def test_prune_only_what_is_synced_and_keep_verifying(tmp_path: Path,
                                                      key: Ed25519PrivateKey) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(path, key=key, terminal_id="T1") as led:
        fill(led, 10)
        with pytest.raises(LedgerStateError, match="proved synced"):
            led.prune(5, "cp")
        led.mark_synced(6, "cp-6")
        assert led.prune(6, "cp-6") == 6
        assert led.count() == 4 and led.first_seq() == 7
        assert led.verify().entries == 4
        fill(led, 1)
    with Ledger(path, key=key, terminal_id="T1") as led:
        assert led.head.seq == 11
        assert led.verify().first_seq == 7
        led.mark_synced(11, "cp-11")
        led.prune(11, "cp-11")
    with Ledger(path, key=key, terminal_id="T1") as led:
        assert led.head.seq == 11  # the anchor carries the chain on
        fill(led, 1)
        assert led.entry(12) is not None and led.verify().entries == 1


def test_memory_ledger(key: Ed25519PrivateKey) -> None:
    with Ledger(memory=True, key=key, terminal_id="M") as led:
        fill(led, 3)
        assert led.verify().entries == 3


def test_exposure_follows_a_sync_from_another_connection(tmp_path: Path,
                                                          key: Ed25519PrivateKey) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(path, key=key, terminal_id="T1") as terminal_side:
        fill(terminal_side, 4)
        assert terminal_side.exposure == 6000
        with Ledger(path, key=key, terminal_id="T1") as sync_side:
            sync_side.mark_synced(3, "cp-3")
        assert terminal_side.exposure == 1500
        fill(terminal_side, 1)
        assert terminal_side.exposure == 3000


def test_mark_synced_without_recount_leaves_counters_high(ledger: Ledger) -> None:
    fill(ledger, 4, "x")
    ledger.mark_synced(2, "cp-2", recount=False)
    assert ledger.synced_upto() == 2
    assert ledger.card_state("x").offline_amount == 6000  # still counted: conservative
    ledger.mark_synced(4, "cp-4")
    assert ledger.card_state("x").offline_amount == 0 and ledger.exposure == 0


def test_a_sync_round_resets_a_card_whose_amount_came_back_to_zero(ledger: Ledger) -> None:
    """Paid and refunded: nothing offline in won, but one payment still counted; the round
    that syncs both resets the count too (only cards with something offline are rewritten)."""
    ledger.append("payment", card_token="x", amount=1000, offline_delta=1000)
    ledger.append("refund", card_token="x", amount=1000, ref_seq=1, offline_delta=-1000)
    fill(ledger, 1, "y")
    before = ledger.card_state("x")
    assert (before.offline_amount, before.offline_count) == (0, 1)
    ledger.mark_synced(3, "cp-3")
    for card in ("x", "y"):
        state = ledger.card_state(card)
        assert (state.offline_amount, state.offline_count) == (0, 0), card


def test_a_refund_written_during_a_sync_round_never_makes_a_counter_negative(
        ledger: Ledger) -> None:
    """Reproduced on the old code: pay 8,000, refund it while the round that holds the
    payment is in flight, mark_synced(1): counter and exposure -8,000, and the card then
    got 10,000 and 8,000 approved against a 10,000 cap."""
    from firmware_cfg.config import DEFAULT
    from terminal.risk import RiskInput, evaluate

    risk = DEFAULT.replace("risk", card_offline_amount=10_000, max_amount=50_000).risk
    ledger.append("payment", card_token="x", amount=8_000, offline_delta=8_000)
    ledger.append("refund", card_token="x", amount=8_000, ref_seq=1, offline_delta=-8_000)
    ledger.mark_synced(1, "cp-1")
    state = ledger.card_state("x")
    assert (state.offline_amount, ledger.exposure) == (0, 0)
    assert evaluate(risk, RiskInput(10_000, state, ledger.exposure, False)) is None
    ledger.append("payment", card_token="x", amount=10_000, offline_delta=10_000)
    full = ledger.card_state("x")
    assert full.offline_amount == 10_000                        # 0 + 10,000, not -8,000 + ...
    assert evaluate(risk, RiskInput(8_000, full, ledger.exposure, False)) is not None


def write_signed(path: Path, key: Ed25519PrivateKey, fields: EntryFields) -> bytes:
    """Append an entry as the terminal's own key would sign it, past the ledger's checks on
    the way in; return its hash."""
    data = encoding.encode(fields)
    digest = hashlib.sha256(data).digest()
    conn = raw(path)
    conn.execute(
        "INSERT INTO entries (seq, kind, terminal_id, card_token, amount, ref_seq, place, "
        "wall_ms, mono, detail, prev_hash, entry_hash, signature) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*dataclasses.astuple(fields), digest, key.sign(data)))
    conn.close()
    return digest


@pytest.mark.parametrize("step", [0, -1, -60_000], ids=["same", "one-back", "minute-back"])
def test_a_monotonic_stamp_that_does_not_go_forward_is_found(
        tmp_path: Path, key: Ed25519PrivateKey, step: int) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(path, key=key, terminal_id="T1") as led:
        fill(led, 2)
        second = led.head
    # Entry 3 is correctly encoded, hashed, linked and signed; only its stamp is wrong.
    # Entry 4 follows it correctly, so the chain goes on past the bad stamp.
    third = EntryFields(3, "tap", "T1", "card-a", 1500, 0, "85", 1_000_002,
                        second.mono + step, "{}", second.entry_hash)
    fourth = dataclasses.replace(third, seq=4, mono=second.mono + 10,
                                 prev_hash=write_signed(path, key, third))
    write_signed(path, key, fourth)
    with Ledger(path) as ro, pytest.raises(LedgerCorruptError) as err:
        ro.verify()
    assert str(err.value) == "entry 3 goes back in time (mono)"
    assert err.value.seq == 3
