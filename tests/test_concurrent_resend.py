"""A batch sent again while its first copy is still being appended gets its receipt.

A terminal whose request timed out sends the same batch again; with several workers the two
copies can reach two workers at once, both waiting for the log's lock. The one that gets it
second must find the batch held and answer with the duplicate's receipt. It read the
terminal's chain in the same statement that took the lock, and PostgreSQL reads only the
locked row again once the wait ends: the terminal's row was the one from before the first
copy committed, so the second copy was appended again and refused by the unique key, an
error where the receipt was due (seen as HTTP 500s with `--workers 4`).

PostgreSQL only: SQLite takes its write lock before the transaction reads anything, so a
waiting writer always reads what the one before it committed.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

from central import open_service
from firmware_cfg.keys import public_hex
from tests.pg_fixtures import new_terminal_key, pg_cluster, signed_entries  # noqa: F401


def _waiting(conn: psycopg.Connection, n: int) -> None:
    """Until ``n`` other sessions wait for a row lock on the log's state."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%log_state%' AND pid <> pg_backend_pid()").fetchone()
        if row is not None and row[0] >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"{n} appends never waited for the log's lock")


def test_a_resend_waiting_behind_its_first_copy_gets_its_receipt(
        pg_cluster: Any, tmp_path: Path) -> None:  # noqa: F811
    url = pg_cluster.new_schema()
    key = new_terminal_key()
    # two workers of one service: the same store and the same key folder
    workers = [open_service(url, tmp_path / "data") for _ in range(2)]
    workers[0].add_terminal("T-1", bytes.fromhex(public_hex(key)))
    wire = signed_entries(key, "T-1", 50)
    try:
        with psycopg.connect(url) as holder, ThreadPoolExecutor(2) as pool:
            # another terminal's batch holding the lock while both copies arrive
            holder.execute("SELECT size FROM log_state WHERE id = 1 FOR UPDATE")
            with psycopg.connect(url, autocommit=True) as watch:
                copies = [pool.submit(w.ingest, "T-1", wire) for w in workers]
                _waiting(watch, 2)
            holder.commit()
            receipts = [copy.result(timeout=60) for copy in copies]
        # both answers are the receipt of the same 50 entries, held once
        assert [(r.first_seq, r.last_seq, r.log_index) for r in receipts] == [(1, 50, 49)] * 2
        # one copy appended them; the other found them held (0 more accepted) and answers
        # with the same checkpoint and proof
        assert sorted(r.accepted for r in receipts) == [0, 50]
        assert receipts[0].checkpoint == receipts[1].checkpoint
        assert receipts[0].proof == receipts[1].proof
        with workers[0].store.tx(write=False) as tx:
            held = tx.all("SELECT seq FROM entries WHERE terminal_id = 'T-1' ORDER BY seq")
            size = tx.one("SELECT size FROM log_state WHERE id = 1")
        assert [int(s) for (s,) in held] == list(range(1, 51))
        assert size is not None and int(size[0]) == 50
    finally:
        for w in workers:
            w.store.close()
