"""``Tx.run_all``: writes whose answers nothing needs, sent together (issue #18).

Each 500-entry batch holds the log's lock for its append, and 200 terminals' batches arriving
at once took turns on it for 11 of the run's 17 seconds; every round trip to PostgreSQL under
the lock lengthened each turn. The append's last four writes (the log's state, its
checkpoint, the terminal's chain, the batch) now go as one pipeline. Here, on both stores:
they are applied in their order, within the transaction, and any one that fails fails the
call and the whole transaction.
"""

from __future__ import annotations

import pytest

from central.store import Store, open_store
from localpay.errors import SyncError
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401


def _fresh(url: str) -> Store:
    store = open_store(url)
    with store.tx() as tx:
        tx.run("CREATE TABLE IF NOT EXISTS t_run_all (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    return store


def test_the_statements_are_applied_in_their_order(store_url: str) -> None:  # noqa: F811
    store = _fresh(store_url)
    try:
        with store.tx() as tx:
            tx.run_all([
                ("INSERT INTO t_run_all VALUES (?, ?)", (1, "a")),
                ("UPDATE t_run_all SET v = v || ? WHERE k = ?", ("b", 1)),
                ("INSERT INTO t_run_all VALUES (?, ?)", (2, "c")),
                ("UPDATE t_run_all SET v = v || ? WHERE k = ?", ("d", 1)),
            ])
            # seen by the rest of the transaction, before its commit
            assert tx.all("SELECT k, v FROM t_run_all ORDER BY k") == [(1, "abd"), (2, "c")]
        with store.tx(write=False) as tx:
            assert tx.all("SELECT k, v FROM t_run_all ORDER BY k") == [(1, "abd"), (2, "c")]
    finally:
        store.close()


def test_one_failing_statement_fails_the_call_and_its_transaction(
        store_url: str) -> None:  # noqa: F811
    store = _fresh(store_url)
    try:
        with store.tx() as tx:
            tx.run("INSERT INTO t_run_all VALUES (?, ?)", (9, "before"))
        with pytest.raises(SyncError, match="t_run_all"), \
                store.tx() as tx:
            tx.run("INSERT INTO t_run_all VALUES (?, ?)", (10, "same transaction"))
            tx.run_all([
                ("INSERT INTO t_run_all VALUES (?, ?)", (11, "first")),
                ("INSERT INTO t_run_all VALUES (?, ?)", (9, "a key held")),
                ("INSERT INTO t_run_all VALUES (?, ?)", (12, "after")),
            ])
        with store.tx(write=False) as tx:
            assert tx.all("SELECT k, v FROM t_run_all ORDER BY k") == [(9, "before")]
        # the connection that failed went back to the pool usable
        with store.tx() as tx:
            tx.run_all([("INSERT INTO t_run_all VALUES (?, ?)", (13, "later"))])
        with store.tx(write=False) as tx:
            assert [k for k, _ in tx.all("SELECT k, v FROM t_run_all ORDER BY k")] == [9, 13]
    finally:
        store.close()


def test_nothing_to_run_is_nothing_done(store_url: str) -> None:  # noqa: F811
    store = _fresh(store_url)
    try:
        with store.tx() as tx:
            tx.run_all([])
            assert tx.all("SELECT k FROM t_run_all") == []
    finally:
        store.close()
