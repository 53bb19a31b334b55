"""The terminal's side of incentive points: the campaign code (codec, signature, the central
service's second reading agreeing), points shown on validator taps and local-food payments
from the snapshot and the ledger, and campaign claims through the core."""

from __future__ import annotations

import json
from datetime import date

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from central.incentive_rules import Rules, verify_campaign_code
from drivers.virtual import VirtualReader
from firmware_cfg.config import DEFAULT
from firmware_cfg.keys import DEMO_TOKEN_KEY, public_hex
from localpay.errors import QRFormatError
from localpay.types import Presentation
from offline_ledger import Ledger
from terminal.cards import card_token
from terminal.qr import campaign, detect, parse_any
from terminal.risk import Reason
from tests.conftest import FakeClock, MakeTerminal, present
from tests.incentives_data import seoul_ms
from tests.strategies_incentives import campaign_codes

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
CARD, OTHER, THIRD = bytes.fromhex("08000001"), bytes.fromhex("08000002"), bytes.fromhex(
    "08000003")


def token(uid: bytes) -> str:
    return card_token(DEMO_TOKEN_KEY, "uid", uid)


def rules_text() -> str:
    # the holidays sent are those of the year the tests' days fall in, and the next
    return json.dumps(Rules.default().summary(date(2025, 3, 3)), sort_keys=True,
                      separators=(",", ":"))




# -- the code --------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(campaign_codes())
def test_campaign_code_round_trip_and_the_central_reading_agrees(
        code: campaign.CampaignCode) -> None:
    text = campaign.make(KEY, code.campaign_id, code.wallet_id, code.points,
                         valid_from=code.valid_from, valid_until=code.valid_until)
    assert detect(text) == "campaign" and parse_any(text).campaign is not None
    assert campaign.decode(text).code == code
    assert campaign.verify(text, [OTHER_KEY.public_key(), KEY.public_key()]) == code
    claim = verify_campaign_code(text, (bytes.fromhex(public_hex(KEY)),))
    assert claim is not None
    assert (claim.campaign_id, claim.wallet_id, claim.points, claim.valid_from,
            claim.valid_until) == (code.campaign_id, code.wallet_id, code.points,
                                   code.valid_from, code.valid_until)
    assert verify_campaign_code(text, (bytes.fromhex(public_hex(OTHER_KEY)),)) is None
    with pytest.raises(QRFormatError, match="signature"):
        campaign.verify(text, [OTHER_KEY.public_key()])


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_changed_character_never_verifies(data: st.DataObject) -> None:
    text = campaign.make(KEY, "tree-day", "w-1", 1000, valid_from=1_700_000_000)
    i = data.draw(st.integers(len(campaign.PREFIX), len(text) - 1))
    ch = data.draw(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567").filter(
        lambda c: c != text[i]))
    bad = text[:i] + ch + text[i + 1:]
    with pytest.raises(QRFormatError):
        campaign.verify(bad, [KEY.public_key()])
    assert verify_campaign_code(bad, (bytes.fromhex(public_hex(KEY)),)) is None


def test_malformed_campaign_codes_are_one_typed_error() -> None:
    good = campaign.make(KEY, "c", "w", 5, valid_from=100, valid_until=200)
    for bad in ("LPW1:AAAA", "LPC1:", "LPC1:aaaa", "LPC1:AAAAAAAA", good[:-10],
                "LPC1:" + "A" * 400):
        with pytest.raises(QRFormatError):
            campaign.decode(bad)
    for args in (("bad id!", "w", 5), ("c", "", 5), ("c", "w", 0)):
        with pytest.raises(QRFormatError):
            campaign.make(KEY, *args)
    with pytest.raises(QRFormatError, match="window"):
        campaign.make(KEY, "c", "w", 5, valid_from=200, valid_until=100)


# -- points shown at the validator and the till -------------------------------------------------


def test_no_points_shown_before_the_terminal_knows_the_rules(
        make_terminal: MakeTerminal, reader: VirtualReader, clock: FakeClock) -> None:
    clock.now = seoul_ms(2025, 3, 11, 7) / 1000
    d = make_terminal("validator").tap(present(reader, CARD))
    assert d.approved and (d.points, d.points_week) == (None, None)


