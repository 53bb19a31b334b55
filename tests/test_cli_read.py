"""``localpay read``: one card or code through the card applications, never a full PAN."""

from __future__ import annotations

import json
import os
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from drivers.emulators.emv_card import EmvCard
from localpay.cli import cli
from tests.hw_fixtures import PcscStack, pcsc, pcsc_stack  # noqa: F401

FULL_PAN = "9410123456789012"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--home", "/nonexistent-localpay-home", "read", *args])
    return result.exit_code, result.output


def test_virtual_reader_reads_the_demo_emv_card() -> None:
    code, out = run("--json", "--timeout", "10")
    assert code == 0, out
    data = json.loads(out)
    assert data["kind"] == "card" and data["application"] == "emv"
    assert data["display"] == "941012******9012"
    assert data["aid"] == "D4100000030001" and data["label"] == "LOCALPAY"
    assert len(data["token"]) == 32 and isinstance(data["atc"], int)
    assert FULL_PAN not in out


def test_text_output_never_holds_the_pan() -> None:
    code, out = run("--timeout", "10")
    assert code == 0, out
    assert "941012******9012" in out and FULL_PAN not in out


def test_pcsc_reader_through_pcscd(pcsc: PcscStack) -> None:  # noqa: F811
    card = pcsc.card(handler=EmvCard(pan="9410123456781234").handle)
    threading.Thread(target=pcsc.insert, args=(card,), daemon=True).start()
    code, out = run("--reader", f"pcsc:{pcsc.readers[0][0]}", "--json", "--timeout", "30")
    assert code == 0, out
    data = json.loads(out)
    assert data["reader"] == pcsc.readers[0][0] and data["protocol"] == "T=1"
    assert data["display"] == "941012******1234"
    assert data["uid"] == card.uid.hex()
    assert "9410123456781234" not in out


def test_uid_card_through_pcscd(pcsc: PcscStack) -> None:  # noqa: F811
    card = pcsc.card(uid=bytes.fromhex("08abcdef"))
    threading.Thread(target=pcsc.insert, args=(card,), daemon=True).start()
    code, out = run("--reader", f"pcsc:{pcsc.readers[0][0]}", "--json", "--timeout", "30")
    assert code == 0, out
    data = json.loads(out)
    assert data["application"] == "uid" and data["weak"] is True


@pytest.fixture()
def pty_pair() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_serial_scanner_code_is_shown(pty_pair: tuple[int, str]) -> None:
    fd, path = pty_pair

    def scan() -> None:
        time.sleep(0.5)
        os.write(fd, b"NOT-A-PAYMENT-CODE\r")

    threading.Thread(target=scan, daemon=True).start()
    code, out = run("--reader", f"serial:{path}:9600", "--json", "--timeout", "20")
    data = json.loads(out.strip().splitlines()[-1])
    assert data["kind"] == "qr" and data["qr_length"] == len("NOT-A-PAYMENT-CODE")
    # a code no format claims is shown as such, and the command says it read nothing usable
    assert code == 1
    assert data["application"] == "qr" and data["error"].startswith("QRFormatError")


def test_timeout_names_what_it_waited_for(pcsc: PcscStack) -> None:  # noqa: F811
    code, out = run("--reader", "pcsc:no such reader", "--timeout", "1")
    assert code != 0
    assert "nothing presented" in out and "no reader matching 'no such reader'" in out


@pytest.mark.parametrize("spec", ["bogus", "nfc:bluetooth", "serial"])
def test_bad_reader_spec_is_one_line(spec: str) -> None:
    code, out = run("--reader", spec, "--timeout", "1")
    assert code != 0 and "ConfigError" in out and "Traceback" not in out


def test_help_documents_the_reader_syntax() -> None:
    result = CliRunner().invoke(cli, ["read", "--help"])
    assert result.exit_code == 0
    for form in ("pcsc[:NAME-PATTERN]", "nfc:tty:AMA0:pn532", "serial:PORT[:BAUD]",
                 "camera[:INDEX]"):
        assert form in result.output


def test_without_reader_it_reads_the_configured_card_reader(
        pcsc: PcscStack, tmp_path: Path) -> None:  # noqa: F811
    """A technician checks the reader the terminal will use, not the virtual demo card."""
    (tmp_path / "terminal.toml").write_text(
        f'[readers]\ncard = "pcsc:{pcsc.readers[0][0]}"\n', encoding="utf-8")
    card = pcsc.card(handler=EmvCard(pan="9410123456785555").handle)
    threading.Thread(target=pcsc.insert, args=(card,), daemon=True).start()
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "read", "--json",
                                      "--timeout", "30"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["reader"] == pcsc.readers[0][0] and data["uid"] == card.uid.hex()
    assert data["display"] == "941012******5555"
