"""The central service's double-entry books, after TigerBeetle's accounts and transfers.

Money at central moves only as *transfers*: one transfer debits one account and credits
another by the same positive amount of won, so every transfer balances on its own and the sum
of all debits equals the sum of all credits, always. Each account keeps its posted totals
(``debits_posted``, ``credits_posted``); a balance is read **credit-normal**:
``credits_posted - debits_posted`` (money the account holds; the outside world's account is
negative by the money that came into the books).

Chart of accounts (ids are text; ``<...>`` parts may not contain ``:`` or spaces)::

    id                           kind       flags  holds
    bank:outside                 outside    -      the world outside the books (the city's
                                                   treasury, citizens' and merchants' banks);
                                                   goes negative by what came in
    programme:<p>:funding        funding    D<=C   what the city paid into programme p
    programme:<p>:subsidy        subsidy    D<=C   p's budget set aside for purchase discounts
    programme:<p>:points         points     D<=C   p's budget set aside for incentive points
    allowance:<p>                allowance  D<=C   p's budget set aside for allowances
    pocket:<account>:<pocket>    pocket     D<=C   a citizen's money, by pocket: ``cash``,
                                                   ``points``, or an allowance's programme
    merchant:<m>:payable         payable    D<=C   what the books owe merchant m
    receivable:<account>         receivable -      what a citizen owes the books: a payment
                                                   approved offline beyond what the pockets
                                                   held; goes negative by the debt
    settlement:in_transit        transit    D<=C   sent to merchants' banks, not yet confirmed
    operator:fees                fees       D<=C   fees taken from merchants

``D<=C`` is :data:`DEBITS_MUST_NOT_EXCEED_CREDITS` (nobody spends money they do not hold);
:data:`CREDITS_MUST_NOT_EXCEED_DEBITS` is its mirror, for accounts that only owe.

Codes (what a movement is; :data:`CODES`)::

    funding              bank:outside          -> programme:<p>:funding
    budget               programme:<p>:funding -> programme:<p>:subsidy | :points | allowance:<p>
    topup                bank:outside          -> pocket:<a>:cash
    subsidy              programme:<p>:subsidy -> pocket:<a>:cash   (the discount on a top-up)
    allowance_issue      allowance:<p>         -> pocket:<a>:<p>
    allowance_expiry     pocket:<a>:<p>        -> allowance:<p>
    points_payout        programme:<p>:points  -> pocket:<a>:points
    payment              pocket:<a>:<pocket>   -> merchant:<m>:payable
                         receivable:<a>        -> merchant:<m>:payable (the uncovered part)
    refund               merchant:<m>:payable  -> pocket:<a>:<pocket> | receivable:<a>
    fee                  merchant:<m>:payable  -> operator:fees
    settlement           merchant:<m>:payable  -> settlement:in_transit
    settlement_paid      settlement:in_transit -> bank:outside
    settlement_returned  settlement:in_transit -> merchant:<m>:payable
    cashout              pocket:<a>:cash       -> bank:outside
    correction           anywhere              -> anywhere (an operator's reversal)

Guarantees, held by the database itself and not only by this module:

- ``CHECK``: posted totals never negative; flags are none, ``D<=C`` or ``C<=D``; a ``D<=C``
  account never has more debits than credits (its mirror for ``C<=D``); a transfer's amount
  is positive and its two accounts differ; a reference is posted once per municipality
  (``UNIQUE``).
- Triggers (:data:`TRIGGERS`, per backend): inserting a transfer row posts it to both
  accounts' totals in the same statement and refuses an unknown account, so no transfer can be
  stored without its totals moving; transfer rows are never updated or deleted. Foreign keys
  say the same on PostgreSQL (SQLite enforces them only with ``PRAGMA foreign_keys``).
- :func:`check` recomputes every account's totals from the transfers (one aggregate query per
  side) and reports every disagreement: what someone who bypassed all of the above did.

Every row names its municipality (SCALING.md): the books balance within one municipality, and
a call of :func:`transfer` moves money within one.

Concurrency: :func:`transfer` locks the accounts it touches in sorted order (``SELECT ... FOR
UPDATE`` on PostgreSQL; SQLite's write transaction already holds its one lock), so concurrent
transfers over the same accounts neither deadlock nor lose an update.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from localpay.errors import BooksError, ConfigError

if TYPE_CHECKING:
    # types only: central.store may then import this module to make the schema
    from central.store import Store, Tx

DEBITS_MUST_NOT_EXCEED_CREDITS = 1 << 1
CREDITS_MUST_NOT_EXCEED_DEBITS = 1 << 2
#: the flags an account may carry (TigerBeetle's bit values, for whoever knows them)
FLAGS = DEBITS_MUST_NOT_EXCEED_CREDITS | CREDITS_MUST_NOT_EXCEED_DEBITS
DEFAULT_MUNICIPALITY = "default"
#: the largest posted total a BIGINT column holds
MAX_TOTAL = 2**63 - 1

#: kind -> the flags an account of that kind is opened with
KINDS: dict[str, int] = {
    "outside": 0,
    "funding": DEBITS_MUST_NOT_EXCEED_CREDITS,
    "subsidy": DEBITS_MUST_NOT_EXCEED_CREDITS,
    "points": DEBITS_MUST_NOT_EXCEED_CREDITS,
    "allowance": DEBITS_MUST_NOT_EXCEED_CREDITS,
    "pocket": DEBITS_MUST_NOT_EXCEED_CREDITS,
    "payable": DEBITS_MUST_NOT_EXCEED_CREDITS,
    # no flag: a debt has no floor, and what it may reach is the payments' business
    "receivable": 0,
    "transit": DEBITS_MUST_NOT_EXCEED_CREDITS,
    "fees": DEBITS_MUST_NOT_EXCEED_CREDITS,
}

CODES = frozenset({
    "funding", "budget", "topup", "subsidy", "allowance_issue", "allowance_expiry",
    "points_payout", "payment", "refund", "fee", "settlement", "settlement_paid",
    "settlement_returned", "cashout", "correction",
})

TABLES = """
CREATE TABLE IF NOT EXISTS book_accounts (
    municipality_id TEXT NOT NULL DEFAULT 'default', account_id TEXT NOT NULL,
    kind TEXT NOT NULL, flags BIGINT NOT NULL DEFAULT 0,
    debits_posted BIGINT NOT NULL DEFAULT 0, credits_posted BIGINT NOT NULL DEFAULT 0,
    opened_ms BIGINT NOT NULL,
    PRIMARY KEY (municipality_id, account_id),
    CONSTRAINT book_accounts_flags CHECK (flags IN (0, 2, 4)),
    CONSTRAINT book_accounts_debits_positive CHECK (debits_posted >= 0),
    CONSTRAINT book_accounts_credits_positive CHECK (credits_posted >= 0),
    CONSTRAINT book_accounts_debits_within_credits
        CHECK ((flags & 2) = 0 OR debits_posted <= credits_posted),
    CONSTRAINT book_accounts_credits_within_debits
        CHECK ((flags & 4) = 0 OR credits_posted <= debits_posted));
