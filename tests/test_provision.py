"""Provisioning end to end against a real ``localpay central serve`` on loopback (SQLite and
PostgreSQL stores): enrol, install the signed config, self-test, then ``localpay sync --once``;
used, expired, mistyped and mismatched codes refused with nothing stored; an answer tampered
on the way refused; the secrets never printed and never on the wire in clear."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from central import open_service
from central.enroll import Enroller, RateLimiter, issue_codes, load_operator_key
from firmware_cfg import bundle as bundles
from firmware_cfg import provision as proto
from firmware_cfg.config import dumps
from firmware_cfg.keys import load_terminal_key, load_token_key, public_hex
from localpay.cli import cli
from localpay.errors import ConfigError
from sync.protocol import response_message
from terminal.config_update import install
from terminal.home import Home, open_terminal
from tests.enroll_fixtures import issue_code, localpay_central, provision
from tests.pg_fixtures import CentralProcess, pg_cluster, store_url  # noqa: F401


@pytest.fixture
def srv(tmp_path: Path, store_url: str) -> Iterator[CentralProcess]:  # noqa: F811
    with localpay_central(store_url, tmp_path / "central") as server:
        yield server


def _count(srv: CentralProcess, sql: str, params: tuple[object, ...] = ()) -> int:
    svc = open_service(srv.db, srv.data)
    try:
        with svc.store.tx(write=False) as tx:
            row = tx.one(sql, params)
        return int(row[0]) if row else 0
    finally:
        svc.store.close()


def _secrets_of(home: Path) -> list[str]:
    """Every form in which the terminal's secrets could leak into text."""
    key = load_terminal_key(home / "keys" / "terminal.key")
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    token = load_token_key(home / "keys" / "token.key")
    return [pem.splitlines()[1], raw.hex(), token.hex(), __import__("base64").b64encode(raw)
            .decode(), __import__("base64").b64encode(token).decode()]


def test_provision_end_to_end_then_sync(tmp_path: Path, srv: CentralProcess) -> None:
    code = issue_code(srv)
    assert re.fullmatch(r"[0-9A-Z]{4}(-[0-9A-Z]{4}){3}", code)
    home = tmp_path / "terminal"
    result = provision(home, srv, code, "--role", "validator", "--route", "85")
    assert result.exit_code == 0, result.output
    assert "enrolled as BUS-85-0001 (validator, route 85)" in result.output
    assert "7 passed, 0 failed" in result.output
    # secrets: 0600 files, never in what was printed nor in the server's log
    for name in ("terminal.key", "token.key"):
        assert stat.S_IMODE((home / "keys" / name).stat().st_mode) == 0o600
    printed = result.output + srv.log_path.read_text()
    for secret in _secrets_of(home):
        assert secret not in printed
    # the config: signed by the operator key the central keeps, naming the log key
    h = Home(home)
    config = h.config()
    operator = load_operator_key(srv.data, create=False)
    assert config.terminal.id == "BUS-85-0001" and config.terminal.place == "85"
    assert config.central.url == srv.url
    assert config.keys.central_public_key == srv.verifier
    assert config.keys.operator_public_key == public_hex(operator)
    assert bundles.current_version(home) == 1
    # the scheme's token key arrived intact, so card tokens match across terminals
    assert load_token_key(home / "keys" / "token.key") == load_token_key(srv.data / "token.key")
    # registered with the key the terminal holds; the code is spent
    pub = bytes.fromhex(public_hex(load_terminal_key(home / "keys" / "terminal.key")))
    assert _count(srv, "SELECT COUNT(*) FROM terminals WHERE terminal_id = ? AND "
                       "public_key = ?", ("BUS-85-0001", pub)) == 1
    assert _count(srv, "SELECT COUNT(*) FROM enroll_codes WHERE used_by = ?",
                  ("BUS-85-0001",)) == 1
    # and the provisioned terminal syncs with nothing else given: its config_change entry
    sync = CliRunner().invoke(cli, ["--home", str(home), "sync", "--once"])
    assert sync.exit_code == 0, sync.output
    assert "sent 1 entries in 1 batches; synced up to 1 of 1" in sync.output
    # a second terminal on the same route gets the next number
    second = provision(tmp_path / "second", srv, issue_code(srv), "--role", "validator",
                       "--route", "85", "--no-selftest")
    assert second.exit_code == 0, second.output
    assert "enrolled as BUS-85-0002" in second.output


