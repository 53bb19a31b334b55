"""Campaign codes claimed by a card: what the terminal shows is what the central service
credits (the rules' cap, sent in the rules' summary), a till takes a code and charges nothing,
and the points land on the card tapped after the code, not on the wallet that brought it.

Real stacks: a real ledger, the real core and card applications through the virtual reader,
the real central ingest (``CentralLog`` over SQLite, the terminal's own signed entries), the
real kiosk app and engine threads. Figures are computed here independently and checked on
both sides (the terminal's screen and ledger, the central credit).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.incentive_rules import Rules, default_rules_text
from central.incentives import IncentiveCrediter
from central.payouts import statement
from central.rules import default_hooks
from central.service import CentralLog
from central.store import open_store
from central.versions import load_rules
from drivers.virtual import VirtualReader
from firmware_cfg.config import DEFAULT, Config, from_dict
from firmware_cfg.keys import DEMO_TOKEN_KEY, public_hex
from kiosk_ui.app import KioskApp
from kiosk_ui.model import Screen
from localpay.errors import ConfigError
from localpay.types import Presentation
from offline_ledger import Ledger
from sync.checkpoint import NoteSigner
from sync.protocol import decode_entry
from terminal.cards import card_token
from terminal.core import Terminal
from terminal.incentives import TerminalRules
from terminal.qr import campaign
from terminal.risk import Reason
from tests.conftest import FakeClock, MakeTerminal
from tests.incentives_data import seoul_ms

CAMPAIGN_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(7, 39)))
MINJI, JUNHO = bytes.fromhex("08c10001"), bytes.fromhex("08c10002")
RULE_POINTS = 1000
#: the campaign's days (Seoul): Saturday 5 and Sunday 6 April 2025
START, END = date(2025, 4, 5), date(2025, 4, 6)
CLAIM_AT = seoul_ms(2025, 4, 5, 11)


def uid_token(uid: bytes) -> str:
    return card_token(DEMO_TOKEN_KEY, "uid", uid)


def wallet_token(wallet_id: str) -> str:
    return card_token(DEMO_TOKEN_KEY, "wallet", wallet_id)


def rules_text() -> str:
    return default_rules_text().replace("version = 1", "version = 2").replace(
        "keys = []", f'keys = ["{public_hex(CAMPAIGN_KEY)}"]\n\n[campaigns.events.tree-day]\n'
        f"points = {RULE_POINTS}\nstart = {START.isoformat()}\nend = {END.isoformat()}")


def summary_text(today: date = START) -> str:
    return json.dumps(Rules.from_toml(rules_text()).summary(today), sort_keys=True,
                      separators=(",", ":"))


def code(wallet: str, points: int, campaign_id: str = "tree-day", *,
         at: int = CLAIM_AT) -> Presentation:
    text = campaign.make(CAMPAIGN_KEY, campaign_id, wallet, points,
                         valid_from=at // 1000 - 3600)
    return Presentation("qr", "scanner", payload=text)


@pytest.fixture
def reader() -> Iterator[VirtualReader]:
    r = VirtualReader()
    yield r
    r.close()


def card(reader: VirtualReader, uid: bytes) -> Presentation:
    reader.present_uid(uid)
    p = reader.poll(1.0)
    assert p is not None
    return p


def campaign_config(**risk: int) -> Config:
    cfg = DEFAULT.replace("keys", issuer_public_key=public_hex(CAMPAIGN_KEY))
    return cfg.replace("risk", **risk) if risk else cfg


@pytest.fixture
def at_claim(clock: FakeClock, ledger: Ledger) -> FakeClock:
    """The terminal's clock on the campaign's first day, with the rules' summary synced."""
    clock.now = CLAIM_AT / 1000
    ledger.set_points_snapshot({}, 1, summary_text())
    return clock


def kinds(ledger: Ledger) -> list[str]:
    return [e.kind for e in ledger.entries(ledger.first_seq())]


# -- the summary ----------------------------------------------------------------------------------


def test_terminal_rules_parse_with_and_without_campaigns() -> None:
    with_them = json.loads(summary_text())
    assert with_them["campaigns"] == {"tree-day": {"points": RULE_POINTS, "start": "2025-04-05",
                                                   "end": "2025-04-06"}}
    parsed = TerminalRules.parse(json.dumps(with_them))
    assert parsed is not None and parsed.campaigns is not None
    rule = parsed.campaigns["tree-day"]
    assert (rule.points, rule.start, rule.end) == (RULE_POINTS, START, END)
    # an older service's summary has no campaigns: it still parses, nothing is confirmed
    older = {k: v for k, v in with_them.items() if k != "campaigns"}
    parsed = TerminalRules.parse(json.dumps(older))
    assert parsed is not None and parsed.campaigns is None and parsed.version == 2
    # campaigns already over are not sent
    assert json.loads(summary_text(date(2025, 4, 7)))["campaigns"] == {}


# -- what is shown is what is credited -------------------------------------------------------------


