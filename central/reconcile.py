"""Reconciliation: the central chain's totals against each terminal's own end-of-day totals.

For one day (in the service's time zone) and each terminal, the count and amount of every
kind of entry the central chain holds is set against what the terminal reported for that day
(``POST /v1/totals``). Any difference is listed, as are the overdrafts and fraud flags of the
day, and what posting to the books found (:mod:`central.spending`): overdrafts by pocket and
pocket flags. The flags include config violations (rule ``config``: an entry contradicting
the terminal's signed config), and the config bundles terminals refused that day are listed
too (:mod:`central.config_audit`). EMV Book 4 §7.3: a captured transaction is kept until it
is reconciled.

A report is one municipality's (``default`` unless named): its terminals' entries, totals,
overdrafts and flags, and what posting found in its books; nothing of another's.

It also names the terminals registered by the end of the day (enrolled or added by hand)
from which nothing has ever reached the log: no entry, no day totals (``never_synced``).
They are listed, not counted as differences: a terminal enrolled but not yet installed has
nothing to reconcile, and the report's verdict stays what the figures say.

A till's Z report of the day (a ``z_report`` entry, :mod:`terminal.zreport`, whose detail
``day`` is the day) is set against the central's own figures for that terminal, that day
and the entries up to the report's own: count and won by kind (payment, refund, void), won
by pocket (the entries' ``split``, net of what was given back) and count and won by clerk
(the entries' ``clerk``). Each figure that differs is one line (``z_report_differences``),
and makes the report unclean: the till printed and signed a closing the log does not bear
out. Declines are not compared: they are in no ledger (the kiosk counts them).

Refunds still waiting for their merchant's payable past the bounded wait, which the refund
float could not pay (:mod:`central.refund_float`), are listed whatever the day
(``waiting_refunds``) and make the report unclean: an approved refund is owed to a citizen.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from central import municipalities, refund_float
from central.config_audit import rejections
from central.service import CentralLog
from central.store import Tx


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
    #: whose terminals and books these are
    municipality: str = municipalities.DEFAULT
    #: config bundles terminals refused, reported that day (:mod:`central.config_audit`)
    config_rejections: list[dict[str, Any]] = field(default_factory=list)
    #: terminals registered by that day that never sent anything (``terminal_id``,
    #: ``registered``: the day), by id; not part of :attr:`clean`
    never_synced: list[dict[str, Any]] = field(default_factory=list)
    #: the tills' Z reports of the day (``terminal_id``, ``seq``, ``last_seq``, ``matches``)
    z_reports: list[dict[str, Any]] = field(default_factory=list)
    #: one per figure of a Z report that the central's own differ from (``terminal_id``,
    #: ``seq``, ``figure`` such as ``amount.payment`` or ``pocket.youth``, ``terminal``,
    #: ``central``)
    z_report_differences: list[dict[str, Any]] = field(default_factory=list)
    #: refunds waiting longer than the bounded wait that the refund float could not pay
    #: (:mod:`central.refund_float`; ``terminal_id``, ``seq``, ``amount``, ``since_ms``)
    waiting_refunds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def differences(self) -> list[Line]:
        return [line for line in self.lines if not line.matches]

    @property
    def clean(self) -> bool:
        return (not self.differences and not self.overdrafts and not self.flags
                and not self.pocket_overdrafts and not self.pocket_flags
                and not self.config_rejections and not self.z_report_differences
                and not self.waiting_refunds)

    def as_json(self) -> dict[str, Any]:
        return {"day": self.day, "municipality": self.municipality, "clean": self.clean,
                "overdrafts": self.overdrafts,
                "flags": self.flags, "pocket_overdrafts": self.pocket_overdrafts,
                "pocket_flags": self.pocket_flags, "config_rejections": self.config_rejections,
                "never_synced": self.never_synced, "z_reports": self.z_reports,
                "z_report_differences": self.z_report_differences,
                "waiting_refunds": self.waiting_refunds,
                "lines": [dict(line.__dict__, matches=line.matches) for line in self.lines]}


#: the terminals of one municipality (parameter: its id)
_MINE = "terminal_id IN (SELECT terminal_id FROM terminals WHERE municipality_id = ?)"


def report(service: CentralLog, day: str,
           municipality: str = municipalities.DEFAULT) -> Report:
    """The reconciliation of ``day`` for the terminals and books of ``municipality``."""
    m = municipality
    with service.store.tx(write=False) as tx:
        municipalities.require(tx, m)
        central = tx.all("SELECT terminal_id, kind, COUNT(*), COALESCE(SUM(amount), 0) "
                         f"FROM entries WHERE day = ? AND {_MINE} GROUP BY terminal_id, kind",
                         (day, m))
        reported = tx.all("SELECT terminal_id, kind, count, amount FROM terminal_totals "
                          f"WHERE day = ? AND {_MINE}", (day, m))
        overdrafts = tx.all("SELECT card_token, terminal_id, seq, amount, balance_after "
                            f"FROM overdrafts WHERE day = ? AND {_MINE} ORDER BY log_index",
                            (day, m))
        flags = tx.all("SELECT rule, card_token, terminal_id, seq, detail FROM flags "
                       f"WHERE day = ? AND {_MINE} ORDER BY log_index, rule", (day, m))
        pocket_overdrafts, pocket_flags = day_problems(tx, day)
        refused = rejections(tx, day, _MINE, (m,))
        # nothing in the log (last_seq 0) and no totals ever told
        closings = tx.all("SELECT terminal_id, seq, detail FROM entries WHERE kind = 'z_report' "
                          f"AND detail LIKE ? AND {_MINE} ORDER BY terminal_id, seq",
                          (f'%"day":"{day}"%', m))
        closed = [(str(t), int(q), _z_detail(d), tx.all(
            "SELECT kind, amount, detail FROM entries WHERE terminal_id = ? AND day = ? AND "
            "seq < ? AND kind IN ('payment', 'refund', 'void')", (t, day, q)))
            for t, q, d in closings]
        silent = tx.all("SELECT terminal_id, added_ms FROM terminals t WHERE "
                        "municipality_id = ? AND last_seq = 0 AND NOT EXISTS (SELECT 1 FROM "
                        "terminal_totals r WHERE r.terminal_id = t.terminal_id) "
                        "ORDER BY terminal_id", (m,))
        out_waiting = refund_float.waiting(tx, m, time.time_ns() // 1_000_000)
    pocket_overdrafts = [o for o in pocket_overdrafts if o["municipality"] == m]
    pocket_flags = [f for f in pocket_flags if f["municipality"] == m]
    got = {(str(t), str(k)): (int(c), int(a)) for t, k, c, a in central}
    told = {(str(t), str(k)): (int(c), int(a)) for t, k, c, a in reported}
    out = Report(day, municipality=m)
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
    out.config_rejections = refused
    out.waiting_refunds = out_waiting
    for tid, seq, told_z, rows in closed:
        if told_z.get("day") != day:
            continue  # "day":"D" matched inside another text of the detail
        found = z_figures(rows)
        said = _z_said(told_z)
        differs = [{"terminal_id": tid, "seq": seq, "figure": k, "terminal": said.get(k, 0),
                    "central": found.get(k, 0)}
                   for k in sorted(set(found) | set(said)) if found.get(k, 0) != said.get(k, 0)]
        out.z_reports.append({"terminal_id": tid, "seq": seq,
                              "last_seq": int(told_z.get("last_seq", 0)),
                              "matches": not differs})
        out.z_report_differences += differs
    for tid, added in silent:
        registered = service.day_of(int(added))
        if registered <= day:
            out.never_synced.append({"terminal_id": str(tid), "registered": registered})
    return out


def _z_detail(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(str(text or "{}"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def z_figures(rows: list[tuple[Any, ...]]) -> dict[str, int]:
    """The figures a Z report states, worked out here from the log's own entries (kind,
    amount, detail): ``count.KIND``, ``amount.KIND``, ``pocket.P`` (net won),
    ``clerk_paid.C``, ``clerk_paid_count.C``, ``clerk_back.C``, ``clerk_back_count.C``.
    Zero figures are left out, so a figure absent on one side reads as 0."""
    out: dict[str, int] = {}

    def add(key: str, value: int) -> None:
        out[key] = out.get(key, 0) + value

    for kind, amount, detail in rows:
        kind, amount = str(kind), int(amount)
        add(f"count.{kind}", 1)
        add(f"amount.{kind}", amount)
        info = _z_detail(detail)
        sign = 1 if kind == "payment" else -1
        for pocket, won in info.get("split") or ():
            add(f"pocket.{pocket}", sign * int(won))
        side = "clerk_paid" if kind == "payment" else "clerk_back"
        clerk = str(info.get("clerk", ""))
        add(f"{side}.{clerk}", amount)
        add(f"{side}_count.{clerk}", 1)
    return {k: v for k, v in out.items() if v}


def _z_said(detail: dict[str, Any]) -> dict[str, int]:
    """The same figures as the Z report's detail states them (terminal.zreport.detail)."""
    out: dict[str, int] = {}
    tables = {"count": "count", "amount": "amount", "pockets": "pocket",
              "clerk_paid": "clerk_paid", "clerk_paid_count": "clerk_paid_count",
              "clerk_back": "clerk_back", "clerk_back_count": "clerk_back_count"}
    for key, prefix in tables.items():
        pairs = detail.get(key)
        if not isinstance(pairs, list):
            continue
        for pair in pairs:
            if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], int):
                out[f"{prefix}.{pair[0]}"] = out.get(f"{prefix}.{pair[0]}", 0) + pair[1]
    return {k: v for k, v in out.items() if v}


def day_problems(tx: Tx, day: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The overdrafts by pocket and the pocket flags of ``day`` (every municipality), for
    ``central report``; none in a store that never posted."""
    if not tx.store.columns(tx, "pocket_flags"):
        return [], []
    overdrafts = [
        {"municipality": str(r[0]), "terminal_id": str(r[1]), "seq": int(r[2]),
         "account": str(r[3]), "pocket": str(r[4]), "amount": int(r[5])}
        for r in tx.all("SELECT municipality_id, terminal_id, seq, account_id, pocket, amount "
                        "FROM pocket_overdrafts WHERE day = ? ORDER BY log_index, pocket",
                        (day,))]
    flags = [
        {"municipality": str(r[0]), "reason": str(r[1]), "terminal_id": str(r[2]),
         "seq": int(r[3]), "card_token": str(r[4]), "detail": str(r[5])}
        for r in tx.all("SELECT municipality_id, reason, terminal_id, seq, card_token, detail "
                        "FROM pocket_flags WHERE day = ? ORDER BY log_index, reason", (day,))]
    return overdrafts, flags
