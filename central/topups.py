"""Buying local currency at a discount: the citizen pays the price, the programme's subsidy
pays the discount, and the citizen's cash pocket receives the face value.

A top-up of face value ``F`` under terms of ``d`` percent posts, in one transaction, two
transfers of the books (:mod:`central.books`)::

    bank:outside           -> pocket:<account>:cash   price     (code topup)
    programme:<p>:subsidy  -> pocket:<account>:cash   discount  (code subsidy; none when 0)

with ``discount = F * d // 100`` and ``price = F - discount``. The discount is rounded
*down* to the won (KRW has no minor unit): the citizen never pays less than the rule says,
and the programme never pays more than its percentage; at worst the citizen pays 1 won more
than the exact figure (5 % of 9,999 won is 499.95: the discount is 499, the price 9,500).
The subsidy account must hold the discount (the books refuse overdrafts): the city funds it
with :func:`fund_subsidy` (``bank:outside -> programme:<p>:funding -> programme:<p>:subsidy``).

Each account may buy at most ``monthly_limit`` won of face value per calendar month in the
service's time zone (Asia/Seoul), over every partner that sells it.

Everything is within one municipality (SCALING.md): its accounts, its books (so its own
``programme:<p>:subsidy``), its monthly sums. A partner belongs to one municipality (fixed
when it is added) and credits only that municipality's accounts: an account, card or wallet
of another is answered exactly as one that exists nowhere. Partner names are unique on the
platform, so a key ``<name>.<secret>`` names its partner and through it the municipality.
The terms (:class:`TopupTerms`) are per municipality: a terms file's ``[topup]`` table is
shared by every municipality without a ``[topup.<id>]`` table of its own.

Partners are who sells it: the issuing bank, the city's app, or the city's own staff at a
counter (partner ``staff``, the command line). A partner calls ``POST /v1/topups`` with its
key (:func:`add_partner`, shown once; only its SHA-256 is kept) and its own reference for
the sale: the same ``(partner, reference)`` again answers the first result and moves
nothing, so a partner that lost an answer simply asks again; the same reference with other
details is refused.

Refusals, inside the one error tree (:mod:`localpay.errors`)::

    BooksError
    └── TopupError                        a top-up or partner key refused
        ├── TopupInvalidError (ValueError)    malformed amount, reference or partner
        ├── UnknownAccountError (LookupError) names no account, card or wallet linked to one
        ├── PaidMismatchError                 the partner charged other than the price
        ├── MonthlyLimitError                 over the account's monthly limit
        ├── SubsidyExhaustedError             the programme's subsidy cannot pay the discount
        ├── ReferenceReusedError              the reference was used with other details
        └── PartnerAuthError (PermissionError) unknown or inactive partner key
"""

from __future__ import annotations

import dataclasses
import re
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from central import accounts, books, municipalities, partner_keys
from localpay.errors import BooksError, ConfigError

if TYPE_CHECKING:  # the store imports this module for its tables
    from central.store import Store, Tx

TABLES = """
CREATE TABLE IF NOT EXISTS topups (
    municipality_id TEXT NOT NULL DEFAULT 'default', partner TEXT NOT NULL, ref TEXT NOT NULL,
    holder TEXT NOT NULL, account_id TEXT NOT NULL, face BIGINT NOT NULL,
    price BIGINT NOT NULL, discount BIGINT NOT NULL, programme TEXT NOT NULL,
    month TEXT NOT NULL, at_ms BIGINT NOT NULL, cash_after BIGINT NOT NULL,
    PRIMARY KEY (municipality_id, partner, ref),
    CONSTRAINT topups_amounts CHECK (price > 0 AND discount >= 0 AND face = price + discount));
CREATE INDEX IF NOT EXISTS topups_account_month ON topups (municipality_id, account_id, month,
    face);
CREATE TABLE IF NOT EXISTS partners (
    municipality_id TEXT NOT NULL DEFAULT 'default', partner_id TEXT NOT NULL,
    key_hash TEXT NOT NULL, created_ms BIGINT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    PRIMARY KEY (municipality_id, partner_id));
-- a key names its partner, and the partner its municipality: one name on the platform
CREATE UNIQUE INDEX IF NOT EXISTS partners_name ON partners (partner_id)
"""

