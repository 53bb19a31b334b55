"""The day's cash-receipt requests (현금영수증), listed for the issuing service.

A till records a request as a ``cash_receipt`` entry of its own chain
(:mod:`terminal.cash_receipt`): amount 0, no card, ``ref_seq`` the payment's seq, and in its
detail the payment's amount and hash prefix, the purpose, the kind of identity and its keyed
token (never the number). The ingest appends it like any entry; no money path selects the
kind, so it moves nothing in the books, the crediting or the settlement.

:func:`day_requests` lists one day's requests (by central's effective time, as every day
here) of one municipality's terminals, with the merchant the terminal belongs to and its
business registration number, and checks each against the payment it names in the central
chain: ``problem`` says when that payment is not there, is no payment, or its hash or amount
differ from what the request says (the row is listed all the same: the issuing service
decides). ``refunded`` is the won given back of the payment at central so far: a refund
after the request is the issuing service's cancellation to make.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from central import municipalities

if TYPE_CHECKING:
    from central.service import CentralLog
    from central.store import Tx

#: the columns of a row, in order (``central cash-receipts`` and its CSV)
COLUMNS = ("terminal_id", "merchant_id", "merchant_name", "brn", "payment_seq", "amount",
           "purpose", "identity", "token", "display", "time", "request_seq", "refunded",
           "problem")


@dataclass(frozen=True)
class CashReceiptRow:
    terminal_id: str
    merchant_id: str
    merchant_name: str
    #: the merchant's business registration number, 10 digits ("" when the terminal
    #: belongs to no registered merchant)
    brn: str
    payment_seq: int
    amount: int
    purpose: str
    identity: str
    token: str
    display: str
    #: the request's effective time, ISO 8601 in the service's zone
    time: str
    request_seq: int
    refunded: int
    problem: str

    def as_dict(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in COLUMNS}


def _payments(tx: Tx, day: str, wanted: set[tuple[str, int]]) -> dict[tuple[str, int],
                                                                       tuple[str, int, str]]:
    """``(terminal, seq) -> (kind, amount, hash hex)`` of the entries ``wanted``: first
    among the entries of ``day`` and the day before (a request comes the day of its payment,
    or just after midnight), through the day index; the rest one by one."""
    found: dict[tuple[str, int], tuple[str, int, str]] = {}
    if not wanted:
        return found
    before = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
    terminals = sorted({t for t, _ in wanted})
    marks = ", ".join("?" for _ in terminals)
    for t, seq, kind, amount, digest in tx.all(
            "SELECT terminal_id, seq, kind, amount, entry_hash FROM entries WHERE day IN (?, ?) "
            f"AND terminal_id IN ({marks}) AND kind = 'payment'", (before, day, *terminals)):
        if (str(t), int(seq)) in wanted:
            found[(str(t), int(seq))] = (str(kind), int(amount), bytes(digest).hex())
    for t, seq in sorted(wanted - set(found)):
        row = tx.one("SELECT kind, amount, entry_hash FROM entries WHERE terminal_id = ? "
                     "AND seq = ?", (t, seq))
        if row is not None:
            found[(t, seq)] = (str(row[0]), int(row[1]), bytes(row[2]).hex())
    return found


def _given_back(tx: Tx, day: str, wanted: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Won refunded or voided at central of each payment ``wanted``, from the day before
    ``day`` on (a correction comes after its payment), through the day index."""
    back: dict[tuple[str, int], int] = {}
    if not wanted:
        return back
    before = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
    terminals = sorted({t for t, _ in wanted})
    marks = ", ".join("?" for _ in terminals)
    for t, ref, amount in tx.all(
            "SELECT terminal_id, ref_seq, amount FROM entries WHERE day >= ? "
            f"AND terminal_id IN ({marks}) AND kind IN ('refund', 'void')", (before, *terminals)):
        key = (str(t), int(ref))
        if key in wanted:
            back[key] = back.get(key, 0) + int(amount)
    return back


def _problem(request: dict[str, Any], payment: tuple[str, int, str] | None,
             seq: int) -> str:
    if payment is None:
        return f"payment {seq} is not in the central chain"
    kind, amount, digest = payment
    if kind != "payment":
        return f"entry {seq} is a {kind}, not a payment"
    if not digest.startswith(str(request.get("payment_hash", ""))):
        return f"payment {seq}'s hash does not begin {request.get('payment_hash')}"
    if amount != request.get("amount"):
        return f"payment {seq} is {amount} won, the request says {request.get('amount')}"
    return ""


def day_requests(service: CentralLog, day: str,
                 municipality: str = municipalities.DEFAULT) -> list[CashReceiptRow]:
    """The cash-receipt requests of ``day`` made at ``municipality``'s terminals, by
    terminal and seq; ``UnknownMunicipalityError`` when it is not registered."""
    m = municipality
    with service.store.tx(write=False) as tx:
        municipalities.require(tx, m)
        rows = tx.all(
            "SELECT e.terminal_id, e.seq, e.ref_seq, e.detail, e.effective_ms, "
            "COALESCE(me.merchant_id, ''), COALESCE(me.name, ''), COALESCE(me.brn, '') "
            "FROM entries e "
            "LEFT JOIN merchant_terminals mt ON mt.municipality_id = ? "
            "AND mt.terminal_id = e.terminal_id "
            "LEFT JOIN merchants me ON me.municipality_id = ? "
            "AND me.merchant_id = COALESCE(mt.merchant_id, e.place) "
            "WHERE e.day = ? AND e.kind = 'cash_receipt' AND e.terminal_id IN "
            "(SELECT terminal_id FROM terminals WHERE municipality_id = ?) "
            "ORDER BY e.terminal_id, e.seq", (m, m, day, m))
        wanted = {(str(r[0]), int(r[2])) for r in rows}
        payments = _payments(tx, day, wanted)
        given_back = _given_back(tx, day, wanted)
    out: list[CashReceiptRow] = []
    for tid, seq, ref, detail, effective, merchant, name, brn in rows:
        d: dict[str, Any] = json.loads(detail)
        key = (str(tid), int(ref))
        at = datetime.fromtimestamp(int(effective) / 1000, service.tz)
        out.append(CashReceiptRow(
            str(tid), str(merchant), str(name), str(brn), int(ref), int(d.get("amount", 0)),
            str(d.get("purpose", "")), str(d.get("identity", "")), str(d.get("token", "")),
            str(d.get("display", "")), at.isoformat(timespec="seconds"), int(seq),
            given_back.get(key, 0), _problem(d, payments.get(key), int(ref))))
    return out
