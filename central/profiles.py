"""Riders' profiles: the category of a card (adult, youth, child), set by the operator.

Two readers use them. Crediting (:mod:`central.incentives`) applies the category's weekly
bus cap; validators charge the category's fare offline, so every change travels to them with
the points snapshot (``GET /v1/points?riders_since=N``, :func:`profiles_delta`).

Each municipality's programme has its own profiles (``municipality_id``, ``default``
unless said otherwise): a card's category in one municipality does not apply in another.

``incentive_profiles (card_token, rider, updated_ms, version)``: every change takes the next
``version`` (the largest so far + 1, one per card changed) in its own transaction, under the
log lock (:meth:`Tx.lock_log`, as the deny list and balances do), so versions are committed
in the order they are numbered and a reader that has seen version N has seen all before it.

A removal keeps the row with ``rider = ''`` and a new version: a deleted row could not tell
terminals to forget the card. Crediting reads ``''`` as "no profile" (it falls back to the
tap's own ``rider``), and so do the statement (``rider`` is then ``''``) and the terminals.
Rows from before profiles had versions (``version = 0``) are sent to a terminal that starts
from nothing (``since = 0``) and never again unless they change.

A file of ``card_token,rider`` (:func:`read_profiles`) is checked whole before anything is
set, as a balances file is (:func:`central.rules.read_card_file`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from central.incentive_rules import RIDERS
from central.rules import read_card_file
from central.service import PAGE
from central.store import Store, Tx
from localpay.errors import ConfigError

DEFAULT = "default"

#: cards per statement when a change reads many
_CHUNK = 5000


def _now() -> int:
    return int(time.time() * 1000)


def _next_version(tx: Tx) -> int:
    # one sequence over every municipality: a terminal's reads stay in commit order
    row = tx.one("SELECT COALESCE(MAX(version), 0) FROM incentive_profiles")
    return int(row[0] if row else 0) + 1


def rider_value(cell: str) -> str:
    """A profile file's rider cell: one of :data:`RIDERS`."""
    if cell not in RIDERS:
        raise ConfigError(f"rider {cell[:40]!r} is not one of {', '.join(RIDERS)}")
    return cell


def read_profiles(path: Path) -> dict[str, str]:
    """A file of ``card_token,rider``, checked whole: see :func:`central.rules.read_card_file`."""
    return read_card_file(path, "rider", rider_value)


def set_profiles(store: Store, riders: dict[str, str], *,
                 municipality: str = DEFAULT) -> int:
    """Set the rider category of cards (token -> adult/youth/child) in ``municipality``'s
    programme; return how many were given. A card whose category is already that one keeps
    its version: loading the same file again sends terminals nothing."""
    for token, rider in riders.items():
        if not token or rider not in RIDERS:
            raise ConfigError(f"profile {token[:12]!r}: rider must be one of {RIDERS}")
    now = _now()
    tokens = sorted(riders)
    with store.tx() as tx:
        tx.lock_log()
        held: dict[str, str] = {}
        for i in range(0, len(tokens), _CHUNK):
            where, param = tx.any_of("card_token", tokens[i:i + _CHUNK])
            held.update((str(t), str(r)) for t, r in tx.all(
                f"SELECT card_token, rider FROM incentive_profiles WHERE municipality_id = ? "
                f"AND {where}", (municipality, param)))
        changed = [t for t in tokens if held.get(t) != riders[t]]
        first = _next_version(tx)
        tx.many("INSERT INTO incentive_profiles (card_token, rider, updated_ms, version, "
                "municipality_id) VALUES (?, ?, ?, ?, ?) ON CONFLICT (municipality_id, "
                "card_token) DO UPDATE SET rider = excluded.rider, "
                "updated_ms = excluded.updated_ms, version = excluded.version",
                [(t, riders[t], now, first + i, municipality)
                 for i, t in enumerate(changed)])
    return len(riders)


def remove_profile(store: Store, token: str, *, municipality: str = DEFAULT) -> bool:
    """Forget a card's category in ``municipality`` (its taps' own category applies again);
    ``False`` when it had none. Kept as ``rider = ''`` with a new version, so that terminals
    hear of it."""
    with store.tx() as tx:
        tx.lock_log()
        row = tx.one("SELECT rider FROM incentive_profiles WHERE municipality_id = ? AND "
                     "card_token = ?", (municipality, token))
        if row is None or not row[0]:
            return False
        tx.run("UPDATE incentive_profiles SET rider = '', updated_ms = ?, version = ? "
               "WHERE municipality_id = ? AND card_token = ?",
               (_now(), _next_version(tx), municipality, token))
        return True


def profiles_delta(store: Store, since: int, limit: int = PAGE, *,
                   municipality: str = DEFAULT) -> dict[str, Any]:
    """Profiles of ``municipality`` changed after version ``since``, for its terminals:
    ``{"version": N, "changes": {token: category}}``, where category ``""`` is a removed
    profile. At most ``limit`` changes; ``version`` is then the last one sent, and asking
    again from it gets the rest. Versions are one sequence over every municipality.
    """
    with store.tx(write=False) as tx:
        return profiles_delta_in(tx, since, limit, municipality=municipality)


def profiles_delta_in(tx: Tx, since: int, limit: int = PAGE, *,
                      municipality: str = DEFAULT) -> dict[str, Any]:
    """:func:`profiles_delta`, read in ``tx`` (a round reads its parts together)."""
    # The top first, and only rows up to it: a change committed between the two reads
    # waits for the next ask instead of being skipped by a version read after it.
    top_row = tx.one("SELECT COALESCE(MAX(version), 0) FROM incentive_profiles")
    top = int(top_row[0]) if top_row else 0
    rows = tx.all("SELECT card_token, rider, version FROM incentive_profiles "
                  "WHERE municipality_id = ? AND version > ? AND version <= ? "
                  "ORDER BY version LIMIT ?", (municipality, since, top, limit))
    legacy = tx.all("SELECT card_token, rider FROM incentive_profiles WHERE "
                    "municipality_id = ? AND version = 0 AND rider <> ''",
                    (municipality,)) if since == 0 else []
    version = max(top, since)
    if len(rows) == limit:
        version = int(rows[-1][2])   # one version per card: no version is split
    changes = {str(t): str(r) for t, r in legacy}
    changes.update((str(t), str(r)) for t, r, _ in rows)
    return {"version": version, "changes": changes}
