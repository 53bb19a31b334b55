"""Signed config bundles: accepted, refused for each reason, rolled back, recorded."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from firmware_cfg import bundle as bundles
from firmware_cfg.config import DEFAULT, Config, dumps, loads
from firmware_cfg.keys import public_hex
from localpay.errors import ConfigError
from terminal.config_update import install
from terminal.home import Home, open_terminal

OPERATOR = Ed25519PrivateKey.generate()


def provisioned(tmp_path: Path) -> tuple[Home, Config]:
    home = Home(tmp_path / "home")
    config = DEFAULT.replace("terminal", id="BUS-85-0009").replace(
        "keys", operator_public_key=public_hex(OPERATOR))
    home.path.mkdir(parents=True)
    home.config_path.write_text(dumps(config), encoding="utf-8")
    return home, config


def test_toml_round_trip_of_every_field() -> None:
    config = DEFAULT.replace("terminal", merchant_name='Kim "Fresh" \\ 김가네\n').replace(
        "readers", card="nfc:tty:AMA0:pn532", buzzer=False)
    assert loads(dumps(config)) == config


def test_accepted_applied_and_recorded(tmp_path: Path) -> None:
    home, config = provisioned(tmp_path)
    terminal = open_terminal(home, home.config(), create_keys=True)
    assert terminal.ledger is not None
    try:
        new = config.replace("fares", adult=1550)
        data = bundles.make(OPERATOR, "BUS-85-0009", 3, dumps(new))
        applied = install(terminal, home, data)
        assert applied.version == 3 and terminal.config.fares.adult == 1550
        assert home.config() == new
        assert bundles.current_version(home.path) == 3
        entry = terminal.ledger.entry(terminal.ledger.head.seq)
        assert entry is not None and entry.kind == "config_change"
        assert json.loads(entry.fields.detail) == {"sha256": applied.sha256, "version": 3}
        # the same or an older version again is refused, nothing changes
        with pytest.raises(ConfigError, match="not newer"):
            install(terminal, home, data)
        older = bundles.make(OPERATOR, "BUS-85-0009", 2, dumps(config))
        with pytest.raises(ConfigError, match="version 2 is not newer than the running "
                                              "version 3"):
            install(terminal, home, older)
        assert home.config() == new
    finally:
        terminal.ledger.close()


def test_refusals(tmp_path: Path) -> None:
    _home, config = provisioned(tmp_path)
    pub = OPERATOR.public_key()
    text = dumps(config)
    forged = bundles.make(Ed25519PrivateKey.generate(), "BUS-85-0009", 5, text)
    with pytest.raises(ConfigError, match="signature does not verify"):
        bundles.verify(forged, pub, "BUS-85-0009", 0)
    other = bundles.make(OPERATOR, "BUS-99-0001", 5, text)
    with pytest.raises(ConfigError, match="is for terminal 'BUS-99-0001'"):
        bundles.verify(other, pub, "BUS-85-0009", 0)
    renamed = bundles.make(OPERATOR, "BUS-85-0009", 5,
                           dumps(config.replace("terminal", id="BUS-85-0010")))
    with pytest.raises(ConfigError, match="renames the terminal"):
        bundles.verify(renamed, pub, "BUS-85-0009", 0)
    good = json.loads(bundles.make(OPERATOR, "BUS-85-0009", 5, text))
    payload = json.loads(base64.b64decode(good["payload"]))
    payload["version"] = 99  # tampered after signing
    good["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    with pytest.raises(ConfigError, match="signature does not verify"):
        bundles.verify(json.dumps(good).encode(), pub, "BUS-85-0009", 0)
    for junk, message in [(b"nope", "not JSON"), (b"{}", "expected format"),
                          (b'{"format":"localpay-config-bundle/1","payload":"!!",'
                           b'"signature":"AA=="}', "bad base64"),
                          (b'{"format":"localpay-config-bundle/1","payload":5}', "must be str")]:
        with pytest.raises(ConfigError, match=message):
            bundles.verify(junk, pub, "BUS-85-0009", 0)
    with pytest.raises(ConfigError, match="unknown section"):
        bundles.make(OPERATOR, "BUS-85-0009", 6, text + "\n[terminal2]\nx=1\n")


def test_rolled_back_when_terminal_cannot_start(tmp_path: Path) -> None:
    home, config = provisioned(tmp_path)
    terminal = open_terminal(home, home.config(), create_keys=True)
    assert terminal.ledger is not None
    try:
        head = terminal.ledger.head.seq
        broken = config.replace("keys", terminal_key="keys/missing.key")
        data = bundles.make(OPERATOR, "BUS-85-0009", 4, dumps(broken))
        with pytest.raises(ConfigError, match=r"rolled back.*missing\.key"):
            install(terminal, home, data)
        assert home.config() == config and bundles.current_version(home.path) == 0
        assert terminal.config == config and terminal.ledger.head.seq == head
    finally:
        terminal.ledger.close()


def test_unprovisioned_terminal_takes_no_bundles(tmp_path: Path) -> None:
    home = Home(tmp_path)
    terminal = open_terminal(home, DEFAULT, create_keys=True)
    assert terminal.ledger is not None
    try:
        with pytest.raises(ConfigError, match="operator_public_key is not set"):
            install(terminal, home, b"{}")
    finally:
        terminal.ledger.close()


@given(st.binary(max_size=400))
def test_any_bytes_give_a_bundle_or_config_error(data: bytes) -> None:
    try:
        bundles.verify(data, OPERATOR.public_key(), "T", 0)
    except ConfigError:
        return
    raise AssertionError("random bytes verified as a signed bundle")
