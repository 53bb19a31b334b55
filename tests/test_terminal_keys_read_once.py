"""A registered terminal's public key is read from the store once per process
(central.service.CentralLog.terminal_key): a key never changes once registered, and every
request and every batch asked the store for it, a transaction each."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from central.service import CentralLog
from localpay.errors import SyncAuthError, SyncProtocolError
from tests.incentives_data import open_service
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401


@pytest.fixture
def svc(store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    log = open_service(store_url, followers=[])
    yield log
    log.store.close()


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_a_key_once_read_is_not_asked_of_the_store_again(svc: CentralLog) -> None:
    key = Ed25519PrivateKey.generate()
    svc.add_terminal("T1", raw(key))
    first = svc.terminal_key("T1")
    assert first.public_bytes(Encoding.Raw, PublicFormat.Raw) == raw(key)
    # Nothing in the service deletes a terminal; here the row goes behind its back, which
    # only a key kept from the first read survives.
    with svc.store.tx() as tx:
        tx.run("DELETE FROM terminals WHERE terminal_id = ?", ("T1",))
    assert svc.terminal_key("T1") is first
    # another process (a fresh service over the same store) reads the store, and finds none
    other = CentralLog(svc.store, svc.signer)
    with pytest.raises(SyncAuthError, match="unknown terminal"):
        other.terminal_key("T1")


def test_an_unknown_terminal_is_asked_again_and_found_once_registered(
        svc: CentralLog) -> None:
    with pytest.raises(SyncAuthError, match="unknown terminal 'T2'"):
        svc.terminal_key("T2")
    key = Ed25519PrivateKey.generate()
    svc.add_terminal("T2", raw(key))
    assert svc.terminal_key("T2").public_bytes(Encoding.Raw, PublicFormat.Raw) == raw(key)
    # and registering it again with another key is still refused: the kept key stays true
    with pytest.raises(SyncProtocolError, match="another key"):
        svc.add_terminal("T2", raw(Ed25519PrivateKey.generate()))
    assert svc.terminal_key("T2").public_bytes(Encoding.Raw, PublicFormat.Raw) == raw(key)
