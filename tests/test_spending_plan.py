"""The spending poster reads its chunk of the log by the log's range, whatever the
statistics say (issue #18).

Its read named the chunk's log range and the municipality's terminals. With the terminals
table analysed before a city's terminals were enrolled (one row then, 200 now), PostgreSQL
planned a loop over "2" terminals reading each one's entries, and ran it over 200: 18 ms a
500-entry chunk against 0.2 ms once analysed, seen as the heaviest statement of 200
terminals syncing one after another. The range is now read first
(``central.spending.CHUNK_READ``). A real server, its statistics taken at the wrong moment on
purpose; the old statement is run beside as the control that the trap is set.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from central import open_service
from central.spending import CHUNK_READ, SpendEntry, post_log
from central.store import NOT_CONFIG_REFUSED
from firmware_cfg.keys import public_hex
from tests.pg_fixtures import new_terminal_key, pg_cluster, signed_entries, store_url  # noqa: F401

TERMINALS = 120
PER = 10

#: the read as it was (the control)
OLD_READ = (
    f"SELECT {', '.join(SpendEntry._fields)} FROM entries WHERE log_index >= ? "
    f"AND log_index < ? AND kind IN ('payment', 'refund', 'void') AND terminal_id IN (SELECT "
    f"terminal_id FROM terminals WHERE municipality_id = ?) {NOT_CONFIG_REFUSED}"
    "ORDER BY log_index")


def _plan(tx: object, sql: str, params: tuple[object, ...]) -> str:
    rows = tx.all("EXPLAIN " + sql, params)  # type: ignore[attr-defined]
    return "\n".join(str(r[0]) for r in rows)


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_the_chunk_is_read_by_its_log_range_with_stale_statistics(
        store_url: str, tmp_path: Path) -> None:  # noqa: F811
    svc = open_service(store_url, tmp_path / "data")
    try:
        keys = {f"T{i:03d}": new_terminal_key() for i in range(TERMINALS)}
        first = next(iter(keys))
        svc.add_terminal(first, bytes.fromhex(public_hex(keys[first])))
        with svc.store.tx() as tx:
            tx.run("ANALYZE terminals")  # statistics of a city with one terminal
        for tid, key in keys.items():
            if tid != first:
                svc.add_terminal(tid, bytes.fromhex(public_hex(key)))
        for tid, key in keys.items():
            svc.ingest(tid, signed_entries(key, tid, PER, kind="payment"))
        size = svc.size()
        assert size == TERMINALS * PER
        with svc.store.tx(write=False) as tx:
            tx.run("SET LOCAL enable_seqscan = off")  # as on a log too large to scan
            params = (size - 500, size, "default")
            old = _plan(tx, OLD_READ, params)
            new = _plan(tx, CHUNK_READ, params)
            # the trap: the old read loops over the terminals, each one's entries by key
            assert "entries_terminal_id_seq_key" in old, old
            # the new one reads the chunk's range by the log's own key, once
            assert "entries_terminal_id_seq_key" not in new, new
            assert "entries_pkey" in new, new
            assert new.count("entries_pkey") == 1, new
            # and both give the same rows: the chunk's 500 payments, in log order
            rows = tx.all(CHUNK_READ, params)
            assert rows == tx.all(OLD_READ, params)
            assert [r[0] for r in rows] == list(range(size - 500, size))
            # the poster, which followed every batch through it, is at the log's end
            assert tx.one("SELECT next_index FROM spending_cursor WHERE municipality_id = ?",
                          ("default",)) == (size,)
        assert post_log(svc.store).payments == 0  # nothing left to post
    finally:
        svc.store.close()
