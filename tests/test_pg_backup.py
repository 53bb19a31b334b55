"""A backup of the central store, and a restore that is actually performed: a base backup
(``pg_basebackup``) with WAL archived into a folder (``archive_command``), batches taken after
the backup, the server lost, a fresh server restored from the backup and replayed to the end
of the archive (``restore_command``); the restored central serves the same log, and a
terminal syncs on to it."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import open_service
from central.store import open_store
from firmware_cfg.keys import public_hex
from localpay.pgserver import PgCluster, archive_settings, pg_folder
from offline_ledger import Ledger
from sync import merkle
from sync.checkpoint import Checkpoint, NoteVerifier
from sync.client import Backoff, SyncClient
from sync.protocol import H_NONCE, H_SIGNATURE, H_TERMINAL, H_TIME, b64, new_nonce, request_message
from tests.pg_fixtures import fill_ledger, start_central

SERVE = ("-m", "localpay", "central", "serve")
T0 = 1_794_945_600_000  # the first entry's time; each batch of taps goes on from the last


def _checkpoint(url: str, key: Ed25519PrivateKey, tid: str, verifier: str) -> Checkpoint:
    """The service's latest checkpoint, asked as a terminal asks (a signed request)."""
    nonce, now = new_nonce(), int(time.time() * 1000)
    sig = key.sign(request_message("GET", "/v1/checkpoint", now, nonce, b""))
    resp = httpx.get(url + "/v1/checkpoint", timeout=20, headers={
        H_TERMINAL: tid, H_TIME: str(now), H_NONCE: nonce, H_SIGNATURE: b64(sig)})
    assert resp.status_code == 200, resp.text
    return Checkpoint.verify(resp.json()["checkpoint"], NoteVerifier.parse(verifier))


def _sync(path: Path, key: Ed25519PrivateKey, url: str, verifier: str) -> Any:
    client = SyncClient(path, key, url, verifier, batch_size=100, timeout_s=30,
                        backoff=Backoff(base=0.05, cap=0.5))
    try:
        return client.sync_once()
    finally:
        client.close()


def _ledger_leaves(path: Path, key: Ed25519PrivateKey) -> list[bytes]:
    with Ledger(path, key=key) as led:
        return [e.encoded() for e in led.entries()]


def test_base_backup_and_wal_archive_restore(tmp_path: Path) -> None:
    archive, backups = pg_folder("localpay-wal-"), pg_folder("localpay-backup-")
    primary = PgCluster(settings=archive_settings(archive))
    restored: PgCluster | None = None
    try:
        tid, key = "T-BACKUP", Ed25519PrivateKey.generate()
        path, data = tmp_path / "ledger.sqlite", tmp_path / "data"
        svc = open_service(primary.url(), data)
        svc.add_terminal(tid, bytes.fromhex(public_hex(key)))
        svc.store.close()
        fill_ledger(path, key, tid, 500, start_ms=T0).close()
        srv = start_central(primary.url(), data, command=SERVE, timeout=60)
        try:
            assert _sync(path, key, srv.url, srv.verifier).synced_upto == 500
            primary.base_backup(backups / "base")
            # batches after the base backup: only the archived WAL holds them
            fill_ledger(path, key, tid, 700, start_ms=T0 + 500_000).close()
            assert _sync(path, key, srv.url, srv.verifier).synced_upto == 1200
            served = _checkpoint(srv.url, key, tid, srv.verifier)
            verifier = srv.verifier
        finally:
            srv.stop()
        primary.archive_all()
        primary.kill()  # the server and its data folder are lost; the archive is not
        shutil.rmtree(primary.data)

        restored = PgCluster.restored(backups / "base", archive)
        assert restored.query("SELECT pg_is_in_recovery()") == [(False,)]  # takes writes
        srv = start_central(restored.url(), data, command=SERVE, timeout=60)
        try:
            again = _checkpoint(srv.url, key, tid, verifier)
            leaves = _ledger_leaves(path, key)
            assert (again.size, again.root) == (served.size, served.root) == (
                1200, merkle.root([merkle.leaf_hash(d) for d in leaves]))
            store = open_store(restored.url())
            try:
                with store.tx(write=False) as tx:
                    held = [bytes(r[0]) for r in tx.all("SELECT data FROM entries WHERE "
                                                        "terminal_id = ? ORDER BY seq", (tid,))]
            finally:
                store.close()
            assert held == leaves
            # the terminal syncs on: its kept checkpoint (size 1200) is proved consistent
            # with the restored log's new one
            fill_ledger(path, key, tid, 300, start_ms=T0 + 1_200_000).close()
            summary = _sync(path, key, srv.url, verifier)
            assert (summary.synced_upto, summary.sent, summary.tree_size) == (1500, 300, 1500)
            final = _checkpoint(srv.url, key, tid, verifier)
        finally:
            srv.stop()
        assert final.root == merkle.root([merkle.leaf_hash(d)
                                          for d in _ledger_leaves(path, key)])
    finally:
        primary.destroy()
        if restored is not None:
            restored.destroy()
        for folder in (archive, backups):
            with contextlib.suppress(OSError):
                shutil.rmtree(folder)
