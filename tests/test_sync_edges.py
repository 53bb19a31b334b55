"""Edge cases of the money paths that the mutation run (make mutation) showed no test stating."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from localpay.errors import ProofError, SyncProtocolError
from sync import merkle
from sync.checkpoint import Checkpoint, NoteSigner, NoteVerifier, key_id, open_note

# -- sync/merkle.py: RFC 9162 §2.1, with every expected value computed here from the RFC ------

# Sizes 1 to 33: every power of two up to 32 and the size one past it.
SIZES = range(1, 34)


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _leaf(data: bytes) -> bytes:
    return _sha(b"\x00" + data)


def _node(left: bytes, right: bytes) -> bytes:
    return _sha(b"\x01" + left + right)


def _k(n: int) -> int:
    """RFC 9162 §2.1.1: the largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _mth(d: list[bytes]) -> bytes:
    if not d:
        return _sha(b"")
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return _node(_mth(d[:k]), _mth(d[k:]))


def _path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*_path(m, d[:k]), _mth(d[k:])]
    return [*_path(m - k, d[k:]), _mth(d[:k])]


def _subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [_mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*_subproof(m, d[:k], b), _mth(d[k:])]
    return [*_subproof(m - k, d[k:], False), _mth(d[:k])]


def _path_ranges(m: int, begin: int, end: int) -> list[tuple[int, int]]:
    """The leaf ranges of PATH(m, D[begin:end]), leaf first, from the RFC's recursion."""
    if end - begin == 1:
        return []
    k = _k(end - begin)
    if m < k:
        return [*_path_ranges(m, begin, begin + k), (begin + k, end)]
    return [*_path_ranges(m - k, begin + k, end), (begin, begin + k)]


def _subproof_ranges(m: int, begin: int, end: int, b: bool) -> list[tuple[int, int]]:
    if m == end - begin:
        return [] if b else [(begin, end)]
    k = _k(end - begin)
    if m <= k:
        return [*_subproof_ranges(m, begin, begin + k, b), (begin + k, end)]
    return [*_subproof_ranges(m - k, begin + k, end, False), (begin, begin + k)]


