"""Offline risk rules and the reasons a payment is declined.

Every decline carries a :class:`Reason`: a stable code for the ledger, logs and the central
service, and a message in plain words (Korean and English) for the screen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from firmware_cfg.config import MerchantSection, RiskSection
from localpay.errors import ConfigError
from localpay.pockets import MerchantFacts, PocketRules, Split, parse_rules, split
from offline_ledger import CardState, Ledger
from offline_ledger import pockets as ledger_pockets

log = logging.getLogger(__name__)


class Reason(StrEnum):
    """Why a presentation was not approved. The value is the stable code."""

    DENY_LISTED = "deny_listed"
    OVER_LIMIT = "over_limit"
    CARD_OFFLINE_AMOUNT = "card_offline_amount"
    CARD_OFFLINE_COUNT = "card_offline_count"
    TERMINAL_EXPOSURE = "terminal_exposure"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    #: no pocket of the card may pay at this merchant (localpay.pockets), which is not the
    #: same as too little money: the citizen must pay another way, not top up
    NO_ELIGIBLE_POCKET = "no_eligible_pocket"
    INVALID_AMOUNT = "invalid_amount"
    LEDGER_WRITE_FAILED = "ledger_write_failed"
    LEDGER_BROKEN = "ledger_broken"
    UNREADABLE = "unreadable"
    CARD_REMOVED = "card_removed"
    UNSUPPORTED = "unsupported"
    QR_INVALID = "qr_invalid"
    QR_EXPIRED = "qr_expired"
    QR_REPLAY = "qr_replay"
    EMV_DECLINED = "emv_declined"
    REFUND_EXCEEDS = "refund_exceeds"
    NOT_REFUNDABLE = "not_refundable"
    WRONG_ROLE = "wrong_role"
    CLAIM_LAPSED = "claim_lapsed"
    ALREADY_CLAIMED = "already_claimed"
    #: the clock is ``unknown`` (terminal.clock) and this would take the won approved with
    #: it since the last sync over ``risk.unknown_clock_amount``
    CLOCK_UNKNOWN = "clock_unknown"

    @property
    def message(self) -> str:
        return MESSAGES[self][0]

    @property
    def message_ko(self) -> str:
        return MESSAGES[self][1]


MESSAGES: dict[Reason, tuple[str, str]] = {
    Reason.DENY_LISTED: ("This card is blocked. Please contact the card issuer.",
                         "사용이 정지된 카드입니다. 발급사에 문의하세요."),
    Reason.OVER_LIMIT: ("Amount is over the offline limit for one payment.",
                        "1회 오프라인 한도를 넘었습니다."),
    Reason.CARD_OFFLINE_AMOUNT: ("This card has reached its offline spending limit.",
                                 "이 카드의 오프라인 사용 한도를 넘었습니다."),
    Reason.CARD_OFFLINE_COUNT: ("This card has reached its offline payment count.",
                                "이 카드의 오프라인 사용 횟수를 넘었습니다."),
    Reason.TERMINAL_EXPOSURE: ("This terminal must sync before taking more offline payments.",
                               "단말기 동기화가 필요합니다."),
    Reason.INSUFFICIENT_BALANCE: ("Not enough balance on this card.", "잔액이 부족합니다."),
    Reason.NO_ELIGIBLE_POCKET: ("Nothing on this card may be spent at this shop.",
                                "이 카드의 잔액은 이 가맹점에서 사용할 수 없습니다."),
    Reason.INVALID_AMOUNT: ("The amount is not valid.", "금액이 올바르지 않습니다."),
    Reason.LEDGER_WRITE_FAILED: ("The payment could not be recorded; nothing was charged.",
                                 "거래를 기록하지 못했습니다. 결제되지 않았습니다."),
    Reason.LEDGER_BROKEN: ("This terminal's ledger needs service; nothing was charged.",
                           "단말기 점검이 필요합니다. 결제되지 않았습니다."),
    Reason.UNREADABLE: ("The card could not be read. Please tap again.",
                        "카드를 읽을 수 없습니다. 다시 대주세요."),
    Reason.CARD_REMOVED: ("The card was removed too early. Please tap again.",
                          "카드를 너무 빨리 뗐습니다. 다시 대주세요."),
    Reason.UNSUPPORTED: ("This card or code is not accepted here.",
                         "이 카드나 코드는 사용할 수 없습니다."),
    Reason.QR_INVALID: ("This code is not valid.", "유효하지 않은 코드입니다."),
    Reason.QR_EXPIRED: ("This code has expired. Please show a new one.",
                        "만료된 코드입니다. 새 코드를 보여주세요."),
    Reason.QR_REPLAY: ("This code was already used.", "이미 사용된 코드입니다."),
    Reason.EMV_DECLINED: ("The card declined offline.", "카드가 거래를 거절했습니다."),
    Reason.REFUND_EXCEEDS: ("The refund is more than what is left of the payment.",
                            "환불 금액이 결제 금액을 넘습니다."),
    Reason.NOT_REFUNDABLE: ("That entry is not a payment that can be refunded.",
                            "환불할 수 없는 거래입니다."),
    Reason.WRONG_ROLE: ("This terminal does not do that.", "이 단말기에서는 할 수 없습니다."),
    Reason.CLAIM_LAPSED: ("No card was tapped in time: no points were collected. "
                          "Show the code again.",
                          "카드를 대지 않아 포인트가 적립되지 않았습니다. 코드를 다시 보여주세요."),
    Reason.ALREADY_CLAIMED: ("This card already collected this campaign's points.",
                             "이 카드는 이미 이 행사의 포인트를 받았습니다."),
    Reason.CLOCK_UNKNOWN: ("This terminal's clock is not set: it must sync before taking "
                           "more payments.",
                           "단말기 시계를 확인할 수 없습니다. 동기화가 필요합니다."),
}


@dataclass(frozen=True, slots=True)
class RiskInput:
    """What the rules look at for one decision."""

    amount: int
    card: CardState
    terminal_exposure: int
    weak_card: bool = False
    #: a validator's fare, where 0 is a free category's fare (``[fares.extra] senior = 0``):
    #: the ride is still recorded and checked, not refused as an invalid amount
    fare: bool = False
    #: the payment's split by pocket (localpay.pockets), when the terminal holds the card's
    #: pockets: it then decides the balance in place of the card's single balance
    split: Split | None = None
    #: the won approved with an unknown clock since the last sync
    #: (``offline_ledger.unknown_clock``) when the clock is ``unknown`` now; None when it is
    #: trusted, or not judged (a terminal given a wall clock of its own)
    unknown_clock: int | None = None


def terminal_limits(limits: RiskSection, amount: int, exposure: int,
                    unknown_clock: int | None) -> Reason | None:
    """The terminal-wide rules, whatever the card: its offline exposure, then, while its
    clock is unknown, the won it may approve so. The transaction and ``Terminal.blocked``
    both ask this, so the kiosk's out-of-service screen says what a payment would get."""
    if exposure + amount > limits.terminal_exposure:
        return Reason.TERMINAL_EXPOSURE
    if unknown_clock is not None and unknown_clock + amount > limits.unknown_clock_amount:
        return Reason.CLOCK_UNKNOWN
    return None


