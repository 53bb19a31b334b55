"""What a till needs to split payments offline: its merchant's pocket rules and every card's
pocket balances, as deltas (``GET /v1/pockets?since=N``).

**Whose cards.** A terminal's merchant is its row of ``merchant_terminals``; the answer holds
that row's municipality only (which must be the terminal's own, ``terminals.municipality_id``):
its active pocket rules (:func:`central.spending.active_rules`,
the very rules its payments are posted by) and the cards linked to its accounts. A terminal
of no merchant (or, while the registry allows it, of rows in two municipalities) gets the
empty answer: nothing to split by, and no municipality's cards.

**Balances.** A card's pockets are its account's pocket balances in the books
(``credits_posted - debits_posted`` of ``pocket:<account>:<pocket>``), nothing subtracted:
the terminal subtracts its own offline spending since its last sync. An allowance pocket
also carries its grants' expiry days (``allowance_grants``), so that the terminal computes
its expiry on the payment's day exactly as posting does (:meth:`central.spending._Poster.
expiries`): the soonest of the grants still running that day, else the latest.

**Versions.** Books move from many places (payments, top-ups, allowances, expiry, payouts),
so the snapshot is not kept by each of them: :func:`refresh` recomputes a municipality's
cards and gives every card whose pockets changed the next version (``pocket_snapshot``; one
version per :data:`CHUNK` cards, so an answer cut at a version boundary always moves on). A
request refreshes when the last refresh is older than :data:`REFRESH_MS`, so a till sees a
movement within that and one request per interval pays for the recompute; ``since`` then
sends only the cards changed after the version a till holds. The recompute reads all of the
municipality's pockets (O(cards)): a change feed kept by the books would make it O(changes),
and is the next step once a city's cards make it matter.

The answer (keys are a contract with ``sync.client``)::

    {"version": 12,                  # the newest version in this answer (0: nothing yet)
     "municipality": "default",      # "" for a terminal of no merchant
     "merchant": "M-1",              # the merchant's id ("" when none)
     "rules_version": 3,             # the active rules' version (0: the shipped defaults)
     "rules": "[[pocket]] ...",      # the active rules' TOML text ("" when no merchant)
     "cards": {"<card token>":       # cards changed after `since`
               {"<pocket>": [balance, ["YYYY-MM-DD", ...], "YYYY-MM-DD" | null]}
               | null}}              # null: the card is no longer linked here

where a pocket's list is its book balance (won), the expiry days of its grants still
running (soonest first; empty for cash and points) and the latest expiry of its grants
already expired (``null`` when none).
"""

from __future__ import annotations

import json
import logging
import time
import weakref
from collections.abc import Iterable
from typing import Any

from central import merchants, municipalities, spending
from central.store import Store, Tx
from localpay.pockets import DEFAULT_RULES

log = logging.getLogger(__name__)

#: a request refreshes the municipality's snapshot when the last refresh is older than this
REFRESH_MS = 1_000
#: cards per version in one refresh (an answer's ``limit`` must be at least this)
CHUNK = 1_000
LIMIT = 50_000

TABLES = """
CREATE TABLE IF NOT EXISTS pocket_snapshot (
    municipality_id TEXT NOT NULL, card_token TEXT NOT NULL, version BIGINT NOT NULL,
    body TEXT NOT NULL, PRIMARY KEY (municipality_id, card_token));
CREATE INDEX IF NOT EXISTS pocket_snapshot_version ON pocket_snapshot (municipality_id, version);
CREATE TABLE IF NOT EXISTS pocket_snapshot_state (
    municipality_id TEXT NOT NULL PRIMARY KEY, version BIGINT NOT NULL,
    refreshed_ms BIGINT NOT NULL)
"""

# Several workers starting at once would race on CREATE TABLE (PostgreSQL's catalogue).
_SCHEMA_LOCK = 0x6C70706F736E70  # "lpposnp"
_READY: weakref.WeakKeyDictionary[Store, set[str]] = weakref.WeakKeyDictionary()

EMPTY: dict[str, Any] = {"version": 0, "municipality": "", "merchant": "", "rules_version": 0,
                         "rules": "", "cards": {}}


def _now_ms() -> int:
    return int(time.time() * 1000)


