"""Daily merchant settlement: what the books owe each merchant for a business day, paid by
bank transfer, with every won of a merchant's payable accounted for exactly once.

**Business day.** A ``payment`` or ``refund`` transfer belongs to the day its ``detail`` JSON
names under ``day`` when that is a date written ``YYYY-MM-DD`` (the spending poster writes
the entry's effective day there, so a batch posted days late still counts on the day the
money changed hands); otherwise to the day in Seoul (UTC+9, no daylight saving since 1988)
of its ``at_ms``. A detail that begins with ``{`` must be a JSON object: both stores refuse
the run otherwise, rather than guess a day.

**What a settlement covers.** Each run of day ``D`` covers, per merchant, the payable
transfers that no earlier settlement covers (``settlement_items``: transfer id -> the day of
the settlement that covered it; a transfer is covered once, by the key):

- payments of business day ``D``;
- *late* payments: of a business day before ``D`` whose day has already been run (posted
  after that run, or left by a held or carried settlement). Payments of a day not yet run
  wait for that day's own run; payments of a day after ``D`` wait for theirs. So a late
  batch goes into the next run of a later day, once, and its row shows it apart
  (``late_gross``, ``late_refunds``);
- every refund and every returned settlement (``settlement_returned``) posted so far,
  whatever its day: money the merchant gave back, or that a bank sent back, is counted at
  the first run after it, so the payable always holds what a run sends (what a run leaves
  uncovered is payments only).

Per merchant: ``gross`` (payments), ``refunds``, ``returned``, ``fees`` = ``gross * bp //
10000`` (floor: the merchant is never charged a part of a won more than its rate), and
``net = gross - refunds + returned - fees``; ``by_pocket`` splits gross, refunds, fees and
net by the pocket the money came from (``cash``, ``points``, an allowance programme's id,
or ``receivable`` for the part of an offline payment no pocket covered), so each funding
programme's share of what is paid out is known; the fee is spread over the pockets by their
gross, largest remainder first (ties by pocket name), so the parts add up to the fee.

Statuses: ``pending`` (the ``fee`` and ``settlement`` transfers are posted, refs
``fee:<m>:<day>`` and ``settle:<m>:<day>``) -> ``sent`` (the bank file was uploaded) ->
``confirmed`` (the bank paid: ``settlement_paid``, ``paid:<m>:<day>``) or ``returned`` (the
bank sent it back: ``settlement_returned``, ``returned:<m>:<day>``, so the money is owed
again and goes into the next run). ``held``: a positive net for a merchant with no complete
bank account (code, number and holder), not in the registry, or whose payable holds less
than is due; ``carried``: a net of zero or less. Held and carried settlements move nothing,
are recorded with their figures, and cover nothing: their transfers go into the next run.

A day is run once: a second run answers what the first did and moves nothing. Runs are one
at a time per municipality (an advisory lock on PostgreSQL, SQLite's one write lock), and
refused until the day has ended in Seoul.

**Refunds the float paid.** A run first takes back what owing merchants owe the refund
float from what it would send them, never below zero (:mod:`central.receivables`).

**The bank file** (일괄이체, bulk transfer upload): :mod:`central.settlement_file`.

**The check** (:mod:`central.settlement_check`): for a day and each merchant, the books'
payments of that business day against what settlements covered of them and what is still
open, each settlement against its items, and the terminals' own totals against the books.

Set-based throughout (SCALING.md): a run is one ``INSERT ... SELECT`` that covers the day's
transfers, one aggregate over what it covered, one read each of the merchants and their
payables, one bulk insert of the rows; then the transfers, :data:`POST_CHUNK` merchants a
transaction (a run stopped midway is finished by running it again).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
import tomllib
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from central import accounts, books, receivables
from firmware_cfg.config import check_category
from localpay.errors import ConfigError, TransactionError

if TYPE_CHECKING:  # the store imports this module for its tables
    from central.store import Store, Tx

log = logging.getLogger(__name__)

TABLES = """
CREATE TABLE IF NOT EXISTS settlement_runs (
    municipality_id TEXT NOT NULL DEFAULT 'default', day TEXT NOT NULL,
    merchants BIGINT NOT NULL, paid BIGINT NOT NULL, gross BIGINT NOT NULL,
    fees BIGINT NOT NULL, net BIGINT NOT NULL, held BIGINT NOT NULL, carried BIGINT NOT NULL,
    fee_rules TEXT NOT NULL, created_ms BIGINT NOT NULL,
    PRIMARY KEY (municipality_id, day));