def evaluate(limits: RiskSection, data: RiskInput) -> Reason | None:
    """Apply the offline rules in order; return the first that declines, or ``None``.

    The order puts the card's status first (a blocked card is told so, not "over limit"),
    then the per-transaction, per-card and terminal-wide limits, then the balance.
    """
    amount, card = data.amount, data.card
    if type(amount) is not int or amount < 0 or (amount == 0 and not data.fare):
        return Reason.INVALID_AMOUNT
    if card.denied is not None:
        return Reason.DENY_LISTED
    max_amount = limits.uid_max_amount if data.weak_card else limits.max_amount
    if amount > max_amount:
        return Reason.OVER_LIMIT
    card_cap = limits.uid_card_offline_amount if data.weak_card else limits.card_offline_amount
    if card.offline_amount + amount > card_cap:
        return Reason.CARD_OFFLINE_AMOUNT
    if card.offline_count + 1 > limits.card_offline_count:
        return Reason.CARD_OFFLINE_COUNT
    terminal = terminal_limits(limits, amount, data.terminal_exposure, data.unknown_clock)
    if terminal is not None:
        return terminal
    if data.split is not None:
        # DeclineReason's codes are Reason's (no_eligible_pocket, insufficient_balance)
        return None if data.split.reason is None else Reason(data.split.reason.value)
    if card.balance is not None and card.balance - card.offline_amount < amount:
        return Reason.INSUFFICIENT_BALANCE
    return None


def remaining_balance(card: CardState, spent_now: int) -> int | None:
    """Balance left after this payment, where the last sync told us the balance."""
    if card.balance is None:
        return None
    return card.balance - card.offline_amount - spent_now


class PocketSplitter:
    """A till's split of a payment across the card's pockets, offline, by the one contract
    of :func:`localpay.pockets.split`: the rules of the snapshot held (parsed once per
    text), the merchant's facts from the config's ``[merchant]`` section, the card's pocket
    balances less what they paid offline here, what each paid today and the Seoul day.

    :meth:`split` answers None (decide as before pockets: the card's single balance, or
    none) when the terminal has no merchant, the snapshot is of another merchant than the
    config's (the config has not caught up with a move yet), its rules do not parse, or
    central sent no pockets for the card.
    """

    def __init__(self, merchant: MerchantSection) -> None:
        self.facts: MerchantFacts | None = None
        if merchant.id:
            try:
                self.facts = MerchantFacts(merchant.id, merchant.category, merchant.region,
                                           frozenset(merchant.memberships))
            except ValueError as err:
                log.warning("no pocket splits here: the merchant's facts: %s", err)
        self._rules: tuple[str, PocketRules | None] = ("", None)

    def rules(self, text: str) -> PocketRules | None:
        held, parsed = self._rules
        if text != held:
            try:
                parsed = parse_rules(text, "the pocket rules of the last sync")
            except ConfigError as err:
                log.warning("no pocket splits here: %s", err)
                parsed = None
            self._rules = (text, parsed)
        return parsed

    def split(self, ledger: Ledger, card_token: str, amount: int,
              wall_ms: int) -> tuple[Split, date] | None:
        """The split and its day, or None (see the class doc). Raises ``LedgerError``."""
        facts = self.facts
        if facts is None:
            return None
        snapshot = ledger_pockets.state(ledger)
        if snapshot.merchant != facts.merchant_id or not snapshot.rules:
            return None
        rules = self.rules(snapshot.rules)
        if rules is None:
            return None
        day = ledger_pockets.seoul_day(wall_ms)
        held = ledger_pockets.card_pockets(ledger, card_token, day)
        if held is None:
            return None
        return split(amount, held.balances, rules, facts, day, held.spent_today), day

