"""Allowance programmes paid "by entering the recipients": a file of who gets how much.

A programme ``p`` (a youth dividend, a postnatal-care allowance, welfare points) has a budget
in the books, ``allowance:<p>``, filled by :func:`fund` (``bank:outside`` ->
``programme:<p>:funding`` -> ``allowance:<p>``). :func:`issue` reads a recipients file and
grants each recipient an amount for a *period* (``2026-11``) that may be spent until an
*expiry* day: one transfer ``allowance:<p>`` -> ``pocket:<account>:<p>`` per grant (code
``allowance_issue``), and one row in ``allowance_grants`` that says to whom, for which
period, until when, and later what came back at expiry. :func:`expire` returns the unspent
part of grants past their expiry to the budget (code ``allowance_expiry``); :func:`report`
tells, per programme and month, what was issued, spent, expired and is outstanding.

The recipients file is CSV with a header line: ``recipient`` (an account id, or a card token
or app wallet linked to an account) and optionally ``amount`` (whole won; empty or absent
means the default amount of the run). A file is applied whole or not at all: every bad line
is told with its number and reason (:class:`RecipientFileError`), and nothing moves. Other
columns are refused rather than ignored, so that a misspelt ``amount`` header cannot issue
the default amount to everyone.

Idempotent per programme, account and period: the transfer's ref is
``allowance:<p>:<account>:<period>``. Issuing the same file again answers what the first run
issued and moves nothing; a line that would grant the same account another amount (or
another expiry) for the same period is a bad line.

Which money expires. A pocket of programme ``p`` may hold several grants (periods) with
different expiry days, and a payment does not say which grant it spent. Spending is taken
from the soonest-expiring money first (what a citizen would want, and what keeps the least
money expiring), so on a day ``d`` the money of a pocket belongs first to its grants still
valid on ``d`` (``expires >= d``, not yet expired), and only the rest to the grants that
expire now. The unspent part of the grants of a pocket expiring now is therefore::

    min(their amounts, max(0, pocket balance - amounts of the pocket's grants still valid))

shared among them latest expiry first (the earliest-expiring was spent first). The rule
reads the balance at expiry, so a payment counts against the soonest-expiring grants the
pocket has received, whenever they came: a payment made before a sooner-expiring grant
arrived is counted against that grant too (the citizen keeps the later-expiring money). A
refund back into the pocket counts like money never spent. Expiry should run every day: a
grant past its day but not yet expired still pays, since the terminals cannot know, and a
late run takes from the remaining balance by the same rule.

Expiry is resumable and safe to run again: it works a chunk of pockets per transaction, and
each grant's row is marked (``expired_amount``, ``expired_ms``) in the same transaction as
its transfer (ref ``expiry:<grant ref>``), so a stopped run goes on where it stopped and a
second run finds nothing to do.

Months in :func:`report` are calendar months in the service's time zone (Asia/Seoul by
default), of when the money moved: a grant in the month it was issued, an expiry in the
month the expiry ran, a payment in the month it was booked.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from central import accounts, books
from localpay.errors import BooksError, ConfigError

if TYPE_CHECKING:  # the store imports this module for its tables
    from central.store import Store, Tx

TABLES = """
CREATE TABLE IF NOT EXISTS allowance_grants (
    municipality_id TEXT NOT NULL DEFAULT 'default', programme TEXT NOT NULL,
    period TEXT NOT NULL, account_id TEXT NOT NULL, recipient TEXT NOT NULL,
    amount BIGINT NOT NULL, expires TEXT NOT NULL, ref TEXT NOT NULL,
    issued_ms BIGINT NOT NULL, expired_amount BIGINT, expired_ms BIGINT,
    PRIMARY KEY (municipality_id, programme, period, account_id),
    CONSTRAINT allowance_grants_ref UNIQUE (municipality_id, ref),
    CONSTRAINT allowance_grants_amount CHECK (amount > 0),
    CONSTRAINT allowance_grants_expired CHECK (expired_amount IS NULL OR (
        expired_amount >= 0 AND expired_amount <= amount AND expired_ms IS NOT NULL)));