#: the service's time zone: months of the limit are its calendar months. Not imported from
#: central.service, which imports the store, which imports this module for its tables.
TZ = ZoneInfo("Asia/Seoul")
#: the partner name of top-ups made by the city's staff (``localpay central topup run``)
STAFF = "staff"
MAX_DISCOUNT_PERCENT = 50
#: a trillion won: far above any programme, far below the books' BIGINT totals
MAX_WON = 10**12

#: a partner's reference: printable ASCII without spaces (it goes into the books' refs)
_REF_RE = re.compile(r"[!-~]{1,128}")
#: a partner id: no '.', which separates it from the secret in its key
_PARTNER_RE = partner_keys.NAME_RE
_TERMS_KEYS = ("programme", "discount_percent", "monthly_limit")


class TopupError(BooksError):
    """A top-up, or a partner's key, refused."""


class TopupInvalidError(TopupError, ValueError):
    """A malformed face value, payment, reference or partner name."""


class UnknownAccountError(TopupError, LookupError):
    """The top-up names no account, nor a card or wallet linked to one."""


class PaidMismatchError(TopupError):
    """The partner says it charged other than the price."""


class MonthlyLimitError(TopupError):
    """The top-up would take the account over its monthly limit."""


class SubsidyExhaustedError(TopupError):
    """The programme's subsidy account cannot pay the discount."""


class ReferenceReusedError(TopupError):
    """The partner's reference was used before with other details."""


class PartnerAuthError(TopupError, PermissionError):
    """An unknown, malformed or inactive partner key."""


# -- terms -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TopupTerms:
    """What a top-up costs: ``discount_percent`` off, paid by ``programme``'s subsidy, at most
    ``monthly_limit`` won of face value per account per calendar month.

    ``own``: the municipalities with terms of their own, ``(id, terms)`` by id; every other
    municipality has these (:meth:`of`)."""

    programme: str
    discount_percent: int
    monthly_limit: int
    own: tuple[tuple[str, TopupTerms], ...] = ()

    def of(self, municipality: str) -> TopupTerms:
        """The terms of ``municipality``: its own, or the shared ones (either without
        ``own``, so that ``of`` again gives the same)."""
        return next((t for m, t in self.own if m == municipality),
                    dataclasses.replace(self, own=()) if self.own else self)

    def discount(self, face: int) -> int:
        """Rounded down: the citizen never pays less than the rule says."""
        return face * self.discount_percent // 100

    def price(self, face: int) -> int:
        return face - self.discount(face)


def _whole(value: object, what: str, low: int, high: int) -> int:
    # bool is an int to Python: `true` in a file is not 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what}: expected a whole number, found {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{what}: {value:,} is not between {low:,} and {high:,}")
    return value


def terms_from(mapping: Mapping[str, Any], source: str) -> TopupTerms:
    """The terms of a ``[topup]`` table: exactly ``programme``, ``discount_percent`` (0 to
    50) and ``monthly_limit`` (won of face value, 0 to 10^12; 0 suspends top-ups), shared
    by every municipality; and a ``[topup.<id>]`` table of the same keys for each
    municipality with terms of its own. Anything else is a ConfigError naming ``source``
    and the key."""
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{source}: [topup] must be a table")
    own: list[tuple[str, TopupTerms]] = []
    for key in sorted(k for k, v in mapping.items() if isinstance(v, Mapping)):
        try:
            municipalities.check_id(key)
        except ConfigError as err:
            raise ConfigError(f"{source}: [topup.{key}]: {err}") from None
        own.append((key, _one_terms(mapping[key], source, f"topup.{key}")))
    shared = {k: v for k, v in mapping.items() if not isinstance(v, Mapping)}
    return dataclasses.replace(_one_terms(shared, source, "topup"), own=tuple(own))


