"""Config files and key files: every error path names the field or file and what is wrong."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from firmware_cfg import keys
from firmware_cfg.config import DEFAULT, load
from localpay.errors import ConfigError, KeyFileError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "terminal.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_file(tmp_path: Path) -> None:
    config = load(write(tmp_path, """
[terminal]
id = "BUS-85-0007"
role = "validator"
place = "85"
bus_type = "village"

[fares]
adult = 1450

[risk]
duplicate_window_s = 20
"""))
    assert config.terminal.bus_type == "village" and config.fares.adult == 1450
    assert config.fares.youth == DEFAULT.fares.youth
    assert config.risk.duplicate_window_s == 20


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[terminal]\nrole = \"kiosk\"\n", "terminal.role: expected one of"),
        ("[terminal]\nidd = \"x\"\n", "unknown key 'idd'"),
        ("[fares]\nadult = \"1500\"\n", "fares.adult: expected a whole number, found '1500'"),
        ("[fares]\nadult = true\n", "fares.adult: expected a whole number, found True"),
        ("[fares]\nadult = 1500.5\n", "expected a whole number"),
        ("[risk]\nmax_amount = -1\n", "risk.max_amount: expected a number of 0 or more"),
        ("[shop]\nx = 1\n", "unknown section [shop]"),
        ("terminal = 5\n", "[terminal]: expected a table"),
        ("[terminal\n", "not valid TOML"),
        ("[risk]\nuid_max_amount = 90000\n", "risk.uid_max_amount: expected at most"),
        ("[terminal]\nid = \"\"\n", "terminal.id: expected 1 to 64"),
    ],
)
def test_errors_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, text))
    assert message in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_missing_and_unreadable_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "none.toml")
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot be read"):
        load(bad)


def test_terminal_key_files(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "terminal.key"
    key = keys.generate_terminal_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert keys.public_hex(keys.load_terminal_key(path)) == keys.public_hex(key)
    with pytest.raises(KeyFileError, match="refusing to replace"):
        keys.generate_terminal_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        keys.load_terminal_key(path)
    os.chmod(path, 0o600)
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\ngarbage\n")
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        keys.load_terminal_key(path)
    with pytest.raises(KeyFileError, match="does not exist"):
        keys.load_terminal_key(tmp_path / "missing.key")


def test_unreadable_key_file(tmp_path: Path) -> None:
    folder = tmp_path / "k.key"
    folder.mkdir(mode=0o700)  # a folder where the file should be: read() fails
    with pytest.raises(KeyFileError, match="cannot be read"):
        keys.load_terminal_key(folder)


def test_token_key_files(tmp_path: Path) -> None:
    path = tmp_path / "token.key"
    key = keys.generate_token_key(path)
    assert keys.load_token_key(path) == key
    path.write_text("zz\n")
    with pytest.raises(KeyFileError, match="not hex"):
        keys.load_token_key(path)
    path.write_text("abcd\n")
    with pytest.raises(KeyFileError, match="at least 16"):
        keys.load_token_key(path)


def test_public_from_hex() -> None:
    with pytest.raises(KeyFileError, match="32 bytes of hex"):
        keys.public_from_hex("abc")
    demo = keys.demo_issuer_key()
    assert keys.public_hex(keys.public_from_hex(keys.public_hex(demo))) == keys.public_hex(demo)