CREATE TABLE IF NOT EXISTS settlements (
    municipality_id TEXT NOT NULL DEFAULT 'default', merchant_id TEXT NOT NULL,
    day TEXT NOT NULL, gross BIGINT NOT NULL, refunds BIGINT NOT NULL,
    returned BIGINT NOT NULL, fees BIGINT NOT NULL, net BIGINT NOT NULL,
    late_gross BIGINT NOT NULL, late_refunds BIGINT NOT NULL, fee_bp BIGINT NOT NULL,
    by_pocket TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    bank_code TEXT NOT NULL DEFAULT '', account_no TEXT NOT NULL DEFAULT '',
    holder TEXT NOT NULL DEFAULT '', brn TEXT NOT NULL DEFAULT '',
    file TEXT NOT NULL DEFAULT '', created_ms BIGINT NOT NULL, sent_ms BIGINT,
    confirmed_ms BIGINT, returned_ms BIGINT, posted_ms BIGINT,
    PRIMARY KEY (municipality_id, merchant_id, day),
    CONSTRAINT settlements_status CHECK (status IN ('pending', 'sent', 'confirmed',
                                                    'returned', 'held', 'carried')));
CREATE INDEX IF NOT EXISTS settlements_day ON settlements (municipality_id, day, status);
CREATE TABLE IF NOT EXISTS settlement_items (
    municipality_id TEXT NOT NULL DEFAULT 'default', transfer_id TEXT NOT NULL,
    merchant_id TEXT NOT NULL, day TEXT NOT NULL, kind TEXT NOT NULL, source TEXT NOT NULL,
    amount BIGINT NOT NULL, settled_day TEXT NOT NULL,
    PRIMARY KEY (municipality_id, transfer_id));
CREATE INDEX IF NOT EXISTS settlement_items_run
    ON settlement_items (municipality_id, settled_day, merchant_id)
