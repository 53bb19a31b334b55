"""The ``serial`` backend with real pyserial over a pty pair (a scanner's side and ours),
and over socat ptys for unplugging and plugging the scanner back."""

from __future__ import annotations

import os
import shutil
import threading
import time
import tty
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from drivers import open_reader
from drivers.serial_scanner import SerialScanner, decode_line, parse_terminator
from localpay.errors import ConfigError, ReaderUnavailableError, ScanError
from tests.hw_fixtures import socat_ptys

WALLET = "LPW1.eyJ3IjoiMDAxIn0.c2ln"


@pytest.fixture()
def pty_pair() -> Iterator[tuple[int, str]]:
    """(the scanner's end as an fd, the device path the terminal opens)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def send(fd: int, data: bytes) -> None:
    os.write(fd, data)


def test_one_code_per_line(pty_pair: tuple[int, str]) -> None:
    fd, path = pty_pair
    with closing(SerialScanner(path, baudrate=115200)) as s:
        send(fd, f"{WALLET}\r".encode())
        p = s.poll(10.0)
        assert p is not None and p.kind == "qr" and p.payload == WALLET
        assert p.reader == f"serial:{path}"


def test_code_split_across_reads_and_two_in_one_read(pty_pair: tuple[int, str]) -> None:
    fd, path = pty_pair
    with closing(SerialScanner(path, terminator="LF", debounce_s=0.0)) as s:
        send(fd, b"0001234")
        assert s.poll(0.3) is None  # no terminator yet
        send(fd, b"5678\nSECOND\n")
        first, second = s.poll(10.0), s.poll(10.0)
        assert first is not None and first.payload == "00012345678"
        assert second is not None and second.payload == "SECOND"


def test_crlf_from_a_scanner_set_to_cr(pty_pair: tuple[int, str]) -> None:
    fd, path = pty_pair
    with closing(SerialScanner(path, terminator="CR", debounce_s=0.0)) as s:
        send(fd, b"AAA\r\nBBB\r\n")
        a, b = s.poll(10.0), s.poll(10.0)
        assert a is not None and b is not None
        assert (a.payload, b.payload) == ("AAA", "BBB")


def test_same_code_twice_within_debounce_is_one_scan(pty_pair: tuple[int, str]) -> None:
    fd, path = pty_pair
    with closing(SerialScanner(path, debounce_s=30.0)) as s:
        send(fd, b"SAME\rSAME\rOTHER\r")
        a = s.poll(10.0)
        b = s.poll(10.0)
        assert a is not None and b is not None
        assert (a.payload, b.payload) == ("SAME", "OTHER")


def test_garbage_lines_are_dropped_and_counted(pty_pair: tuple[int, str]) -> None:
    fd, path = pty_pair
    with closing(SerialScanner(path, debounce_s=0.0)) as s:
        send(fd, b"\xff\xfe\xfd\rBAD\x07BELL\rGOOD\r")
        p = s.poll(10.0)
        assert p is not None and p.payload == "GOOD"
        assert s.rejected == 2


def test_stop_ends_a_blocked_poll(pty_pair: tuple[int, str]) -> None:
    _, path = pty_pair
    with closing(SerialScanner(path)) as s:
        out: list[object] = []
        t = threading.Thread(target=lambda: out.append(s.poll(120.0)))
        t.start()
        s.stop()
        t.join(10.0)
        assert not t.is_alive() and out == [None]


def test_loop_url_through_the_registry() -> None:
    with open_reader("serial", port="loop://", baudrate=9600, terminator="CRLF") as s:
        assert isinstance(s, SerialScanner)
        assert s._ser is not None
        s._ser.write(b"LOOPED\r\n")
        p = s.poll(10.0)
        assert p is not None and p.payload == "LOOPED"


def test_missing_port_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReaderUnavailableError, match="cannot open scanner port"):
        SerialScanner(str(tmp_path / "ttyNOPE"))


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        parse_terminator("")
    with pytest.raises(ConfigError):
        SerialScanner("loop://", baudrate=0)


@pytest.mark.parametrize(("raw", "text"), [(b"  ABC \r", "ABC"), (b"\x00\x00X", "X"),
                                           (b"]Q1" + "가맹점".encode(), "]Q1가맹점"),
                                           (b"01\x1d17", "01\x1d17")])
def test_decode_line(raw: bytes, text: str) -> None:
    assert decode_line(raw) == text


@pytest.mark.parametrize("raw", [b"", b"   ", b"\xc3\x28", b"A\x01B", b"X" * 5000])
def test_decode_line_rejects(raw: bytes) -> None:
    with pytest.raises(ScanError):
        decode_line(raw)




def test_scanner_unplugged_and_plugged_back(tmp_path: Path) -> None:
    assert shutil.which("socat"), "socat is needed (apt install socat)"
    proc = socat_ptys(tmp_path)
    try:
        with closing(SerialScanner(str(tmp_path / "ttyAPP"), debounce_s=0.0, reconnect_s=0.1)) as s:
            with open(tmp_path / "ttySCANNER", "wb", buffering=0) as scanner:
                scanner.write(b"BEFORE\r")
            p = s.poll(10.0)
            assert p is not None and p.payload == "BEFORE"
            proc.terminate()  # unplugged: both ptys vanish
            proc.wait(10)
            assert s.poll(1.0) is None
            proc = socat_ptys(tmp_path)  # plugged back: a new pty at the same path
            got = None
            deadline = time.monotonic() + 20
            while got is None and time.monotonic() < deadline:
                with open(tmp_path / "ttySCANNER", "wb", buffering=0) as scanner:
                    scanner.write(b"AFTER\r")
                got = s.poll(1.0)
            assert got is not None and got.payload == "AFTER"
    finally:
        proc.terminate()
        proc.wait(10)
