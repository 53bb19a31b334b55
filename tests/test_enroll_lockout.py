"""Failed enrolments are counted in the store, per client address and per code, and the
client's address is the peer's unless a configured reverse proxy forwards it (issue #18).

Before, failures were counted in the memory of one API process (a restart, or another worker,
started from zero) per ``request.client``, which uvicorn took from ``X-Forwarded-For`` of any
local peer. Against a real ``localpay central serve`` (SQLite and PostgreSQL stores).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from central.enroll import RateLimiter
from firmware_cfg import provision as proto
from firmware_cfg.keys import public_hex
from tests.enroll_fixtures import issue_code
from tests.pg_fixtures import CentralProcess, pg_cluster, start_central, store_url  # noqa: F401

#: what the service allows by default, written here apart from the code that enforces it
LIMIT = 10
WINDOW_S = 600


def serve(db: str, data: Path, *extra: str) -> CentralProcess:
    return start_central(db, data, extra=extra, timeout=30,
                         command=("-m", "localpay", "central", "serve", "--init"))


def enrol(srv: CentralProcess, *, code: str | None = None, code_id: str | None = None,
          forwarded: str | None = None) -> httpx.Response:
    """An enrolment request; with ``code`` a well-made one, else one whose MAC is wrong for
    ``code_id`` (a fresh random one unless given)."""
    key = Ed25519PrivateKey.generate()
    box = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    cid = proto.code_id(code) if code else (code_id or secrets.token_hex(16))
    body = json.dumps({"format": proto.FORMAT, "code_id": cid, "public_key": public_hex(key),
                       "box_key": box.hex(), "role": "validator", "place": "85",
                       "central_url": srv.url}).encode()
    nonce, now = secrets.token_hex(16), int(time.time() * 1000)
    message = proto.request_message(now, nonce, body)
    headers = {proto.H_NONCE: nonce, proto.H_TIME: str(now),
               proto.H_ENROLL: proto.mac(proto.code_key(code), message) if code else "x",
               proto.H_SIGNATURE: base64.b64encode(key.sign(message)).decode()}
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    return httpx.post(srv.url + proto.PATH, content=body, headers=headers, timeout=10)


def refused_as(resp: httpx.Response) -> tuple[int, str]:
    return resp.status_code, resp.json()["message"]


def wait_of(message: str) -> int:
    return int(message.rsplit("try again in ", 1)[1].removesuffix(" s"))


def test_the_defaults_are_the_documented_ones() -> None:
    assert (RateLimiter().limit, RateLimiter().window_s) == (LIMIT, WINDOW_S)


def test_the_lockout_survives_a_restart(store_url: str, tmp_path: Path) -> None:  # noqa: F811
    """Reproduced on the old code: after a restart the same address was answered 401 again
    (its failures were in the memory of the stopped process)."""
    data = tmp_path / "data"
    srv = serve(store_url, data)
    try:
        for _ in range(LIMIT):
            assert refused_as(enrol(srv)) == (401, "unknown or mistyped enrolment code")
        status, message = refused_as(enrol(srv))
        assert status == 429
        assert message.startswith("too many failed enrolment attempts from 127.0.0.1; try "
                                  "again in ")
        assert WINDOW_S - 60 <= wait_of(message) <= WINDOW_S
    finally:
        srv.stop()
    again = serve(store_url, data)
    try:
        status, message = refused_as(enrol(again))
        assert status == 429, message
        assert message.startswith("too many failed enrolment attempts from 127.0.0.1")
        # a real code from the same address waits too
        code = issue_code(again)
        assert enrol(again, code=code).status_code == 429
    finally:
        again.stop()


def test_a_forged_forwarded_for_from_a_non_proxy_is_ignored(store_url: str,  # noqa: F811
                                                             tmp_path: Path) -> None:
    """Reproduced on the old code: each forged X-Forwarded-For was counted as a client of
    its own, so the caller was never locked out."""
    srv = serve(store_url, tmp_path / "data")
    try:
        for n in range(LIMIT):
            assert enrol(srv, forwarded=f"198.51.100.{n + 1}").status_code == 401
        status, message = refused_as(enrol(srv, forwarded="198.51.100.99"))
        assert status == 429
        assert message.startswith("too many failed enrolment attempts from 127.0.0.1;")
    finally:
        srv.stop()


def test_a_trusted_proxy_names_the_client_and_a_code_is_locked_for_all(
        store_url: str, tmp_path: Path) -> None:  # noqa: F811
    srv = serve(store_url, tmp_path / "data", "--trusted-proxy", "127.0.0.1")
    try:
        # the client the proxy names is locked out; another behind the same proxy is not
        for _ in range(LIMIT):
            assert enrol(srv, forwarded="203.0.113.7").status_code == 401
        status, message = refused_as(enrol(srv, forwarded="spoofed, 203.0.113.7"))
        assert status == 429
        assert message.startswith("too many failed enrolment attempts from 203.0.113.7;")
        assert enrol(srv, forwarded="203.0.113.8").status_code == 401
        # one code tried from many addresses: the code is locked, for its owner too
        code = issue_code(srv)
        cid = proto.code_id(code)
        for n in range(LIMIT):
            assert enrol(srv, code_id=cid, forwarded=f"192.0.2.{n + 1}").status_code == 401
        status, message = refused_as(enrol(srv, code=code, forwarded="192.0.2.200"))
        assert status == 429
        assert message.startswith("too many failed enrolment attempts with this code;")
        # a fresh code from a fresh address enrols as ever
        assert enrol(srv, code=issue_code(srv), forwarded="192.0.2.201").status_code == 200
    finally:
        srv.stop()
