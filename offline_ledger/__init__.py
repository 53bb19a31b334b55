"""The offline ledger: append-only, hash-chained, signed entries in SQLite.

Imports nothing else of localpay's but the shared error tree.
"""

from offline_ledger.anchor import ClockAnchor, boot_now
from offline_ledger.encoding import KINDS, EntryFields, decode, encode, entry_hash
from offline_ledger.ledger import CardState, Entry, Head, Ledger, VerifyReport

__all__ = [
    "KINDS",
    "CardState",
    "ClockAnchor",
    "Entry",
    "EntryFields",
    "Head",
    "Ledger",
    "VerifyReport",
    "boot_now",
    "decode",
    "encode",
    "entry_hash",
]
