"""The reader interface every backend implements.

``Reader.poll()`` and ``Reader.transmit()`` are template methods (python-can's
``BusABC.recv`` pattern): the base owns the timeout loop, debouncing of the same card or
code, stop requests, logging and redaction, and wraps whatever the backend raises into the
localpay error tree. A backend implements only:

- ``_poll_internal(timeout)``: wait at most ``timeout`` seconds for something in the field
  or a scanned code; return a :class:`Presentation` or ``None``.
- ``_transmit_internal(apdu)``: send one command APDU to the present card, return data + SW.
- ``_close_internal()``: release the device.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from abc import ABC, abstractmethod

from localpay.errors import APDUError, ReaderError, ReaderTimeoutError
from localpay.types import Presentation

log = logging.getLogger(__name__)

#: a run of 13 to 19 digits looks like a PAN; logs never carry one whole
_PAN = re.compile(r"(?<!\d)(\d{6})\d{3,9}(\d{4})(?!\d)")
#: PAN in BCD inside APDU hex (tag 5A or track-2 57): redact everything after the tag
_PAN_TLV = re.compile(r"(5a|57)([0-9a-f]{2})([0-9a-f]+)", re.IGNORECASE)


def redact(text: str) -> str:
    """Mask anything that looks like a full PAN, keeping first 6 and last 4 (PCI DSS 3.3)."""
    return _PAN.sub(lambda m: f"{m.group(1)}{'*' * (len(m.group(0)) - 10)}{m.group(2)}", text)


def redact_apdu(data: bytes) -> str:
    """Hex of an APDU for the log, with PAN-bearing TLV values masked."""
    return _PAN_TLV.sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", data.hex())


class Reader(ABC):
    """A card reader or code scanner.

    Subclasses set ``kind`` (the registry name) and ``senses`` (what it can present:
    ``{"card"}``, ``{"qr"}`` or both).
    """

    kind: str = "abstract"
    senses: frozenset[str] = frozenset()

    def __init__(self, name: str, *, debounce_s: float = 1.0) -> None:
        self.name = name
        self.debounce_s = debounce_s
        self._stop = threading.Event()
        self._closed = False
        self._last_key: tuple[str, bytes | str] | None = None
        self._last_at = 0.0

    # -- template methods ------------------------------------------------------------------

    def poll(self, timeout: float | None = None) -> Presentation | None:
        """Wait for a card or code; ``None`` when ``timeout`` passes or :meth:`stop` is called.

        The same card or code seen again within ``debounce_s`` of the last one, without
        having left the field, is not reported again.
        """
        self._check_open()
        self._stop.clear()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stop.is_set():
            remaining = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
            if remaining <= 0:
                return None
            try:
                found = self._poll_internal(remaining)
            except ReaderError:
                raise
            except Exception as err:  # a backend's own error, wrapped once here
                raise ReaderError(f"{self.kind} reader {self.name!r}: {err}") from err
            if found is None:
                continue
            key = (found.kind, found.uid if found.is_card else found.payload)
            now = time.monotonic()
            if key == self._last_key and now - self._last_at < self.debounce_s:
                self._last_at = now
                continue
            self._last_key, self._last_at = key, now
            if found.sensed_at == 0.0:
                found = _with_time(found, now)
            log.debug("%s: %s presented (uid %s)", self.name, found.kind, found.uid.hex())
            return found
        return None

    def transmit(self, apdu: bytes) -> bytes:
        """Send a command APDU to the card in the field; return response data + SW1 SW2."""
        self._check_open()
        if "card" not in self.senses:
            raise ReaderError(f"{self.kind} reader {self.name!r} cannot talk to cards")
        if len(apdu) < 4:
            raise APDUError(f"a command APDU has at least 4 bytes, got {len(apdu)}")
        started = time.perf_counter()
        try:
            response = self._transmit_internal(apdu)
        except ReaderError:
            raise
        except Exception as err:
            raise ReaderError(f"{self.kind} reader {self.name!r}: transmit failed: {err}") from err
        if len(response) < 2:
            raise APDUError(f"card answered {len(response)} bytes; a response ends in SW1 SW2")
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s >> %s << %s (%.2f ms)", self.name, redact_apdu(apdu), redact_apdu(response),
                (time.perf_counter() - started) * 1000,
            )
        return response

    def forget(self) -> None:
        """Clear debouncing, so the card still in the field counts as a new presentation."""
        self._last_key = None

    def stop(self) -> None:
        """Make a blocked :meth:`poll` return ``None`` at once (from any thread)."""
        self._stop.set()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._close_internal()

    def _check_open(self) -> None:
        if self._closed:
            raise ReaderError(f"{self.kind} reader {self.name!r} is closed")

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -- what a backend implements ---------------------------------------------------------

    @abstractmethod
    def _poll_internal(self, timeout: float) -> Presentation | None: ...

    def _transmit_internal(self, apdu: bytes) -> bytes:
        raise ReaderError(f"{self.kind} reader {self.name!r} cannot transmit APDUs")

    def _close_internal(self) -> None:
        return None


class Scanner(Reader):
    """A reader of codes only (QR and barcodes): serial scanners, cameras."""

    senses = frozenset({"qr"})


def wait(reader: Reader, timeout: float) -> Presentation:
    """Poll until something is presented; raise :class:`ReaderTimeoutError` otherwise."""
    found = reader.poll(timeout)
    if found is None:
        raise ReaderTimeoutError(f"nothing presented to {reader.name!r} within {timeout:g} s")
    return found


def _with_time(found: Presentation, now: float) -> Presentation:
    return Presentation(
        kind=found.kind, reader=found.reader, uid=found.uid, atr=found.atr,
        protocol=found.protocol, payload=found.payload, channel=found.channel, sensed_at=now,
    )
