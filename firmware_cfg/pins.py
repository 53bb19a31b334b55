"""Clerks' PINs as the config keeps them: salted scrypt hashes (RFC 7914), never the PIN.

``pin_hash = "scrypt$LOG2N$R$P$SALT$HASH"`` (hex) in a ``[[clerk]]`` table
(:class:`firmware_cfg.config.ClerkSection`), made by ``localpay clerk hash-pin`` and checked
at the till (:mod:`kiosk_ui.clerks`). Standard library only: the CLI, the config and the
kiosk share it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

#: what a clerk types: 4 to 8 digits (the till's keypad has nothing else)
PIN_FORM = re.compile(r"[0-9]{4,8}")
#: scrypt (RFC 7914) at 16 MiB: tens of milliseconds per try at the till, and per guess
#: for whoever holds a copy of the bundle. A PIN has few values, so this only slows an
#: offline search; at the till the lockout (kiosk_ui.clerks) is what stops guessing.
SCRYPT = (14, 8, 1)
PIN_HASH = re.compile(r"scrypt\$([0-9]{1,2})\$([0-9]{1,2})\$([0-9]{1,2})\$([0-9a-f]{32})"
                       r"\$([0-9a-f]{64})")


def hash_pin(pin: str, salt: bytes | None = None) -> str:
    """``pin`` as a ``pin_hash`` value, with a fresh 16-byte salt unless one is given."""
    log2n, r, p = SCRYPT
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=1 << log2n, r=r, p=p, dklen=32)
    return f"scrypt${log2n}${r}${p}${salt.hex()}${digest.hex()}"


def pin_matches(pin_hash: str, pin: str) -> bool:
    """Whether ``pin`` is the one ``pin_hash`` was made from (in constant time)."""
    m = PIN_HASH.fullmatch(pin_hash)
    if m is None:
        return False
    log2n, r, p = (int(m[i]) for i in (1, 2, 3))
    digest = hashlib.scrypt(pin.encode(), salt=bytes.fromhex(m[4]), n=1 << log2n, r=r, p=p,
                            dklen=32)
    return hmac.compare_digest(digest, bytes.fromhex(m[5]))


def pin_hash_ok(text: str) -> bool:
    """Whether ``text`` is a ``pin_hash`` of this form with sane parameters."""
    m = PIN_HASH.fullmatch(text)
    return m is not None and 10 <= int(m[1]) <= 20 and int(m[2]) >= 1 and int(m[3]) >= 1
