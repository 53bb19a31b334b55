"""Payouts: a month's incentive points paid as spendable balance, and a card's statement.

Months may be paid in any order: a run of a month takes the credits payable in it and every
credit a run before it held or carried, pays a card's positive net where it can, and marks
exactly the credits it paid (``settled_month``), so every point is paid once. Where a card's
points go:

- a card **linked to a citizen's account** (:mod:`central.accounts`, in the run's
  municipality): into that account's points pocket, as one transfer of the books per card
  (:mod:`central.books`)::

      programme:<p>:points  ->  pocket:<account>:points   net points   (code points_payout)

  with ref ``points:<month>:<card>``, so the books post it once whatever runs again, and
  ``<p>`` the points programme (:data:`POINTS_PROGRAMME` unless the run names another). One
  point is one won. The programme's points budget is filled by :func:`fund_points`
  (``bank:outside -> programme:<p>:funding -> programme:<p>:points``); a run whose pocket
  payouts it cannot hold is refused whole (:class:`PointsBudgetShortError`), nothing paid;
- a card linked to no account but with a ``balances`` row (the single balance a terminal
  authorises such a card against): added to that balance, as before accounts existed;
- neither: the points are *held*.

A negative net (refunds taking back points already paid) is *carried*; held and carried
credits stay unpaid until the first run that can pay them. A second run of a month changes
nothing and answers what the first did. Paid rows of ``incentive_payouts`` into a pocket
have no balance version.

Each municipality pays its own programme's points (``municipality``, ``default`` unless
said otherwise): a run of a month in one municipality pays only the credits earned at its
terminals, from its own points budget, and is that municipality's run of the month; the
statement, the settlement file and the budget are per municipality too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from central import books
from central.csvfiles import write_private_csv
from central.incentive_rules import month_of, parse_month
from central.incentives import DEFAULT, active_rules, detail_of, epoch_ms, lock_crediting
from central.store import Rows, Store, Tx
from localpay.errors import BooksError, ConfigError, TransactionError

log = logging.getLogger(__name__)


_PAYOUT_COLUMNS = ("card_token", "month", "points", "paid", "carry", "status",
                   "balance_version", "paid_ms", "municipality_id")
#: where a card's points are: credits of entries, and adjustments of those credits
_POINT_TABLES = ("incentive_credits", "incentive_adjustments")
#: the programme whose budget pays incentive points into citizens' points pockets
POINTS_PROGRAMME = "incentives"


class PointsBudgetShortError(BooksError):
    """The points programme's budget cannot hold a run's payouts into points pockets."""


def payout_ref(month: str, card_token: str) -> str:
    """The books' reference of ``card_token``'s payout into a pocket by the run of ``month``."""
    return f"points:{month}:{card_token}"


@dataclass
class PayoutResult:
    month: str
    cards: int
    points: int
    held_cards: int
    held_points: int
    balance_version: int | None
    already: bool = False
    #: of ``cards`` and ``points``: those paid into citizens' points pockets
    pocket_cards: int = 0
    pocket_points: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def payout(store: Store, month: str, now_ms: int | None = None, *,
           programme: str = POINTS_PROGRAMME,
           municipality: str = books.DEFAULT_MUNICIPALITY) -> PayoutResult:
    """Pay the points payable in ``month`` (``YYYY-MM``) as spendable money; idempotent.

    Refused until the month has ended in the rules' time zone. Months may be paid in any
    order: each credit is paid once, by the run that pays it (``settled_month``). A run of
    ``month`` takes, per card, every unpaid credit payable in ``month`` and every unpaid
    credit of a month already run (points held for want of an account, or a negative net
    carried forward): a positive net is paid into the points pocket of the account the card
    is linked to in ``municipality`` (from ``programme``'s points budget), else into the
    card's balance when it has a ``balances`` row, else held; a negative net is carried.
    Held and carried credits stay unpaid, so the first run after the card has an account
    (or a positive net) pays them, once. :class:`PointsBudgetShortError` when the budget
    cannot hold the pocket payouts: nothing is paid. Only ``municipality``'s credits (those
    earned at its terminals) are paid, under its programme's rules; its month runs are its
    own.
    """
    month = parse_month(month)
    now_ms = epoch_ms() if now_ms is None else now_ms
    budget_account = books.programme_points(programme)
    with store.tx() as tx:
        lock_crediting(tx)
        run = tx.one("SELECT cards, points, held_cards, held_points, balance_version "
                     "FROM incentive_runs WHERE municipality_id = ? AND month = ?",
                     (municipality, month))
        if run is not None:
            into = tx.one("SELECT COUNT(*), COALESCE(SUM(paid), 0) FROM incentive_payouts "
                          "WHERE municipality_id = ? AND month = ? AND status = 'paid' AND "
                          "balance_version IS NULL", (municipality, month))
            return PayoutResult(month, int(run[0]), int(run[1]), int(run[2]), int(run[3]),
                                None if run[4] is None else int(run[4]), already=True,
                                pocket_cards=int(into[0]) if into else 0,
                                pocket_points=int(into[1]) if into else 0)
        rules = active_rules(tx, municipality=municipality)
        if month_of(rules.calendar().today(now_ms)) <= month:
            raise TransactionError(f"month {month} has not ended yet ({rules.timezone})")
        if month < month_of(rules.programme.start):
            raise TransactionError(f"month {month} is before the programme started "
                                   f"({rules.programme.start})")
        # Credits of months already run that are still unpaid were held or carried there.
        net: dict[str, int] = {}
        for table in _POINT_TABLES:
            for t, p in tx.all(
                f"SELECT card_token, SUM(points) FROM {table} WHERE municipality_id = ? AND "
                "settled_month IS NULL AND (payable_month = ? OR payable_month IN (SELECT "
                "month FROM incentive_runs WHERE municipality_id = ?)) GROUP BY card_token",
                (municipality, month, municipality)):
                net[str(t)] = net.get(str(t), 0) + int(p)
        tokens = sorted(net)
        # Set-based statements whose text does not depend on the number of cards: a city's
        # month is 100,000 cards and more.
        cards, card_list = tx.any_of("card_token", tokens)
        # a balance another municipality holds is not this programme's to pay into
        accounts = {str(r[0]) for r in tx.all(
            f"SELECT card_token FROM balances WHERE municipality_id = ? AND {cards}",
            [municipality, card_list])} if tokens else set()
        holders, holder_list = tx.any_of("holder", tokens)
        linked = {str(h): str(a) for h, a in tx.all(
            f"SELECT holder, account_id FROM account_links WHERE municipality_id = ? AND "
            f"{holders}", (municipality, holder_list))} if tokens else {}
        version: int | None = None
        rows: list[tuple[Any, ...]] = []
        updates: list[tuple[str, int]] = []
        kept: list[str] = []
        unpaid: list[tuple[Any, ...]] = []
        into_pockets: list[books.Transfer] = []
        result = PayoutResult(month, 0, 0, 0, 0, None)
        for token in tokens:
            points = net[token]
            if points > 0 and token in linked:
                # The account's pocket is where central's spending draws from; the card's
                # old single balance is left alone, so the points are in one place only.
                into_pockets.append(books.Transfer(
                    budget_account, books.pocket(linked[token], "points"), points,
                    "points_payout", payout_ref(month, token),
                    _detail({"card": token, "month": month})))
                unpaid.append((token, month, points, points, 0, "paid", now_ms, municipality))
                result.cards += 1
                result.points += points
                result.pocket_cards += 1
                result.pocket_points += points
            elif points > 0 and token in accounts:
                if version is None:
                    row = tx.one("SELECT COALESCE(MAX(version), 0) FROM balances")
                    version = int(row[0] if row else 0) + 1
                updates.append((token, points))
                rows.append((token, month, points, points, 0, "paid", version, now_ms,
                             municipality))
                result.cards += 1
                result.points += points
            elif points > 0:
                unpaid.append((token, month, points, 0, points, "held", now_ms, municipality))
                kept.append(token)
                result.held_cards += 1
                result.held_points += points
            elif points < 0:
                unpaid.append((token, month, points, 0, points, "carried", now_ms,
                               municipality))
                kept.append(token)
            # a net of zero: earned and taken back, settled with nothing to pay
        if into_pockets:
            _pay_into_pockets(tx, into_pockets, budget_account, municipality, now_ms)
        if updates:
            source, params = tx.values_table("v", ("t", "p"), updates)
            tx.run(f"UPDATE balances SET balance = balances.balance + v.p, version = ? "
                   f"FROM {source} WHERE balances.card_token = v.t", [version, *params])
        # Exactly the credits summed above, but those held or carried: the crediting lock
        # keeps new ones out meanwhile.
        held, held_list = tx.any_of("card_token", kept)
        for table in _POINT_TABLES:
            tx.run(f"UPDATE {table} SET settled_month = ? WHERE municipality_id = ? AND "
                   "settled_month IS NULL AND (payable_month = ? OR payable_month IN (SELECT "
                   f"month FROM incentive_runs WHERE municipality_id = ?)) AND NOT ({held})",
                   [month, municipality, month, municipality, held_list])
        # held, carried and pocket rows have no balance version: a column of their own would
        # be all NULL, which PostgreSQL cannot type from the rows' values
        tx.insert_all([Rows("incentive_payouts", _PAYOUT_COLUMNS, rows),
                       Rows("incentive_payouts", tuple(c for c in _PAYOUT_COLUMNS
                                                       if c != "balance_version"), unpaid)])
        result.balance_version = version
        tx.run("INSERT INTO incentive_runs (month, cards, points, held_cards, held_points, "
               "balance_version, ran_ms, municipality_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (month, result.cards, result.points, result.held_cards, result.held_points,
                version, now_ms, municipality))
    if result.pocket_cards:
        log.info("payout %s: %d cards, %d points (%d cards, %d points into pockets); %d held",
                 month, result.cards, result.points, result.pocket_cards, result.pocket_points,
                 result.held_cards)
    else:
        log.info("payout %s: %d cards, %d points; %d held", month, result.cards,
                 result.points, result.held_cards)
    return result


def _detail(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _pay_into_pockets(tx: Tx, transfers: list[books.Transfer], budget_account: str,
                      municipality: str, now_ms: int) -> None:
    """Post the run's payouts into pockets, refusing the whole run (the caller's
    transaction) when the budget cannot hold them all."""
    need = sum(t.amount for t in transfers)
    found = books.find_account(tx, budget_account, municipality=municipality)
    held = 0 if found is None else found.balance
    if need > held:
        raise PointsBudgetShortError(
            f"{budget_account} holds {held:,} won; the payout into {len(transfers):,} points "
            f"pockets needs {need:,} ({need - held:,} short): nothing paid. Fund the points "
            "budget first (localpay central payout-fund).")
    # an account linked before its pockets were opened by this version still has its pocket
    for account_id in sorted({t.credit for t in transfers}):
        books.open_account(tx, account_id, municipality=municipality, at_ms=now_ms)
    books.transfer(tx, transfers, municipality=municipality, at_ms=now_ms)


@dataclass(frozen=True)
class PointsFunded:
    programme: str
    amount: int
    ref: str
    #: False when this ref had funded the budget before and nothing moved now
    fresh: bool
    #: what the points budget holds afterwards
    budget: int


def fund_points(store: Store, amount: int, ref: str, *, programme: str = POINTS_PROGRAMME,
                municipality: str = books.DEFAULT_MUNICIPALITY,
                at_ms: int | None = None) -> PointsFunded:
    """Put ``amount`` won of the city's money into ``programme``'s points budget:
    ``bank:outside`` -> ``programme:<p>:funding`` (``funding``) -> ``programme:<p>:points``
    (``budget``). Idempotent on ``ref``: the same ref and amount again moves nothing."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ConfigError(f"amount {amount!r}: a whole number of won above zero")
    fresh, held = books.fund_budget(store, programme, books.programme_points(programme), amount,
                                    ref, "points", municipality=municipality, at_ms=at_ms)
    return PointsFunded(programme, amount, ref, fresh, held)


