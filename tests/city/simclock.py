"""Simulated time for the week of a city: one function of the real clock, shared by every
process of the run (terminals and the central service), so they all agree on it.

A simulated day is ``day_s`` seconds of real time. Within a day, simulated time runs at real
speed from ``opens`` (07:00 in Seoul); between days it jumps over the night in one step.
So every time rule of the product keeps its real meaning (a request's freshness window,
the clock skew a terminal may have, the central's ten minutes of future tolerance), and
only the nights are skipped. Before day 0 the clock runs at real speed up to day 0's
opening; after the last day it runs on at real speed from the last day's opening.

The product has an injectable clock on the terminal side (``Terminal(clock=...)``,
``ClockTrust(wall=, ntp=, boot=)``, ``SyncClient(clock=, synchronised=)``): the terminal
process (:mod:`tests.city.terminal`) hands it :meth:`SimClock.now`. The central service has
none: :mod:`tests.city.central_clock` starts ``localpay central serve`` with ``time.time``
and ``time.time_ns`` of its process replaced by this clock (its only time sources: nothing
of ``central`` reads ``datetime.now`` on a path the week uses, and PostgreSQL's ``now()`` is
not used).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

SEOUL = ZoneInfo("Asia/Seoul")


@dataclass(frozen=True)
class SimClock:
    #: real Unix time (s) at which day 0 opens
    t0: float
    #: real seconds per simulated day
    day_s: float
    #: the Seoul date of day 0 (ISO)
    first_day: str
    days: int
    #: the simulated time of day (s after midnight) at which each day opens
    opens: int = 7 * 3600

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SimClock:
        return cls(**json.loads(text))

    def day_date(self, d: int) -> date:
        return date.fromisoformat(self.first_day) + timedelta(days=d)

    def _opening(self, d: int) -> float:
        """Unix seconds of day ``d``'s opening, simulated."""
        day = self.day_date(d)
        midnight = datetime(day.year, day.month, day.day, tzinfo=SEOUL).timestamp()
        return midnight + self.opens

    def day_index(self, real: float) -> int:
        """The simulated day running at real time ``real`` (0 before the start, at most the
        last day after the end)."""
        x = real - self.t0
        return min(max(math.floor(x / self.day_s), 0), self.days - 1)

    def sim(self, real: float) -> float:
        """Simulated Unix seconds at real Unix seconds ``real``."""
        d = self.day_index(real)
        return self._opening(d) + (real - self.t0 - d * self.day_s)

    def real_of(self, sim_s: float) -> float:
        """The real Unix seconds at which the simulated clock read ``sim_s`` (the nearest
        real time for a simulated instant inside a skipped night)."""
        d = 0
        for k in range(self.days - 1, -1, -1):
            if sim_s >= self._opening(k):
                d = k
                break
        real = self.t0 + d * self.day_s + (sim_s - self._opening(d))
        if d < self.days - 1:
            real = min(real, self.t0 + (d + 1) * self.day_s)
        return real

    def day_start_real(self, d: int) -> float:
        return self.t0 + d * self.day_s

    def now(self) -> float:
        return self.sim(time.time())


def install(clock: SimClock) -> None:
    """Replace this process's ``time.time`` and ``time.time_ns`` with ``clock``: for a
    process of the product with no clock to inject (the central service)."""
    real = time.time

    def sim_time() -> float:
        return clock.sim(real())

    def sim_time_ns() -> int:
        return int(clock.sim(real()) * 1e9)

    time.time = sim_time
    time.time_ns = sim_time_ns
