"""Fuzz the BER-TLV decoder and the DOL parser: any input gives a result or TLVError.

Run: ``python tools/fuzz_tlv.py -max_total_time=60`` (libFuzzer options, via atheris).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from localpay.errors import TLVError
    from terminal import tlv
    from terminal.emv import dol


def test_one_input(data: bytes) -> None:
    try:
        objs = tlv.decode(data, padding=bool(data[:1] == b"\x00"))
    except TLVError:
        pass
    else:
        if not isinstance(objs, list):
            raise TypeError("decode must return a list")
        tlv.encode(objs)  # whatever decodes must encode again
    try:
        dol.build(data, {0x9F02: b"\x00\x00\x00\x01\x00\x00"})
    except TLVError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
