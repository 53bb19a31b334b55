"""sync.merkle against RFC 9162 §2.1: reference roots, the RFC's own recursive definitions,
and proofs that must fail when anything is changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localpay.errors import ProofError
from sync import merkle
from tests.strategies_sync import leaf_lists

VECTORS = json.loads((Path(__file__).parent / "data" / "rfc9162_merkle_vectors.json").read_text())
LEAVES = [merkle.leaf_hash(bytes.fromhex(x)) for x in VECTORS["leaves_hex"]]


# A direct transcription of RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1, kept naive on purpose.
def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    if not d:
        return merkle.EMPTY_ROOT
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return merkle.node_hash(mth(d[:k]), mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def test_leaf_and_node_hash_prefixes() -> None:
    assert merkle.leaf_hash(b"") == bytes.fromhex(
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    assert merkle.root([]) == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


@pytest.mark.parametrize("size", range(1, 9))
def test_reference_roots(size: int) -> None:
    assert merkle.root(LEAVES[:size]).hex() == VECTORS["roots"][str(size)]


def test_stored_proof_vectors() -> None:
    for case in VECTORS["inclusion"]:
        i, n = case["index"], case["size"]
        proof = merkle.inclusion_proof(i, n, LEAVES[:n])
        assert [p.hex() for p in proof] == case["proof"]
        assert proof == path(i, LEAVES[:n])
        merkle.verify_inclusion(LEAVES[i], i, n, proof, merkle.root(LEAVES[:n]))
    for case in VECTORS["consistency"]:
        m, n = case["from"], case["to"]
        proof = merkle.consistency_proof(m, n, LEAVES[:n])
        assert [p.hex() for p in proof] == case["proof"]
        assert proof == (subproof(m, LEAVES[:n], True) if m < n else [])
        merkle.verify_consistency(m, n, merkle.root(LEAVES[:m]), merkle.root(LEAVES[:n]), proof)


@settings(max_examples=60, deadline=None)
@given(leaf_lists, st.data())
def test_proofs_match_rfc_definitions(raw: list[bytes], data: st.DataObject) -> None:
    leaves = [merkle.leaf_hash(x) for x in raw]
    n = len(leaves)
    assert merkle.root(leaves) == mth(leaves)
    i = data.draw(st.integers(0, n - 1))
    proof = merkle.inclusion_proof(i, n, leaves)
    assert proof == path(i, leaves)
    merkle.verify_inclusion(leaves[i], i, n, proof, mth(leaves))
    m = data.draw(st.integers(1, n))
    cproof = merkle.consistency_proof(m, n, leaves)
    assert cproof == (subproof(m, leaves, True) if m < n else [])
    merkle.verify_consistency(m, n, mth(leaves[:m]), mth(leaves), cproof)


@settings(max_examples=40, deadline=None)
@given(leaf_lists)
def test_frontier_keeps_every_complete_subtree(raw: list[bytes]) -> None:
    leaves = [merkle.leaf_hash(x) for x in raw]
    frontier = merkle.Frontier()
    nodes: dict[merkle.NodeId, bytes] = {}
    for n, h in enumerate(leaves, 1):
        for level, idx, digest in frontier.append(h):
            nodes[(level, idx)] = digest
        assert frontier.root() == mth(leaves[:n])
        again = merkle.Frontier.from_blob(frontier.size, frontier.blob())
        assert again.root() == frontier.root()
    # Proofs from stored subtrees alone, as the central store answers them.
    def source(wanted: list[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
        return {w: nodes[w] for w in wanted}
    n = len(leaves)
    for i in range(n):
        assert merkle.inclusion_proof(i, n, source) == path(i, leaves)
    for m in range(1, n):
        assert merkle.consistency_proof(m, n, source) == subproof(m, leaves, True)


def _flip(proof: list[bytes], k: int) -> list[bytes]:
    out = list(proof)
    out[k] = bytes([out[k][0] ^ 1]) + out[k][1:]
    return out


def test_tampered_inclusion_proofs_fail() -> None:
    leaves = LEAVES[:7]
    root = merkle.root(leaves)
    proof = merkle.inclusion_proof(5, 7, leaves)
    for k in range(len(proof)):
        with pytest.raises(ProofError):
            merkle.verify_inclusion(leaves[5], 5, 7, _flip(proof, k), root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(leaves[4], 5, 7, proof, root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(leaves[5], 4, 7, proof, root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(leaves[5], 5, 6, proof, root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(leaves[5], 5, 7, proof[:-1], root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(leaves[5], 5, 7, [*proof, proof[0]], root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(leaves[5], 7, 7, proof, root)


def test_rewritten_history_fails_consistency() -> None:
    leaves = LEAVES[:8]
    other = [*LEAVES[:2], merkle.leaf_hash(b"rewritten"), *LEAVES[3:8]]
    proof = merkle.consistency_proof(3, 8, other)
    with pytest.raises(ProofError):
        merkle.verify_consistency(3, 8, merkle.root(leaves[:3]), merkle.root(other), proof)
    good = merkle.consistency_proof(3, 8, leaves)
    for k in range(len(good)):
        with pytest.raises(ProofError):
            merkle.verify_consistency(3, 8, merkle.root(leaves[:3]), merkle.root(leaves),
                                      _flip(good, k))
    with pytest.raises(ProofError):
        merkle.verify_consistency(4, 4, merkle.root(leaves[:4]), merkle.root(other[:4]), [])
    with pytest.raises(ProofError):
        merkle.verify_consistency(5, 3, merkle.root(leaves[:5]), merkle.root(leaves[:3]), [])
    with pytest.raises(ProofError):
        merkle.verify_consistency(3, 8, merkle.root(leaves[:3]), merkle.root(leaves), [])
