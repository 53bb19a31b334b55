"""The log key never signs for a caller that did not authenticate (issue #18).

Every answer was signed by the log key over text holding the caller's nonce, refusals to
unauthenticated callers included: anyone could have the log key sign a nonce of their choice.
Now a request refused before or by authentication (malformed headers, unknown terminal, bad
signature, stale, replayed) and a refused enrolment are answered unsigned; what an
authenticated terminal is answered, errors included, is signed as before. The terminal's sync
client reports an unsigned refusal as the refusal it is (a SyncAuthError with the service's
words, marked unverified), and the time of an unsigned stale refusal signs one retry but is
never kept as the clock anchor. Against a real ``central serve``.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import open_service
from firmware_cfg.keys import public_hex
from localpay.errors import SyncAuthError, SyncStaleError
from offline_ledger import Ledger
from sync.client import SyncClient
from sync.protocol import (
    H_NONCE,
    H_SIGNATURE,
    H_TERMINAL,
    H_TIME,
    b64,
    request_message,
    response_message,
)
from tests.pg_fixtures import CentralProcess, central, fill_ledger
from tests.test_answer_key import answer_verifier

PATH = "/v1/deny?since=0"


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[tuple[CentralProcess, Ed25519PrivateKey]]:
    db, data = f"sqlite:///{tmp_path / 'central.sqlite'}", tmp_path / "data"
    key = Ed25519PrivateKey.generate()
    svc = open_service(db, data)
    svc.add_terminal("BUS-1", bytes.fromhex(public_hex(key)))
    svc.store.close()
    with central(db, data) as server:
        yield server, key


def call(srv: CentralProcess, *, terminal: str | None = "BUS-1",
         key: Ed25519PrivateKey | None = None, when: int | None = None,
         nonce: str | None = None, signature: str | None = None,
         path: str = PATH) -> httpx.Response:
    when = int(time.time() * 1000) if when is None else when
    nonce = secrets.token_hex(16) if nonce is None else nonce
    headers = {H_TIME: str(when), H_NONCE: nonce}
    if terminal is not None:
        headers[H_TERMINAL] = terminal
    if signature is None and key is not None:
        signature = b64(key.sign(request_message("GET", path, when, nonce, b"")))
    if signature is not None:
        headers[H_SIGNATURE] = signature
    return httpx.get(srv.url + path, headers=headers, timeout=10)


def test_refusals_to_unauthenticated_callers_are_unsigned(
        srv: tuple[CentralProcess, Ed25519PrivateKey]) -> None:
    """Reproduced on the old code: each of these answers carried X-LP-Signature, the log
    key's signature over the caller's nonce."""
    server, key = srv
    now = int(time.time() * 1000)
    stranger = Ed25519PrivateKey.generate()
    ok = call(server, key=key, nonce="ab" * 16, when=now)
    assert ok.status_code == 200
    # (the words of each refusal are the service's business; that it is one, unsigned,
    # is what is checked here)
    refused = {
        "unknown terminal": (call(server, terminal="BUS-404", key=stranger), 401),
        "bad signature": (call(server, key=stranger), 401),
        "stale": (call(server, key=key, when=now - 3_600_000), 401),
        "replayed": (call(server, key=key, nonce="ab" * 16, when=now), 401),
        "no terminal": (call(server, terminal=None, key=key), 401),
        "signature not base64": (call(server, signature="!!"), 400),
        "no headers": (httpx.get(server.url + PATH, timeout=10), 401),
    }
    for what, (resp, status) in refused.items():
        assert resp.status_code == status, (what, resp.text)
        assert H_SIGNATURE not in resp.headers, what
        doc = resp.json()
        assert doc["error"] == ("refused" if status == 401 else "malformed"), what
        assert doc["message"], what
    assert refused["stale"][0].json()["message"].startswith("request is stale")
    assert "replayed" in refused["replayed"][0].json()["message"]
    # an authenticated terminal's answers, its errors included, stay signed (by the answer
    # key the log key names, tests/test_answer_key.py)
    answers = answer_verifier(server)
    for resp in (ok, call(server, key=key, path="/v1/deny?since=x")):
        assert resp.status_code in (200, 400)
        nonce = resp.request.headers[H_NONCE]
        answers.public_key.verify(base64.b64decode(resp.headers[H_SIGNATURE]),
                                   response_message(nonce, resp.status_code, resp.content))


def test_a_refused_enrolment_is_unsigned(srv: tuple[CentralProcess, Ed25519PrivateKey]
                                         ) -> None:
    """Reproduced on the old code: a refused enrolment carried the log key's signature."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from firmware_cfg import provision as proto

    server, _ = srv
    key = Ed25519PrivateKey.generate()
    box = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    body = json.dumps({"format": proto.FORMAT, "code_id": "0" * 32,
                       "public_key": public_hex(key), "box_key": box.hex(),
                       "role": "validator", "place": "85", "central_url": server.url}).encode()
    nonce, now = secrets.token_hex(16), int(time.time() * 1000)
    message = proto.request_message(now, nonce, body)
    resp = httpx.post(server.url + proto.PATH, content=body, timeout=10, headers={
        proto.H_NONCE: nonce, proto.H_TIME: str(now), proto.H_ENROLL: "x",
        proto.H_SIGNATURE: base64.b64encode(key.sign(message)).decode()})
    assert resp.status_code == 401
    assert resp.json()["message"] == "unknown or mistyped enrolment code"
    assert H_SIGNATURE not in resp.headers and proto.H_ENROLL not in resp.headers


