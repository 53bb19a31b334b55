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
