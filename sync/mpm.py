"""The till's side of online QR payments on the wire (central.mpm_payments): open the sale
its code shows, then long-poll central until the citizen's app has paid it.

Both are signed terminal requests through :class:`sync.client.SyncClient`, tried once each:
the till's screen, not a retry loop with backoff, decides what to do with no network
(:mod:`terminal.mpm_online`).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from localpay.errors import SyncProtocolError, SyncUnavailableError
from sync.client import SyncClient

#: the longest wait asked of central per request; below the client's HTTP timeout
MAX_WAIT_S = 20


class MpmLink:
    """Open and wait for online QR payments of one till over its sync client."""

    def __init__(self, client: SyncClient, terminal_id: str) -> None:
        self.client = client
        client.terminal_id = terminal_id
        self.closed = False

    def shut(self) -> None:
        """No more calls (the kiosk is stopping): each one from now on fails as no network.
        The client is its owner's to close."""
        self.closed = True

    def _call(self, method: str, path: str, body: bytes = b"") -> dict[str, Any]:
        if self.closed:
            raise SyncUnavailableError("the online QR link is closed")
        # one attempt: SyncClient._request would back off for minutes while a customer waits
        doc = self.client._request_once(method, path, body)
        if not isinstance(doc, dict):
            raise SyncProtocolError(f"{method} {path}: the answer is not an object")
        return doc

    def open(self, reference: str, amount: int) -> None:
        """Tell central that this till shows ``reference`` for ``amount`` won."""
        body = json.dumps({"reference": reference, "amount": amount},
                          separators=(",", ":")).encode()
        self._call("POST", "/v1/mpm-open", body)

    def wait(self, reference: str, wait_s: float) -> str | None:
        """The central payment's id once ``reference`` is paid, waiting up to ``wait_s``
        seconds at central; None while it is still open."""
        wait = max(0, min(int(wait_s), MAX_WAIT_S))
        doc = self._call("GET", f"/v1/mpm-payments/{quote(reference, safe='')}?wait={wait}")
        if doc.get("status") == "paid" and isinstance(doc.get("payment"), str):
            return str(doc["payment"])
        return None

    def close(self, reference: str) -> str | None:
        """Stop ``reference`` being paid; the payment's id when the app paid it first."""
        body = json.dumps({"reference": reference}, separators=(",", ":")).encode()
        doc = self._call("POST", "/v1/mpm-close", body)
        if doc.get("status") == "paid" and isinstance(doc.get("payment"), str):
            return str(doc["payment"])
        return None
