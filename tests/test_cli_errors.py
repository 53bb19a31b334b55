"""One-line errors at the terminal's commands (issue #16): each mistake below printed a
traceback, or printed its error twice, or named the wrong thing. Each runs the real
``localpay`` in a child process, as a technician would, and checks the exact line on
stderr, the exit code and that no traceback is printed. And ``readers`` calls a serial port
a PN532 only once it answered as one, over real pyserial on a pty."""

from __future__ import annotations

import errno
import json
import os
import select
import sqlite3
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.discovery import (
    PN532_GET_FIRMWARE,
    PortProbe,
    discover,
    pn532_firmware,
    port_users,
    probe_port,
)
from firmware_cfg.config import DEFAULT, dumps
from localpay.cli.bench.stacks import ROOT

ENV = {**os.environ, "PYGAME_HIDE_SUPPORT_PROMPT": "1", "PYTHONPATH": str(ROOT)}


def localpay(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "localpay", "--home", str(home), *args],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)


def one_line(result: subprocess.CompletedProcess[str], line: str, code: int = 2) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr == line + "\n"
    assert result.returncode == code


def test_qr_png_into_a_missing_folder(tmp_path: Path) -> None:
    result = localpay(tmp_path, "qr", "make", "--amount", "1000", "--png", "/no/dir/x.png")
    one_line(result, "Error: cannot write /no/dir/x.png: No such file or directory")
    assert result.stdout == ""  # a code that could not be drawn is not printed either


def test_simulate_first_card_beyond_the_pool(tmp_path: Path) -> None:
    result = localpay(tmp_path, "simulate", "--taps", "5", "--first-card", str(10**23))
    one_line(result, "Error: --first-card: the virtual pool's cards are numbered 0 to "
             "281,474,976,710,655; 100,000,000,000,000,000,000,000 plus 5 taps goes past it")
    assert not (tmp_path / "ledger.sqlite").exists()
    last = localpay(tmp_path, "simulate", "--taps", "1", "--first-card", str(2**48 - 1))
    assert last.returncode == 0, last.stderr


def test_bench_negative_size_is_refused_before_measuring(tmp_path: Path) -> None:
    one_line(localpay(tmp_path, "bench", "--sizes", "-5"),
             "Error: --sizes: -5 is not a ledger size (entries already in the ledger: 0 or "
             "more)")
    one_line(localpay(tmp_path, "bench", "--sizes", "1000,-1"),
             "Error: --sizes: -1 is not a ledger size (entries already in the ledger: 0 or "
             "more)")
    one_line(localpay(tmp_path, "bench", "--sizes", ","),
             "Error: --sizes: give at least one ledger size")
    one_line(localpay(tmp_path, "bench", "--sizes", "many"),
             "Error: --sizes: expected numbers separated by commas, got 'many'")


def test_verify_a_missing_ledger_says_it_is_missing(tmp_path: Path) -> None:
    # still exit 1 for verify: the check failed, but not as "ledger BROKEN"
    one_line(localpay(tmp_path, "ledger", "verify"),
             f"Error: no ledger at {tmp_path / 'ledger.sqlite'}: the file is missing (home "
             f"folder {tmp_path})", code=1)
    one_line(localpay(tmp_path, "ledger", "verify", "--db", str(tmp_path / "other.sqlite")),
             f"Error: no ledger at {tmp_path / 'other.sqlite'}: the file is missing", code=1)
    one_line(localpay(tmp_path, "ledger", "show"),
             f"Error: no ledger at {tmp_path / 'ledger.sqlite'}: the file is missing (home "
             f"folder {tmp_path})")


