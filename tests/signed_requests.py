"""Requests signed as a terminal signs them (:mod:`sync.protocol`), for the tests that call a
real ``localpay central serve`` over HTTP."""

from __future__ import annotations

import time

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.protocol import H_NONCE, H_SIGNATURE, H_TERMINAL, H_TIME, b64, new_nonce, request_message


def signed_headers(key: Ed25519PrivateKey, terminal: str, method: str, path: str,
                   body: bytes = b"") -> dict[str, str]:
    """The headers of ``terminal``'s request signed by ``key`` now, with a fresh nonce."""
    nonce, now = new_nonce(), int(time.time() * 1000)
    sig = key.sign(request_message(method, path, now, nonce, body))
    return {H_TERMINAL: terminal, H_TIME: str(now), H_NONCE: nonce, H_SIGNATURE: b64(sig)}


def signed(url: str, key: Ed25519PrivateKey, terminal: str, method: str, path: str,
           body: bytes = b"", request_id: str | None = None,
           timeout: float = 20) -> httpx.Response:
    """``terminal``'s request to the service at ``url``, signed by ``key``."""
    headers = signed_headers(key, terminal, method, path, body)
    if request_id:
        headers["X-Request-ID"] = request_id
    return httpx.request(method, url + path, content=body, headers=headers, timeout=timeout)
