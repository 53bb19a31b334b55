"""Every offline limit at its exact boundary: the limit itself is allowed, one won (or one
transaction) more is declined, for strong and weak (UID-only) cards alike. The figures are
written here, not read from the defaults."""

from __future__ import annotations

import pytest

from firmware_cfg.config import DEFAULT
from offline_ledger import CardState
from terminal.risk import Reason, RiskInput, evaluate

LIMITS = DEFAULT.replace("risk", max_amount=50_000, uid_max_amount=10_000,
                         card_offline_amount=100_000, uid_card_offline_amount=30_000,
                         card_offline_count=30, terminal_exposure=5_000_000).risk


@pytest.mark.parametrize("weak", [False, True])
def test_one_transaction_limit(weak: bool) -> None:
    most = 10_000 if weak else 50_000
    assert evaluate(LIMITS, RiskInput(most, CardState(), 0, weak)) is None
    assert evaluate(LIMITS, RiskInput(most + 1, CardState(), 0, weak)) == Reason.OVER_LIMIT


@pytest.mark.parametrize("weak", [False, True])
def test_card_offline_amount_limit(weak: bool) -> None:
    cap = 30_000 if weak else 100_000
    spent = CardState(offline_amount=cap - 5_000)
    assert evaluate(LIMITS, RiskInput(5_000, spent, 0, weak)) is None
    assert evaluate(LIMITS, RiskInput(5_001, spent, 0, weak)) == Reason.CARD_OFFLINE_AMOUNT


def test_card_offline_count_limit() -> None:
    assert evaluate(LIMITS, RiskInput(100, CardState(offline_count=29), 0)) is None
    assert evaluate(LIMITS, RiskInput(100, CardState(offline_count=30), 0)) == \
        Reason.CARD_OFFLINE_COUNT


def test_terminal_exposure_limit() -> None:
    assert evaluate(LIMITS, RiskInput(1_000, CardState(), 5_000_000 - 1_000)) is None
    assert evaluate(LIMITS, RiskInput(1_001, CardState(), 5_000_000 - 1_000)) == \
        Reason.TERMINAL_EXPOSURE


def test_known_balance_limit() -> None:
    card = CardState(offline_amount=2_000, balance=10_000)       # 8,000 left
    assert evaluate(LIMITS, RiskInput(8_000, card, 0)) is None
    assert evaluate(LIMITS, RiskInput(8_001, card, 0)) == Reason.INSUFFICIENT_BALANCE


def test_amounts_that_are_not_money() -> None:
    for bad in (-1, 0, 1.5, True):
        assert evaluate(LIMITS, RiskInput(bad, CardState(), 0)) == Reason.INVALID_AMOUNT  # type: ignore[arg-type]
    assert evaluate(LIMITS, RiskInput(0, CardState(), 0, fare=True)) is None  # a free fare
