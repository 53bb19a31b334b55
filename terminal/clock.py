"""How far the terminal may trust its wall clock: ``synchronised``, ``anchored`` or ``unknown``.

A Raspberry Pi has no real-time clock: after a power cut with no network it may boot at the
epoch, or at a time saved before the cut. The terminal does not stop taking payments because
of its clock, up to ``risk.unknown_clock_amount`` won taken with it ``unknown`` since the last
sync (``offline_ledger.unknown_clock``; declined ``clock_unknown`` beyond); it records in each
entry's detail (``"clock"``) how far the stated time can be trusted, and the central service
gives an entry whose clock was ``unknown`` an effective time of its own (``central.clock``).
Ordering does not depend on any of this: it stays on the ledger's hybrid monotonic stamp.

The rules, in order (``wall`` is the wall clock being judged):

1. ``unknown`` when ``wall`` is before :data:`RELEASED_MS` (this release cannot have been
   running then).
2. ``unknown`` when ``wall`` is more than :data:`BACK_TOLERANCE_MS` before the *floor*: the
   wall time of the last ledger entry whose clock was not ``unknown``, or the last central
   time kept in the ledger, whichever is later. (The tolerance lets NTP step a clock back a
   little; an entry made with an ``unknown`` clock sets no floor, so one bogus future reading
   cannot condemn every later one.)
3. ``unknown`` when the central's time is known on this boot (the anchor the sync client keeps
   in the ledger, taken on this boot and at most :data:`ANCHOR_MAX_AGE_MS` old on the boot
   clock) and ``wall`` is more than :data:`MAX_SKEW_MS` from it. This holds even with NTP in
   sync: the central's time is what dates are judged by. It clears as soon as the clock is
   corrected (by NTP, or by the operating system from the central's time).
4. ``synchronised`` when the kernel says NTP is in sync (``adjtimex``: status without
   ``STA_UNSYNC``).
5. ``anchored`` when the central's time is known on this boot (rule 3 passed).
6. Otherwise ``unknown``: no NTP and no central time on this boot. After a reboot the boot
   clock restarts, so the kept anchor only says "not before the last central time and the
   time the ledger has seen" (rule 2); nothing bounds the clock from above (a clock restored
   from a file saved before a power cut passes rule 2 and is still days behind), so the
   state stays ``unknown`` until NTP or the next answer from the central service.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from localpay.errors import LedgerError
from offline_ledger import Ledger, boot_now

log = logging.getLogger(__name__)

ClockState = Literal["synchronised", "anchored", "unknown"]
STATES: tuple[ClockState, ...] = ("synchronised", "anchored", "unknown")

#: 2026-11-01 00:00 in Seoul, when this release was built: no true reading is earlier
RELEASED_MS = 1_793_458_800_000
#: a wall clock further than this from the central's time is not trusted
MAX_SKEW_MS = 5 * 60_000
#: NTP may step a clock back by this much without it being doubted (as ``central.clock``)
BACK_TOLERANCE_MS = 60_000
#: an anchor older than this on the boot clock no longer bounds the wall clock: a crystal
#: off by 50 ppm drifts 30 s in a week, well inside MAX_SKEW_MS
ANCHOR_MAX_AGE_MS = 7 * 86_400_000

#: ``struct timex.status`` bit: the clock is not synchronised (linux/timex.h)
STA_UNSYNC = 0x0040

NtpProbe = Callable[[], "bool | None"]
BootClock = Callable[[], tuple[str, int]]


class _Timex(ctypes.Structure):
    """``struct timex`` of ``adjtimex(2)`` up to ``tai``, then the kernel's padding."""

    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long), ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int), ("_padding", ctypes.c_int * 11),
    ]


_libc: ctypes.CDLL | None = None


def _adjtimex_synchronised() -> bool | None:
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        tx = _Timex()  # modes 0: read only
        if _libc.adjtimex(ctypes.byref(tx)) < 0:
            return None
    except (OSError, AttributeError):
        return None
    return not tx.status & STA_UNSYNC


