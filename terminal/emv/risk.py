"""EMV terminal risk management and the offline decision, with the TVR bits they set.

EMV 4.3 Book 3 §10.6 (terminal risk management):

- §10.6.1 floor limit: the amount, plus the amount of the most recent logged transaction
  with the same card, *greater than or equal to* the Terminal Floor Limit (9F1B) sets
  "transaction exceeds floor limit";
- §10.6.2 random transaction selection, for amounts below the floor limit: a random number
  1..99; below the Threshold Value the transaction is selected when the number is at most
  the Target Percentage; from the threshold up to the floor limit the percentage is
  interpolated linearly up to the Maximum Target Percentage (biased selection);
- §10.6.3 velocity checking, when the card has both LCOL (9F14) and UCOL (9F23): ATC (9F36)
  and Last Online ATC Register (9F13) by GET DATA; either missing or ATC <= LATC sets both
  "consecutive offline limit exceeded" bits; otherwise ATC - LATC above LCOL / UCOL sets
  the matching bit; LATC = 0 sets "new card";
- exception file: the card on the terminal's exception file (our deny list) sets
  "card appears on terminal exception file".

Processing restrictions (§10.4.3) add "expired application" and "application not yet
effective". The bits are those of Book 3 Annex C5 (Table 42 in 4.3, Table 46 in 4.4),
checked one by one against the table: see :data:`TVR_BITS`.

This terminal is offline-only, so terminal action analysis (§10.7) reduces to: a TVR bit
in the decline mask (Terminal Action Codes Denial and Default, the card's IACs where it
gave them) declines offline; otherwise the payment may be approved offline.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

#: (byte 1..5, bit mask) -> meaning, EMV 4.3 Book 3 Annex C5 Table 42
TVR_BITS: dict[tuple[int, int], str] = {
    (1, 0x80): "offline data authentication was not performed",
    (1, 0x40): "SDA failed",
    (1, 0x20): "ICC data missing",
    (1, 0x10): "card appears on terminal exception file",
    (1, 0x08): "DDA failed",
    (1, 0x04): "CDA failed",
    (1, 0x02): "SDA selected",
    (2, 0x80): "ICC and terminal have different application versions",
    (2, 0x40): "expired application",
    (2, 0x20): "application not yet effective",
    (2, 0x10): "requested service not allowed for card product",
    (2, 0x08): "new card",
    (3, 0x80): "cardholder verification was not successful",
    (3, 0x40): "unrecognised CVM",
    (3, 0x20): "PIN try limit exceeded",
    (3, 0x10): "PIN entry required and PIN pad not present or not working",
    (3, 0x08): "PIN entry required, PIN pad present, but PIN was not entered",
    (3, 0x04): "online PIN entered",
    (4, 0x80): "transaction exceeds floor limit",
    (4, 0x40): "lower consecutive offline limit exceeded",
    (4, 0x20): "upper consecutive offline limit exceeded",
    (4, 0x10): "transaction selected randomly for online processing",
    (4, 0x08): "merchant forced transaction online",
    (5, 0x80): "default TDOL used",
    (5, 0x40): "issuer authentication failed",
    (5, 0x20): "script processing failed before final GENERATE AC",
    (5, 0x10): "script processing failed after final GENERATE AC",
}

ODA_NOT_PERFORMED = (1, 0x80)
ICC_DATA_MISSING = (1, 0x20)
EXCEPTION_FILE = (1, 0x10)
EXPIRED = (2, 0x40)
NOT_EFFECTIVE = (2, 0x20)
NEW_CARD = (2, 0x08)
FLOOR_LIMIT = (4, 0x80)
LCOL_EXCEEDED = (4, 0x40)
UCOL_EXCEEDED = (4, 0x20)
RANDOM_SELECTED = (4, 0x10)

#: TSI byte 1 bit 4, Book 3 Annex C6 Table 43
TSI_TRM_PERFORMED = 0x08

#: bits this terminal declines on by default (its TAC-Denial | TAC-Default, as an offline-only
#: terminal applies the Default codes when it cannot go online, Book 3 §10.7): missing data,
#: exception file, expired / not yet effective, floor limit, upper consecutive offline limit
#: and random selection. Not in it: "ODA not performed" (no offline data authentication here;
#: the scheme's cards are trusted through the token and the deny list) and the *lower*
#: consecutive offline limit, which only asks to go online when possible.
DEFAULT_DECLINE_MASK = bytes([0x30, 0x60, 0x00, 0x80 | 0x20 | 0x10, 0x00])


class Tvr:
    """The five TVR bytes (tag 95), set bit by bit by name."""

    __slots__ = ("_b",)

    def __init__(self, raw: bytes = bytes(5)) -> None:
        if len(raw) != 5:
            raise ValueError("a TVR is 5 bytes")
        self._b = bytearray(raw)

    def set(self, bit: tuple[int, int]) -> None:
        byte, mask = bit
        self._b[byte - 1] |= mask

    def __contains__(self, bit: tuple[int, int]) -> bool:
        byte, mask = bit
        return bool(self._b[byte - 1] & mask)

    def __bytes__(self) -> bytes:
        return bytes(self._b)

    def hex(self) -> str:
        return self._b.hex().upper()

    def any_of(self, mask: bytes) -> bool:
        return any(a & b for a, b in zip(self._b, mask, strict=True))

    def reasons(self, mask: bytes | None = None) -> list[str]:
        """The meanings of the set bits (only those in ``mask``, if given)."""
        out = []
        for (byte, bit), text in TVR_BITS.items():
            if self._b[byte - 1] & bit and (mask is None or mask[byte - 1] & bit):
                out.append(text)
        return out


@dataclass(frozen=True, slots=True)
class TrmParams:
    """The acquirer's terminal risk management parameters (amounts in won)."""

    floor_limit: int = 30_000
    threshold: int = 10_000
    target_percent: int = 0
    max_target_percent: int = 0
    decline_mask: bytes = DEFAULT_DECLINE_MASK

    def __post_init__(self) -> None:
        if not 0 <= self.target_percent <= self.max_target_percent <= 99:
            raise ValueError("need 0 <= target percent <= max target percent <= 99")
        if self.threshold > self.floor_limit:
            raise ValueError("the random-selection threshold must not exceed the floor limit")
        if len(self.decline_mask) != 5:
            raise ValueError("the decline mask is 5 bytes, like the TVR")


