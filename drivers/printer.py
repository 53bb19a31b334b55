"""Receipt printers speaking ESC/POS: on a serial line, on USB, or ``virtual`` (captures bytes).

Specs, in the config's ``readers.printer`` and ``--printer``:

=================================  ========================================================
``virtual``                        keeps the byte stream in memory (demo, tests)
``serial:PORT[:BAUD]``             pyserial; ``serial:/dev/ttyUSB0:19200`` (default 19200)
``usb:VID:PID``                    python-escpos's USB transport (pyusb), ids in hex
=================================  ========================================================

Bytes are written here, not by python-escpos's ``text()``: that one prints Hangul as ``?``
(it knows single-byte code pages only). Korean ESC/POS printers (Bixolon SRP-330/350,
Sewoo, Epson TM-T88 Korean models) print Hangul in their double-byte ("Kanji") mode, entered
with ``FS &`` and left with ``FS .``, taking KS X 1001 (KS C 5601) characters as EUC-KR pairs
(Bixolon "Command Manual" SRP-350plusIII, FS & / FS .; Epson ESC/POS reference, "FS &:
Select Kanji character mode", Korean models: KS C 5601). EUC-KR, not CP949: CP949's extra
8,822 syllables are not in those printers' fonts, so such a syllable (e.g. 똠) becomes ``?``
instead of printing as a wrong character. ASCII passes unchanged in that mode.

One receipt is::

    ESC @                       initialise (clears a half-finished job from before a fault)
    FS &                        Kanji mode on: EUC-KR from here
    ESC a 1, ESC E 1 ... LF     the merchant's name, centred, bold
    ESC a 0, ESC E 0            left, regular
    line LF ...                 one line each
    ESC d 4, GS V 66 0          feed past the cutter, partial cut
    FS .                        Kanji mode off

Status (Epson "DLE EOT n", real-time: answered even while the printer is busy or offline):
``n=1`` printer status (bit 3: offline), ``n=2`` offline cause (bit 2: cover open, bit 5:
stopped by paper end, bit 6: error), ``n=4`` roll paper sensor (bits 5-6: paper end). Every
answer has bits 1 and 4 set and bits 0 and 7 clear; anything else is not an answer.

=========================  ===================================================================
can sense                  serial/USB: paper out, offline, cover open, printer not answering
cannot sense               paper near its end is logged only; whether the print was legible;
                           USB status only where the printer has an IN endpoint
=========================  ===================================================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from localpay.errors import (
    ConfigError,
    PrinterError,
    PrinterOfflineError,
    PrinterPaperOutError,
    PrinterUnavailableError,
)

log = logging.getLogger(__name__)

ESC, FS, GS, DLE, EOT, LF = b"\x1b", b"\x1c", b"\x1d", b"\x10", b"\x04", b"\n"
INIT = ESC + b"@"
KANJI_ON = FS + b"&"
KANJI_OFF = FS + b"."
BOLD_ON, BOLD_OFF = ESC + b"E\x01", ESC + b"E\x00"
CENTER, LEFT = ESC + b"a\x01", ESC + b"a\x00"
FEED_CUT = ESC + b"d\x04" + GS + b"V\x42\x00"
ENCODING = "euc-kr"
KINDS = ("virtual", "serial", "usb")
STATUS_TIMEOUT_S = 0.5


def encode_text(text: str) -> bytes:
    """``text`` as the printer's Kanji mode takes it: EUC-KR, ``?`` for what it lacks;
    control characters are dropped so a merchant name cannot smuggle in a command."""
    out = bytearray()
    for c in text:
        if c < " " or c == "\x7f":
            continue
        raw = c.encode(ENCODING, errors="replace")
        # Python's euc_kr writes a syllable outside KS X 1001 as an 8-byte jamo sequence
        # (KS X 1001 annex 3), which these printers show as loose jamo: a ? is honest
        out += raw if len(raw) <= 2 else b"?"
    return bytes(out)


def render(lines: Sequence[str]) -> bytes:
    """The ESC/POS byte stream of one receipt (see the module docstring); the first line is
    the heading."""
    out = bytearray(INIT + KANJI_ON)
    for n, line in enumerate(lines):
        if n == 0:
            out += CENTER + BOLD_ON + encode_text(line) + LF + BOLD_OFF + LEFT
        else:
            out += encode_text(line) + LF
    out += FEED_CUT + KANJI_OFF
    return bytes(out)


@dataclass(frozen=True)
class Status:
    """What DLE EOT said; ``None`` for a question the printer did not answer."""

    offline: bool = False
    cover_open: bool = False
    paper_out: bool = False
    paper_near_end: bool = False
    error: bool = False

    @classmethod
    def parse(cls, printer: int, cause: int, paper: int) -> Status:
        for byte in (printer, cause, paper):
            if byte & 0x93 != 0x12:
                raise PrinterOfflineError(f"not a DLE EOT answer: 0x{byte:02X}")
        return cls(offline=bool(printer & 0x08), cover_open=bool(cause & 0x04),
                   paper_out=bool(paper & 0x60) or bool(cause & 0x20),
                   paper_near_end=bool(paper & 0x0C), error=bool(cause & 0x40))

    def raise_for_fault(self, name: str) -> None:
        if self.paper_out:
            raise PrinterPaperOutError(f"{name}: out of paper")
        if self.cover_open:
            raise PrinterOfflineError(f"{name}: cover open")
        if self.offline or self.error:
            raise PrinterOfflineError(f"{name}: offline")
        if self.paper_near_end:
            log.warning("%s: paper near its end", name)


class Printer:
    """An ESC/POS printer. :meth:`print_lines` asks the status first and prints only to a
    printer that can: a receipt half-printed into a paper-out is worse than none."""

    kind = ""

    def __init__(self, name: str) -> None:
        self.name = name

    def print_lines(self, lines: Sequence[str]) -> None:
        self.status().raise_for_fault(self.name)
        self.write(render(lines))

    def status(self) -> Status:
        answers = [self._ask(n) for n in (1, 2, 4)]
        return Status.parse(*answers)

    def _ask(self, n: int) -> int:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the port; the default has none."""

    def __enter__(self) -> Printer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VirtualPrinter(Printer):
    """Captures the byte stream in :attr:`output` (and each job in :attr:`jobs`). Set
    :attr:`paper_out` or :attr:`offline` to play a fault, as the demo and tests do; its
    status answers are real DLE EOT bytes, parsed by the same code as a real printer's."""

    kind = "virtual"

    def __init__(self) -> None:
        super().__init__("virtual")
        self.output = bytearray()
        self.jobs: list[bytes] = []
        self.paper_out = False
        self.offline = False

    def _ask(self, n: int) -> int:
        if n == 1:
            return 0x12 | (0x08 if self.offline or self.paper_out else 0)
        if n == 2:
            return 0x12 | (0x20 if self.paper_out else 0)
        return 0x12 | (0x60 if self.paper_out else 0)

    def write(self, data: bytes) -> None:
        self.output += data
        self.jobs.append(bytes(data))


