"""Edge cases of the money paths that the mutation run (make mutation) showed no test stating.

The terminal core over a real ledger, with a card application of the tests' own (``edge``,
first in the list) that returns the card identity a test sets, or raises the error it sets:
so each branch of the decision (a card's verdict, an allowance, a nonce, a category, a read
error) is reached with figures the test knows. ``time.perf_counter`` as the core sees it
advances 0.25 s a call, so each decision states how long it took: 250 ms.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from firmware_cfg.config import DEFAULT
from firmware_cfg.keys import DEMO_TOKEN_KEY, KeyFileError
from localpay.errors import (
    CardRemovedError,
    LedgerCorruptError,
    LedgerStateError,
    LedgerWriteError,
    ParseError,
    QRFormatError,
    ReaderError,
    TransactionError,
)
from localpay.types import Presentation
from offline_ledger import Ledger
from terminal import cards, core
from terminal.cards import CardIdentity, Declined, ReadContext, card_token
from terminal.clock import ClockTrust
from terminal.core import Decision, State, Terminal
from terminal.emv.reader import terminal_aids
from terminal.risk import Reason
from tests.conftest import FakeClock, MakeTerminal

EDGE = "TEST-EDGE"
ELAPSED = 250.0
FARE = DEFAULT.fares.adult
CAMPAIGN_POINTS = 700


class Edge:
    """The tests' card application: what each presented name reads as."""

    def __init__(self) -> None:
        self.reads: dict[str, CardIdentity | Exception] = {}
        self.contexts: list[ReadContext] = []

    def claims(self, p: Presentation) -> bool:
        return p.protocol == EDGE

    def read(self, p: Presentation, ctx: ReadContext) -> CardIdentity:
        self.contexts.append(ctx)
        what = self.reads[p.payload]
        if isinstance(what, Exception):
            raise what
        return what

    def card(self, name: str, what: CardIdentity | Exception | None = None) -> Presentation:
        self.reads[name] = ident(name) if what is None else what
        return Presentation("card", "edge-reader", protocol=EDGE, payload=name)

    def code(self, name: str, what: CardIdentity | Exception) -> Presentation:
        self.reads[name] = what
        return Presentation("qr", "edge-scanner", protocol=EDGE, payload=name)


def ident(name: str, **fields: Any) -> CardIdentity:
    return CardIdentity(card_token(DEMO_TOKEN_KEY, "pan", name), f"PAN …{name}", "edge",
                        **fields)


def campaign_code(campaign: str = "tree-day", nonce: str = "code-nonce-1",
                  points: int = CAMPAIGN_POINTS) -> CardIdentity:
    return CardIdentity(card_token(DEMO_TOKEN_KEY, "wallet", "W-1"), "wallet W-1", "campaign",
                        nonce=(nonce, 1_900_000_000_000),
                        extra={"campaign": campaign, "points": points, "code": f"C:{nonce}",
                               "wallet": "W-1"})


@pytest.fixture
def edge() -> Iterator[Edge]:
    app = Edge()
    cards.register("edge", app.claims, app.read, first=True)
    try:
        yield app
    finally:
        cards.APPLICATIONS[:] = [a for a in cards.APPLICATIONS if a[0] != "edge"]


@pytest.fixture(autouse=True)
def ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The core's perf_counter: 0.25 s later at every call (two calls a decision)."""
    state = {"now": 10.0}

    def perf_counter() -> float:
        state["now"] += 0.25
        return state["now"]

    monkeypatch.setattr(core, "time", SimpleNamespace(perf_counter=perf_counter,
                                                      time=time.time))


def core_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "terminal.core"]


def detail_of(ledger: Ledger, seq: int) -> dict[str, Any]:
    entry = ledger.entry(seq)
    assert entry is not None
    return json.loads(entry.fields.detail)


def declined(d: Decision, reason: Reason, amount: int, detail: str,
             card: CardIdentity | None) -> None:
    assert (d.outcome, d.reason, d.amount, d.detail) == ("declined", reason, amount, detail)
    assert d.card == card and d.entry is None and d.balance is None
    assert d.elapsed_ms == ELAPSED
    assert d.message == reason.message


def failing(err: Exception) -> Any:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise err
    return fail


# -- construction, roles, state machine ---------------------------------------------------

def test_a_terminal_without_a_ledger_or_a_fault_is_refused(ledger: Ledger) -> None:
    with pytest.raises(TransactionError) as err:
        Terminal(DEFAULT, None, DEMO_TOKEN_KEY)
    assert str(err.value) == "a terminal needs a ledger, or the fault that stopped it"


