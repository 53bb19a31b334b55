"""A sync round's fetches in one request, ``GET /v1/round`` (issue #18).

A round used to authenticate five requests after its batches (deny list, balances, points,
pockets, config), each a write to the store for its nonce. ``GET /v1/round`` answers the
first of each in one signed answer; a part with more to tell is asked for again on its own
route, which stays as it was. Against a real ``central serve``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from central import open_service
from firmware_cfg.keys import public_hex
from sync.client import SyncClient
from sync.protocol import H_NONCE, H_SIGNATURE, H_TERMINAL, H_TIME, b64, new_nonce, request_message
from tests.pg_fixtures import CentralProcess, fill_ledger, new_terminal_key, start_central

SERVE = ("-m", "localpay", "central", "serve", "--workers", "1")


class Paths(httpx.HTTPTransport):
    """The real transport, noting each request's method and path."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.method} {request.url.path}")
        return super().handle_request(request)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[CentralProcess, object, Path]]:
    db, data = f"sqlite:///{tmp_path / 'central.sqlite'}", tmp_path / "data"
    key = new_terminal_key()
    svc = open_service(db, data)
    svc.add_terminal("BUS-1", bytes.fromhex(public_hex(key)))
    svc.deny("card-lost", "reported lost")
    svc.set_balances({"card-a": 12_000, "card-b": 700})
    svc.store.close()
    fill_ledger(tmp_path / "ledger.sqlite", key, "BUS-1", 30).close()
    server = start_central(db, data, command=SERVE, timeout=60)
    try:
        yield server, key, tmp_path / "ledger.sqlite"
    finally:
        server.stop()


def _get(server: CentralProcess, key, path: str) -> dict:
    nonce, now = new_nonce(), int(time.time() * 1000)
    sig = key.sign(request_message("GET", path, now, nonce, b""))
    resp = httpx.get(server.url + path, headers={
        H_TERMINAL: "BUS-1", H_TIME: str(now), H_NONCE: nonce, H_SIGNATURE: b64(sig)})
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    doc.pop("time_ms")
    return doc


def test_a_round_fetches_once_when_nothing_changed(stack) -> None:
    server, key, ledger = stack
    paths = Paths()
    with SyncClient(ledger, key, server.url, server.verifier, transport=paths) as client:
        first = client.sync_once()
        after_first = list(paths.seen)
        paths.seen.clear()
        again = client.sync_once()
    assert (first.sent, first.deny_added, first.balances) == (30, 1, 2)
    fetched = [p for p in after_first if p.startswith("GET /v1/")]
    # one round; balances changed, so its own route is asked once more (nothing left)
    assert fetched == ["GET /v1/answer-key", "GET /v1/round", "GET /v1/balances"] or (
        fetched == ["GET /v1/round", "GET /v1/balances"]), fetched
    # nothing new on either side: the whole round is one request
    assert paths.seen == ["GET /v1/round"], paths.seen
    assert (again.sent, again.deny_added, again.balances, again.deny_version) == (
        0, 0, 0, first.deny_version)


def test_each_part_of_a_round_is_what_its_own_route_answers(stack) -> None:
    server, key, _ = stack
    for since in (0, 1):
        doc = _get(server, key, f"/v1/round?deny_since={since}&balances_since={since}"
                   f"&points_since={since}&riders_since={since}&pockets_since={since}")
        assert set(doc) == {"deny", "balances", "points", "pockets", "config"}
        assert doc["deny"] == _get(server, key, f"/v1/deny?since={since}")
        assert doc["balances"] == _get(server, key, f"/v1/balances?since={since}")
        assert doc["points"] == _get(server, key,
                                     f"/v1/points?since={since}&riders_since={since}")
        assert doc["pockets"] == _get(server, key, f"/v1/pockets?since={since}")
        assert doc["config"] == _get(server, key, "/v1/config")
    # what was loaded, written out here: the lost card, both balances at version 1
    first = _get(server, key, "/v1/round")
    assert first["deny"]["add"] == {"card-lost": "reported lost"}
    assert first["balances"] == {"version": 1, "balances": {"card-a": 12_000, "card-b": 700}}


class BeforeRounds(Paths):
    """The service as a release from before ``/v1/round`` answered it: 404, unsigned."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/round":
            self.seen.append(f"{request.method} {request.url.path}")
            return httpx.Response(404, json={"detail": "Not Found"})
        return super().handle_request(request)


def test_an_updated_terminal_rounds_with_a_service_from_before_the_route(stack) -> None:
    """Terminals are updated before their service: without ``/v1/round`` the round asks each
    part on its own route, and does not ask for the round again for a while."""
    server, key, ledger = stack
    paths = BeforeRounds()
    with SyncClient(ledger, key, server.url, server.verifier, transport=paths) as client:
        first = client.sync_once()
        after_first = [p for p in paths.seen if p.startswith("GET /v1/")]
        paths.seen.clear()
        again = client.sync_once()
    assert (first.sent, first.deny_added, first.balances) == (30, 1, 2)
    parts = ["GET /v1/deny", "GET /v1/balances", "GET /v1/points", "GET /v1/pockets",
             "GET /v1/config"]
    assert [p for p in after_first if p != "GET /v1/answer-key"] == [
        "GET /v1/round", *parts, "GET /v1/balances"], after_first
    assert paths.seen == parts, paths.seen  # the round not asked again
    assert (again.sent, again.deny_added, again.balances) == (0, 0, 0)
