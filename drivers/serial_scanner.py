"""Barcode and QR scanners on a serial line or USB-CDC (``/dev/ttyACM0``), via pyserial.

Such scanners (Honeywell, Zebra, Newland and most cheap ones in "serial" or "USB COM port"
mode) send each decoded code as one line of text followed by a terminator, usually CR.
``port`` is a device path or any pyserial URL (``loop://``, ``rfc2217://host:port``).

The scanner being unplugged (the device node disappears, reads fail) is not fatal: the port
is reopened by path every ``reconnect_s`` seconds until it is back. Lines that are not usable
text (not UTF-8, control characters, longer than ``max_line``) are dropped and counted in
:attr:`SerialScanner.rejected`, so a noisy line cannot stop the terminal.

=========================  ===========================================================
can sense                  codes the scanner decoded (QR, barcodes) as text, one a line
cannot sense               cards; anything about the code beyond its text (symbology,
                           position); whether the scanner is present while it is silent
=========================  ===========================================================
"""

from __future__ import annotations

import logging
import time
from typing import Any

import serial

from drivers.base import Scanner
from localpay.errors import ConfigError, ReaderUnavailableError, ScanError
from localpay.types import Presentation

log = logging.getLogger(__name__)

TERMINATORS = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n", "tab": b"\t", "etx": b"\x03"}


def parse_terminator(value: str | bytes) -> bytes:
    """``"CR"``, ``"LF"``, ``"CRLF"``, ``"TAB"``, ``"ETX"`` or the literal bytes."""
    if isinstance(value, bytes):
        raw = value
    else:
        raw = TERMINATORS.get(value.lower(), value.encode())
    if not raw or len(raw) > 4:
        raise ConfigError(f"a line terminator has 1 to 4 bytes, got {value!r}")
    return raw


def decode_line(raw: bytes, max_line: int = 4096) -> str:
    """The code text of one scanner line; :class:`ScanError` when it is not usable."""
    if len(raw) > max_line:
        raise ScanError(f"scanner line of {len(raw)} bytes is longer than {max_line}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ScanError(f"scanner line is not UTF-8: {err}") from err
    text = text.strip("\r\n\t ")
    # some scanners prefix an AIM symbology identifier or send a stray NUL: keep them out
    text = text.lstrip("\x00")
    if not text:
        raise ScanError("empty scanner line")
    if any(ord(c) < 0x20 and c not in "\x1d\x1e\x04" for c in text):  # GS/RS/EOT: GS1/ISO 15434
        raise ScanError("scanner line holds control characters")
    return text


class SerialScanner(Scanner):
    """A line-per-code scanner on ``port`` (see the module docstring)."""

    kind = "serial"

    def __init__(self, port: str, *, baudrate: int = 9600, terminator: str | bytes = "CR",
                 name: str | None = None, debounce_s: float = 1.0, max_line: int = 4096,
                 reconnect_s: float = 0.5) -> None:
        super().__init__(name or f"serial:{port}", debounce_s=debounce_s)
        if not isinstance(baudrate, int) or baudrate <= 0:
            raise ConfigError(f"baud rate must be a positive integer, got {baudrate!r}")
        self.port = port
        self.baudrate = baudrate
        self.terminator = parse_terminator(terminator)
        self.max_line = max_line
        self.reconnect_s = reconnect_s
        #: lines dropped as unusable since opening
        self.rejected = 0
        self._buffer = b""
        self._next_try = 0.0
        self._ser: Any = None
        try:
            self._ser = self._open()
        except (serial.SerialException, OSError, ValueError) as err:
            raise ReaderUnavailableError(f"cannot open scanner port {port!r}: {err}") from err

    def _open(self) -> Any:
        ser = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=0.05)
        # a partial line left from before an unplug is garbage
        self._buffer = b""
        return ser

    def _poll_internal(self, timeout: float) -> Presentation | None:
        deadline = time.monotonic() + timeout
        while True:
            text = self._next_line()
            if text is not None:
                return Presentation(kind="qr", reader=self.name, payload=text)
            if self._ser is None and not self._reconnect():
                self._stop.wait(max(0.0, min(self.reconnect_s, deadline - time.monotonic())))
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                return None
            try:
                self._ser.timeout = min(remaining, 0.25)
                chunk = self._ser.read(max(1, self._ser.in_waiting))
            except (serial.SerialException, OSError) as err:
                log.warning("%s: scanner lost (%s); reconnecting", self.name, err)
                self._drop()
                continue
            if chunk:
                self._buffer += chunk
                if len(self._buffer) > self.max_line * 2 and self.terminator not in self._buffer:
                    self.rejected += 1
                    log.warning("%s: %d bytes without a terminator dropped", self.name,
                                len(self._buffer))
                    self._buffer = b""

    def _next_line(self) -> str | None:
        while self.terminator in self._buffer:
            raw, self._buffer = self._buffer.split(self.terminator, 1)
            if not raw.strip(b"\r\n\t \x00"):
                continue  # CR LF from a scanner set to CR, or a keep-alive
            try:
                return decode_line(raw, self.max_line)
            except ScanError as err:
                self.rejected += 1
                log.warning("%s: line dropped: %s", self.name, err)
        return None

    def _reconnect(self) -> bool:
        now = time.monotonic()
        if now < self._next_try:
            return False
        self._next_try = now + self.reconnect_s
        try:
            self._ser = self._open()
        except (serial.SerialException, OSError, ValueError) as err:
            log.debug("%s: not back yet: %s", self.name, err)
            return False
        log.info("%s: scanner is back", self.name)
        return True

    def _drop(self) -> None:
        ser, self._ser = self._ser, None
        self._buffer = b""
        if ser is not None:
            try:
                ser.close()
            except Exception as err:
                log.debug("%s: close failed: %s", self.name, err)

    def _close_internal(self) -> None:
        self._drop()
