"""The console's Programme page: points per month against the budget, payouts and their
settlement files, allowances, merchant settlements by day.

Every figure comes from the function the ``localpay central`` command prints it from:
:func:`central.payouts.budget` (``central budget``), ``incentive_runs`` as
:func:`central.payouts.payout` answers a month already run (``central payout``),
:func:`central.payouts.settlement_rows` (the file ``central payout`` writes),
:func:`central.allowances.report` (``central allowance report``),
:func:`central.settlement.runs` and :func:`central.settlement.settlements_of`
(``central settlement``). Only the points of each month (credited, paid, held) are summed
here, from the tables :mod:`central.payouts` reads; nothing is written.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from central import allowances, municipalities, payouts, settlement
from central.incentive_rules import parse_month
from central.store import Store

DEFAULT = municipalities.DEFAULT


@dataclass(frozen=True)
class MonthPoints:
    """One payable month of the points programme."""

    month: str
    #: credited for the month (credits and adjustments payable in it, net)
    credited: int
    #: of those, not paid by any run yet
    unpaid: int
    #: paid by the month's run (into pockets or balances)
    paid: int
    #: held by the month's run for cards without an account (paid by a later run)
    held: int
    #: cards the month's run paid; None: the month was not run
    run_cards: int | None
    ran_ms: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProgrammeYear:
    """``central budget`` for a year, and its months."""

    year: int
    budget: int
    spent: int
    committed: int
    left: int
    months: tuple[MonthPoints, ...]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "months": [m.as_dict() for m in self.months]}


def points_year(store: Store, year: int, municipality: str = DEFAULT) -> ProgrammeYear:
    """``municipality``'s points programme in ``year``: :func:`central.payouts.budget`, and
    per payable month what was credited, paid and held."""
    b = payouts.budget(store, year, municipality=municipality)
    first, last = f"{year:04d}-01", f"{year:04d}-12"
    credited: dict[str, list[int]] = {}
    with store.tx(write=False) as tx:
        for table in ("incentive_credits", "incentive_adjustments"):
            for month, points, unpaid in tx.all(
                    f"SELECT payable_month, COALESCE(SUM(points), 0), COALESCE(SUM(CASE WHEN "
                    f"settled_month IS NULL THEN points ELSE 0 END), 0) FROM {table} WHERE "
                    "municipality_id = ? AND payable_month >= ? AND payable_month <= ? "
                    "GROUP BY payable_month", (municipality, first, last)):
                got = credited.setdefault(str(month), [0, 0])
                got[0] += int(points)
                got[1] += int(unpaid)
        paid = {str(m): (int(p), int(h)) for m, p, h in tx.all(
            "SELECT month, COALESCE(SUM(paid), 0), COALESCE(SUM(CASE WHEN status = 'held' "
            "THEN points ELSE 0 END), 0) FROM incentive_payouts WHERE municipality_id = ? AND "
            "month >= ? AND month <= ? GROUP BY month", (municipality, first, last))}
        runs = {str(m): (int(c), int(at)) for m, c, at in tx.all(
            "SELECT month, cards, ran_ms FROM incentive_runs WHERE municipality_id = ? AND "
            "month >= ? AND month <= ?", (municipality, first, last))}
    months = []
    for month in sorted(set(credited) | set(paid) | set(runs)):
        c, u = credited.get(month, (0, 0))
        p, h = paid.get(month, (0, 0))
        cards, at = runs.get(month, (None, None))
        months.append(MonthPoints(month, c, u, p, h, cards, at))
    return ProgrammeYear(year, b.budget, b.spent, b.committed, b.left, tuple(months))


@dataclass(frozen=True)
class PayoutRun:
    """A month's payout run (``central payout``'s line) and its settlement file."""

    month: str
    cards: int
    points: int
    held_cards: int
    held_points: int
    pocket_cards: int
    pocket_points: int
    ran_ms: int
    #: where ``central payout`` writes the file, under the data folder (None: no folder)
    file_path: str | None
    file_name: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def settlement_file_name(month: str, municipality: str = DEFAULT) -> str:
    """The name ``central payout`` gives the settlement file (default's keeps its old one)."""
    month = parse_month(month)
    return (f"points-{month}.csv" if municipality == DEFAULT
            else f"points-{municipality}-{month}.csv")


def payout_runs(store: Store, municipality: str = DEFAULT, *,
                data_dir: Path | None = None) -> list[PayoutRun]:
    """Every month's payout run of ``municipality``, newest month first."""
    with store.tx(write=False) as tx:
        runs = tx.all("SELECT month, cards, points, held_cards, held_points, ran_ms FROM "
                      "incentive_runs WHERE municipality_id = ? ORDER BY month DESC",
                      (municipality,))
        pockets = {str(m): (int(n), int(p)) for m, n, p in tx.all(
            "SELECT month, COUNT(*), COALESCE(SUM(paid), 0) FROM incentive_payouts WHERE "
            "municipality_id = ? AND status = 'paid' AND balance_version IS NULL "
            "GROUP BY month", (municipality,))}
    out = []
    for month, cards, points, held_cards, held_points, ran in runs:
        name = settlement_file_name(str(month), municipality)
        n, p = pockets.get(str(month), (0, 0))
        out.append(PayoutRun(str(month), int(cards), int(points), int(held_cards),
                             int(held_points), n, p, int(ran),
                             str(data_dir / "settlements" / name) if data_dir else None, name))
    return out


def payout_file(store: Store, month: str, municipality: str = DEFAULT) -> tuple[str, bytes]:
    """The settlement file of ``month``'s payout to download: its name and the bytes
    ``central payout`` writes (:func:`central.payouts.write_settlement`: UTF-8, CRLF)."""
    rows = payouts.settlement_rows(store, month, municipality=municipality)
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(payouts.SETTLEMENT_HEADER)
    writer.writerows(rows)
    return settlement_file_name(month, municipality), out.getvalue().encode("utf-8")


def allowance_months(store: Store, municipality: str = DEFAULT, *, programme: str | None = None,
                     month: str | None = None) -> list[allowances.ReportRow]:
    """``central allowance report``: per programme and month, won issued, spent, expired
    and outstanding (:class:`central.allowances.ReportRow`, with ``as_dict``)."""
    return allowances.report(store, programme, month, municipality)


@dataclass(frozen=True)
class SettlementDay:
    """One business day's merchant settlement run (``central settlement status``' line)."""

    day: str
    merchants: int
    paid: int
    gross: int
    fees: int
    net: int
    held: int
    carried: int
    created_ms: int
    #: status -> {"count", "net"}: pending, sent, confirmed, returned, held, carried
    statuses: dict[str, dict[str, int]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def settlement_days(store: Store, municipality: str = DEFAULT) -> list[SettlementDay]:
    """Every settlement run of ``municipality``, newest day first."""
    return [SettlementDay(**r) for r in settlement.runs(store, municipality=municipality)]


def settlement_day(store: Store, day: str, municipality: str = DEFAULT
                   ) -> list[settlement.Settlement]:
    """Each merchant's settlement of ``day`` as it stands (status, gross, fees, net, by
    pocket; :class:`central.settlement.Settlement`, with ``as_dict``); TransactionError
    when the day was not run."""
    return settlement.settlements_of(store, day, municipality=municipality).settlements


__all__ = ["MonthPoints", "PayoutRun", "ProgrammeYear", "SettlementDay", "allowance_months",
           "payout_file", "payout_runs", "points_year", "settlement_day", "settlement_days",
           "settlement_file_name"]
