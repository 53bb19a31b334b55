"""Citizens' accounts: which cards and app wallets belong to whom, and what each pocket holds.

An *account* is a citizen's place in the books: one or more cards (by their token) and app
wallets (``w:<wallet id>``) are linked to it, each to exactly one account at a time. Its
money is in *pockets*, each an account of the books (``pocket:<account>:<pocket>``,
:mod:`central.books`): ``cash`` (bought, possibly at a discount), ``points`` (incentives paid
out) and one per allowance programme (its programme id). A pocket's balance is its book
balance; this module keeps only the links, so there is one truth for money.

A card linked to an account pays from that account's pockets; a card linked to none pays
from nothing (its payments are flagged at central). Unlinking keeps the account and its
money: a lost card is unlinked and a new one linked.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from central import books
from localpay.errors import ConfigError

if TYPE_CHECKING:  # the store imports this module for its tables
    from central.store import Store, Tx

TABLES = """
CREATE TABLE IF NOT EXISTS accounts (
    municipality_id TEXT NOT NULL DEFAULT 'default', account_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL, PRIMARY KEY (municipality_id, account_id));
CREATE TABLE IF NOT EXISTS account_links (
    municipality_id TEXT NOT NULL DEFAULT 'default', holder TEXT NOT NULL,
    account_id TEXT NOT NULL, linked_ms BIGINT NOT NULL,
    PRIMARY KEY (municipality_id, holder));
CREATE INDEX IF NOT EXISTS account_links_account ON account_links (municipality_id, account_id)
"""

#: an account id: what a programme's recipient files and the console name a citizen by
_ACCOUNT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
#: a card token (hex of the keyed hash, or a test token) or an app wallet ``w:<id>``
_HOLDER_RE = re.compile(r"(w:)?[A-Za-z0-9_-]{1,128}")


def check_account_id(value: str) -> str:
    if not isinstance(value, str) or not _ACCOUNT_RE.fullmatch(value):
        raise ConfigError(f"account id {value!r}: 1 to 64 letters, digits and '-', "
                          "starting with a letter or digit")
    return value


def check_holder(value: str) -> str:
    if not isinstance(value, str) or not _HOLDER_RE.fullmatch(value):
        raise ConfigError(f"{value!r} is neither a card token nor an app wallet (w:<id>)")
    return value


@dataclass(frozen=True)
class Pocket:
    name: str
    balance: int


def create(tx: Tx, account_id: str, *, municipality: str = books.DEFAULT_MUNICIPALITY,
           at_ms: int | None = None) -> bool:
    """Open ``account_id`` with its cash and points pockets; False when it already exists."""
    check_account_id(account_id)
    if tx.one("SELECT 1 FROM accounts WHERE municipality_id = ? AND account_id = ?",
              (municipality, account_id)) is not None:
        return False
    now = int(time.time() * 1000) if at_ms is None else at_ms
    tx.run("INSERT INTO accounts VALUES (?, ?, ?)", (municipality, account_id, now))
    for name in ("cash", "points"):
        books.open_account(tx, books.pocket(account_id, name), municipality=municipality,
                           at_ms=now)
    return True


def exists(tx: Tx, account_id: str, *, municipality: str = books.DEFAULT_MUNICIPALITY) -> bool:
    return tx.one("SELECT 1 FROM accounts WHERE municipality_id = ? AND account_id = ?",
                  (municipality, account_id)) is not None


def link(tx: Tx, account_id: str, holder: str, *,
         municipality: str = books.DEFAULT_MUNICIPALITY) -> str | None:
    """Link a card token or wallet to ``account_id`` (opened if new); the account it was
    linked to before, if another (a card moves whole: it belongs to one account at a time)."""
    check_holder(holder)
    create(tx, account_id, municipality=municipality)
    row = tx.one_for_update("SELECT account_id FROM account_links WHERE municipality_id = ? "
                            "AND holder = ?", (municipality, holder))
    now = int(time.time() * 1000)
    if row is None:
        tx.run("INSERT INTO account_links VALUES (?, ?, ?, ?)",
               (municipality, holder, account_id, now))
        return None
    before = str(row[0])
    if before != account_id:
        tx.run("UPDATE account_links SET account_id = ?, linked_ms = ? WHERE municipality_id = ? "
               "AND holder = ?", (account_id, now, municipality, holder))
        return before
    return None


def unlink(tx: Tx, holder: str, *, municipality: str = books.DEFAULT_MUNICIPALITY) -> str:
    """Unlink a card or wallet; the account it was linked to (the account keeps its money)."""
    check_holder(holder)
    row = tx.one("SELECT account_id FROM account_links WHERE municipality_id = ? AND holder = ?",
                 (municipality, holder))
    if row is None:
        raise ConfigError(f"{holder} is not linked to any account")
    tx.run("DELETE FROM account_links WHERE municipality_id = ? AND holder = ?",
           (municipality, holder))
    return str(row[0])


def account_of(tx: Tx, holder: str, *,
               municipality: str = books.DEFAULT_MUNICIPALITY) -> str | None:
    row = tx.one("SELECT account_id FROM account_links WHERE municipality_id = ? AND holder = ?",
                 (municipality, holder))
    return str(row[0]) if row else None


def resolve(tx: Tx, who: str, *, municipality: str = books.DEFAULT_MUNICIPALITY) -> str:
    """The account named by ``who``: an account id, or a linked card token or wallet."""
    if isinstance(who, str) and _ACCOUNT_RE.fullmatch(who) and exists(
            tx, who, municipality=municipality):
        return who
    if isinstance(who, str) and _HOLDER_RE.fullmatch(who):
        found = account_of(tx, who, municipality=municipality)
        if found is not None:
            return found
    raise ConfigError(f"{who!r} is neither an account nor a card or wallet linked to one")


def holders(tx: Tx, account_id: str, *,
            municipality: str = books.DEFAULT_MUNICIPALITY) -> list[str]:
    return [str(r[0]) for r in tx.all(
        "SELECT holder FROM account_links WHERE municipality_id = ? AND account_id = ? "
        "ORDER BY holder", (municipality, account_id))]


def pockets(tx: Tx, account_id: str, *,
            municipality: str = books.DEFAULT_MUNICIPALITY) -> list[Pocket]:
    """Every pocket of the account with its book balance, by name."""
    prefix = books.pocket(account_id, "x")[:-1]
    # an account id holds no LIKE wildcard ('%', '_'), so the prefix matches itself only
    rows = tx.all("SELECT account_id, credits_posted - debits_posted FROM book_accounts "
                  "WHERE municipality_id = ? AND account_id LIKE ? ORDER BY account_id",
                  (municipality, prefix + "%"))
    return [Pocket(str(a)[len(prefix):], int(b)) for a, b in rows]


def lock(tx: Tx, account_ids: Sequence[str], *,
         municipality: str = books.DEFAULT_MUNICIPALITY) -> None:
    """Hold the book rows of ``account_ids`` (those that exist) until the transaction ends,
    in the order :func:`central.books.transfer` takes them (sorted), so that two workers never
    wait on each other: balances read after this are what the transfers will find."""
    for account_id in sorted(set(account_ids)):
        tx.one_for_update("SELECT 1 FROM book_accounts WHERE municipality_id = ? AND "
                          "account_id = ?", (municipality, account_id))


def ensure_schema(store: Store) -> None:
    """Make the tables where missing (``Store.init_schema`` does it with the rest)."""
    with store.tx() as tx:
        tx.schema_lock("accounts")
        for statement in TABLES.split(";"):
            if statement.strip():
                tx.run(statement)
