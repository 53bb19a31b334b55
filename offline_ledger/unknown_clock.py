"""The won this terminal took with an unknown clock that central has not yet received.

The figure is the won standing on payments and fares (``payment``, ``tap``) recorded after
the last sync whose detail says ``"clock": "unknown"`` (``terminal.clock``), less what
refunds and voids gave back of those same payments, whatever the refund's own clock. A
refund of a payment already synced, or of one made with a trusted clock, does not count: it
gives no room back (it moves no won whose date is a guess among those counted here).

It is derived from the entries alone, like the card counters' recount in
:meth:`Ledger.mark_synced`, so it needs no table, no migration and no write in the append's
transaction: it cannot drift from the ledger, and it survives a restart by being counted
again. For the tap path it is kept in memory, as :attr:`Ledger.exposure` is: a new sync
(``synced_upto`` moved, by this connection or another) counts again from the entries after
it; otherwise only the entries appended since the last answer are read (one, on a tap).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from localpay.errors import LedgerError

if TYPE_CHECKING:  # a leaf beside the ledger: it reads the ledger's connection, like pockets
    from offline_ledger.ledger import Ledger

#: the signed won of the counted entries with ``seq > :after``, ``:synced`` the synced seq
COUNTED = (
    "SELECT COALESCE(SUM(CASE WHEN e.kind IN ('payment', 'tap') THEN e.amount "
    "ELSE -e.amount END), 0) FROM entries e "
    # the payment a refund gives back to, only while it is itself still offline
    "LEFT JOIN entries p ON p.seq = e.ref_seq AND e.ref_seq > :synced "
    "WHERE e.seq > :after AND ("
    "(e.kind IN ('payment', 'tap') AND json_extract(e.detail, '$.clock') = 'unknown') OR "
    "(e.kind IN ('refund', 'void') AND json_extract(p.detail, '$.clock') = 'unknown'))"
)


class UnknownClockWon:
    """:meth:`won` of one ledger (see the module docstring). Not thread-safe, as the
    terminal that holds it."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        #: the synced seq the figure counts from (None: not counted yet), the last seq it
        #: has read, and the figure
        self._synced: int | None = None
        self._seen = 0
        self._won = 0

    def won(self) -> int:
        """The won standing (see the module docstring), never below 0. Raises
        :class:`~localpay.errors.LedgerError` when the ledger cannot be read."""
        ledger = self.ledger
        try:
            synced = ledger.synced_upto()
            if synced != self._synced:
                self._synced, self._seen, self._won = synced, synced, 0
            head = ledger.head.seq
            # with nothing appended since, an empty range of the primary key: one probe
            row = ledger._conn.execute(COUNTED, {"after": self._seen,
                                                 "synced": synced}).fetchone()
            self._won += int(row[0])
            self._seen = head
        except sqlite3.Error as err:
            raise LedgerError(f"cannot count the won taken with an unknown clock: {err}") from err
        # a refund never gives back more than its payment (the core refuses it), so this
        # floor holds only against a ledger written by something else
        return max(self._won, 0)


__all__ = ["COUNTED", "UnknownClockWon"]
