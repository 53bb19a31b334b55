"""More edges of the terminal core (terminal/core.py) and its pocket splitter
(terminal/risk.py) that the mutation run found unstated: who the till's clerk was, in each
entry a till writes; the splitter's reading of the merchant and of the rules held; a payment
the citizen's app made through central (``paid_online``): its entry, its decision, and its
refusals. Real ledgers, the real core and clock trust (only the kernel's NTP answer is given,
as in tests/test_clock_allowance.py); ``time.perf_counter`` as the core sees it advances
0.25 s a call where a test states how long a decision took. Every figure is worked out by
hand in the test."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from drivers.virtual import VirtualReader
from firmware_cfg.config import DEFAULT, Config, MerchantSection, brn_check_digit
from firmware_cfg.keys import DEMO_TOKEN_KEY
from localpay.errors import ConfigError, LedgerCorruptError, TransactionError
from localpay.pockets import DEFAULT_RULES, MerchantFacts, parse_rules
from offline_ledger import Ledger
from offline_ledger import pockets as lp
from terminal import core
from terminal.cards import card_token
from terminal.clock import RELEASED_MS, ClockTrust
from terminal.core import State, Terminal
from terminal.risk import PocketSplitter, Reason
from tests.conftest import FakeClock, MakeTerminal, present

UID = bytes.fromhex("08000071")


def _brn(first9: str) -> str:
    return f"{first9[:3]}-{first9[3:5]}-{first9[5:]}{brn_check_digit(first9)}"


def detail_of(ledger: Ledger, seq: int) -> dict[str, object]:
    entry = ledger.entry(seq)
    assert entry is not None
    doc: dict[str, object] = json.loads(entry.fields.detail)
    return doc


# -- the clerk --------------------------------------------------------------------------------


def test_each_entry_of_a_till_names_its_signed_in_clerk(
        ledger: Ledger, clock: FakeClock, reader: VirtualReader,
        make_terminal: MakeTerminal) -> None:
    till = make_terminal("till")
    category = till.config.terminal.merchant_category
    till.clerk = "minji"
    paid = till.pay(present(reader, UID), 3_000)
    other = till.pay(present(reader, UID), 1_000)
    assert paid.entry is not None and other.entry is not None
    assert detail_of(ledger, paid.entry.seq)["clerk"] == "minji"
    refund = till.refund(paid.entry.seq, 1_200)
    assert refund.approved and refund.entry is not None
    assert detail_of(ledger, refund.entry.seq) == {"merchant_category": category,
                                                   "clerk": "minji"}
    void = till.void(other.entry.seq)
    assert void.entry is not None
    assert detail_of(ledger, void.entry.seq) == {"merchant_category": category,
                                                 "clerk": "minji"}
    online = till.paid_online("pay-1", "ref-1", 500)
    assert online.entry is not None
    assert detail_of(ledger, online.entry.seq) == {"merchant_category": category,
                                                   "mpm_payment": "pay-1",
                                                   "reference": "ref-1", "clerk": "minji"}


def test_a_till_without_clerks_names_none(
        ledger: Ledger, clock: FakeClock, reader: VirtualReader,
        make_terminal: MakeTerminal) -> None:
    till = make_terminal("till")
    category = till.config.terminal.merchant_category
    paid = till.pay(present(reader, UID), 2_000)
    assert paid.entry is not None
    assert "clerk" not in detail_of(ledger, paid.entry.seq)
    refund = till.refund(paid.entry.seq)
    assert refund.entry is not None and refund.amount == 2_000
    assert detail_of(ledger, refund.entry.seq) == {"merchant_category": category}


# -- the pocket splitter ----------------------------------------------------------------------


def test_a_merchant_whose_facts_do_not_hold_splits_nothing_and_says_why(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="terminal.risk"):
        splitter = PocketSplitter(MerchantSection(id="M-LOCAL", category="47121"))
    assert splitter.facts is None
    assert [r.getMessage() for r in caplog.records] == [
        "no pocket splits here: the merchant's facts: merchant category must be 'ksic:' and "
        "5 digits or 'mcc:' and 4 digits, not '47121'"]
    good = PocketSplitter(MerchantSection(id="M-LOCAL", category="ksic:47121",
                                          region="ilsan-dong", memberships=("large-mart",)))
    assert good.facts == MerchantFacts("M-LOCAL", "ksic:47121", "ilsan-dong",
                                       frozenset({"large-mart"}))


def test_the_rules_held_are_parsed_once_per_text_and_no_text_is_no_rules(
        caplog: pytest.LogCaptureFixture) -> None:
    splitter = PocketSplitter(MerchantSection(id="M-LOCAL", category="ksic:47121"))
    # nothing held yet: no rules, and nothing parsed for it
    assert splitter.rules("") is None
    first = splitter.rules(DEFAULT_RULES)
    assert first is not None and first == parse_rules(DEFAULT_RULES)
    assert first.source == "the pocket rules of the last sync"
    assert splitter.rules(DEFAULT_RULES) is first
    bad = "[[pocket]]\nid = 5\n"
    with caplog.at_level(logging.WARNING, logger="terminal.risk"):
        assert splitter.rules(bad) is None
        assert splitter.rules(bad) is None  # the same text: not parsed (nor logged) again
    with pytest.raises(ConfigError) as refused:
        parse_rules(bad, "the pocket rules of the last sync")
    assert [r.getMessage() for r in caplog.records] == [
        f"no pocket splits here: {refused.value}"]
    assert str(refused.value).startswith("the pocket rules of the last sync: ")


def test_rules_that_do_not_parse_leave_the_card_its_single_balance(
        ledger: Ledger, clock: FakeClock, reader: VirtualReader) -> None:
    config = DEFAULT.replace("terminal", role="till", id="T-TEST-01").with_merchant(
        id="M-LOCAL", name="Shop", brn=_brn("134867268"), category="ksic:47121")
    lp.store(ledger, lp.PocketState(1, "default", "M-LOCAL", 1, "[[pocket]]\nid = 5\n"),
             {card_token(DEMO_TOKEN_KEY, "uid", UID): {"cash": (100, [], None)}})
    till = Terminal(config, ledger, DEMO_TOKEN_KEY, clock=clock)
    paid = till.pay(present(reader, UID), 2_000)  # more than the 100 won of its pocket
    assert paid.approved and paid.split == ()


# -- a payment the citizen's app made through central (paid_online) --------------------------

#: three weeks after the release: a reading the clock's rules judge (no NTP: unknown)
LATER_S = RELEASED_MS / 1000 + 21 * 86_400


@pytest.fixture
def ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The core's perf_counter: 0.25 s later at every call (two calls a decision)."""
    state = {"now": 10.0}

    def perf_counter() -> float:
        state["now"] += 0.25
        return state["now"]

    monkeypatch.setattr(core, "time", SimpleNamespace(perf_counter=perf_counter,
                                                      time=time.time))


