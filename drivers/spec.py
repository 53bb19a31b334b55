"""Reader specs: ``KIND[:ARGS]`` text (``--reader``, config files) to and from ``open_reader``.

Modelled on nfcpy's ``--device`` paths:

==============================  ==============================================================
``virtual``                     the software reader (demo, tests)
``pcsc``                        the first PC/SC reader
``pcsc:NAME-PATTERN``           the first whose name matches (glob, else substring)
``nfc``                         ``nfc:usb``: the first USB reader nfcpy supports
``nfc:usb:072f:2200``           by USB vendor:product (``usb:BUS:DEV`` also works)
``nfc:tty:AMA0:pn532``          a PN532 on a UART (``tty:S0:pn532``, ``tty:USB0:pn532``)
``nfc:udp:HOST:PORT``           nfcpy's network driver (``nfc:udp`` = localhost:54321)
``serial:PORT[:BAUD]``          a line scanner (``serial:/dev/ttyACM0:115200``, ``loop://``)
``camera[:INDEX|:DEVICE]``      QR codes from a camera (``camera:1``, ``camera:/dev/video2``)
==============================  ==============================================================

:func:`parse_reader_spec` and :func:`format_reader_spec` are a symmetric pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from drivers import Reader, open_reader
from localpay.errors import ConfigError

KINDS = ("virtual", "pcsc", "nfc", "serial", "camera")
NFC_TRANSPORTS = ("usb", "tty", "udp")


@dataclass(frozen=True)
class ReaderSpec:
    """A reader kind and the keyword options its backend is opened with."""

    kind: str
    options: dict[str, Any] = field(default_factory=dict)

    def open(self) -> Reader:
        return open_reader(self.kind, **self.options)


def parse_reader_spec(text: str) -> ReaderSpec:
    """Parse ``KIND[:ARGS]``; raise :class:`~localpay.errors.ConfigError` when malformed."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("a reader spec is KIND[:ARGS], e.g. pcsc, nfc:usb, serial:/dev/ttyACM0")
    kind, _, rest = text.strip().partition(":")
    kind = kind.lower()
    if kind not in KINDS:
        raise ConfigError(f"unknown reader kind {kind!r} in {text!r}; expected one of {KINDS}")
    if kind == "virtual":
        if rest:
            raise ConfigError(f"the virtual reader takes no arguments, got {rest!r}")
        return ReaderSpec("virtual")
    if kind == "pcsc":
        return ReaderSpec("pcsc", {"reader": rest} if rest else {})
    if kind == "nfc":
        path = rest or "usb"
        transport = path.split(":", 1)[0]
        if transport not in NFC_TRANSPORTS:
            raise ConfigError(f"nfc device path must start with {NFC_TRANSPORTS}, got {path!r}")
        return ReaderSpec("nfc", {"path": path})
    if kind == "serial":
        if not rest:
            raise ConfigError("serial needs a port: serial:/dev/ttyACM0[:BAUD]")
        port, baud = rest, None
        head, sep, tail = rest.rpartition(":")
        if sep and tail.isdigit() and head:
            port, baud = head, int(tail)
            if baud <= 0:
                raise ConfigError(f"baud rate must be positive, got {tail!r}")
        options: dict[str, Any] = {"port": port}
        if baud is not None:
            options["baudrate"] = baud
        return ReaderSpec("serial", options)
    # camera
    if not rest:
        return ReaderSpec("camera", {})
    if rest.isdigit():
        return ReaderSpec("camera", {"index": int(rest)})
    if rest.startswith("/"):
        return ReaderSpec("camera", {"device": rest})
    raise ConfigError(f"camera takes an index or a device path, got {rest!r}")


def format_reader_spec(spec: ReaderSpec) -> str:
    """The text form of ``spec``; ``parse_reader_spec(format_reader_spec(s)) == s``."""
    o = spec.options
    if spec.kind == "pcsc":
        return f"pcsc:{o['reader']}" if o.get("reader") else "pcsc"
    if spec.kind == "nfc":
        return f"nfc:{o.get('path', 'usb')}"
    if spec.kind == "serial":
        baud = f":{o['baudrate']}" if "baudrate" in o else ""
        return f"serial:{o['port']}{baud}"
    if spec.kind == "camera":
        if "device" in o:
            return f"camera:{o['device']}"
        return f"camera:{o['index']}" if "index" in o else "camera"
    return spec.kind


def open_spec(text: str) -> Reader:
    """Open the reader a spec names."""
    return parse_reader_spec(text).open()
