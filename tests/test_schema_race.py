"""Every module that makes its tables on first use makes them once however many processes
start at once: workers of one service starting together, or a new service's first requests.
PostgreSQL's CREATE TABLE IF NOT EXISTS fails one of two concurrent ones (a duplicate key in
pg_type), which answered a terminal's batch with a 500."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from central import (
    accounts,
    allowances,
    audit,
    books,
    config_audit,
    enroll,
    merchants,
    mpm_payments,
    spending,
    terminal_status,
)
from central.store import open_store
from tests.pg_fixtures import PgCluster, pg_cluster  # noqa: F401

MODULES: dict[str, Callable[[Any], None]] = {
    "accounts": accounts.ensure_schema,
    "allowances": allowances.ensure_schema,
    "audit": audit.ensure_schema,
    "books": books.ensure_schema,
    "config_audit": config_audit.ensure_schema,
    "enroll": enroll.ensure_schema,
    "merchants": merchants.ensure_schema,
    "mpm_payments": mpm_payments.ensure_schema,
    "spending": spending.ensure_schema,
    "terminal_status": terminal_status.ensure_schema,
}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_tables_made_by_eight_processes_at_once(pg_cluster: PgCluster,  # noqa: F811
                                                module: str) -> None:
    errors: list[BaseException] = []
    for _ in range(3):
        url = pg_cluster.new_schema()
        open_store(url).close()  # the service's own tables, as `central init` makes them
        # a store each, as each worker process has its own
        stores = [open_store(url, 1) for _ in range(8)]
        start = threading.Barrier(len(stores))

        def first_use(store: Any, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                MODULES[module](store)
            except BaseException as err:  # reported to the test's thread
                errors.append(err)

        threads = [threading.Thread(target=first_use, args=(s,)) for s in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for store in stores:
            store.close()
    assert errors == []


def _free(store: Any, key: str) -> bool:
    """Whether another session could take ``key``'s schema lock now (and let it go)."""
    with store.tx() as tx:
        row = tx.one("SELECT pg_try_advisory_xact_lock(hashtext(?))", (key,))
    return bool(row[0])


def test_the_schema_lock_is_held_until_the_transaction_ends(pg_cluster: PgCluster,  # noqa: F811
                                                           ) -> None:
    url = pg_cluster.new_schema()
    holder, other = open_store(url, 1), open_store(url, 1)
    try:
        with holder.tx() as tx:
            tx.schema_lock("books")
            # the lock is the one every process names for those tables, and only theirs
            assert not _free(other, "localpay schema books")
            assert _free(other, "localpay schema merchants")
            assert _free(other, "books")
        assert _free(other, "localpay schema books")  # let go at commit
    finally:
        holder.close()
        other.close()


def test_the_schema_lock_on_sqlite_is_its_write_lock(tmp_path: Any) -> None:
    # SQLite has no advisory locks: the lock runs no statement (one would fail), and the
    # writer's BEGIN IMMEDIATE already keeps a second writer out
    store = open_store(f"sqlite:///{tmp_path / 'central.sqlite'}")
    try:
        with store.tx() as tx:
            tx.schema_lock("books")
            tx.run("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
        with store.tx(write=False) as tx:
            assert tx.all("SELECT name FROM sqlite_master WHERE name = 't'") == [("t",)]
    finally:
        store.close()