@dataclass(frozen=True, slots=True)
class TrmInput:
    """What the card and the terminal's log say about this transaction."""

    amount: int
    last_amount: int | None = None
    atc: int | None = None
    latc: int | None = None
    lcol: int | None = None
    ucol: int | None = None
    on_exception_file: bool = False
    expiry: dt.date | None = None
    effective: dt.date | None = None
    today: dt.date | None = None
    icc_data_missing: bool = False
    oda_performed: bool = False
    iac_denial: bytes | None = None
    iac_default: bytes | None = None


@dataclass(slots=True)
class TrmResult:
    tvr: Tvr
    tsi: int
    random_number: int | None = None
    transaction_target_percent: str | None = None
    declined: bool = False
    reasons: list[str] = field(default_factory=list)


def random_1_99() -> int:
    return 1 + secrets.randbelow(99)


def floor_limit_exceeded(params: TrmParams, amount: int, last_amount: int | None) -> bool:
    """§10.6.1: amount (+ the last logged amount for this card) >= floor limit."""
    return amount + (last_amount or 0) >= params.floor_limit


def randomly_selected(params: TrmParams, amount: int, rnd: int) -> bool:
    """§10.6.2 with random number ``rnd`` in 1..99; exact rational arithmetic, no floats.

    Below the threshold: selected when rnd <= Target Percentage. From the threshold up to
    (not including) the floor limit: selected when rnd <= Transaction Target Percent =
    ((MaxTP - TP) * (amount - threshold) / (floor limit - threshold)) + TP.
    """
    if amount >= params.floor_limit:
        return False
    tp, mtp = params.target_percent, params.max_target_percent
    if amount < params.threshold:
        return rnd <= tp
    span = params.floor_limit - params.threshold
    # rnd <= tp + (mtp - tp) * (amount - threshold) / span, multiplied through by span > 0
    return rnd * span <= tp * span + (mtp - tp) * (amount - params.threshold)


def assess(params: TrmParams, data: TrmInput,
           rand: Callable[[], int] = random_1_99) -> TrmResult:
    """Run processing restrictions (dates), terminal risk management and the offline
    decision; return the TVR, the TSI byte 1 and whether to decline offline."""
    tvr = Tvr()
    if not data.oda_performed:
        tvr.set(ODA_NOT_PERFORMED)
    if data.icc_data_missing:
        tvr.set(ICC_DATA_MISSING)
    if data.today is not None:
        if data.expiry is not None and data.today > data.expiry:
            tvr.set(EXPIRED)
        if data.effective is not None and data.today < data.effective:
            tvr.set(NOT_EFFECTIVE)
    if data.on_exception_file:
        tvr.set(EXCEPTION_FILE)
    if floor_limit_exceeded(params, data.amount, data.last_amount):
        tvr.set(FLOOR_LIMIT)
    rnd = None
    ttp = None
    if data.amount < params.floor_limit:
        rnd = rand()
        if not 1 <= rnd <= 99:
            raise ValueError(f"random number for selection must be 1..99, got {rnd}")
        if randomly_selected(params, data.amount, rnd):
            tvr.set(RANDOM_SELECTED)
        ttp = _ttp_text(params, data.amount)
    if data.lcol is not None and data.ucol is not None:
        _velocity(tvr, data)
    mask = bytes(a | b | c for a, b, c in zip(
        params.decline_mask, _masked_iac(data.iac_denial), _masked_iac(data.iac_default),
        strict=True))
    result = TrmResult(tvr, TSI_TRM_PERFORMED, rnd, ttp)
    if tvr.any_of(mask):
        result.declined = True
        result.reasons = tvr.reasons(mask)
    return result


def _velocity(tvr: Tvr, data: TrmInput) -> None:
    """§10.6.3, given that both LCOL and UCOL are on the card."""
    if data.atc is None or data.latc is None or data.atc <= data.latc:
        tvr.set(LCOL_EXCEEDED)
        tvr.set(UCOL_EXCEEDED)
    else:
        offline_run = data.atc - data.latc
        if data.lcol is not None and offline_run > data.lcol:
            tvr.set(LCOL_EXCEEDED)
        if data.ucol is not None and offline_run > data.ucol:
            tvr.set(UCOL_EXCEEDED)
    if data.latc == 0:
        tvr.set(NEW_CARD)


#: the bits this terminal actually assesses, "ODA not performed" aside: a card's IAC may add
#: only these to the decline mask (an IAC declining on "ODA not performed" would decline
#: every card at a terminal that never does ODA)
_ASSESSED = bytes([0x30, 0x68, 0x00, 0xF0, 0x00])


def _masked_iac(iac: bytes | None) -> bytes:
    if iac is None or len(iac) != 5:
        return bytes(5)
    return bytes(a & b for a, b in zip(iac, _ASSESSED, strict=True))


def _ttp_text(params: TrmParams, amount: int) -> str:
    if amount < params.threshold:
        return str(params.target_percent)
    span = params.floor_limit - params.threshold
    num = params.target_percent * span + (params.max_target_percent - params.target_percent) * (
        amount - params.threshold)
    return f"{num / span:.2f}"
