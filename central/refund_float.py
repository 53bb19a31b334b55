"""A refund waits for its merchant's payable a bounded time, then the refund float pays it.

A waiting refund (:mod:`central.spending`) is approved at the till: the citizen was shown
it. A merchant that never takes another payment (a shop that closed, one removed from the
programme) would keep it waiting forever. :func:`pay_overdue` pays each refund that has
waited longer than ``wait_days`` (:data:`central.receivables.DEFAULT_WAIT_DAYS`, counted
from the refund's effective time) from ``programme:refunds:float`` into exactly the
pockets its payment drew, newest drawn first, and records the merchant's debt
(:mod:`central.receivables`), which settlement takes back from the merchant's next
payments. A refund the payable holds by then is paid by the payable, as always.

When the float holds less than the refund, the refund keeps waiting: ``central report``
lists it (``REFUND WAITING``) until :func:`fund` puts money in the float.

It runs under the spending cursor's lock, and each refund leaves the waiting list in the
transaction that posts it: run twice, it posts once. A payment at that merchant afterwards
fills the payable, and settlement repays the float from it; the refund is not posted again.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from central import books, receivables, spending
from central.store import Store, Tx
from localpay.errors import ConfigError


@dataclass
class OverdueResult:
    #: refunds posted from the float, and their won
    paid: int = 0
    paid_won: int = 0
    #: refunds past the wait that the float could not pay (``terminal_id``, ``seq``,
    #: ``amount``, ``since_ms``)
    short: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Float:
    """Pays from the float each waiting refund older than the wait (spending's fallback)."""

    def __init__(self, municipality: str, now_ms: int, wait_ms: int) -> None:
        self.municipality, self.now_ms, self.wait_ms = municipality, now_ms, wait_ms
        self.out = OverdueResult()

    def __call__(self, tx: Tx, e: spending.SpendEntry, merchant: str, want: int
                 ) -> spending.Payer:
        if self.now_ms - e.when_ms < self.wait_ms:
            return None
        receivables.open_accounts(tx, self.municipality, merchant, self.now_ms)
        if books.balance(tx, receivables.FLOAT, municipality=self.municipality) < want:
            self.out.short.append({"terminal_id": e.terminal_id, "seq": e.seq,
                                   "amount": want, "since_ms": e.when_ms})
            return None
        self.out.paid += 1
        self.out.paid_won += want
        detail = json.dumps({"day": spending.seoul_day(e.when_ms).isoformat(),
                             "entry": f"{e.terminal_id}/{e.seq}"}, sort_keys=True)
        return receivables.FLOAT, [books.Transfer(
            receivables.merchant_receivable(merchant), receivables.ADVANCED, want,
            "correction", f"refund-advance:{e.terminal_id}:{e.seq}", detail)]


def pay_overdue(store: Store, *, municipality: str = spending.DEFAULT_MUNICIPALITY,
                wait_days: int = receivables.DEFAULT_WAIT_DAYS,
                now_ms: int | None = None) -> OverdueResult:
    """Pay from the float every waiting refund of ``municipality`` older than
    ``wait_days`` that its payable still cannot pay (see the module docstring)."""
    if isinstance(wait_days, bool) or not isinstance(wait_days, int) or wait_days < 0:
        raise ConfigError(f"wait days {wait_days!r}: a whole number of days, 0 or more")
    spending.ensure_schema(store, municipality)
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    paying = _Float(municipality, now, wait_days * receivables.DAY_MS)
    with store.tx() as tx:
        spending.lock_spending(tx, municipality)
        spending.retry_waiting(tx, paying, municipality=municipality)
    return paying.out


def fund(store: Store, amount: int, ref: str, *,
         municipality: str = spending.DEFAULT_MUNICIPALITY,
         at_ms: int | None = None) -> tuple[bool, int]:
    """Put ``amount`` won of the city's money into the refund float: ``bank:outside`` ->
    ``programme:refunds:funding`` (``funding``) -> the float (``budget``), refs
    ``refunds-funding:refunds:<ref>`` and ``refunds-budget:refunds:<ref>``. Idempotent on
    ``ref``. Returns whether it moved anything and what the float holds after."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ConfigError(f"amount {amount!r}: a whole number of won above zero")
    if not isinstance(ref, str) or not re.fullmatch(r"[^\s:]{1,100}", ref):
        raise ConfigError(f"funding ref {ref!r}: 1 to 100 characters, no ':' and no spaces")
    with store.tx() as tx:
        for account_id in (books.BANK_OUTSIDE, receivables.FUNDING):
            books.open_account(tx, account_id, municipality=municipality, at_ms=at_ms)
        receivables.open_accounts(tx, municipality, at_ms=at_ms)
        posted = books.transfer(tx, [
            books.Transfer(books.BANK_OUTSIDE, receivables.FUNDING, amount, "funding",
                           f"refunds-funding:refunds:{ref}"),
            books.Transfer(receivables.FUNDING, receivables.FLOAT, amount, "budget",
                           f"refunds-budget:refunds:{ref}")],
            municipality=municipality, at_ms=at_ms)
        held = books.balance(tx, receivables.FLOAT, municipality=municipality)
    return posted[0].fresh, held


_WHEN = "CASE WHEN e.effective_ms > 0 THEN e.effective_ms ELSE e.wall_ms END"


def waiting(tx: Tx, municipality: str, now_ms: int,
            wait_days: int = receivables.DEFAULT_WAIT_DAYS) -> list[dict[str, Any]]:
    """The refunds of ``municipality`` still waiting past ``wait_days`` at ``now_ms``
    (``terminal_id``, ``seq``, ``amount``, ``since_ms``), oldest first; none in a store
    that never posted."""
    if not tx.store.columns(tx, "pocket_waiting_refunds"):
        return []
    return [{"terminal_id": str(t), "seq": int(s), "amount": int(a), "since_ms": int(w)}
            for t, s, a, w in tx.all(
                f"SELECT w.terminal_id, w.seq, e.amount, {_WHEN} FROM pocket_waiting_refunds "
                "w JOIN entries e ON e.log_index = w.log_index WHERE w.municipality_id = ? "
                f"AND {_WHEN} <= ? ORDER BY w.log_index",
                (municipality, now_ms - wait_days * receivables.DAY_MS))]


__all__ = ["OverdueResult", "fund", "pay_overdue", "waiting"]