def statement(store: Store, card_token: str, *, municipality: str = DEFAULT
              ) -> dict[str, Any]:
    """A card's points in ``municipality``'s programme: every credit (entry, rule, rule
    version, points), weeks, payouts."""
    with store.tx(write=False) as tx:
        credits = tx.all(
            "SELECT day, terminal_id, seq, rule, points, rule_version, payable_month, note, "
            "settled_month, log_index, credited_ms, CAST(NULL AS TEXT) FROM "
            "incentive_credits WHERE card_token = ? AND municipality_id = ? UNION ALL "
            "SELECT day, terminal_id, seq, rule, points, rule_version, payable_month, note, "
            "settled_month, log_index, credited_ms, cause FROM incentive_adjustments "
            "WHERE card_token = ? AND municipality_id = ?",
            (card_token, municipality, card_token, municipality))
        # by day, then in log order, then as made: a moved first ride's adjustment comes
        # with the entry that caused it, before that entry's own credit; a recredit's after
        # the credit it corrects
        credits.sort(key=lambda r: (str(r[0]), int(r[9]), int(r[10]), r[11] is None,
                                    str(r[1]), int(r[2])))
        weeks = tx.all("SELECT week_start, points, days_mask FROM incentive_weeks "
                       "WHERE card_token = ? AND municipality_id = ? ORDER BY week_start",
                       (card_token, municipality))
        payouts = tx.all("SELECT month, points, paid, carry, status FROM incentive_payouts "
                         "WHERE card_token = ? AND municipality_id = ? ORDER BY month",
                         (card_token, municipality))
        profile = tx.one("SELECT rider FROM incentive_profiles WHERE card_token = ? AND "
                         "municipality_id = ?", (card_token, municipality))
    entries: list[dict[str, Any]] = [
        {"day": str(d), "terminal_id": str(t), "seq": int(s), "rule": str(r), "points": int(p),
         "rule_version": int(v), "payable_month": str(m), "note": detail_of(str(n)),
         "paid_in": None if pm is None else str(pm), "adjustment": cause}
        for d, t, s, r, p, v, m, n, pm, _, _, cause in credits]
    earned = sum(e["points"] for e in entries)
    pending = sum(e["points"] for e in entries if e["paid_in"] is None)
    return {
        "card_token": card_token,
        "rider": str(profile[0]) if profile else None,
        "earned": earned,
        "paid": sum(int(p[2]) for p in payouts),
        "pending": pending,
        "entries": entries,
        "weeks": [{"week_start": str(w), "points": int(p),
                   "days": [n for n in range(7) if int(m) >> n & 1]} for w, p, m in weeks],
        "payouts": [{"month": str(m), "points": int(p), "paid": int(pd), "carry": int(c),
                     "status": str(s)} for m, p, pd, c, s in payouts],
    }



