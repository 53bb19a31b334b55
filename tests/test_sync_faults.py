"""Faults the sync must survive, each on real parts: a TCP proxy that cuts connections, the
service killed with SIGKILL mid-ingest, PostgreSQL restarted mid-sync, the terminal's sync
process killed, deliveries duplicated and reordered, and a tampered ledger.

The end state is always the same: every entry exactly once in the central chain, the root
matching the entries, the ledger marked synced to its head, and equal totals on both sides.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import open_service
from central.reconcile import report
from firmware_cfg.keys import public_hex
from localpay.errors import ChainMismatchError
from offline_ledger import Ledger
from sync import merkle
from sync.client import Backoff, SyncClient
from sync.protocol import batch_body
from tests.faultproxy import CuttingProxy
from tests.pg_fixtures import (  # noqa: F401
    ROOT,
    PgCluster,
    central,
    fill_ledger,
    free_port,
    pg_cluster,
    start_central,
)
from tests.signed_requests import signed

FAST = Backoff(base=0.05, cap=0.5)


def _setup(tmp: Path, db: str, n: int, tid: str = "T1") -> tuple[Ed25519PrivateKey, Path]:
    key = Ed25519PrivateKey.generate()
    path = tmp / f"{tid}.sqlite"
    fill_ledger(path, key, tid, n, cards=40).close()
    svc = open_service(db, tmp / "data")
    svc.add_terminal(tid, bytes.fromhex(public_hex(key)))
    svc.store.close()
    return key, path


def assert_exactly_once(tmp: Path, db: str, ledger_path: Path, key: Ed25519PrivateKey,
                        tid: str = "T1") -> None:
    svc = open_service(db, tmp / "data")
    try:
        with Ledger(ledger_path, key=key) as led:
            head, synced = led.head.seq, led.synced_upto()
            days = {_day(e.fields.wall_ms) for e in led.entries()}
        assert synced == head
        with svc.store.tx(write=False) as tx:
            n, distinct, top = tx.one("SELECT COUNT(*), COUNT(DISTINCT seq), MAX(seq) FROM "
                                      "entries WHERE terminal_id = ?", (tid,)) or (0, 0, 0)
            datas = [bytes(r[0]) for r in tx.all("SELECT data FROM entries ORDER BY log_index")]
        assert (n, distinct, top) == (head, head, head)
        cp_note = svc.checkpoint()
        from sync.checkpoint import Checkpoint

        cp = Checkpoint.verify(cp_note, svc.signer.verifier)
        assert cp.size == len(datas)
        assert cp.root == merkle.root([merkle.leaf_hash(d) for d in datas])
        for day in days:
            rep = report(svc, day)
            mine = [line for line in rep.lines if line.terminal_id == tid]
            assert mine and all(line.matches for line in mine), rep.differences
    finally:
        svc.store.close()


def _day(wall_ms: int) -> str:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(wall_ms / 1000, ZoneInfo("Asia/Seoul")).strftime("%Y-%m-%d")


def _client(path: Path, key: Ed25519PrivateKey, url: str, verifier: str, **kw: Any) -> SyncClient:
    kw.setdefault("max_retries", 200)
    return SyncClient(path, key, url, verifier, backoff=FAST, timeout_s=10, **kw)


def test_connections_cut_mid_request_and_mid_answer(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'central.sqlite'}"
    key, path = _setup(tmp_path, db, 3000)
    with central(db, tmp_path / "data") as srv:
        proxy = CuttingProxy(srv.port)
        try:
            client = _client(path, key, f"http://127.0.0.1:{proxy.port}", srv.verifier,
                             batch_size=150)
            summary = client.sync_once()
            client.close()
        finally:
            proxy.close()
    assert proxy.cuts > 3 and summary.retries > 0
    assert summary.synced_upto == 3000
    with central(db, tmp_path / "data"):
        pass
    assert_exactly_once(tmp_path, db, path, key)


def _wait_synced(path: Path, at_least: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            n = int(conn.execute("SELECT synced_upto FROM sync_state").fetchone()[0])
        except sqlite3.OperationalError:
            n = 0
        finally:
            conn.close()
        if n >= at_least:
            return n
        time.sleep(0.02)
    raise AssertionError(f"sync did not reach {at_least} in {timeout} s")


def _sync_in_thread(client: SyncClient) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(client.sync_once())
        except BaseException as err:  # report it to the test thread
            out.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_server_killed_mid_ingest(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'central.sqlite'}"
    key, path = _setup(tmp_path, db, 8000)
    srv = start_central(db, tmp_path / "data")
    client = _client(path, key, srv.url, srv.verifier, batch_size=200)
    thread, out = _sync_in_thread(client)
    for _ in range(2):
        reached = _wait_synced(path, (_ + 1) * 1000)
        srv.kill()  # SIGKILL while batches are in flight
        assert reached < 8000
        time.sleep(0.3)
        srv = start_central(db, tmp_path / "data", port=srv.port)
    thread.join(120)
    srv.stop()
    client.close()
    assert not isinstance(out[0], BaseException), out[0]
    assert out[0].retries > 0
    assert_exactly_once(tmp_path, db, path, key)


def test_postgresql_restart_mid_sync(tmp_path: Path, pg_cluster: PgCluster) -> None:  # noqa: F811
    db = pg_cluster.new_database()
    key, path = _setup(tmp_path, db, 6000)
    with central(db, tmp_path / "data") as srv:
        client = _client(path, key, srv.url, srv.verifier, batch_size=200)
        thread, out = _sync_in_thread(client)
        _wait_synced(path, 1000)
        pg_cluster.restart()
        thread.join(120)
        client.close()
    assert not isinstance(out[0], BaseException), out[0]
    assert_exactly_once(tmp_path, db, path, key)


def test_terminal_killed_mid_sync_resumes(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'central.sqlite'}"
    key, path = _setup(tmp_path, db, 8000)
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    key_file = tmp_path / "terminal.key"
    key_file.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    os.chmod(key_file, 0o600)
    with central(db, tmp_path / "data") as srv:
        script = (
            "import sys; from firmware_cfg.keys import load_terminal_key; "
            "from sync.client import SyncClient; "
            f"c = SyncClient({str(path)!r}, load_terminal_key({str(key_file)!r}), "
            f"{srv.url!r}, {srv.verifier!r}, batch_size=100); c.sync_once()")
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)))
        reached = _wait_synced(path, 1500)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert reached < 8000
        client = _client(path, key, srv.url, srv.verifier, batch_size=500)
        summary = client.sync_once()
        client.close()
    assert summary.synced_upto == 8000
    assert_exactly_once(tmp_path, db, path, key)


class _KilledBeforeTheReport(SyncClient):
    """Stands for a process killed between its last acknowledged batch and its report of
    the days' totals (a kill cannot be timed to that instant; the state on disk is the same)."""

    def _report_totals(self, *args: Any, **kw: Any) -> None:
        raise KeyboardInterrupt


