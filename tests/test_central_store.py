"""The central service's logic on both stores (SQLite and a real PostgreSQL): ingest, proofs,
idempotence, gaps, forks, tampering, deny list, balances and request authentication."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.rules import default_hooks
from central.service import CentralLog
from central.store import Rows, open_store
from localpay.errors import ChainMismatchError, SyncAuthError
from offline_ledger.encoding import EntryFields, encode
from sync import merkle
from sync.checkpoint import Checkpoint, NoteSigner
from sync.protocol import WireEntry, decode_entry, request_message
from tests.pg_fixtures import pg_cluster, signed_entries, store_url  # noqa: F401


@pytest.fixture
def log(store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    svc = CentralLog(open_store(store_url), NoteSigner("test.example/log",
                                                       Ed25519PrivateKey.generate()),
                     hooks=default_hooks())
    yield svc
    svc.store.close()


def _pub(key: Ed25519PrivateKey) -> bytes:
    from firmware_cfg.keys import public_hex

    return bytes.fromhex(public_hex(key))


def _terminal(log: CentralLog, tid: str = "T1") -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    log.add_terminal(tid, _pub(key))
    return key


def _all_leaves(log: CentralLog) -> list[bytes]:
    with log.store.tx(write=False) as tx:
        return [merkle.leaf_hash(bytes(r[0])) for r in
                tx.all("SELECT data FROM entries ORDER BY log_index")]


def test_ingest_proves_every_batch_and_log_is_consistent(log: CentralLog) -> None:
    k1, k2 = _terminal(log, "T1"), _terminal(log, "T2")
    a = signed_entries(k1, "T1", 300)
    b = signed_entries(k2, "T2", 170)
    sizes = []
    for chunk, tid in ((a[:100], "T1"), (b[:70], "T2"), (a[100:300], "T1"), (b[70:], "T2")):
        r = log.ingest(tid, chunk)
        cp = Checkpoint.verify(r.checkpoint, log.signer.verifier)
        merkle.verify_inclusion(merkle.leaf_hash(chunk[-1].data), r.log_index, cp.size,
                                r.proof, cp.root)
        assert r.accepted == len(chunk)
        sizes.append((cp.size, cp.root))
    leaves = _all_leaves(log)
    assert len(leaves) == 470 and merkle.root(leaves) == sizes[-1][1]
    for m, root_m in sizes:
        for n, root_n in sizes:
            if m <= n:
                merkle.verify_consistency(m, n, root_m, root_n, log.consistency_proof(m, n))


def test_same_batch_twice_is_taken_once_and_answered_the_same(log: CentralLog) -> None:
    key = _terminal(log)
    e = signed_entries(key, "T1", 50)
    first = log.ingest("T1", e[:30])
    log.ingest("T1", e[30:])
    again = log.ingest("T1", e[:30])
    assert (again.checkpoint, again.log_index, again.proof) == (
        first.checkpoint, first.log_index, first.proof)
    assert again.accepted == 0
    overlap = log.ingest("T1", e[20:50])  # all held already, later batch's answer
    assert overlap.accepted == 0 and log.size() == 50
    more = signed_entries(key, "T1", 10, seq0=51, prev=e[-1].entry_hash, wall0=e[-1].wall_ms + 1)
    r = log.ingest("T1", e[40:] + more)  # overlap then new: only the new ones go in
    assert r.accepted == 10 and log.size() == 60


def test_gap_fork_and_tampering_are_refused_and_nothing_is_stored(log: CentralLog) -> None:
    key = _terminal(log)
    e = signed_entries(key, "T1", 40)
    log.ingest("T1", e[:10])
    with pytest.raises(ChainMismatchError) as gap:
        log.ingest("T1", e[15:20])
    assert gap.value.seq == 11
    forked = signed_entries(key, "T1", 5, seq0=11, prev=b"\x01" * 32)
    with pytest.raises(ChainMismatchError) as fork:
        log.ingest("T1", forked)
    assert fork.value.seq == 11
    rewritten = signed_entries(key, "T1", 10, wall0=1)
    with pytest.raises(ChainMismatchError) as rw:
        log.ingest("T1", rewritten)
    assert rw.value.seq == 1
    # A changed amount, signature kept: refused at 14.
    bad = list(e[10:20])
    bad[3] = _reamount(bad[3], 1)
    with pytest.raises(ChainMismatchError) as tamper:
        log.ingest("T1", bad)
    assert tamper.value.seq == 14
    other = Ed25519PrivateKey.generate()
    resigned = signed_entries(other, "T1", 10, seq0=11, prev=e[9].entry_hash)
    with pytest.raises(ChainMismatchError) as forged:
        log.ingest("T1", resigned)
    assert forged.value.seq == 11
    assert log.size() == 10
    log.ingest("T1", e[10:])
    assert log.size() == 40


def _reamount(w: WireEntry, amount: int) -> WireEntry:
    f = EntryFields(w.seq, w.kind, w.terminal_id, w.card_token, amount, w.ref_seq, w.place,
                    w.wall_ms, w.mono, w.detail, w.prev_hash)
    return decode_entry(encode(f), w.signature)


def test_anchor_policy_names_the_same_first_bad_entry(log: CentralLog) -> None:
    log.policy = "anchor"
    key = _terminal(log)
    e = signed_entries(key, "T1", 30)
    bad = list(e)
    # Entry 17 re-encoded with another amount, signature kept: the link from 18 breaks too.
    bad[16] = _reamount(bad[16], 1)
    with pytest.raises(ChainMismatchError) as err:
        log.ingest("T1", bad)
    assert err.value.seq == 17
    assert log.ingest("T1", e).accepted == 30


def test_request_authentication(log: CentralLog) -> None:
    import time

    key = _terminal(log)
    now = int(time.time() * 1000)
    nonce = "ab" * 16
    msg = request_message("GET", "/v1/deny?since=0", now, nonce, b"")
    log.authenticate("T1", now, nonce, key.sign(msg), msg)
    with pytest.raises(SyncAuthError, match="replayed"):
        log.authenticate("T1", now, nonce, key.sign(msg), msg)
    with pytest.raises(SyncAuthError, match="unknown terminal"):
        log.authenticate("T9", now, "cd" * 16, key.sign(msg), msg)
    other = Ed25519PrivateKey.generate()
    msg2 = request_message("GET", "/v1/deny?since=0", now, "ef" * 16, b"")
    with pytest.raises(SyncAuthError, match="does not verify"):
        log.authenticate("T1", now, "ef" * 16, other.sign(msg2), msg2)
    old = now - 10 * 60_000
    msg3 = request_message("GET", "/v1/deny?since=0", old, "12" * 16, b"")
    with pytest.raises(SyncAuthError, match="stale"):
        log.authenticate("T1", old, "12" * 16, key.sign(msg3), msg3)
    with pytest.raises(SyncAuthError, match="unknown terminal"):
        log.ingest("T9", signed_entries(key, "T9", 3))
    assert log.size() == 0


def test_deny_list_deltas(log: CentralLog) -> None:
    v1 = log.deny("a", "lost")
    log.deny("b", "stolen")
    log.deny("a", "found", remove=True)
    assert log.deny_delta(0) == {"version": 3, "add": {"b": "stolen"}, "remove": ["a"]}
    assert log.deny_delta(v1)["remove"] == ["a"]
    assert log.deny_delta(3) == {"version": 3, "add": {}, "remove": []}


def test_overdraft_across_terminals_is_accepted_recorded_and_denied(log: CentralLog) -> None:
    k1, k2 = _terminal(log, "T1"), _terminal(log, "T2")
    card = "c" * 64
    log.set_balances({card: 5000})
    log.ingest("T1", signed_entries(k1, "T1", 2, cards=[card], amount=2000, kind="payment",
                                    place="M1"))
    assert log.deny_delta(0)["add"] == {}
    r = log.ingest("T2", signed_entries(k2, "T2", 2, cards=[card], amount=2000,
                                        kind="payment", place="M2"))
    assert r.accepted == 2
    assert log.deny_delta(0)["add"] == {card: "overdraft"}
    assert log.balances_delta(0)["balances"][card] == -3000
    with log.store.tx(write=False) as tx:
        rows = tx.all("SELECT terminal_id, seq, balance_after FROM overdrafts ORDER BY log_index")
    assert rows == [("T2", 1, -1000), ("T2", 2, -3000)]


def test_a_new_terminal_chain_must_start_from_32_zero_bytes(log: CentralLog) -> None:
    key = _terminal(log)
    for start in (b"\x01" + bytes(31), bytes(31) + b"\x01", b"\xff" * 32):
        with pytest.raises(ChainMismatchError) as err:
            log.ingest("T1", signed_entries(key, "T1", 3, prev=start))
        assert err.value.seq == 1
    assert log.size() == 0
    first = signed_entries(key, "T1", 3, prev=b"\x00" * 32)
    assert first[0].prev_hash == b"\x00" * 32
    assert log.ingest("T1", first).accepted == 3 and log.size() == 3


def test_store_survives_reopen(store_url: str, tmp_path: Path) -> None:  # noqa: F811
    signer = NoteSigner("test.example/log", Ed25519PrivateKey.generate())
    first = CentralLog(open_store(store_url), signer)
    key = Ed25519PrivateKey.generate()
    first.add_terminal("T1", _pub(key))
    e = signed_entries(key, "T1", 33)
    first.ingest("T1", e[:20])
    first.store.close()
    again = CentralLog(open_store(store_url), signer)
    r = again.ingest("T1", e[20:])
    cp = Checkpoint.verify(r.checkpoint, signer.verifier)
    assert cp.size == 33 and cp.root == merkle.root(_all_leaves(again))
    again.store.close()


def test_list_parameters_and_multi_table_inserts(store_url: str) -> None:  # noqa: F811
    # The helpers crediting's statements are built from, on both stores: a list as one
    # parameter, rows as a table, and rows of several tables inserted at once (a column with
    # one value in every row, a single row, a conflict clause, text that needs quoting).
    store = open_store(store_url)
    try:
        odd = 'quote " comma , brace { back \\ '
        with store.tx() as tx:
            tx.run("CREATE TABLE t1 (k TEXT PRIMARY KEY, n BIGINT NOT NULL, c TEXT NOT NULL)")
            tx.run("CREATE TABLE t2 (k TEXT PRIMARY KEY, n BIGINT NOT NULL)")
            tx.insert_all([Rows("t1", ("k", "n", "c"), [("a", 1, "same"), ("b", 2, "same"),
                                                       (odd, 3, "same")]),
                           Rows("t2", ("k", "n"), [("x", 9)]),
                           Rows("t2", ("k", "n"), [])])
            tx.insert_all([Rows("t1", ("k", "n", "c"), [("a", 7, "new"), ("c", 4, "same")],
                                "ON CONFLICT (k) DO UPDATE SET n = excluded.n")])
        with store.tx(write=False) as tx:
            assert tx.all("SELECT k, n, c FROM t1 ORDER BY n") == [
                ("b", 2, "same"), (odd, 3, "same"), ("c", 4, "same"), ("a", 7, "same")]
            assert tx.all("SELECT k, n FROM t2") == [("x", 9)]
            where, param = tx.any_of("k", ["a", odd, "zz"])
            assert sorted(r[0] for r in tx.all(f"SELECT k FROM t1 WHERE {where}", [param])) \
                == sorted(["a", odd])
            source, params = tx.values_table("s", ("k", "lo"), [("a", 5), (odd, 0), ("b", 3)])
            got = tx.all(f"SELECT t1.k FROM t1 JOIN {source} ON t1.k = s.k AND t1.n >= s.lo "
                         "ORDER BY t1.k", params)
            assert got == sorted([("a",), (odd,)])
    finally:
        store.close()
