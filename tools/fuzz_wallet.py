"""Fuzz the wallet-code decoder and verifier: any text gives a code or QRFormatError.

With bit 0 of the first byte set the rest is Base32-encoded behind ``LPW1:`` (reaching the
field checks); with bit 1 also, the body is signed first, so the checks after the signature
(the time window) run too.
"""

from __future__ import annotations

import base64
import sys

import atheris

with atheris.instrument_imports():
    from firmware_cfg.keys import demo_issuer_key
    from localpay.errors import QRFormatError
    from terminal.qr import wallet

KEY = demo_issuer_key()
PUBLIC = [KEY.public_key()]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    steer, rest = data[0], data[1:]
    if steer & 1:
        raw = rest + (KEY.sign(wallet.DOMAIN + rest) if steer & 2 else b"")
        text = wallet.PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=")
    else:
        text = rest.decode("utf-8", errors="replace")
    try:
        code = wallet.verify(text, PUBLIC)
    except QRFormatError:
        return
    wallet.time_problem(code, 1_790_000_000_000, 30)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
