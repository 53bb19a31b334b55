"""The keys of partners that call central with ``Authorization: Bearer <key>``: the banks and
apps that sell top-ups (:mod:`central.topups`) and the apps that pay tills' codes
(:mod:`central.mpm_payments`), each kind in a registry (table) of its own so that one kind's
key never opens the other's route. Both registries are kept by the same functions
(:func:`add`, :func:`disable`, :func:`find`), each caller naming its table and its refusals.

A key is ``<name>.<secret>`` with 256 random bits of secret; only its SHA-256 is kept, so a
salt or a slow hash is needless. The name says which row to compare with, and the
comparison takes as long whether the name exists or not.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import TYPE_CHECKING

from central import municipalities
from localpay.errors import LocalpayError

if TYPE_CHECKING:
    from central.store import Store

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


_NO_HASH = key_hash("")


def new_key(name: str) -> tuple[str, str]:
    """A new key for ``name`` and the hash to keep."""
    key = f"{name}.{secrets.token_urlsafe(32)}"
    return key, key_hash(key)


def find(store: Store, table: str, key: object, refused: type[LocalpayError],
         what: str) -> tuple[str, str]:
    """The name and municipality of the active partner of ``table`` whose key ``key`` is;
    ``refused`` (saying ``what``, e.g. "partner") for anything else."""
    name, dot, _ = key.partition(".") if isinstance(key, str) else ("", "", "")
    if not isinstance(key, str) or not dot or not NAME_RE.fullmatch(name) or len(key) > 200:
        raise refused(f"not a {what} key")
    with store.tx(write=False) as tx:
        row = tx.one(f"SELECT key_hash, active, municipality_id FROM {table} "
                     "WHERE partner_id = ?", (name,))
    stored, active = (str(row[0]), int(row[1])) if row else (_NO_HASH, 0)
    # constant time: a timing difference must not tell how much of a guess was right
    same = hmac.compare_digest(key_hash(key), stored)
    if row is None or not same:
        raise refused(f"unknown {what} key")
    if not active:
        raise refused(f"{what} {name} is disabled")
    return name, str(row[2])


def add(store: Store, table: str, name: str, municipality: str, taken: LocalpayError) -> str:
    """Register partner ``name`` of ``municipality`` (a registered one) in ``table`` and
    return its key, shown this once; ``taken`` when the name already has a key, in any
    municipality (the key names no municipality)."""
    key, kept = new_key(name)
    with store.tx() as tx:
        municipalities.known(tx, municipality)
        if tx.one(f"SELECT 1 FROM {table} WHERE partner_id = ?", (name,)) is not None:
            raise taken
        tx.run(f"INSERT INTO {table} (municipality_id, partner_id, key_hash, created_ms, "
               "active) VALUES (?, ?, ?, ?, 1)", (municipality, name, kept, _now_ms()))
    return key


def disable(store: Store, table: str, name: str, municipality: str, unknown: LocalpayError,
            *, changes: str | None = None, reason: str = "") -> bool:
    """Refuse the key of partner ``name`` of ``municipality`` in ``table`` from now on (a
    leaked key, a partner gone); what it did stays. ``unknown`` when there is no such
    partner; False when it was disabled already. With ``changes`` (a table), the disabling
    is recorded there with its time and ``reason``, once."""
    with store.tx() as tx:
        row = tx.one_for_update(f"SELECT active FROM {table} WHERE municipality_id = ? "
                                "AND partner_id = ?", (municipality, name))
        if row is None:
            raise unknown
        if not int(row[0]):
            return False
        tx.run(f"UPDATE {table} SET active = 0 WHERE municipality_id = ? AND partner_id = ?",
               (municipality, name))
        if changes is not None:
            tx.run(f"INSERT INTO {changes} VALUES (?, ?, ?, 'disabled', ?)",
                   (municipality, name, _now_ms(), reason))
    return True


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
