"""What central ingest refuses, one check at a time, under both verification policies: a
correctly linked batch signed by another key, an entry naming another terminal, a stamp that
goes back. Each refusal leaves nothing stored."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.service import CentralLog, check_batch
from central.store import open_store
from firmware_cfg.keys import public_hex
from localpay.errors import ChainMismatchError
from sync.checkpoint import NoteSigner
from tests.incentives_data import Chain
from tests.pg_fixtures import pg_cluster, signed_entries, store_url  # noqa: F401

WALL = 1_790_000_000_000


@pytest.fixture(params=["every", "anchor"])
def svc(request: pytest.FixtureRequest, store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    log = CentralLog(open_store(store_url), NoteSigner("test.example/log",
                                                       Ed25519PrivateKey.generate()),
                     policy=request.param)
    yield log
    log.store.close()


def held(svc: CentralLog) -> int:
    with svc.store.tx(write=False) as tx:
        row = tx.one("SELECT COUNT(*) FROM entries")
    return int(row[0]) if row else 0


def test_a_linked_batch_signed_by_another_key_is_refused(svc: CentralLog) -> None:
    """The anchor policy checks the last entry's signature: without that check a batch
    linked correctly but signed by an unrelated key was stored (10 entries)."""
    mine, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    svc.add_terminal("T1", bytes.fromhex(public_hex(mine)))
    forged = signed_entries(other, "T1", 10)
    with pytest.raises(ChainMismatchError, match="bad signature"):
        svc.ingest("T1", forged)
    assert held(svc) == 0
    with pytest.raises(ChainMismatchError, match="entry 1 has a bad signature"):
        check_batch("T1", mine.public_key(), forged, svc.policy)
    svc.ingest("T1", signed_entries(mine, "T1", 10))          # the real ones go in
    assert held(svc) == 10


def test_an_entry_naming_another_terminal_is_refused(svc: CentralLog) -> None:
    key = Ed25519PrivateKey.generate()
    svc.add_terminal("T1", bytes.fromhex(public_hex(key)))
    theirs = signed_entries(key, "T2", 3)
    with pytest.raises(ChainMismatchError, match="names terminal 'T2'"):
        svc.ingest("T1", theirs)
    assert held(svc) == 0


def test_a_stamp_that_goes_back_inside_a_batch_is_refused(svc: CentralLog) -> None:
    c = Chain("T1")
    svc.add_terminal("T1", bytes.fromhex(public_hex(c.key)))
    first = c.tap("a" * 32, WALL)
    c.mono = 0                                                # the stamp restarts
    second = c.tap("b" * 32, WALL - 3_600_000)
    with pytest.raises(ChainMismatchError, match="does not link"):
        svc.ingest("T1", [first, second])
    assert held(svc) == 0