CREATE INDEX IF NOT EXISTS allowance_grants_due
    ON allowance_grants (municipality_id, expires) WHERE expired_ms IS NULL;
CREATE INDEX IF NOT EXISTS allowance_grants_pocket
    ON allowance_grants (municipality_id, account_id, programme, expires)
"""

#: the zone whose calendar months :func:`report` counts (the service's default)
TIMEZONE = "Asia/Seoul"
#: the columns a recipients file may have
COLUMNS = ("recipient", "amount")
#: pockets every account has: a programme of that name would share them
_RESERVED = frozenset({"cash", "points"})
_PROGRAMME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_PERIOD_RE = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_AMOUNT_RE = re.compile(r"\d{1,19}")
_MS_PER_DAY = 86_400_000


class RecipientFileError(ConfigError):
    """A recipients file with bad lines: ``problems`` is every ``(line, reason)``, in order;
    nothing of the file was applied."""

    def __init__(self, source: str, problems: Sequence[tuple[int, str]]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(f"{source}:{n}: {why}" for n, why in self.problems))


class BudgetShortError(BooksError):
    """The programme's budget does not hold what the new grants need; nothing was issued."""


# -- checks ------------------------------------------------------------------------------------

def check_programme(value: str) -> str:
    if not isinstance(value, str) or not _PROGRAMME_RE.fullmatch(value):
        raise ConfigError(f"programme {value!r}: 1 to 40 lowercase letters, digits, '-' or "
                          "'_', starting with a letter or digit")
    if value in _RESERVED:
        raise ConfigError(f"programme {value!r} would share the {value} pocket of every "
                          "account: choose another name")
    return value


def check_period(value: str) -> str:
    if not isinstance(value, str) or not _PERIOD_RE.fullmatch(value):
        raise ConfigError(f"period {value!r} is not a month written YYYY-MM")
    return value


def check_day(value: str | dt.date, what: str = "day") -> str:
    """A real date as ``YYYY-MM-DD`` text."""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str) and _DAY_RE.fullmatch(value):
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    raise ConfigError(f"{what} {value!r} is not a real date written YYYY-MM-DD")


def check_amount(value: int, what: str = "amount") -> int:
    # bool is an int to Python: True would grant 1 won
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= books.MAX_TOTAL:
        raise ConfigError(f"{what} {value!r} is not a positive whole number of won")
    return value


def grant_ref(programme: str, account_id: str, period: str) -> str:
    return f"allowance:{programme}:{account_id}:{period}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- grants ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Grant:
    """One recipient's allowance for one period, as ``allowance_grants`` holds it."""

    municipality: str
    programme: str
    period: str
    account_id: str
    recipient: str
    amount: int
    expires: str
    ref: str
    issued_ms: int
    expired_amount: int | None = None
    expired_ms: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_GRANT_COLUMNS = ("municipality_id", "programme", "period", "account_id", "recipient", "amount",
                  "expires", "ref", "issued_ms", "expired_amount", "expired_ms")


def _grant(row: Sequence[Any]) -> Grant:
    return Grant(str(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]), int(row[5]),
                 str(row[6]), str(row[7]), int(row[8]),
                 None if row[9] is None else int(row[9]),
                 None if row[10] is None else int(row[10]))


def grants_of(tx: Tx, account_id: str, *,
              municipality: str = books.DEFAULT_MUNICIPALITY) -> list[Grant]:
    """Every grant to ``account_id``, soonest expiry first."""
    return [_grant(r) for r in tx.all(
        f"SELECT {', '.join(_GRANT_COLUMNS)} FROM allowance_grants WHERE municipality_id = ? "
        "AND account_id = ? ORDER BY expires, programme, period", (municipality, account_id))]


# -- funding -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Funded:
    programme: str
    amount: int
    ref: str
    #: False when this ref had funded the programme before and nothing moved now
    fresh: bool
    #: what the programme's allowance budget holds afterwards
    budget: int