"""
# One index besides the key: a run writes an item per payment of the day, and each index
# is a third of that insert's cost. The check finds a day's items through this one too,
# since a payment of a day is covered by that day's run or a later one.

PENDING, SENT, CONFIRMED, RETURNED, HELD, CARRIED = (
    "pending", "sent", "confirmed", "returned", "held", "carried")
#: statuses whose transfers were posted: what the bank file lists
POSTED = (PENDING, SENT, CONFIRMED, RETURNED)
MAX_BP = 1000
#: merchants whose transfers one transaction posts: each transfer moves the one row of
#: ``operator:fees`` or ``settlement:in_transit``, and PostgreSQL walks every version a
#: transaction made of a row to update it again (43,000 merchants in one: minutes)
POST_CHUNK = 1000
#: terminal_totals kinds counted as sales and as refunds
TERMINAL_SALES = ("payment", "tap")
TERMINAL_REFUNDS = ("refund", "void")

_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_SEOUL = dt.timezone(dt.timedelta(hours=9))
_LOCK = 0x6C70736574  # "lpset": advisory lock space of settlement runs
_KSIC_PREFIX = re.compile(r"ksic:\d{2,5}")
_MUNICIPALITY_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # as the books take it

_SETTLEMENT_COLUMNS = (
    "municipality_id", "merchant_id", "day", "gross", "refunds", "returned", "fees", "net",
    "late_gross", "late_refunds", "fee_bp", "by_pocket", "status", "reason", "bank_code",
    "account_no", "holder", "brn", "file", "created_ms", "sent_ms", "confirmed_ms",
    "returned_ms", "posted_ms")
#: what a run writes (the times of later steps are NULL until then)
_NEW_COLUMNS = _SETTLEMENT_COLUMNS[:20]


def parse_day(text: str) -> str:
    """A real date written ``YYYY-MM-DD``, or ConfigError."""
    if isinstance(text, str) and _DAY_RE.fullmatch(text):
        try:
            return dt.date.fromisoformat(text).isoformat()
        except ValueError:
            pass
    raise ConfigError(f"day {text!r}: expected a real date written YYYY-MM-DD")


def seoul_day(at_ms: int) -> str:
    """The day in Seoul holding ``at_ms``: what a transfer without a ``day`` belongs to."""
    return dt.datetime.fromtimestamp(at_ms / 1000, _SEOUL).date().isoformat()


def _now(now_ms: int | None) -> int:
    return time.time_ns() // 1_000_000 if now_ms is None else now_ms


# -- fees --------------------------------------------------------------------------------------

def _bp(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_BP:
        raise ConfigError(f"{where}: expected whole basis points 0 to {MAX_BP}, found {value!r}")
    return value


def _category_key(key: str) -> str:
    """``ksic:`` and 2 to 5 digits (a prefix: KSIC codes nest by digits) or a whole
    ``mcc:`` code (MCCs do not nest)."""
    text = key.strip().lower() if isinstance(key, str) else key
    if isinstance(text, str) and _KSIC_PREFIX.fullmatch(text):
        return text
    return check_category(str(key), f"settlement.category_fee_bp key {key!r}")


@dataclass(frozen=True)
class FeeRules:
    """Fees in basis points of gross: ``fee_bp`` for every merchant, and per category
    (``ksic:47`` matches every KSIC code under 47; the longest matching prefix wins;
    ``mcc:5411`` matches itself)."""

    fee_bp: int = 0
    category_fee_bp: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        _bp(self.fee_bp, "settlement.fee_bp")
        pairs = dict(self.category_fee_bp)
        if len(pairs) != len(self.category_fee_bp):
            raise ConfigError("settlement.category_fee_bp: a category is given twice")
        object.__setattr__(self, "category_fee_bp", tuple(sorted(
            (_category_key(k), _bp(v, f"settlement.category_fee_bp.{k}"))
            for k, v in pairs.items())))

    def bp_for(self, category: str) -> int:
        best, bp = -1, self.fee_bp
        for key, value in self.category_fee_bp:
            matches = (category.startswith(key) if key.startswith("ksic:")
                       else category == key)
            if matches and len(key) > best:
                best, bp = len(key), value
        return bp

    def fee(self, gross: int, category: str) -> int:
        return gross * self.bp_for(category) // 10_000

    def as_dict(self) -> dict[str, Any]:
        return {"fee_bp": self.fee_bp, "category_fee_bp": dict(self.category_fee_bp)}

    @classmethod
    def from_toml(cls, text: str, source: str = "<fees>") -> FeeRules:
        """The ``[settlement]`` table: ``fee_bp`` and ``[settlement.category_fee_bp]``."""
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{source}: not TOML: {err}") from err
        table = doc.get("settlement")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: no [settlement] table")
        unknown = sorted(set(table) - {"fee_bp", "category_fee_bp"})
        if unknown:
            raise ConfigError(f"{source}: settlement.{unknown[0]} is not a setting "
                              "(fee_bp, category_fee_bp)")
        categories = table.get("category_fee_bp", {})
        if not isinstance(categories, dict):
            raise ConfigError(f"{source}: settlement.category_fee_bp must be a table")
        try:
            return cls(table.get("fee_bp", 0), tuple(categories.items()))
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from err

    @classmethod
    def load(cls, path: str | Path) -> FeeRules:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: {err}") from err
        return cls.from_toml(text, str(path))


def split_fee(fee: int, gross_by_pocket: Mapping[str, int]) -> dict[str, int]:
    """``fee`` spread over the pockets by their gross: floors, then the won left over one
    each to the largest remainders (ties by pocket name). The parts add up to ``fee``."""
    total = sum(gross_by_pocket.values())
    if total <= 0:
        return dict.fromkeys(gross_by_pocket, 0)
    parts = {p: fee * g // total for p, g in gross_by_pocket.items()}
    left = fee - sum(parts.values())
    order = sorted(gross_by_pocket, key=lambda p: (-(fee * gross_by_pocket[p] % total), p))
    for p in order[:left]:
        parts[p] += 1
    return parts


# -- results -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Settlement:
    """One merchant's settlement of one day (a row of ``settlements``)."""

    merchant_id: str
    day: str
    gross: int
    refunds: int
    returned: int
    fees: int
    net: int
    late_gross: int
    late_refunds: int
    fee_bp: int
    by_pocket: dict[str, dict[str, int]]
    status: str
    reason: str = ""
    bank_code: str = ""
    account_no: str = ""
    holder: str = ""
    brn: str = ""
    file: str = ""
    created_ms: int = 0
    sent_ms: int | None = None
    confirmed_ms: int | None = None
    returned_ms: int | None = None
    municipality_id: str = books.DEFAULT_MUNICIPALITY
    #: when its fee and settlement transfers were posted (None: not yet, or held/carried)
    posted_ms: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def _row(self) -> tuple[Any, ...]:
        return (self.municipality_id, self.merchant_id, self.day, self.gross, self.refunds,
                self.returned, self.fees, self.net, self.late_gross, self.late_refunds,
                self.fee_bp, json.dumps(self.by_pocket, sort_keys=True), self.status,
                self.reason, self.bank_code, self.account_no, self.holder, self.brn, self.file,
                self.created_ms)


def _settlement(row: Sequence[Any]) -> Settlement:
    v = dict(zip(_SETTLEMENT_COLUMNS, row, strict=True))

    def when(key: str) -> int | None:
        return None if v[key] is None else int(v[key])

    return Settlement(
        merchant_id=str(v["merchant_id"]), day=str(v["day"]), gross=int(v["gross"]),
        refunds=int(v["refunds"]), returned=int(v["returned"]), fees=int(v["fees"]),
        net=int(v["net"]), late_gross=int(v["late_gross"]),
        late_refunds=int(v["late_refunds"]), fee_bp=int(v["fee_bp"]),
        by_pocket=json.loads(str(v["by_pocket"])), status=str(v["status"]),
        reason=str(v["reason"]), bank_code=str(v["bank_code"]),
        account_no=str(v["account_no"]), holder=str(v["holder"]), brn=str(v["brn"]),
        file=str(v["file"]), created_ms=int(v["created_ms"]), sent_ms=when("sent_ms"),
        confirmed_ms=when("confirmed_ms"), returned_ms=when("returned_ms"),
        municipality_id=str(v["municipality_id"]), posted_ms=when("posted_ms"))