CREATE TABLE IF NOT EXISTS book_transfers (
    municipality_id TEXT NOT NULL DEFAULT 'default', transfer_id TEXT NOT NULL,
    debit_account TEXT NOT NULL, credit_account TEXT NOT NULL,
    amount BIGINT NOT NULL, code TEXT NOT NULL, ref TEXT NOT NULL, at_ms BIGINT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (municipality_id, transfer_id),
    CONSTRAINT book_transfers_ref UNIQUE (municipality_id, ref),
    CONSTRAINT book_transfers_amount_positive CHECK (amount > 0),
    CONSTRAINT book_transfers_two_accounts CHECK (debit_account <> credit_account),
    CONSTRAINT book_transfers_debit_account FOREIGN KEY (municipality_id, debit_account)
        REFERENCES book_accounts (municipality_id, account_id),
    CONSTRAINT book_transfers_credit_account FOREIGN KEY (municipality_id, credit_account)
        REFERENCES book_accounts (municipality_id, account_id));
CREATE INDEX IF NOT EXISTS book_transfers_debit
    ON book_transfers (municipality_id, debit_account, at_ms, amount);
CREATE INDEX IF NOT EXISTS book_transfers_credit
    ON book_transfers (municipality_id, credit_account, at_ms, amount)
"""

# The indexes carry the amount so that check() sums each side from the index alone (SQLite:
# a million transfers in a tenth of the time of reading the table row by row).

_SQLITE_TRIGGERS = (
    "DROP TRIGGER IF EXISTS book_transfers_post",
    # An AFTER trigger: the row's own CHECKs have passed, and a failing account CHECK in
    # the UPDATEs aborts the INSERT with it.
    """CREATE TRIGGER book_transfers_post AFTER INSERT ON book_transfers
    BEGIN
        SELECT RAISE(ABORT, 'book transfer names an unknown account')
        WHERE NOT EXISTS (SELECT 1 FROM book_accounts WHERE municipality_id = NEW.municipality_id
                          AND account_id = NEW.debit_account)
           OR NOT EXISTS (SELECT 1 FROM book_accounts WHERE municipality_id = NEW.municipality_id
                          AND account_id = NEW.credit_account);
        UPDATE book_accounts SET debits_posted = debits_posted + NEW.amount
        WHERE municipality_id = NEW.municipality_id AND account_id = NEW.debit_account;
        UPDATE book_accounts SET credits_posted = credits_posted + NEW.amount
        WHERE municipality_id = NEW.municipality_id AND account_id = NEW.credit_account;
    END""",
    "DROP TRIGGER IF EXISTS book_transfers_no_update",
    """CREATE TRIGGER book_transfers_no_update BEFORE UPDATE ON book_transfers
    BEGIN SELECT RAISE(ABORT, 'book transfers are append-only'); END""",
    "DROP TRIGGER IF EXISTS book_transfers_no_delete",
    """CREATE TRIGGER book_transfers_no_delete BEFORE DELETE ON book_transfers
    BEGIN SELECT RAISE(ABORT, 'book transfers are append-only'); END""",
    "DROP TRIGGER IF EXISTS book_accounts_no_delete",
    # what the foreign keys would refuse, were they on
    """CREATE TRIGGER book_accounts_no_delete BEFORE DELETE ON book_accounts
    WHEN OLD.debits_posted <> 0 OR OLD.credits_posted <> 0 OR EXISTS (
        SELECT 1 FROM book_transfers WHERE municipality_id = OLD.municipality_id
        AND (debit_account = OLD.account_id OR credit_account = OLD.account_id))
    BEGIN SELECT RAISE(ABORT, 'a book account with transfers is never deleted'); END""",
)

_PG_TRIGGERS = (
    # errcodes of class 23 (integrity): callers see one kind of refusal from the database
    """CREATE OR REPLACE FUNCTION book_transfers_post() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE book_accounts SET debits_posted = debits_posted + NEW.amount
        WHERE municipality_id = NEW.municipality_id AND account_id = NEW.debit_account;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
                MESSAGE = 'book transfer names an unknown account ' || NEW.debit_account;
        END IF;
        UPDATE book_accounts SET credits_posted = credits_posted + NEW.amount
        WHERE municipality_id = NEW.municipality_id AND account_id = NEW.credit_account;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
                MESSAGE = 'book transfer names an unknown account ' || NEW.credit_account;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE OR REPLACE TRIGGER book_transfers_post AFTER INSERT ON book_transfers
    FOR EACH ROW EXECUTE FUNCTION book_transfers_post()""",
    """CREATE OR REPLACE FUNCTION book_transfers_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION USING ERRCODE = 'integrity_constraint_violation',
            MESSAGE = 'book transfers are append-only';
    END $$""",
    """CREATE OR REPLACE TRIGGER book_transfers_frozen BEFORE UPDATE OR DELETE
    ON book_transfers FOR EACH ROW EXECUTE FUNCTION book_transfers_frozen()""",
    """CREATE OR REPLACE TRIGGER book_transfers_no_truncate BEFORE TRUNCATE
    ON book_transfers FOR EACH STATEMENT EXECUTE FUNCTION book_transfers_frozen()""",
)

#: backend kind -> the statements (each whole, not split on ``;``) that make the triggers
TRIGGERS: dict[str, tuple[str, ...]] = {"sqlite": _SQLITE_TRIGGERS,
                                        "postgresql": _PG_TRIGGERS}

# Several workers starting at once would race on CREATE OR REPLACE FUNCTION.
_SCHEMA_LOCK = 0x6C70626F6F6B73  # "lpbooks"

_CODE_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")
_PART_RE = re.compile(r"[^\s:]{1,100}")
_ID_RE = re.compile(r"\S{1,300}")
_MUNICIPALITY_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def schema_statements(kind: str) -> list[str]:
    """The statements that make the books on a store of ``kind`` (``sqlite``,
    ``postgresql``), in order, each safe to run again: for a caller's own transaction."""
    tables = [s for s in TABLES.split(";") if s.strip()]
    return [*tables, *TRIGGERS[kind]]