def ensure_schema(store: Store, municipality: str) -> None:
    """Make the tables and ``municipality``'s state row where missing (once per process)."""
    if municipality in _READY.get(store, ()):
        return
    spending.ensure_schema(store, municipality)  # pocket_rules
    with store.tx() as tx:
        if store.kind == "postgresql":
            tx.one("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
        for statement in TABLES.split(";"):
            if statement.strip():
                tx.run(statement)
        tx.run("INSERT INTO pocket_snapshot_state VALUES (?, 0, 0) ON CONFLICT "
               "(municipality_id) DO NOTHING", (municipality,))
    _READY.setdefault(store, set()).add(municipality)


def merchant_row(tx: Tx, terminal_id: str) -> tuple[str, str] | None:
    """``(municipality, merchant id)`` of the terminal's one ``merchant_terminals`` row."""
    rows = tx.all("SELECT municipality_id, merchant_id FROM merchant_terminals WHERE "
                  "terminal_id = ? ORDER BY municipality_id", (terminal_id,))
    if len(rows) > 1:
        # which municipality's cards would it be? none: better no split than another's money
        log.warning("terminal %s belongs to merchants of %d municipalities: no pockets sent",
                    terminal_id, len(rows))
        return None
    if not rows:
        return None
    municipality, merchant = str(rows[0][0]), str(rows[0][1])
    registered = municipalities.of_terminal(tx, terminal_id)
    if registered is not None and registered != municipality:
        # the registry refuses this (check_assignment); a row from before it, never obeyed
        log.warning("terminal %s of municipality %s is assigned to merchant %s of %s: no "
                    "pockets sent", terminal_id, registered, merchant, municipality)
        return None
    return municipality, merchant


def card_bodies(tx: Tx, municipality: str) -> dict[str, str]:
    """Every linked card's pockets as the canonical JSON text an answer carries."""
    by_account: dict[str, dict[str, list[Any]]] = {}
    for account_id, balance in tx.all(
            "SELECT account_id, credits_posted - debits_posted FROM book_accounts WHERE "
            "municipality_id = ? AND kind = 'pocket'", (municipality,)):
        _, account, pocket = str(account_id).split(":", 2)
        by_account.setdefault(account, {})[pocket] = [int(balance), [], None]
    for account, programme, expires, expired_ms in tx.all(
            "SELECT account_id, programme, expires, expired_ms FROM allowance_grants WHERE "
            "municipality_id = ?", (municipality,)):
        slot = by_account.get(str(account), {}).get(str(programme))
        if slot is None:
            continue
        if expired_ms is None:
            slot[1].append(str(expires))
        elif slot[2] is None or str(expires) > slot[2]:
            slot[2] = str(expires)
    texts: dict[str, str] = {}
    for account, held in by_account.items():
        for slot in held.values():
            slot[1].sort()
        texts[account] = json.dumps(held, sort_keys=True, separators=(",", ":"))
    return {str(holder): texts.get(str(account), "{}") for holder, account in tx.all(
        "SELECT holder, account_id FROM account_links WHERE municipality_id = ?",
        (municipality,))}


def refresh(store: Store, municipality: str, *, every_ms: int | None = None) -> int:
    """Give the cards of ``municipality`` whose pockets changed the next versions, unless the
    last refresh is younger than ``every_ms`` (default :data:`REFRESH_MS`); the newest
    version."""
    ensure_schema(store, municipality)
    wait = REFRESH_MS if every_ms is None else every_ms
    if wait > 0:
        # most requests find a fresh snapshot: tell so without taking a write lock
        with store.tx(write=False) as tx:
            row = tx.one("SELECT version, refreshed_ms FROM pocket_snapshot_state WHERE "
                         "municipality_id = ?", (municipality,))
        if row is not None and _now_ms() - int(row[1]) < wait:
            return int(row[0])
    with store.tx() as tx:
        row = tx.one_for_update("SELECT version, refreshed_ms FROM pocket_snapshot_state "
                                "WHERE municipality_id = ?", (municipality,))
        version, refreshed = (int(row[0]), int(row[1])) if row else (0, 0)
        now = _now_ms()
        if now - refreshed < wait:
            return version
        bodies = card_bodies(tx, municipality)
        held = {str(t): str(b) for t, b in tx.all(
            "SELECT card_token, body FROM pocket_snapshot WHERE municipality_id = ?",
            (municipality,))}
        changed = sorted(t for t, b in bodies.items() if held.get(t) != b)
        # an unlinked card is told once ("" body), then stays quiet
        changed += sorted(t for t, b in held.items() if t not in bodies and b)
        rows = [(municipality, token, version + 1 + i // CHUNK, bodies.get(token, ""))
                for i, token in enumerate(changed)]
        tx.many("INSERT INTO pocket_snapshot VALUES (?, ?, ?, ?) ON CONFLICT "
                "(municipality_id, card_token) DO UPDATE SET version = excluded.version, "
                "body = excluded.body", rows)
        if rows:
            version = int(rows[-1][2])
        tx.run("UPDATE pocket_snapshot_state SET version = ?, refreshed_ms = ? WHERE "
               "municipality_id = ?", (version, now, municipality))
    return version


def _cards(rows: Iterable[tuple[Any, ...]]) -> dict[str, Any]:
    return {str(t): (json.loads(str(b)) if b else None) for t, b, _ in rows}


def delta(store: Store, terminal_id: str, since: int, *, limit: int = LIMIT,
          every_ms: int | None = None) -> dict[str, Any]:
    """The answer of ``GET /v1/pockets?since=`` for ``terminal_id`` (module docstring)."""
    if limit <= CHUNK:
        raise ValueError(f"an answer holds more than one version's {CHUNK} cards")
    merchants.ensure_schema(store)
    with store.tx(write=False) as tx:
        found = merchant_row(tx, terminal_id)
    if found is None:
        return {**EMPTY, "cards": {}}
    municipality, merchant = found
    top = refresh(store, municipality, every_ms=every_ms)
    with store.tx(write=False) as tx:
        row = tx.one("SELECT version, body FROM pocket_rules WHERE municipality_id = ? "
                     "ORDER BY version DESC LIMIT 1", (municipality,))
        rows = tx.all("SELECT card_token, body, version FROM pocket_snapshot WHERE "
                      "municipality_id = ? AND version > ? AND version <= ? "
                      "ORDER BY version LIMIT ?", (municipality, since, top, limit))
    version = max(top, since)
    if len(rows) == limit:
        # stop before the last version, so that none of it is split across two answers
        cut = int(rows[-1][2])
        rows = [r for r in rows if int(r[2]) < cut]
        version = int(rows[-1][2])
    rules_version, rules = (int(row[0]), str(row[1])) if row else (0, DEFAULT_RULES)
    return {"version": version, "municipality": municipality, "merchant": merchant,
            "rules_version": rules_version, "rules": rules, "cards": _cards(rows)}


__all__ = ["CHUNK", "EMPTY", "REFRESH_MS", "TABLES", "card_bodies", "delta", "ensure_schema",
           "merchant_row", "refresh"]