@dataclass
class SettlementRun:
    """What a run of ``day`` did (``already``: it had been run, and this is that run)."""

    day: str
    municipality: str
    settlements: list[Settlement] = field(default_factory=list)
    already: bool = False

    def _of(self, *statuses: str) -> list[Settlement]:
        return [s for s in self.settlements if s.status in statuses]

    @property
    def paid(self) -> list[Settlement]:
        return self._of(*POSTED)

    @property
    def held(self) -> list[Settlement]:
        return self._of(HELD)

    @property
    def carried(self) -> list[Settlement]:
        return self._of(CARRIED)

    @property
    def gross(self) -> int:
        return sum(s.gross for s in self.paid)

    @property
    def fees(self) -> int:
        return sum(s.fees for s in self.paid)

    @property
    def net(self) -> int:
        return sum(s.net for s in self.paid)

    def as_dict(self) -> dict[str, Any]:
        return {"day": self.day, "municipality": self.municipality, "already": self.already,
                "merchants": len(self.settlements), "paid": len(self.paid),
                "gross": self.gross, "fees": self.fees, "net": self.net,
                "held": [s.merchant_id for s in self.held],
                "carried": [s.merchant_id for s in self.carried],
                "settlements": [s.as_dict() for s in self.settlements]}


# -- the run -----------------------------------------------------------------------------------

def _dialect(kind: str) -> dict[str, str]:
    """The few expressions the two stores write differently, with the same meaning."""
    if kind == "postgresql":
        return {"pos": "strpos",
                "json_day": "CAST(t.detail AS jsonb) ->> 'day'",
                "is_day": "~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$'",
                "at_day": "to_char(to_timestamp(t.at_ms / 1000 + 32400) AT TIME ZONE 'UTC', "
                          "'YYYY-MM-DD')",
                # a subquery the planner keeps whole: its columns are computed once a row,
                # not again wherever the outer query names them (the JSON parse most)
                "fence": " OFFSET 0"}
    return {"pos": "instr",
            "json_day": "CAST(json_extract(t.detail, '$.day') AS TEXT)",
            "is_day": "GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'",
            "at_day": "date(t.at_ms / 1000 + 32400, 'unixepoch')",
            "fence": " LIMIT -1 OFFSET 0"}


def _open_transfers_sql(kind: str, only_open: bool = True) -> str:
    """The merchants' payable transfers (not covered yet: ``only_open``), with their payable,
    counter-account and both candidate days; parameter: the municipality."""
    d = _dialect(kind)
    other = ("CASE t.code WHEN 'payment' THEN t.debit_account WHEN 'refund' THEN "
             "t.credit_account ELSE '' END")
    return (
        "SELECT t.transfer_id, t.code, t.amount, "
        "CASE WHEN t.code = 'refund' THEN t.debit_account ELSE t.credit_account END "
        f"AS payable, {other} AS other, "
        f"CASE WHEN t.detail LIKE '{{%' THEN {d['json_day']} END AS detail_day, "
        f"{d['at_day']} AS at_day "
        "FROM book_transfers t WHERE t.municipality_id = ? "
        "AND t.code IN ('payment', 'refund', 'settlement_returned')"
        + (" AND NOT EXISTS (SELECT 1 FROM settlement_items i WHERE i.municipality_id = "
           "t.municipality_id AND i.transfer_id = t.transfer_id)" if only_open else "")
        + d["fence"])


def business_day_sql(kind: str, only_open: bool = False) -> str:
    """Payable transfers as ``(transfer_id, code, amount, merchant_id, day)``; parameter:
    the municipality."""
    d = _dialect(kind)
    return ("SELECT c.transfer_id, c.code, c.amount, "
            "substr(c.payable, 10, length(c.payable) - 17) AS merchant_id, "
            f"CASE WHEN c.detail_day {d['is_day']} THEN c.detail_day ELSE c.at_day END AS day "
            f"FROM ({_open_transfers_sql(kind, only_open)}) AS c "
            "WHERE c.payable LIKE 'merchant:%:payable'")


def _cover_sql(kind: str) -> str:
    """Cover what a run of a day takes (parameters: municipality, day, day, municipality,
    municipality, day; see the module's docstring)."""
    d = _dialect(kind)
    pos = d["pos"]
    day = f"CASE WHEN c.detail_day {d['is_day']} THEN c.detail_day ELSE c.at_day END"
    source = (f"CASE WHEN c.other LIKE 'pocket:%' THEN substr(c.other, {pos}(substr(c.other, "
              f"8), ':') + 8) WHEN c.other = '' THEN '' ELSE substr(c.other, 1, "
              f"{pos}(c.other, ':') - 1) END")
    return (
        "INSERT INTO settlement_items (municipality_id, transfer_id, merchant_id, day, kind, "
        "source, amount, settled_day) "
        "SELECT ?, b.transfer_id, substr(b.payable, 10, length(b.payable) - 17), b.bday, "
        "CASE b.code WHEN 'settlement_returned' THEN 'returned' ELSE b.code END, "
        f"b.source, b.amount, ? FROM (SELECT c.*, {day} AS bday, {source} AS source "
        f"FROM ({_open_transfers_sql(kind)}) AS c "
        f"WHERE c.payable LIKE 'merchant:%:payable'{d['fence']}) AS b "
        "WHERE b.code <> 'payment' OR b.bday = ? OR (b.bday < ? AND b.bday IN "
        "(SELECT r.day FROM settlement_runs r WHERE r.municipality_id = ?))")


