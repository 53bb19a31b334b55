"""The canonical entry encoding, defined once in :mod:`localpay.encoding` (shared with the
central service) and re-exported here for the ledger's users."""

from localpay.encoding import (
    KINDS,
    MAGIC,
    ZERO_HASH,
    EntryFields,
    canonical_detail,
    decode,
    encode,
    entry_hash,
)

__all__ = [
    "KINDS",
    "MAGIC",
    "ZERO_HASH",
    "EntryFields",
    "canonical_detail",
    "decode",
    "encode",
    "entry_hash",
]