def fund(store: Store, programme: str, amount: int, ref: str, *,
         municipality: str = books.DEFAULT_MUNICIPALITY, at_ms: int | None = None) -> Funded:
    """Put ``amount`` won of the city's money into programme ``p``'s allowance budget:
    ``bank:outside`` -> ``programme:<p>:funding`` (``funding``) -> ``allowance:<p>``
    (``budget``). Idempotent on ``ref``: the same ref with the same amount moves nothing."""
    check_programme(programme)
    check_amount(amount)
    fresh, held = books.fund_budget(store, programme, books.allowance(programme), amount, ref,
                                    "allowance", municipality=municipality, at_ms=at_ms)
    return Funded(programme, amount, ref, fresh, held)


# -- the recipients file -----------------------------------------------------------------------

@dataclass(frozen=True)
class _Line:
    number: int
    recipient: str
    amount: int


def _parse(text: str, default_amount: int) -> tuple[list[_Line], list[tuple[int, str]]]:
    """The file's lines of good form, and every problem of form (lines of bad form do not stop
    the others being checked: every bad line is told)."""
    lines: list[_Line] = []
    problems: list[tuple[int, str]] = []
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    header: list[str] | None = None
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            problems.append((start, f"not CSV: {err}"))
            break
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in row]
            unknown = [c for c in header if c not in COLUMNS]
            twice = sorted({c for c in header if header.count(c) > 1})
            if "recipient" not in header:
                problems.append((start, "the header line has no 'recipient' column"))
            if unknown:
                problems.append((start, f"unknown column(s) {', '.join(map(repr, unknown))} "
                                        f"(known: {', '.join(COLUMNS)})"))
            if twice:
                problems.append((start, f"column(s) {', '.join(twice)} named twice"))
            if problems:
                return [], problems
            continue
        if len(row) > len(header):
            problems.append((start, f"{len(row)} cells, the header names {len(header)}"))
            continue
        cells = dict(zip(header, [c.strip() for c in row] + [""] * (len(header) - len(row)),
                         strict=True))
        recipient = cells["recipient"]
        if not recipient:
            problems.append((start, "no recipient"))
            continue
        written = cells.get("amount", "")
        if not written:
            amount = default_amount
        elif not _AMOUNT_RE.fullmatch(written) or not 0 < int(written) <= books.MAX_TOTAL:
            problems.append((start, f"bad amount {written!r}: a positive whole number of won"))
            continue
        else:
            amount = int(written)
        lines.append(_Line(start, recipient, amount))
    if header is None:
        problems.append((1, "empty file: expected a header line naming 'recipient'"))
    return lines, problems


def _read(recipients: str | Path) -> tuple[str, str]:
    """The file's text and the name to report it by: a Path is read, a str is the text."""
    if not isinstance(recipients, Path):
        return recipients, "<recipients>"
    try:
        raw = recipients.read_bytes()
    except OSError as err:
        raise ConfigError(f"{recipients}: {err}") from err
    try:
        return raw.decode("utf-8"), str(recipients)
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise RecipientFileError(str(recipients), [(line, "not UTF-8 text (save the file as "
                                                           "CSV UTF-8)")]) from err


# -- issuing -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class IssueResult:
    """What a recipients file granted: ``grants`` in the file's order (a repeated one as it
    was first issued), ``new`` of them issued by this run."""

    programme: str
    period: str
    grants: tuple[Grant, ...]
    new: int
    new_amount: int

    @property
    def repeated(self) -> int:
        return len(self.grants) - self.new

    @property
    def amount(self) -> int:
        return sum(g.amount for g in self.grants)

    def as_dict(self) -> dict[str, Any]:
        return {"programme": self.programme, "period": self.period,
                "grants": len(self.grants), "amount": self.amount, "new": self.new,
                "new_amount": self.new_amount, "repeated": self.repeated}


