"""Data Object Lists: parsing a DOL and building the data it asks for.

EMV 4.3 Book 3 §5.4: a DOL is a list of (tag, length) with no values. The terminal
answers with the concatenated values, each fitted to the requested length:

- missing data (or a constructed tag): that many ``00`` bytes;
- shorter than asked: numeric (format n) gets leading ``00``; compressed numeric (cn)
  trailing ``FF``; anything else trailing ``00``;
- longer than asked: numeric is cut on the left, everything else on the right.
"""

from __future__ import annotations

from collections.abc import Mapping

from localpay.errors import TLVError
from terminal.tlv import is_constructed, read_tag

#: tags whose format is n (BCD numbers, right-aligned), Book 3 Annex A
NUMERIC_TAGS = frozenset({
    0x9F02, 0x9F03, 0x5F2A, 0x5F36, 0x9A, 0x9C, 0x9F1A, 0x9F21, 0x9F15, 0x9F1B, 0x9F3C,
    0x9F3D, 0x9F41, 0x5F24, 0x5F25, 0x5F28, 0x9F42, 0x9F44, 0x5F34, 0x9F11, 0x9F39, 0x9F35,
})
#: tags whose format is cn (compressed numeric, left-aligned, F-padded)
COMPRESSED_NUMERIC_TAGS = frozenset({0x5A, 0x9F20})


def parse(dol: bytes) -> list[tuple[int, int]]:
    """The (tag, length) pairs of a DOL; :class:`TLVError` if it is malformed."""
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(dol):
        tag, i = read_tag(dol, i)
        if i >= len(dol):
            raise TLVError(f"DOL entry for tag {tag:X} has no length")
        length = dol[i]
        i += 1
        out.append((tag, length))
    return out


def fit(tag: int, value: bytes, length: int) -> bytes:
    """Fit one value to the length a DOL asks for (Book 3 §5.4)."""
    if len(value) == length:
        return value
    numeric = tag in NUMERIC_TAGS
    if len(value) > length:
        return value[len(value) - length :] if numeric else value[:length]
    pad = length - len(value)
    if numeric:
        return b"\x00" * pad + value
    if tag in COMPRESSED_NUMERIC_TAGS:
        return value + b"\xff" * pad
    return value + b"\x00" * pad


def build(dol: bytes | list[tuple[int, int]], values: Mapping[int, bytes]) -> bytes:
    """The data a DOL asks for, from the terminal's ``values`` (tag -> value)."""
    entries = parse(dol) if isinstance(dol, (bytes, bytearray)) else dol
    out = bytearray()
    for tag, length in entries:
        value = values.get(tag)
        if value is None or is_constructed(tag):
            out += b"\x00" * length
        else:
            out += fit(tag, value, length)
    return bytes(out)


def total_length(dol: bytes) -> int:
    return sum(length for _, length in parse(dol))


def bcd(number: int, length: int) -> bytes:
    """An unsigned number as ``length`` bytes of packed BCD (format n)."""
    if number < 0:
        raise ValueError("BCD numbers are unsigned")
    digits = str(number).rjust(length * 2, "0")
    if len(digits) > length * 2:
        raise ValueError(f"{number} does not fit in {length} BCD bytes")
    return bytes.fromhex(digits)
