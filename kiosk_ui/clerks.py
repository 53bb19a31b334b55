"""Who is at the till: a clerk's sign-in by PIN, the supervisor's PIN for a refund, and the
lockout that stops PINs being guessed at the keypad.

The PINs are checked here, on the kiosk's thread, against the salted hashes of the config's
``[[clerk]]`` tables (:func:`firmware_cfg.pins.pin_matches`, tens of milliseconds each:
a frame dropped at sign-in, never during a sale). Wrong PINs are counted for the till, not
per clerk, so that trying each name in turn gains nothing: after :data:`LOCK_AFTER` wrong
PINs in a row the PIN pad refuses every PIN for :data:`LOCK_SECONDS`, doubling with each
further lockout up to :data:`MAX_LOCK_SECONDS`; a right PIN clears the count. The count
lives in memory: a restart clears it, but a restart takes longer than the first lockout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from firmware_cfg.config import ClerkSection
from firmware_cfg.pins import pin_matches

log = logging.getLogger(__name__)

#: wrong PINs in a row before the PIN pad locks
LOCK_AFTER = 3
#: the first lockout; each further one doubles it
LOCK_SECONDS = 30.0
MAX_LOCK_SECONDS = 900.0
#: a PIN is 4 to 8 digits (firmware_cfg.pins.PIN_FORM)
PIN_MIN, PIN_MAX = 4, 8


@dataclass
class ClerkDesk:
    """The till's clerks and the state of its PIN pad."""

    clerks: tuple[ClerkSection, ...]
    clock: Callable[[], float] = time.monotonic
    #: wrong PINs since the last right one or the last lockout
    failures: int = 0
    lockouts: int = 0
    locked_until: float = field(default=0.0)

    def find(self, clerk_id: str) -> ClerkSection | None:
        return next((c for c in self.clerks if c.id == clerk_id), None)

    def locked_for(self) -> float:
        """Seconds the PIN pad still refuses every PIN (0: it takes them)."""
        return max(0.0, self.locked_until - self.clock())

    def check(self, pin: str, *, clerk_id: str | None = None,
              supervisor: bool = False) -> ClerkSection | None:
        """The clerk whose PIN ``pin`` is: the clerk ``clerk_id`` (a sign-in), or any
        supervisor (a refund's approval). None when it is wrong or the pad is locked."""
        if self.locked_for() > 0:
            return None
        if PIN_MIN <= len(pin) <= PIN_MAX and pin.isdigit():
            for c in self.clerks:
                if ((clerk_id is None or c.id == clerk_id)
                        and (not supervisor or c.role == "supervisor")
                        and pin_matches(c.pin_hash, pin)):
                    self.failures = self.lockouts = 0
                    return c
        self.failures += 1
        # who tried is not known (that is the point); the log says that it happened
        log.warning("wrong PIN at the till (%d in a row)", self.failures)
        if self.failures >= LOCK_AFTER:
            seconds = min(LOCK_SECONDS * 2 ** self.lockouts, MAX_LOCK_SECONDS)
            self.locked_until = self.clock() + seconds
            self.lockouts += 1
            self.failures = 0
            log.warning("PIN pad locked for %.0f s after %d wrong PINs", seconds, LOCK_AFTER)
        return None