#: ``progress(stage, done, total)``: stage ``checked`` while lines are checked, ``issued``
#: while grants are posted
Progress = Callable[[str, int, int], None]


def issue(store: Store, programme: str, recipients: str | Path, amount: int, expires: str,
          period: str, municipality: str = books.DEFAULT_MUNICIPALITY, *,
          progress: Progress | None = None, chunk: int = 1000,
          at_ms: int | None = None) -> IssueResult:
    """Grant each recipient of ``recipients`` (a Path to read, or the CSV text itself) its
    amount (``amount`` unless the line says), for ``period``, spendable until ``expires``
    (YYYY-MM-DD, the last valid day), in one transaction.

    Raises :class:`RecipientFileError` with every bad line (unknown recipient, bad amount,
    a recipient twice, another amount or expiry than already granted), and
    :class:`BudgetShortError` when the budget does not hold the new grants; either way
    nothing is applied.
    """
    check_programme(programme)
    check_amount(amount, "default amount")
    expires = check_day(expires, "expiry")
    check_period(period)
    if not period <= expires[:7]:
        raise ConfigError(f"expiry {expires} is before the period {period} it pays")
    text, source = _read(recipients)
    lines, problems = _parse(text, amount)
    now = _now_ms() if at_ms is None else at_ms
    budget = books.allowance(programme)
    with store.tx() as tx:
        # The budget's row lock orders issues of one programme (PostgreSQL): grants read
        # below are then those committed by any issue that ran before.
        row = tx.one_for_update(
            "SELECT credits_posted - debits_posted FROM book_accounts WHERE municipality_id = ? "
            "AND account_id = ?", (municipality, budget))
        held = int(row[0]) if row is not None else 0
        resolved = _resolve(tx, lines, municipality, problems, progress)
        known = _known(tx, programme, period, [a for a, _ in resolved], municipality)
        out: list[Grant] = []
        new: list[Grant] = []
        for account_id, line in resolved:
            old = known.get(account_id)
            if old is None:
                grant = Grant(municipality, programme, period, account_id, line.recipient,
                              line.amount, expires, grant_ref(programme, account_id, period),
                              now)
                new.append(grant)
            elif (old.amount, old.expires) != (line.amount, expires):
                problems.append((line.number, (
                    f"{line.recipient} (account {account_id}) was granted {old.amount:,} won "
                    f"for {period} until {old.expires}; this line gives {line.amount:,} won "
                    f"until {expires}")))
                continue
            else:
                grant = old
            out.append(grant)
        if problems:
            # raised inside the transaction: it is rolled back, though nothing was written
            raise RecipientFileError(source, sorted(problems))
        need = sum(g.amount for g in new)
        if need > held:
            raise BudgetShortError(
                f"programme {programme}'s allowance budget holds {held:,} won; the {len(new):,} "
                f"new grants need {need:,} won ({need - held:,} won short): nothing issued. "
                "Fund the programme first.")
        _post(tx, new, municipality, chunk, now, progress)
    return IssueResult(programme, period, tuple(out), len(new), need)


def _resolve(tx: Tx, lines: list[_Line], municipality: str, problems: list[tuple[int, str]],
             progress: Progress | None) -> list[tuple[str, _Line]]:
    """``(account, line)`` of each line whose recipient is known and not named before."""
    out: list[tuple[str, _Line]] = []
    by_name: dict[str, int] = {}
    by_account: dict[str, _Line] = {}
    for n, line in enumerate(lines, 1):
        if progress is not None and n % 1000 == 0:
            progress("checked", n, len(lines))
        if line.recipient in by_name:
            problems.append((line.number, f"recipient {line.recipient} is also on line "
                                          f"{by_name[line.recipient]}"))
            continue
        by_name[line.recipient] = line.number
        try:
            account_id = accounts.resolve(tx, line.recipient, municipality=municipality)
        except ConfigError:
            problems.append((line.number, f"unknown recipient {line.recipient!r}: neither an "
                                          "account nor a card or wallet linked to one"))
            continue
        first = by_account.get(account_id)
        if first is not None:
            problems.append((line.number, f"recipient {line.recipient} is account {account_id}, "
                                          f"also named on line {first.number} "
                                          f"({first.recipient})"))
            continue
        by_account[account_id] = line
        out.append((account_id, line))
    if progress is not None:
        progress("checked", len(lines), len(lines))
    return out