def test_shown_points_are_the_rules_cap_and_central_credits_the_card(
        tmp_path: Path, make_terminal: MakeTerminal, ledger: Ledger, key: Ed25519PrivateKey,
        reader: VirtualReader, at_claim: FakeClock) -> None:
    signed = 5000
    expected = min(signed, RULE_POINTS)           # Campaign.grant, computed here
    t = make_terminal("validator", config=campaign_config())
    pending = t.tap(code("w-1", signed))
    assert (pending.outcome, pending.amount, pending.points, pending.points_unconfirmed) == (
        "claim_pending", 0, expected, None)
    assert ledger.count() == 0                    # nothing recorded before the card
    done = t.tap(card(reader, MINJI))
    assert done.approved and (done.amount, done.points) == (0, expected)
    entry = done.entry
    assert entry is not None and entry.kind == "incentive" and entry.amount == 0
    assert entry.fields.card_token == uid_token(MINJI) != wallet_token("w-1")
    detail = json.loads(entry.fields.detail)
    assert (detail["campaign"], detail["wallet"], detail["code"], detail["points"]) == (
        "tree-day", "w-1", code("w-1", signed).payload, signed)
    assert kinds(ledger) == ["incentive"]         # no fare, no payment: no money moved
    assert ledger.card_state(uid_token(MINJI)).offline_amount == 0 and ledger.exposure == 0

    # the real central ingest of the terminal's own signed entries
    svc = CentralLog(open_store(f"sqlite:///{tmp_path / 'central.sqlite'}"),
                     NoteSigner("test.example/log", Ed25519PrivateKey.generate()),
                     hooks=default_hooks(), followers=[IncentiveCrediter()])
    try:
        load_rules(svc.store, rules_text())
        svc.add_terminal(ledger.terminal_id, key.public_key().public_bytes_raw())
        svc.ingest(ledger.terminal_id, [decode_entry(e.encoded(), e.signature)
                                        for e in ledger.entries(ledger.first_seq())])
        credited = statement(svc.store, uid_token(MINJI))
        assert [(c["rule"], c["points"]) for c in credited["entries"]] == [
            ("campaign", expected)]
        assert int(credited["earned"]) == expected == done.points
        assert int(statement(svc.store, wallet_token("w-1"))["earned"]) == 0
    finally:
        svc.store.close()


def test_a_campaign_the_rules_do_not_confirm_shows_the_signed_figure_unconfirmed(
        make_terminal: MakeTerminal, ledger: Ledger, reader: VirtualReader,
        clock: FakeClock) -> None:
    clock.now = CLAIM_AT / 1000
    t = make_terminal("validator", config=campaign_config())
    d = t.tap(code("w-1", 5000, "sea-day"))            # no summary at all
    assert (d.points, d.points_unconfirmed) == (None, 5000)
    ledger.set_points_snapshot({}, 1, summary_text())
    t.points.refresh_s = 0
    d = t.tap(code("w-2", 5000, "sea-day"))            # a campaign the rules do not know
    assert (d.points, d.points_unconfirmed) == (None, 5000)
    monday = seoul_ms(2025, 4, 7, 9)                    # tree-day is over on Monday
    clock.now = monday / 1000
    d = t.tap(code("w-3", 5000, at=monday))
    assert (d.outcome, d.points, d.points_unconfirmed) == ("claim_pending", None, 5000)


# -- a till takes a code --------------------------------------------------------------------------


def test_a_till_takes_a_campaign_code_and_charges_nothing(
        make_terminal: MakeTerminal, ledger: Ledger, reader: VirtualReader,
        at_claim: FakeClock) -> None:
    t = make_terminal("till", config=campaign_config())
    d = t.pay(code("w-1", 800), 14_000)                # an amount was keyed: not charged
    assert (d.outcome, d.amount, d.points) == ("claim_pending", 0, min(800, RULE_POINTS))
    assert "nothing charged" in d.detail and ledger.count() == 0
    d = t.pay(card(reader, JUNHO), 14_000)             # the card collects: still nothing
    assert d.approved and (d.amount, d.points) == (0, 800)
    assert d.entry is not None and d.entry.amount == 0
    assert d.entry.fields.card_token == uid_token(JUNHO)
    # and with no sale keyed, the kiosk hands the code and the card to collect()
    assert t.collect(code("w-2", 5000)).outcome == "claim_pending"
    d = t.collect(card(reader, MINJI))
    assert d.approved and (d.amount, d.points) == (0, RULE_POINTS)
    assert kinds(ledger) == ["incentive", "incentive"]   # no payment entry
    assert ledger.exposure == 0
    assert sum(e.amount for e in ledger.entries(ledger.first_seq())) == 0


# -- the pending claim ----------------------------------------------------------------------------