def plan_for_scans(tx: Tx) -> None:
    """Join the open transfers to the items by hashing (PostgreSQL): statistics taken while
    the items table was small make the planner choose a nested loop that scans the items
    once per transfer, and a run inserting into that table as it reads it turns that
    quadratic (30,000 payments: 8 s instead of a tenth)."""
    if tx.store.kind == "postgresql":
        tx.run("SET LOCAL enable_nestloop = off")


def _lock_runs(tx: Tx, municipality: str) -> None:
    if tx.store.kind == "postgresql":
        # one run (or status change) at a time per municipality, on any worker
        tx.one("SELECT pg_advisory_xact_lock(?, ?)",
               (_LOCK & 0x7FFF_FFFF, zlib.crc32(municipality.encode()) & 0x7FFF_FFFF))


def _read_run(tx: Tx, day: str, municipality: str) -> list[Settlement]:
    rows = tx.all(f"SELECT {', '.join(_SETTLEMENT_COLUMNS)} FROM settlements "
                  "WHERE municipality_id = ? AND day = ? ORDER BY merchant_id",
                  (municipality, day))
    return [_settlement(r) for r in rows]


@dataclass
class _Tally:
    gross: int = 0
    refunds: int = 0
    returned: int = 0
    late_gross: int = 0
    late_refunds: int = 0
    pockets: dict[str, list[int]] = field(default_factory=dict)  # source -> [gross, refunds]


def settle(store: Store, day: str, *, fee_rules: FeeRules | None = None,
           municipality: str = books.DEFAULT_MUNICIPALITY, now_ms: int | None = None
           ) -> SettlementRun:
    """Settle business day ``day`` for every merchant owed anything; idempotent (see the
    module's docstring for what a run covers and the statuses it gives)."""
    day = parse_day(day)
    rules = fee_rules or FeeRules()
    now = _now(now_ms)
    if not isinstance(municipality, str) or not _MUNICIPALITY_RE.fullmatch(municipality):
        raise ConfigError(f"municipality {municipality!r}: 1 to 64 letters, digits, '_', '.' "
                          "or '-'")
    if day >= seoul_day(now):
        raise TransactionError(f"day {day} has not ended yet in Seoul")
    with store.tx() as tx:
        _lock_runs(tx, municipality)
        already = tx.one("SELECT 1 FROM settlement_runs WHERE municipality_id = ? AND day = ?",
                         (municipality, day)) is not None
        if not already:
            _run(tx, day, municipality, rules, now)
    # a run stopped between its decision and the last chunk is finished by the next call
    _post_pending(store, day, municipality, now)
    with store.tx(write=False) as tx:
        run = SettlementRun(day, municipality, _read_run(tx, day, municipality), already)
    if not already:
        log.info("settlement %s %s: %d merchants paid %d won net (%d won fees); %d held, "
                 "%d carried", municipality, day, len(run.paid), run.net, run.fees,
                 len(run.held), len(run.carried))
    return run


def _run(tx: Tx, day: str, municipality: str, rules: FeeRules, now: int) -> None:
    """Cover the day's transfers and record each merchant's settlement (transfers not
    posted yet: :func:`_post_pending`)."""
    plan_for_scans(tx)
    tx.run(_cover_sql(tx.store.kind),
           (municipality, day, municipality, day, day, municipality))
    if tx.store.kind == "postgresql":
        tx.run("RESET enable_nestloop")
    tallies: dict[str, _Tally] = {}
    for m, kind, source, late, amount in tx.all(
            "SELECT merchant_id, kind, source, late, SUM(amount) FROM (SELECT merchant_id, "
            "kind, source, amount, CASE WHEN day < ? THEN 1 ELSE 0 END AS late FROM "
            "settlement_items WHERE municipality_id = ? AND settled_day = ?) AS x "
            "GROUP BY merchant_id, kind, source, late", (day, municipality, day)):
        _add(tallies.setdefault(str(m), _Tally()), str(kind), str(source), bool(late),
             int(amount))
    # refunds the float paid for a merchant come back from what this run would send it
    for got in receivables.recover(tx, day, municipality, {
            m: (t.gross - t.refunds + t.returned, t.gross) for m, t in tallies.items()},
            rules.fee, now):
        for r, won in got.days.items():
            tx.run("INSERT INTO settlement_items (municipality_id, transfer_id, merchant_id, "
                   "day, kind, source, amount, settled_day) VALUES (?, ?, ?, ?, 'refund', ?, "
                   "?, ?)", (municipality, got.transfer_ids[r], got.merchant_id, r,
                             receivables.SOURCE, won, day))
            _add(tallies[got.merchant_id], "refund", receivables.SOURCE, r < day, won)
    settlements = _decide(tx, day, municipality, tallies, rules, now)
    _release(tx, day, municipality,
             [s.merchant_id for s in settlements if s.status in (HELD, CARRIED)])
    _insert(tx, settlements)
    paid = [s for s in settlements if s.status == PENDING]
    tx.run("INSERT INTO settlement_runs (municipality_id, day, merchants, paid, gross, "
           "fees, net, held, carried, fee_rules, created_ms) VALUES "
           "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
           (municipality, day, len(settlements), len(paid), sum(s.gross for s in paid),
            sum(s.fees for s in paid), sum(s.net for s in paid),
            sum(s.status == HELD for s in settlements),
            sum(s.status == CARRIED for s in settlements),
            json.dumps(rules.as_dict(), sort_keys=True), now))