def _known(tx: Tx, programme: str, period: str, account_ids: list[str],
           municipality: str) -> dict[str, Grant]:
    if not account_ids:
        return {}
    test, param = tx.any_of("account_id", account_ids)
    rows = tx.all(f"SELECT {', '.join(_GRANT_COLUMNS)} FROM allowance_grants "
                  f"WHERE municipality_id = ? AND programme = ? AND period = ? AND {test}",
                  (municipality, programme, period, param))
    return {g.account_id: g for g in map(_grant, rows)}


def _post(tx: Tx, new: list[Grant], municipality: str, chunk: int, now: int,
          progress: Progress | None) -> None:
    """Open the pockets, record the grants and move their money, a chunk at a time (all in
    the caller's transaction: the chunks only pace the progress)."""
    for start in range(0, len(new), max(1, chunk)):
        part = new[start:start + max(1, chunk)]
        for g in part:
            books.open_account(tx, books.pocket(g.account_id, g.programme),
                               municipality=municipality, at_ms=now)
        tx.many(f"INSERT INTO allowance_grants ({', '.join(_GRANT_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_GRANT_COLUMNS))})",
                [(g.municipality, g.programme, g.period, g.account_id, g.recipient, g.amount,
                  g.expires, g.ref, g.issued_ms, None, None) for g in part])
        books.transfer(tx, [books.Transfer(books.allowance(g.programme),
                                           books.pocket(g.account_id, g.programme), g.amount,
                                           "allowance_issue", g.ref,
                                           f"period {g.period}, expires {g.expires}")
                            for g in part], municipality=municipality, at_ms=now)
        if progress is not None:
            progress("issued", start + len(part), len(new))


# -- expiry ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExpireResult:
    day: str
    #: grants marked expired by this run (those whose money was all spent too)
    grants: int
    pockets: int
    #: won returned to the budgets by this run
    amount: int
    #: programme -> won returned to its budget by this run
    by_programme: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def unspent_of_expiring(balance: int, still_valid: int, expiring: Sequence[int]) -> list[int]:
    """What each of ``expiring`` (amounts, latest expiry first) still holds, in a pocket
    holding ``balance`` whose grants still valid amount to ``still_valid``: the money belongs
    to the latest-expiring grants first (spending took the soonest-expiring first)."""
    left = min(sum(expiring), max(0, balance - still_valid))
    out: list[int] = []
    for amount in expiring:
        take = min(amount, left)
        out.append(take)
        left -= take
    return out


