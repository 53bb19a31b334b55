"""Whether the terminal can approve at all, and which of its readers and scanners work.

Pure Python, no pygame. The engine's worker asks :class:`ServiceCheck` each status round (it
owns the terminal), and the screens show the out-of-service screen while any
:class:`Blocker` holds: a terminal that cannot approve must not invite a tap.

The causes, each from what the terminal already exposes (the transaction core stays the one
that decides: a card presented anyway still gets the core's own answer):

- ``key_missing``: the terminal key could not be loaded at start, nothing can be signed
  (told by the command that opened the terminal);
- ``home_read_only``: the folder of the ledger is on a read-only file system, or not
  writable by this process: no entry can be committed;
- ``ledger_broken``: the ledger was refused at start or failed since (``Terminal.fault``);
- ``exposure_reached``: the offline won since the last sync leave no room for the smallest
  charge (1 won at a till, the lowest fare above zero at a validator): every payment would
  be declined ``terminal_exposure`` until the terminal syncs;
- ``clock_unknown``: the clock is ``unknown`` and the won approved so since the last sync
  leave no room for the smallest charge (``risk.unknown_clock_amount``): every payment would
  be declined ``clock_unknown`` until NTP, the central's time on this boot, or a sync;
- ``no_reader``: every reader and scanner the kiosk was given is missing.

``exposure_reached`` and ``clock_unknown`` are the core's own answer (``Terminal.blocked``).

A :class:`Device` is a reader or scanner opened on demand: missing at start or unplugged
later, it is tried again with a growing pause (never a busy loop), and starts working as
soon as it opens, with no restart.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from localpay.errors import LedgerError, LocalpayError, ReaderUnavailableError
from localpay.types import Presentation
from terminal.risk import Reason

if TYPE_CHECKING:
    from terminal.core import Terminal

log = logging.getLogger(__name__)

DeviceKind = Literal["card", "scanner"]
#: longest technician detail kept: the screen has three short lines for it
DETAIL_CHARS = 160


class Cause(StrEnum):
    """Why the terminal cannot approve; the value is the stable code (logs, exit message)."""

    KEY_MISSING = "key_missing"
    HOME_READ_ONLY = "home_read_only"
    LEDGER_BROKEN = "ledger_broken"
    EXPOSURE_REACHED = "exposure_reached"
    CLOCK_UNKNOWN = "clock_unknown"
    NO_READER = "no_reader"


@dataclass(frozen=True)
class Blocker:
    """One cause, with the technician's detail (a path, an error, a figure)."""

    cause: Cause
    detail: str = ""

    def line(self) -> str:
        """The cause in words and its detail, for logs and the command's exit message."""
        words = CAUSE_WORDS[self.cause]
        return f"{words} ({self.detail})" if self.detail else words


#: each cause in a few English words, for logs and the exit message of ``localpay run``
CAUSE_WORDS: dict[Cause, str] = {
    Cause.KEY_MISSING: "a key file of the terminal is missing or unusable",
    Cause.HOME_READ_ONLY: "the home folder is read-only",
    Cause.LEDGER_BROKEN: "the ledger is broken",
    Cause.EXPOSURE_REACHED: "the offline limit is reached",
    Cause.CLOCK_UNKNOWN: "the clock is unknown and its offline allowance is used",
    Cause.NO_READER: "no reader or scanner works",
}


@dataclass(frozen=True)
class DeviceState:
    """A reader or scanner as the status bar shows it."""

    name: str
    kind: DeviceKind
    ok: bool
    error: str = ""


#: causes that leave a till's refunds possible: a refund needs no card, and gives exposure
#: (and, of a payment made with the clock unknown, that allowance) back: it may even end the
#: cause; the ledger must be there and writable
CORRECTIONS_OK = frozenset({Cause.EXPOSURE_REACHED, Cause.CLOCK_UNKNOWN, Cause.NO_READER})

#: the core's reasons for :meth:`Terminal.blocked` as causes
_BLOCKED: dict[Reason, Cause] = {Reason.TERMINAL_EXPOSURE: Cause.EXPOSURE_REACHED,
                                 Reason.CLOCK_UNKNOWN: Cause.CLOCK_UNKNOWN,
                                 Reason.LEDGER_BROKEN: Cause.LEDGER_BROKEN}


def corrections_ok(blocked: Sequence[Blocker]) -> bool:
    """Whether a till may still refund (and list today's payments) while out of service."""
    return all(b.cause in CORRECTIONS_OK for b in blocked)


def can_take(devices: Sequence[DeviceState], kind: DeviceKind) -> bool:
    """Whether a card (``"card"``) or a code (``"scanner"``) can be presented now.

    With no devices known (sources given as plain callables: the demo, tests) the kiosk
    cannot tell and assumes yes, as it always has.
    """
    if not devices:
        return True
    return any(d.ok and d.kind == kind for d in devices)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_CHARS else text[:DETAIL_CHARS - 1] + "…"


