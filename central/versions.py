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
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from central.incentive_rules import Rules, check_sequence, starts_in_past
from central.incentives import (
    ADJUST_COLUMNS,
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
               recredit: bool = False, now_ms: int | None = None) -> tuple[Rules, bool]:
    """Validate ``text`` and store it as a new version; ``(rules, stored_now)``.

    The same version with the same text again is a no-op; a different text under a version
    already held, a version below the newest, or one taking effect on or before the newest's
    effective date is refused. A version that takes effect today or earlier would change
    points already credited: it is refused unless ``recredit``, which recomputes the unpaid
    months from its effective date as adjustments (:func:`recredit_from`).
    """
    rules = Rules.from_toml(text, source)
    with store.tx() as tx:
        lock_crediting(tx)
        held = held_rules(tx, store_default=False)
        # the version's own checks first (held with other text, older than the newest);
        # a refusal after it is stored rolls the whole transaction back
        if not store_rules(tx, rules):
            return rules, False
        check_sequence(held, rules)
        today = rules.calendar().today(epoch_ms() if now_ms is None else now_ms)
        past = bool(held) and starts_in_past(rules, today)
        if past and not recredit:
            raise ConfigError(
                f"incentive rules version {rules.version} takes effect on "
                f"{rules.effective_from}, not after today ({today}): points already credited "
                "would change. Load it with --recredit to recompute the unpaid months from "
                "that day as adjustments, or give a later effective_from")
        stored = True
        if past:
            recredit_from(tx, [*held, rules], rules, epoch_ms())
        return rules, stored


def recredit_from(tx: Tx, versions: list[Rules], new: Rules, now_ms: int) -> CreditResult:
    """Recompute the unpaid months from ``new.effective_from`` under ``versions``; record
    each entry's difference as an adjustment (cause ``rules vN``). The caller holds the
    crediting lock, inside the transaction that stores ``new``."""
    start = new.effective_from - timedelta(days=new.effective_from.weekday())
    paid = {str(r[0]) for r in tx.all("SELECT month FROM incentive_runs")}
    kinds = ", ".join(f"'{k}'" for k in _KINDS)
    cards = sorted({str(r[0]) for r in tx.all(
        f"SELECT DISTINCT card_token FROM entries WHERE day >= ? AND kind IN ({kinds}) "
        "AND card_token <> ''", (new.effective_from.isoformat(),))})
    result = CreditResult()
    if not cards:
        return result
    columns = ", ".join(ENTRY_COLUMNS)
    entries: list[tuple[Any, ...]] = []
    for i in range(0, len(cards), 500):
        marks, params = tx.in_list(cards[i : i + 500])
        entries += tx.all(
            f"SELECT {columns} FROM entries WHERE card_token IN {marks} AND kind IN ({kinds}) "
            f"AND day >= ? {NOT_CONFIG_REFUSED}", [*params, start.isoformat()])
    # payments that refunds in the window take back from, wherever they fall
    have = {(str(e[1]), int(e[2])) for e in entries}
    wanted = {(str(e[1]), int(e[12])) for e in entries if e[3] in ("refund", "void") and e[12]}
    for tid, seq in sorted(wanted - have):
        entries += tx.all(f"SELECT {columns} FROM entries WHERE terminal_id = ? AND seq = ? "
                          f"{NOT_CONFIG_REFUSED}", (tid, seq))
    entries.sort(key=lambda e: int(e[0]))
    profiles = tx.all("SELECT card_token, rider, updated_ms FROM incentive_profiles")
    target, weeks = _from_scratch(entries, versions, profiles, now_ms)
    current: dict[tuple[str, int], tuple[int, str]] = {}
    for table in ("incentive_credits", "incentive_adjustments"):
        for i in range(0, len(cards), 500):
            marks, params = tx.in_list(cards[i : i + 500])
            for tid, seq, points, rule in tx.all(
                    f"SELECT terminal_id, seq, points, rule FROM {table} WHERE card_token IN "
                    f"{marks} AND day >= ?", [*params, new.effective_from.isoformat()]):
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
                                        separators=(",", ":"))))
        result.credits += 1
        result.points += now_points - was_points
    # Crediting goes on from the recomputed weeks (caps, first rides). Their snapshot
    # versions stay: terminals see a week's new figure with its next credit.
    tx.many("UPDATE incentive_weeks SET points = ?, days_mask = ?, firsts = ? "
            "WHERE card_token = ? AND week_start = ?",
            [(p, m, f, t, w) for t, w, p, m, f in weeks if w >= start.isoformat()])
    tx.insert_all([Rows("incentive_weeks", ("card_token", "week_start", "points", "days_mask",
                                            "version", "firsts"),
                        [(t, w, p, m, 0, f) for t, w, p, m, f in weeks
                         if w >= start.isoformat()],
                        "ON CONFLICT (card_token, week_start) DO NOTHING")])
    tx.insert_all([Rows("incentive_adjustments", ADJUST_COLUMNS, rows,
                        "ON CONFLICT (terminal_id, seq, cause) DO NOTHING")])
    log.info("rules version %d from %s: %d adjustments, %+d points", new.version,
             new.effective_from, result.credits, result.points)
    return result


def _from_scratch(entries: list[tuple[Any, ...]], versions: list[Rules],
                  profiles: list[tuple[Any, ...]], now_ms: int) -> tuple[
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
                store_rules(tx, rules)
            tx.bulk("entries", ENTRY_COLUMNS, rows)
            tx.run("UPDATE log_state SET size = ? WHERE id = 1",
                   (max(int(e[0]) for e in entries) + 1,))
            tx.many("INSERT INTO incentive_profiles (card_token, rider, updated_ms) "
                    "VALUES (?, ?, ?)", [tuple(p) for p in profiles])
        credit_log(store, chunk=max(len(rows), 1), now_ms=now_ms)
        points: dict[tuple[str, int], tuple[int, str]] = {}
        with store.tx(write=False) as tx:
            for table in ("incentive_credits", "incentive_adjustments"):
                for tid, seq, p, rule in tx.all(
                        f"SELECT terminal_id, seq, points, rule FROM {table}"):
                    key = (str(tid), int(seq))
                    points[key] = (points.get(key, (0, ""))[0] + int(p), str(rule))
            weeks = [(str(t), str(w), int(p), int(m), str(f)) for t, w, p, m, f in tx.all(
                "SELECT card_token, week_start, points, days_mask, firsts FROM incentive_weeks")]
        return points, weeks
    finally:
        if store is not None:
            store.close()
        shutil.rmtree(folder, ignore_errors=True)