def till_config() -> Config:
    return DEFAULT.replace("terminal", role="till", id="T-TEST-01", place="M0042")


def test_an_online_payment_is_recorded_as_the_till_saw_it(ledger: Ledger, ticks: None) -> None:
    clock = FakeClock(LATER_S)
    till = Terminal(till_config(), ledger, DEMO_TOKEN_KEY, clock=clock,
                    clock_trust=ClockTrust(ledger, wall=clock, ntp=lambda: False))
    seen: list[tuple[State, str | None]] = []
    till.listeners.append(lambda s, d: seen.append((s, d.outcome if d else None)))
    decision = till.paid_online("PAY-7", "REF-7", 4_500)
    assert seen == [(State.DECIDE, None), (State.COMMIT, None), (State.SHOW, "approved"),
                    (State.IDLE, None)]
    assert (decision.outcome, decision.amount, decision.reason, decision.card) == (
        "approved", 4_500, None, None)
    assert decision.elapsed_ms == 250.0
    assert decision.entry is not None and decision.entry.seq == ledger.head.seq == 1
    f = decision.entry.fields
    assert (f.kind, f.amount, f.card_token, f.place, f.wall_ms) == (
        "payment", 4_500, "", "M0042", int(LATER_S * 1000))
    assert json.loads(f.detail) == {"merchant_category": till.config.terminal.merchant_category,
                                    "mpm_payment": "PAY-7", "reference": "REF-7",
                                    "clock": "unknown"}