def read_only(folder: Path) -> str:
    """Why no file can be written in ``folder`` (``""``: it can)."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"{folder}: read-only file system"
    except FileNotFoundError:
        return ""  # not there at all: the ledger's own error says so, not "read-only"
    except OSError as err:
        return f"{folder}: {err.strerror or err}"
    # root passes access() on permissions, never on a read-only mount (checked above)
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder}: not writable by this user"
    return ""


class ServiceCheck:
    """The causes that stop ``terminal`` approving (see the module docstring).

    ``home`` is the folder of the ledger when the terminal has none open (the command knows
    it); ``startup`` are causes found before the terminal existed (a missing key).
    """

    def __init__(self, terminal: Terminal, *, home: Path | None = None,
                 startup: Sequence[Blocker] = ()) -> None:
        self.terminal = terminal
        self.home = home
        self.startup = tuple(startup)

    def folder(self) -> Path | None:
        ledger = self.terminal.ledger
        if ledger is not None and ledger.path is not None:
            return ledger.path.parent
        return self.home

    def smallest_charge(self) -> int:
        return self.terminal.smallest_charge()

    def blockers(self, devices: Sequence[DeviceState] = (), *,
                 other_sources: bool = False) -> tuple[Blocker, ...]:
        """Every cause now, the one to fix first first."""
        t = self.terminal
        found = list(self.startup)
        folder = self.folder()
        why = read_only(folder) if folder is not None else ""
        if why:
            found.append(Blocker(Cause.HOME_READ_ONLY, _short(why)))
        if not self.startup and (t.fault is not None or t.ledger is None):
            found.append(Blocker(Cause.LEDGER_BROKEN, _short(str(t.fault or "no ledger"))))
        elif t.ledger is not None and t.fault is None:
            try:
                blocked = t.blocked()
            except LedgerError as err:
                log.error("the terminal's limits unreadable: %s", err)
                found.append(Blocker(Cause.LEDGER_BROKEN, _short(str(err))))
            else:
                if blocked is not None:
                    found.append(Blocker(_BLOCKED[blocked.reason], _short(blocked.detail)))
        if devices and not other_sources and not any(d.ok for d in devices):
            found.append(Blocker(Cause.NO_READER, _short("; ".join(
                f"{d.name}: {d.error}" if d.error else d.name for d in devices))))
        return tuple(found)


class Pollable(Protocol):
    """What :class:`Device` needs of an opened reader (``drivers.Reader`` is one)."""

    def poll(self, timeout: float | None = None) -> Presentation | None: ...

    def close(self) -> None: ...


class Device:
    """A reader or scanner, opened (again) on demand; a source of presentations.

    ``opener`` opens the device and raises a :class:`~localpay.errors.LocalpayError` when it
    cannot (no such port, no PC/SC service, unplugged). Until it opens, each call waits out
    the pause before the next try (``first_retry_s``, doubling up to ``max_retry_s``) and
    returns ``None``; an opened device that reports itself gone
    (:class:`~localpay.errors.ReaderUnavailableError`) is closed and tried again the same way.
    """

    def __init__(self, name: str, kind: DeviceKind, opener: Callable[[], Pollable], *,
                 first_retry_s: float = 0.5, max_retry_s: float = 8.0) -> None:
        self.name = name
        self.kind: DeviceKind = kind
        self._opener = opener
        self.first_retry_s = first_retry_s
        self.max_retry_s = max_retry_s
        #: tries to open so far (the tests check there is no busy loop)
        self.attempts = 0
        self._reader: Pollable | None = None
        self._next_try = 0.0
        self._pause = first_retry_s
        self._closed = threading.Event()
        self._lock = threading.Lock()
        # assigned whole, so the worker thread reads a consistent state without the lock
        self._state = DeviceState(name, kind, False, "not opened yet")
        # tried once now, as the kiosk starts: its first status already knows what is there
        self._try_open(0.0)

    def state(self) -> DeviceState:
        return self._state

    def __call__(self, timeout: float) -> Presentation | None:
        if self._closed.is_set():
            time.sleep(timeout)  # nothing will come; the poller's own stop ends its loop
            return None
        reader = self._reader or self._try_open(timeout)
        if reader is None:
            return None
        try:
            return reader.poll(timeout)
        except ReaderUnavailableError as err:
            self._lost(reader, str(err))
            return None

    def _try_open(self, timeout: float) -> Pollable | None:
        wait = self._next_try - time.monotonic()
        if wait > 0:
            # waits on the close event: the engine's stop is not held up by a long pause
            self._closed.wait(min(timeout, wait))
            return None
        if self._closed.is_set():
            return None
        self.attempts += 1
        try:
            reader = self._opener()
        except LocalpayError as err:
            why = _short(str(err))
            if self._state.error != why:  # once per new reason, not once per try
                log.warning("%s %s missing: %s (trying again)", self.kind, self.name, err)
            self._state = DeviceState(self.name, self.kind, False, why)
            self._next_try = time.monotonic() + self._pause
            self._pause = min(self._pause * 2, self.max_retry_s)
            return None
        with self._lock:
            if self._closed.is_set():
                reader.close()
                return None
            self._reader = reader
        log.info("%s %s opened", self.kind, self.name)
        self._pause = self.first_retry_s
        self._state = DeviceState(self.name, self.kind, True)
        return reader

    def _lost(self, reader: Pollable, why: str) -> None:
        log.warning("%s %s lost: %s (trying again)", self.kind, self.name, why)
        with self._lock:
            self._reader = None
        try:
            reader.close()
        except LocalpayError as err:
            log.debug("closing %s: %s", self.name, err)
        self._state = DeviceState(self.name, self.kind, False, _short(why))
        self._next_try = time.monotonic() + self.first_retry_s

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
