"""Pockets at the terminal: the central snapshot of cards' pocket balances and the rules of
this terminal's merchant (``GET /v1/pockets``), and what each pocket spent offline here.

Tables (migration ``0006_pockets``):

- ``pocket_balances``: one row per card and pocket as central last said: its book balance,
  the expiry days of its grants still running (JSON list) and the latest expiry of its
  grants already expired ('' when none). A card with no row has no pocket data: the
  terminal decides for it as before pockets.
- ``pocket_counters``: per card and pocket, the won paid from it offline since the last
  sync (``offline_amount``, floored at 0 like the card counters) and what it paid on
  ``day`` (Seoul) for the rules' daily limits. Both move in the same transaction as the
  entry that moved them (:func:`counting`, given to :meth:`Ledger.append`), so an approval
  never outruns its counters.
- ``pocket_state``: the snapshot's version, municipality and merchant, and the rules' version
  and text it came with.

An entry's split is its detail's ``split``: ``[[pocket, won], ...]``, in drawing order, on a
payment what each pocket paid, on a refund or void what each got back. :data:`RECOUNT`
restarts the offline amounts from the entries after the synced one, as
:meth:`Ledger.mark_synced` does for the card counters and in the same transaction: a
refund of an entry the round synced is floored at 0 there too, so it never leaves a pocket
more room than its snapshot gave.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from localpay.errors import LedgerError
from localpay.pockets import PocketBalance

if TYPE_CHECKING:  # the ledger imports this module for its hooks
    from offline_ledger.ledger import Ledger

#: the programme's days are Seoul's, at the terminal as at central
TZ = ZoneInfo("Asia/Seoul")

MIGRATION = (
    "0006_pockets",
    """
    CREATE TABLE pocket_balances (
        card_token TEXT    NOT NULL,
        pocket     TEXT    NOT NULL,
        balance    INTEGER NOT NULL,
        running    TEXT    NOT NULL,
        ended      TEXT    NOT NULL,
        PRIMARY KEY (card_token, pocket)
    ) WITHOUT ROWID;
    CREATE TABLE pocket_counters (
        card_token     TEXT    NOT NULL,
        pocket         TEXT    NOT NULL,
        offline_amount INTEGER NOT NULL DEFAULT 0,
        day            TEXT    NOT NULL DEFAULT '',
        day_amount     INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (card_token, pocket)
    ) WITHOUT ROWID;
    CREATE TABLE pocket_state (
        id            INTEGER PRIMARY KEY CHECK (id = 1),
        version       INTEGER NOT NULL,
        municipality  TEXT    NOT NULL,
        merchant      TEXT    NOT NULL,
        rules_version INTEGER NOT NULL,
        rules         TEXT    NOT NULL
    );
    INSERT INTO pocket_state VALUES (1, 0, '', '', 0, '');
    """,
)

#: restart every pocket's offline amount from the entries after ``?`` (the synced seq)
RECOUNT: tuple[tuple[str, str], ...] = (
    ("UPDATE pocket_counters SET offline_amount = 0 WHERE offline_amount != 0", ""),
    (
        "UPDATE pocket_counters SET offline_amount = MAX(s.a, 0) FROM "
        "(SELECT e.card_token AS t, json_extract(p.value, '$[0]') AS k, "
        "SUM(CASE WHEN e.kind = 'payment' THEN json_extract(p.value, '$[1]') "
        "ELSE -json_extract(p.value, '$[1]') END) AS a "
        # canonical detail has no blanks: only an entry with a split holds this text, and
        # json_each never meets a detail without one
        "FROM (SELECT card_token, kind, detail FROM entries WHERE seq > ? "
        "AND kind IN ('payment', 'refund', 'void') AND instr(detail, '\"split\":') > 0) e, "
        "json_each(e.detail, '$.split') p GROUP BY 1, 2) AS s "
        "WHERE card_token = s.t AND pocket = s.k",
        "seq",
    ),
)


def recount(upto_seq: int) -> list[tuple[str, Any]]:
    """:data:`RECOUNT` as statements for :meth:`Ledger._write`."""
    return [(sql, (upto_seq,) if arg else ()) for sql, arg in RECOUNT]


@dataclass(frozen=True, slots=True)
class PocketState:
    """The snapshot held: its version, whose it is, and the rules it came with."""

    version: int = 0
    municipality: str = ""
    merchant: str = ""
    rules_version: int = 0
    rules: str = ""


@dataclass(frozen=True, slots=True)
class CardPockets:
    """One card's pockets for a split: balances less what they paid offline here, with their
    expiry on the day asked, and what each paid that day."""

    balances: tuple[PocketBalance, ...]
    spent_today: Mapping[str, int]


#: a pocket as central sends it: balance, running grants' expiries, latest ended expiry
Wire = tuple[int, Sequence[str], str | None]


def seoul_day(wall_ms: int) -> date:
    return datetime.fromtimestamp(wall_ms / 1000, TZ).date()


def expiry_on(running: Sequence[str], ended: str, day: date) -> date | None:
    """The pocket's expiry on ``day``, by posting's rule: the soonest running grant still
    valid that day, else the latest of the others; None for a pocket without grants."""
    text = day.isoformat()
    live = [d for d in running if d >= text]
    if live:
        return date.fromisoformat(min(live))
    past = [d for d in running if d < text] + ([ended] if ended else [])
    return date.fromisoformat(max(past)) if past else None


def state(ledger: Ledger) -> PocketState:
    try:
        row = ledger._conn.execute("SELECT version, municipality, merchant, rules_version, "
                                   "rules FROM pocket_state").fetchone()
    except sqlite3.Error as err:
        raise LedgerError(f"cannot read the pocket snapshot's state: {err}") from err
    return PocketState(int(row[0]), str(row[1]), str(row[2]), int(row[3]), str(row[4]))


def store(ledger: Ledger, snapshot: PocketState, cards: Mapping[str, Mapping[str, Wire] | None],
          *, reset: bool = False) -> None:
    """Keep an answer of central: each card's pockets replace those held (None: the card has
    none any more); ``reset`` first forgets every card (another municipality, or none)."""
    statements: list[tuple[str, Any]] = []
    if reset:
        statements.append(("DELETE FROM pocket_balances", ()))
    statements.append(("DELETE FROM pocket_balances WHERE card_token = ?",
                       [(t,) for t in cards]))
    statements.append((
        "INSERT INTO pocket_balances VALUES (?, ?, ?, ?, ?)",
        [(t, p, int(w[0]), json.dumps(sorted(str(d) for d in w[1])), w[2] or "")
         for t, pockets in cards.items() if pockets for p, w in pockets.items()]))
    s = snapshot
    statements.append(("UPDATE pocket_state SET version = ?, municipality = ?, merchant = ?, "
                       "rules_version = ?, rules = ?",
                       (s.version, s.municipality, s.merchant, s.rules_version, s.rules)))
    ledger._write("pocket snapshot not stored", statements)


def card_pockets(ledger: Ledger, card_token: str, day: date) -> CardPockets | None:
    """The card's pockets on ``day`` (one indexed read), or None when central sent none."""
    try:
        rows = ledger._conn.execute(
            "SELECT b.pocket, b.balance, b.running, b.ended, c.offline_amount, c.day, "
            "c.day_amount FROM pocket_balances b LEFT JOIN pocket_counters c ON "
            "c.card_token = b.card_token AND c.pocket = b.pocket WHERE b.card_token = ?",
            (card_token,)).fetchall()
    except sqlite3.Error as err:
        raise LedgerError(f"cannot read the card's pockets: {err}") from err
    if not rows:
        return None
    text = day.isoformat()
    balances = []
    spent: dict[str, int] = {}
    for pocket, balance, running, ended, offline, held_day, day_amount in rows:
        # cash and points have no grants: skip the JSON on the tap path
        expires = (expiry_on(json.loads(running), ended, day) if running != "[]" or ended
                   else None)
        balances.append(PocketBalance(pocket, int(balance) - int(offline or 0), expires))
        if held_day == text and day_amount:
            spent[pocket] = int(day_amount)
    return CardPockets(tuple(balances), spent)