def test_validator_points_from_the_snapshot_and_the_last_tap(
        make_terminal: MakeTerminal, reader: VirtualReader, ledger: Ledger,
        clock: FakeClock) -> None:
    clock.now = seoul_ms(2025, 3, 11, 7) / 1000                       # a Tuesday
    ledger.set_points_snapshot({
        token(CARD): ("2025-03-10", 1500, 0b1, ""),                   # rode Monday
        token(OTHER): ("2025-03-03", 2900, 0b11111, ""),              # last week: not this
        token(THIRD): ("2025-03-10", 1800, 0b1, "youth"),             # youth by profile
    }, 7, rules_text(), synced_at=seoul_ms(2025, 3, 11, 6))
    ledger.set_riders({token(THIRD): "youth"}, 3)       # the profile, as the sync stores it
    t = make_terminal("validator")

    def tap(uid: bytes) -> tuple[int | None, int | None]:
        d = t.tap(present(reader, uid))
        assert d.approved
        return d.points, d.points_week

    assert tap(CARD) == (1400, 2900)
    assert tap(OTHER) == (1500, 1500)
    assert tap(THIRD) == (220, 2020)
    clock.advance(3600)
    assert tap(CARD) == (0, 2900)
    assert tap(OTHER) == (0, 1500)        # this morning's ride here is not in the snapshot
    clock.now = seoul_ms(2025, 3, 15, 9) / 1000                       # Saturday
    # Tuesday's rides never synced: only the last tap (not today's) is known offline.
    assert tap(OTHER) == (0, 0)
    clock.now = seoul_ms(2025, 3, 17, 0, 0, 30) / 1000                # Monday just after 0:00
    assert tap(OTHER) == (1500, 1500)     # a new week in Seoul time


def test_holidays_and_other_bus_types(make_terminal: MakeTerminal, reader: VirtualReader,
                                      ledger: Ledger, clock: FakeClock) -> None:
    ledger.set_points_snapshot({}, 1, rules_text())
    clock.now = seoul_ms(2025, 3, 3, 8) / 1000                        # substitute holiday
    d = make_terminal("validator").tap(present(reader, CARD))
    assert (d.points, d.points_week) == (0, 0)
    express = DEFAULT.replace("terminal", bus_type="express")
    clock.advance(86_400)
    d = make_terminal("validator", config=express).tap(present(reader, OTHER))
    assert d.approved and (d.points, d.points_week) == (None, None)


def test_till_shows_local_food_points(make_terminal: MakeTerminal, reader: VirtualReader,
                                      ledger: Ledger) -> None:
    ledger.set_points_snapshot({}, 1, rules_text())
    food = make_terminal("till", config=DEFAULT.replace("terminal",
                                                         merchant_category="local_food"))
    d = food.pay(present(reader, CARD), 9_999)      # UID cards: at most 10,000 won
    assert d.approved and (d.points, d.points_week) == (29, None)
    d = make_terminal("till").pay(present(reader, OTHER), 9_999)
    assert d.approved and d.points is None


# -- campaign claims through the core ---------------------------------------------------------


def test_campaign_claim_is_recorded_once_at_a_validator(
        make_terminal: MakeTerminal, ledger: Ledger, clock: FakeClock,
        reader: VirtualReader) -> None:
    clock.now = seoul_ms(2025, 4, 5, 11) / 1000
    cfg = DEFAULT.replace("keys", issuer_public_key=public_hex(KEY))
    t = make_terminal("validator", config=cfg)
    now = int(clock.now)
    code = campaign.make(KEY, "tree-day", "w-1", 1000, valid_from=now - 60)
    d = t.tap(Presentation("qr", "scanner", payload=code))
    # no rules summary here: the signed figure is shown as not confirmed
    assert (d.outcome, d.amount, d.points, d.points_unconfirmed) == (
        "claim_pending", 0, None, 1000)
    assert ledger.count() == 0                       # nothing recorded until a card comes
    d = t.tap(present(reader, CARD))
    assert d.approved and (d.amount, d.points_unconfirmed) == (0, 1000)
    assert d.entry is not None and d.entry.kind == "incentive" and d.entry.amount == 0
    assert d.entry.fields.card_token == token(CARD)
    detail = json.loads(d.entry.fields.detail)
    assert (detail["campaign"], detail["points"], detail["code"], detail["wallet"]) == (
        "tree-day", 1000, code, "w-1")
    count = ledger.count()
    again = t.tap(Presentation("qr", "scanner", payload=code))
    assert again.reason is Reason.QR_REPLAY and ledger.count() == count
    expired = campaign.make(KEY, "tree-day", "w-2", 1000, valid_from=now - 7200,
                            valid_until=now - 3600)
    assert t.tap(Presentation("qr", "scanner", payload=expired)).reason is Reason.QR_EXPIRED
    forged = campaign.make(OTHER_KEY, "tree-day", "w-3", 9000, valid_from=now - 60)
    assert t.tap(Presentation("qr", "scanner", payload=forged)).reason is Reason.QR_INVALID
    assert t.pending_claim is None and ledger.count() == count