def _naive_inclusion_ok(leaf: bytes, i: int, n: int, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.1 run backwards: the root that PATH(i, D[n]) with ``proof`` implies."""
    def up(i: int, n: int, proof: list[bytes]) -> bytes | None:
        if n == 1:
            return leaf if not proof else None
        if not proof:
            return None
        k, last = _k(n), proof[-1]
        if i < k:
            below = up(i, k, proof[:-1])
            return None if below is None else _node(below, last)
        below = up(i - k, n - k, proof[:-1])
        return None if below is None else _node(last, below)

    return 0 <= i < n and up(i, n, list(proof)) == root


def _naive_consistency_ok(m: int, n: int, root_m: bytes, root_n: bytes,
                          proof: list[bytes]) -> bool:
    """RFC 9162 §2.1.4.1 run backwards: the old and new roots that SUBPROOF(m, D[n], true)
    with ``proof`` implies (m == 0 with an empty proof: nothing to prove)."""
    if not 0 <= m <= n:
        return False
    if m == n:
        return not proof and root_m == root_n
    if m == 0:
        return not proof

    def up(m: int, n: int, b: bool, proof: list[bytes]) -> tuple[bytes, bytes] | None:
        if m == n:
            if b:
                return None if proof else (root_m, root_m)
            return (proof[0], proof[0]) if len(proof) == 1 else None
        if not proof:
            return None
        k, last = _k(n), proof[-1]
        if m <= k:
            below = up(m, k, b, proof[:-1])
            return None if below is None else (below[0], _node(below[1], last))
        below = up(m - k, n - k, False, proof[:-1])
        return None if below is None else (_node(last, below[0]), _node(last, below[1]))

    got = up(m, n, True, list(proof))
    return got == (root_m, root_n)


def _has(message: str) -> str:
    return re.escape(message)


def _exact(message: str) -> str:
    return rf"^{re.escape(message)}\Z"


def _starts(message: str) -> str:
    return rf"^{re.escape(message)}"


def _flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 0x80]) + h[1:]


LEAVES = [_leaf(b"entry %d" % i) for i in range(66)]
ROOTS = [_mth(LEAVES[:n]) for n in range(len(LEAVES) + 1)]


def _accepts(check: Callable[[], None]) -> bool:
    try:
        check()
    except ProofError:
        return False
    return True


def test_leaf_and_node_hashes_are_the_rfc_prefixed_sha256() -> None:
    for data in (b"", b"\x00", b"abc", bytes(range(256))):
        assert merkle.leaf_hash(data) == _sha(b"\x00" + data)
    a, b = LEAVES[0], LEAVES[1]
    assert merkle.node_hash(a, b) == _sha(b"\x01" + a + b)
    assert merkle.node_hash(a, b) != merkle.node_hash(b, a)
    assert merkle.root([]) == _sha(b"") == merkle.EMPTY_ROOT


@pytest.mark.parametrize("n", range(0, 67))
def test_root_of_every_size_is_mth(n: int) -> None:
    assert merkle.root(LEAVES[:n]) == ROOTS[n]


def test_a_single_leaf_is_its_own_root_and_two_leaves_one_node() -> None:
    assert merkle.root(LEAVES[:1]) == LEAVES[0]
    assert merkle.root(LEAVES[:2]) == _node(LEAVES[0], LEAVES[1])
    assert merkle.root(LEAVES[:3]) == _node(_node(LEAVES[0], LEAVES[1]), LEAVES[2])


@pytest.mark.parametrize("n", SIZES)
def test_inclusion_ranges_and_proofs_follow_path(n: int) -> None:
    for i in range(n):
        assert merkle.inclusion_ranges(i, n) == _path_ranges(i, 0, n)
        assert merkle.inclusion_proof(i, n, LEAVES[:n]) == _path(i, LEAVES[:n])


@pytest.mark.parametrize("n", SIZES)
def test_consistency_ranges_and_proofs_follow_subproof(n: int) -> None:
    assert merkle.consistency_ranges(0, n) == []
    assert merkle.consistency_ranges(n, n) == []
    assert merkle.consistency_proof(0, n, LEAVES[:n]) == []
    assert merkle.consistency_proof(n, n, LEAVES[:n]) == []
    for m in range(1, n):
        assert merkle.consistency_ranges(m, n) == _subproof_ranges(m, 0, n, True)
        assert merkle.consistency_proof(m, n, LEAVES[:n]) == _subproof(m, LEAVES[:n], True)


def test_proof_shapes_refuse_what_is_not_in_the_tree() -> None:
    for i, n in ((0, 0), (-1, 4), (4, 4), (5, 4), (1, 1)):
        with pytest.raises(ProofError, match=_has(f"leaf {i} is not in a tree of size {n}")):
            merkle.inclusion_ranges(i, n)
        with pytest.raises(ProofError):
            merkle.inclusion_proof(i, n, LEAVES[:max(n, 0)])
    for m, n in ((-1, 4), (5, 4), (1, 0)):
        with pytest.raises(ProofError,
                           match=_has(f"no consistency proof from size {m} to size {n}")):
            merkle.consistency_ranges(m, n)
        with pytest.raises(ProofError):
            merkle.consistency_proof(m, n, LEAVES[:4])
    assert merkle.consistency_ranges(0, 0) == []


def _aligned_decomposition(begin: int, end: int) -> list[merkle.NodeId]:
    """The RFC subtree [begin, end) as complete aligned subtrees, from its recursion."""
    n = end - begin
    if n & (n - 1) == 0:
        level = n.bit_length() - 1
        assert begin % n == 0
        return [(level, begin >> level)]
    k = _k(n)
    return [*_aligned_decomposition(begin, begin + k), *_aligned_decomposition(begin + k, end)]


def test_range_nodes_are_the_aligned_subtrees_largest_first() -> None:
    assert merkle.range_nodes(0, 1) == [(0, 0)]
    assert merkle.range_nodes(4, 5) == [(0, 4)]
    assert merkle.range_nodes(0, 8) == [(3, 0)]
    assert merkle.range_nodes(8, 15) == [(2, 2), (1, 6), (0, 14)]
    assert merkle.range_nodes(16, 33) == [(4, 1), (0, 32)]
    assert merkle.range_nodes(3, 3) == []
    for n in SIZES:
        for i in range(n):
            for b, e in merkle.inclusion_ranges(i, n):
                assert merkle.range_nodes(b, e) == _aligned_decomposition(b, e)
        for m in range(1, n):
            for b, e in merkle.consistency_ranges(m, n):
                assert merkle.range_nodes(b, e) == _aligned_decomposition(b, e)


def test_range_nodes_cover_any_range_with_aligned_subtrees() -> None:
    # a begin that is not aligned to the range's size takes smaller subtrees until it is
    assert merkle.range_nodes(1, 4) == [(0, 1), (1, 1)]
    assert merkle.range_nodes(3, 13) == [(0, 3), (2, 1), (2, 2), (0, 12)]
    assert merkle.range_nodes(6, 16) == [(1, 3), (3, 1)]
    for begin in range(0, 40):
        for end in range(begin + 1, 41):
            pos = begin
            for level, idx in merkle.range_nodes(begin, end):
                assert idx << level == pos and level >= 0
                pos += 1 << level
            assert pos == end


def test_fold_is_right_leaning() -> None:
    a, b, c, d = LEAVES[:4]
    assert merkle.fold([a]) == a
    assert merkle.fold([a, b]) == _node(a, b)
    assert merkle.fold([a, b, c, d]) == _node(a, _node(b, _node(c, d)))


def test_resolve_asks_the_store_once_for_each_node_and_names_what_is_missing() -> None:
    calls: list[list[merkle.NodeId]] = []
    store = {(level, idx): _mth(LEAVES[idx << level:(idx + 1) << level])
             for level in range(6) for idx in range(66 >> level)}

    def source(wanted: list[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
        calls.append(wanted)
        return {w: store[w] for w in wanted}

    ranges = [(0, 8), (8, 15), (8, 15), (14, 15)]
    got = merkle.resolve(ranges, source)
    assert got == [ROOTS[8], _mth(LEAVES[8:15]), _mth(LEAVES[8:15]), LEAVES[14]]
    assert calls == [[(0, 14), (1, 6), (2, 2), (3, 0)]]

    def partial(wanted: list[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
        return {w: store[w] for w in wanted[5:]}

    big = [(i, i + 1) for i in range(8)]
    with pytest.raises(ProofError, match=r"the store lacks tree nodes \[\(0, 0\), \(0, 1\), "
                                         r"\(0, 2\), \(0, 3\)\]$"):
        merkle.resolve(big, partial)
    # a proof from a store is the proof from the leaves
    for n in (1, 2, 5, 16, 17, 33):
        for i in range(n):
            assert merkle.inclusion_proof(i, n, source) == _path(i, LEAVES[:n])
        for m in range(1, n):
            assert merkle.consistency_proof(m, n, source) == _subproof(m, LEAVES[:n], True)


def _inclusion_variants(i: int, n: int) -> list[tuple[bytes, int, int, list[bytes], bytes]]:
    proof = _path(i, LEAVES[:n])
    leaf, root = LEAVES[i], ROOTS[n]
    out = [(leaf, i, n, proof, root)]
    out += [(leaf, i, n, [*proof[:k], _flip(p), *proof[k + 1:]], root)
            for k, p in enumerate(proof)]
    out += [(leaf, j, n, proof, root) for j in (i - 1, i + 1, i ^ 1, i + 2, n - 1)]
    out += [(leaf, i, s, proof, root) for s in (n - 1, n + 1, 2 * n, n + 2)]
    out += [(leaf, i, n, proof[:-1], root), (leaf, i, n, proof[1:], root),
            (leaf, i, n, [*proof, proof[0] if proof else leaf], root),
            (leaf, i, n, [leaf, *proof], root), (leaf, i, n, proof[::-1], root),
            (_flip(leaf), i, n, proof, root), (leaf, i, n, proof, _flip(root)),
            (LEAVES[(i + 1) % n], i, n, proof, root)]
    return out


@pytest.mark.parametrize("n", SIZES)
def test_verify_inclusion_accepts_exactly_what_the_rfc_path_proves(n: int) -> None:
    for i in range(n):
        merkle.verify_inclusion(LEAVES[i], i, n, _path(i, LEAVES[:n]), ROOTS[n])
        for leaf, j, s, proof, root in _inclusion_variants(i, n):
            want = _naive_inclusion_ok(leaf, j, s, proof, root)
            got = _accepts(lambda: merkle.verify_inclusion(leaf, j, s, proof, root))  # noqa: B023
            assert got == want, (i, n, j, s, len(proof))


def test_verify_inclusion_says_why() -> None:
    proof = _path(5, LEAVES[:7])
    with pytest.raises(ProofError, match=_has("leaf index 7 is outside a tree of size 7")):
        merkle.verify_inclusion(LEAVES[5], 7, 7, proof, ROOTS[7])
    with pytest.raises(ProofError, match=_has("leaf index -1 is outside a tree of size 7")):
        merkle.verify_inclusion(LEAVES[5], -1, 7, proof, ROOTS[7])
    with pytest.raises(ProofError, match=_has("leaf index 0 is outside a tree of size 0")):
        merkle.verify_inclusion(LEAVES[0], 0, 0, [], ROOTS[0])
    with pytest.raises(ProofError, match=_exact("inclusion proof is longer than the tree is deep")):
        merkle.verify_inclusion(LEAVES[5], 5, 7, [*proof, proof[0]], ROOTS[7])
    with pytest.raises(ProofError, match=_exact("inclusion proof is longer than the tree is deep")):
        merkle.verify_inclusion(LEAVES[0], 0, 1, [LEAVES[1]], ROOTS[1])
    with pytest.raises(ProofError,
                       match=_exact("inclusion proof is shorter than the tree is deep")):
        merkle.verify_inclusion(LEAVES[5], 5, 7, proof[:-1], ROOTS[7])
    with pytest.raises(ProofError,
                       match=_exact("inclusion proof is shorter than the tree is deep")):
        merkle.verify_inclusion(LEAVES[0], 0, 2, [], ROOTS[2])
    with pytest.raises(ProofError, match=_has("proof for leaf 5 does not lead to the root")):
        merkle.verify_inclusion(LEAVES[5], 5, 7, proof, ROOTS[6])
    # size 1: the leaf is the root, with an empty proof
    merkle.verify_inclusion(LEAVES[0], 0, 1, [], LEAVES[0])
    # the last leaf of a power of two plus one hangs straight under the root
    merkle.verify_inclusion(LEAVES[32], 32, 33, [ROOTS[32]], ROOTS[33])


def _consistency_variants(m: int, n: int) -> list[tuple[int, int, bytes, bytes, list[bytes]]]:
    proof = _subproof(m, LEAVES[:n], True) if 0 < m < n else []
    rm, rn = ROOTS[m], ROOTS[n]
    out = [(m, n, rm, rn, proof)]
    out += [(m, n, rm, rn, [*proof[:k], _flip(p), *proof[k + 1:]]) for k, p in enumerate(proof)]
    out += [(x, n, rm, rn, proof) for x in (m - 1, m + 1, 2 * m, m ^ 1)]
    out += [(m, y, rm, rn, proof) for y in (n - 1, n + 1, 2 * n)]
    out += [(m, n, rm, rn, proof[:-1]), (m, n, rm, rn, proof[1:]),
            (m, n, rm, rn, [*proof, rn]), (m, n, rm, rn, [rm, *proof]),
            (m, n, rm, rn, proof[::-1]), (m, n, rn, rm, proof),
            (m, n, _flip(rm), rn, proof), (m, n, rm, _flip(rn), proof),
            (m, n, rm, rm, proof), (m, n, rn, rn, proof)]
    return out


@pytest.mark.parametrize("n", SIZES)
def test_verify_consistency_accepts_exactly_what_the_rfc_subproof_proves(n: int) -> None:
    for m in range(0, n + 1):
        for a, b, ra, rb, proof in _consistency_variants(m, n):
            want = _naive_consistency_ok(a, b, ra, rb, proof)
            got = _accepts(lambda: merkle.verify_consistency(a, b, ra, rb, proof))  # noqa: B023
            assert got == want, (m, n, a, b, len(proof))


def test_verify_consistency_says_why() -> None:
    proof = _subproof(3, LEAVES[:8], True)
    with pytest.raises(ProofError, match=_has("size 5 cannot be a prefix of size 3")):
        merkle.verify_consistency(5, 3, ROOTS[5], ROOTS[3], [])
    with pytest.raises(ProofError, match=_has("size -1 cannot be a prefix of size 3")):
        merkle.verify_consistency(-1, 3, ROOTS[0], ROOTS[3], [])
    with pytest.raises(ProofError,
                       match=_exact("a consistency proof between equal sizes must be empty")):
        merkle.verify_consistency(4, 4, ROOTS[4], ROOTS[4], [ROOTS[4]])
    with pytest.raises(ProofError, match=_has("two different roots for the same size 4")):
        merkle.verify_consistency(4, 4, ROOTS[4], ROOTS[5], [])
    with pytest.raises(ProofError,
                       match=_exact("a consistency proof from the empty tree must be empty")):
        merkle.verify_consistency(0, 4, ROOTS[0], ROOTS[4], [ROOTS[4]])
    with pytest.raises(ProofError, match=_exact("empty consistency proof")):
        merkle.verify_consistency(3, 8, ROOTS[3], ROOTS[8], [])
    with pytest.raises(ProofError, match=_exact("consistency proof is too long")):
        merkle.verify_consistency(3, 8, ROOTS[3], ROOTS[8], [*proof, ROOTS[8]])
    with pytest.raises(ProofError, match=_exact("consistency proof is too long")):
        merkle.verify_consistency(1, 2, ROOTS[1], ROOTS[2], [LEAVES[1], LEAVES[1]])
    with pytest.raises(ProofError, match=_exact("consistency proof is too short")):
        merkle.verify_consistency(3, 8, ROOTS[3], ROOTS[8], proof[:-1])
    with pytest.raises(ProofError, match=_has("does not lead to the old root of size 3")):
        merkle.verify_consistency(3, 8, _flip(ROOTS[3]), ROOTS[8], proof)
    with pytest.raises(ProofError, match=_has("does not lead to the new root of size 8")):
        merkle.verify_consistency(3, 8, ROOTS[3], _flip(ROOTS[8]), proof)
    # equal sizes and the empty tree need no proof; a power of two proves with its sibling
    merkle.verify_consistency(4, 4, ROOTS[4], ROOTS[4], [])
    merkle.verify_consistency(0, 0, ROOTS[0], ROOTS[0], [])
    merkle.verify_consistency(0, 5, _flip(ROOTS[0]), ROOTS[5], [])
    merkle.verify_consistency(1, 2, ROOTS[1], ROOTS[2], [LEAVES[1]])
    merkle.verify_consistency(32, 33, ROOTS[32], ROOTS[33], [LEAVES[32]])
    merkle.verify_consistency(2, 3, ROOTS[2], ROOTS[3], [LEAVES[2]])
    merkle.verify_consistency(3, 4, ROOTS[3], ROOTS[4],
                              [LEAVES[2], LEAVES[3], ROOTS[2]])


def _complete_subtrees_finished_by(n: int) -> list[tuple[int, int, bytes]]:
    """Leaf n (0-based) completes the aligned subtrees that end with it."""
    out = []
    level = 0
    while (n + 1) % (1 << level) == 0:
        idx = n >> level
        out.append((level, idx, _mth(LEAVES[idx << level:(idx + 1) << level])))
        level += 1
    return out


def test_frontier_appends_report_every_finished_subtree() -> None:
    frontier = merkle.Frontier()
    assert (frontier.size, frontier.hashes, frontier.root()) == (0, [], ROOTS[0])
    assert frontier.blob() == b""
    for n, leaf in enumerate(LEAVES):
        assert frontier.append(leaf) == _complete_subtrees_finished_by(n)
        assert frontier.size == n + 1
        assert frontier.root() == ROOTS[n + 1]
        # one hash per set bit of the size, largest subtree first
        want = [node for level, node in
                ((lv, _mth(LEAVES[s:s + (1 << lv)])) for lv, s in _bits(n + 1))]
        assert frontier.hashes == want
        assert frontier.blob() == b"".join(want)
        again = merkle.Frontier.from_blob(n + 1, frontier.blob())
        assert (again.size, again.hashes) == (n + 1, want)
        assert again.root() == ROOTS[n + 1]


def _bits(size: int) -> list[tuple[int, int]]:
    """(level, first leaf) of each complete subtree of the frontier of ``size``."""
    out, start = [], 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            out.append((level, start))
            start += 1 << level
    return out


def test_a_frontier_continues_from_a_stored_state() -> None:
    frontier = merkle.Frontier(5, [ROOTS[4], LEAVES[4]])
    assert frontier.root() == ROOTS[5]
    frontier.append(LEAVES[5])
    assert frontier.root() == ROOTS[6]
    assert merkle.Frontier(0, []).root() == ROOTS[0]


def test_a_frontier_refuses_the_wrong_number_of_hashes() -> None:
    with pytest.raises(ProofError, match=_has("a frontier of size 5 has 2 hashes, not 1")):
        merkle.Frontier(5, [ROOTS[4]])
    with pytest.raises(ProofError, match=_has("a frontier of size 0 has 0 hashes, not 1")):
        merkle.Frontier(0, [ROOTS[1]])
    with pytest.raises(ProofError):
        merkle.Frontier(4, [ROOTS[2], ROOTS[2]])
    with pytest.raises(ProofError, match=_has("stored frontier for size 5 has 32 bytes")):
        merkle.Frontier.from_blob(5, ROOTS[4])
    with pytest.raises(ProofError, match=_has("stored frontier for size 1 has 33 bytes")):
        merkle.Frontier.from_blob(1, ROOTS[1] + b"\x00")
    with pytest.raises(ProofError, match=_has("stored frontier for size 0 has 32 bytes")):
        merkle.Frontier.from_blob(0, ROOTS[1])
    assert merkle.Frontier.from_blob(0, b"").root() == ROOTS[0]


# -- sync/checkpoint.py: c2sp.org/signed-note and tlog-checkpoint, as Go's sumdb/note ----------


def _key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def _raw_pub(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _signer(name: str = "log.example/central", seed: int = 1) -> NoteSigner:
    return NoteSigner(name, _key(seed))


def _sig_line(name: str, blob: bytes) -> str:
    return f"\u2014 {name} {base64.b64encode(blob).decode()}\n"


def test_key_id_and_verifier_text_are_go_s() -> None:
    key = _key(7)
    raw = _raw_pub(key)
    want = _sha(b"log.example/x\n\x01" + raw)[:4]
    assert key_id("log.example/x", key.public_key()) == want
    verifier = NoteSigner("log.example/x", key).verifier
    assert verifier.id == want
    b64 = base64.b64encode(b"\x01" + raw).decode()
    assert verifier.text() == f"log.example/x+{want.hex()}+{b64}"


def _key_with_plus_in_base64() -> Ed25519PrivateKey:
    for seed in range(256):
        if "+" in base64.b64encode(b"\x01" + _raw_pub(_key(seed))).decode():
            return _key(seed)
    raise AssertionError("no seed gives a '+' in the key's base64")


def test_verifier_key_whose_base64_holds_a_plus_parses() -> None:
    verifier = NoteSigner("n", _key_with_plus_in_base64()).verifier
    text = verifier.text()
    assert text.count("+") > 2
    parsed = NoteVerifier.parse(text)
    assert (parsed.name, parsed.id, parsed.text()) == ("n", verifier.id, text)
    assert NoteVerifier.parse(f"  {text}\n").text() == text


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\tb", "a\nb", " a", "a\u00a0b"])
def test_bad_key_names_are_refused(name: str) -> None:
    with pytest.raises(SyncProtocolError, match=_has("must be non-empty, no spaces or '+'")):
        NoteSigner(name, _key(1))
    verifier = _signer("ok").verifier
    _, kid, key = verifier.text().split("+", 2)
    with pytest.raises(SyncProtocolError):
        NoteVerifier.parse(f"{name}+{kid}+{key}")


def test_bad_verifier_keys_are_refused_with_a_reason() -> None:
    key = _key(3)
    raw = _raw_pub(key)
    good = NoteSigner("k", key).verifier
    kid = good.id.hex()

    def text(kid: str = kid, blob: bytes = b"\x01" + raw) -> str:
        return f"k+{kid}+{base64.b64encode(blob).decode()}"

    assert NoteVerifier.parse(text()) == good
    with pytest.raises(SyncProtocolError, match=_exact("a verifier key is name+keyid+base64key")):
        NoteVerifier.parse(f"k+{kid}")
    with pytest.raises(SyncProtocolError, match=_has("verifier key 'k' is not valid")):
        NoteVerifier.parse(text(kid="zz" + kid[2:]))
    with pytest.raises(SyncProtocolError, match=_has("verifier key 'k' is not valid")):
        NoteVerifier.parse(f"k+{kid}+AAAA!")
    for blob in (raw, b"\x01" + raw[:31], b"\x01" + raw + b"\x00", b"\x02" + raw):
        with pytest.raises(SyncProtocolError,
                           match=_has("verifier key 'k' is not an Ed25519 note key")):
            NoteVerifier.parse(text(blob=blob))
    for bad_kid in (kid[:6], kid + "00"):
        with pytest.raises(SyncProtocolError, match=_has("is not an Ed25519 note key")):
            NoteVerifier.parse(text(kid=bad_kid))
    other = f"{(int(kid, 16) ^ 1):08x}"
    with pytest.raises(SyncProtocolError, match=_has("verifier key 'k': key ID does not match")):
        NoteVerifier.parse(text(kid=other))


def test_signing_refuses_texts_the_note_format_cannot_hold() -> None:
    signer = _signer()
    with pytest.raises(SyncProtocolError, match=_exact("note text must end with a newline")):
        signer.sign("no newline")
    for bad in ("a\tb\n", "a\rb\n", "\x00\n", "a\x1fb\n", "\x01\n"):
        with pytest.raises(SyncProtocolError, match=_exact("note text holds control characters")):
            signer.sign(bad)
    # spaces, DEL and non-ASCII are text
    for fine in (" \n", "a b\n", "\x7f\n", "\u00e9\u2014\n", "\n", "a\n\nb\n"):
        note = signer.sign(fine)
        assert open_note(note, signer.verifier) == fine


def test_a_note_is_the_text_a_blank_line_and_one_line_per_signature() -> None:
    signer = _signer("n.example")
    text = "hello\nworld\n"
    note = signer.sign(text)
    sig = signer.private_key.sign(text.encode())
    assert note == text + "\n" + _sig_line("n.example", signer.verifier.id + sig)


def test_open_note_size_limit_is_64_kib() -> None:
    signer = _signer("s")
    line_len = len(signer.sign("x\n")) - len("x\n")
    text = "x" * ((1 << 16) - line_len - 1) + "\n"
    note = signer.sign(text)
    assert len(note) == 1 << 16
    assert open_note(note, signer.verifier) == text
    longer = signer.sign("x" + text)
    with pytest.raises(SyncProtocolError, match=_exact("note is too large")):
        open_note(longer, signer.verifier)


def test_open_note_refuses_malformed_notes_with_a_reason() -> None:
    signer = _signer("s")
    v = signer.verifier
    note = signer.sign("t\n")
    sig_line = note[len("t\n\n"):]
    for bad in ("", "t\n", note.rstrip("\n")):
        with pytest.raises(SyncProtocolError,
                           match=_exact("not a signed note: no blank line before signatures")):
            open_note(bad, v)
    with pytest.raises(SyncProtocolError, match=_has("note text holds control characters")):
        open_note("t\x01\n\n" + sig_line, v)
    with pytest.raises(SyncProtocolError,
                       match=_exact("a signed note needs 1 to 16 signature lines")):
        open_note("t\n\n\n", v)
    with pytest.raises(SyncProtocolError, match=_has("1 to 16 signature lines")):
        open_note("t\n\n", v)
    blob5 = _sig_line("stranger", b"12345")
    with pytest.raises(SyncProtocolError, match=_has("1 to 16 signature lines")):
        open_note("t\n\n" + sig_line + blob5 * 16, v)
    assert open_note("t\n\n" + blob5 * 15 + sig_line, v) == "t\n"
    for line in ("\u2014 s\n", "\u2014 s a b\n", "- s AAAAAAA=\n", "\u2014  s AAAAAAA=\n",
                 "\u2014s AAAAAAAA\n", sig_line.replace(" ", "  ", 1)):
        with pytest.raises(SyncProtocolError, match=_starts("malformed signature line")):
            open_note("t\n\n" + sig_line + line, v)
    with pytest.raises(SyncProtocolError, match=_has("malformed signature line '\u2014 s a b'")):
        open_note("t\n\n\u2014 s a b\n", v)
    long_line = "\u2014 x " + "A" * 60 + " y"
    with pytest.raises(SyncProtocolError,
                       match=_exact(f"malformed signature line {long_line[:40]!r}")):
        open_note("t\n\n" + long_line + "\n", v)
    with pytest.raises(SyncProtocolError, match=_starts("signature line is not base64")):
        open_note("t\n\n" + sig_line + "\u2014 x AAAA!AAAA\n", v)
    with pytest.raises(SyncProtocolError, match=_starts("signature line is not base64")):
        open_note("t\n\n\u2014 x AAA\n" + sig_line, v)
    with pytest.raises(SyncProtocolError, match=_exact("signature line too short")):
        open_note("t\n\n" + sig_line + _sig_line("x", b"1234"), v)
    # an unknown signer's five bytes are enough to be a signature line, and are ignored
    assert open_note("t\n\n" + blob5 + sig_line, v) == "t\n"


def test_open_note_checks_only_the_verifier_s_own_signatures() -> None:
    signer = _signer("s", seed=1)
    same_name = _signer("s", seed=2)
    v = signer.verifier
    note = signer.sign("t\n")
    mine = note[len("t\n\n"):]
    theirs = same_name.sign("t\n")[len("t\n\n"):]
    # same name, another key: not this verifier's signature, ignored (before or after)
    assert open_note("t\n\n" + theirs + mine, v) == "t\n"
    assert open_note("t\n\n" + mine + theirs, v) == "t\n"
    # this verifier's key ID under another name: not its signature either
    forged = _sig_line("t", v.id + bytes(64))
    assert open_note("t\n\n" + forged + mine, v) == "t\n"
    # a signature by the verifier that does not verify rejects the note
    bad = _sig_line("s", v.id + bytes(64))
    with pytest.raises(ProofError, match=_exact("note signature by s does not verify")):
        open_note("t\n\n" + mine + bad, v)
    with pytest.raises(ProofError, match=_exact("note signature by s does not verify")):
        open_note("t\n\n" + bad + mine, v)
    # signatures by others only: not signed
    with pytest.raises(ProofError, match=_exact("note is not signed by s")):
        open_note("t\n\n" + theirs + forged, v)
    # the signature covers exactly the text (up to and including its last newline)
    with pytest.raises(ProofError, match=_has("does not verify")):
        open_note("t\n\n\n" + mine, v)
    with pytest.raises(ProofError, match=_has("does not verify")):
        open_note("u\n\n" + mine, v)


def _root(n: int) -> bytes:
    return ROOTS[n]


def test_checkpoint_body_is_three_lines_and_extensions() -> None:
    root = _root(3)
    b64 = base64.b64encode(root).decode()
    assert Checkpoint("o", 3, root).body() == f"o\n3\n{b64}\n"
    cp = Checkpoint("o", 0, root, ("ext one", "ext two"))
    assert cp.body() == f"o\n0\n{b64}\next one\next two\n"
    assert Checkpoint.parse_body(cp.body()) == cp
    assert Checkpoint.parse_body(f"o\n3\n{b64}\n") == Checkpoint("o", 3, root, ())
    assert Checkpoint.parse_body(f"o\n10\n{b64}\n").size == 10
    assert Checkpoint.parse_body(f"o\n0\n{b64}\n").size == 0


def test_checkpoint_bodies_are_refused_with_a_reason() -> None:
    b64 = base64.b64encode(_root(3)).decode()
    for bad in ("", "o\n", "o\n3\n", f"o\n3\n{b64}", f"o\n3\n{b64}\nx"):
        with pytest.raises(SyncProtocolError,
                           match=_exact("checkpoint body needs origin, size and root lines")):
            Checkpoint.parse_body(bad)
    with pytest.raises(SyncProtocolError, match=_exact("checkpoint origin is empty")):
        Checkpoint.parse_body(f"\n3\n{b64}\n")
    for size in ("", "00", "01", "-1", "+1", " 1", "1 ", "x"):
        with pytest.raises(SyncProtocolError,
                           match=_has(f"checkpoint size '{size}' is not a decimal")):
            Checkpoint.parse_body(f"o\n{size}\n{b64}\n")
    with pytest.raises(SyncProtocolError, match=_has(f"checkpoint size '0{'1' * 19}' is not")):
        Checkpoint.parse_body(f"o\n0{'1' * 24}\n{b64}\n")
    with pytest.raises(SyncProtocolError, match=_starts("checkpoint root is not base64")):
        Checkpoint.parse_body(f"o\n3\n{b64[:-1]}!\n")
    with pytest.raises(SyncProtocolError, match=_starts("checkpoint root is not base64")):
        Checkpoint.parse_body(f"o\n3\n{b64[:4]}!{b64[4:]}\n")
    for n in (31, 33, 0):
        short = base64.b64encode(bytes(n)).decode()
        with pytest.raises(SyncProtocolError,
                           match=_exact(f"checkpoint root is {n} bytes, not 32")):
            Checkpoint.parse_body(f"o\n3\n{short}\n")


def test_checkpoint_size_is_ascii_decimal_only() -> None:
    # c2sp.org/tlog-checkpoint: the size is ASCII decimal. str.isdigit() alone also takes
    # Arabic-Indic or fullwidth digits (which int() reads) and superscripts (which int()
    # refuses with a bare ValueError).
    b64 = base64.b64encode(_root(3)).decode()
    for size in ("\u0663", "1\u0660", "\u00b2", "\uff11"):
        with pytest.raises(SyncProtocolError,
                           match=_has(f"checkpoint size {size!r} is not a decimal")):
            Checkpoint.parse_body(f"o\n{size}\n{b64}\n")


def test_checkpoint_origin_is_the_key_name_unless_given() -> None:
    signer = _signer("central")
    root = _root(5)
    note = Checkpoint("central", 5, root).sign(signer)
    assert note == signer.sign(Checkpoint("central", 5, root).body())
    assert Checkpoint.verify(note, signer.verifier) == Checkpoint("central", 5, root)
    elsewhere = Checkpoint("log.example/other", 5, root).sign(signer)
    with pytest.raises(ProofError, match=_exact("checkpoint is for log 'log.example/other', "
                                                "not 'central'")):
        Checkpoint.verify(elsewhere, signer.verifier)
    cp = Checkpoint.verify(elsewhere, signer.verifier, origin="log.example/other")
    assert cp == Checkpoint("log.example/other", 5, root)
    with pytest.raises(ProofError, match=_has("not 'log.example/other'")):
        Checkpoint.verify(note, signer.verifier, origin="log.example/other")
    with pytest.raises(ProofError, match=_has("not ''")):
        Checkpoint.verify(note, signer.verifier, origin="")