def counting(card_token: str, parts: Sequence[tuple[str, int]], day: date, *,
             back: bool = False) -> Callable[[sqlite3.Connection], None]:
    """What :meth:`Ledger.append` runs in the entry's transaction: a payment's ``parts``
    added to each pocket's offline amount and to its spending on ``day``; a refund's
    (``back``) taken off the offline amount (floored at 0), never off a day's spending
    (central's daily limits count payments, not refunds)."""
    text = day.isoformat()

    def run(conn: sqlite3.Connection) -> None:
        if back:
            conn.executemany(
                "UPDATE pocket_counters SET offline_amount = MAX(offline_amount - ?, 0) "
                "WHERE card_token = ? AND pocket = ?",
                [(won, card_token, pocket) for pocket, won in parts])
            return
        conn.executemany(
            "INSERT INTO pocket_counters VALUES (:t, :p, :w, :d, :w) ON CONFLICT "
            "(card_token, pocket) DO UPDATE SET offline_amount = offline_amount + :w, "
            "day_amount = CASE WHEN day = :d THEN day_amount + :w ELSE :w END, day = :d",
            [{"t": card_token, "p": pocket, "w": won, "d": text} for pocket, won in parts])

    return run


def split_of(detail: str) -> list[tuple[str, int]]:
    """An entry's split from its detail ([] when it has none)."""
    try:
        doc = json.loads(detail) if detail else {}
    except ValueError:
        return []
    raw = doc.get("split") if isinstance(doc, dict) else None
    if not isinstance(raw, list):
        return []
    try:
        return [(str(p), int(w)) for p, w in raw]
    except (TypeError, ValueError):  # not pairs: not a split this terminal wrote
        return []


def refund_parts(ledger: Ledger, payment_seq: int, payment_detail: str,
                 amount: int) -> list[tuple[str, int]]:
    """What a refund of ``amount`` gives back to each pocket of payment ``payment_seq``: the
    newest drawn first, never more than a pocket still has of it after earlier refunds
    (central reverses the same way). [] when the payment had no split."""
    paid = split_of(payment_detail)
    if not paid:
        return []
    back: dict[str, int] = {}
    try:
        rows = ledger._conn.execute(
            "SELECT detail FROM entries WHERE ref_seq = ? AND kind IN ('refund', 'void')",
            (payment_seq,)).fetchall()
    except sqlite3.Error as err:
        raise LedgerError(f"cannot read the refunds of entry {payment_seq}: {err}") from err
    for (detail,) in rows:
        for pocket, won in split_of(str(detail)):
            back[pocket] = back.get(pocket, 0) + won
    out: list[tuple[str, int]] = []
    want = amount
    for pocket, won in reversed(paid):
        take = min(won - back.get(pocket, 0), want)
        if take > 0:
            out.append((pocket, take))
            want -= take
        if want == 0:
            break
    return out


__all__ = ["MIGRATION", "RECOUNT", "CardPockets", "PocketState", "card_pockets", "counting",
           "expiry_on", "recount", "refund_parts", "seoul_day", "split_of", "state", "store"]
