"""The municipalities one central service holds, and what a terminal of one may be told.

One platform serves many municipalities (KOMSCO chak: 70+), each with its own currency,
programmes and rules, merchants, accounts, terminals and keys. ``municipalities`` is the
registry (id, name, currency name); ``default`` is always there, so a single-municipality
install needs no setting at all.

Who belongs where:

- A **terminal** belongs to exactly one municipality (``terminals.municipality_id``), fixed
  at enrolment (the enrolment code names it) or by ``central terminal add --municipality``,
  and never moved: its chain, its totals and its config stay where they were.
- **Deny entries** and **balance snapshots** carry ``municipality_id``: the operator's
  command names it (``--municipality``, default ``default``); the ingest hooks deny a card
  in the municipality of the terminal that saw it.
- A **card** belongs to the municipalities whose accounts it is linked to
  (``account_links``). A card linked to an account of municipality A and to none of B is
  never answered to a terminal of B: not in its deny list, balances, points or riders,
  whatever was loaded for B (:func:`visible_cards`). A card linked to no account is
  answered where its rows are: deny entries and balances by their municipality, points
  where the card was credited (a terminal of that municipality), riders everywhere (a
  category is no money, and a validator needs it before the first tap).
- While the registry holds one municipality, nothing is filtered (nothing could differ).

Payments of a card of A at a terminal of B are not posted to A's books:
:mod:`central.spending` flags them ``other_municipality`` in B, the terminal's
municipality. No rule lets one municipality's money be spent in another yet.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from localpay.errors import ConfigError

if TYPE_CHECKING:  # the store imports this module for its table
    from central.store import Store, Tx

DEFAULT = "default"
DEFAULT_CURRENCY = "local currency"

TABLES = """
CREATE TABLE IF NOT EXISTS municipalities (
    municipality_id TEXT PRIMARY KEY, name TEXT NOT NULL, currency TEXT NOT NULL,
    created_ms BIGINT NOT NULL)
