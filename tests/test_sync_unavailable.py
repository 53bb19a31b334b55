"""An unsigned HTTP 500 is an outage, retried, not a forgery.

A proxy in front of the service, or a server failing before the service could answer,
gives a plain ``500 Internal Server Error``. The terminal took it for an answer not signed by
the service (``ProofError``): no retry within the round, and its sync loop waited its
longest pause and logged that a person was needed. 502, 503 and 504 were already retried;
500 now is too, on the batches route and on the answer key's. A forger gains nothing: it
could as well drop the connection.

Against a real ``central serve``; the transport below stands in for the proxy in front of it
(answering the first requests of a route itself, forwarding the rest).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from localpay.errors import SyncUnavailableError
from offline_ledger import Ledger
from sync.client import Backoff, SyncClient
from sync.protocol import ANSWER_KEY_PATH
from tests.pg_fixtures import CentralProcess, central_with_terminal, fill_ledger

TID = "BUS-500"
N = 30


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[CentralProcess, Ed25519PrivateKey]]:
    with central_with_terminal(tmp_path, TID) as (server, key, _, _):
        yield server, key


class FailingProxy(httpx.BaseTransport):
    """Answers the first ``times`` requests to ``path`` with a plain ``status``, as nginx
    does when its upstream fails; forwards everything else."""

    def __init__(self, path: str, times: int, status: int = 500) -> None:
        self.inner = httpx.HTTPTransport()
        self.path, self.left, self.status = path, times, status
        self.failed = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == self.path and self.left > 0:
            self.left -= 1
            self.failed += 1
            return httpx.Response(self.status, text="<html><body><h1>500 Internal Server "
                                  "Error</h1></body></html>", headers={"Content-Type": "text/html"})
        return self.inner.handle_request(request)


@pytest.mark.parametrize("path", ["/v1/batches", ANSWER_KEY_PATH])
def test_an_unsigned_500_is_retried_within_the_round(
        stack: tuple[CentralProcess, Ed25519PrivateKey], tmp_path: Path, path: str) -> None:
    server, key = stack
    ledger = tmp_path / "ledger.sqlite"
    fill_ledger(ledger, key, TID, N).close()
    proxy = FailingProxy(path, times=2)
    with SyncClient(ledger, key, server.url, server.verifier, max_retries=3,
                    backoff=Backoff(base=0.01), transport=proxy) as client:
        summary = client.sync_once()
    assert proxy.failed == 2 and summary.retries == 2
    # Held once: central's log is this terminal's N entries. When the answer key failed,
    # the batch had been held before its answer could be checked: the retry is answered as
    # the duplicate it is.
    assert summary.tree_size == summary.synced_upto == N
    assert (summary.sent, summary.duplicates) == ((N, 0) if path == "/v1/batches" else (0, 1))
    with Ledger(ledger, key=key) as held:
        assert held.synced_upto() == N


def test_a_lasting_unsigned_500_ends_the_round_as_unavailable(
        stack: tuple[CentralProcess, Ed25519PrivateKey], tmp_path: Path) -> None:
    server, key = stack
    ledger = tmp_path / "ledger.sqlite"
    fill_ledger(ledger, key, TID, N).close()
    proxy = FailingProxy("/v1/batches", times=100)
    with SyncClient(ledger, key, server.url, server.verifier, max_retries=2,
                    backoff=Backoff(base=0.01), transport=proxy) as client:
        with pytest.raises(SyncUnavailableError, match=r"^POST /v1/batches: HTTP 500$"):
            client.sync_once()
    assert proxy.failed == 3  # the first try and two retries
    with Ledger(ledger, key=key) as held:
        assert held.synced_upto() == 0
