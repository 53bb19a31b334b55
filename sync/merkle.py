"""The central chain's Merkle tree: RFC 9162 §2.1 hashing, proofs and their verification.

``leaf = SHA-256(0x00 || data)``, ``node = SHA-256(0x01 || left || right)``; a tree of ``n``
leaves splits at ``k``, the largest power of two below ``n`` (RFC 9162 §2.1.1).

The proof functions name what they need as *ranges* ``(begin, end)`` of leaves: each range is
a subtree of the RFC 9162 tree and its hash is folded from the complete, aligned subtrees
that :func:`range_nodes` lists as ``(level, index)``. A store that keeps every complete
subtree hash (see :class:`Frontier`, which yields them as leaves are appended) can answer any
proof with O(log n) lookups and no rehashing of leaves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from localpay.errors import ProofError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

#: ``(level, index)`` of a complete, aligned subtree: leaves ``index << level`` up to
#: ``(index + 1) << level``.
NodeId = tuple[int, int]
NodeSource = Callable[[list[NodeId]], dict[NodeId, bytes]]


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 §2.1.1: the hash of a leaf entry."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: the hash of an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 §2.1.1 over already hashed leaves."""
    if not leaf_hashes:
        return EMPTY_ROOT
    frontier = Frontier()
    for h in leaf_hashes:
        frontier.append(h)
    return frontier.root()


# -- proof shapes ----------------------------------------------------------------------------


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form PATH(index, D[size]), RFC 9162 §2.1.3.1, leaf first."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of size {size}")
    out: list[tuple[int, int]] = []
    begin, end, m = 0, size, index
    while end - begin > 1:
        k = _split(end - begin)
        if m < k:
            out.append((begin + k, end))
            end = begin + k
        else:
            out.append((begin, begin + k))
            begin, m = begin + k, m - k
    out.reverse()
    return out


def consistency_ranges(m: int, n: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form PROOF(m, D[n]), RFC 9162 §2.1.4.1, in order."""
    if not 0 <= m <= n:
        raise ProofError(f"no consistency proof from size {m} to size {n}")
    if m == 0 or m == n:
        return []
    out: list[tuple[int, int]] = []
    begin, end, mm, complete = 0, n, m, True
    while mm != end - begin:
        k = _split(end - begin)
        if mm <= k:
            out.append((begin + k, end))
            end = begin + k
        else:
            out.append((begin, begin + k))
            begin, mm, complete = begin + k, mm - k, False
    if not complete:
        out.append((begin, end))
    out.reverse()
    return out


def range_nodes(begin: int, end: int) -> list[NodeId]:
    """The complete aligned subtrees that make up the RFC 9162 subtree ``[begin, end)``,
    largest first. ``begin`` must be a multiple of the subtree's split size, which every
    range from :func:`inclusion_ranges` and :func:`consistency_ranges` is."""
    out: list[NodeId] = []
    pos = begin
    while pos < end:
        level = (end - pos).bit_length() - 1
        while pos & ((1 << level) - 1):
            level -= 1
        out.append((level, pos >> level))
        pos += 1 << level
    return out


def fold(hashes: Sequence[bytes]) -> bytes:
    """Hash of a subtree from its complete subtrees, largest first (right-leaning fold)."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def resolve(ranges: Sequence[tuple[int, int]], source: NodeSource) -> list[bytes]:
    """Hashes of ``ranges`` from a store's ``source``, with one call to it."""
    wanted = [[*range_nodes(b, e)] for b, e in ranges]
    flat = sorted({node for nodes in wanted for node in nodes})
    got = source(flat)
    missing = [node for node in flat if node not in got]
    if missing:
        raise ProofError(f"the store lacks tree nodes {missing[:4]}")
    return [fold([got[node] for node in nodes]) for nodes in wanted]


def _leaf_source(leaves: Sequence[bytes]) -> NodeSource:
    def source(nodes: list[NodeId]) -> dict[NodeId, bytes]:
        out = {}
        for level, idx in nodes:
            lo = idx << level
            out[(level, idx)] = root(leaves[lo : lo + (1 << level)])
        return out

    return source


def inclusion_proof(
    index: int, size: int, leaves: Sequence[bytes] | NodeSource
) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1, from leaf hashes or a node source."""
    source = leaves if callable(leaves) else _leaf_source(leaves)
    return resolve(inclusion_ranges(index, size), source)


def consistency_proof(m: int, n: int, leaves: Sequence[bytes] | NodeSource) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 §2.1.4.1, from leaf hashes or a node source."""
    source = leaves if callable(leaves) else _leaf_source(leaves)
    return resolve(consistency_ranges(m, n), source)


# -- verification ----------------------------------------------------------------------------


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """RFC 9162 §2.1.3.2; raises :class:`ProofError` unless ``leaf`` is at ``index``."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree is deep")
    if r != root_hash:
        raise ProofError(f"inclusion proof for leaf {index} does not lead to the root")


def verify_consistency(
    m: int, n: int, root_m: bytes, root_n: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2; raises :class:`ProofError` unless tree ``n`` extends tree ``m``."""
    if not 0 <= m <= n:
        raise ProofError(f"size {m} cannot be a prefix of size {n}")
    if m == n:
        if proof:
            raise ProofError("a consistency proof between equal sizes must be empty")
        if root_m != root_n:
            raise ProofError(f"two different roots for the same size {n}")
        return
    if m == 0:
        if proof:
            raise ProofError("a consistency proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("empty consistency proof")
    path = list(proof)
    if m & (m - 1) == 0:
        path.insert(0, root_m)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != root_m:
        raise ProofError(f"consistency proof does not lead to the old root of size {m}")
    if sr != root_n:
        raise ProofError(f"consistency proof does not lead to the new root of size {n}")


# -- appending -------------------------------------------------------------------------------


class Frontier:
    """The compact range of a tree: one hash per set bit of ``size``, largest subtree first.

    Appending costs amortised two hashes per leaf, and :meth:`append` returns every complete
    subtree it finishes, so that a store can keep them for proofs.
    """

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        self.size = size
        self.hashes = list(hashes)
        if len(self.hashes) != size.bit_count():
            raise ProofError(
                f"a frontier of size {size} has {size.bit_count()} hashes, not "
                f"{len(self.hashes)}"
            )

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; return the new complete subtrees as ``(level, index, hash)``."""
        n = self.size
        made = [(0, n, leaf)]
        h = leaf
        level = 0
        while (n >> level) & 1:
            h = node_hash(self.hashes.pop(), h)
            level += 1
            made.append((level, n >> level, h))
        self.hashes.append(h)
        self.size = n + 1
        return made

    def root(self) -> bytes:
        return fold(self.hashes) if self.hashes else EMPTY_ROOT

    def blob(self) -> bytes:
        return b"".join(self.hashes)

    @classmethod
    def from_blob(cls, size: int, blob: bytes) -> Frontier:
        if len(blob) != HASH_SIZE * size.bit_count():
            raise ProofError(f"stored frontier for size {size} has {len(blob)} bytes")
        return cls(size, [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)])
