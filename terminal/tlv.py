"""BER-TLV as EMV uses it (EMV 4.3 Book 3 Annex B; ISO/IEC 8825-1 definite lengths).

``decode`` and ``encode`` are a symmetric pair: ``decode(encode(objs)) == objs`` for every
list of :class:`Tlv`, and ``encode(decode(data)) == data`` for every canonically encoded
``data`` (minimal lengths, no padding). Anything malformed or truncated raises
:class:`~localpay.errors.TLVError`, and only that: a parser here always returns a list.

- Tags: one byte, or several when the low five bits of the first are all set (``xx1F``);
  following bytes have b8 set while more follow (Annex B1). At most four bytes.
- Lengths: short form (< 128) or long form ``81``-``84`` (Annex B2). The indefinite form
  ``80`` is not allowed in EMV and is an error.
- Constructed objects (b6 of the first tag byte set) are decoded recursively into
  ``children``; nesting deeper than :data:`MAX_DEPTH` is an error, never a RecursionError.
- Between objects, ``00`` bytes are padding and are skipped when ``padding=True``
  (Book 3 Annex B: "00" may precede, follow or sit between TLV objects of a record).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from localpay.errors import TLVError

MAX_DEPTH = 16
MAX_TAG_BYTES = 4


@dataclass(frozen=True, slots=True)
class Tlv:
    """One data object. ``children`` is set (possibly empty) exactly when it is constructed."""

    tag: int
    value: bytes
    children: tuple[Tlv, ...] | None = None

    @property
    def constructed(self) -> bool:
        return is_constructed(self.tag)

    @property
    def tag_hex(self) -> str:
        return tag_bytes(self.tag).hex().upper()

    def find(self, tag: int) -> Tlv | None:
        """The first object with ``tag`` among the children, depth first."""
        return find(self.children or (), tag)

    @classmethod
    def build(cls, tag: int, value: bytes | Iterable[Tlv]) -> Tlv:
        """A primitive object from bytes, or a constructed one from its children."""
        if isinstance(value, (bytes, bytearray)):
            if is_constructed(tag):
                kids = tuple(decode(bytes(value)))
                return cls(tag, bytes(value), kids)
            return cls(tag, bytes(value))
        kids = tuple(value)
        return cls(tag, encode(kids), kids)


def tag_bytes(tag: int) -> bytes:
    """The encoded form of a tag number (as written in the specs, e.g. 0x9F36)."""
    if tag < 0 or tag > 0xFFFFFFFF:
        raise TLVError(f"tag {tag:#x} is out of range")
    return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")


def is_constructed(tag: int) -> bool:
    return bool(tag_bytes(tag)[0] & 0x20)


def encode_length(n: int) -> bytes:
    """Minimal definite length (Book 3 Annex B2)."""
    if n < 0x80:
        return bytes([n])
    size = (n.bit_length() + 7) // 8
    if size > 4:
        raise TLVError(f"a value of {n} bytes is too long for BER-TLV")
    return bytes([0x80 | size]) + n.to_bytes(size, "big")


def encode_one(tag: int, value: bytes) -> bytes:
    return tag_bytes(tag) + encode_length(len(value)) + value


def encode(objs: Iterable[Tlv]) -> bytes:
    """Encode objects in order; a constructed object's children are re-encoded."""
    out = bytearray()
    for obj in objs:
        value = encode(obj.children) if obj.children is not None else obj.value
        out += encode_one(obj.tag, value)
    return bytes(out)


def read_tag(data: bytes, i: int, end: int | None = None) -> tuple[int, int]:
    """Read a tag at ``data[i]`` (not past ``end``); return (tag, index after it)."""
    n = len(data) if end is None else end
    if i >= n:
        raise TLVError(f"tag expected at offset {i}, data ends")
    start = i
    first = data[i]
    i += 1
    if first & 0x1F == 0x1F:
        while True:
            if i >= n:
                raise TLVError(f"tag at offset {start} is truncated")
            b = data[i]
            i += 1
            if i - start > MAX_TAG_BYTES:
                raise TLVError(f"tag at offset {start} is longer than {MAX_TAG_BYTES} bytes")
            if not b & 0x80:
                break
    return int.from_bytes(data[start:i], "big"), i


def read_length(data: bytes, i: int, end: int | None = None) -> tuple[int, int]:
    """Read a definite length at ``data[i]`` (not past ``end``); return (length, next index)."""
    n = len(data) if end is None else end
    if i >= n:
        raise TLVError(f"length expected at offset {i}, data ends")
    first = data[i]
    i += 1
    if first < 0x80:
        return first, i
    size = first & 0x7F
    if size == 0:
        raise TLVError(f"indefinite length at offset {i - 1} is not allowed in EMV")
    if size > 4:
        raise TLVError(f"length of {size} bytes at offset {i - 1} is not supported")
    if i + size > n:
        raise TLVError(f"length at offset {i - 1} is truncated")
    return int.from_bytes(data[i : i + size], "big"), i + size


def decode(data: bytes, *, padding: bool = False) -> list[Tlv]:
    """Decode a sequence of BER-TLV objects (constructed ones recursively)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TLVError(f"BER-TLV input must be bytes, not {type(data).__name__}")
    return _decode(bytes(data), 0, len(data), 0, padding)


def _decode(data: bytes, i: int, end: int, depth: int, padding: bool) -> list[Tlv]:
    if depth > MAX_DEPTH:
        raise TLVError(f"constructed objects nested deeper than {MAX_DEPTH}")
    out: list[Tlv] = []
    while i < end:
        if padding and data[i] == 0x00:
            i += 1
            continue
        tag, j = read_tag(data, i, end)
        length, j = read_length(data, j, end)
        if j + length > end:
            raise TLVError(
                f"tag {tag:X} at offset {i} says {length} bytes, only {end - j} remain"
            )
        value = data[j : j + length]
        if data[i] & 0x20:
            kids = tuple(_decode(data, j, j + length, depth + 1, padding))
            out.append(Tlv(tag, value, kids))
        else:
            out.append(Tlv(tag, value))
        i = j + length
    return out


def find(objs: Iterable[Tlv], tag: int) -> Tlv | None:
    """The first object with ``tag``, searching constructed objects depth first."""
    for obj in objs:
        if obj.tag == tag:
            return obj
        if obj.children:
            hit = find(obj.children, tag)
            if hit is not None:
                return hit
    return None


def walk(objs: Iterable[Tlv]) -> Iterator[Tlv]:
    """Every object, parents before their children."""
    for obj in objs:
        yield obj
        if obj.children:
            yield from walk(obj.children)


def decode_single(data: bytes, tag: int | None = None) -> Tlv:
    """Exactly one object filling ``data`` (optionally with the expected ``tag``)."""
    objs = decode(data)
    if len(objs) != 1:
        raise TLVError(f"expected one data object, found {len(objs)}")
    if tag is not None and objs[0].tag != tag:
        raise TLVError(f"expected tag {tag:X}, found {objs[0].tag:X}")
    return objs[0]
