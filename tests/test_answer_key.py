"""Answers are signed by an answer key, never by the log key (issue #18).

The log key signed every answer over text holding the caller's nonce, and such an answer,
put in the signed-note format, opened as a note of the log (what ``note.Open`` of Go's
golang.org/x/mod/sumdb/note, and ``sync.checkpoint.open_note`` here, accept). Now the data
folder holds a second key, ``answer.key``; the log key signs only the log's checkpoints and
one statement naming the answer key (``GET /v1/answer-key``, and the enrolment answer); the
terminal checks that statement with the log key it trusts, keeps it beside its ledger and
checks every answer with the key it names. Against a real ``central serve``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import open_service
from central.keys import load_answer_signer, load_signer
from firmware_cfg import provision as enrol
from firmware_cfg.keys import public_hex
from localpay.errors import ConfigError, ProofError, SyncProtocolError
from offline_ledger import Ledger
from sync.checkpoint import DASH, Checkpoint, NoteSigner, NoteVerifier, open_note
from sync.client import SyncClient
from sync.protocol import (
    ANSWER_KEY_PATH,
    H_ANSWER_KEY,
    H_NONCE,
    H_SIGNATURE,
    H_TERMINAL,
    H_TIME,
    answer_key_text,
    b64,
    open_answer_key,
    request_message,
    response_message,
)
from tests.pg_fixtures import CentralProcess, central, central_with_terminal, fill_ledger

TID = "BUS-1"


def answer_verifier(server: CentralProcess) -> NoteVerifier:
    """The answer key as a terminal learns it: the statement the service serves, checked
    with the log's verifier key."""
    resp = httpx.get(server.url + ANSWER_KEY_PATH, timeout=10)
    assert resp.status_code == 200, resp.text
    return open_answer_key(resp.json()["note"], NoteVerifier.parse(server.verifier))


def as_note(resp: httpx.Response, nonce: str, name: str, key_id: bytes) -> str:
    """An answer's signature put in the signed-note format, as anyone holding the answer
    could: the response message is the text, the signature its one signature line."""
    text = response_message(nonce, resp.status_code, resp.content).decode()
    sig = base64.b64decode(resp.headers[H_SIGNATURE])
    return f"{text}\n{DASH} {name} {base64.b64encode(key_id + sig).decode()}\n"


def signed_get(server: CentralProcess, key: Ed25519PrivateKey, path: str
               ) -> tuple[httpx.Response, str]:
    nonce, when = secrets.token_hex(16), int(time.time() * 1000)
    sig = key.sign(request_message("GET", path, when, nonce, b""))
    resp = httpx.get(server.url + path, timeout=10, headers={
        H_TERMINAL: TID, H_TIME: str(when), H_NONCE: nonce, H_SIGNATURE: b64(sig)})
    return resp, nonce


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[CentralProcess, Ed25519PrivateKey]]:
    with central_with_terminal(tmp_path, TID) as (server, key, _, _):
        yield server, key


def test_an_answer_is_no_note_of_the_log(stack: tuple[CentralProcess, Ed25519PrivateKey]
                                         ) -> None:
    """Reproduced on the old code: the answer, as a note, opened with the log's verifier."""
    server, key = stack
    log = NoteVerifier.parse(server.verifier)
    for path in ("/v1/deny?since=0", "/v1/deny?since=x"):  # an answer, and an error
        resp, nonce = signed_get(server, key, path)
        assert resp.status_code in (200, 400) and H_SIGNATURE in resp.headers, resp.text
        with pytest.raises(ProofError, match="does not verify"):
            open_note(as_note(resp, nonce, log.name, log.id), log)
        # it is the answer key's: the one the log key's statement names, and the header's
        answers = answer_verifier(server)
        assert resp.headers[H_ANSWER_KEY] == answers.id.hex()
        text = open_note(as_note(resp, nonce, answers.name, answers.id), answers)
        assert text == response_message(nonce, resp.status_code, resp.content).decode()
    # the statement: the log key's note, unauthenticated, no caller's text in it, that no
    # checkpoint verifier takes for a checkpoint
    first = httpx.get(server.url + ANSWER_KEY_PATH, timeout=10)
    again = httpx.get(server.url + ANSWER_KEY_PATH, headers={H_NONCE: "ab" * 16}, timeout=10)
    assert first.content == again.content and "ab" * 16 not in again.text
    doc = first.json()
    assert set(doc) == {"answer_key", "note"}
    assert open_note(doc["note"], log) == (f"localpay answer key\n{doc['answer_key']}\n")
    assert doc["answer_key"] == answers.text()
    assert answers.name == log.name + "/answers" and answers.id != log.id
    with pytest.raises(SyncProtocolError, match="checkpoint body"):
        Checkpoint.verify(doc["note"], log)
    # the key: its own file in the data folder, 0600, shown by `central key --answer-key`
    info = (server.data / "answer.key").stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    shown = [subprocess.run([sys.executable, "-m", "localpay", "central", "key", "--data",
                             str(server.data), *flag], capture_output=True, text=True,
                            check=True).stdout for flag in ((), ("--answer-key",))]
    assert shown == [f"{log.text()}\n", f"{answers.text()}\n"]