def _one_terms(mapping: Mapping[str, Any], source: str, table: str) -> TopupTerms:
    unknown = sorted(set(mapping) - set(_TERMS_KEYS))
    if unknown:
        raise ConfigError(f"{source}: [{table}] has unknown keys {', '.join(map(str, unknown))} "
                          f"(known: {', '.join(_TERMS_KEYS)})")
    missing = [k for k in _TERMS_KEYS if k not in mapping]
    if missing:
        raise ConfigError(f"{source}: [{table}] lacks {', '.join(missing)}")
    programme = mapping["programme"]
    try:
        books.programme_subsidy(programme)
    except BooksError as err:
        raise ConfigError(f"{source}: [{table}] programme: {err}") from None
    return TopupTerms(
        programme,
        _whole(mapping["discount_percent"], f"{source}: [{table}] discount_percent", 0,
               MAX_DISCOUNT_PERCENT),
        _whole(mapping["monthly_limit"], f"{source}: [{table}] monthly_limit", 0, MAX_WON))


def load_terms(path: Path) -> TopupTerms:
    """The terms of a TOML file holding one ``[topup]`` table and nothing else."""
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: {err}") from err
    others = sorted(set(doc) - {"topup"})
    if others:
        raise ConfigError(f"{path}: unknown keys {', '.join(others)} (only [topup])")
    if "topup" not in doc:
        raise ConfigError(f"{path}: no [topup] table")
    return terms_from(doc["topup"], str(path))


# -- top-ups -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Topup:
    """A top-up as recorded. ``cash_balance`` is the cash pocket just after it; ``replayed``:
    this is an earlier top-up answered again, and nothing moved now."""

    partner: str
    reference: str
    holder: str
    account: str
    face: int
    price: int
    discount: int
    programme: str
    month: str
    at_ms: int
    cash_balance: int
    replayed: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"reference": self.reference, "account": self.account,
                "face_value": self.face, "price": self.price, "discount": self.discount,
                "cash_balance": self.cash_balance, "replayed": self.replayed}


def month_of(at_ms: int) -> str:
    """``YYYY-MM`` of the calendar month, in Seoul, holding ``at_ms``."""
    return datetime.fromtimestamp(at_ms / 1000, TZ).strftime("%Y-%m")


def _now(now_ms: int | None) -> int:
    if now_ms is None:
        return time.time_ns() // 1_000_000
    if isinstance(now_ms, bool) or not isinstance(now_ms, int) or now_ms < 0:
        raise TopupInvalidError(f"now_ms {now_ms!r} is not a time in ms")
    return now_ms


