"""Refunds that wait for the merchant's payable (``pocket_waiting_refunds``).

A refund given after its payment's money was settled to the merchant, when the merchant's
payable holds less than the refund, waits rather than being refused (the citizen was shown
it at the till): :mod:`central.spending` parks it here (:func:`park`), tries the waiting
refunds again in log order at the end of every chunk (:func:`retry`), and posts each as soon
as the payable holds it (at the refund's own effective time, so its business day is its
own), once. Later refunds of the same payment wait behind it (:func:`behind`). The wait is
bounded: a :data:`Fallback` (:mod:`central.refund_float`) may pay one that waited too long
(:func:`payer`).

The table is created with spending's (:data:`central.spending.TABLES`); everything here runs
inside the caller's transaction, which holds the spending cursor's lock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from central import accounts, books
from central.store import Tx

if TYPE_CHECKING:
    from central.spending import SpendEntry

#: the account a refund is paid from and the transfers besides its reversal; None: it waits
Payer = tuple[str, list[books.Transfer]] | None
#: pays a waiting refund its payable cannot (tx, refund, merchant, won): central.refund_float
Fallback = Callable[[Tx, "SpendEntry", str, int], Payer]


def park(tx: Tx, municipality: str, e: SpendEntry, merchant: str) -> None:
    """Refund ``e`` (of ``merchant``'s payment) waits; parked once however often asked."""
    tx.run("INSERT INTO pocket_waiting_refunds VALUES (?, ?, ?, ?, ?, ?) "
           "ON CONFLICT DO NOTHING", (municipality, e.terminal_id, e.seq, e.log_index,
                                      e.ref_seq, merchant))


def behind(tx: Tx, municipality: str, e: SpendEntry) -> bool:
    """Whether an earlier refund of ``e``'s payment waits: what is left depends on it."""
    return tx.one("SELECT 1 FROM pocket_waiting_refunds WHERE municipality_id = ? AND "
                  "terminal_id = ? AND ref_seq = ?", (municipality, e.terminal_id,
                                                      e.ref_seq)) is not None


def payer(tx: Tx, municipality: str, e: SpendEntry, merchant: str, want: int,
          fallback: Fallback | None) -> Payer:
    """The account refund ``e`` is paid from, with any transfers besides the reversal: the
    merchant's payable, else what ``fallback`` answers (None: it waits)."""
    payable = books.merchant_payable(merchant)
    # held until the refund is posted: a settlement of another worker would otherwise drain
    # the payable after this read, the books refuse the refund, and it was dropped
    accounts.lock(tx, [payable], municipality=municipality)
    held = books.find_account(tx, payable, municipality=municipality)
    if held is not None and held.balance >= want:
        return payable, []
    return None if fallback is None else fallback(tx, e, merchant, want)


def retry(tx: Tx, municipality: str, entry: type[SpendEntry],
          refund: Callable[[SpendEntry], bool]) -> None:
    """Post the waiting refunds the payables now hold, in log order: ``refund(e)`` posts
    one, False when it still waits; a refund still waiting keeps the later ones of its
    payment waiting too. ``entry`` is the row read (spending's, which this module is
    below)."""
    blocked: set[tuple[str, int]] = set()
    for row in tx.all(
            f"SELECT {', '.join('e.' + f for f in entry._fields)} FROM "
            "pocket_waiting_refunds w JOIN entries e ON e.log_index = w.log_index "
            "WHERE w.municipality_id = ? ORDER BY w.log_index", (municipality,)):
        e = entry(*row)
        if (e.terminal_id, e.ref_seq) in blocked or not refund(e):
            blocked.add((e.terminal_id, e.ref_seq))
            continue
        tx.run("DELETE FROM pocket_waiting_refunds WHERE municipality_id = ? AND "
               "terminal_id = ? AND seq = ?", (municipality, e.terminal_id, e.seq))


__all__ = ["Fallback", "Payer", "behind", "park", "payer", "retry"]