class SerialPrinter(Printer):
    """A printer on a serial line or USB-CDC/USB-serial adapter, via pyserial."""

    kind = "serial"

    def __init__(self, port: str, *, baudrate: int = 19200,
                 status_timeout_s: float = STATUS_TIMEOUT_S) -> None:
        super().__init__(f"serial:{port}")
        self.port = port
        self.status_timeout_s = status_timeout_s
        try:
            import serial
        except ImportError as err:
            raise PrinterUnavailableError(
                "serial printer needs pyserial (pip install 'localpay[serial]')") from err
        self._serial_error: type[Exception] = serial.SerialException
        try:
            self._ser: Any = serial.serial_for_url(port, baudrate=baudrate,
                                                   timeout=status_timeout_s,
                                                   write_timeout=5.0)
        except (serial.SerialException, OSError, ValueError) as err:
            raise PrinterUnavailableError(f"cannot open printer port {port!r}: {err}") from err

    def _ask(self, n: int) -> int:
        try:
            self._ser.reset_input_buffer()  # a late answer to an earlier question is stale
            self._ser.write(DLE + EOT + bytes([n]))
            self._ser.flush()
            deadline = time.monotonic() + self.status_timeout_s
            while time.monotonic() < deadline:
                got = self._ser.read(1)
                if got:
                    return got[0]
        except (self._serial_error, OSError) as err:
            raise PrinterUnavailableError(f"{self.name}: {err}") from err
        raise PrinterOfflineError(f"{self.name}: no answer to DLE EOT {n} (off or unplugged?)")

    def write(self, data: bytes) -> None:
        try:
            self._ser.write(data)
            self._ser.flush()
        except (self._serial_error, OSError) as err:
            raise PrinterOfflineError(f"{self.name}: write failed: {err}") from err

    def close(self) -> None:
        try:
            self._ser.close()
        except Exception as err:  # closing a vanished port must not hide the real error
            log.debug("%s: close failed: %s", self.name, err)