def expire(store: Store, day: str | dt.date, municipality: str = books.DEFAULT_MUNICIPALITY,
           *, chunk: int = 500, at_ms: int | None = None,
           progress: Callable[[int, int], None] | None = None) -> ExpireResult:
    """Return to the budgets the unspent part of every grant whose expiry is before ``day``
    and that has not expired yet, ``chunk`` pockets per transaction (see the module's
    docstring for which money expires). Safe to run again, and resumable."""
    day = check_day(day)
    grants = pockets = amount = 0
    by_programme: dict[str, int] = {}
    while True:
        with store.tx() as tx:
            todo = [(str(p), str(a)) for p, a in tx.all(
                "SELECT DISTINCT programme, account_id FROM allowance_grants "
                "WHERE municipality_id = ? AND expires < ? AND expired_ms IS NULL "
                "ORDER BY programme, account_id LIMIT ?", (municipality, day, max(1, chunk)))]
            if not todo:
                break
            now = _now_ms() if at_ms is None else at_ms
            balances = _lock_accounts(tx, todo, municipality)
            transfers: list[books.Transfer] = []
            marks: list[tuple[Any, ...]] = []
            for programme, account_id in todo:
                rows = [_grant(r) for r in tx.all(tx.store.for_update(
                    f"SELECT {', '.join(_GRANT_COLUMNS)} FROM allowance_grants "
                    "WHERE municipality_id = ? AND programme = ? AND account_id = ? "
                    "AND expired_ms IS NULL"), (municipality, programme, account_id))]
                valid = sum(g.amount for g in rows if g.expires >= day)
                due = sorted((g for g in rows if g.expires < day),
                             key=lambda g: (g.expires, g.period), reverse=True)
                pocket = books.pocket(account_id, programme)
                back = unspent_of_expiring(balances.get(pocket, 0), valid,
                                           [g.amount for g in due])
                for g, won in zip(due, back, strict=True):
                    marks.append((won, now, municipality, g.ref))
                    if won:
                        transfers.append(books.Transfer(
                            pocket, books.allowance(programme), won, "allowance_expiry",
                            f"expiry:{g.ref}", f"expired {g.expires}, unspent of {g.amount}"))
                        by_programme[programme] = by_programme.get(programme, 0) + won
                        amount += won
                grants += len(due)
            tx.many("UPDATE allowance_grants SET expired_amount = ?, expired_ms = ? "
                    "WHERE municipality_id = ? AND ref = ? AND expired_ms IS NULL", marks)
            books.transfer(tx, transfers, municipality=municipality, at_ms=now)
            pockets += len(todo)
        if progress is not None:
            progress(pockets, grants)
    return ExpireResult(day, grants, pockets, amount, by_programme)


def _lock_accounts(tx: Tx, todo: list[tuple[str, str]], municipality: str) -> dict[str, int]:
    """Lock the budgets and pockets of ``todo`` in sorted order, as :func:`books.transfer`
    does (so neither waits on the other in a circle): account id -> balance."""
    ids = {books.allowance(p) for p, _ in todo} | {books.pocket(a, p) for p, a in todo}
    out: dict[str, int] = {}
    for account_id in sorted(ids):
        row = tx.one_for_update(
            "SELECT credits_posted - debits_posted FROM book_accounts WHERE municipality_id = ? "
            "AND account_id = ?", (municipality, account_id))
        if row is not None:
            out[account_id] = int(row[0])
    return out


# -- report ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReportRow:
    """One programme's month: won issued, spent (payments out of its pockets less refunds
    back), expired (returned to the budget), and outstanding in its pockets at the month's
    end (so outstanding = last month's + issued - spent - expired)."""

    programme: str
    month: str
    issued: int
    spent: int
    expired: int
    outstanding: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _months(first_ms: int, last_ms: int, tz: ZoneInfo) -> list[tuple[str, int, int]]:
    """``(YYYY-MM, start ms, end ms)`` of each calendar month from ``first_ms``'s to
    ``last_ms``'s in ``tz``."""
    first = dt.datetime.fromtimestamp(first_ms / 1000, tz).date().replace(day=1)
    last = dt.datetime.fromtimestamp(last_ms / 1000, tz).date().replace(day=1)
    out: list[tuple[str, int, int]] = []
    month = first
    while month <= last:
        after = (month + dt.timedelta(days=32)).replace(day=1)
        start = int(dt.datetime.combine(month, dt.time(), tz).timestamp()) * 1000
        end = int(dt.datetime.combine(after, dt.time(), tz).timestamp()) * 1000
        out.append((month.strftime("%Y-%m"), start, end))
        month = after
    return out


