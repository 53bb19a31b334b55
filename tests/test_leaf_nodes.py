"""The central tree keeps no row for a leaf: each leaf's hash is its entry's, hashed from
``entries.data`` when a proof needs it. Both stores; proofs are checked against roots computed
here from the entries' bytes (RFC 9162's MTH, written out naively in ``tests/test_merkle.py``),
not against the service's own nodes."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.service import CentralLog
from firmware_cfg.keys import public_hex
from localpay.errors import ProofError
from sync import merkle
from sync.checkpoint import Checkpoint
from tests.pg_fixtures import pg_cluster, signed_entries, store_url  # noqa: F401
from tests.test_central_store import log  # noqa: F401
from tests.test_merkle import mth


def _filled(svc: CentralLog, n: int) -> list[bytes]:
    """``n`` entries of two terminals in uneven batches; the entries' bytes in log order."""
    keys = {t: Ed25519PrivateKey.generate() for t in ("T1", "T2")}
    for t, k in keys.items():
        svc.add_terminal(t, bytes.fromhex(public_hex(k)))
    a, b = signed_entries(keys["T1"], "T1", n // 2), signed_entries(keys["T2"], "T2", n - n // 2)
    cut = len(b) // 3
    for tid, chunk in (("T1", a[:7]), ("T2", b[:cut]), ("T1", a[7:]), ("T2", b[cut:])):
        svc.ingest(tid, chunk)
    with svc.store.tx(write=False) as tx:
        return [bytes(d) for (d,) in tx.all("SELECT data FROM entries ORDER BY log_index")]


def _rfc9162_root(data: list[bytes]) -> bytes:
    """MTH of RFC 9162 §2.1.1 over the entries' bytes (the naive transcription of
    ``tests/test_merkle.py``, apart from the service's tree)."""
    return mth([merkle.leaf_hash(d) for d in data])


def test_no_leaf_is_kept_as_a_node_and_every_proof_holds(log: CentralLog) -> None:  # noqa: F811
    data = _filled(log, 101)
    with log.store.tx(write=False) as tx:
        levels = {int(lv): int(c) for lv, c in tx.all(
            "SELECT level, COUNT(*) FROM nodes GROUP BY level")}
    assert 0 not in levels
    # the complete subtrees above the leaves of a 101-leaf tree: 50 + 25 + 12 + 6 + 3 + 1
    assert levels == {1: 50, 2: 25, 3: 12, 4: 6, 5: 3, 6: 1}
    cp = Checkpoint.verify(log.checkpoint(), log.signer.verifier)
    assert cp.size == 101 and cp.root == _rfc9162_root(data)
    for i in (0, 1, 50, 99, 100):
        merkle.verify_inclusion(merkle.leaf_hash(data[i]), i, 101, log.inclusion_proof(i, 101),
                                cp.root)
    for m in (1, 7, 40, 64, 100):
        merkle.verify_consistency(m, 101, _rfc9162_root(data[:m]), cp.root,
                                  log.consistency_proof(m, 101))


def test_leaf_rows_of_an_older_store_are_not_read(log: CentralLog) -> None:  # noqa: F811
    """A store from before kept a row for every leaf. Rows there are not read: planted
    wrong, every proof still holds."""
    data = _filled(log, 40)
    with log.store.tx() as tx:
        tx.bulk("nodes", ("level", "idx", "hash"), [(0, i, bytes(32)) for i in range(40)])
    cp = Checkpoint.verify(log.checkpoint(), log.signer.verifier)
    for i in (0, 17, 39):
        merkle.verify_inclusion(merkle.leaf_hash(data[i]), i, 40, log.inclusion_proof(i, 40),
                                cp.root)
    merkle.verify_consistency(13, 40, _rfc9162_root(data[:13]), cp.root,
                              log.consistency_proof(13, 40))


def test_a_changed_entry_breaks_its_proof(log: CentralLog) -> None:  # noqa: F811
    """The leaf is hashed from the entry's bytes as stored: bytes changed in the store give
    a proof that no longer leads to the signed root."""
    data = _filled(log, 20)
    with log.store.tx() as tx:
        tx.run("UPDATE entries SET data = ? WHERE log_index = 5", (data[5] + b"x",))
    cp = Checkpoint.verify(log.checkpoint(), log.signer.verifier)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(merkle.leaf_hash(data[4]), 4, 20, log.inclusion_proof(4, 20),
                                cp.root)