class UsbPrinter(Printer):
    """A USB printer class device through python-escpos's ``Usb`` (pyusb, libusb): its
    transport only; the bytes are :func:`render`'s. Not exercised here: no USB printer."""

    kind = "usb"

    def __init__(self, vendor: int, product: int) -> None:
        super().__init__(f"usb:{vendor:04x}:{product:04x}")
        try:
            from escpos.printer import Usb
        except ImportError as err:
            raise PrinterUnavailableError(f"usb printer needs python-escpos: {err}") from err
        try:
            # pyusb's timeout is in ms and 0 means wait forever: a printer that never
            # answers DLE EOT must not hang the till
            self._dev: Any = Usb(vendor, product, timeout=int(STATUS_TIMEOUT_S * 1000))
            self._dev.open()
        except Exception as err:  # python-escpos raises its own and pyusb's errors here
            raise PrinterUnavailableError(f"cannot open {self.name}: {err}") from err

    def _ask(self, n: int) -> int:
        try:
            self._dev._raw(DLE + EOT + bytes([n]))
            got = self._dev._read()
        except Exception as err:  # pyusb's USBError, timeouts
            raise PrinterOfflineError(f"{self.name}: status: {err}") from err
        if not got:
            raise PrinterOfflineError(f"{self.name}: no answer to DLE EOT {n}")
        return int(got[0])

    def write(self, data: bytes) -> None:
        try:
            self._dev._raw(data)
        except Exception as err:
            raise PrinterOfflineError(f"{self.name}: write failed: {err}") from err

    def close(self) -> None:
        try:
            self._dev.close()
        except Exception as err:
            log.debug("%s: close failed: %s", self.name, err)


@dataclass(frozen=True)
class PrinterSpec:
    kind: str
    options: dict[str, Any] = field(default_factory=dict)


def parse_printer_spec(text: str) -> PrinterSpec:
    """Parse ``virtual | serial:PORT[:BAUD] | usb:VID:PID``; ConfigError when malformed."""
    kind, _, rest = text.strip().partition(":")
    if kind == "virtual" and not rest:
        return PrinterSpec("virtual")
    if kind == "serial" and rest:
        head, sep, tail = rest.rpartition(":")
        if sep and head and tail.isdigit():
            if int(tail) <= 0:
                raise ConfigError(f"printer baud rate must be positive, got {tail!r}")
            return PrinterSpec("serial", {"port": head, "baudrate": int(tail)})
        return PrinterSpec("serial", {"port": rest})
    if kind == "usb":
        vid, _, pid = rest.partition(":")
        try:
            ids = int(vid, 16), int(pid, 16)
        except ValueError:
            ids = (-1, -1)
        if all(0 <= i <= 0xFFFF for i in ids) and len(vid) == len(pid) == 4:
            return PrinterSpec("usb", {"vendor": ids[0], "product": ids[1]})
    raise ConfigError(f"a printer spec is 'virtual', 'serial:PORT[:BAUD]' or 'usb:VID:PID' "
                      f"(4 hex digits each), got {text!r}")


def format_printer_spec(spec: PrinterSpec) -> str:
    """``parse_printer_spec(format_printer_spec(s)) == s``."""
    o = spec.options
    if spec.kind == "serial":
        return f"serial:{o['port']}" + (f":{o['baudrate']}" if "baudrate" in o else "")
    if spec.kind == "usb":
        return f"usb:{o['vendor']:04x}:{o['product']:04x}"
    return spec.kind


def open_printer(text: str) -> Printer:
    """Open the printer a spec names; :class:`PrinterError` when it cannot be."""
    spec = parse_printer_spec(text)
    if spec.kind == "virtual":
        return VirtualPrinter()
    if spec.kind == "serial":
        return SerialPrinter(**spec.options)
    return UsbPrinter(**spec.options)


__all__ = ["KINDS", "Printer", "PrinterError", "PrinterSpec", "SerialPrinter", "Status",
           "UsbPrinter", "VirtualPrinter", "format_printer_spec", "open_printer",
           "parse_printer_spec", "render"]