# -- the settlement file and the budget ----------------------------------------------------------

SETTLEMENT_RULES = ("bus", "local_food", "refund", "campaign")
SETTLEMENT_HEADER = ("card_token", "category", "month", *SETTLEMENT_RULES, "total")


def settlement_rows(store: Store, month: str, *, municipality: str = DEFAULT
                    ) -> list[tuple[Any, ...]]:
    """What ``municipality``'s payout of ``month`` paid, per card and rule (adjustments
    under the rule they adjust): the rows of its settlement file, by card token."""
    month = parse_month(month)
    by_card: dict[str, dict[str, int]] = {}
    with store.tx(write=False) as tx:
        for table in _POINT_TABLES:
            for token, rule, points in tx.all(
                    f"SELECT card_token, rule, SUM(points) FROM {table} WHERE "
                    "municipality_id = ? AND settled_month = ? GROUP BY card_token, rule",
                    (municipality, month)):
                rules = by_card.setdefault(str(token), {})
                rules[str(rule)] = rules.get(str(rule), 0) + int(points)
        paid = {str(t) for t, in tx.all(
            "SELECT card_token FROM incentive_payouts WHERE municipality_id = ? AND "
            "month = ? AND status = 'paid'", (municipality, month))}
        riders = dict(tx.all("SELECT card_token, rider FROM incentive_profiles WHERE "
                             "municipality_id = ?", (municipality,)))
    rows = []
    for token in sorted(by_card):
        if token not in paid:
            continue  # credits that netted to nothing were settled without a payment
        points = by_card[token]
        unknown = sorted(set(points) - set(SETTLEMENT_RULES))
        if unknown:
            raise TransactionError(f"settlement {month}: no column for rules {unknown}")
        rows.append((token, str(riders.get(token) or ""), month,
                     *(points.get(r, 0) for r in SETTLEMENT_RULES), sum(points.values())))
    return rows


