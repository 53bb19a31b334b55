"""The clock anchor the ledger keeps: the central service's last signed time and where this
terminal's clocks stood when it arrived (migration ``0005_clock_anchor``).

The wall clock of a board with no real-time clock may be anything; the boot clock
(``CLOCK_BOOTTIME``: monotonic, counting suspend) is not, but restarts at every boot. The
kernel's boot id tells whether an anchor was taken on this boot, i.e. whether the boot clock
can carry it forward.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


@dataclass(frozen=True, slots=True)
class ClockAnchor:
    """Central's time ``central_ms`` seen at local wall time ``local_ms`` and boot clock
    ``boot_ms`` of boot ``boot_id``; ``rtt_ms`` the round trip of the answer that carried it."""

    central_ms: int
    local_ms: int
    boot_id: str
    boot_ms: int
    rtt_ms: int = 0

    @property
    def offset_ms(self) -> int:
        """Central's time minus this terminal's wall clock, when the anchor was taken."""
        return self.central_ms - self.local_ms

    def carried(self, boot_id: str, boot_ms: int) -> int | None:
        """Central's time now, carried forward on the boot clock; None after a reboot (the
        boot clock restarted) or where the boot cannot be told apart."""
        if not boot_id or boot_id != self.boot_id or boot_ms < self.boot_ms:
            return None
        return self.central_ms + (boot_ms - self.boot_ms)


@cache
def _boot_id() -> str:
    # Fixed for the life of a boot, so read once per process.
    try:
        with open(BOOT_ID_PATH, encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def boot_now() -> tuple[str, int]:
    """This boot's id ("" where the kernel does not say) and the boot clock in ms."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    seconds = time.clock_gettime(clock) if clock is not None else time.monotonic()
    return _boot_id(), int(seconds * 1000)