def test_an_online_payment_is_a_tills(ledger: Ledger, clock: FakeClock) -> None:
    validator = Terminal(DEFAULT.replace("terminal", role="validator", id="T-TEST-01",
                                         place="85"), ledger, DEMO_TOKEN_KEY, clock=clock)
    with pytest.raises(TransactionError) as err:
        validator.paid_online("PAY-1", "REF-1", 100)
    assert str(err.value) == "an online QR payment is taken at a till"
    assert validator.state is State.IDLE and ledger.head.seq == 0


def test_an_online_payment_on_a_faulty_ledger_is_declined(ledger: Ledger, clock: FakeClock,
                                                          ticks: None) -> None:
    fault = LedgerCorruptError("the chain breaks at entry 9")
    for held in (ledger, None):  # the fault stops it, with or without a ledger object
        till = Terminal(till_config(), held, DEMO_TOKEN_KEY, clock=clock, ledger_fault=fault)
        decision = till.paid_online("PAY-2", "REF-2", 3_000)
        assert (decision.outcome, decision.reason, decision.amount, decision.detail) == (
            "declined", Reason.LEDGER_BROKEN, 3_000, "the chain breaks at entry 9")
        assert decision.elapsed_ms == 250.0 and till.state is State.IDLE
    assert ledger.head.seq == 0


def test_an_online_payment_the_ledger_cannot_take_is_declined(tmp_path: Path, key: Any,
                                                              clock: FakeClock,
                                                              ticks: None) -> None:
    path = tmp_path / "ledger.sqlite"
    Ledger(path, key=key, terminal_id="T-TEST-01").close()
    with Ledger(path) as read_only:  # no key: every append is refused
        till = Terminal(till_config(), read_only, DEMO_TOKEN_KEY, clock=clock)
        decision = till.paid_online("PAY-3", "REF-3", 2_200)
        assert (decision.outcome, decision.reason, decision.amount, decision.detail) == (
            "declined", Reason.LEDGER_BROKEN, 2_200, "this ledger was opened read-only")
        assert decision.elapsed_ms == 250.0 and decision.entry is None
        assert read_only.head.seq == 0


def test_a_snapshot_of_another_merchant_splits_nothing(ledger: Ledger, clock: FakeClock,
                                                       reader: VirtualReader) -> None:
    def till_of(merchant: str) -> Terminal:
        config = DEFAULT.replace("terminal", role="till", id="T-TEST-01").with_merchant(
            id=merchant, name="Shop", brn=_brn("134867268"), category="ksic:47121")
        return Terminal(config, ledger, DEMO_TOKEN_KEY, clock=clock)

    # the snapshot held is M-LOCAL's, with rules, and the card's cash pocket is empty
    lp.store(ledger, lp.PocketState(1, "default", "M-LOCAL", 1, DEFAULT_RULES),
             {card_token(DEMO_TOKEN_KEY, "uid", UID): {"cash": (0, [], None)}})
    local = till_of("M-LOCAL").pay(present(reader, UID), 1_000)
    assert local.reason is Reason.NO_ELIGIBLE_POCKET
    # a till of M-OTHER (its config moved before the snapshot did) does not use it
    other = till_of("M-OTHER").pay(present(reader, UID), 1_000)
    assert other.approved and other.split == ()


# -- which payments are split ------------------------------------------------------------------


