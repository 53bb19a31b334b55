"""Fuzz the EMVCo CPM parser: any text gives a parsed code or QRFormatError.

With bit 0 of the first byte set, the rest is Base64-encoded behind ``85 05 "CPV01"`` so the
fuzzer exercises the BER-TLV rules; otherwise the bytes are tried as text directly.
"""

from __future__ import annotations

import base64
import sys

import atheris

with atheris.instrument_imports():
    from localpay.errors import QRFormatError
    from terminal.qr import cpm


def test_one_input(data: bytes) -> None:
    if not data:
        return
    steer, rest = data[0], data[1:]
    if steer & 1:
        text = base64.b64encode(b"\x85\x05CPV01" + rest).decode("ascii")
    else:
        text = rest.decode("utf-8", errors="replace")
    try:
        code = cpm.parse(text)
    except QRFormatError:
        return
    try:
        code.pan()
    except QRFormatError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