def test_a_terminal_on_the_system_clock_judges_it(ledger: Ledger, clock: FakeClock) -> None:
    assert isinstance(Terminal(DEFAULT, ledger, DEMO_TOKEN_KEY).clock_trust, ClockTrust)
    given = ClockTrust(ledger)
    assert Terminal(DEFAULT, ledger, DEMO_TOKEN_KEY, clock_trust=given).clock_trust is given
    assert Terminal(DEFAULT, ledger, DEMO_TOKEN_KEY, clock=clock).clock_trust is None
    broken = Terminal(DEFAULT, None, DEMO_TOKEN_KEY, ledger_fault=LedgerCorruptError("x"))
    assert broken.clock_trust is None


def test_wrong_role_calls_say_which_role_does_what(make_terminal: MakeTerminal,
                                                   edge: Edge) -> None:
    with pytest.raises(TransactionError) as err:
        make_terminal("till").tap(edge.card("a"))
    assert str(err.value) == "tap() is the validator's; a till uses pay()"
    with pytest.raises(TransactionError) as err:
        make_terminal("validator").pay(edge.card("a"), 100)
    assert str(err.value) == "pay() is the till's; a validator uses tap()"
    with pytest.raises(TransactionError) as err:
        make_terminal("validator").refund(1, 100)
    assert str(err.value) == "refund is done at a till, not at a validator"
    with pytest.raises(TransactionError) as err:
        make_terminal("validator").void(1)
    assert str(err.value) == "void is done at a till, not at a validator"


def test_a_transaction_cannot_start_inside_another(make_terminal: MakeTerminal,
                                                   edge: Edge) -> None:
    terminal = make_terminal("validator")
    errors: list[str] = []

    def listener(state: State, d: Decision | None) -> None:
        if state is State.PRESENTED:
            try:
                terminal.tap(edge.card("b"))
            except TransactionError as err:
                errors.append(str(err))
            try:
                terminal.reconfigure(DEFAULT)
            except TransactionError as err:
                errors.append(str(err))
            assert terminal.lapse_claim() is None

    terminal.listeners.append(listener)
    assert terminal.tap(edge.card("a")).approved
    assert errors == ["transaction cannot go from presented to presented",
                      "cannot change the config in the middle of a transaction"]


def test_read_options_carry_the_risk_settings(ledger: Ledger) -> None:
    cfg = DEFAULT.replace("risk", qr_clock_skew_s=11, cpm_nonce_ttl_s=22, emv_floor_limit=33,
                          emv_threshold=44, emv_target_percent=5, emv_max_target_percent=6)
    terminal = Terminal(cfg, ledger, DEMO_TOKEN_KEY, read_options={"probe": 1})
    assert terminal.read_options == {
        "ledger": ledger, "qr_clock_skew_s": 11, "cpm_nonce_ttl_s": 22, "emv_floor_limit": 33,
        "emv_threshold": 44, "emv_target_percent": 5, "emv_max_target_percent": 6,
        "emv_aids": terminal_aids(cfg.emv), "probe": 1}


def test_a_bad_issuer_key_is_named_by_its_config_field(ledger: Ledger) -> None:
    # a Config built in code skips the file's checks: the terminal still names the field
    cfg = dataclasses.replace(DEFAULT, keys=dataclasses.replace(DEFAULT.keys,
                                                                issuer_public_key="zz"))
    with pytest.raises(KeyFileError) as err:
        Terminal(cfg, ledger, DEMO_TOKEN_KEY)
    assert str(err.value) == "keys.issuer_public_key is not 32 bytes of hex: 'zz'"


def test_reconfigure_takes_the_new_config_and_keeps_extra_options(
        make_terminal: MakeTerminal, ledger: Ledger, edge: Edge) -> None:
    terminal = Terminal(DEFAULT.replace("terminal", role="validator"), ledger, DEMO_TOKEN_KEY,
                        read_options={"probe": 1})
    till = DEFAULT.replace("terminal", role="till", place="M0009").replace(
        "risk", qr_clock_skew_s=77)
    terminal.reconfigure(till)
    assert terminal.config is till and terminal.role == "till"
    assert terminal.read_options["qr_clock_skew_s"] == 77
    assert terminal.read_options["probe"] == 1 and terminal.read_options["ledger"] is ledger
    d = terminal.pay(edge.card("a"), 1234)
    assert d.approved and d.entry is not None
    assert (d.entry.kind, d.entry.amount, d.entry.fields.place) == ("payment", 1234, "M0009")


# -- what a validator and a till record ------------------------------------------------------

def test_validator_tap_records_the_fare_place_and_detail(make_terminal: MakeTerminal,
                                                         ledger: Ledger, edge: Edge,
                                                         clock: FakeClock) -> None:
    terminal = make_terminal("validator")
    card = ident("a", atc=41)
    d = terminal.tap(edge.card("a", card))
    assert (d.outcome, d.amount, d.reason, d.card, d.rider) == ("approved", FARE, None, card,
                                                                "adult")
    assert d.elapsed_ms == ELAPSED and d.balance is None and d.message == "Approved."
    assert d.entry is not None
    f = d.entry.fields
    assert (f.kind, f.amount, f.place, f.card_token, f.wall_ms) == (
        "tap", FARE, "85", card.token, int(clock.now * 1000))
    assert detail_of(ledger, d.entry.seq) == {
        "scheme": "edge", "card": "PAN …a", "rider": "adult",
        "bus_type": terminal.config.terminal.bus_type, "atc": 41}
    assert edge.contexts[-1].amount == FARE