def merchant_terminal(ledger: Ledger, clock: FakeClock, role: str = "till") -> Terminal:
    """A terminal of M-LOCAL (a validator too may name its operator as merchant)."""
    base = DEFAULT.replace("terminal", role=role, id="T-TEST-01",
                           place="85" if role == "validator" else "M0001")
    config = base.with_merchant(id="M-LOCAL", name="Shop", brn=_brn("134867268"),
                                category="ksic:47121")
    return Terminal(config, ledger, DEMO_TOKEN_KEY, clock=clock)


def hold_cash(ledger: Ledger, won: int) -> None:
    lp.store(ledger, lp.PocketState(1, "default", "M-LOCAL", 1, DEFAULT_RULES),
             {card_token(DEMO_TOKEN_KEY, "uid", UID): {"cash": (won, [], None)}})


def test_a_single_won_is_split_and_nothing_is_not(ledger: Ledger, clock: FakeClock,
                                                  reader: VirtualReader) -> None:
    hold_cash(ledger, 500)
    till = merchant_terminal(ledger, clock)
    one = till.pay(present(reader, UID), 1)
    assert one.approved and one.split == (("cash", 1),)
    # no amount keyed (no claim waiting): an invalid amount, not a question for the pockets
    nothing = till.collect(present(reader, UID))
    assert nothing.reason is Reason.INVALID_AMOUNT and nothing.split == ()
    assert ledger.head.seq == 1


def test_a_fare_is_never_split(ledger: Ledger, clock: FakeClock,
                               reader: VirtualReader) -> None:
    # the card's only pocket is empty: a split would find nothing to pay with
    hold_cash(ledger, 0)
    validator = merchant_terminal(ledger, clock, "validator")
    fare = validator.tap(present(reader, UID))
    assert fare.approved and fare.amount == DEFAULT.fares.adult and fare.split == ()
    assert fare.entry is not None and "split" not in detail_of(ledger, fare.entry.seq)


def test_pockets_that_cannot_be_read_decline_for_the_card_presented(
        ledger: Ledger, clock: FakeClock, reader: VirtualReader) -> None:
    hold_cash(ledger, 500)
    till = merchant_terminal(ledger, clock)
    ledger._conn.execute("ALTER TABLE pocket_state RENAME TO pocket_state_gone")
    try:
        declined = till.pay(present(reader, UID), 100)
    finally:
        ledger._conn.execute("ALTER TABLE pocket_state_gone RENAME TO pocket_state")
    assert declined.reason is Reason.LEDGER_BROKEN and declined.amount == 100
    assert declined.card is not None
    assert declined.card.token == card_token(DEMO_TOKEN_KEY, "uid", UID)
    assert declined.detail == ("cannot read the pocket snapshot's state: "
                               "no such table: pocket_state")
    assert ledger.head.seq == 0


# -- the receipt facts a till signs into its payment ---------------------------------------------


def test_a_till_signs_the_balance_it_showed_and_a_validator_signs_none(
        ledger: Ledger, clock: FakeClock, reader: VirtualReader,
        make_terminal: MakeTerminal) -> None:
    ledger.set_balances({card_token(DEMO_TOKEN_KEY, "uid", UID): 10_000}, 1)
    # points rules as the sync client holds them: 5 % of a local-food purchase
    ledger.set_points_snapshot({}, 1, json.dumps({
        "version": 1, "timezone": "Asia/Seoul", "bus": False, "bus_types": [],
        "weekly_cap": {}, "holidays": [], "local_food": True, "rate_bp": 500,
        "merchant_categories": ["local_food"]}))
    food = DEFAULT.replace("terminal", merchant_category="local_food")
    paid = make_terminal("till", config=food).pay(present(reader, UID), 3_000)
    assert paid.entry is not None
    assert (paid.points, paid.balance) == (3_000 * 5 // 100, 10_000 - 3_000)
    signed = detail_of(ledger, paid.entry.seq)
    assert (signed["pts"], signed["bal"]) == (150, 7_000)
    fare = make_terminal("validator").tap(present(reader, UID))
    assert fare.approved and fare.entry is not None
    assert not {"aid", "lbl", "pts", "bal"} & set(detail_of(ledger, fare.entry.seq))
