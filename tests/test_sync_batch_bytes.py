"""A batch never outgrows the service's body limit (issue #18).

The service refuses a request body over its limit (``central serve --max-body``, 8 MiB by
default) before reading it. A terminal with unusually large entries used to send 500 of them
in one batch whatever their size, and the same refused batch again at every round: its
backlog never reached central. The sync client now cuts a batch at a byte cap
(``SyncClient(max_batch_bytes=...)``, 4 MiB by default). Against a real ``central serve``
whose limit is set low, so that ordinary entries stand for large ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from central import open_service
from firmware_cfg.keys import public_hex
from localpay.cli.bench.stacks import start_central
from sync.client import MAX_BATCH_BYTES, SyncClient
from sync.protocol import batch_body
from tests.pg_fixtures import fill_ledger, new_terminal_key

LIMIT = 20_000  # bytes the service reads; 120 taps encode to about 40,000


class Bodies(httpx.HTTPTransport):
    """The real transport, noting the size of each batch body sent."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/batches":
            self.batches.append(len(request.read()))
        return super().handle_request(request)


def test_a_backlog_larger_than_the_body_limit_goes_in_batches_under_it(tmp_path: Path) -> None:
    db, data = f"sqlite:///{tmp_path / 'central.sqlite'}", tmp_path / "data"
    key = new_terminal_key()
    svc = open_service(db, data)
    svc.add_terminal("BUS-1", bytes.fromhex(public_hex(key)))
    svc.store.close()
    ledger_path = tmp_path / "ledger.sqlite"
    ledger = fill_ledger(ledger_path, key, "BUS-1", 120)
    entries = list(ledger.entries(1, 120))
    ledger.close()
    whole = len(batch_body("BUS-1", [(e.encoded(), e.signature) for e in entries]))
    assert whole > LIMIT  # one batch of all of them would be refused
    server = start_central(db, data, command=("-m", "localpay", "central", "serve"),
                           extra=("--max-body", str(LIMIT)))
    try:
        sent = Bodies()
        client = SyncClient(ledger_path, key, server.url, server.verifier, max_retries=0,
                            max_batch_bytes=LIMIT // 2, transport=sent)
        try:
            summary = client.sync_once()
        finally:
            client.close()
    finally:
        server.stop()
    assert summary.sent == 120 and summary.head == 120
    assert sent.batches and max(sent.batches) <= LIMIT // 2
    # cut by bytes, not by the 500-entry count: more than one batch, each a round trip
    assert len(sent.batches) == summary.batches >= whole // (LIMIT // 2)
    check = open_service(db, data)
    try:
        assert check.size() == 120
    finally:
        check.store.close()


def test_the_default_cap_is_half_the_services_default_limit() -> None:
    from central.http_limits import HttpLimits

    assert MAX_BATCH_BYTES * 2 == HttpLimits().max_body_bytes
    assert json.loads(batch_body("T", []))["entries"] == []