def test_days_of_a_round_killed_before_its_report_are_reported_by_the_next(
        tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'central.sqlite'}"
    key, path = _setup(tmp_path, db, 300)
    with central(db, tmp_path / "data") as srv:
        killed = _KilledBeforeTheReport(path, key, srv.url, srv.verifier, backoff=FAST,
                                        timeout_s=10, batch_size=100)
        with pytest.raises(KeyboardInterrupt):
            killed.sync_once()
        killed.close()
        with Ledger(path, key=key) as led:
            assert led.synced_upto() == 300  # every entry went up; no day was reported
        client = _client(path, key, srv.url, srv.verifier)
        summary = client.sync_once()  # nothing left to send, the days still to report
        client.close()
    assert summary.sent == 0
    with Ledger(path, key=key) as led:
        days = sorted({_day(e.fields.wall_ms) for e in led.entries()})
    assert summary.days_reported == days
    assert_exactly_once(tmp_path, db, path, key)


def _post(url: str, key: Ed25519PrivateKey, tid: str, entries: list[Any]) -> httpx.Response:
    body = batch_body(tid, [(e.encoded(), e.signature) for e in entries])
    return signed(url, key, tid, "POST", "/v1/batches", body, timeout=10)


def test_duplicated_and_reordered_deliveries(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'central.sqlite'}"
    key, path = _setup(tmp_path, db, 400)
    with Ledger(path, key=key) as led:
        e = list(led.entries())
    with central(db, tmp_path / "data") as srv:
        first = _post(srv.url, key, "T1", e[0:100])
        assert first.status_code == 200
        again = _post(srv.url, key, "T1", e[0:100]).json()
        same = ("checkpoint", "log_index", "inclusion_proof", "first_seq", "last_seq")
        assert {k: again[k] for k in same} == {k: first.json()[k] for k in same}
        assert (first.json()["accepted"], again["accepted"]) == (100, 0)
        late = _post(srv.url, key, "T1", e[200:300])
        assert late.status_code == 409 and late.json()["seq"] == 101
        assert _post(srv.url, key, "T1", e[100:200]).status_code == 200
        assert _post(srv.url, key, "T1", e[200:300]).status_code == 200
        assert _post(srv.url, key, "T1", e[150:250]).json()["accepted"] == 0
        assert _post(srv.url, key, "T1", e[50:120]).json()["accepted"] == 0
        client = _client(path, key, srv.url, srv.verifier, batch_size=64)
        summary = client.sync_once()  # starts over from 1: all of it is answered as held
        client.close()
    assert summary.synced_upto == 400 and summary.sent == 100
    assert_exactly_once(tmp_path, db, path, key)


def test_tampered_ledger_is_refused_with_first_bad_seq(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'central.sqlite'}"
    key, path = _setup(tmp_path, db, 300)
    conn = sqlite3.connect(str(path), isolation_level=None)
    # What someone with the file but not the key could do: drop the guard, change an amount.
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET amount = 1 WHERE seq = 137")
    conn.close()
    with central(db, tmp_path / "data") as srv:
        client = _client(path, key, srv.url, srv.verifier, batch_size=100)
        with pytest.raises(ChainMismatchError) as err:
            client.sync_once()
        client.close()
    assert err.value.seq == 137
    with Ledger(path, key=key, tail_check=0) as led:
        assert led.synced_upto() == 100
    svc = open_service(db, tmp_path / "data")
    assert svc.size() == 100
    svc.store.close()