def _release(tx: Tx, day: str, municipality: str, merchants: Sequence[str]) -> None:
    """Held and carried settlements cover nothing: their transfers stay open."""
    if merchants:
        test, param = tx.any_of("merchant_id", merchants)
        tx.run("DELETE FROM settlement_items WHERE municipality_id = ? AND settled_day = ? "
               f"AND {test}", (municipality, day, param))


def _add(t: _Tally, kind: str, source: str, late: bool, amount: int) -> None:
    if kind == "returned":
        t.returned += amount
        return
    pocket = t.pockets.setdefault(source, [0, 0])
    if kind == "payment":
        t.gross += amount
        pocket[0] += amount
        t.late_gross += amount if late else 0
    else:
        t.refunds += amount
        pocket[1] += amount
        t.late_refunds += amount if late else 0


def _decide(tx: Tx, day: str, municipality: str, tallies: dict[str, _Tally],
            rules: FeeRules, now: int) -> list[Settlement]:
    ids = sorted(tallies)
    if not ids:
        return []
    test, param = tx.any_of("merchant_id", ids)
    registry = {str(r[0]): tuple(str(v) for v in r[1:]) for r in tx.all(
        "SELECT merchant_id, category, bank_code, account_no, account_holder, brn "
        f"FROM merchants WHERE municipality_id = ? AND {test}", (municipality, param))}
    test, param = tx.any_of("account_id", [books.merchant_payable(m) for m in ids])
    holds = {str(a): int(b) for a, b in tx.all(
        "SELECT account_id, credits_posted - debits_posted FROM book_accounts "
        f"WHERE municipality_id = ? AND {test}", (municipality, param))}
    out: list[Settlement] = []
    for m in ids:
        t = tallies[m]
        category, bank, account_no, holder, brn = registry.get(m, ("", "", "", "", ""))
        bp = rules.bp_for(category)
        fee = t.gross * bp // 10_000
        net = t.gross - t.refunds + t.returned - fee
        fees = split_fee(fee, {p: g for p, (g, _) in t.pockets.items()})
        by_pocket = {p: {"gross": g, "refunds": r, "fees": fees[p], "net": g - r - fees[p]}
                     for p, (g, r) in sorted(t.pockets.items())}
        if net <= 0:
            status, reason = CARRIED, "net of zero or less: carried to the next run"
        elif m not in registry:
            status, reason = HELD, "not in the merchant registry"
        elif not (bank and account_no and holder):
            status, reason = HELD, "no complete bank account (code, number, holder)"
        elif holds.get(books.merchant_payable(m), 0) < net + fee:
            # only a transfer outside settlement (a correction) can leave it short
            status, reason = HELD, (f"the payable holds {holds.get(books.merchant_payable(m), 0)}"
                                    f" won, {net + fee} won due")
        else:
            status, reason = PENDING, ""
        out.append(Settlement(
            m, day, t.gross, t.refunds, t.returned, fee, net, t.late_gross, t.late_refunds,
            bp, by_pocket, status, reason, bank, account_no, holder, brn, created_ms=now,
            municipality_id=municipality))
    return out


def _detail(day: str, **more: Any) -> str:
    return json.dumps({"day": day, **more}, sort_keys=True)


