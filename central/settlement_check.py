"""The settlement check of a business day, merchant by merchant, from three sources that do
not depend on each other's arithmetic:

- the books: the payments and refunds whose business day it is (the rule of
  :mod:`central.settlement`), summed straight from the transfers;
- the settlements: what of those payments a settlement covered, on the day's own run or a
  later day's (late), and what is still open (held, carried, or arrived after the run);
  each posted settlement's figures against the transfers it covered;
- the terminals: the merchant's terminals' own end-of-day totals (``terminal_totals``,
  ``payment`` and ``tap`` as sales, ``refund`` and ``void`` as refunds).

A *problem* is a disagreement: the books' payments are not what settlements covered plus
what is open, a settlement's gross, refunds or returned amount is not the sum of its items,
or the terminals reported other totals than the books hold (a terminal that reported
nothing is shown, not counted). Money still open is shown, never a problem: it goes into the
next run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from central import books
from central.settlement import (
    POSTED,
    TERMINAL_REFUNDS,
    TERMINAL_SALES,
    business_day_sql,
    parse_day,
    plan_for_scans,
)

if TYPE_CHECKING:
    from central.store import Store


@dataclass
class CheckLine:
    merchant_id: str
    #: payments and refunds of the day in the books
    books_gross: int = 0
    books_refunds: int = 0
    #: of books_gross: covered by the day's own settlement, by later days', and open
    on_time: int = 0
    late: int = 0
    open: int = 0
    #: the day's settlement: its status and gross (None: it has none)
    status: str | None = None
    settled_gross: int | None = None
    #: what the merchant's terminals reported (None: none reported)
    terminal_gross: int | None = None
    terminal_refunds: int | None = None
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SettlementCheck:
    day: str
    municipality: str
    lines: list[CheckLine] = field(default_factory=list)

    @property
    def problems(self) -> list[CheckLine]:
        return [line for line in self.lines if line.problems]

    @property
    def clean(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"day": self.day, "municipality": self.municipality, "clean": self.clean,
                "lines": [line.as_dict() for line in self.lines]}


def check(store: Store, day: str, *, municipality: str = books.DEFAULT_MUNICIPALITY
          ) -> SettlementCheck:
    """Check ``day``'s settlements against the books and the terminals (see the module)."""
    day = parse_day(day)
    sql = business_day_sql(store.kind)
    with store.tx(write=False) as tx:
        if store.kind == "postgresql":
            # every statement below must see the same transfers and items
            tx.run("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        plan_for_scans(tx)
        in_books = tx.all(f"SELECT b.merchant_id, b.code, SUM(b.amount) FROM ({sql}) AS b "
                          "WHERE b.day = ? AND b.code IN ('payment', 'refund') "
                          "GROUP BY b.merchant_id, b.code", (municipality, day))
        still_open = tx.all(
            f"SELECT b.merchant_id, SUM(b.amount) FROM ({business_day_sql(store.kind, True)}) "
            "AS b WHERE b.day = ? AND b.code = 'payment' GROUP BY b.merchant_id",
            (municipality, day))
        covered = tx.all(
            "SELECT merchant_id, own, SUM(amount) FROM (SELECT merchant_id, amount, CASE WHEN "
            "settled_day = ? THEN 1 ELSE 0 END AS own FROM settlement_items WHERE "
            "municipality_id = ? AND settled_day >= ? AND day = ? AND kind = 'payment') AS x "
            "GROUP BY merchant_id, own",
            (day, municipality, day, day))
        rows = tx.all("SELECT merchant_id, status, gross, refunds, returned FROM settlements "
                      "WHERE municipality_id = ? AND day = ?", (municipality, day))
        items = tx.all("SELECT merchant_id, kind, SUM(amount) FROM settlement_items "
                       "WHERE municipality_id = ? AND settled_day = ? GROUP BY merchant_id, "
                       "kind", (municipality, day))
        kinds = (*TERMINAL_SALES, *TERMINAL_REFUNDS)
        terminals = tx.all(
            "SELECT mt.merchant_id, tt.kind, SUM(tt.amount) FROM terminal_totals tt "
            "JOIN merchant_terminals mt ON mt.terminal_id = tt.terminal_id "
            f"WHERE mt.municipality_id = ? AND tt.day = ? AND tt.kind IN "
            f"({', '.join('?' * len(kinds))}) GROUP BY mt.merchant_id, tt.kind",
            (municipality, day, *kinds))
    lines: dict[str, CheckLine] = {}

    def line(m: Any) -> CheckLine:
        return lines.setdefault(str(m), CheckLine(str(m)))

    for m, code, amount in in_books:
        if code == "payment":
            line(m).books_gross = int(amount)
        else:
            line(m).books_refunds = int(amount)
    for m, amount in still_open:
        line(m).open = int(amount)
    for m, own, amount in covered:
        if int(own):
            line(m).on_time = int(amount)
        else:
            line(m).late = int(amount)
    of_items: dict[tuple[str, str], int] = {(str(m), str(k)): int(a) for m, k, a in items}
    for m, status, gross, refunds, returned in rows:
        x = line(m)
        x.status, x.settled_gross = str(status), int(gross)
        if x.status not in POSTED:
            continue
        for kind, figure in (("payment", gross), ("refund", refunds), ("returned", returned)):
            if int(figure) != of_items.get((str(m), kind), 0):
                x.problems.append(f"the settlement's {kind} total {int(figure):,} won is not "
                                  f"its items' {of_items.get((str(m), kind), 0):,} won")
    for m, kind, amount in terminals:
        x = line(m)
        if kind in TERMINAL_SALES:
            x.terminal_gross = (x.terminal_gross or 0) + int(amount)
        else:
            x.terminal_refunds = (x.terminal_refunds or 0) + int(amount)
    for x in lines.values():
        if x.books_gross != x.on_time + x.late + x.open:
            x.problems.append(f"the books hold {x.books_gross:,} won of payments; settlements "
                              f"cover {x.on_time + x.late:,} and {x.open:,} are open")
        if x.terminal_gross is not None and x.terminal_gross != x.books_gross:
            x.problems.append(f"the terminals reported {x.terminal_gross:,} won of sales, the "
                              f"books hold {x.books_gross:,}")
        if x.terminal_refunds is not None and x.terminal_refunds != x.books_refunds:
            x.problems.append(f"the terminals reported {x.terminal_refunds:,} won of refunds, "
                              f"the books hold {x.books_refunds:,}")
    return SettlementCheck(day, municipality, [lines[m] for m in sorted(lines)])