def report(store: Store, programme: str | None = None, month: str | None = None,
           municipality: str = books.DEFAULT_MUNICIPALITY, *, tz: str = TIMEZONE,
           now_ms: int | None = None) -> list[ReportRow]:
    """Per programme (or only ``programme``) and calendar month (or only ``month``): issued,
    spent, expired and outstanding, from its first grant's month to this month."""
    if programme is not None:
        check_programme(programme)
    if month is not None:
        check_period(month)
    zone = ZoneInfo(tz)
    now = _now_ms() if now_ms is None else now_ms
    out: list[ReportRow] = []
    with store.tx(write=False) as tx:
        where, params = ("AND programme = ?", [programme]) if programme else ("", [])
        spans = tx.all("SELECT programme, MIN(issued_ms), MAX(issued_ms), "
                       "MAX(COALESCE(expired_ms, 0)) FROM allowance_grants "
                       f"WHERE municipality_id = ? {where} GROUP BY programme ORDER BY programme",
                       [municipality, *params])
        for p, first, last_issued, last_expired in spans:
            months = _months(int(first), max(now, int(last_issued), int(last_expired)), zone)
            figures = _figures(tx, str(p), months, municipality)
            outstanding = 0
            for name, _, _ in months:
                issued, spent, expired = figures.get(name, (0, 0, 0))
                outstanding += issued - spent - expired
                if month is None or name == month:
                    out.append(ReportRow(str(p), name, issued, spent, expired, outstanding))
    return out


def _figures(tx: Tx, programme: str, months: list[tuple[str, int, int]],
             municipality: str) -> dict[str, tuple[int, int, int]]:
    """month -> (issued, spent, expired) of one programme, one query per figure."""
    table, tparams = tx.values_table("m", ("month", "start_ms", "end_ms"), months)
    within = "{col} >= m.start_ms AND {col} < m.end_ms"
    issued = tx.all(
        f"SELECT m.month, SUM(g.amount) FROM allowance_grants g JOIN {table} "
        f"ON {within.format(col='g.issued_ms')} WHERE g.municipality_id = ? "
        "AND g.programme = ? GROUP BY m.month", [*tparams, municipality, programme])
    expired = tx.all(
        f"SELECT m.month, SUM(g.expired_amount) FROM allowance_grants g JOIN {table} "
        f"ON {within.format(col='g.expired_ms')} WHERE g.municipality_id = ? "
        "AND g.programme = ? AND g.expired_ms IS NOT NULL GROUP BY m.month",
        [*tparams, municipality, programme])
    # The programme's pockets are those of its grants: joined by the pocket's account id,
    # the transfers are found through their index, not by a scan for a pattern.
    pockets = ("(SELECT DISTINCT account_id FROM allowance_grants WHERE municipality_id = ? "
               "AND programme = ?) p")
    pocket_id = "'pocket:' || p.account_id || ':' || CAST(? AS TEXT)"
    side = ("SELECT t.at_ms AS at_ms, {sign}t.amount AS won FROM {pockets} JOIN book_transfers t "
            "ON t.municipality_id = ? AND t.{column} = {pocket_id} AND t.code = '{code}'")
    moved = tx.all(
        "SELECT m.month, SUM(x.won) FROM ("
        + side.format(sign="", pockets=pockets, column="debit_account", pocket_id=pocket_id,
                      code="payment")
        + " UNION ALL "
        + side.format(sign="-", pockets=pockets, column="credit_account", pocket_id=pocket_id,
                      code="refund")
        + f") x JOIN {table} ON {within.format(col='x.at_ms')} GROUP BY m.month",
        [municipality, programme, municipality, programme] * 2 + tparams)
    out: dict[str, list[int]] = {}
    for i, rows in enumerate((issued, moved, expired)):
        for name, won in rows:
            out.setdefault(str(name), [0, 0, 0])[i] = int(won or 0)
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def ensure_schema(store: Store) -> None:
    """Make the tables where missing (``Store.init_schema`` does it with the rest)."""
    with store.tx() as tx:
        tx.schema_lock("allowances")
        for statement in TABLES.split(";"):
            if statement.strip():
                tx.run(statement)


__all__ = ["COLUMNS", "TABLES", "BudgetShortError", "ExpireResult", "Funded", "Grant",
           "IssueResult", "RecipientFileError", "ReportRow", "check_programme", "expire",
           "fund", "grant_ref", "grants_of", "issue", "report", "unspent_of_expiring"]
