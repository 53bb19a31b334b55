"""Issue #16 B: a provisioning the terminal refused after central spent the code (a wrong
``--central-key``) is retried with the same code and the right key, against a real
``localpay central serve`` on loopback (SQLite and PostgreSQL stores)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import open_service
from firmware_cfg import bundle as bundles
from firmware_cfg.keys import load_token_key
from sync.checkpoint import NoteSigner
from terminal.home import Home
from tests.enroll_fixtures import issue_code, localpay_central, provision
from tests.pg_fixtures import CentralProcess, pg_cluster, store_url  # noqa: F401


@pytest.fixture
def srv(tmp_path: Path, store_url: str) -> Iterator[CentralProcess]:  # noqa: F811
    with localpay_central(store_url, tmp_path / "central") as server:
        yield server


def _rows(srv: CentralProcess, sql: str) -> list[tuple[object, ...]]:
    svc = open_service(srv.db, srv.data)
    try:
        with svc.store.tx(write=False) as tx:
            return tx.all(sql)
    finally:
        svc.store.close()


def _wrong_key() -> str:
    return NoteSigner("localpay.example/central", Ed25519PrivateKey.generate()).verifier.text()


def test_wrong_central_key_then_the_right_one_enrols(tmp_path: Path,
                                                     srv: CentralProcess) -> None:
    code = issue_code(srv, "--role", "validator", "--place", "85")
    home = tmp_path / "terminal"
    first = provision(home, srv, code, "--role", "validator", "--route", "85",
                      "--central-key", _wrong_key(), "--no-selftest")
    assert first.exit_code != 0
    assert "not the one given with --central-key" in first.output
    assert not (home / "terminal.toml").exists()
    # central spent the code on that attempt and registered the key
    assert _rows(srv, "SELECT terminal_id FROM terminals") == [("BUS-85-0001",)]
    again = provision(home, srv, code, "--role", "validator", "--route", "85",
                      "--central-key", srv.verifier, "--no-selftest")
    assert again.exit_code == 0, again.output
    assert "enrolled as BUS-85-0001" in again.output
    config = Home(home).config()
    assert config.terminal.id == "BUS-85-0001" and bundles.current_version(home) == 1
    assert load_token_key(home / "keys" / "token.key") == load_token_key(srv.data / "token.key")
    # the same result, not a second enrolment: one terminal, one first bundle, the code
    # used once by that terminal
    assert _rows(srv, "SELECT terminal_id FROM terminals") == [("BUS-85-0001",)]
    assert _rows(srv, "SELECT terminal_id, version FROM configs") == [("BUS-85-0001", 1)]
    assert _rows(srv, "SELECT used_by FROM enroll_codes") == [("BUS-85-0001",)]


def test_a_used_code_still_refuses_another_key_and_another_place(
        tmp_path: Path, srv: CentralProcess) -> None:
    code = issue_code(srv)
    home = tmp_path / "terminal"
    first = provision(home, srv, code, "--role", "validator", "--route", "7",
                      "--central-key", _wrong_key(), "--no-selftest")
    assert first.exit_code != 0
    # another terminal (another key) with the spent code: refused as before
    other = provision(tmp_path / "other", srv, code, "--role", "validator", "--route", "7",
                      "--no-selftest")
    assert other.exit_code != 0 and "used already" in other.output
    assert not (tmp_path / "other" / "terminal.toml").exists()
    # the same key asking for something else than what the code enrolled: refused
    moved = provision(home, srv, code, "--role", "validator", "--route", "8", "--no-selftest")
    assert moved.exit_code != 0 and "ask again with that role and place" in moved.output
    assert not (home / "terminal.toml").exists()
    assert _rows(srv, "SELECT COUNT(*) FROM terminals") == [(1,)]
    # and the right request still enrols
    done = provision(home, srv, code, "--role", "validator", "--route", "7", "--no-selftest")
    assert done.exit_code == 0, done.output
    assert "enrolled as BUS-7-0001" in done.output


def test_a_used_code_past_its_expiry_is_not_answered_again(tmp_path: Path,
                                                          srv: CentralProcess) -> None:
    code = issue_code(srv)
    home = tmp_path / "terminal"
    first = provision(home, srv, code, "--role", "validator", "--route", "85",
                      "--central-key", _wrong_key(), "--no-selftest")
    assert first.exit_code != 0
    svc = open_service(srv.db, srv.data)
    try:
        with svc.store.tx() as tx:
            tx.run("UPDATE enroll_codes SET expires_ms = issued_ms - 1")
    finally:
        svc.store.close()
    again = provision(home, srv, code, "--role", "validator", "--route", "85",
                      "--no-selftest")
    assert again.exit_code != 0 and "expired" in again.output
    assert not (home / "terminal.toml").exists()