def write_settlement(store: Store, month: str, path: Path, *,
                     municipality: str = DEFAULT) -> int:
    """Write ``municipality``'s settlement file of ``month`` (CSV, mode 0600) atomically;
    the number of cards."""
    rows = settlement_rows(store, month, municipality=municipality)
    try:
        write_private_csv(path, SETTLEMENT_HEADER, rows)
    except OSError as err:
        # the payout itself is committed: running it again writes the file again
        raise ConfigError(f"settlement file {path} not written: {err}; the payout of "
                          f"{month} is done, run it again to write the file") from err
    return len(rows)


@dataclass
class Budget:
    year: int
    budget: int
    #: paid out by the payouts of the year's months
    spent: int
    #: credited for the year's months and not paid yet (held and carried included)
    committed: int

    @property
    def left(self) -> int:
        return self.budget - self.spent - self.committed

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "left": self.left}


def budget(store: Store, year: int, *, municipality: str = DEFAULT) -> Budget:
    """``municipality``'s programme's points for ``year``: spent and committed against its
    yearly budget (the newest rules version's)."""
    if not 2000 <= year <= 9999:
        raise ConfigError(f"year {year} is not a year of the programme")
    first, last = f"{year:04d}-01", f"{year:04d}-12"
    with store.tx(write=False) as tx:
        rules = active_rules(tx, store_default=False, municipality=municipality)
        row = tx.one("SELECT COALESCE(SUM(paid), 0) FROM incentive_payouts WHERE "
                     "municipality_id = ? AND month >= ? AND month <= ?",
                     (municipality, first, last))
        spent = int(row[0]) if row else 0
        committed = 0
        for table in _POINT_TABLES:
            row = tx.one(f"SELECT COALESCE(SUM(points), 0) FROM {table} WHERE "
                         "municipality_id = ? AND settled_month IS NULL AND "
                         "payable_month >= ? AND payable_month <= ?", (municipality, first, last))
            committed += int(row[0]) if row else 0
    return Budget(year, rules.programme.yearly_budget, spent, committed)