def ensure_schema(store: Store) -> None:
    """Make the books' tables, indexes and triggers if missing (safe to run again), in a
    transaction of its own."""
    with store.tx() as tx:
        if store.kind == "postgresql":
            tx.one("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
        for statement in schema_statements(store.kind):
            tx.run(statement)


# -- the chart -------------------------------------------------------------------------------

def _part(value: str, what: str) -> str:
    if not isinstance(value, str) or not _PART_RE.fullmatch(value):
        raise BooksError(f"{what} {value!r}: 1 to 100 characters, no ':' and no spaces")
    return value


BANK_OUTSIDE = "bank:outside"
SETTLEMENT_IN_TRANSIT = "settlement:in_transit"
OPERATOR_FEES = "operator:fees"


def programme_funding(programme: str) -> str:
    return f"programme:{_part(programme, 'programme')}:funding"


def programme_subsidy(programme: str) -> str:
    return f"programme:{_part(programme, 'programme')}:subsidy"


def programme_points(programme: str) -> str:
    return f"programme:{_part(programme, 'programme')}:points"


def allowance(programme: str) -> str:
    return f"allowance:{_part(programme, 'programme')}"


def pocket(account: str, name: str = "cash") -> str:
    """A citizen's pocket: ``cash``, ``points``, or an allowance's programme id."""
    return f"pocket:{_part(account, 'account')}:{_part(name, 'pocket')}"


def merchant_payable(merchant: str) -> str:
    return f"merchant:{_part(merchant, 'merchant')}:payable"


def receivable(account: str) -> str:
    """What citizen ``account`` owes the books (debited by offline overdrafts)."""
    return f"receivable:{_part(account, 'account')}"


_CHART = (
    (re.compile(r"bank:outside"), "outside"),
    (re.compile(r"programme:[^\s:]+:funding"), "funding"),
    (re.compile(r"programme:[^\s:]+:subsidy"), "subsidy"),
    (re.compile(r"programme:[^\s:]+:points"), "points"),
    (re.compile(r"allowance:[^\s:]+"), "allowance"),
    (re.compile(r"pocket:[^\s:]+:[^\s:]+"), "pocket"),
    (re.compile(r"merchant:[^\s:]+:payable"), "payable"),
    (re.compile(r"receivable:[^\s:]+"), "receivable"),
    (re.compile(r"settlement:in_transit"), "transit"),
    (re.compile(r"operator:fees"), "fees"),
)


def kind_of(account_id: str) -> str | None:
    """The chart's kind for ``account_id``, or None for an id outside the chart."""
    for pattern, kind in _CHART:
        if pattern.fullmatch(account_id):
            return kind
    return None


# -- accounts ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Account:
    municipality: str
    account_id: str
    kind: str
    flags: int
    debits_posted: int
    credits_posted: int
    opened_ms: int

    @property
    def balance(self) -> int:
        """Credit-normal: credits - debits."""
        return self.credits_posted - self.debits_posted


_ACCOUNT_COLUMNS = ("municipality_id, account_id, kind, flags, debits_posted, credits_posted, "
                    "opened_ms")


def _account(row: Sequence[Any]) -> Account:
    return Account(str(row[0]), str(row[1]), str(row[2]), int(row[3]), int(row[4]),
                   int(row[5]), int(row[6]))


def _ms(at_ms: int | None) -> int:
    """``at_ms``, or now when None."""
    if at_ms is None:
        return time.time_ns() // 1_000_000
    if isinstance(at_ms, bool) or not isinstance(at_ms, int) or at_ms < 0:
        raise BooksError(f"at_ms {at_ms!r} is not a time in ms")
    return at_ms


def _municipality(value: str) -> str:
    if not isinstance(value, str) or not _MUNICIPALITY_RE.fullmatch(value):
        raise BooksError(f"municipality {value!r}: 1 to 64 letters, digits, '_', '.' or '-'")
    return value


def _account_id(value: object, what: str = "account") -> str:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise BooksError(f"{what} {value!r}: 1 to 300 characters, no spaces")
    return value


def open_account(tx: Tx, account_id: str, kind: str | None = None, *, flags: int | None = None,
                 municipality: str = DEFAULT_MUNICIPALITY, at_ms: int | None = None) -> Account:
    """Open ``account_id``, or return it when it is already open with the same kind and flags.

    ``kind`` and ``flags`` default to the chart's (:func:`kind_of`, :data:`KINDS`); an id
    outside the chart needs both. Opening it again with another kind or flags is refused.
    """
    _municipality(municipality)
    _account_id(account_id)
    if kind is None:
        kind = kind_of(account_id)
        if kind is None:
            raise BooksError(f"account {account_id!r} is not in the chart: name its kind "
                             "and flags")
    if not isinstance(kind, str) or not _CODE_RE.fullmatch(kind):
        raise BooksError(f"account kind {kind!r}: a lowercase word")
    if flags is None:
        if kind not in KINDS:
            raise BooksError(f"account kind {kind!r} has no usual flags: name them")
        flags = KINDS[kind]
    if isinstance(flags, bool) or not isinstance(flags, int) or flags & ~FLAGS or flags == FLAGS:
        raise BooksError(f"account flags {flags!r}: DEBITS_MUST_NOT_EXCEED_CREDITS or "
                         "CREDITS_MUST_NOT_EXCEED_DEBITS or neither, not both")
    opened = _ms(at_ms)
    tx.run("INSERT INTO book_accounts (municipality_id, account_id, kind, flags, opened_ms) "
           "VALUES (?, ?, ?, ?, ?) ON CONFLICT (municipality_id, account_id) DO NOTHING",
           (municipality, account_id, kind, flags, opened))
    got = get_account(tx, account_id, municipality=municipality)
    if (got.kind, got.flags) != (kind, flags):
        raise BooksError(f"account {account_id} is open as {got.kind} with flags {got.flags}, "
                         f"not {kind} with flags {flags}")
    return got


def find_account(tx: Tx, account_id: str, *,
                 municipality: str = DEFAULT_MUNICIPALITY) -> Account | None:
    row = tx.one(f"SELECT {_ACCOUNT_COLUMNS} FROM book_accounts "
                 "WHERE municipality_id = ? AND account_id = ?", (municipality, account_id))
    return None if row is None else _account(row)


def get_account(tx: Tx, account_id: str, *,
                municipality: str = DEFAULT_MUNICIPALITY) -> Account:
    """The account, or BooksError when it is not open."""
    found = find_account(tx, account_id, municipality=municipality)
    if found is None:
        raise BooksError(f"unknown account {account_id} in municipality {municipality}")
    return found


def balance(tx: Tx, account_id: str, *, municipality: str = DEFAULT_MUNICIPALITY) -> int:
    """Credit-normal balance, ``credits_posted - debits_posted``: what a pocket, payable or
    budget holds; ``bank:outside`` is minus the money that came into the books."""
    return get_account(tx, account_id, municipality=municipality).balance


# -- transfers ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Transfer:
    """A movement of ``amount`` won from ``debit`` to ``credit``; ``ref`` is the caller's
    idempotency reference (unique within the municipality)."""

    debit: str
    credit: str
    amount: int
    code: str
    ref: str
    detail: str = ""

    def same_as(self, other: Transfer | Posted) -> bool:
        """Would a second posting of this ref be a repeat (same accounts, amount, code)?"""
        return (self.debit, self.credit, self.amount, self.code) == \
            (other.debit, other.credit, other.amount, other.code)


@dataclass(frozen=True)
class Posted:
    """A transfer as the books hold it. From :func:`transfer`, ``fresh`` is False when the
    ref had already been posted and this is that earlier posting, returned again; rows read
    back (:func:`transfers_of`) are never fresh."""

    municipality: str
    transfer_id: str
    debit: str
    credit: str
    amount: int
    code: str
    ref: str
    at_ms: int
    detail: str
    fresh: bool = True


_TRANSFER_COLUMNS = ("municipality_id", "transfer_id", "debit_account", "credit_account",
                     "amount", "code", "ref", "at_ms", "detail")


def _validate(t: object) -> Transfer:
    if not isinstance(t, Transfer):
        raise BooksError(f"not a Transfer: {t!r}")
    if not isinstance(t.ref, str) or not _ID_RE.fullmatch(t.ref):
        raise BooksError(f"transfer ref {t.ref!r}: 1 to 300 characters, no spaces")
    what = f"transfer {t.ref}"
    _account_id(t.debit, f"{what}: debit account")
    _account_id(t.credit, f"{what}: credit account")
    if t.debit == t.credit:
        raise BooksError(f"{what}: debits and credits the same account {t.debit}")
    # bool is an int to Python: True would post 1 won
    if isinstance(t.amount, bool) or not isinstance(t.amount, int):
        raise BooksError(f"{what}: amount {t.amount!r} is not a whole number of won")
    if not 0 < t.amount <= MAX_TOTAL:
        raise BooksError(f"{what}: amount {t.amount} won is not between 1 and {MAX_TOTAL}")
    if not isinstance(t.code, str) or t.code not in CODES:
        raise BooksError(f"{what}: unknown code {t.code!r} (known: {', '.join(sorted(CODES))})")
    if not isinstance(t.detail, str):
        raise BooksError(f"{what}: detail {t.detail!r} is not text")
    return t


def _posted(row: Sequence[Any], fresh: bool) -> Posted:
    return Posted(str(row[0]), str(row[1]), str(row[2]), str(row[3]), int(row[4]), str(row[5]),
                  str(row[6]), int(row[7]), str(row[8]), fresh)


def _new_ids(count: int, at_ms: int) -> list[str]:
    """Ids that sort by time and, within one call, in the order given: 48 bits of the time in
    ms, then a random 80-bit number counting up."""
    base = secrets.randbits(76)
    return [f"{at_ms & 0xFFFF_FFFF_FFFF:012x}{base + n:020x}" for n in range(count)]


def _refused_by_database(err: BaseException) -> bool:
    """A constraint or trigger refused the write (class 23), as against a lost connection."""
    if isinstance(err, sqlite3.IntegrityError):
        return True
    return str(getattr(err, "sqlstate", "") or "").startswith("23")


class _RaceLost(Exception):
    """The database refused a write that our checks had passed."""


def transfer(tx: Tx, transfers: Sequence[Transfer], *,
             municipality: str = DEFAULT_MUNICIPALITY, at_ms: int | None = None
             ) -> list[Posted]:
    """Post ``transfers`` in order, all or none, inside the caller's transaction ``tx``.

    Returns one :class:`Posted` per transfer given. A ref already posted (before, or earlier
    in the same call) with the same accounts, amount and code returns that posting
    (``fresh=False``) and posts nothing; the same ref with other details, an unknown account,
    an amount that is not a positive whole number of won, one account on both sides, an
    unknown code, or an account that would break its flags raises :class:`BooksError` and
    writes nothing of the whole call. Each transfer sees the ones before it: a top-up earlier
    in the list pays for a payment later in it.
    """
    _municipality(municipality)
    items = [_validate(t) for t in transfers]
    if not items:
        return []
    when = _ms(at_ms)
    first: dict[str, Transfer] = {}
    for t in items:
        earlier = first.setdefault(t.ref, t)
        if not earlier.same_as(t):
            raise BooksError(f"transfer ref {t.ref} is given twice with other details")
    try:
        return _post(tx, items, first, municipality, when)
    except _RaceLost:
        # A concurrent posting of the same ref fails our insert on UNIQUE once it commits;
        # looking again finds it and answers as a repeat.
        pass
    try:
        return _post(tx, items, first, municipality, when)
    except _RaceLost as err:
        raise BooksError(f"the database refused the transfers: {err}") from err


def _post(tx: Tx, items: list[Transfer], first: dict[str, Transfer], municipality: str,
          when: int) -> list[Posted]:
    refs = list(first)
    clause, param = tx.any_of("ref", refs)
    known = {p.ref: p for p in (_posted(r, False) for r in tx.all(
        f"SELECT {', '.join(_TRANSFER_COLUMNS)} FROM book_transfers "
        f"WHERE municipality_id = ? AND {clause}", (municipality, param)))}
    for ref, p in known.items():
        if not first[ref].same_as(p):
            raise BooksError(
                f"transfer ref {ref} was posted as {p.amount} won {p.code} from {p.debit} to "
                f"{p.credit}; it is now given as {first[ref].amount} won {first[ref].code} "
                f"from {first[ref].debit} to {first[ref].credit}")
    new = [t for t in first.values() if t.ref not in known]
    if new:
        totals = _lock(tx, new, municipality)
        _apply(totals, new)
        ids = _new_ids(len(new), when)
        rows = [(municipality, i, t.debit, t.credit, t.amount, t.code, t.ref, when, t.detail)
                for i, t in zip(ids, new, strict=True)]
        _insert(tx, rows)
        known.update((r[6], _posted(r, True)) for r in rows)
    out: list[Posted] = []
    seen: set[str] = set()
    for t in items:
        p = known[t.ref]
        # a ref given twice in one call posts once; the second answer is a repeat
        out.append(p if t.ref not in seen else replace(p, fresh=False))
        seen.add(t.ref)
    return out


def _lock(tx: Tx, new: list[Transfer], municipality: str) -> dict[str, list[int]]:
    """Lock the accounts of ``new`` in sorted order: account id -> [flags, debits, credits]."""
    totals: dict[str, list[int]] = {}
    for account_id in sorted({a for t in new for a in (t.debit, t.credit)}):
        row = tx.one_for_update(
            "SELECT flags, debits_posted, credits_posted FROM book_accounts "
            "WHERE municipality_id = ? AND account_id = ?", (municipality, account_id))
        if row is None:
            ref = next(t.ref for t in new if account_id in (t.debit, t.credit))
            raise BooksError(f"transfer {ref}: unknown account {account_id} in municipality "
                             f"{municipality}")
        totals[account_id] = [int(row[0]), int(row[1]), int(row[2])]
    return totals


def _apply(totals: dict[str, list[int]], new: list[Transfer]) -> None:
    """Post ``new`` to ``totals`` in order, refusing the first that breaks a rule."""
    for t in new:
        d_flags, d_debits, d_credits = totals[t.debit]
        c_flags, c_debits, c_credits = totals[t.credit]
        if d_debits + t.amount > MAX_TOTAL or c_credits + t.amount > MAX_TOTAL:
            raise BooksError(f"transfer {t.ref}: posted totals would pass {MAX_TOTAL}")
        if d_flags & DEBITS_MUST_NOT_EXCEED_CREDITS and d_debits + t.amount > d_credits:
            raise BooksError(f"transfer {t.ref}: {t.debit} holds {d_credits - d_debits:,} won, "
                             f"{t.amount:,} won asked ({t.code})")
        if c_flags & CREDITS_MUST_NOT_EXCEED_DEBITS and c_credits + t.amount > c_debits:
            raise BooksError(f"transfer {t.ref}: {t.credit} may take {c_debits - c_credits:,} "
                             f"won more, {t.amount:,} won given ({t.code})")
        totals[t.debit][1] += t.amount
        totals[t.credit][2] += t.amount


def _insert(tx: Tx, rows: list[tuple[Any, ...]]) -> None:
    """Insert the rows (the trigger posts them), undoing all of them if the database refuses
    one: the caller's transaction stays usable and holds nothing of this call."""
    tx.run("SAVEPOINT book_transfer")
    try:
        tx.many(f"INSERT INTO book_transfers ({', '.join(_TRANSFER_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_TRANSFER_COLUMNS))})", rows)
    except Exception as err:
        if not _refused_by_database(err):
            raise
        tx.run("ROLLBACK TO SAVEPOINT book_transfer")
        tx.run("RELEASE SAVEPOINT book_transfer")
        raise _RaceLost(str(err)) from err
    tx.run("RELEASE SAVEPOINT book_transfer")


def fund_budget(store: Store, programme: str, budget: str, amount: int, ref: str, ref_kind: str,
                *, municipality: str = DEFAULT_MUNICIPALITY,
                at_ms: int | None = None) -> tuple[bool, int]:
    """Put ``amount`` won of the city's money into a programme's ``budget`` account:
    ``bank:outside`` -> ``programme:<p>:funding`` (``funding``) -> ``budget`` (``budget``),
    refs ``<ref_kind>-funding:<p>:<ref>`` and ``<ref_kind>-budget:<p>:<ref>``. Idempotent on
    ``ref``. Returns whether it moved anything and the budget's balance after."""
    if not isinstance(ref, str) or not re.fullmatch(r"[^\s:]{1,100}", ref):
        raise ConfigError(f"funding ref {ref!r}: 1 to 100 characters, no ':' and no spaces")
    funding = programme_funding(programme)
    with store.tx() as tx:
        for account_id in (BANK_OUTSIDE, funding, budget):
            open_account(tx, account_id, municipality=municipality, at_ms=at_ms)
        posted = transfer(tx, [
            Transfer(BANK_OUTSIDE, funding, amount, "funding",
                     f"{ref_kind}-funding:{programme}:{ref}"),
            Transfer(funding, budget, amount, "budget", f"{ref_kind}-budget:{programme}:{ref}")],
            municipality=municipality, at_ms=at_ms)
        held = balance(tx, budget, municipality=municipality)
    return posted[0].fresh, held


def transfers_of(tx: Tx, account_id: str, *, municipality: str = DEFAULT_MUNICIPALITY,
                 limit: int = 100) -> list[Posted]:
    """The latest ``limit`` transfers that touch ``account_id``, newest first."""
    cols = ", ".join(_TRANSFER_COLUMNS)
    rows = tx.all(
        f"SELECT {cols} FROM (SELECT {cols} FROM book_transfers WHERE municipality_id = ? "
        "AND debit_account = ? UNION ALL "
        f"SELECT {cols} FROM book_transfers WHERE municipality_id = ? AND credit_account = ?) "
        "AS t ORDER BY at_ms DESC, transfer_id DESC LIMIT ?",
        (municipality, account_id, municipality, account_id, limit))
    return [_posted(r, False) for r in rows]


# -- proof -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Disagreement:
    """An account whose posted totals are not the sums of its transfers. ``debits_posted``
    is None for an account that transfers name but that is not open."""

    municipality: str
    account_id: str
    debits_posted: int | None
    credits_posted: int | None
    debits_of_transfers: int
    credits_of_transfers: int


@dataclass(frozen=True)
class BooksCheck:
    """What :func:`check` found. ``balanced``: the accounts' debits equal their credits and
    the transfers' amounts, within each municipality, and every account agrees with its
    transfers."""

    municipality: str | None
    accounts: int
    transfers: int
    transfers_amount: int
    debits_posted: int
    credits_posted: int
    disagreements: tuple[Disagreement, ...] = ()
    #: municipalities whose accounts' debits and credits differ
    unbalanced: tuple[str, ...] = ()

    @property
    def balanced(self) -> bool:
        return (self.debits_posted == self.credits_posted == self.transfers_amount
                and not self.disagreements and not self.unbalanced)

    def as_json(self) -> dict[str, Any]:
        return {"municipality": self.municipality, "balanced": self.balanced,
                "accounts": self.accounts, "transfers": self.transfers,
                "transfers_amount": self.transfers_amount,
                "debits_posted": self.debits_posted, "credits_posted": self.credits_posted,
                "unbalanced": list(self.unbalanced),
                "disagreements": [d.__dict__ for d in self.disagreements]}


def check(store: Store, municipality: str | None = None) -> BooksCheck:
    """Prove the books: all debits equal all credits, and every account's posted totals are
    the sums of its transfers (recomputed with GROUP BY: one aggregate query per side over
    the transfers, not a query per account). ``municipality`` None checks them all, each on
    its own. Reads one snapshot, so transfers posted meanwhile do not show as disagreements.
    """
    where, params = ("WHERE municipality_id = ?", [municipality]) if municipality else ("", [])
    with store.tx(write=False) as tx:
        if store.kind == "postgresql":
            # each statement below must see the same transfers
            tx.run("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        accounts, debits, credits = _ints(tx.one(
            "SELECT COUNT(*), COALESCE(SUM(debits_posted), 0), COALESCE(SUM(credits_posted), 0) "
            f"FROM book_accounts {where}", params))
        count, amount = _ints(tx.one(
            f"SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM book_transfers {where}", params))
        unbalanced = tuple(str(r[0]) for r in tx.all(
            f"SELECT municipality_id FROM book_accounts {where} GROUP BY municipality_id "
            "HAVING SUM(debits_posted) <> SUM(credits_posted) ORDER BY municipality_id",
            params))
        rows = tx.all(
            "SELECT m, a, SUM(dp), SUM(cp), SUM(dt), SUM(ct), SUM(n) FROM ("
            "SELECT municipality_id AS m, account_id AS a, debits_posted AS dp, "
            f"credits_posted AS cp, 0 AS dt, 0 AS ct, 1 AS n FROM book_accounts {where} "
            "UNION ALL SELECT municipality_id, debit_account, 0, 0, SUM(amount), 0, 0 "
            f"FROM book_transfers {where} GROUP BY municipality_id, debit_account "
            "UNION ALL SELECT municipality_id, credit_account, 0, 0, 0, SUM(amount), 0 "
            f"FROM book_transfers {where} GROUP BY municipality_id, credit_account"
            ") AS u GROUP BY m, a "
            "HAVING SUM(dp) <> SUM(dt) OR SUM(cp) <> SUM(ct) OR SUM(n) = 0 ORDER BY m, a",
            params * 3)
    disagreements = tuple(
        Disagreement(str(r[0]), str(r[1]), int(r[2]) if int(r[6]) else None,
                     int(r[3]) if int(r[6]) else None, int(r[4]), int(r[5])) for r in rows)
    return BooksCheck(municipality, accounts, count, amount, debits, credits, disagreements,
                      unbalanced)


def _ints(row: Sequence[Any] | None) -> list[int]:
    # PostgreSQL's SUM of BIGINT is NUMERIC (a Decimal here): whole, never a float
    return [int(v) for v in row or ()]