def test_till_payment_records_the_card_category_and_merchant(make_terminal: MakeTerminal,
                                                             ledger: Ledger,
                                                             edge: Edge) -> None:
    terminal = make_terminal("till")
    d = terminal.pay(edge.card("y", ident("y", rider="youth")), 4321)
    assert d.approved and d.amount == 4321 and d.rider is None
    assert d.entry is not None and d.entry.fields.place == "M0001"
    assert detail_of(ledger, d.entry.seq) == {
        "scheme": "edge", "card": "PAN …y", "rider": "youth",
        "merchant_category": terminal.config.terminal.merchant_category}
    d = terminal.pay(edge.card("n"), 100)
    assert d.entry is not None
    assert detail_of(ledger, d.entry.seq)["rider"] == "adult"
    assert edge.contexts[-1].amount == 100


def test_balance_left_counts_what_was_spent_offline(make_terminal: MakeTerminal,
                                                   ledger: Ledger, edge: Edge) -> None:
    card = ident("b")
    ledger.set_balances({card.token: 10_000}, 0)
    terminal = make_terminal("till")
    assert terminal.pay(edge.card("b", card), 1000).balance == 10_000 - 1000
    assert terminal.pay(edge.card("b", card), 2000).balance == 10_000 - 1000 - 2000
    d = terminal.pay(edge.card("b", card), 7001)
    declined(d, Reason.INSUFFICIENT_BALANCE, 7001, "", card)
    assert terminal.pay(edge.card("b", card), 7000).balance == 0


# -- the duplicate-tap window ------------------------------------------------------------------

def test_duplicate_window_ends_exactly_at_its_length(make_terminal: MakeTerminal,
                                                     ledger: Ledger, edge: Edge,
                                                     clock: FakeClock) -> None:
    card = ident("d")
    ledger.set_balances({card.token: 5000}, 0)
    terminal = make_terminal("validator", duplicate_window_s=30)
    first = terminal.tap(edge.card("d", card))
    assert first.approved and first.balance == 5000 - FARE and first.entry is not None
    clock.advance(29.999)
    again = terminal.tap(edge.card("d", card))
    assert (again.outcome, again.amount, again.reason, again.card) == ("already_paid", 0, None,
                                                                       card)
    assert again.balance == 5000 - FARE and again.entry is None
    assert again.detail == f"paid at entry {first.entry.seq}"
    assert again.elapsed_ms == ELAPSED
    assert again.message == "Already paid: this card tapped a moment ago."
    clock.advance(0.001)  # 30 s after the first tap, to the millisecond: a new ride
    second = terminal.tap(edge.card("d", card))
    assert second.approved and second.amount == FARE and second.balance == 5000 - 2 * FARE
    assert ledger.head.seq == 2


# -- declines and what they show ---------------------------------------------------------------

