"""The week's faults, drawn from the seed before anything runs: the same seed gives the same
schedule (which faults, when, for how long, on which terminals). Which instruction a kill
lands on, and how taps and syncs interleave, stay the scheduler's.

Kinds:

- ``net_cut``: the proxies of a group of terminals cut every open connection and refuse new
  ones for a while;
- ``net_delay``: the proxies of a group hold every chunk in both directions for a while;
- ``power_cut``: a terminal's process is killed with SIGKILL (the power-cut stand-in: it
  loses what the process held, not what the kernel had not yet written) and started again
  on the same home after a while;
- ``epoch_boot``: a power cut after which the terminal boots with its clock at 1970;
- ``central_restart``: ``central serve`` killed with SIGKILL and started again;
- ``pg_restart``: PostgreSQL stopped in immediate mode (no checkpoint, as a crash) and
  started again.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

KINDS = ("net_cut", "net_delay", "power_cut", "epoch_boot", "central_restart", "pg_restart")


@dataclass(frozen=True)
class Fault:
    #: real seconds after the week's start
    at: float
    kind: str
    day: int
    #: terminal indexes (network faults, power cuts)
    targets: tuple[int, ...] = ()
    #: how long it lasts: the cut, the delay, the time without power or service
    seconds: float = 0.0
    #: network delays: how long each chunk is held
    hold_s: float = 0.0

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["at"] = round(self.at, 2)
        out["seconds"] = round(self.seconds, 2)
        out["hold_s"] = round(self.hold_s, 3)
        return out


@dataclass(frozen=True)
class FaultRates:
    """How many faults of each kind a day brings."""

    net_cut: int = 4
    net_delay: int = 3
    power_cut: int = 6
    epoch_boot: int = 2
    central_restart: int = 1
    pg_restart: int = 1

    def of(self, kind: str) -> int:
        return int(getattr(self, kind))


def schedule(seed: int, terminals: int, days: int, day_s: float,
             rates: FaultRates) -> list[Fault]:
    """Every fault of the week, in time order (see the module docstring)."""
    rng = random.Random(f"city-faults/{seed}")
    out: list[Fault] = []
    group_max = max(1, terminals * 3 // 10)
    for d in range(days):
        base = d * day_s
        for kind in KINDS:
            for _ in range(rates.of(kind)):
                # the service and the store go down in different halves of the day, so
                # one's restart does not wait on the other's
                lo, hi = {"central_restart": (0.1, 0.45),
                          "pg_restart": (0.5, 0.8)}.get(kind, (0.05, 0.85))
                at = base + rng.uniform(lo, hi) * day_s
                if kind in ("net_cut", "net_delay"):
                    group = tuple(sorted(rng.sample(range(terminals),
                                                    rng.randint(1, group_max))))
                    if kind == "net_cut":
                        out.append(Fault(at, kind, d, group,
                                         rng.uniform(2.0, max(3.0, min(20.0, day_s * 0.2)))))
                    else:
                        out.append(Fault(at, kind, d, group,
                                         rng.uniform(4.0, max(5.0, min(30.0, day_s * 0.25))),
                                         rng.uniform(0.1, 1.5)))
                elif kind in ("power_cut", "epoch_boot"):
                    out.append(Fault(at, kind, d, (rng.randrange(terminals),),
                                     rng.uniform(0.5, 6.0)))
                elif kind == "central_restart":
                    out.append(Fault(at, kind, d, (), rng.uniform(0.2, 3.0)))
                else:
                    out.append(Fault(at, kind, d))
    out.sort(key=lambda f: (f.at, f.kind))
    return out
