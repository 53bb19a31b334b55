"""What the ledger reads back: a committed entry, a card's state for the risk rules, a card's
points as of the last sync, the chain's head and a verification's report: plain frozen
values, kept apart from :class:`offline_ledger.ledger.Ledger`, which makes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from offline_ledger import encoding
from offline_ledger.encoding import EntryFields


@dataclass(frozen=True, slots=True)
class Entry:
    """One committed ledger entry."""

    fields: EntryFields
    entry_hash: bytes
    signature: bytes

    @property
    def seq(self) -> int:
        return self.fields.seq

    @property
    def kind(self) -> str:
        return self.fields.kind

    @property
    def amount(self) -> int:
        return self.fields.amount

    def encoded(self) -> bytes:
        return encoding.encode(self.fields)

    def as_dict(self) -> dict[str, Any]:
        f = self.fields
        return {
            "seq": f.seq,
            "kind": f.kind,
            "terminal_id": f.terminal_id,
            "card_token": f.card_token,
            "amount": f.amount,
            "ref_seq": f.ref_seq,
            "place": f.place,
            "wall_ms": f.wall_ms,
            "mono": f.mono,
            "detail": f.detail,
            "prev_hash": f.prev_hash.hex(),
            "entry_hash": self.entry_hash.hex(),
            "signature": self.signature.hex(),
        }


@dataclass(frozen=True, slots=True)
class CardState:
    """What the ledger knows about one card, read in one query for the risk rules."""

    offline_amount: int = 0
    offline_count: int = 0
    last_tap_mono: int = 0
    last_tap_seq: int = 0
    balance: int | None = None
    denied: str | None = None


@dataclass(frozen=True, slots=True)
class PointsRow:
    """A card's bus points this week, as of the last sync (see ``set_points_snapshot``)."""

    week_start: str
    points_week: int
    days_mask: int
    rider: str
    synced_at: int


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    entry_hash: bytes
    mono: int


@dataclass(frozen=True, slots=True)
class VerifyReport:
    entries: int
    first_seq: int
    last_seq: int
    head_hash: bytes

    def summary(self) -> str:
        if not self.entries:
            return "ledger intact: no entries"
        return (
            f"ledger intact: {self.entries} entries, seq {self.first_seq}..{self.last_seq}, "
            f"head {self.head_hash.hex()[:16]}"
        )


__all__ = ["CardState", "Entry", "Head", "PointsRow", "VerifyReport"]