def test_risk_declines_name_the_card_and_log_the_reason(make_terminal: MakeTerminal,
                                                        ledger: Ledger, edge: Edge,
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    caplog.set_level(logging.INFO, logger="terminal.core")
    card = ident("x")
    ledger.apply_deny_delta(1, {card.token: "stolen"})
    d = make_terminal("validator").tap(edge.card("x", card))
    declined(d, Reason.DENY_LISTED, FARE, "", card)
    assert core_logs(caplog) == [f"declined {FARE}: deny_listed "]
    assert ledger.head.seq == 0


@pytest.mark.parametrize(("error", "reason", "detail"), [
    (Declined(Reason.QR_EXPIRED, "expired 40 s ago"), Reason.QR_EXPIRED, "expired 40 s ago"),
    (CardRemovedError("gone mid-read"), Reason.CARD_REMOVED, "gone mid-read"),
    (QRFormatError("bad crc"), Reason.QR_INVALID, "bad crc"),
    (ParseError("bad tlv"), Reason.UNREADABLE, "edge: bad tlv"),
    (ReaderError("no answer"), Reason.UNREADABLE, "edge: no answer"),
])
def test_read_errors_decline_with_the_amount_shown(make_terminal: MakeTerminal, edge: Edge,
                                                   ledger: Ledger, error: Exception,
                                                   reason: Reason, detail: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="terminal.core")
    declined(make_terminal("validator").tap(edge.card("e", error)), reason, FARE, detail, None)
    declined(make_terminal("till").pay(edge.card("e", error), 2500), reason, 2500, detail, None)
    assert core_logs(caplog) == [f"declined {FARE}: {reason.value} {detail}",
                                 f"declined 2500: {reason.value} {detail}"]
    assert ledger.head.seq == 0


def test_unsupported_presentation_shows_the_amount(make_terminal: MakeTerminal,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cards, "APPLICATIONS", [a for a in cards.APPLICATIONS
                                                if a[0] == "uid"])
    d = make_terminal("till").pay(Presentation("qr", "scanner", payload="hello"), 1000)
    declined(d, Reason.UNSUPPORTED, 1000, "qr via scanner", None)
    d = make_terminal("validator").tap(Presentation("qr", "cam", payload="hello"))
    declined(d, Reason.UNSUPPORTED, FARE, "qr via cam", None)


def test_a_card_verdict_declines_with_its_why(make_terminal: MakeTerminal, edge: Edge,
                                              ledger: Ledger) -> None:
    terminal = make_terminal("till")
    card = ident("v", verdict="emv_declined", extra={"why": "over the floor limit"})
    declined(terminal.pay(edge.card("v", card), 3000), Reason.EMV_DECLINED, 3000,
             "over the floor limit", card)
    bare = ident("w", verdict="emv_declined")
    declined(terminal.pay(edge.card("w", bare), 3000), Reason.EMV_DECLINED, 3000, "", bare)
    assert ledger.head.seq == 0


def test_an_allowance_covers_a_fare_up_to_the_won(make_terminal: MakeTerminal, edge: Edge,
                                                  ledger: Ledger) -> None:
    terminal = make_terminal("validator")
    youth = DEFAULT.fares.youth
    exact = ident("q1", rider="youth", allowance=youth)
    d = terminal.tap(edge.card("q1", exact))
    assert d.approved and d.amount == youth and d.rider == "youth"
    short = ident("q2", allowance=FARE - 1)
    declined(terminal.tap(edge.card("q2", short)), Reason.INSUFFICIENT_BALANCE, FARE,
             f"{FARE} won is over the code's offline allowance", short)
    assert ledger.head.seq == 1


def test_a_used_nonce_is_a_replay(make_terminal: MakeTerminal, edge: Edge,
                                  ledger: Ledger) -> None:
    terminal = make_terminal("till")
    card = ident("n", nonce=("nonce-7", 1_900_000_000_000))
    assert terminal.pay(edge.card("n", card), 800).approved
    assert ledger.nonce_used("nonce-7")
    declined(terminal.pay(edge.card("n", card), 800), Reason.QR_REPLAY, 800, "", card)
    assert ledger.head.seq == 1


# -- ledger faults -------------------------------------------------------------------------

def test_a_terminal_with_a_fault_declines_everything(ledger: Ledger, edge: Edge,
                                                    clock: FakeClock) -> None:
    fault = LedgerCorruptError("chain broken at 12")
    till = DEFAULT.replace("terminal", role="till")
    for led in (ledger, None):
        terminal = Terminal(till, led, DEMO_TOKEN_KEY, clock=clock, ledger_fault=fault)
        declined(terminal.pay(edge.card("a"), 900), Reason.LEDGER_BROKEN, 900,
                 "chain broken at 12", None)
        declined(terminal.refund(1, 500), Reason.LEDGER_BROKEN, 500, "chain broken at 12", None)
        declined(terminal.refund(1), Reason.LEDGER_BROKEN, 0, "chain broken at 12", None)
        declined(terminal.void(1), Reason.LEDGER_BROKEN, 0, "chain broken at 12", None)
    validator = Terminal(DEFAULT, ledger, DEMO_TOKEN_KEY, clock=clock, ledger_fault=fault)
    declined(validator.tap(edge.card("a")), Reason.LEDGER_BROKEN, FARE, "chain broken at 12",
             None)
    assert ledger.head.seq == 0


@pytest.mark.parametrize("method", ["rider_of", "card_state", "nonce_used", "append"])
def test_a_write_failure_declines_with_nothing_charged(make_terminal: MakeTerminal,
                                                       edge: Edge, ledger: Ledger,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture,
                                                       method: str) -> None:
    caplog.set_level(logging.INFO, logger="terminal.core")
    card = ident("f", nonce=("nonce-f", 1_900_000_000_000))
    terminal = make_terminal("validator")
    with monkeypatch.context() as m:
        m.setattr(ledger, method, failing(LedgerWriteError("disk full")))
        declined(terminal.tap(edge.card("f", card)), Reason.LEDGER_WRITE_FAILED, FARE,
                 "disk full", card)
    assert terminal.fault is None
    assert core_logs(caplog) == ["ledger write failed, declining: disk full",
                                 f"declined {FARE}: ledger_write_failed disk full"]
    assert ledger.head.seq == 0
    assert terminal.tap(edge.card("f", card)).approved


@pytest.mark.parametrize("method", ["rider_of", "card_state", "append"])
def test_a_corrupt_ledger_stops_the_terminal(make_terminal: MakeTerminal, edge: Edge,
                                             ledger: Ledger, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture,
                                             method: str) -> None:
    caplog.set_level(logging.INFO, logger="terminal.core")
    card = ident("c")
    err = LedgerCorruptError("hash mismatch at 3")
    terminal = make_terminal("validator")
    with monkeypatch.context() as m:
        m.setattr(ledger, method, failing(err))
        declined(terminal.tap(edge.card("c", card)), Reason.LEDGER_BROKEN, FARE,
                 "hash mismatch at 3", card)
    assert terminal.fault is err
    assert core_logs(caplog) == ["ledger failed, declining: hash mismatch at 3",
                                 f"declined {FARE}: ledger_broken hash mismatch at 3"]
    declined(terminal.tap(edge.card("c", card)), Reason.LEDGER_BROKEN, FARE,
             "hash mismatch at 3", None)


def test_a_ledger_state_error_declines_without_stopping_the_terminal(
        make_terminal: MakeTerminal, edge: Edge, ledger: Ledger,
        monkeypatch: pytest.MonkeyPatch) -> None:
    card = ident("s")
    monkeypatch.setattr(ledger, "card_state", failing(LedgerStateError("read-only")))
    terminal = make_terminal("till")
    declined(terminal.pay(edge.card("s", card), 600), Reason.LEDGER_BROKEN, 600, "read-only",
             card)
    assert terminal.fault is None


# -- collecting with no amount ------------------------------------------------------------

def test_collect_without_a_claim(make_terminal: MakeTerminal, edge: Edge,
                                 ledger: Ledger) -> None:
    card = ident("k")
    declined(make_terminal("till").collect(edge.card("k", card)), Reason.INVALID_AMOUNT, 0, "",
             card)
    d = make_terminal("validator").collect(edge.card("k", card))
    assert d.approved and d.amount == FARE and d.entry is not None and d.entry.kind == "tap"
    assert ledger.head.seq == 1


# -- campaign claims -------------------------------------------------------------------------

def test_a_code_holds_a_claim_and_shows_its_window(make_terminal: MakeTerminal, edge: Edge,
                                                   ledger: Ledger, clock: FakeClock) -> None:
    terminal = make_terminal("till", campaign_claim_window_s=45)
    code = campaign_code()
    d = terminal.pay(edge.code("code", code), 5000)
    assert (d.outcome, d.amount, d.reason, d.card, d.entry) == ("claim_pending", 0, None, code,
                                                                None)
    assert d.detail == "nothing charged; tap a card within 45 s to collect the points"
    assert (d.points, d.points_unconfirmed) == (None, CAMPAIGN_POINTS)
    assert d.elapsed_ms == ELAPSED
    assert d.message == "Nothing charged. Tap your card to collect the points."
    claim = terminal.pending_claim
    assert claim is not None and claim.code == code
    assert claim.deadline_ms == int(clock.now * 1000) + 45_000
    assert ledger.head.seq == 0


def test_a_card_collects_the_claim(ledger: Ledger, edge: Edge, clock: FakeClock) -> None:
    trust = ClockTrust(ledger, ntp=lambda: True)
    terminal = Terminal(DEFAULT.replace("terminal", role="till", place="M0042"), ledger,
                        DEMO_TOKEN_KEY, clock=clock, clock_trust=trust)
    code = campaign_code()
    terminal.pay(edge.code("code", code), 5000)
    card = ident("m")
    clock.advance(5)
    d = terminal.collect(edge.card("m", card))
    assert (d.outcome, d.amount, d.reason, d.card) == ("approved", 0, None, card)
    assert d.detail == "campaign tree-day: points collected, nothing charged"
    assert (d.points, d.points_unconfirmed) == (None, CAMPAIGN_POINTS)
    assert d.elapsed_ms == ELAPSED and terminal.pending_claim is None
    assert edge.contexts[-1].amount == 0
    assert d.entry is not None
    f = d.entry.fields
    now_ms = int(clock.now * 1000)
    assert (f.kind, f.amount, f.place, f.card_token, f.wall_ms) == ("incentive", 0, "M0042",
                                                                    card.token, now_ms)
    assert detail_of(ledger, d.entry.seq) == {
        "campaign": "tree-day", "points": CAMPAIGN_POINTS, "code": "C:code-nonce-1",
        "wallet": "W-1", "scheme": "edge", "card": "PAN …m",
        "clock": trust.judge(now_ms).state}
    assert ledger.nonce_used("code-nonce-1")


def test_a_validator_claim_charges_no_fare(make_terminal: MakeTerminal, edge: Edge,
                                          ledger: Ledger) -> None:
    terminal = make_terminal("validator")
    terminal.tap(edge.code("code", campaign_code()))
    d = terminal.tap(edge.card("m"))
    assert d.approved and d.amount == 0 and d.entry is not None
    assert d.entry.kind == "incentive" and d.entry.fields.place == "85"
    assert edge.contexts[-1].amount == 0
    assert [e.kind for e in ledger.entries()] == ["incentive"]


def test_a_read_error_while_claiming_shows_nothing_charged(make_terminal: MakeTerminal,
                                                           edge: Edge) -> None:
    terminal = make_terminal("validator")
    terminal.tap(edge.code("code", campaign_code()))
    d = terminal.tap(edge.card("r", CardRemovedError("too fast")))
    declined(d, Reason.CARD_REMOVED, 0, "too fast", None)
    assert terminal.pending_claim is not None


def test_the_claim_lapses_at_its_deadline(make_terminal: MakeTerminal, edge: Edge,
                                          ledger: Ledger, clock: FakeClock,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="terminal.core")
    terminal = make_terminal("validator", campaign_claim_window_s=30)
    terminal.tap(edge.code("code", campaign_code()))
    clock.advance(30)  # exactly the window: lapsed
    d = terminal.tap(edge.card("l"))
    assert d.approved and d.amount == FARE and d.entry is not None and d.entry.kind == "tap"
    assert terminal.pending_claim is None
    assert "campaign claim tree-day lapsed" in core_logs(caplog)


def test_lapse_claim_declines_once_the_window_passed(make_terminal: MakeTerminal, edge: Edge,
                                                    ledger: Ledger, clock: FakeClock) -> None:
    terminal = make_terminal("till", campaign_claim_window_s=30)
    assert terminal.lapse_claim() is None
    code = campaign_code()
    terminal.pay(edge.code("code", code), 0)
    clock.advance(29.999)
    assert terminal.lapse_claim() is None and terminal.pending_claim is not None
    clock.advance(0.001)
    d = terminal.lapse_claim()
    assert d is not None
    declined(d, Reason.CLAIM_LAPSED, 0, "campaign tree-day: no card tapped", code)
    assert terminal.pending_claim is None and terminal.lapse_claim() is None
    assert ledger.head.seq == 0


def test_a_cancelled_claim_leaves_the_card_to_pay(make_terminal: MakeTerminal, edge: Edge,
                                                 ledger: Ledger) -> None:
    terminal = make_terminal("till")
    terminal.pay(edge.code("code", campaign_code()), 0)
    terminal.cancel_claim()
    assert terminal.pending_claim is None
    d = terminal.pay(edge.card("p"), 2200)
    assert d.approved and d.amount == 2200 and d.entry is not None
    assert d.entry.kind == "payment"


def test_a_code_presented_while_a_claim_waits_pays_as_itself(make_terminal: MakeTerminal,
                                                             edge: Edge) -> None:
    terminal = make_terminal("till")
    terminal.pay(edge.code("code", campaign_code()), 0)
    wallet = ident("wallet-qr")
    d = terminal.pay(edge.code("wallet-qr", wallet), 3100)
    assert d.approved and d.amount == 3100 and d.card == wallet
    assert d.entry is not None and d.entry.kind == "payment"
    assert terminal.pending_claim is not None


def test_the_same_code_again_keeps_its_window(make_terminal: MakeTerminal, edge: Edge,
                                              clock: FakeClock) -> None:
    terminal = make_terminal("validator", campaign_claim_window_s=30)
    terminal.tap(edge.code("code", campaign_code()))
    first = terminal.pending_claim
    clock.advance(20)
    d = terminal.tap(edge.code("code", campaign_code()))
    assert d.outcome == "claim_pending" and terminal.pending_claim is first
    clock.advance(15)  # 35 s after the first scan: lapsed
    d = terminal.tap(edge.card("g"))
    assert d.approved and d.amount == FARE and d.entry is not None and d.entry.kind == "tap"


def test_another_code_replaces_the_claim(make_terminal: MakeTerminal, edge: Edge,
                                         ledger: Ledger, clock: FakeClock) -> None:
    terminal = make_terminal("validator", campaign_claim_window_s=30)
    terminal.tap(edge.code("a", campaign_code("tree-day", "n-a")))
    clock.advance(10)
    terminal.tap(edge.code("b", campaign_code("river-day", "n-b")))
    clock.advance(25)  # 35 s after the first code, 25 s after the second
    d = terminal.tap(edge.card("h"))
    assert d.approved and d.amount == 0
    assert d.detail == "campaign river-day: points collected, nothing charged"
    assert d.entry is not None and detail_of(ledger, d.entry.seq)["campaign"] == "river-day"


def test_a_claimed_code_is_a_replay(make_terminal: MakeTerminal, edge: Edge,
                                    ledger: Ledger) -> None:
    terminal = make_terminal("till")
    code = campaign_code()
    terminal.pay(edge.code("code", code), 0)
    assert terminal.collect(edge.card("m")).approved
    d = terminal.pay(edge.code("code", code), 0)
    declined(d, Reason.QR_REPLAY, 0, "this campaign code was already claimed here", code)
    assert terminal.pending_claim is None


def test_a_code_claimed_at_another_terminal_meanwhile_is_a_replay(
        make_terminal: MakeTerminal, edge: Edge, ledger: Ledger) -> None:
    one, two = make_terminal("till"), make_terminal("till")
    code = campaign_code()
    one.pay(edge.code("code", code), 0)
    two.pay(edge.code("code", code), 0)
    assert two.collect(edge.card("m")).approved
    card = ident("o")
    d = one.collect(edge.card("o", card))
    declined(d, Reason.QR_REPLAY, 0, "this campaign code was already claimed here", card)
    assert one.pending_claim is None and ledger.head.seq == 1


def test_a_blocked_card_collects_nothing(make_terminal: MakeTerminal, edge: Edge,
                                         ledger: Ledger) -> None:
    card = ident("z")
    ledger.apply_deny_delta(1, {card.token: "stolen"})
    terminal = make_terminal("till")
    terminal.pay(edge.code("code", campaign_code()), 0)
    declined(terminal.collect(edge.card("z", card)), Reason.DENY_LISTED, 0, "", card)
    assert ledger.head.seq == 0 and not ledger.nonce_used("code-nonce-1")


def test_a_card_collects_a_campaign_once(make_terminal: MakeTerminal, edge: Edge,
                                         ledger: Ledger) -> None:
    terminal = make_terminal("till")
    card = ident("u")
    terminal.pay(edge.code("c1", campaign_code("tree-day", "n-1")), 0)
    assert terminal.collect(edge.card("u", card)).approved
    terminal.pay(edge.code("c2", campaign_code("tree-day", "n-2")), 0)
    declined(terminal.collect(edge.card("u", card)), Reason.ALREADY_CLAIMED, 0,
             "campaign tree-day", card)
    assert ledger.head.seq == 1


@pytest.mark.parametrize(("method", "err", "reason"), [
    ("card_details", LedgerWriteError("disk full"), Reason.LEDGER_WRITE_FAILED),
    ("append", LedgerWriteError("disk full"), Reason.LEDGER_WRITE_FAILED),
    ("card_state", LedgerCorruptError("disk full"), Reason.LEDGER_BROKEN),
])
def test_a_ledger_failure_while_claiming(make_terminal: MakeTerminal, edge: Edge,
                                         ledger: Ledger, monkeypatch: pytest.MonkeyPatch,
                                         method: str, err: Exception, reason: Reason) -> None:
    terminal = make_terminal("till")
    terminal.pay(edge.code("code", campaign_code()), 0)
    monkeypatch.setattr(ledger, method, failing(err))
    card = ident("j")
    declined(terminal.collect(edge.card("j", card)), reason, 0, "disk full", card)


def test_a_ledger_failure_while_holding_a_code(make_terminal: MakeTerminal, edge: Edge,
                                               ledger: Ledger,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger, "nonce_used", failing(LedgerWriteError("io error")))
    terminal = make_terminal("till")
    code = campaign_code()
    declined(terminal.pay(edge.code("code", code), 5000), Reason.LEDGER_WRITE_FAILED, 0,
             "io error", code)
    assert terminal.pending_claim is None


def test_unreadable_rules_leave_the_points_unconfirmed(make_terminal: MakeTerminal,
                                                       edge: Edge,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    caplog.set_level(logging.INFO, logger="terminal.core")
    terminal = make_terminal("till")
    monkeypatch.setattr(terminal.points, "rules", failing(LedgerCorruptError("bad summary")))
    d = terminal.pay(edge.code("code", campaign_code(points=250)), 0)
    assert d.outcome == "claim_pending"
    assert (d.points, d.points_unconfirmed) == (None, 250)
    assert core_logs(caplog) == ["campaign points not confirmed: bad summary"]


# -- the till's corrections ---------------------------------------------------------------------

@pytest.fixture
def sold(make_terminal: MakeTerminal, edge: Edge) -> tuple[Terminal, int]:
    terminal = make_terminal("till")
    d = terminal.pay(edge.card("a"), 5000)
    assert d.entry is not None
    return terminal, d.entry.seq


def test_refund_records_the_amount_against_the_payment(ledger: Ledger, edge: Edge,
                                                       clock: FakeClock) -> None:
    trust = ClockTrust(ledger, ntp=lambda: True)
    till = DEFAULT.replace("terminal", role="till", place="M0007", merchant_category="5411")
    terminal = Terminal(till, ledger, DEMO_TOKEN_KEY, clock=clock, clock_trust=trust)
    card = ident("a")
    paid = terminal.pay(edge.card("a", card), 5000)
    assert paid.entry is not None
    clock.advance(60)
    d = terminal.refund(paid.entry.seq, 1200)
    assert (d.outcome, d.amount, d.reason, d.card) == ("approved", 1200, None, None)
    assert d.elapsed_ms == ELAPSED and d.entry is not None
    f = d.entry.fields
    now_ms = int(clock.now * 1000)
    assert (f.kind, f.amount, f.ref_seq, f.place, f.card_token, f.wall_ms) == (
        "refund", 1200, paid.entry.seq, "M0007", card.token, now_ms)
    assert detail_of(ledger, d.entry.seq) == {"merchant_category": "5411",
                                              "clock": trust.judge(now_ms).state}
    assert ledger.card_state(card.token).offline_amount == 5000 - 1200
    rest = terminal.refund(paid.entry.seq)
    assert rest.approved and rest.amount == 3800


def test_refund_of_what_is_not_a_payment(sold: tuple[Terminal, int], ledger: Ledger,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    terminal, seq = sold
    declined(terminal.refund(99, 300), Reason.NOT_REFUNDABLE, 300,
             "entry 99 is not a payment in this ledger", None)
    declined(terminal.refund(99), Reason.NOT_REFUNDABLE, 0,
             "entry 99 is not a payment in this ledger", None)
    refund = terminal.refund(seq, 100)
    assert refund.entry is not None
    declined(terminal.refund(refund.entry.seq, 50), Reason.NOT_REFUNDABLE, 50,
             f"entry {refund.entry.seq} is not a payment in this ledger", None)
    # an entry that is not there needs no look at its refunds: a failing read does not matter
    monkeypatch.setattr(ledger, "refunded_total", failing(LedgerWriteError("io")))
    declined(terminal.refund(99, 300), Reason.NOT_REFUNDABLE, 300,
             "entry 99 is not a payment in this ledger", None)


def test_void_after_a_refund_is_refused(sold: tuple[Terminal, int]) -> None:
    terminal, seq = sold
    assert terminal.refund(seq, 1000).approved
    declined(terminal.void(seq), Reason.NOT_REFUNDABLE, 5000,
             f"entry {seq} was partly refunded; refund the rest", None)
    d = terminal.refund(seq, 4000)
    assert d.approved and d.amount == 4000


def test_void_gives_back_the_whole_payment(sold: tuple[Terminal, int]) -> None:
    terminal, seq = sold
    d = terminal.void(seq)
    assert d.approved and d.amount == 5000 and d.entry is not None
    assert (d.entry.kind, d.entry.fields.ref_seq) == ("void", seq)


@pytest.mark.parametrize(("amount", "detail"), [
    (0, "0"), (-5, "-5"), ("100", "'100'"), (True, "True"), (2.5, "2.5"),
])
def test_refund_of_an_invalid_amount(sold: tuple[Terminal, int], ledger: Ledger,
                                     amount: Any, detail: str) -> None:
    terminal, seq = sold
    declined(terminal.refund(seq, amount), Reason.INVALID_AMOUNT, 0, detail, None)
    assert ledger.head.seq == seq


def test_refund_over_what_is_left(sold: tuple[Terminal, int], ledger: Ledger) -> None:
    terminal, seq = sold
    declined(terminal.refund(seq, 5001), Reason.REFUND_EXCEEDS, 5001,
             f"5000 won left of entry {seq}", None)
    assert terminal.refund(seq, 2000).approved
    declined(terminal.refund(seq, 3001), Reason.REFUND_EXCEEDS, 3001,
             f"3000 won left of entry {seq}", None)
    d = terminal.refund(seq, 3000)
    assert d.approved and d.amount == 3000
    declined(terminal.refund(seq), Reason.INVALID_AMOUNT, 0, "0", None)


@pytest.mark.parametrize(("method", "err", "reason"), [
    ("entry", LedgerWriteError("io"), Reason.LEDGER_WRITE_FAILED),
    ("refunded_total", LedgerCorruptError("io"), Reason.LEDGER_BROKEN),
])
def test_a_ledger_failure_reading_the_payment(sold: tuple[Terminal, int], ledger: Ledger,
                                              monkeypatch: pytest.MonkeyPatch, method: str,
                                              err: Exception, reason: Reason) -> None:
    terminal, seq = sold
    with monkeypatch.context() as m:
        m.setattr(ledger, method, failing(err))
        declined(terminal.refund(seq, 700), reason, 700, "io", None)
    terminal.fault = None
    with monkeypatch.context() as m:
        m.setattr(ledger, method, failing(LedgerWriteError("io")))
        declined(terminal.refund(seq), Reason.LEDGER_WRITE_FAILED, 0, "io", None)


def test_a_ledger_failure_recording_the_refund(sold: tuple[Terminal, int], ledger: Ledger,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    terminal, seq = sold
    with monkeypatch.context() as m:
        m.setattr(ledger, "append", failing(LedgerWriteError("disk full")))
        declined(terminal.refund(seq, 700), Reason.LEDGER_WRITE_FAILED, 700, "disk full",
                 None)
    assert ledger.refunded_total(seq) == 0
