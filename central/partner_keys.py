"""The keys of partners that call central with ``Authorization: Bearer <key>``: the banks and
apps that sell top-ups (:mod:`central.topups`) and the apps that pay tills' codes
(:mod:`central.mpm_payments`), each kind in a registry (table) of its own so that one kind's
key never opens the other's route.

A key is ``<name>.<secret>`` with 256 random bits of secret; only its SHA-256 is kept, so a
salt or a slow hash is needless. The name says which row to compare with, and the
comparison takes as long whether the name exists or not.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import TYPE_CHECKING

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
