"""Effective times: when the central service holds that an entry happened.

A Raspberry Pi has no real-time clock. After a power cut with no network it may boot at the
epoch or at a stale saved time, and an entry then states a time that cannot be true. The
money still happened: such an entry is accepted, flagged, and given an *effective time*
that everything depending on dates (days, weeks, months, holidays, rule versions, payouts)
uses instead of the stated one.

An entry's stated wall time is taken as it is when it is plausible: not before the
programme's start, not after the batch's arrival (plus a skew for clocks a little
fast), and not behind the terminal's previous entry (less a tolerance for the small steps
back NTP makes). Otherwise its effective time is the latest time it can have happened: the
stated time of the next plausible entry of its batch, or else the batch's arrival, and never
before the previous entry's effective time. Batches that arrive days late are plausible: a
terminal that was offline for a week sends a week of true times.

An entry whose terminal said its clock was ``unknown`` (``terminal.clock``; ``trusted``
False) is implausible whatever it states: flagged with the more specific problem when its
time is also impossible, else with :data:`CLOCK_UNKNOWN`, and it never serves as the ceiling
of the entries before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: 2020-01-01 00:00 in Seoul: no programme this service runs began earlier
EARLIEST_MS = 1_577_804_400_000
#: a terminal's clock may run this far ahead of the service's
FUTURE_SKEW_MS = 10 * 60_000
#: NTP may step a clock back by this much without the entry being doubted
BACK_TOLERANCE_MS = 60_000

BEFORE_EARLIEST = "before the programme started"
AFTER_ARRIVAL = "after its batch arrived"
BEHIND_PREVIOUS = "behind the terminal's previous entry"
CLOCK_UNKNOWN = "the terminal's clock was unknown"


@dataclass(frozen=True, slots=True)
class Timed:
    """An entry's effective time, and why its stated time was not taken (None: it was)."""

    effective_ms: int
    problem: str | None = None


def effective_times(walls: Sequence[int], previous_ms: int, arrival_ms: int, *,
                    earliest_ms: int = EARLIEST_MS, future_skew_ms: int = FUTURE_SKEW_MS,
                    back_tolerance_ms: int = BACK_TOLERANCE_MS,
                    trusted: Sequence[bool] | None = None) -> list[Timed]:
    """Effective times of one terminal's batch, in order: ``walls`` are the entries' stated
    times, ``previous_ms`` the effective time of the terminal's last accepted entry (0 for
    none), ``arrival_ms`` when the batch reached the service; ``trusted[i]`` False when entry
    ``i``'s terminal said its clock was unknown (default: all trusted)."""
    ok = list(trusted) if trusted is not None else [True] * len(walls)
    upper = arrival_ms + future_skew_ms
    lowest = max(earliest_ms, previous_ms - back_tolerance_ms)
    # The latest each entry can have happened: the next entry stating a possible time.
    ceilings = [0] * len(walls)
    ceiling = arrival_ms
    for i in range(len(walls) - 1, -1, -1):
        ceilings[i] = ceiling
        if ok[i] and lowest <= walls[i] <= upper:
            ceiling = min(ceiling, walls[i])
    out: list[Timed] = []
    previous = previous_ms
    for wall, ceiling, trust in zip(walls, ceilings, ok, strict=True):
        if wall < earliest_ms:
            problem: str | None = BEFORE_EARLIEST
        elif wall > upper:
            problem = AFTER_ARRIVAL
        elif wall < previous - back_tolerance_ms:
            problem = BEHIND_PREVIOUS
        elif not trust:
            problem = CLOCK_UNKNOWN
        else:
            problem = None
        floor = max(previous, earliest_ms)
        effective = max(wall, previous) if problem is None else max(ceiling, floor)
        out.append(Timed(effective, problem))
        previous = effective
    return out
