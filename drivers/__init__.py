"""Card readers and code scanners behind one interface.

Backends are listed here as plain data and imported only when opened, so a missing optional
dependency (pyscard, nfcpy, pyserial, pygame/pyzbar) becomes a clear
:class:`~localpay.errors.ReaderUnavailableError` naming the extra to install, never an
import-time warning. ``open_reader(kind, **options)`` is the only way in.
"""

from __future__ import annotations

import importlib
from typing import Any

from drivers.base import Reader, Scanner, redact, wait
from localpay.errors import ReaderUnavailableError

#: kind -> (module, class, the setup.cfg extra that brings its dependency)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "virtual": ("drivers.virtual", "VirtualReader", ""),
    "pcsc": ("drivers.pcsc", "PcscReader", "pcsc"),
    "nfc": ("drivers.nfc", "NfcReader", "nfc"),
    "serial": ("drivers.serial_scanner", "SerialScanner", "serial"),
    "camera": ("drivers.camera", "CameraScanner", "camera"),
}


def open_reader(kind: str, **options: Any) -> Reader:
    """Open a reader of ``kind`` (see :data:`BACKENDS`) with backend-specific options."""
    try:
        module_name, class_name, extra = BACKENDS[kind]
    except KeyError:
        raise ReaderUnavailableError(
            f"unknown reader kind {kind!r}; expected one of {sorted(BACKENDS)}"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        hint = f" (pip install 'localpay[{extra}]')" if extra else ""
        raise ReaderUnavailableError(f"{kind} reader needs {err.name or err}{hint}") from err
    cls = getattr(module, class_name)
    reader: Reader = cls(**options)
    return reader


__all__ = ["BACKENDS", "Reader", "Scanner", "open_reader", "redact", "wait"]