"""

#: the tables that named municipalities before the registry: their ids are registered by
#: the migration that makes it (:func:`register_existing`)
_NAMED_IN = ("merchants", "merchant_terminals", "accounts", "book_accounts")

_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


class UnknownMunicipalityError(ConfigError):
    """A municipality id that the registry does not hold."""


class CrossMunicipalityError(ConfigError):
    """Something of one municipality asked to act in another (a terminal assigned to a
    merchant of another municipality, a card's balance held by another)."""


@dataclass(frozen=True)
class Municipality:
    municipality_id: str
    name: str
    currency: str
    created_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_id(value: str) -> str:
    """A municipality id: 1 to 32 lower-case letters, digits and ``-`` (it goes into file
    names, lock keys and the distribution key of every table)."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise ConfigError(f"municipality id {value!r}: 1 to 32 lower-case letters, digits "
                          "and '-', starting with a letter or digit")
    return value


def _check_text(value: str, what: str) -> str:
    value = value.strip() if isinstance(value, str) else ""
    if not value or len(value) > 100 or not value.isprintable():
        raise ConfigError(f"{what}: 1 to 100 printable characters")
    return value


def _now_ms() -> int:
    return int(time.time() * 1000)


def ensure_default(tx: Tx) -> None:
    """``default`` is always registered (``Store.init_schema`` runs this)."""
    tx.run("INSERT INTO municipalities VALUES (?, ?, ?, ?) ON CONFLICT (municipality_id) "
           "DO NOTHING", (DEFAULT, DEFAULT, DEFAULT_CURRENCY, _now_ms()))


def register_existing(tx: Tx) -> None:
    """Register every municipality id that older tables already name (a store from before
    the registry), with its id as its name; and put each terminal already assigned to a
    merchant of a municipality other than ``default`` into that municipality."""
    now = _now_ms()
    for table in _NAMED_IN:
        tx.run(f"INSERT INTO municipalities SELECT DISTINCT municipality_id, municipality_id, "
               f"?, ? FROM {table} WHERE municipality_id <> ? ON CONFLICT (municipality_id) "
               "DO NOTHING", (DEFAULT_CURRENCY, now, DEFAULT))
    tx.run("UPDATE terminals SET municipality_id = (SELECT MIN(mt.municipality_id) FROM "
           "merchant_terminals mt WHERE mt.terminal_id = terminals.terminal_id) WHERE "
           "EXISTS (SELECT 1 FROM merchant_terminals mt WHERE mt.terminal_id = "
           "terminals.terminal_id AND mt.municipality_id <> ?)", (DEFAULT,))


def add(store: Store, municipality_id: str, name: str, currency: str) -> Municipality:
    """Register a municipality; ConfigError when its id is taken."""
    new = Municipality(check_id(municipality_id), _check_text(name, "name"),
                       _check_text(currency, "currency"), _now_ms())
    with store.tx() as tx:
        if tx.one("SELECT 1 FROM municipalities WHERE municipality_id = ?",
                  (new.municipality_id,)) is not None:
            raise ConfigError(f"municipality {new.municipality_id!r} exists already")
        tx.run("INSERT INTO municipalities VALUES (?, ?, ?, ?)",
               (new.municipality_id, new.name, new.currency, new.created_ms))
    return new


def get(where: Store | Tx, municipality_id: str) -> Municipality | None:
    """The registered municipality ``municipality_id``, or None; ``where`` is a store or an
    open transaction."""
    if not hasattr(where, "one"):  # a store: a transaction of its own
        with where.tx(write=False) as tx:
            return get(tx, municipality_id)
    row = where.one("SELECT municipality_id, name, currency, created_ms FROM municipalities "
                    "WHERE municipality_id = ?", (municipality_id,))
    return Municipality(str(row[0]), str(row[1]), str(row[2]), int(row[3])) if row else None


def require(where: Store | Tx, municipality_id: str) -> Municipality:
    """The registered municipality ``municipality_id``; UnknownMunicipalityError if none."""
    found = get(where, municipality_id)
    if found is None:
        raise UnknownMunicipalityError(
            f"no municipality {municipality_id!r}; register it with `localpay central "
            "municipality add`")
    return found


def known(where: Store | Tx, municipality_id: str) -> Municipality:
    """The registered municipality ``municipality_id``; else UnknownMunicipalityError naming
    the registered ones. The one check of every command that takes ``--municipality``."""
    if not hasattr(where, "one"):  # a store: a transaction of its own
        with where.tx(write=False) as tx:
            return known(tx, municipality_id)
    tx = cast("Tx", where)
    found = get(tx, municipality_id)
    if found is None:
        raise UnknownMunicipalityError(
            f"unknown municipality {municipality_id!r}; registered: {', '.join(ids(tx))}")
    return found


def all_of(store: Store) -> list[Municipality]:
    with store.tx(write=False) as tx:
        rows = tx.all("SELECT municipality_id, name, currency, created_ms FROM municipalities "
                      "ORDER BY municipality_id")
    return [Municipality(str(a), str(b), str(c), int(d)) for a, b, c, d in rows]


def counts(store: Store, municipality_id: str) -> dict[str, int]:
    """How many terminals, merchants and accounts ``municipality_id`` holds."""
    out: dict[str, int] = {}
    with store.tx(write=False) as tx:
        for key, table in (("terminals", "terminals"), ("merchants", "merchants"),
                           ("accounts", "accounts")):
            row = tx.one(f"SELECT COUNT(*) FROM {table} WHERE municipality_id = ?",
                         (municipality_id,))
            out[key] = int(row[0]) if row else 0
    return out


def ids(tx: Tx) -> list[str]:
    return [str(r[0]) for r in tx.all("SELECT municipality_id FROM municipalities "
                                      "ORDER BY municipality_id")]


def only_one(tx: Tx) -> bool:
    """The registry holds one municipality: nothing needs filtering."""
    row = tx.one("SELECT COUNT(*) FROM municipalities")
    return row is None or int(row[0]) <= 1


def of_terminal(tx: Tx, terminal_id: str) -> str | None:
    """The municipality of a registered terminal; None when it is not registered."""
    row = tx.one("SELECT municipality_id FROM terminals WHERE terminal_id = ?", (terminal_id,))
    return str(row[0]) if row else None


def check_assignment(tx: Tx, terminal_id: str, municipality: str) -> None:
    """Refuse to put ``terminal_id`` in ``municipality`` when it is registered in, or
    assigned to a merchant of, another municipality."""
    registered = of_terminal(tx, terminal_id)
    if registered is not None and registered != municipality:
        raise CrossMunicipalityError(f"terminal {terminal_id!r} belongs to municipality "
                                     f"{registered!r}, not {municipality!r}")
    row = tx.one("SELECT municipality_id, merchant_id FROM merchant_terminals WHERE "
                 "terminal_id = ? AND municipality_id <> ? LIMIT 1", (terminal_id, municipality))
    if row is not None:
        raise CrossMunicipalityError(f"terminal {terminal_id!r} is assigned to merchant "
                                     f"{row[1]!r} of municipality {row[0]!r}, not "
                                     f"{municipality!r}")


def linked_elsewhere(tx: Tx, holder: str, municipality: str) -> list[str]:
    """The other municipalities whose accounts ``holder`` (a card or wallet) is linked to,
    when it is linked to none of ``municipality``'s; else ``[]``."""
    found = sorted({str(r[0]) for r in tx.all(
        "SELECT municipality_id FROM account_links WHERE holder = ?", (holder,))})
    return [] if municipality in found else found


def visible_cards(tx: Tx, municipality: str, tokens: Iterable[str]) -> set[str]:
    """Of ``tokens``, those a terminal of ``municipality`` may be told of: every one that
    is not linked to another municipality's account only."""
    wanted = sorted(set(tokens))
    if not wanted:
        return set()
    hidden: set[str] = set()
    for i in range(0, len(wanted), 5000):
        test, param = tx.any_of("holder", wanted[i:i + 5000])
        links: dict[str, set[str]] = {}
        for holder, m in tx.all(f"SELECT holder, municipality_id FROM account_links "
                                f"WHERE {test}", (param,)):
            links.setdefault(str(holder), set()).add(str(m))
        hidden.update(h for h, ms in links.items() if municipality not in ms)
    return set(wanted) - hidden


def credited_at(tx: Tx, municipality: str, tokens: Iterable[str]) -> set[str]:
    """Of ``tokens``, those credited points at a terminal of ``municipality``."""
    wanted = sorted(set(tokens))
    out: set[str] = set()
    for i in range(0, len(wanted), 5000):
        test, param = tx.any_of("c.card_token", wanted[i:i + 5000])
        out.update(str(r[0]) for r in tx.all(
            "SELECT DISTINCT c.card_token FROM incentive_credits c JOIN terminals t ON "
            f"t.terminal_id = c.terminal_id WHERE t.municipality_id = ? AND {test}",
            (municipality, param)))
    return out


def linked_in(tx: Tx, municipality: str, tokens: Iterable[str]) -> set[str]:
    """Of ``tokens``, those linked to an account of ``municipality``."""
    wanted = sorted(set(tokens))
    out: set[str] = set()
    for i in range(0, len(wanted), 5000):
        test, param = tx.any_of("holder", wanted[i:i + 5000])
        out.update(str(r[0]) for r in tx.all(
            f"SELECT holder FROM account_links WHERE municipality_id = ? AND {test}",
            (municipality, param)))
    return out


def scope_points(store: Store, terminal_id: str, doc: dict[str, Any]) -> dict[str, Any]:
    """A ``GET /v1/points`` answer (``points`` and, when asked, ``riders``) cut to what
    ``terminal_id``'s municipality may see: points of a card linked to one of its accounts,
    or linked to none and credited at one of its terminals; riders of every card not
    linked to another municipality's accounts only."""
    with store.tx(write=False) as tx:
        return scope_points_in(tx, terminal_id, doc)


def scope_points_in(tx: Tx, terminal_id: str, doc: dict[str, Any]) -> dict[str, Any]:
    """:func:`scope_points`, read in ``tx`` (a round reads its parts together)."""
    if only_one(tx):
        return doc
        municipality = of_terminal(tx, terminal_id) or DEFAULT
        points = doc.get("points") or {}
        if points:
            mine = linked_in(tx, municipality, points)
            loose = set(points) - mine - _linked_anywhere(tx, points)
            keep = mine | credited_at(tx, municipality, loose)
            doc["points"] = {t: v for t, v in points.items() if t in keep}
        changes = (doc.get("riders") or {}).get("changes") or {}
        if changes:
            seen = visible_cards(tx, municipality, changes)
            doc["riders"]["changes"] = {t: r for t, r in changes.items() if t in seen}
    return doc


def _linked_anywhere(tx: Tx, tokens: Iterable[str]) -> set[str]:
    wanted = sorted(set(tokens))
    out: set[str] = set()
    for i in range(0, len(wanted), 5000):
        test, param = tx.any_of("holder", wanted[i:i + 5000])
        out.update(str(r[0]) for r in tx.all(f"SELECT holder FROM account_links WHERE {test}",
                                             (param,)))
    return out


__all__ = ["DEFAULT", "TABLES", "CrossMunicipalityError", "Municipality",
           "UnknownMunicipalityError", "add", "all_of", "check_assignment", "check_id",
           "counts", "ensure_default", "get", "ids", "known", "linked_elsewhere", "linked_in",
           "of_terminal", "only_one", "register_existing", "require", "scope_points",
           "visible_cards"]