def test_later_bundles_from_the_operator_key_are_accepted(tmp_path: Path,
                                                         srv: CentralProcess) -> None:
    home = tmp_path / "terminal"
    result = provision(home, srv, issue_code(srv, "--role", "till", "--place", "M0427"),
                       "--role", "till", "--merchant", "M0427", "--no-selftest")
    assert result.exit_code == 0, result.output
    h = Home(home)
    config = h.config()
    assert config.terminal.id == "TILL-M0427-0001" and config.terminal.role == "till"
    operator = load_operator_key(srv.data, create=False)
    terminal = open_terminal(h, config)
    try:
        newer = config.replace("risk", max_amount=70_000)
        applied = install(terminal, h, bundles.make(operator, config.terminal.id, 2,
                                                    dumps(newer)))
        assert applied.version == 2 and h.config().risk.max_amount == 70_000
        forged = bundles.make(Ed25519PrivateKey.generate(), config.terminal.id, 3,
                              dumps(newer.replace("risk", max_amount=20_000)))
        with pytest.raises(ConfigError, match="does not verify with the operator key"):
            install(terminal, h, forged)
        assert h.config().risk.max_amount == 70_000
    finally:
        assert terminal.ledger is not None
        terminal.ledger.close()


def _nothing_installed(home: Path) -> None:
    assert not (home / "terminal.toml").exists()
    assert not (home / "keys" / "token.key").exists()
    assert not (home / "config-version").exists()


def test_used_code_refused_and_nothing_stored(tmp_path: Path, srv: CentralProcess) -> None:
    code = issue_code(srv)
    first = provision(tmp_path / "a", srv, code, "--role", "validator", "--route", "7",
                      "--no-selftest")
    assert first.exit_code == 0, first.output
    again = provision(tmp_path / "b", srv, code, "--role", "validator", "--route", "7",
                      "--no-selftest")
    assert again.exit_code != 0
    assert "used already" in again.output
    _nothing_installed(tmp_path / "b")
    assert _count(srv, "SELECT COUNT(*) FROM terminals") == 1


def test_expired_code_refused_and_nothing_stored(tmp_path: Path, srv: CentralProcess) -> None:
    svc = open_service(srv.db, srv.data)
    try:
        [code] = issue_codes(svc, ttl_s=60)
        # the clock cannot be moved for another process: age the code in the store instead
        with svc.store.tx() as tx:
            tx.run("UPDATE enroll_codes SET expires_ms = issued_ms - 1 WHERE code_id = ?",
                   (proto.code_id(code),))
    finally:
        svc.store.close()
    result = provision(tmp_path / "t", srv, code, "--role", "validator", "--route", "85",
                       "--no-selftest")
    assert result.exit_code != 0
    assert "expired" in result.output
    _nothing_installed(tmp_path / "t")
    assert _count(srv, "SELECT COUNT(*) FROM terminals") == 0
    assert _count(srv, "SELECT COUNT(*) FROM enroll_codes WHERE used_ms IS NOT NULL") == 0


def test_mistyped_and_mismatched_codes(tmp_path: Path, srv: CentralProcess) -> None:
    code = issue_code(srv, "--role", "validator", "--place", "85")
    # one wrong character: unknown to the service
    wrong = ("1" if code[0] != "1" else "2") + code[1:]
    result = provision(tmp_path / "t", srv, wrong, "--role", "validator", "--route", "85")
    assert result.exit_code != 0 and "unknown or mistyped enrolment code" in result.output
    # not a code at all: refused before anything is sent or made
    result = provision(tmp_path / "u", srv, "ABC", "--role", "validator", "--route", "85")
    assert result.exit_code != 0 and "16 characters" in result.output
    assert not (tmp_path / "u").exists()
    # bound to route 85: route 86 is refused and the code stays usable
    result = provision(tmp_path / "t", srv, code, "--role", "validator", "--route", "86")
    assert result.exit_code != 0 and "for place '85'" in result.output
    _nothing_installed(tmp_path / "t")
    assert _count(srv, "SELECT COUNT(*) FROM terminals") == 0
    # lower case and O for 0 are read as the code (handwritten slips)
    typed = code.lower().replace("0", "o")
    result = provision(tmp_path / "t", srv, typed, "--role", "validator", "--route", "85",
                       "--no-selftest")
    assert result.exit_code == 0, result.output


