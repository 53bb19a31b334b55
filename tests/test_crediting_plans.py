"""Crediting's read is planned for each chunk's own lists on PostgreSQL (issue #18).

Crediting reads what it needs for a chunk in one statement that joins arrays of the chunk's
terminals and cards. psycopg prepares a statement on its fifth run, and PostgreSQL then
tried a generic plan, which scans the credit and week tables whole: past the tenth batch a
500-entry batch's crediting took 300-500 ms instead of about 15 ms, and more as the log
grew. Crediting now asks for a plan made for each run's values. Real PostgreSQL, one
connection, so the prepared statement seen is crediting's own.
"""

from __future__ import annotations

from pathlib import Path

from central import open_service
from firmware_cfg.keys import public_hex
from localpay.cli.bench.traffic import WEEKDAY_MS, validator_traffic
from tests.pg_fixtures import new_terminal_key, pg_cluster, signed_entries  # noqa: F401

BATCHES, SIZE = 14, 50


def test_crediting_never_runs_its_read_on_a_generic_plan(pg_cluster, tmp_path: Path  # noqa: F811
                                                         ) -> None:
    svc = open_service(pg_cluster.new_database(), tmp_path / "data", pool_size=1)
    try:
        key = new_terminal_key()
        svc.add_terminal("BUS-1", bytes.fromhex(public_hex(key)))
        wire = signed_entries(key, "BUS-1", BATCHES * SIZE, wall0=WEEKDAY_MS,
                              traffic=validator_traffic(BATCHES * SIZE, bus_type="city"))
        for i in range(0, len(wire), SIZE):
            svc.ingest("BUS-1", wire[i:i + SIZE])  # each batch credited after its commit
        with svc.store.tx(write=False) as tx:
            credited = tx.one("SELECT COUNT(*) FROM incentive_credits")
            plans = tx.all("SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                           "WHERE statement LIKE ?", ("%FROM incentive_credits c JOIN unnest%",))
    finally:
        svc.store.close()
    assert credited is not None and int(credited[0]) > 0  # the traffic earned credits
    # prepared (run more than five times on this one connection), and never generic
    assert len(plans) == 1, plans
    generic, custom = (int(n) for n in plans[0])
    assert generic == 0 and custom >= BATCHES - 5, (generic, custom)
