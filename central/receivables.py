"""What merchants owe the programme's refund float, and its recovery at settlement.

A refund whose payment's money was already paid out to the merchant waits for the
merchant's payable (:mod:`central.spending`). One that waited longer than
:data:`DEFAULT_WAIT_DAYS` is paid from the municipality's refund float instead
(:mod:`central.refund_float`), and the merchant's debt is kept in the books:

- ``programme:refunds:float`` -> the citizen's pockets (``refund``, the same reversal the
  payable would have posted, refs ``refund:<terminal>:<seq>:<pocket>``);
- ``merchant:<m>:receivable`` -> ``programme:refunds:advanced`` (``correction``, ref
  ``refund-advance:<terminal>:<seq>``, detail naming the refund's business day): the
  receivable's debit balance is what the merchant owes; the advanced account holds the sum
  of every merchant's debt, so the two always cancel.

**Recovery.** A settlement run of day ``D`` takes from each owing merchant's payable what
the run would otherwise send it (gross less refunds plus returned, less the fee), never
more than the debt and never below zero: ``merchant:<m>:payable`` -> the float
(``refund``, ref ``recover:<m>:<D>:<R>``) and ``programme:refunds:advanced`` -> the
receivable (``correction``, ref ``recover-claim:<m>:<D>:<R>``), one pair per business day
``R`` of the refunds it repays, oldest first. The payable transfer is a refund of day ``R``
for settlement and its check: the merchant's books then hold the refund the terminal
reported that day, as if the payable had paid it. It shows in the settlement's
``by_pocket`` under ``programme``. What a run could not take waits for the next run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from central import books

if TYPE_CHECKING:  # the store imports settlement, which imports this module
    from central.store import Tx

#: A refund waits this many days for its merchant's payable before the float pays it: a
#: shop that trades takes payments every day and so repays within a day or two, while three
#: days cover a weekend (the settlement runs of a Friday, Saturday and Sunday) before the
#: city's money stands in for a merchant that stopped trading.
DEFAULT_WAIT_DAYS = 3
DAY_MS = 86_400_000

FLOAT = "programme:refunds:float"
FUNDING = books.programme_funding("refunds")
ADVANCED = "programme:refunds:advanced"
#: the settlement's ``by_pocket`` key of what is recovered (the float's first name part)
SOURCE = "programme"
#: kinds and flags of the accounts outside the books' chart
FLOAT_KIND = ("refund_float", books.DEBITS_MUST_NOT_EXCEED_CREDITS)
ADVANCED_KIND = ("refund_advanced", books.DEBITS_MUST_NOT_EXCEED_CREDITS)
RECEIVABLE_KIND = ("merchant_receivable", books.CREDITS_MUST_NOT_EXCEED_DEBITS)


def merchant_receivable(merchant: str) -> str:
    """What ``merchant`` owes the refund float (a debit balance)."""
    return books.merchant_payable(merchant).removesuffix(":payable") + ":receivable"


def open_accounts(tx: Tx, municipality: str, merchant: str | None = None,
                  at_ms: int | None = None) -> None:
    for account_id, (kind, flags) in ((FLOAT, FLOAT_KIND), (ADVANCED, ADVANCED_KIND)):
        books.open_account(tx, account_id, kind, flags=flags, municipality=municipality,
                           at_ms=at_ms)
    if merchant is not None:
        kind, flags = RECEIVABLE_KIND
        books.open_account(tx, merchant_receivable(merchant), kind, flags=flags,
                           municipality=municipality, at_ms=at_ms)


def _day(detail: Any) -> str:
    try:
        day = json.loads(str(detail)).get("day")
    except (ValueError, AttributeError):
        return ""
    return day if isinstance(day, str) else ""


def owed_by_day(tx: Tx, municipality: str, merchants: Sequence[str] | None = None
                ) -> dict[str, dict[str, int]]:
    """merchant -> refund business day -> won still owed, for the owing merchants (of
    ``merchants`` when given)."""
    where, params = "", [municipality]
    if merchants is not None:
        if not merchants:
            return {}
        test, param = tx.any_of("account_id", [merchant_receivable(m) for m in merchants])
        where, params = f" AND {test}", [municipality, param]
    owing = [str(a) for a, in tx.all(
        "SELECT account_id FROM book_accounts WHERE municipality_id = ? AND account_id LIKE "
        f"'merchant:%:receivable' AND debits_posted > credits_posted{where}", params)]
    out: dict[str, dict[str, int]] = {}
    for account in owing:
        days: dict[str, int] = {}
        for debit, amount, detail in tx.all(
                "SELECT debit_account, amount, detail FROM book_transfers WHERE "
                "municipality_id = ? AND code = 'correction' AND (debit_account = ? OR "
                "credit_account = ?)", (municipality, account, account)):
            sign = 1 if str(debit) == account else -1
            days[_day(detail)] = days.get(_day(detail), 0) + sign * int(amount)
        out[account.split(":")[1]] = {d: w for d, w in sorted(days.items()) if w > 0}
    return out


@dataclass(frozen=True)
class Recovered:
    merchant_id: str
    #: refund business day -> won taken from the payable in this run
    days: dict[str, int]
    transfer_ids: dict[str, str]

    @property
    def amount(self) -> int:
        return sum(self.days.values())


def recover(tx: Tx, day: str, municipality: str,
            room: Mapping[str, tuple[int, int]], fee: Callable[[int, str], int], at_ms: int
            ) -> list[Recovered]:
    """Take what the owing merchants of a run can repay back into the float (``room``:
    merchant -> the won the run would send before its fee, and its gross; ``fee``: the fee
    of a gross in a merchant category)."""
    owed = owed_by_day(tx, municipality, sorted(room))
    if not owed:
        return []
    test, param = tx.any_of("merchant_id", sorted(owed))
    category = {str(m): str(c) for m, c in tx.all(
        f"SELECT merchant_id, category FROM merchants WHERE municipality_id = ? AND {test}",
        (municipality, param))}
    test, param = tx.any_of("account_id", [books.merchant_payable(m) for m in owed])
    holds = {str(a).split(":")[1]: int(b) for a, b in tx.all(
        "SELECT account_id, credits_posted - debits_posted FROM book_accounts "
        f"WHERE municipality_id = ? AND {test}", (municipality, param))}
    out: list[Recovered] = []
    for m, days in sorted(owed.items()):
        before_fee, gross = room[m]
        can = min(before_fee - fee(gross, category.get(m, "")), holds.get(m, 0))
        taken: dict[str, int] = {}
        moves: list[books.Transfer] = []
        for r, won in days.items():  # oldest refund day first
            take = min(won, can - sum(taken.values()))
            if take <= 0:
                break
            taken[r] = take
            detail = json.dumps({"day": r, "settled_day": day}, sort_keys=True)
            moves += [books.Transfer(books.merchant_payable(m), FLOAT, take, "refund",
                                     f"recover:{m}:{day}:{r}", detail),
                      books.Transfer(ADVANCED, merchant_receivable(m), take, "correction",
                                     f"recover-claim:{m}:{day}:{r}", detail)]
        if moves:
            open_accounts(tx, municipality, m, at_ms)
            posted = books.transfer(tx, moves, municipality=municipality, at_ms=at_ms)
            out.append(Recovered(m, taken, {p.ref.rsplit(":", 1)[1]: p.transfer_id
                                            for p in posted if p.code == "refund"}))
    return out


def outstanding(tx: Tx, municipality: str) -> dict[str, int]:
    """merchant -> won it still owes the float."""
    return {str(a).split(":")[1]: int(b) for a, b in tx.all(
        "SELECT account_id, debits_posted - credits_posted FROM book_accounts WHERE "
        "municipality_id = ? AND account_id LIKE 'merchant:%:receivable' AND "
        "debits_posted > credits_posted ORDER BY account_id", (municipality,))}


def recovered_in(tx: Tx, day: str, municipality: str) -> dict[str, int]:
    """merchant -> won the settlement run of ``day`` took back into the float."""
    out: dict[str, int] = {}
    for ref, amount in tx.all(
            "SELECT ref, amount FROM book_transfers WHERE municipality_id = ? AND code = "
            "'refund' AND credit_account = ? AND ref LIKE ?",
            (municipality, FLOAT, f"recover:%:{day}:%")):
        m = str(ref).split(":")[1]
        out[m] = out.get(m, 0) + int(amount)
    return out


def summary(tx: Tx, day: str, municipality: str) -> list[dict[str, Any]]:
    """Per merchant that owed the float or repaid it in the run of ``day``: ``recovered``
    in that run and ``outstanding`` now."""
    if not tx.store.columns(tx, "book_accounts"):
        return []
    got, owe = recovered_in(tx, day, municipality), outstanding(tx, municipality)
    return [{"merchant_id": m, "recovered": got.get(m, 0), "outstanding": owe.get(m, 0)}
            for m in sorted({*got, *owe})]


__all__ = ["ADVANCED", "DEFAULT_WAIT_DAYS", "FLOAT", "FUNDING", "SOURCE", "Recovered",
           "merchant_receivable", "open_accounts", "outstanding", "owed_by_day", "recover",
           "recovered_in", "summary"]
