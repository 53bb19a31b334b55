"""Edge cases of the money paths that the mutation run (make mutation) showed no test stating."""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from localpay.errors import (
    LedgerCorruptError,
    LedgerError,
    LedgerStateError,
    LedgerWriteError,
)
from offline_ledger import ClockAnchor, Ledger, anchor, boot_now, encoding
from offline_ledger.encoding import ZERO_HASH, EntryFields
from offline_ledger.ledger import QUARTER_MS, Head, VerifyReport, _wrap
from offline_ledger.schema import MIGRATIONS, _statements, migrate


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def now_ms() -> int:
    return int(time.time() * 1000)


def pub_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def fill(led: Ledger, n: int, token: str = "card-a") -> None:
    for i in range(n):
        led.append("tap", card_token=token, amount=1500, place="85", wall_ms=1_000_000 + i,
                   offline_delta=1500, tap=True)


def drop_guards(path: Path) -> sqlite3.Connection:
    """A raw connection to the file with the append-only triggers gone (what an attacker or a
    broken tool could do)."""
    conn = raw(path)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("DROP TRIGGER entries_no_delete")
    return conn


def write_row(path: Path, fields: EntryFields, entry_hash: bytes, signature: bytes) -> None:
    conn = raw(path)
    conn.execute(
        "INSERT INTO entries (seq, kind, terminal_id, card_token, amount, ref_seq, place, "
        "wall_ms, mono, detail, prev_hash, entry_hash, signature) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*dataclasses.astuple(fields), entry_hash, signature))
    conn.close()


def write_signed(path: Path, key: Ed25519PrivateKey, fields: EntryFields) -> bytes:
    data = encoding.encode(fields)
    digest = hashlib.sha256(data).digest()
    write_row(path, fields, digest, key.sign(data))
    return digest


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "l.sqlite"


@pytest.fixture
def led(path: Path, key: Ed25519PrivateKey) -> Iterator[Ledger]:
    with Ledger(path, key=key, terminal_id="T1") as ledger:
        yield ledger


# -- the clock anchor ---------------------------------------------------------------------


def test_an_anchor_carries_central_time_forward_by_the_boot_clock() -> None:
    a = ClockAnchor(central_ms=1_790_000_000_000, local_ms=1_790_000_003_000, boot_id="b1",
                    boot_ms=50_000, rtt_ms=40)
    assert a.offset_ms == -3_000
    assert a.carried("b1", 50_000 + 7_250) == 1_790_000_000_000 + 7_250
    assert a.carried("b1", 50_000) == 1_790_000_000_000
    assert a.carried("b2", 60_000) is None
    assert a.carried("b1", 49_999) is None


def test_boot_now_reads_the_boot_clock_that_counts_suspend(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []

    def clock_gettime(clock: int) -> float:
        asked.append(clock)
        return 1234.5678

    monkeypatch.setattr(anchor.time, "clock_gettime", clock_gettime)
    monkeypatch.setattr(anchor.time, "monotonic", lambda: 99.0)
    boot_id, boot_ms = boot_now()
    assert asked == [time.CLOCK_BOOTTIME]
    assert boot_ms == 1_234_567
    assert boot_id == anchor._boot_id()


def test_boot_now_falls_back_to_the_monotonic_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(anchor.time, "CLOCK_BOOTTIME")
    monkeypatch.setattr(anchor.time, "monotonic", lambda: 99.25)
    assert boot_now()[1] == 99_250


def test_the_clock_anchor_round_trips_with_its_round_trip_time(led: Ledger) -> None:
    assert led.clock_anchor() is None
    a = ClockAnchor(1_790_000_000_000, 1_790_000_001_000, "boot-x", 12_345, rtt_ms=37)
    led.set_clock_anchor(a)
    assert led.clock_anchor() == a
    newer = dataclasses.replace(a, central_ms=a.central_ms + 60_000, rtt_ms=5)
    led.set_clock_anchor(newer)
    assert led.clock_anchor() == newer


def test_a_ledger_from_before_the_clock_anchor_reads_as_no_anchor(
        path: Path, key: Ed25519PrivateKey) -> None:
    Ledger(path, key=key, terminal_id="T1").close()
    conn = raw(path)
    conn.execute("DROP TABLE clock_anchor")
    conn.execute("DELETE FROM migrations WHERE name = '0005_clock_anchor'")
    conn.close()
    with Ledger(path) as ro:
        assert ro.clock_anchor() is None


def test_a_clock_anchor_table_it_cannot_read_is_an_error_not_no_anchor(led: Ledger,
                                                                       path: Path) -> None:
    conn = raw(path)
    conn.execute("DROP TABLE clock_anchor")
    conn.execute("CREATE TABLE clock_anchor (id INTEGER PRIMARY KEY, central_ms INTEGER)")
    conn.close()
    with pytest.raises(LedgerWriteError) as err:
        led.clock_anchor()
    assert str(err.value).startswith("cannot read the clock anchor: no such column: ")


# -- schema and migrations ------------------------------------------------------------------


def test_an_older_ledger_gets_the_migrations_it_lacks(path: Path, key: Ed25519PrivateKey) -> None:
    Ledger(path, key=key, terminal_id="T1").close()
    conn = raw(path)
    for table in ("points_snapshot", "points_state", "rider_categories", "riders_state",
                  "clock_anchor", "pocket_balances", "pocket_counters", "pocket_state",
                  "pruned_sums"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute("DELETE FROM migrations WHERE name >= '0003'")
    before = now_ms()
    assert migrate(conn) == ["0003_points", "0004_riders", "0005_clock_anchor",
                             "0006_pockets", "0007_pruned_sums"]
    after = now_ms()
    stamps = dict(conn.execute("SELECT name, applied_at FROM migrations WHERE name >= '0003'"))
    assert sorted(stamps) == ["0003_points", "0004_riders", "0005_clock_anchor",
                              "0006_pockets", "0007_pruned_sums"]
    assert all(before <= ms <= after for ms in stamps.values())
    assert migrate(conn) == []
    conn.close()
    with Ledger(path, key=key, terminal_id="T1") as led:
        assert led.points_state() == (0, "") and led.riders_version() == 0
        assert led.clock_anchor() is None
        assert list(led.pruned_sums()) == []


def test_a_failing_migration_leaves_nothing_behind(path: Path, key: Ed25519PrivateKey) -> None:
    Ledger(path, key=key, terminal_id="T1").close()
    conn = raw(path)
    for table in ("points_snapshot", "points_state", "rider_categories", "riders_state",
                  "clock_anchor"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute("DELETE FROM migrations WHERE name >= '0003'")
    # 0003 creates points_snapshot, then fails on a points_state that is already there
    conn.execute("CREATE TABLE points_state (x)")
    with pytest.raises(sqlite3.OperationalError, match="points_state already exists"):
        migrate(conn)
    assert not conn.in_transaction
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "points_snapshot" not in tables
    assert [r[0] for r in conn.execute("SELECT name FROM migrations ORDER BY name")] == [
        "0001_entries", "0002_side_tables"]
    conn.close()


def test_statements_split_on_semicolons_skip_comments_and_keep_trigger_bodies() -> None:
    sql = """
        -- a comment; with a semicolon
        CREATE TABLE a (x);
        CREATE TRIGGER t BEFORE DELETE ON a
        BEGIN SELECT RAISE(ABORT, 'no; never'); END;
        CREATE TABLE b (y)
    """
    assert _statements(sql) == [
        "CREATE TABLE a (x);",
        "CREATE TRIGGER t BEFORE DELETE ON a\n        BEGIN SELECT RAISE(ABORT, 'no; never'); END;",
        "CREATE TABLE b (y)",
    ]
    assert [name for name, _ in MIGRATIONS] == sorted(name for name, _ in MIGRATIONS)


# -- opening --------------------------------------------------------------------------------


def test_a_new_ledger_starts_at_zero(led: Ledger, key: Ed25519PrivateKey) -> None:
    assert led.head == Head(0, ZERO_HASH, 0)
    assert led.next_mono(0) == 1
    assert led.meta("format") == "1"
    assert led.meta("terminal_id") == "T1"
    assert led.meta("public_key") == pub_hex(key)
    assert led.sync_checkpoint() == "" and led.synced_upto() == 0
    assert led.verify() == VerifyReport(0, 1, 0, ZERO_HASH)


def test_created_ms_is_the_creation_time_in_ms(path: Path, key: Ed25519PrivateKey) -> None:
    before = now_ms()
    with Ledger(path, key=key, terminal_id="T1") as led:
        created = int(led.meta("created_ms"))
    assert before <= created <= now_ms()


def test_a_new_ledger_needs_a_terminal_id(path: Path, key: Ed25519PrivateKey) -> None:
    with pytest.raises(LedgerStateError, match=r"^a new ledger needs a terminal_id$"):
        Ledger(path, key=key)


def test_a_ledger_needs_a_path_or_memory(key: Ed25519PrivateKey) -> None:
    with pytest.raises(LedgerStateError, match=r"^a ledger needs a path, or memory=True$"):
        Ledger(key=key, terminal_id="T1")


def test_the_wrong_key_is_named_in_the_refusal(path: Path, key: Ed25519PrivateKey) -> None:
    Ledger(path, key=key, terminal_id="T1").close()
    other = Ed25519PrivateKey.generate()
    with pytest.raises(LedgerStateError) as err:
        Ledger(path, key=other, terminal_id="T1")
    assert str(err.value) == (f"the key given does not match this ledger (ledger key "
                              f"{pub_hex(key)[:16]}..., given {pub_hex(other)[:16]}...)")
    with pytest.raises(LedgerStateError) as err:
        Ledger(path, key=key, terminal_id="T2")
    assert str(err.value) == "this ledger belongs to terminal 'T1', not 'T2'"
    with Ledger(path, key=key) as same:  # no terminal_id: the ledger's own
        assert same.terminal_id == "T1"


def test_a_ledger_that_lost_its_key_is_refused_clearly(path: Path, key: Ed25519PrivateKey) -> None:
    # one entry: an empty ledger without its key is made again (a first boot cut short)
    with Ledger(path, key=key, terminal_id="T1") as led:
        led.append(kind="tap", card_token="c" * 64, amount=1450, place="R1")
    conn = raw(path)
    conn.execute("DELETE FROM meta WHERE key = 'public_key'")
    conn.close()
    with pytest.raises(LedgerStateError) as err:
        Ledger(path, key=key, terminal_id="T1")
    assert str(err.value) == (f"the key given does not match this ledger (ledger key ?..., "
                              f"given {pub_hex(key)[:16]}...)")


def test_a_file_with_the_ledger_tables_but_no_meta_is_named(path: Path) -> None:
    conn = raw(path)
    # exactly these three names in sqlite_master (no primary key, so no autoindex either)
    conn.execute("CREATE TABLE entries (seq INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    conn.execute("CREATE TABLE migrations (name TEXT, applied_at INTEGER)")
    assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master")} == {
        "entries", "meta", "migrations"}
    conn.close()
    with pytest.raises(LedgerCorruptError, match=r"^ledger meta has no 'terminal_id'$"):
        Ledger(path)


def test_an_open_failure_names_the_file(path: Path, key: Ed25519PrivateKey) -> None:
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(LedgerCorruptError) as err:
        Ledger(path, key=key, terminal_id="T1")
    assert str(err.value) == f"cannot open ledger {path}: file is not a database"


def test_an_open_failure_of_a_memory_ledger_says_memory(key: Ed25519PrivateKey) -> None:
    with pytest.raises(LedgerWriteError) as err:
        Ledger(memory=True, key=key, terminal_id="M", max_pages=1)
    assert str(err.value) == "cannot open ledger :memory:: database or disk is full"


def test_a_memory_ledger_writes_no_file(tmp_path: Path, key: Ed25519PrivateKey,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with Ledger(memory=True, key=key, terminal_id="M") as one, \
            Ledger(memory=True, key=Ed25519PrivateKey.generate(), terminal_id="N") as two:
        fill(one, 1)
        assert two.head.seq == 0
    assert list(tmp_path.iterdir()) == []


def test_the_folder_of_a_new_ledger_is_made(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "var" / "lib" / "localpay" / "l.sqlite"
    with Ledger(path, key=key, terminal_id="T1") as led:
        fill(led, 1)
    assert path.is_file()


def test_a_folder_that_cannot_be_made_is_a_write_error(tmp_path: Path,
                                                       key: Ed25519PrivateKey) -> None:
    (tmp_path / "plain-file").write_text("x")
    path = tmp_path / "plain-file" / "l.sqlite"
    with pytest.raises(LedgerWriteError, match=r"^cannot create folder for ledger .*l\.sqlite: "):
        Ledger(path, key=key, terminal_id="T1")


def test_a_ledger_can_be_used_from_another_thread(path: Path, key: Ed25519PrivateKey) -> None:
    """The sync client and the kiosk read the terminal's ledger from their own threads."""
    results: list[Any] = []

    def use(fn: Callable[[], Any]) -> None:
        t = threading.Thread(target=lambda: results.append(fn()))
        t.start()
        t.join()

    with Ledger(path, key=key, terminal_id="T1") as led:
        use(lambda: fill(led, 2))
        assert led.head.seq == 2
    with Ledger(path) as ro:
        use(lambda: ro.verify().entries)
    with Ledger(memory=True, key=key, terminal_id="M") as mem:
        use(lambda: mem.card_state("card-a").offline_amount)
    assert results == [None, 2, 0]


@pytest.mark.parametrize(("bad_seq", "opens"), [(7, False), (6, True)])
def test_opening_checks_exactly_the_last_64_entries(path: Path, key: Ed25519PrivateKey,
                                                    bad_seq: int, opens: bool) -> None:
    with Ledger(path, key=key, terminal_id="T1") as led:
        fill(led, 70)
    conn = drop_guards(path)
    conn.execute("UPDATE entries SET amount = 1 WHERE seq = ?", (bad_seq,))
    conn.close()
    if not opens:
        with pytest.raises(LedgerCorruptError) as err:
            Ledger(path, key=key, terminal_id="T1")
        assert err.value.seq == bad_seq
        return
    with Ledger(path, key=key, terminal_id="T1") as led:  # 7..70 are intact
        with pytest.raises(LedgerCorruptError) as err:
            led.verify()
        assert err.value.seq == bad_seq


def test_a_read_only_ledger_reports_no_exposure(path: Path, key: Ed25519PrivateKey) -> None:
    with Ledger(path, key=key, terminal_id="T1") as led:
        fill(led, 2)
    with Ledger(path) as ro:
        assert ro.exposure == 0


# -- appending ------------------------------------------------------------------------------


def test_an_entry_defaults_to_no_card_amount_reference_or_place(led: Ledger) -> None:
    before = now_ms()
    e = led.append("config_change")
    after = now_ms()
    f = e.fields
    assert (f.card_token, f.amount, f.ref_seq, f.place, f.detail) == ("", 0, 0, "", "{}")
    assert before <= f.wall_ms <= after
    assert f.mono == f.wall_ms  # the first entry: nothing earlier to stay above


def test_append_refusals_say_why(path: Path, key: Ed25519PrivateKey, led: Ledger) -> None:
    with pytest.raises(LedgerStateError, match=r"^amount must be integer won, not float$"):
        led.append("payment", amount=1.5)  # type: ignore[arg-type]
    with Ledger(path) as ro, \
            pytest.raises(LedgerStateError, match=r"^this ledger was opened read-only$"):
        ro.append("tap", amount=1)


def test_the_first_entry_may_be_stamped_1(led: Ledger) -> None:
    e = led.append("tap", amount=1, wall_ms=1)
    assert e.fields.mono == 1
    assert led.verify() == VerifyReport(1, 1, 1, e.entry_hash)


def test_as_dict_shows_every_signed_field(led: Ledger, key: Ed25519PrivateKey) -> None:
    first = led.append("tap", card_token="card-a", amount=1500, place="85", wall_ms=2_000)
    e = led.append("refund", card_token="card-a", amount=700, ref_seq=1, place="85",
                   detail={"why": "double"}, wall_ms=1_000)
    fields = EntryFields(2, "refund", "T1", "card-a", 700, 1, "85", 1_000, 2_001,
                         '{"why":"double"}', first.entry_hash)
    data = encoding.encode(fields)
    assert e.as_dict() == {
        "seq": 2, "kind": "refund", "terminal_id": "T1", "card_token": "card-a",
        "amount": 700, "ref_seq": 1, "place": "85", "wall_ms": 1_000, "mono": 2_001,
        "detail": '{"why":"double"}', "prev_hash": first.entry_hash.hex(),
        "entry_hash": hashlib.sha256(data).hexdigest(), "signature": key.sign(data).hex(),
    }


def test_an_entry_without_a_card_touches_no_counter(led: Ledger) -> None:
    led.append("payment", amount=1500, offline_delta=1500, tap=True)
    assert led.card_state("") == led.card_state("never-seen")
    assert led.card_state("").offline_amount == 0 and led.last_amount("") is None
    assert led.exposure == 0


def test_a_tap_without_an_amount_moves_only_the_last_tap(led: Ledger) -> None:
    led.append("payment", card_token="x", amount=1500, offline_delta=1500)
    e = led.append("tap", card_token="x", wall_ms=5_000, tap=True)
    state = led.card_state("x")
    assert (state.offline_amount, state.offline_count) == (1500, 1)
    assert (state.last_tap_mono, state.last_tap_seq) == (e.fields.mono, 2)
    assert led.last_amount("x") == 1500
    assert led.exposure == 1500


def test_a_payment_without_a_tap_leaves_the_last_tap_at_zero(led: Ledger) -> None:
    led.append("payment", card_token="x", amount=1, offline_delta=1)
    state = led.card_state("x")
    assert state == dataclasses.replace(state, offline_amount=1, offline_count=1,
                                        last_tap_mono=0, last_tap_seq=0)
    assert (state.offline_amount, state.offline_count, state.last_tap_mono,
            state.last_tap_seq) == (1, 1, 0, 0)
    assert led.last_amount("x") == 1


def test_exposure_is_the_sum_of_the_card_counters(path: Path, key: Ed25519PrivateKey) -> None:
    """Found by the mutation run: a refund larger than what its card still had offline (its
    payment already synced) took the whole refund off the terminal-wide exposure, while the
    card's counter stops at 0; the terminal then let more offline won through than its cap
    until it restarted."""
    with Ledger(path, key=key, terminal_id="T1") as led:
        led.append("payment", card_token="a", amount=5_000, offline_delta=5_000)
        led.append("payment", card_token="b", amount=1_000, offline_delta=1_000)
        led.mark_synced(2, "cp-2")
        led.append("payment", card_token="a", amount=5_000, offline_delta=5_000)
        led.append("refund", card_token="b", amount=1_000, ref_seq=2, offline_delta=-1_000)
        led.append("refund", card_token="c", amount=300, offline_delta=-300)  # no counter yet
        led.append("refund", card_token="a", amount=2_000, ref_seq=3, offline_delta=-2_000)
        per_card = [led.card_state(t).offline_amount for t in ("a", "b", "c")]
        assert per_card == [5_000 - 2_000, 0, 0]
        assert led.exposure == sum(per_card) == 3_000
    with Ledger(path, key=key, terminal_id="T1") as again:
        assert again.exposure == 3_000


def test_a_failed_append_records_nothing_and_says_why(led: Ledger) -> None:
    led.append("payment", card_token="q", amount=5, nonce=("n1", 99))
    with pytest.raises(LedgerError) as err:
        led.append("payment", card_token="q", amount=5, nonce=("n1", 99))
    assert type(err.value) is LedgerError
    assert str(err.value) == "entry 2 (payment) not recorded: UNIQUE constraint failed: " \
                             "qr_nonces.nonce"
    assert not led._conn.in_transaction
    assert led.head.seq == 1 and led.count() == 1
    assert led.append("payment", card_token="q", amount=5, nonce=("n2", 99)).seq == 2
    assert led.verify().entries == 2


# -- reading --------------------------------------------------------------------------------


def test_card_details_are_that_kind_of_that_card_in_order(led: Ledger) -> None:
    led.append("incentive", card_token="x", detail={"n": 1})
    led.append("incentive", card_token="y", detail={"n": 9})
    led.append("tap", card_token="x", detail={"n": 5})
    led.append("incentive", card_token="x", detail={"n": 2, "a": "b"})
    assert led.card_details("x", "incentive") == ['{"n":1}', '{"a":"b","n":2}']
    assert led.card_details("z", "incentive") == []


def test_entries_between_bounds_and_across_batches(led: Ledger) -> None:
    fill(led, 5)
    assert [e.seq for e in led.entries(2, 3)] == [2, 3]
    assert [e.seq for e in led.entries(4)] == [4, 5]
    assert [e.seq for e in led.entries(batch=2)] == [1, 2, 3, 4, 5]


def test_verify_report_summary() -> None:
    assert VerifyReport(0, 1, 0, ZERO_HASH).summary() == "ledger intact: no entries"
    head = bytes(range(32))
    assert VerifyReport(3, 5, 7, head).summary() == (
        "ledger intact: 3 entries, seq 5..7, head 0001020304050607")


# -- verification ---------------------------------------------------------------------------


def test_verify_from_a_later_entry_links_to_the_one_before(led: Ledger) -> None:
    fill(led, 6)
    head = led.head.entry_hash
    assert led.verify(start=2) == VerifyReport(5, 2, 6, head)
    assert led.verify(start=3) == VerifyReport(4, 3, 6, head)
    assert led.verify(start=6) == VerifyReport(1, 6, 6, head)


def test_verify_after_pruning_everything_reports_the_anchor(led: Ledger) -> None:
    fill(led, 3)
    head = led.head
    led.mark_synced(3, "cp-3")
    assert led.prune(3, "cp-3") == 3
    assert led.verify() == VerifyReport(0, 4, 3, head.entry_hash)


def test_entries_gone_without_a_prune_record_are_found(path: Path, led: Ledger) -> None:
    fill(led, 5)
    conn = drop_guards(path)
    conn.execute("DELETE FROM entries WHERE seq <= 2")
    conn.close()
    with pytest.raises(LedgerCorruptError) as err:
        led.verify()
    assert str(err.value) == "entry 2 is missing and no prune record accounts for it"
    assert err.value.seq == 2


def test_a_broken_link_names_both_entries(path: Path, led: Ledger) -> None:
    fill(led, 6)
    conn = drop_guards(path)
    conn.execute("UPDATE entries SET prev_hash = zeroblob(32) WHERE seq = 6")
    conn.close()
    with pytest.raises(LedgerCorruptError, match=r"^entry 6 does not link to entry 5$"):
        led.verify()


def test_an_entry_that_cannot_be_encoded_is_corrupt(path: Path, led: Ledger) -> None:
    fill(led, 4)
    conn = drop_guards(path)
    conn.execute("UPDATE entries SET kind = 'bogus' WHERE seq = 3")
    conn.close()
    with pytest.raises(LedgerCorruptError) as err:
        led.verify()
    assert str(err.value).startswith("entry 3 cannot be encoded: unknown entry kind 'bogus'")
    assert err.value.seq == 3


def test_an_entry_of_another_terminal_is_corrupt(path: Path, key: Ed25519PrivateKey,
                                                 led: Ledger) -> None:
    fill(led, 2)
    head = led.head
    write_signed(path, key, EntryFields(3, "tap", "T-OTHER", "card-a", 1500, 0, "85",
                                        1_000_002, head.mono + 1, "{}", head.entry_hash))
    with Ledger(path) as ro, pytest.raises(LedgerCorruptError) as err:
        ro.verify()
    assert str(err.value) == "entry 3 names another terminal"
    assert err.value.seq == 3


def test_a_first_entry_stamped_below_zero_goes_back_in_time(path: Path, led: Ledger) -> None:
    write_row(path, EntryFields(1, "tap", "T1", "", 0, 0, "", 0, -1, "{}", ZERO_HASH),
              bytes(32), bytes(64))
    with Ledger(path) as ro, pytest.raises(LedgerCorruptError) as err:
        ro.verify()
    assert str(err.value) == "entry 1 goes back in time (mono)"
    assert err.value.seq == 1


# -- sync state, pruning, side tables -------------------------------------------------------


def test_mark_synced_may_repeat_but_never_go_back(led: Ledger) -> None:
    fill(led, 3)
    led.mark_synced(2, "cp-2")
    led.mark_synced(2, "cp-2b")  # the same round answered again
    assert (led.synced_upto(), led.sync_checkpoint()) == (2, "cp-2b")
    with pytest.raises(LedgerStateError, match=r"^cannot mark 1 synced \(head 3, synced 2\)$"):
        led.mark_synced(1, "cp-1")
    with pytest.raises(LedgerStateError, match=r"^cannot mark 4 synced \(head 3, synced 2\)$"):
        led.mark_synced(4, "cp-4")


def test_prune_records_its_anchor_and_time(path: Path, led: Ledger) -> None:
    fill(led, 4)
    third = led.entry(3)
    assert third is not None
    led.mark_synced(4, "cp-4")
    before = now_ms()
    assert led.prune(3, "cp-4") == 3
    after = now_ms()
    conn = raw(path)
    row = conn.execute("SELECT upto_seq, anchor_hash, anchor_mono, checkpoint, pruned_at "
                       "FROM prunes").fetchone()
    conn.close()
    assert row[:4] == (3, third.entry_hash, third.fields.mono, "cp-4")
    assert before <= row[4] <= after
    with pytest.raises(LedgerStateError, match=r"^entry 2 is not in the ledger$"):
        led.prune(2, "cp-4")


def test_balances_and_points_are_stamped_with_the_sync_time(path: Path, led: Ledger) -> None:
    before = now_ms()
    led.set_balances({"x": 10_000}, as_of_seq=7)
    led.set_points_snapshot({"x": ("2026-11-23", 40, 0b101, "adult")}, 3, '{"r":1}')
    after = now_ms()
    conn = raw(path)
    balance = conn.execute("SELECT balance, as_of_seq, synced_at FROM balances").fetchone()
    conn.close()
    assert balance[:2] == (10_000, 7) and before <= balance[2] <= after
    points = led.points_snapshot("x")
    assert points is not None
    assert (points.week_start, points.points_week, points.days_mask, points.rider) == (
        "2026-11-23", 40, 0b101, "adult")
    assert before <= points.synced_at <= after
    assert led.points_state() == (3, '{"r":1}')


def test_rider_profiles_take_the_same_version_again_but_not_an_older(led: Ledger) -> None:
    led.set_riders({"x": "youth"}, 3)
    led.set_riders({"x": "child"}, 3)
    assert led.rider_of("x") == "child" and led.riders_version() == 3
    with pytest.raises(LedgerStateError, match=r"^rider profiles version 2 is older than 3$"):
        led.set_riders({"x": "adult"}, 2)
    assert led.rider_of("x") == "child"


def test_a_deny_list_version_must_be_newer(led: Ledger) -> None:
    led.apply_deny_delta(5, {"bad": "stolen"})
    with pytest.raises(LedgerStateError, match=r"^deny list version 5 is not newer than 5$"):
        led.apply_deny_delta(5, {"other": "lost"})
    assert led.card_state("other").denied is None


# -- errors of the side tables: each names what was not done --------------------------------

Call = Callable[[Ledger], object]


def _prepare_sync(led: Ledger) -> None:
    fill(led, 1)


def _prepare_prune(led: Ledger) -> None:
    fill(led, 1)
    led.mark_synced(1, "cp-1")


@pytest.mark.parametrize(
    ("table", "prepare", "call", "message"),
    [
        ("deny_list", None, lambda led: led.card_state("x"),
         "cannot read card state: no such table: deny_list"),
        ("entries", None, lambda led: led.card_details("x", "incentive"),
         "cannot read the card's entries: no such table: entries"),
        ("entries", _prepare_sync, lambda led: list(led.entries()),
         "cannot read entries from 1: no such table: entries"),
        ("entries", _prepare_sync, lambda led: list(led.kind_amounts()),
         "cannot read entries: no such table: entries"),
        ("points_snapshot", None, lambda led: led.points_snapshot("x"),
         "cannot read points: no such table: points_snapshot"),
        ("rider_categories", None, lambda led: led.rider_of("x"),
         "cannot read the rider category: no such table: rider_categories"),
        ("deny_list", None, lambda led: led.apply_deny_delta(1, {"x": "stolen"}),
         "deny list not updated: no such table: deny_list"),
        ("balances", None, lambda led: led.set_balances({"x": 1}, 0),
         "balances not stored: no such table: balances"),
        ("card_counters", _prepare_sync, lambda led: led.mark_synced(1, "cp-1"),
         "sync state not stored: no such table: card_counters"),
        ("prunes", _prepare_prune, lambda led: led.prune(1, "cp-1"),
         "prune not done: no such table: prunes"),
        ("pruned_sums", _prepare_prune, lambda led: led.prune(1, "cp-1"),
         "prune not done: no such table: pruned_sums"),
        ("points_state", None,
         lambda led: led.set_points_snapshot({"x": ("2026-11-23", 1, 1, "")}, 1, ""),
         "points not stored: no such table: points_state"),
        ("rider_categories", None, lambda led: led.set_riders({"x": "youth"}, 1),
         "rider categories not stored: no such table: rider_categories"),
        ("clock_anchor", None, lambda led: led.set_clock_anchor(ClockAnchor(1, 1, "b", 1)),
         "clock anchor not stored: no such table: clock_anchor"),
    ],
)
def test_a_missing_table_is_reported_with_what_failed(
        path: Path, led: Ledger, table: str, prepare: Callable[[Ledger], None] | None,
        call: Call, message: str) -> None:
    if prepare is not None:
        prepare(led)
    conn = raw(path)
    conn.execute(f"DROP TABLE {table}")
    conn.close()
    with pytest.raises(LedgerWriteError) as err:
        call(led)
    assert str(err.value) == message
    assert not led._conn.in_transaction


def test_a_failed_side_table_write_is_rolled_back(path: Path, led: Ledger) -> None:
    fill(led, 2)
    conn = raw(path)
    conn.execute("DROP TABLE card_counters")
    conn.close()
    with pytest.raises(LedgerWriteError, match=r"^sync state not stored: no such table"):
        led.mark_synced(2, "cp-2")
    assert (led.synced_upto(), led.sync_checkpoint()) == (0, "")
    conn = raw(path)
    conn.execute("DROP TABLE points_state")
    conn.close()
    with pytest.raises(LedgerWriteError, match=r"^points not stored: no such table"):
        led.set_points_snapshot({"x": ("2026-11-23", 1, 1, "")}, 1, "")
    assert led.points_snapshot("x") is None


# -- turning SQLite's errors into the ledger's ------------------------------------------------


def _sqlite_error(cls: type[sqlite3.Error], message: str, name: str | None) -> sqlite3.Error:
    err = cls(message)
    if name is not None:
        err.sqlite_errorname = name  # type: ignore[attr-defined]
    return err


@pytest.mark.parametrize(
    ("cls", "name", "message", "expected"),
    [
        # the error's SQLite name decides first, whatever class sqlite3 gave it
        (sqlite3.DatabaseError, "SQLITE_FULL", "database or disk is full", LedgerWriteError),
        (sqlite3.DatabaseError, "SQLITE_IOERR_WRITE", "disk I/O error", LedgerWriteError),
        (sqlite3.DatabaseError, "SQLITE_READONLY", "attempt to write a readonly database",
         LedgerWriteError),
        (sqlite3.DatabaseError, "SQLITE_CANTOPEN", "unable to open database file",
         LedgerWriteError),
        (sqlite3.OperationalError, "SQLITE_CORRUPT", "database disk image is malformed",
         LedgerCorruptError),
        (sqlite3.OperationalError, "SQLITE_NOTADB", "file is not a database",
         LedgerCorruptError),
        # then the class: a database error that is not operational nor a constraint
        (sqlite3.DatabaseError, None, "database disk image is malformed", LedgerCorruptError),
        (sqlite3.OperationalError, "SQLITE_BUSY", "database is locked", LedgerWriteError),
        (sqlite3.OperationalError, None, "no such table: x", LedgerWriteError),
        (sqlite3.IntegrityError, "SQLITE_CONSTRAINT_TRIGGER",
         "ledger entries are append-only: UPDATE refused", LedgerStateError),
        (sqlite3.IntegrityError, "SQLITE_CONSTRAINT_UNIQUE",
         "UNIQUE constraint failed: qr_nonces.nonce", LedgerError),
        (sqlite3.InterfaceError, None, "bad parameter or other API misuse", LedgerError),
    ],
)
def test_sqlite_errors_become_ledger_errors(cls: type[sqlite3.Error], name: str | None,
                                            message: str, expected: type[LedgerError]) -> None:
    wrapped = _wrap(_sqlite_error(cls, message, name), "what failed")
    assert type(wrapped) is expected
    assert str(wrapped) == f"what failed: {message}"


def test_writing_a_read_only_ledger_is_a_write_error(path: Path, key: Ed25519PrivateKey) -> None:
    Ledger(path, key=key, terminal_id="T1").close()
    with Ledger(path) as ro, pytest.raises(LedgerWriteError) as err:
        ro.set_balances({"x": 1}, 0)
    assert str(err.value) == "balances not stored: attempt to write a readonly database"


def _ledger_file_with_meta(path: Path, rows: list[tuple[str, str]]) -> None:
    """A ledger file as a first boot cut short leaves it: the schema, and these meta rows."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        migrate(conn)
        conn.executemany("INSERT INTO meta VALUES (?, ?)", rows)
    finally:
        conn.close()


def test_a_first_boot_cut_while_meta_was_written_boots_next_time(tmp_path: Path) -> None:
    """The power-cut soak found it (seed 2106104621, first-boot cut 28): each meta row was
    committed alone, a cut after the first two left a ledger without its key, and every
    later boot was refused with "the key given does not match this ledger". A ledger that
    holds nothing is made again; one that holds entries is still refused."""
    path = tmp_path / "ledger.sqlite"
    _ledger_file_with_meta(path, [("format", "1"), ("terminal_id", "BUS-7")])
    key = Ed25519PrivateKey.generate()
    with Ledger(path, key=key, terminal_id="BUS-7") as led:
        assert led.meta("public_key") == key.public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw).hex()
        led.append(kind="tap", card_token="c" * 64, amount=1450, place="R7")
    with Ledger(path, key=key, terminal_id="BUS-7") as led:  # and it stays booted
        assert led.head.seq == 1

    # with entries in it, a meta without a key is not silently made again
    other = tmp_path / "other.sqlite"
    with Ledger(other, key=Ed25519PrivateKey.generate(), terminal_id="BUS-8") as led:
        led.append(kind="tap", card_token="d" * 64, amount=1450, place="R8")
    conn = sqlite3.connect(str(other), isolation_level=None)
    conn.execute("DELETE FROM meta WHERE key = 'public_key'")
    conn.close()
    with pytest.raises(LedgerStateError, match="does not match this ledger"):
        Ledger(other, key=Ed25519PrivateKey.generate(), terminal_id="BUS-8")
    # nor is one whose entries were all pruned after their sync: the prune holds its head
    pruned = tmp_path / "pruned.sqlite"
    _ledger_file_with_meta(pruned, [("format", "1"), ("terminal_id", "BUS-9")])
    conn = sqlite3.connect(str(pruned), isolation_level=None)
    conn.execute("INSERT INTO prunes (upto_seq, anchor_hash, anchor_mono, checkpoint, "
                 "pruned_at) VALUES (40, ?, 9, 'note', 1)", (bytes(32),))
    conn.close()
    with pytest.raises(LedgerStateError, match="does not match this ledger"):
        Ledger(pruned, key=Ed25519PrivateKey.generate(), terminal_id="BUS-9")


def test_a_new_ledgers_meta_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    """The four meta rows go in one transaction: a failure at the third (a trigger stands
    in for the power cut, which a test cannot make at that exact write) leaves none."""
    path = tmp_path / "ledger.sqlite"
    conn = sqlite3.connect(str(path), isolation_level=None)
    migrate(conn)
    conn.execute("CREATE TRIGGER cut BEFORE INSERT ON meta WHEN NEW.key = 'public_key' "
                 "BEGIN SELECT RAISE(ABORT, 'power cut'); END")
    conn.close()
    with pytest.raises(LedgerError, match="power cut"):
        Ledger(path, key=Ed25519PrivateKey.generate(), terminal_id="BUS-7")
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        assert conn.execute("SELECT key FROM meta").fetchall() == []
    finally:
        conn.close()


def test_kind_amounts_are_every_entry_held_in_order(led: Ledger) -> None:
    """What a day's totals count: each entry's wall time, kind and amount, read apart from
    the entries; after a prune, only the entries still held."""
    assert list(led.kind_amounts()) == []
    for i, (kind, amount) in enumerate([("tap", 1500), ("payment", 8000), ("tap", 0),
                                        ("refund", 3000)]):
        led.append(kind, card_token="card-a", amount=amount, place="85",
                   wall_ms=2_000_000 - 7 * i, offline_delta=0, tap=kind == "tap",
                   ref_seq=2 if kind == "refund" else 0)
    expected = [(e.fields.wall_ms, e.kind, e.amount) for e in led.entries()]
    assert expected == [(2_000_000, "tap", 1500), (1_999_993, "payment", 8000),
                        (1_999_986, "tap", 0), (1_999_979, "refund", 3000)]
    assert list(led.kind_amounts()) == expected
    led.mark_synced(2, "cp-2")
    led.prune(2, "cp-2")
    assert list(led.kind_amounts()) == expected[2:]


def test_pruning_keeps_what_it_removed_summed_by_quarter_hour_and_kind(led: Ledger) -> None:
    """A day's totals stay whole after its entries are pruned: what a prune removes is
    summed by quarter hour of wall time and kind, in the prune's own transaction, and a later
    prune adds to the same sums. Held entries and sums together are every entry ever held."""
    q = QUARTER_MS
    written = [("tap", 1500, 5 * q), ("tap", 1250, 5 * q + q - 1), ("payment", 8000, 5 * q + 7),
               ("tap", 1500, 6 * q), ("refund", 3000, 6 * q + 1), ("tap", 1500, 5 * q + 9),
               ("payment", 2000, 6 * q + 2), ("tap", 900, 7 * q)]
    for kind, amount, wall in written:
        led.append(kind, card_token="card-a", amount=amount, place="85", wall_ms=wall,
                   offline_delta=0, tap=kind == "tap", ref_seq=3 if kind == "refund" else 0)
    assert list(led.pruned_sums()) == []
    led.mark_synced(8, "cp-8")

    def expected(upto: int) -> list[tuple[int, str, int, int]]:
        sums: dict[tuple[int, str], list[int]] = {}
        for kind, amount, wall in written[:upto]:
            slot = sums.setdefault((wall // q, kind), [0, 0])
            slot[0] += 1
            slot[1] += amount
        return sorted((quarter, kind, n, a) for (quarter, kind), (n, a) in sums.items())

    assert led.prune(3, "cp-8") == 3
    assert list(led.pruned_sums()) == expected(3) == [(5, "payment", 1, 8000),
                                                       (5, "tap", 2, 2750)]
    assert led.prune(7, "cp-8") == 4
    assert list(led.pruned_sums()) == expected(7) == [
        (5, "payment", 1, 8000), (5, "tap", 3, 4250), (6, "payment", 1, 2000),
        (6, "refund", 1, 3000), (6, "tap", 1, 1500)]
    assert list(led.kind_amounts()) == [(7 * q, "tap", 900)]


def test_pruned_sums_of_a_ledger_from_before_them(path: Path, led: Ledger) -> None:
    """A read-only ledger from before migration 0007 has no sums: none, not an error; a
    table of another shape is reported with what failed."""
    conn = raw(path)
    conn.execute("DROP TABLE pruned_sums")
    conn.close()
    assert list(led.pruned_sums()) == []
    conn = raw(path)
    conn.execute("CREATE TABLE pruned_sums (x INTEGER)")
    conn.close()
    with pytest.raises(LedgerWriteError,
                       match=r"^cannot read the pruned sums: no such column: quarter$"):
        list(led.pruned_sums())