def _post_pending(store: Store, day: str, municipality: str, now: int) -> None:
    """Post the ``fee`` and ``settlement`` transfers of the day's pending settlements not
    posted yet, :data:`POST_CHUNK` merchants a transaction (refs make a repeat harmless).
    A payable that no longer holds what is due (a refund posted since the run decided) is
    held instead, covering nothing."""
    while True:
        with store.tx() as tx:
            _lock_runs(tx, municipality)
            rows = [_settlement(r) for r in tx.all(
                f"SELECT {', '.join(_SETTLEMENT_COLUMNS)} FROM settlements WHERE "
                "municipality_id = ? AND day = ? AND status = ? AND posted_ms IS NULL "
                "ORDER BY merchant_id LIMIT ?", (municipality, day, PENDING, POST_CHUNK))]
            if not rows:
                return
            payables = [books.merchant_payable(s.merchant_id) for s in rows]
            # held before they are read: a refund posted by another worker in between made
            # the books refuse the settlement's transfer and the whole run fail
            accounts.lock(tx, payables, municipality=municipality)
            test, param = tx.any_of("account_id", payables)
            holds = {str(a): int(b) for a, b in tx.all(
                "SELECT account_id, credits_posted - debits_posted FROM book_accounts "
                f"WHERE municipality_id = ? AND {test}", (municipality, param))}
            short = [s.merchant_id for s in rows
                     if holds.get(books.merchant_payable(s.merchant_id), 0) < s.net + s.fees]
            moves: list[books.Transfer] = []
            for s in rows:
                if s.merchant_id in short:
                    continue
                payable = books.merchant_payable(s.merchant_id)
                if s.fees:
                    moves.append(books.Transfer(payable, books.OPERATOR_FEES, s.fees, "fee",
                                                f"fee:{s.merchant_id}:{day}", _detail(day)))
                moves.append(books.Transfer(payable, books.SETTLEMENT_IN_TRANSIT, s.net,
                                            "settlement", f"settle:{s.merchant_id}:{day}",
                                            _detail(day)))
            if moves:
                for account in (books.OPERATOR_FEES, books.SETTLEMENT_IN_TRANSIT):
                    books.open_account(tx, account, municipality=municipality, at_ms=now)
                books.transfer(tx, moves, municipality=municipality, at_ms=now)
            if short:
                _release(tx, day, municipality, short)
                test, param = tx.any_of("merchant_id", short)
                tx.run(f"UPDATE settlements SET status = ?, reason = ? WHERE municipality_id = ? "
                       f"AND day = ? AND {test}",
                       (HELD, "the payable held less than due when posted", municipality,
                        day, param))
            # the chunk is every unposted pending settlement in its range of merchant ids
            # (the lock keeps it so): a range reads the key, a list of a thousand ids did not
            tx.run("UPDATE settlements SET posted_ms = ? WHERE municipality_id = ? AND "
                   "merchant_id >= ? AND merchant_id <= ? AND day = ? AND status = ? AND "
                   "posted_ms IS NULL", (now, municipality, rows[0].merchant_id,
                                         rows[-1].merchant_id, day, PENDING))


def _insert(tx: Tx, settlements: Sequence[Settlement]) -> None:
    # COPY on PostgreSQL: a city's day is tens of thousands of rows
    tx.bulk("settlements", _NEW_COLUMNS, [s._row() for s in settlements])


# -- after the run -----------------------------------------------------------------------------

def _run_of(tx: Tx, day: str, municipality: str) -> list[Settlement]:
    """The day's settlements, once the run has posted every transfer it decided."""
    if tx.one("SELECT 1 FROM settlement_runs WHERE municipality_id = ? AND day = ?",
              (municipality, day)) is None:
        raise TransactionError(f"day {day} has not been settled in {municipality}")
    rows = _read_run(tx, day, municipality)
    if any(s.status == PENDING and s.posted_ms is None for s in rows):
        raise TransactionError(f"the settlement of {day} stopped before posting every "
                               "transfer: run it again to finish")
    return rows


def mark_sent(store: Store, day: str, *, municipality: str = books.DEFAULT_MUNICIPALITY,
              now_ms: int | None = None) -> int:
    """The day's bank file was sent: ``pending`` -> ``sent``. The number of settlements
    moved (0 when they were sent already)."""
    day = parse_day(day)
    with store.tx() as tx:
        _lock_runs(tx, municipality)
        _run_of(tx, day, municipality)
        return tx.run("UPDATE settlements SET status = ?, sent_ms = ? WHERE municipality_id = ? "
                      "AND day = ? AND status = ?",
                      (SENT, _now(now_ms), municipality, day, PENDING))


def _pick(rows: Sequence[Settlement], merchant: str | None, day: str) -> list[Settlement]:
    if merchant is None:
        return list(rows)
    picked = [s for s in rows if s.merchant_id == merchant]
    if not picked:
        raise TransactionError(f"merchant {merchant} has no settlement of {day}")
    return picked