def test_a_code_without_a_card_lapses_and_records_nothing(
        make_terminal: MakeTerminal, ledger: Ledger, reader: VirtualReader,
        at_claim: FakeClock) -> None:
    t = make_terminal("validator", config=campaign_config())
    assert t.tap(code("w-1", 1000)).outcome == "claim_pending"
    at_claim.advance(29)
    assert t.lapse_claim() is None and t.pending_claim is not None
    at_claim.advance(1)                                 # 30 s: the default window
    lapsed = t.lapse_claim()
    assert lapsed is not None and lapsed.reason is Reason.CLAIM_LAPSED
    assert t.pending_claim is None and ledger.count() == 0
    # a card after the window is an ordinary tap: a fare, no claim
    assert t.tap(code("w-1", 1000)).outcome == "claim_pending"   # nothing was recorded
    at_claim.advance(31)
    d = t.tap(card(reader, MINJI))
    assert d.approved and d.entry is not None and d.entry.kind == "tap"
    assert d.amount == DEFAULT.fares.adult and kinds(ledger) == ["tap"]


def test_the_window_is_a_config_value(make_terminal: MakeTerminal, ledger: Ledger,
                                      reader: VirtualReader, at_claim: FakeClock) -> None:
    t = make_terminal("validator", config=campaign_config(campaign_claim_window_s=5))
    t.tap(code("w-1", 1000))
    at_claim.advance(4)
    assert t.tap(card(reader, MINJI)).entry is not None
    t.tap(code("w-2", 1000))
    at_claim.advance(5)
    lapsed = t.lapse_claim()
    assert lapsed is not None and lapsed.reason is Reason.CLAIM_LAPSED
    assert DEFAULT.risk.campaign_claim_window_s == 30
    with pytest.raises(ConfigError, match="campaign_claim_window_s"):
        from_dict({"terminal": {"id": "T-1"}, "risk": {"campaign_claim_window_s": 0}})


def test_a_code_twice_is_one_claim_and_a_card_claims_a_campaign_once(
        make_terminal: MakeTerminal, ledger: Ledger, reader: VirtualReader,
        at_claim: FakeClock) -> None:
    t = make_terminal("validator", config=campaign_config())
    first = code("w-1", 1000)
    assert t.tap(first).outcome == "claim_pending"
    assert t.tap(first).outcome == "claim_pending"     # shown again: the same claim
    assert t.tap(card(reader, MINJI)).approved
    assert t.tap(first).reason is Reason.QR_REPLAY      # recorded with its nonce
    assert kinds(ledger) == ["incentive"]
    # another wallet's code for the same campaign, the same card: refused offline
    at_claim.advance(60)
    assert t.tap(code("w-2", 1000)).outcome == "claim_pending"
    d = t.tap(card(reader, MINJI))
    assert d.reason is Reason.ALREADY_CLAIMED and ledger.count() == 1
    # the same code with another card still may (the first claim was refused, not recorded)
    assert t.tap(code("w-2", 1000)).outcome == "claim_pending"
    d = t.tap(card(reader, JUNHO))
    assert d.approved and d.entry is not None
    assert d.entry.fields.card_token == uid_token(JUNHO)
    assert kinds(ledger) == ["incentive", "incentive"]


# -- the kiosk ------------------------------------------------------------------------------------


def pump(app: KioskApp, until: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; screen {app.model.screen}")
        app.step()
        time.sleep(0.005)
    app.step()


def test_kiosk_till_prompts_for_the_card_and_reports_a_lapse(tmp_path: Path) -> None:
    clock = FakeClock(CLAIM_AT / 1000)
    cfg = campaign_config().replace("terminal", role="till", id="T-till", place="M0001",
                                    merchant_name="Test Store", language="en")
    ledger = Ledger(tmp_path / "ledger.sqlite", key=Ed25519PrivateKey.generate(),
                    terminal_id="T-till")
    ledger.set_points_snapshot({}, 1, summary_text())
    reader = VirtualReader("test reader")
    app = KioskApp(Terminal(cfg, ledger, DEMO_TOKEN_KEY, clock=clock), reader.poll)
    app.start()
    try:
        app.step()
        assert app.model.screen == Screen.KEYPAD
        reader.present_code(code("w-1", 5000).payload)   # no sale keyed: taken all the same
        pump(app, lambda: app.model.result is not None
             and app.model.result.outcome == "claim_pending", "the prompt")
        drawn = {r.name: r.text for r in app.painter.records}
        assert drawn["headline"] == "Tap your card to collect the points"
        assert drawn["points"] == f"{RULE_POINTS:,} points"
        reader.present_uid(MINJI)
        pump(app, lambda: app.model.result is not None
             and app.model.result.outcome == "approved", "the claim")
        drawn = {r.name: r.text for r in app.painter.records}
        assert (drawn["headline"], drawn["nothing_charged"]) == (
            "Points collected", "Nothing charged")
        assert [e.fields.card_token for e in ledger.entries(1)] == [uid_token(MINJI)]

        reader.present_code(code("w-2", 1000).payload)
        pump(app, lambda: app.model.result is not None
             and app.model.result.outcome == "claim_pending", "the second prompt")
        clock.advance(31)                                 # no card: the engine reports it
        pump(app, lambda: app.model.result is not None
             and app.model.result.reason is Reason.CLAIM_LAPSED, "the lapse")
        assert ledger.count() == 1
    finally:
        app.close()
        reader.close()
        ledger.close()