def _timedatectl_synchronised() -> bool | None:
    try:
        out = subprocess.run(["/usr/bin/timedatectl", "show", "-p", "NTPSynchronized",
                              "--value"], capture_output=True, text=True, timeout=2,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip()
    return {"yes": True, "no": False}.get(value)


def kernel_ntp_synchronised() -> bool | None:
    """Whether the kernel says NTP keeps the clock in sync (``adjtimex`` status without
    ``STA_UNSYNC``, as systemd's ``NTPSynchronized``); ``timedatectl`` where ``adjtimex``
    cannot be called; None when neither can tell."""
    found = _adjtimex_synchronised()
    return found if found is not None else _timedatectl_synchronised()


@dataclass(frozen=True, slots=True)
class ClockReading:
    """A wall-clock reading, the trust put in it and why."""

    wall_ms: int
    state: ClockState
    why: str

    def line(self) -> str:
        return f"{self.state}: {self.why}"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class ClockTrust:
    """Judges the wall clock of the terminal over ``ledger`` (see the module docstring).

    ``wall`` is the wall clock (seconds), ``ntp`` the kernel's NTP answer and ``boot`` the
    boot id and boot clock (:func:`offline_ledger.boot_now`); each is injectable for tests.
    """

    def __init__(self, ledger: Ledger, *, wall: Callable[[], float] = time.time,
                 ntp: NtpProbe = kernel_ntp_synchronised, boot: BootClock = boot_now,
                 released_ms: int = RELEASED_MS, max_skew_ms: int = MAX_SKEW_MS) -> None:
        self.ledger = ledger
        self.wall = wall
        self.ntp = ntp
        self.boot = boot
        self.released_ms = released_ms
        self.max_skew_ms = max_skew_ms
        self._floor_seq = -1
        self._floor_ms = 0

    def reading(self) -> ClockReading:
        """The wall clock now, judged."""
        return self.judge(int(self.wall() * 1000))

    def judge(self, wall_ms: int) -> ClockReading:
        """The state of a wall-clock reading of ``wall_ms`` taken now."""
        if wall_ms < self.released_ms:
            return ClockReading(wall_ms, "unknown", f"the clock reads {_when(wall_ms)}, before "
                                f"this release was built ({_when(self.released_ms)})")
        try:
            anchor = self.ledger.clock_anchor()
            floor = self._entries_floor()
        except LedgerError as err:
            log.warning("clock anchor unreadable: %s", err)
            anchor, floor = None, 0
        if anchor is not None and anchor.central_ms > floor:
            floor = anchor.central_ms
        if wall_ms < floor - BACK_TOLERANCE_MS:
            return ClockReading(wall_ms, "unknown", f"the clock reads {_when(wall_ms)}, before "
                                f"the time the ledger has seen ({_when(floor)})")
        boot_id, boot_ms = self.boot()
        central = anchor.carried(boot_id, boot_ms) if anchor is not None else None
        age = boot_ms - anchor.boot_ms if anchor is not None else 0
        if central is not None and age > ANCHOR_MAX_AGE_MS:
            central = None
        if central is not None and abs(wall_ms - central) > self.max_skew_ms:
            off_s = (wall_ms - central) / 1000
            return ClockReading(wall_ms, "unknown", f"the clock is {off_s:+.0f} s from the "
                                f"central's time (at most {self.max_skew_ms // 1000} s)")
        if self.ntp():
            return ClockReading(wall_ms, "synchronised", "the kernel says NTP is in sync")
        if central is not None:
            return ClockReading(wall_ms, "anchored", f"no NTP; within "
                                f"{abs(wall_ms - central) / 1000:.0f} s of the central's time "
                                f"received {age / 60_000:.0f} min ago on this boot")
        if anchor is None:
            why = "no NTP and no time from the central service yet"
        elif age > ANCHOR_MAX_AGE_MS:
            why = f"no NTP; the central's time is {age / 86_400_000:.0f} days old"
        else:
            why = (f"no NTP and rebooted since the central's time: the clock is not before "
                   f"{_when(floor)}, but nothing bounds it from above")
        return ClockReading(wall_ms, "unknown", why)

    def _entries_floor(self) -> int:
        """The wall time of the last entry (as far as this process saw) whose clock was
        trusted; read again only when the ledger's head moved."""
        head = self.ledger.head.seq
        if head != self._floor_seq:
            entry = self.ledger.entry(head) if head else None
            if entry is not None and _entry_state(entry.fields.detail) != "unknown":
                self._floor_ms = max(self._floor_ms, entry.fields.wall_ms)
            self._floor_seq = head
        return self._floor_ms


def _entry_state(detail: str) -> str | None:
    try:
        doc = json.loads(detail) if detail else {}
    except ValueError:
        return None
    value = doc.get("clock") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None
