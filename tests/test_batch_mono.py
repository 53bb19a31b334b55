"""A batch cannot go back in time against its terminal's last accepted entry (issue #18).

The monotonic stamp (``mono``) of a batch's first new entry must be after the stamp of the
last accepted entry, as between two entries of one batch. The stamp of the last accepted entry
is kept on the terminal's row; a store made by a release before that column holds 0 there
for every terminal, and its first batch after the upgrade was taken whatever its stamp. Hand-
signed entries on real stores (SQLite and PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from central.service import CentralLog
from localpay.errors import ChainMismatchError
from tests.incentives_data import chain, open_service, seoul_ms
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401

A = "a" * 32


@pytest.fixture
def svc(store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    log = open_service(store_url, followers=[])
    yield log
    log.store.close()


def size(svc: CentralLog) -> int:
    with svc.store.tx(write=False) as tx:
        row = tx.one("SELECT count(*) FROM entries")
    assert row is not None
    return int(row[0])


def test_a_batch_going_back_against_the_last_accepted_entry_is_refused(svc: CentralLog) -> None:
    bus = chain(svc, "BUS-1")
    svc.ingest("BUS-1", [bus.tap(A, seoul_ms(2026, 9, 7, 8)),
                         bus.tap(A, seoul_ms(2026, 9, 7, 9))])
    last = bus.mono
    bus.mono = 1000                           # the stamp restarted: far before the last one
    back = [bus.entry("tap", A, 1500, 0), bus.entry("tap", A, 1500, 0)]
    assert (back[0].mono, back[1].mono) == (1001, 1002)
    with pytest.raises(ChainMismatchError, match=rf"^entry 3 does not link to entry 2: its "
                                                 rf"monotonic stamp 1001 is not after "
                                                 rf"{last}$") as err:
        svc.ingest("BUS-1", back)
    assert err.value.seq == 3
    assert size(svc) == 2


def test_a_store_from_before_the_stamp_column_still_refuses_going_back(svc: CentralLog) -> None:
    """Reproduced on the old code: with the terminal's stored stamp 0 (an older store after
    its upgrade), a batch whose stamp went back was appended."""
    bus = chain(svc, "BUS-1")
    svc.ingest("BUS-1", [bus.tap(A, seoul_ms(2026, 9, 7, 8))])
    last = bus.mono
    with svc.store.tx() as tx:                # what the upgrade leaves on the terminal's row
        tx.run("UPDATE terminals SET last_mono = 0 WHERE terminal_id = 'BUS-1'")
    bus.mono = 500
    back = bus.entry("tap", A, 1500, 0)
    assert back.mono == 501
    with pytest.raises(ChainMismatchError, match=rf"^entry 2 does not link to entry 1: its "
                                                 rf"monotonic stamp 501 is not after "
                                                 rf"{last}$") as err:
        svc.ingest("BUS-1", [back])
    assert err.value.seq == 2
    assert size(svc) == 1
    # the terminal's next entry, after its last one, is taken as ever
    bus.seq, bus.prev, bus.mono = 1, back.prev_hash, last
    onward = bus.tap(A, seoul_ms(2026, 9, 7, 9))
    assert onward.mono > last
    assert svc.ingest("BUS-1", [onward]).accepted == 1
    assert size(svc) == 2