def confirm(store: Store, day: str, merchant: str | None = None, *,
            municipality: str = books.DEFAULT_MUNICIPALITY, now_ms: int | None = None
            ) -> list[Settlement]:
    """The bank paid: ``sent`` -> ``confirmed``, posting ``settlement_paid`` (in transit ->
    bank:outside). Every sent settlement of the day, or ``merchant``'s. Confirming again
    changes nothing; a settlement not sent yet, held, carried or returned is refused when
    named. The settlements confirmed now."""
    day = parse_day(day)
    now = _now(now_ms)
    with store.tx(write=False) as tx:
        rows = _pick(_run_of(tx, day, municipality), merchant, day)
    if merchant is not None and rows[0].status not in (SENT, CONFIRMED):
        raise TransactionError(f"settlement of {merchant} for {day} is {rows[0].status}, "
                               "not sent: only a sent settlement is confirmed")
    only, params = ("AND merchant_id = ?", [merchant]) if merchant is not None else ("", [])
    done: set[str] = set()
    while True:  # chunks, as the run posts (POST_CHUNK): each one whole, repeats harmless
        with store.tx() as tx:
            _lock_runs(tx, municipality)
            due = [(str(m), int(net)) for m, net in tx.all(
                "SELECT merchant_id, net FROM settlements WHERE municipality_id = ? AND "
                f"day = ? AND status = ? {only} ORDER BY merchant_id LIMIT ?",
                (municipality, day, SENT, *params, POST_CHUNK))]
            if not due:
                break
            books.open_account(tx, books.BANK_OUTSIDE, municipality=municipality, at_ms=now)
            books.transfer(tx, [books.Transfer(
                books.SETTLEMENT_IN_TRANSIT, books.BANK_OUTSIDE, net, "settlement_paid",
                f"paid:{m}:{day}", _detail(day)) for m, net in due],
                municipality=municipality, at_ms=now)
            # every sent settlement in the chunk's range of ids, as _post_pending does
            tx.run("UPDATE settlements SET status = ?, confirmed_ms = ? WHERE "
                   "municipality_id = ? AND merchant_id >= ? AND merchant_id <= ? AND day = ? "
                   "AND status = ?",
                   (CONFIRMED, now, municipality, due[0][0], due[-1][0], day, SENT))
            done.update(m for m, _ in due)
    if not done:
        return []
    with store.tx(write=False) as tx:
        return [s for s in _read_run(tx, day, municipality) if s.merchant_id in done]


def mark_returned(store: Store, day: str, merchant: str, reason: str, *,
                  municipality: str = books.DEFAULT_MUNICIPALITY, now_ms: int | None = None
                  ) -> Settlement:
    """The bank sent ``merchant``'s transfer back (closed account, wrong holder): ``sent`` ->
    ``returned``, posting ``settlement_returned`` (in transit -> the merchant's payable), so
    the money is owed again and the next run pays it. Returning again changes nothing."""
    day = parse_day(day)
    reason = " ".join(str(reason).split())
    if not reason:
        raise ConfigError("a returned settlement needs its reason (the bank's)")
    now = _now(now_ms)
    with store.tx() as tx:
        _lock_runs(tx, municipality)
        s = _pick(_run_of(tx, day, municipality), merchant, day)[0]
        if s.status == RETURNED:
            return s
        if s.status != SENT:
            raise TransactionError(f"settlement of {merchant} for {day} is {s.status}: only a "
                                   "sent settlement comes back from the bank")
        books.transfer(tx, [books.Transfer(
            books.SETTLEMENT_IN_TRANSIT, books.merchant_payable(merchant), s.net,
            "settlement_returned", f"returned:{merchant}:{day}",
            _detail(day, reason=reason))], municipality=municipality, at_ms=now)
        tx.run("UPDATE settlements SET status = ?, returned_ms = ?, reason = ? WHERE "
               "municipality_id = ? AND merchant_id = ? AND day = ? AND status = ?",
               (RETURNED, now, reason, municipality, merchant, day, SENT))
        return _pick(_read_run(tx, day, municipality), merchant, day)[0]


def settlements_of(store: Store, day: str, *, municipality: str = books.DEFAULT_MUNICIPALITY
                   ) -> SettlementRun:
    """The run of ``day`` as it stands now (TransactionError when it was not run)."""
    day = parse_day(day)
    with store.tx(write=False) as tx:
        return SettlementRun(day, municipality, _run_of(tx, day, municipality), True)


def runs(store: Store, *, municipality: str = books.DEFAULT_MUNICIPALITY
         ) -> list[dict[str, Any]]:
    """Every run, newest first: its figures and how many settlements are in each status."""
    with store.tx(write=False) as tx:
        heads = tx.all("SELECT day, merchants, paid, gross, fees, net, held, carried, "
                       "created_ms FROM settlement_runs WHERE municipality_id = ? "
                       "ORDER BY day DESC", (municipality,))
        counts = tx.all("SELECT day, status, COUNT(*), COALESCE(SUM(net), 0) FROM settlements "
                        "WHERE municipality_id = ? GROUP BY day, status", (municipality,))
    by_day: dict[str, dict[str, dict[str, int]]] = {}
    for d, st, n, net in counts:
        by_day.setdefault(str(d), {})[str(st)] = {"count": int(n), "net": int(net)}
    keys = ("day", "merchants", "paid", "gross", "fees", "net", "held", "carried", "created_ms")
    return [{**{k: (str(v) if k == "day" else int(v)) for k, v in zip(keys, r, strict=True)},
             "statuses": by_day.get(str(r[0]), {})} for r in heads]
