"""Reconciliation: the central chain's totals against each terminal's own end-of-day totals.

For one day (in the service's time zone) and each terminal, the count and amount of every
kind of entry the central chain holds is set against what the terminal reported for that day
(``POST /v1/totals``). Any difference is listed, as are the overdrafts and fraud flags of the
day, and what posting to the books found (:mod:`central.spending`): overdrafts by pocket and
pocket flags. EMV Book 4 §7.3: a captured transaction is kept until it is reconciled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from central.service import CentralLog
from central.spending import day_problems


@dataclass(frozen=True)
class Line:
    terminal_id: str
    kind: str
    central_count: int
    central_amount: int
    terminal_count: int | None
    terminal_amount: int | None

    @property
    def matches(self) -> bool:
        return (self.central_count, self.central_amount) == (self.terminal_count,
                                                             self.terminal_amount)


@dataclass
class Report:
    day: str
    lines: list[Line] = field(default_factory=list)
    overdrafts: list[dict[str, Any]] = field(default_factory=list)
    flags: list[dict[str, Any]] = field(default_factory=list)
    #: payments the books' pockets could not cover, by pocket (:mod:`central.spending`)
    pocket_overdrafts: list[dict[str, Any]] = field(default_factory=list)
    #: payments and refunds not posted to the books as the log has them, with the reason
    pocket_flags: list[dict[str, Any]] = field(default_factory=list)

    @property
    def differences(self) -> list[Line]:
        return [line for line in self.lines if not line.matches]

    @property
    def clean(self) -> bool:
        return (not self.differences and not self.overdrafts and not self.flags
                and not self.pocket_overdrafts and not self.pocket_flags)

    def as_json(self) -> dict[str, Any]:
        return {"day": self.day, "clean": self.clean, "overdrafts": self.overdrafts,
                "flags": self.flags, "pocket_overdrafts": self.pocket_overdrafts,
                "pocket_flags": self.pocket_flags,
                "lines": [dict(line.__dict__, matches=line.matches) for line in self.lines]}


def report(service: CentralLog, day: str) -> Report:
    with service.store.tx(write=False) as tx:
        central = tx.all("SELECT terminal_id, kind, COUNT(*), COALESCE(SUM(amount), 0) "
                         "FROM entries WHERE day = ? GROUP BY terminal_id, kind", (day,))
        reported = tx.all("SELECT terminal_id, kind, count, amount FROM terminal_totals "
                          "WHERE day = ?", (day,))
        overdrafts = tx.all("SELECT card_token, terminal_id, seq, amount, balance_after "
                            "FROM overdrafts WHERE day = ? ORDER BY log_index", (day,))
        flags = tx.all("SELECT rule, card_token, terminal_id, seq, detail FROM flags "
                       "WHERE day = ? ORDER BY log_index, rule", (day,))
        pocket_overdrafts, pocket_flags = day_problems(tx, day)
    got = {(str(t), str(k)): (int(c), int(a)) for t, k, c, a in central}
    told = {(str(t), str(k)): (int(c), int(a)) for t, k, c, a in reported}
    out = Report(day)
    for key in sorted(set(got) | set(told)):
        c = got.get(key, (0, 0))
        t = told.get(key)
        out.lines.append(Line(key[0], key[1], c[0], c[1], t[0] if t else None,
                              t[1] if t else None))
    out.overdrafts = [{"card_token": r[0], "terminal_id": r[1], "seq": int(r[2]),
                       "amount": int(r[3]), "balance_after": int(r[4])} for r in overdrafts]
    out.flags = [{"rule": r[0], "card_token": r[1], "terminal_id": r[2], "seq": int(r[3]),
                  "detail": r[4]} for r in flags]
    out.pocket_overdrafts, out.pocket_flags = pocket_overdrafts, pocket_flags
    return out
