"""The keyed card token, defined once for both sides that compute it.

A terminal turns a PAN, a UID or a wallet id into its token at read time
(:mod:`terminal.cards`); the central service's console turns a PAN the call centre types
into the same token (:mod:`central.console`). Both need the same function and neither may
import the other (see DESIGN.md), so it lives here, below both. PCI DSS 3.5.1: the full
PAN is never kept, only this keyed hash of it.
"""

from __future__ import annotations

import hashlib
import hmac

#: the namespaces a token is made in: a UID never collides with a PAN
PAN, UID, WALLET = "pan", "uid", "wallet"


def card_token(token_key: bytes, namespace: str, value: bytes | str) -> str:
    """The keyed token of a card number or UID: HMAC-SHA-256, hex, first 32 characters.

    ``namespace`` ("pan", "uid", "wallet") keeps a UID from ever colliding with a PAN.
    """
    raw = value.encode() if isinstance(value, str) else value
    return hmac.digest(token_key, namespace.encode() + b":" + raw, hashlib.sha256).hex()[:32]
