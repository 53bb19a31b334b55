"""CRC-16/CCITT-FALSE, the checksum of EMVCo merchant-presented QR codes.

EMV QRCPS MPM §4.7.3 (ID "63"): ISO/IEC 13239 polynomial 0x1021, initial value 0xFFFF,
no reflection, no final XOR, over the UTF-8 bytes of every data object up to and including
the CRC's own ID and length ("6304"), shown as four upper-case hex digits.
Check value: ``crc16(b"123456789") == 0x29B1``.
"""

from __future__ import annotations


def _table() -> tuple[int, ...]:
    out = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        out.append(crc & 0xFFFF)
    return tuple(out)


_TABLE = _table()


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def crc16_hex(text: str) -> str:
    """The four-character CRC value for ``text`` (which ends in ``6304``)."""
    return f"{crc16(text.encode('utf-8')):04X}"