def test_issuer_key_errors_name_the_issuer_key(tmp_path: Path) -> None:
    key = tmp_path / "issuer.key"
    key.write_text("not a key\n")
    key.chmod(0o644)
    one_line(localpay(tmp_path, "qr", "wallet", "--wallet-id", "w1", "--key", str(key)),
             f"Error: KeyFileError: issuer key file {key} is readable by others (mode "
             f"-rw-r--r--); run: chmod 600 {key}")
    key.chmod(0o600)
    result = localpay(tmp_path, "qr", "wallet", "--wallet-id", "w1", "--key", str(key))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"Error: KeyFileError: issuer key file {key} is not a "
                                    "PEM private key")
    assert "terminal key" not in result.stderr and "Traceback" not in result.stderr


def test_campaign_key_errors_name_the_campaign_key(tmp_path: Path) -> None:
    key = tmp_path / "campaign.key"
    key.write_text("not a key\n")
    key.chmod(0o600)
    result = localpay(tmp_path, "central", "campaign", "code", "spring", "w1", "--key",
                      str(key), "--points", "100")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"Error: KeyFileError: campaign key file {key} is not a "
                                    "PEM private key")
    assert "terminal key" not in result.stderr and "Traceback" not in result.stderr
    made = tmp_path / "made.key"
    assert localpay(tmp_path, "central", "campaign", "keygen", str(made)).returncode == 0
    again = localpay(tmp_path, "central", "campaign", "keygen", str(made))
    assert again.returncode == 2
    assert "refusing to replace a campaign key" in again.stderr, again.stderr


def test_a_broken_ledger_is_reported_once(tmp_path: Path) -> None:
    made = localpay(tmp_path, "simulate", "--taps", "3")
    assert made.returncode == 0, made.stderr
    conn = sqlite3.connect(tmp_path / "ledger.sqlite")
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET amount = 5 WHERE seq = 2")
    conn.commit()
    conn.close()
    line = "Error: LedgerCorruptError: entry 2 does not match its hash"
    one_line(localpay(tmp_path, "simulate", "--taps", "1"), line)
    scenario = tmp_path / "tap.jsonl"
    scenario.write_text('{"at": "2026-11-24T07:00:00+09:00", "tap": {"uid": "08a10001"}}\n')
    one_line(localpay(tmp_path, "replay", str(scenario)), line)
    one_line(localpay(tmp_path, "ledger", "verify"),
             "ledger BROKEN: first bad entry: seq 2: entry 2 does not match its hash", code=1)


# -- readers: a serial port is a PN532 only once it answered as one ---------------------------

FIRMWARE_ANSWER = bytes.fromhex("0000ff00ff00") + bytes.fromhex("0000ff06fad50332010607e800")


class Pn532:
    """A PN532 on the far end of a pty, as NXP UM0701-02 §7.2.2 has it answer: the ACK,
    then GetFirmwareVersion's frame (IC 0x32, firmware 1.6). ``heard`` keeps every byte."""

    def __init__(self, answer: bool = True) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        # closed here: a port another process has open is not probed, and the CLI's
        # process would find this one holding it
        os.close(slave)
        self.answer = answer
        self.heard = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                self.heard += os.read(self.master, 256)
            except OSError as err:
                if err.errno != errno.EIO:
                    return
                time.sleep(0.02)  # no one has the port open now
                continue
            if self.answer and b"\xd4\x02\x2a" in self.heard:
                os.write(self.master, FIRMWARE_ANSWER)
                self.answer = False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self.master)


@pytest.fixture
def pn532() -> Iterator[Pn532]:
    device = Pn532()
    yield device
    device.close()


@pytest.fixture
def silent() -> Iterator[Pn532]:
    device = Pn532(answer=False)
    yield device
    device.close()


def test_frames_of_the_probe() -> None:
    assert pn532_firmware(FIRMWARE_ANSWER) == (0x32, 1, 6)
    assert pn532_firmware(FIRMWARE_ANSWER[:-2]) is None  # cut short
    bad = bytearray(FIRMWARE_ANSWER)
    bad[-2] ^= 1  # a wrong data checksum
    assert pn532_firmware(bytes(bad)) is None
    assert pn532_firmware(b"LPW1.eyJ3IjoiMDAxIn0.c2ln\r") is None