def test_the_client_reports_an_unsigned_refusal_as_a_refusal(
        srv: tuple[CentralProcess, Ed25519PrivateKey], tmp_path: Path) -> None:
    """Reproduced on the old code: the same refusal read "central refused: unknown terminal"
    with no word that nothing vouches for it (and an unsigned one was "not signed by")."""
    server, _ = srv
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "other.sqlite"
    fill_ledger(path, key, "BUS-404", 3).close()
    said = call(server, terminal="BUS-404", key=key).json()["message"]  # the service's words
    client = SyncClient(path, key, server.url, server.verifier, max_retries=0)
    try:
        with pytest.raises(SyncAuthError) as err:
            client.sync_once()
    finally:
        client.close()
    assert type(err.value) is SyncAuthError
    assert str(err.value) == ("POST /v1/batches: central refused (HTTP 401, unverified: "
                              f"the answer is not signed): {said}")


class ForgedStale(httpx.BaseTransport):
    """Someone on the way answering the first request with an unsigned stale refusal whose
    time is a year ahead; then the real service answers."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.times: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.times.append(int(request.headers[H_TIME]))
        if len(self.times) == 1:
            ahead = int(time.time() * 1000) + 365 * 86_400_000
            return httpx.Response(401, json={
                "error": "refused", "kind": "SyncAuthError", "seq": None, "time_ms": ahead,
                "message": "request is stale: its time is -31536000 s from ours"})
        return self.inner.handle_request(request)


def test_an_unsigned_stale_time_signs_one_retry_and_is_never_the_anchor(
        srv: tuple[CentralProcess, Ed25519PrivateKey], tmp_path: Path) -> None:
    """Reproduced on the old code: the forged refusal failed as "not signed by" and the
    retry that a real stale refusal earns was never made."""
    server, key = srv
    path = tmp_path / "ledger.sqlite"
    fill_ledger(path, key, "BUS-1", 3).close()
    forged = ForgedStale()
    client = SyncClient(path, key, server.url, server.verifier, max_retries=0,
                        transport=forged)
    try:
        with pytest.raises(SyncStaleError) as err:
            client.sync_once()
        anchor = client.anchor
    finally:
        client.close()
    # the retry was signed with the forged time (a year ahead), and the real service,
    # unsigned too, refused it as stale: nothing verified, nothing kept
    assert len(forged.times) == 2
    assert forged.times[1] - forged.times[0] > 364 * 86_400_000
    assert str(err.value).startswith("POST /v1/batches: central refused (HTTP 401, "
                                     "unverified: the answer is not signed): request is "
                                     "stale: its time is -3153")
    assert str(err.value).endswith(" s from ours (at most 300 s)")
    assert anchor is None
    with Ledger(path, key=key) as led:
        assert led.clock_anchor() is None
        assert led.synced_upto() == 0


def test_partner_routes_sign_only_for_a_key_that_opened(tmp_path: Path) -> None:
    """Reproduced on the commit before: a top-up or app payment refused for a wrong partner
    key carried X-LP-Signature over the caller's nonce. A partner whose key opened the route
    is answered signed, its refusals included."""
    from central import mpm_payments
    from central.topups import add_partner

    db, data = f"sqlite:///{tmp_path / 'central.sqlite'}", tmp_path / "data"
    svc = open_service(db, data)
    bank = add_partner(svc.store, "bank1")
    app_key = mpm_payments.add_app_partner(svc.store, "cityapp")
    svc.store.close()
    with central(db, data) as server:
        def post(path: str, key: str) -> httpx.Response:
            return httpx.post(server.url + path, content=b"{}", timeout=10,
                              headers={H_NONCE: "cd" * 16, "Authorization": f"Bearer {key}"})

        for path in ("/v1/topups", "/v1/mpm-payments"):
            wrong = post(path, "lpk_" + "0" * 40)
            assert wrong.status_code == 401, (path, wrong.text)
            assert H_SIGNATURE not in wrong.headers, path
        answers = answer_verifier(server)
        for path, key, status in (("/v1/topups", bank, 503), ("/v1/mpm-payments", app_key, 400)):
            opened = post(path, key)  # no top-up terms here; an empty body is malformed
            assert opened.status_code == status, (path, opened.text)
            answers.public_key.verify(
                base64.b64decode(opened.headers[H_SIGNATURE]),
                response_message("cd" * 16, opened.status_code, opened.content))