def _won(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TopupInvalidError(f"{what} {value!r} is not a whole number of won")
    if not 0 < value <= MAX_WON:
        raise TopupInvalidError(f"{what} {value:,} won is not between 1 and {MAX_WON:,}")
    return value


def _check_ref(ref: object) -> str:
    if not isinstance(ref, str) or not _REF_RE.fullmatch(ref):
        raise TopupInvalidError(f"reference {ref!r}: 1 to 128 printable ASCII characters, "
                                "no spaces")
    return ref


def _check_partner(partner: object) -> str:
    if not isinstance(partner, str) or not _PARTNER_RE.fullmatch(partner):
        raise TopupInvalidError(f"partner {partner!r}: 1 to 64 letters, digits, '_' and '-', "
                                "starting with a letter or digit")
    return partner


_TOPUP_COLUMNS = ("partner, ref, holder, account_id, face, price, discount, programme, month, "
                  "at_ms, cash_after")


def _recorded(tx: Tx, municipality: str, partner: str, ref: str) -> Topup | None:
    row = tx.one(f"SELECT {_TOPUP_COLUMNS} FROM topups WHERE municipality_id = ? "
                 "AND partner = ? AND ref = ?", (municipality, partner, ref))
    if row is None:
        return None
    return Topup(str(row[0]), str(row[1]), str(row[2]), str(row[3]), int(row[4]), int(row[5]),
                 int(row[6]), str(row[7]), str(row[8]), int(row[9]), int(row[10]), True)


def _replay(first: Topup, who: str, face: int, paid: int | None) -> Topup:
    """The first answer again, when the request is the same one; else refused."""
    if (first.holder, first.face) != (who, face) or paid not in (None, first.price):
        said = f"{who} for {face:,} won" + ("" if paid is None else f", {paid:,} won paid")
        raise ReferenceReusedError(
            f"reference {first.reference} of partner {first.partner} was a top-up of "
            f"{first.holder} for {first.face:,} won ({first.price:,} won paid); it is now "
            f"given as {said}")
    return first


def topup(store: Store, terms: TopupTerms, who: str, face: int, ref: str, *,
          partner: str = STAFF, paid: int | None = None, now_ms: int | None = None,
          municipality: str = books.DEFAULT_MUNICIPALITY) -> Topup:
    """Sell ``face`` won of local currency to ``who`` (an account id, or a card token or
    wallet linked to one) at ``terms``, as ``partner``'s sale ``ref``.

    ``paid``, when given, is what the partner charged: it must be the price. The same
    ``(partner, ref)`` again answers the first top-up (``replayed``) and moves nothing, even
    if the terms or the card's link changed since; with another holder, face or payment it
    is refused (:class:`ReferenceReusedError`). Refused too: over the monthly limit, a
    subsidy that cannot pay the discount, an unknown account; a refusal writes nothing.

    Everything is ``municipality``'s: ``who`` is looked up among its accounts only (one of
    another municipality is unknown here, in the same words), and its terms
    (:meth:`TopupTerms.of`), subsidy and monthly sums apply.
    """
    terms = terms.of(municipality)
    _check_partner(partner)
    _check_ref(ref)
    _won(face, "face value")
    if paid is not None:
        _won(paid, "paid")
    if not isinstance(who, str):
        raise UnknownAccountError(f"{who!r} is not an account, card or wallet")
    at_ms = _now(now_ms)
    with store.tx() as tx:
        first = _recorded(tx, municipality, partner, ref)
        if first is not None:
            return _replay(first, who, face, paid)
        try:
            account = accounts.resolve(tx, who, municipality=municipality)
        except ConfigError as err:
            raise UnknownAccountError(str(err)) from None
        # Holding the account's row orders concurrent top-ups of one account (PostgreSQL;
        # SQLite's write transaction holds its one lock): the monthly sum below cannot be
        # read by two at once, and a concurrent repeat of this ref is seen once we hold it.
        tx.one_for_update("SELECT account_id FROM accounts WHERE municipality_id = ? "
                          "AND account_id = ?", (municipality, account))
        first = _recorded(tx, municipality, partner, ref)
        if first is not None:
            return _replay(first, who, face, paid)
        result = _post(tx, terms, partner, ref, who, account, face, paid, at_ms, municipality)
    return result


def _post(tx: Tx, terms: TopupTerms, partner: str, ref: str, who: str, account: str,
          face: int, paid: int | None, at_ms: int, municipality: str) -> Topup:
    discount, price = terms.discount(face), terms.price(face)
    if paid is not None and paid != price:
        raise PaidMismatchError(
            f"{face:,} won at {terms.discount_percent} % off costs {price:,} won; "
            f"{paid:,} won was paid")
    month = month_of(at_ms)
    row = tx.one("SELECT COALESCE(SUM(face), 0) FROM topups WHERE municipality_id = ? "
                 "AND account_id = ? AND month = ?", (municipality, account, month))
    bought = int(row[0]) if row else 0
    if bought + face > terms.monthly_limit:
        left = max(terms.monthly_limit - bought, 0)
        raise MonthlyLimitError(
            f"account {account} has bought {bought:,} won of its {terms.monthly_limit:,} won "
            f"limit in {month}: {left:,} won left, {face:,} won asked")
    subsidy = books.programme_subsidy(terms.programme)
    cash = books.pocket(account, "cash")
    books.open_account(tx, books.BANK_OUTSIDE, municipality=municipality, at_ms=at_ms)
    moves = [books.Transfer(books.BANK_OUTSIDE, cash, price, "topup", f"topup:{partner}:{ref}",
                            f"face {face}")]
    if discount:
        held = books.find_account(tx, subsidy, municipality=municipality)
        if held is None or held.balance < discount:
            raise SubsidyExhaustedError(
                f"programme {terms.programme}'s subsidy holds "
                f"{0 if held is None else held.balance:,} won; this discount needs "
                f"{discount:,} won")
        moves.append(books.Transfer(subsidy, cash, discount, "subsidy",
                                    f"topup:{partner}:{ref}:subsidy", f"face {face}"))
    posted = books.transfer(tx, moves, municipality=municipality, at_ms=at_ms)
    if not all(p.fresh for p in posted):
        # a book ref of this sale is already posted, yet no top-up row says so: a concurrent
        # sale of the same ref to another account got there first
        raise ReferenceReusedError(f"reference {ref} of partner {partner} is already posted")
    cash_after = books.balance(tx, cash, municipality=municipality)
    tx.run(f"INSERT INTO topups (municipality_id, {_TOPUP_COLUMNS}) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
           (municipality, partner, ref, who, account, face, price, discount, terms.programme,
            month, at_ms, cash_after))
    return Topup(partner, ref, who, account, face, price, discount, terms.programme, month,
                 at_ms, cash_after)


def bought_in(store: Store, account: str, month: str, *,
              municipality: str = books.DEFAULT_MUNICIPALITY) -> int:
    """Face value the account bought in ``month`` (``YYYY-MM``), over every partner."""
    with store.tx(write=False) as tx:
        row = tx.one("SELECT COALESCE(SUM(face), 0) FROM topups WHERE municipality_id = ? "
                     "AND account_id = ? AND month = ?", (municipality, account, month))
    return int(row[0]) if row else 0


def fund_subsidy(store: Store, programme: str, amount: int, ref: str, *,
                 municipality: str = books.DEFAULT_MUNICIPALITY,
                 now_ms: int | None = None) -> int:
    """The city pays ``amount`` won into ``programme`` and sets it aside for top-up
    discounts; idempotent on ``ref``. Returns what the subsidy account then holds."""
    _won(amount, "amount")
    _check_ref(ref)
    try:
        funding = books.programme_funding(programme)
        subsidy = books.programme_subsidy(programme)
    except BooksError as err:
        raise TopupInvalidError(str(err)) from None
    at_ms = _now(now_ms)
    with store.tx() as tx:
        for account_id in (books.BANK_OUTSIDE, funding, subsidy):
            books.open_account(tx, account_id, municipality=municipality, at_ms=at_ms)
        books.transfer(tx, [
            books.Transfer(books.BANK_OUTSIDE, funding, amount, "funding", f"fund:{ref}"),
            books.Transfer(funding, subsidy, amount, "budget", f"fund:{ref}:subsidy"),
        ], municipality=municipality, at_ms=at_ms)
        return books.balance(tx, subsidy, municipality=municipality)


# -- partners ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Partner:
    """Who a key is: the partner and the one municipality whose currency it sells."""

    name: str
    municipality: str


def add_partner(store: Store, name: str, *,
                municipality: str = books.DEFAULT_MUNICIPALITY) -> str:
    """Register partner ``name`` of ``municipality`` (a registered one) and return its key,
    ``<name>.<secret>``: shown this once, only its SHA-256 is kept. 256 random bits make a
    salt or a slow hash needless. A name is one partner on the whole platform."""
    _check_partner(name)
    if name == STAFF:
        raise TopupInvalidError(f"partner name {STAFF!r} is kept for the city's own staff")
    # one name on the platform (the key names no municipality); said the same way
    # whichever municipality holds it
    return partner_keys.add(store, "partners", name, municipality,
                            TopupInvalidError(f"partner {name} already has a key"))


def disable_partner(store: Store, name: str, *,
                    municipality: str = books.DEFAULT_MUNICIPALITY) -> None:
    """Refuse ``name``'s key from now on (a leaked key, a partner gone); its top-ups stay."""
    _check_partner(name)
    partner_keys.disable(store, "partners", name, municipality,
                         TopupInvalidError(f"no partner {name}"))


def authenticate(store: Store, key: str) -> Partner:
    """The partner whose key this is, with its municipality; PartnerAuthError for anything
    else."""
    return Partner(*partner_keys.find(store, "partners", key, PartnerAuthError, "partner"))


def check_partner(store: Store, key: str, *, municipality: str | None = None) -> str:
    """The partner whose key this is; PartnerAuthError for anything else, and for a
    partner of another municipality than ``municipality`` when it is given."""
    partner = authenticate(store, key)
    if municipality is not None and partner.municipality != municipality:
        raise PartnerAuthError("unknown partner key")
    return partner.name