def test_a_pn532_is_listed_as_one_after_answering(pn532: Pn532) -> None:
    """The port is listed where pyserial finds it: a link in /dev, made by root (or sudo,
    as ``make test`` has it); nfcpy then names it by that link."""
    as_root = [] if os.geteuid() == 0 else ["sudo", "-n"]
    link = Path(f"/dev/ttyUSB-localpay-pn532-{os.getpid()}")
    subprocess.run([*as_root, "ln", "-s", pn532.port, str(link)], check=True)
    try:
        report = discover()
    finally:
        subprocess.run([*as_root, "rm", "-f", str(link)], check=True)
    [mine] = [f for f in report.findings if f.name.startswith(f"{link}: ")]
    assert (mine.section, mine.spec, mine.name, mine.problem) == (
        "nfc", f"nfc:tty:{link.name}:pn532", f"{link}: PN532 firmware 1.6", "")
    assert pn532.heard.endswith(PN532_GET_FIRMWARE)


def test_a_silent_port_is_not_called_a_reader(silent: Pn532) -> None:
    config = DEFAULT.replace("readers", card="pcsc", scanner=f"serial:{silent.port}")
    report = discover(config.readers.specs())
    [mine] = [f for f in report.findings if f.used == "readers.scanner"]
    assert (mine.section, mine.name, mine.problem) == (
        "serial", f"{silent.port}: configured port", "")
    assert mine.probe == ("no PN532 answered; a line scanner says nothing until it reads a "
                          "code")
    assert not [f for f in report.findings if f.section == "nfc" and silent.port in f.name]
    assert silent.heard.endswith(PN532_GET_FIRMWARE)  # it was asked


def test_a_pn532_configured_as_the_scanner_is_a_problem(tmp_path: Path, pn532: Pn532) -> None:
    config = DEFAULT.replace("readers", scanner=f"serial:{pn532.port}")
    (tmp_path / "terminal.toml").write_text(dumps(config), encoding="utf-8")
    result = localpay(tmp_path, "readers", "--json")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    doc = json.loads(result.stdout)
    [problem] = [p for p in doc["problems"] if p["used"] == "readers.scanner"]
    assert problem["problem"] == (f"readers.scanner = 'serial:{pn532.port}' is a PN532 NFC "
                                  "reader (PN532 firmware 1.6), not a code scanner")
    [listed] = [f for f in doc["findings"] if f["name"].startswith(f"{pn532.port}: ")]
    assert listed["section"] == "nfc" and listed["name"] == f"{pn532.port}: PN532 firmware 1.6"
    # nfcpy names devices in /dev only: a pty needs a udev name first
    assert listed["spec"] == "" and "nfcpy opens only devices directly in /dev" in \
        listed["problem"]


def test_the_console_is_never_probed(silent: Pn532) -> None:
    console = os.path.basename(os.path.realpath(silent.port))
    probe = probe_port(silent.port, consoles={console})
    assert probe == PortProbe("skipped", "not probed: the kernel console is on it")
    time.sleep(0.2)
    assert silent.heard == b""


def test_a_port_another_process_has_open_is_not_probed(silent: Pn532) -> None:
    """The running terminal reading its scanner: a probe would take its codes."""
    reader = subprocess.Popen([sys.executable, "-c", "import sys, time; "
                               "f = open(sys.argv[1], 'rb', buffering=0); time.sleep(60)",
                               silent.port])
    try:
        deadline = time.monotonic() + 10
        while os.path.realpath(silent.port) not in port_users([silent.port]):
            assert time.monotonic() < deadline, "the reader never opened the port"
            time.sleep(0.05)
        probe = probe_port(silent.port)
        assert probe.kind == "skipped"
        assert probe.detail.startswith(f"not probed: process {reader.pid} (")
        assert probe.detail.endswith(") has it open")
        time.sleep(0.2)
        assert silent.heard == b""
    finally:
        reader.kill()
        reader.wait(10)
