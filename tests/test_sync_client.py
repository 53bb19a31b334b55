"""The terminal's sync client against the real service: a backlog goes up with proofs checked,
deny list, balances and config come down, the terminal keeps appending while the client runs
in its thread, and a central log that rewrites history is caught."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import open_service
from firmware_cfg.keys import public_hex
from localpay.errors import ConfigError, ProofError
from offline_ledger import Ledger
from sync.client import Backoff, SyncClient
from sync.protocol import H_NONCE, H_SIGNATURE, H_TERMINAL, H_TIME, b64, request_message
from tests.pg_fixtures import central, fill_ledger
from tests.test_answer_key import answer_verifier


def _register(tmp: Path, db: str, tid: str, key: Ed25519PrivateKey) -> None:
    svc = open_service(db, tmp / "data")
    svc.add_terminal(tid, bytes.fromhex(public_hex(key)))
    svc.store.close()


def test_backlog_up_deny_balances_config_down(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'central.sqlite'}"
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "ledger.sqlite"
    fill_ledger(path, key, "BUS-1", 1234, cards=10).close()
    _register(tmp_path, db, "BUS-1", key)
    svc = open_service(db, tmp_path / "data")
    svc.deny("f" * 64, "stolen")
    svc.set_balances({"e" * 64: 7000})
    from firmware_cfg import bundle as bundles
    from firmware_cfg.config import DEFAULT, dumps

    operator = Ed25519PrivateKey.generate()
    signed = bundles.make(operator, "BUS-1", 1, dumps(DEFAULT)).decode()
    assert svc.publish_config(signed) == 1
    with pytest.raises(ConfigError, match="not newer"):
        svc.publish_config(signed)
    with pytest.raises(ConfigError, match="not registered"):
        svc.publish_config(bundles.make(operator, "BUS-404", 1, dumps(DEFAULT)).decode())
    configs: list[tuple[int, str]] = []
    seen: list[tuple[int, int]] = []
    with central(db, tmp_path / "data") as srv:
        client = SyncClient(path, key, srv.url, srv.verifier, batch_size=100,
                            on_config=lambda v, body: configs.append((v, body)))
        summary = client.sync_once(lambda done, total: seen.append((done, total)))
        again = client.sync_once()
        client.close()
    assert (summary.sent, summary.batches, summary.synced_upto) == (1234, 13, 1234)
    assert seen[0] == (0, 1234) and seen[-1] == (1234, 1234)
    assert again.sent == 0 and again.batches == 0
    assert configs == [(1, signed)]
    with Ledger(path, key=key) as led:
        assert led.synced_upto() == 1234
        assert led.card_state("f" * 64).denied == "stolen"
        assert led.card_state("e" * 64).balance == 7000
    from central.reconcile import report

    days = {line.terminal_id for d in summary.days_reported for line in report(svc, d).lines}
    assert days == {"BUS-1"}
    assert all(report(svc, d).clean for d in summary.days_reported)
    svc.store.close()


def test_background_thread_while_the_terminal_appends(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'central.sqlite'}"
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "ledger.sqlite"
    writer = fill_ledger(path, key, "TILL-1", 500)
    _register(tmp_path, db, "TILL-1", key)
    with central(db, tmp_path / "data") as srv:
        client = SyncClient(path, key, srv.url, srv.verifier, batch_size=50, interval_s=0.05,
                            backoff=Backoff(base=0.05, cap=0.2))
        client.start()
        for i in range(300):  # the terminal's own writer, committing each entry durably
            writer.append("payment", card_token=f"{i % 9:064x}", amount=1000 + i, place="M1")
        deadline = time.monotonic() + 60
        while writer.synced_upto() < 800 and time.monotonic() < deadline:
            time.sleep(0.05)
        client.close()
    assert writer.synced_upto() == 800 and writer.head.seq == 800
    writer.close()
    assert client.last_error is None


def test_log_that_rewrites_history_is_detected(tmp_path: Path) -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    path = tmp_path / "ledger.sqlite"
    fill_ledger(path, key, "T1", 100).close()
    db1 = f"sqlite:///{tmp_path / 'central.sqlite'}"
    _register(tmp_path, db1, "T1", key)
    with central(db1, tmp_path / "data") as srv:
        client = SyncClient(path, key, srv.url, srv.verifier, batch_size=100)
        client.sync_once()
        client.close()
    # Same log key, new history: another terminal's entries now come first.
    db2 = f"sqlite:///{tmp_path / 'rewritten.sqlite'}"
    _register(tmp_path, db2, "T1", key)
    _register(tmp_path, db2, "T2", other)
    from tests.pg_fixtures import signed_entries

    svc = open_service(db2, tmp_path / "data")
    svc.ingest("T2", signed_entries(other, "T2", 7))
    with Ledger(path, key=key) as led:
        from sync.protocol import decode_entry

        svc.ingest("T1", [decode_entry(e.encoded(), e.signature) for e in led.entries()])
        led.append("tap", card_token="a" * 64, amount=1500, place="85")
    svc.store.close()
    with central(db2, tmp_path / "data") as srv:
        client = SyncClient(path, key, srv.url, srv.verifier, batch_size=100)
        with pytest.raises(ProofError, match="not append-only"):
            client.sync_once()
        client.close()
    with Ledger(path, key=key) as led:
        assert led.synced_upto() == 100  # nothing marked on a log that cannot be trusted


def test_api_refusals_store_nothing_and_only_authenticated_ones_are_signed(
        tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'central.sqlite'}"
    key = Ed25519PrivateKey.generate()
    _register(tmp_path, db, "T1", key)
    with central(db, tmp_path / "data") as srv:
        from sync.protocol import response_message

        verifier = answer_verifier(srv)  # the key the log key names for answers

        def call(tid: str, signer: Ed25519PrivateKey, nonce: str, when: int) -> httpx.Response:
            path = "/v1/deny?since=0"
            sig = signer.sign(request_message("GET", path, when, nonce, b""))
            resp = httpx.get(srv.url + path, headers={H_TERMINAL: tid, H_TIME: str(when),
                                                      H_NONCE: nonce, H_SIGNATURE: b64(sig)})
            if resp.status_code == 401:  # not authenticated: never signed (issue #18)
                assert H_SIGNATURE not in resp.headers
                return resp
            verifier.public_key.verify(
                __import__("base64").b64decode(resp.headers[H_SIGNATURE]),
                response_message(nonce, resp.status_code, resp.content))
            return resp

        now = int(time.time() * 1000)
        assert call("T1", key, "01" * 16, now).status_code == 200
        replay = call("T1", key, "01" * 16, now)
        assert replay.status_code == 401 and "replayed" in replay.json()["message"]
        assert call("T2", key, "02" * 16, now).json()["error"] == "refused"
        assert call("T1", Ed25519PrivateKey.generate(), "03" * 16, now).status_code == 401
        assert "stale" in call("T1", key, "04" * 16, now - 900_000).json()["message"]
        bare = httpx.get(srv.url + "/v1/deny")
        assert bare.status_code == 401
    svc = open_service(db, tmp_path / "data")
    assert svc.size() == 0
    svc.store.close()


def test_cli_sync_once_with_home_config(tmp_path: Path) -> None:
    from localpay.cli import cli

    db = f"sqlite:///{tmp_path / 'central.sqlite'}"
    home = tmp_path / "home"
    runner = CliRunner()
    key_path = home / "keys" / "terminal.key"
    from firmware_cfg.keys import generate_terminal_key

    key = generate_terminal_key(key_path)
    fill_ledger(home / "ledger.sqlite", key, "DEMO-TERMINAL-01", 250).close()
    assert runner.invoke(cli, ["central", "init", "--db", db, "--data",
                               str(tmp_path / "data")]).exit_code == 0
    result = runner.invoke(cli, ["central", "terminal", "add", "--db", db, "--data",
                                 str(tmp_path / "data"), "DEMO-TERMINAL-01", public_hex(key)])
    assert result.exit_code == 0, result.output
    with central(db, tmp_path / "data") as srv:
        result = runner.invoke(cli, ["--home", str(home), "sync", "--once", "--url", srv.url,
                                     "--central-key", srv.verifier, "--batch-size", "100"])
    assert result.exit_code == 0, result.output
    assert "sent 250 entries in 3 batches; synced up to 250 of 250" in result.output
