"""Fuzz the EMVCo MPM parser: any text gives a parsed code or QRFormatError.

The first byte steers the input: with bit 0 set, the text gets a correct CRC appended, so
the fuzzer reaches the data-object rules behind the checksum; with bit 1 set it starts with
the Payload Format Indicator ``000201``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from localpay.errors import QRFormatError
    from terminal.qr import mpm
    from terminal.qr.crc import crc16_hex


def test_one_input(data: bytes) -> None:
    if not data:
        return
    steer, rest = data[0], data[1:]
    text = rest.decode("utf-8", errors="replace")
    if steer & 2:
        text = "000201" + text
    if steer & 1:
        text = text + "6304"
        text += crc16_hex(text)
    try:
        parsed = mpm.parse(text)
    except QRFormatError:
        return
    if parsed.payload != text.strip():  # white space around a scanned code is dropped
        raise AssertionError("parse must keep the payload")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