class Tamper(httpx.BaseTransport):
    """A man in the middle on a real connection: rewrites the enrolment answer's body."""

    def __init__(self, change: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.change = change
        self.seen: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = self.inner.handle_request(request)
        body = resp.read()
        self.seen.append(request.content + body)
        if self.change == "operator" and resp.status_code == 200:
            doc = json.loads(body)
            evil = Ed25519PrivateKey.generate()
            inner = json.loads(__import__("base64").b64decode(json.loads(doc["bundle"])
                                                              ["payload"]))
            doc["operator_key"] = public_hex(evil)
            doc["bundle"] = bundles.make(evil, doc["terminal_id"], 1, inner["config"]).decode()
            body = json.dumps(doc).encode()
        return httpx.Response(resp.status_code, headers=resp.headers, content=body)


def test_tampered_answer_refused_and_token_key_sealed_on_the_wire(
        tmp_path: Path, srv: CentralProcess) -> None:
    home = tmp_path / "t"
    code = issue_code(srv)
    tamper = Tamper("operator")
    with pytest.raises(ConfigError, match="not authenticated with this code"):
        proto.enroll(home, srv.url, code, role="validator", place="85", transport=tamper)
    _nothing_installed(home)
    # what crossed the wire: neither the code nor the token key in clear
    wire = b"".join(tamper.seen)
    token = load_token_key(srv.data / "token.key")
    assert token.hex().encode() not in wire and token not in wire
    assert proto.normalize_code(code).encode() not in wire and code.encode() not in wire
    # an honest path, with the log key pinned to a different log: refused too
    other = Ed25519PrivateKey.generate()
    from sync.checkpoint import NoteSigner

    pin = NoteSigner("localpay.example/central", other).verifier.text()
    with pytest.raises(ConfigError, match="not the one given with --central-key"):
        proto.enroll(tmp_path / "p", srv.url, issue_code(srv), role="validator", place="85",
                     central_key=pin)
    _nothing_installed(tmp_path / "p")


def test_central_answer_message_matches_the_sync_protocol() -> None:
    for nonce, status, body in (("ab" * 16, 200, b"{}"), ("00" * 16, 401, b"x" * 99)):
        assert proto.central_answer_message(nonce, status, body) == \
            response_message(nonce, status, body)


def test_failed_attempts_are_rate_limited(tmp_path: Path) -> None:
    svc = open_service(f"sqlite:///{tmp_path / 'c.sqlite'}", tmp_path / "data")
    try:
        enroller = Enroller(svc, tmp_path / "data", RateLimiter(limit=3, window_s=600))
        [code] = issue_codes(svc)
        headers = {proto.H_NONCE: "ab" * 16, proto.H_TIME: "1", proto.H_ENROLL: "x",
                   proto.H_SIGNATURE: "x"}
        body = json.dumps({"format": proto.FORMAT, "code_id": "0" * 32,
                           "public_key": "11" * 32, "box_key": "22" * 32, "role": "validator",
                           "place": "85", "central_url": "http://x"}).encode()
        statuses = [enroller.handle(headers, body, "10.0.0.9")[0] for _ in range(4)]
        assert statuses == [401, 401, 401, 429]
        # another client: the same code is locked (failures count per code too), another
        # code is not
        assert enroller.handle(headers, body, "10.0.0.10")[0] == 429
        other = body.replace(b'"0000', b'"1111')
        assert enroller.handle(headers, other, "10.0.0.10")[0] == 401
        # nothing was stored by any of it, and the real code is still unused
        with svc.store.tx(write=False) as tx:
            assert tx.one("SELECT COUNT(*) FROM terminals") == (0,)
            assert tx.one("SELECT used_ms FROM enroll_codes WHERE code_id = ?",
                          (proto.code_id(code),)) == (None,)
    finally:
        svc.store.close()


def test_issue_codes_refuses_bad_requests(tmp_path: Path) -> None:
    svc = open_service(f"sqlite:///{tmp_path / 'c.sqlite'}", tmp_path / "data")
    try:
        with pytest.raises(ConfigError, match="one at a time"):
            issue_codes(svc, count=2, terminal_id="BUS-1")
        with pytest.raises(ConfigError, match="role"):
            issue_codes(svc, role="kiosk")
        with pytest.raises(ConfigError, match="config template"):
            issue_codes(svc, template="[terminal]\nrole = 'bus'\n")
        with pytest.raises(ConfigError, match="expiry"):
            issue_codes(svc, ttl_s=5)
        codes = issue_codes(svc, count=3)
        assert len(set(codes)) == 3
        with svc.store.tx(write=False) as tx:
            stored = tx.all("SELECT code_id, code_key FROM enroll_codes")
        # only hashes are kept: no code appears in the store
        for code in codes:
            for cid, ckey in stored:
                assert proto.normalize_code(code) not in cid
                assert proto.normalize_code(code).encode() not in bytes(ckey)
    finally:
        svc.store.close()


def test_config_takes_the_log_verifier_key_the_sync_client_needs() -> None:
    from firmware_cfg.config import DEFAULT, loads
    from sync.checkpoint import NoteSigner, NoteVerifier

    for _ in range(20):  # some keys' base64 holds '+', the verifier key's separator
        text = NoteSigner("central.example/log", Ed25519PrivateKey.generate()).verifier.text()
        config = loads(dumps(DEFAULT.replace("keys", central_public_key=text)))
        assert NoteVerifier.parse(config.keys.central_public_key).text() == text
    for bad in ("ab" * 32, "central.example/log+zz+AQ==", "no-plus-signs-at-all"):
        with pytest.raises(ConfigError, match=r"keys\.central_public_key: expected the central "
                                              r"log's verifier key"):
            loads(dumps(DEFAULT.replace("keys", central_public_key=bad)))


def test_config_pushed_by_the_operator_reaches_the_terminal(tmp_path: Path,
                                                            srv: CentralProcess) -> None:
    """central config --sign-for → the terminal's sync fetches it → its writer applies it."""
    from terminal.config_update import PENDING, apply_pending

    home = tmp_path / "terminal"
    assert provision(home, srv, issue_code(srv), "--role", "validator", "--route", "85",
                     "--no-selftest").exit_code == 0
    h = Home(home)
    config = h.config()
    toml_file = tmp_path / "new.toml"
    toml_file.write_text(dumps(config.replace("fares", adult=1550)), encoding="utf-8")
    runner = CliRunner()
    published = runner.invoke(cli, ["central", "config", "--db", srv.db, "--data",
                                    str(srv.data), "--sign-for", config.terminal.id,
                                    str(toml_file)])
    assert published.exit_code == 0, published.output
    assert "config version 2 published" in published.output  # enrolment's bundle was 1
    sync = runner.invoke(cli, ["--home", str(home), "sync", "--once"])
    assert sync.exit_code == 0, sync.output
    assert "config version 2 fetched" in sync.output
    assert (home / PENDING).exists() and h.config().fares.adult == config.fares.adult
    terminal = open_terminal(h, config)
    try:
        applied = apply_pending(terminal, h)
        assert applied is not None and applied.version == 2
        assert terminal.config.fares.adult == 1550 and h.config().fares.adult == 1550
        assert not (home / PENDING).exists() and apply_pending(terminal, h) is None
        assert terminal.ledger is not None
        last = terminal.ledger.entry(terminal.ledger.head.seq)
        assert last is not None and last.kind == "config_change"
        assert json.loads(last.fields.detail)["version"] == 2
        # a bundle that does not verify is set aside, and the running config stays
        (home / PENDING).write_bytes(bundles.make(Ed25519PrivateKey.generate(),
                                                  config.terminal.id, 3, dumps(config)))
        with pytest.raises(ConfigError, match="does not verify"):
            apply_pending(terminal, h)
        assert (home / "config.rejected").exists() and not (home / PENDING).exists()
        assert h.config().fares.adult == 1550
    finally:
        assert terminal.ledger is not None
        terminal.ledger.close()
