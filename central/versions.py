"""Rules versions in time: loading a version, and recrediting when one starts in the past.

Each rules version has an effective date, and every entry is credited by the version in
force on its effective day. A version loaded today with an effective date in the past would
change points already credited (the till showed the old rate): it is loaded only with an
explicit ``--recredit``, which recomputes the unpaid months from that date and records each
difference as an adjustment credit with its reason; a month already paid out is never
touched.

Recomputing uses the crediting code itself: the affected cards' entries from the Monday of
the effective date's week (weekly caps span the whole week) are credited from scratch in a
scratch store with every version held, and each entry's points there are set against its
points here (credits plus earlier adjustments). Campaign claims keep what they were
granted: once per card and campaign depends on claims outside the window.

Each municipality's programme has its own versions (``--municipality``, ``default`` unless
said otherwise); recrediting one touches only the entries of its terminals. A municipality
other than ``default`` has no programme until its first version is loaded: its entries earn
nothing meanwhile (crediting passes them by), and nothing before its first version's
effective date ever earns. Loading that first version with an effective date today or
earlier credits its entries from that date at once, through the recrediting below (as
adjustments, cause ``rules vN``): nothing was credited there before, so nothing changes
that a terminal showed, and no ``--recredit`` is asked for. Only entries the crediting
cursor has passed are recomputed; those beyond it are credited by crediting itself, under
the version now held, so no entry is counted twice.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from central import municipalities
from central.incentive_rules import Rules, check_sequence, starts_in_past
from central.incentives import (
    ADJUST_COLUMNS,
    DEFAULT,
    CreditResult,
    credit_log,
    epoch_ms,
    held_rules,
    lock_crediting,
    store_rules,
)
from central.store import ENTRY_COLUMNS, NOT_CONFIG_REFUSED, Rows, Store, Tx, open_store
from localpay.errors import ConfigError

log = logging.getLogger(__name__)

#: what recrediting recomputes (campaign claims keep their grant)
_KINDS = ("tap", "payment", "refund", "void")


def load_rules(store: Store, text: str, source: str = "incentive rules", *,
               recredit: bool = False, now_ms: int | None = None,
               municipality: str = DEFAULT) -> tuple[Rules, bool]:
    """Validate ``text`` and store it as a new version of ``municipality``'s programme;
    ``(rules, stored_now)``. A first version of a municipality other than ``default``
    taking effect today or earlier credits its entries from that day (module docstring).

    The same version with the same text again is a no-op; a different text under a version
    already held, a version below the newest, or one taking effect on or before the newest's
    effective date is refused. A version that takes effect today or earlier would change
    points already credited: it is refused unless ``recredit``, which recomputes the unpaid
    months from its effective date as adjustments (:func:`recredit_from`).
    """
    rules = Rules.from_toml(text, source)
    with store.tx() as tx:
        lock_crediting(tx)
        municipalities.known(tx, municipality)
        held = held_rules(tx, store_default=False, municipality=municipality)
        # the version's own checks first (held with other text, older than the newest);
        # a refusal after it is stored rolls the whole transaction back
        if not store_rules(tx, rules, municipality):
            return rules, False
        check_sequence(held, rules)
        today = rules.calendar().today(epoch_ms() if now_ms is None else now_ms)
        first = not held and municipality != DEFAULT
        past = (bool(held) or first) and starts_in_past(rules, today)
        if past and not recredit and not first:
            raise ConfigError(
                f"incentive rules version {rules.version} takes effect on "
                f"{rules.effective_from}, not after today ({today}): points already credited "
                "would change. Load it with --recredit to recompute the unpaid months from "
                "that day as adjustments, or give a later effective_from")
        stored = True
        if past:
            recredit_from(tx, [*held, rules], rules, epoch_ms(), municipality=municipality)
        return rules, stored


#: an ``entries`` row is of the municipality ``?`` (its terminal's; ``default`` when the
#: terminal is not registered, as in the scratch store)
_OF_MUNICIPALITY = (f"AND COALESCE((SELECT t.municipality_id FROM terminals t WHERE "
                    f"t.terminal_id = entries.terminal_id), '{DEFAULT}') = ? ")


def recredit_from(tx: Tx, versions: list[Rules], new: Rules, now_ms: int, *,
                  municipality: str = DEFAULT) -> CreditResult:
    """Recompute the unpaid months of ``municipality`` from ``new.effective_from`` under
    ``versions`` (its programme's); record each entry's difference as an adjustment (cause
    ``rules vN``). Only entries the crediting cursor has passed: crediting credits the rest
    under ``versions``. The caller holds the crediting lock, inside the transaction that
    stores ``new``."""
    start = new.effective_from - timedelta(days=new.effective_from.weekday())
    paid = {str(r[0]) for r in tx.all("SELECT month FROM incentive_runs WHERE "
                                      "municipality_id = ?", (municipality,))}
    cursor_row = tx.one("SELECT next_index FROM incentive_cursor WHERE id = 1")
    cursor = int(cursor_row[0]) if cursor_row else 0
    kinds = ", ".join(f"'{k}'" for k in _KINDS)
    cards = sorted({str(r[0]) for r in tx.all(
        f"SELECT DISTINCT card_token FROM entries WHERE day >= ? AND kind IN ({kinds}) "
        f"AND card_token <> '' AND log_index < ? {_OF_MUNICIPALITY}",
        (new.effective_from.isoformat(), cursor, municipality))})
    result = CreditResult()
    if not cards:
        return result
    columns = ", ".join(ENTRY_COLUMNS)
    entries: list[tuple[Any, ...]] = []
    for i in range(0, len(cards), 500):
        marks, params = tx.in_list(cards[i : i + 500])
        entries += tx.all(
            f"SELECT {columns} FROM entries WHERE card_token IN {marks} AND kind IN ({kinds}) "
            f"AND day >= ? AND log_index < ? {_OF_MUNICIPALITY}{NOT_CONFIG_REFUSED}",
            [*params, start.isoformat(), cursor, municipality])
    # payments that refunds in the window take back from, wherever they fall
    have = {(str(e[1]), int(e[2])) for e in entries}
    wanted = {(str(e[1]), int(e[12])) for e in entries if e[3] in ("refund", "void") and e[12]}
    for tid, seq in sorted(wanted - have):
        entries += tx.all(f"SELECT {columns} FROM entries WHERE terminal_id = ? AND seq = ? "
                          f"{NOT_CONFIG_REFUSED}", (tid, seq))
    entries.sort(key=lambda e: int(e[0]))
    profiles = tx.all("SELECT card_token, rider, updated_ms FROM incentive_profiles "
                      "WHERE municipality_id = ?", (municipality,))
    target, weeks = _from_scratch(entries, versions, profiles, now_ms, municipality)
    current: dict[tuple[str, int], tuple[int, str]] = {}
    for table in ("incentive_credits", "incentive_adjustments"):
        for i in range(0, len(cards), 500):
            marks, params = tx.in_list(cards[i : i + 500])
            for tid, seq, points, rule in tx.all(
                    f"SELECT terminal_id, seq, points, rule FROM {table} WHERE card_token IN "
                    f"{marks} AND day >= ? AND municipality_id = ?",
                    [*params, new.effective_from.isoformat(), municipality]):
                key = (str(tid), int(seq))
                was = current.get(key, (0, str(rule)))
                current[key] = (was[0] + int(points), str(rule))
    rows: list[tuple[Any, ...]] = []
    by_key = {(str(e[1]), int(e[2])): e for e in entries}
    for key in sorted(set(target) | set(current)):
        e = by_key.get(key)
        if e is None or str(e[8]) < new.effective_from.isoformat():
            continue  # before the version: credited by the versions before it, unchanged
        day = str(e[8])
        if day[:7] in paid:
            continue  # a month paid out is never touched
        now_points, rule = target.get(key, (0, ""))
        was_points, was_rule = current.get(key, (0, ""))
        if now_points == was_points:
            continue
        pay = day[:7]
        rows.append((key[0], key[1], f"rules v{new.version}", int(e[0]), str(e[4]),
                     rule or was_rule, now_points - was_points, new.version, day, pay,
                     now_ms, json.dumps({"reason": f"rules version {new.version} from "
                                         f"{new.effective_from}", "was": was_points,
                                         "now": now_points}, sort_keys=True,
                                        separators=(",", ":")), municipality))
        result.credits += 1
        result.points += now_points - was_points
    # Crediting goes on from the recomputed weeks (caps, first rides). Their snapshot
    # versions stay: terminals see a week's new figure with its next credit.
    tx.many("UPDATE incentive_weeks SET points = ?, days_mask = ?, firsts = ? "
            "WHERE municipality_id = ? AND card_token = ? AND week_start = ?",
            [(p, m, f, municipality, t, w) for t, w, p, m, f in weeks
             if w >= start.isoformat()])
    tx.insert_all([Rows("incentive_weeks", ("card_token", "week_start", "points", "days_mask",
                                            "version", "firsts", "municipality_id"),
                        [(t, w, p, m, 0, f, municipality) for t, w, p, m, f in weeks
                         if w >= start.isoformat()],
                        "ON CONFLICT (municipality_id, card_token, week_start) DO NOTHING")])
    tx.insert_all([Rows("incentive_adjustments", (*ADJUST_COLUMNS, "municipality_id"), rows,
                        "ON CONFLICT (terminal_id, seq, cause) DO NOTHING")])
    log.info("rules version %d of %s from %s: %d adjustments, %+d points", new.version,
             municipality, new.effective_from, result.credits, result.points)
    return result


def _from_scratch(entries: list[tuple[Any, ...]], versions: list[Rules],
                  profiles: list[tuple[Any, ...]], now_ms: int,
                  municipality: str = DEFAULT) -> tuple[
        dict[tuple[str, int], tuple[int, str]], list[tuple[str, str, int, int, str]]]:
    """Credit ``entries`` from nothing with the crediting code, in a scratch store; each
    entry's points (credits and adjustments) and rule, and the weeks it leaves."""
    folder = Path(tempfile.mkdtemp(prefix="localpay-recredit-"))
    store: Store | None = None
    try:
        store = open_store(f"sqlite:///{folder / 'scratch.sqlite'}", 1)
        blob = {ENTRY_COLUMNS.index(c) for c in ("entry_hash", "data", "signature")}
        rows = [tuple(b"" if i in blob else v for i, v in enumerate(e)) for e in entries]
        with store.tx() as tx:
            lock_crediting(tx)
            for rules in sorted(versions, key=lambda r: r.version):
                store_rules(tx, rules, municipality)
            if municipality != DEFAULT:
                # the entries' terminals, so that crediting reads their municipality
                tx.many("INSERT INTO terminals (terminal_id, public_key, last_hash, added_ms, "
                        "municipality_id) VALUES (?, ?, ?, 0, ?)",
                        [(t, b"", b"", municipality) for t in sorted({str(e[1])
                                                                      for e in entries})])
            tx.bulk("entries", ENTRY_COLUMNS, rows)
            tx.run("UPDATE log_state SET size = ? WHERE id = 1",
                   (max(int(e[0]) for e in entries) + 1,))
            tx.many("INSERT INTO incentive_profiles (card_token, rider, updated_ms, "
                    "municipality_id) VALUES (?, ?, ?, ?)",
                    [(*p, municipality) for p in profiles])
        credit_log(store, chunk=max(len(rows), 1), now_ms=now_ms)
        points: dict[tuple[str, int], tuple[int, str]] = {}
        with store.tx(write=False) as tx:
            for table in ("incentive_credits", "incentive_adjustments"):
                for tid, seq, p, rule in tx.all(
                        f"SELECT terminal_id, seq, points, rule FROM {table} "
                        "WHERE municipality_id = ?", (municipality,)):
                    key = (str(tid), int(seq))
                    points[key] = (points.get(key, (0, ""))[0] + int(p), str(rule))
            weeks = [(str(t), str(w), int(p), int(m), str(f)) for t, w, p, m, f in tx.all(
                "SELECT card_token, week_start, points, days_mask, firsts FROM incentive_weeks "
                "WHERE municipality_id = ?", (municipality,))]
        return points, weeks
    finally:
        if store is not None:
            store.close()
        shutil.rmtree(folder, ignore_errors=True)