class Forge(httpx.BaseTransport):
    """Someone on the way who holds the log key (a note it signed is all a verifier of the
    log needs): every answer re-signed with it, or a statement naming a key of its own."""

    def __init__(self, log_key: Ed25519PrivateKey, log_name: str, mode: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.log = NoteSigner(log_name, log_key)
        self.mode = mode
        self.own = NoteSigner(log_name + "/answers", Ed25519PrivateKey.generate())
        self.stranger = NoteSigner(log_name, Ed25519PrivateKey.generate())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = self.inner.handle_request(request)
        body = resp.read()
        if request.url.path == ANSWER_KEY_PATH:
            if self.mode == "statement":  # an answer key of its own, named by a stranger
                note = self.stranger.sign(answer_key_text(self.own.verifier))
                body = json.dumps({"answer_key": self.own.verifier.text(),
                                   "note": note}).encode()
            return httpx.Response(resp.status_code, content=body)
        nonce = request.headers[H_NONCE]
        signer = self.own if self.mode == "statement" else self.log
        headers = {k: v for k, v in resp.headers.items()
                   if k.lower() not in ("content-length", H_SIGNATURE.lower(),
                                        H_ANSWER_KEY.lower())}
        headers[H_SIGNATURE] = b64(signer.private_key.sign(
            response_message(nonce, resp.status_code, body)))
        if self.mode == "log key, named":  # the header the real answers carry
            headers[H_ANSWER_KEY] = resp.headers.get(H_ANSWER_KEY, "")
        elif self.mode == "statement":
            headers[H_ANSWER_KEY] = signer.verifier.id.hex()
        return httpx.Response(resp.status_code, headers=headers, content=body)


@pytest.mark.parametrize("mode", ["log key", "log key, named", "statement"])
def test_a_forged_answer_is_refused(stack: tuple[CentralProcess, Ed25519PrivateKey],
                                    tmp_path: Path, mode: str) -> None:
    """Reproduced on the old code: the answers re-signed with the log key were taken, the
    batch marked synced (the statement case: there was no statement to forge)."""
    server, key = stack
    path = tmp_path / "ledger.sqlite"
    fill_ledger(path, key, TID, 3).close()
    log_signer = load_signer(server.data, create=False)
    forge = Forge(log_signer.private_key, log_signer.name, mode)
    client = SyncClient(path, key, server.url, server.verifier, max_retries=0, transport=forge)
    try:
        with pytest.raises(ProofError) as err:
            client.sync_once()
    finally:
        client.close()
    if mode == "statement":
        assert str(err.value) == (f"GET {ANSWER_KEY_PATH}: note is not signed by "
                                  f"{log_signer.name}")
    elif mode == "log key, named":
        assert str(err.value) == ("POST /v1/batches: the answer (HTTP 200) is not signed by "
                                  f"{log_signer.name}/answers")
    else:
        answers = answer_verifier(server)
        assert str(err.value) == (f"POST /v1/batches: the answer names answer key '', not "
                                  f"{answers.name}+{answers.id.hex()}, the one "
                                  f"{log_signer.name} names")
    with Ledger(path, key=key) as led:
        assert led.synced_upto() == 0
        assert led.clock_anchor() is None  # a time from no verified answer is not kept
    assert not client.answer_keys.path.exists() or mode != "statement"


class BeforeAnswerKeys(httpx.BaseTransport):
    """The service as a release from before answer keys answered: no statement (404), every
    answer signed with the log key and naming no key; ``upgraded`` lets the real service
    through, as after its update."""

    def __init__(self, log: NoteSigner) -> None:
        self.inner = httpx.HTTPTransport()
        self.log = log
        self.upgraded = False
        self.statements = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == ANSWER_KEY_PATH:
            self.statements += 1
            if not self.upgraded:
                return httpx.Response(404, content=b'{"detail":"Not Found"}')
        resp = self.inner.handle_request(request)
        body = resp.read()
        if self.upgraded or request.url.path == ANSWER_KEY_PATH:
            return httpx.Response(resp.status_code, headers=resp.headers, content=body)
        headers = {k: v for k, v in resp.headers.items()
                   if k.lower() not in ("content-length", H_SIGNATURE.lower(),
                                        H_ANSWER_KEY.lower())}
        headers[H_SIGNATURE] = b64(self.log.private_key.sign(
            response_message(request.headers[H_NONCE], resp.status_code, body)))
        return httpx.Response(resp.status_code, headers=headers, content=body)


def test_an_updated_terminal_syncs_with_a_service_from_before_answer_keys(
        stack: tuple[CentralProcess, Ed25519PrivateKey], tmp_path: Path) -> None:
    """Terminals are updated before their service: one that never learned an answer key
    takes log-key answers from a service that publishes none, and once the service names a
    key, never again."""
    server, key = stack
    path = tmp_path / "ledger.sqlite"
    fill_ledger(path, key, TID, 3).close()
    old = BeforeAnswerKeys(load_signer(server.data, create=False))
    client = SyncClient(path, key, server.url, server.verifier, max_retries=0, transport=old)
    try:
        assert client.sync_once().synced_upto == 3
        assert old.statements == 1  # asked once, then believed for a while
        assert not client.answer_keys.path.exists()
        old.upgraded = True  # the service is updated: its answers name its answer key
        with Ledger(path, key=key) as led:
            led.append("tap", card_token="c" * 64, amount=1500, place="85")
        assert client.sync_once().synced_upto == 4
        assert client.answer_keys.path.exists()
        old.upgraded = False  # a log-key answer now: refused, whatever the statement says
        with Ledger(path, key=key) as led:
            led.append("tap", card_token="c" * 64, amount=1500, place="85")
        with pytest.raises(ProofError, match="central names no answer key"):
            client.sync_once()
    finally:
        client.close()
    with Ledger(path, key=key) as led:
        assert led.synced_upto() == 4


class Count(httpx.BaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return self.inner.handle_request(request)


def test_a_terminal_from_before_answer_keys_syncs_and_follows_a_new_key(tmp_path: Path
                                                                        ) -> None:
    """Reproduced on the old code: the service had no statement to give (404), so nothing
    was kept beside the ledger; the data folder got no answer key at its start."""
    db, data = f"sqlite:///{tmp_path / 'central.sqlite'}", tmp_path / "data"
    key = Ed25519PrivateKey.generate()
    svc = open_service(db, data)
    svc.add_terminal(TID, bytes.fromhex(public_hex(key)))
    svc.store.close()
    # a data folder from before answer keys: the log key only
    (data / "answer.key").unlink(missing_ok=True)
    path = tmp_path / "ledger.sqlite"
    fill_ledger(path, key, TID, 7).close()
    count = Count()
    with central(db, data) as server:
        assert (data / "answer.key").exists()  # made at the start
        first = answer_verifier(server)
        # a terminal provisioned before: nothing kept beside its ledger
        client = SyncClient(path, key, server.url, server.verifier, transport=count)
        try:
            summary = client.sync_once()
            assert (summary.sent, summary.synced_upto) == (7, 7)
            assert count.paths.count(ANSWER_KEY_PATH) == 1
            kept = client.answer_keys.path.read_text(encoding="utf-8")
            assert open_answer_key(kept, NoteVerifier.parse(server.verifier)) == first
            # a client started later reads what was kept: no fetch
            count.paths.clear()
            with SyncClient(path, key, server.url, server.verifier, transport=count) as later:
                assert later.sync_once().sent == 0
            assert count.paths and ANSWER_KEY_PATH not in count.paths
        finally:
            client.close()
    # the service is given a new answer key; the terminal fetches the statement once
    (data / "answer.key").unlink()
    with Ledger(path, key=key) as led:
        led.append("tap", card_token="c" * 64, amount=1500, place="85")
    count.paths.clear()
    with central(db, data) as server:
        second = answer_verifier(server)
        assert second.id != first.id
        with SyncClient(path, key, server.url, server.verifier, transport=count) as client:
            assert client.sync_once().sent == 1
            assert client.answer_keys.current == second
        assert count.paths.count(ANSWER_KEY_PATH) == 1
        assert open_answer_key(client.answer_keys.path.read_text(encoding="utf-8"),
                               NoteVerifier.parse(server.verifier)) == second
    with Ledger(path, key=key) as led:
        assert led.synced_upto() == 8


def test_the_enrolment_reading_of_the_statement_keeps_step_with_sync(tmp_path: Path) -> None:
    """firmware_cfg restates the statement's check (it imports nothing of sync's): both
    readings take the service's statement and name the same key, and refuse the same
    forgeries."""
    data = tmp_path / "data"
    log_signer = load_signer(data)
    answers = load_answer_signer(data, log_signer, create=False)
    assert stat.S_IMODE(os.stat(data / "answer.key").st_mode) == 0o600
    log = log_signer.verifier
    good = log_signer.sign(answer_key_text(answers.verifier))
    assert open_answer_key(good, log) == answers.verifier
    got = enrol._answer_key_of(good, log.text())
    assert public_hex(got) == public_hex(answers.verifier.public_key)
    stranger = NoteSigner(log.name, Ed25519PrivateKey.generate())
    other = NoteSigner(log.name + "/answers", Ed25519PrivateKey.generate())
    bad = {
        "signed by another key of the same name": stranger.sign(
            answer_key_text(answers.verifier)),
        "a checkpoint of the log": Checkpoint(log.name, 1, b"\0" * 32).sign(log_signer),
        "the text changed": good.replace(answers.verifier.text(), other.verifier.text()),
        "a key of another name": log_signer.sign(answer_key_text(
            NoteSigner("elsewhere", other.private_key).verifier)),
        "an answer signed by the log key": log_signer.sign(
            response_message("ab" * 16, 200, b"{}").decode()),
    }
    for what, note in bad.items():
        with pytest.raises((ProofError, SyncProtocolError)):
            open_answer_key(note, log)
        with pytest.raises(Exception) as err:
            enrol._answer_key_of(note, log.text())
        assert type(err.value).__name__ in ("ValueError", "InvalidSignature"), what


class Resign(httpx.BaseTransport):
    """Someone on the way who holds the log key: the enrolment answer kept as it is (its
    code HMAC still good), its signature made with the log key."""

    def __init__(self, log_key: Ed25519PrivateKey) -> None:
        self.inner = httpx.HTTPTransport()
        self.log_key = log_key

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = self.inner.handle_request(request)
        body = resp.read()
        headers = {k: v for k, v in resp.headers.items()
                   if k.lower() not in ("content-length", H_SIGNATURE.lower())}
        headers[H_SIGNATURE] = b64(self.log_key.sign(response_message(
            request.headers[H_NONCE], resp.status_code, body)))
        return httpx.Response(resp.status_code, headers=headers, content=body)


def test_enrolment_takes_the_answer_key_from_the_log_keys_statement(tmp_path: Path) -> None:
    """Reproduced on the old code: the enrolment answer signed by the log key was taken and
    the terminal installed (the old answer named no answer key)."""
    from tests.enroll_fixtures import issue_code, localpay_central

    db = f"sqlite:///{tmp_path / 'central.sqlite'}"
    with localpay_central(db, tmp_path / "central") as server:
        log_signer = load_signer(server.data, create=False)
        with pytest.raises(ConfigError, match=r"^the enrolment answer is not signed by the "
                           r"answer key that the central log key names$"):
            enrol.enroll(tmp_path / "forged", server.url, issue_code(server), role="validator",
                         place="85", transport=Resign(log_signer.private_key))
        assert not (tmp_path / "forged" / "terminal.toml").exists()
        done = enrol.enroll(tmp_path / "t", server.url, issue_code(server), role="validator",
                            place="85")
        assert done.central_key == log_signer.verifier.text()
        assert (tmp_path / "t" / "terminal.toml").exists()
