"""Pockets at the till: the snapshot held in the ledger, the split of a payment offline, its
own decline reasons, the split in the entry, what each pocket spent offline (counted with the
entry, given back by refunds, recounted by ``mark_synced``), and the screen and receipt that
show it. Every figure is worked out by hand in the test."""

from __future__ import annotations

import json
from datetime import timedelta

import pygame
import pytest

from drivers.virtual import VirtualReader
from firmware_cfg.config import DEFAULT, Config, brn_check_digit
from kiosk_ui.draw import Painter
from kiosk_ui.fonts import load_fonts
from kiosk_ui.model import KioskModel, ResultView, Screen, receipt_lines, split_text
from kiosk_ui.shots import till_statics
from localpay.pockets import DEFAULT_RULES
from offline_ledger import Ledger
from offline_ledger import pockets as lp
from terminal.cards import card_token
from terminal.core import Terminal
from terminal.risk import Reason
from tests.conftest import FakeClock, present

#: cash anywhere; points anywhere but large marts; the youth allowance in retail (KSIC 47),
#: at most 3,000 won a day
RULES = DEFAULT_RULES + """
[[pocket]]
id = "youth"
kind = "allowance"
allow_categories = ["ksic:47"]
per_day = 3000
"""

UID = bytes.fromhex("08000001")
OTHER = bytes.fromhex("08000002")


def _brn(first9: str) -> str:
    return f"{first9[:3]}-{first9[3:5]}-{first9[5:]}{brn_check_digit(first9)}"


def merchant_config(category: str = "ksic:47121", memberships: tuple[str, ...] = (),
                    mid: str = "M-LOCAL") -> Config:
    base = DEFAULT.replace("terminal", role="till", id="T-TEST-01", place=mid)
    return base.with_merchant(id=mid, name="Ilsan Farm Store", brn=_brn("134867268"),
                              category=category, region="ilsan-dong",
                              memberships=memberships)




def token(uid: bytes = UID) -> str:
    from firmware_cfg.keys import DEMO_TOKEN_KEY

    return card_token(DEMO_TOKEN_KEY, "uid", uid)


def terminal(ledger: Ledger, clock: FakeClock, config: Config | None = None) -> Terminal:
    from firmware_cfg.keys import DEMO_TOKEN_KEY

    return Terminal(config or merchant_config(), ledger, DEMO_TOKEN_KEY, clock=clock)


def hold(ledger: Ledger, pockets: dict[str, lp.Wire], *, card: str | None = None,
         merchant: str = "M-LOCAL", rules: str = RULES, version: int = 1) -> None:
    lp.store(ledger, lp.PocketState(version, "default", merchant, 1, rules),
             {card or token(): pockets})


def today(clock: FakeClock) -> str:
    return lp.seoul_day(int(clock() * 1000)).isoformat()


def later(clock: FakeClock, days: int) -> str:
    return (lp.seoul_day(int(clock() * 1000)) + timedelta(days=days)).isoformat()


def split_in(ledger: Ledger, seq: int) -> list[list[object]] | None:
    entry = ledger.entry(seq)
    assert entry is not None
    return json.loads(entry.fields.detail).get("split")


def offline(ledger: Ledger, card: str) -> dict[str, int]:
    return {str(p): int(a) for p, a in ledger._conn.execute(
        "SELECT pocket, offline_amount FROM pocket_counters WHERE card_token = ?", (card,))}


# -- the split --------------------------------------------------------------------------------


def test_restricted_money_first_within_limits_and_the_entry_records_it(
        ledger: Ledger, clock: FakeClock, reader: VirtualReader) -> None:
    hold(ledger, {"cash": (10_000, [], None), "points": (1_000, [], None),
                  "youth": (5_000, [later(clock, 30)], None)})
    till = terminal(ledger, clock)
    decision = till.pay(present(reader, UID), 6_000)
    # youth gives its day's 3,000, points all 1,000, cash the other 2,000
    assert decision.approved
    assert decision.split == (("youth", 3_000), ("points", 1_000), ("cash", 2_000))
    assert decision.entry is not None
    assert split_in(ledger, decision.entry.seq) == [["youth", 3_000], ["points", 1_000],
                                                    ["cash", 2_000]]
    assert offline(ledger, token()) == {"youth": 3_000, "points": 1_000, "cash": 2_000}
    held = lp.card_pockets(ledger, token(), lp.seoul_day(int(clock() * 1000)))
    assert held is not None
    assert {b.pocket: b.balance for b in held.balances} == {"cash": 8_000, "points": 0,
                                                            "youth": 2_000}
    assert held.spent_today == {"youth": 3_000, "points": 1_000, "cash": 2_000}
    # the youth day is used up: the next 1,500 comes from cash alone
    second = till.pay(present(reader, UID), 1_500)
    assert second.split == (("cash", 1_500),)
    # a new Seoul day gives youth its 3,000 again; the offline amounts stay until a sync
    clock.advance(86_400)
    third = till.pay(present(reader, UID), 4_000)
    assert third.split == (("youth", 2_000), ("cash", 2_000))
    assert offline(ledger, token()) == {"youth": 5_000, "points": 1_000, "cash": 5_500}


def test_nothing_eligible_is_its_own_decline(ledger: Ledger, clock: FakeClock,
                                             reader: VirtualReader) -> None:
    hold(ledger, {"cash": (0, [], None), "points": (5_000, [], None)}, merchant="M-MART")
    mart = terminal(ledger, clock, merchant_config("ksic:47111", ("large-mart",), "M-MART"))
    head = ledger.head.seq
    decision = mart.pay(present(reader, UID), 3_000)
    assert decision.reason is Reason.NO_ELIGIBLE_POCKET
    assert Reason.NO_ELIGIBLE_POCKET.message_ko != Reason.INSUFFICIENT_BALANCE.message_ko
    assert ledger.head.seq == head  # nothing recorded


def test_too_little_in_the_pockets_that_may_pay_is_insufficient(
        ledger: Ledger, clock: FakeClock, reader: VirtualReader) -> None:
    hold(ledger, {"cash": (1_000, [], None), "points": (2_000, [], None),
                  "youth": (9_000, [later(clock, 3)], None)})
    cafe = terminal(ledger, clock, merchant_config("ksic:56221"))
    head = ledger.head.seq
    # a cafe: youth may not pay; cash 1,000 + points 2,000 = 3,000 < 3,500
    assert cafe.pay(present(reader, UID), 3_500).reason is Reason.INSUFFICIENT_BALANCE
    assert ledger.head.seq == head
    assert cafe.pay(present(reader, UID), 3_000).split == (("points", 2_000), ("cash", 1_000))


def test_an_expired_grant_pays_nothing(ledger: Ledger, clock: FakeClock,
                                       reader: VirtualReader) -> None:
    hold(ledger, {"cash": (5_000, [], None), "youth": (5_000, [later(clock, -1)], None)})
    decision = terminal(ledger, clock).pay(present(reader, UID), 2_000)
    assert decision.split == (("cash", 2_000),)
    # the expiry day itself still pays, soonest running grant first
    assert lp.expiry_on([later(clock, 0), later(clock, 9)], "", lp.seoul_day(
        int(clock() * 1000))).isoformat() == today(clock)
    assert lp.expiry_on([later(clock, -2)], later(clock, -1), lp.seoul_day(
        int(clock() * 1000))).isoformat() == later(clock, -1)


def test_a_card_without_pockets_keeps_its_single_balance(ledger: Ledger, clock: FakeClock,
                                                         reader: VirtualReader) -> None:
    hold(ledger, {"cash": (50_000, [], None)}, card=token(OTHER))
    ledger.set_balances({token(): 3_000}, 1)
    till = terminal(ledger, clock)
    assert till.pay(present(reader, UID), 5_000).reason is Reason.INSUFFICIENT_BALANCE
    paid = till.pay(present(reader, UID), 2_000)
    assert paid.approved and paid.split == () and paid.entry is not None
    assert split_in(ledger, paid.entry.seq) is None
    assert offline(ledger, token()) == {}


def test_no_split_without_a_merchant_or_for_another_merchant(
        ledger: Ledger, clock: FakeClock, reader: VirtualReader) -> None:
    hold(ledger, {"cash": (0, [], None)})
    plain = DEFAULT.replace("terminal", role="till", id="T-TEST-01", place="M0001")
    assert terminal(ledger, clock, plain).pay(present(reader, UID), 1_000).approved
    # the snapshot is of M-LOCAL; a till configured for M-OTHER does not use it
    other = terminal(ledger, clock, merchant_config(mid="M-OTHER"))
    assert other.pay(present(reader, UID), 1_000).split == ()


def test_a_refund_gives_back_newest_drawn_first(ledger: Ledger, clock: FakeClock,
                                                reader: VirtualReader) -> None:
    hold(ledger, {"cash": (10_000, [], None), "points": (1_000, [], None),
                  "youth": (5_000, [later(clock, 30)], None)})
    till = terminal(ledger, clock)
    paid = till.pay(present(reader, UID), 6_000)
    assert paid.entry is not None
    seq = paid.entry.seq
    first = till.refund(seq, 2_500)
    # drawn youth 3,000, points 1,000, cash 2,000: back cash 2,000 then points 500
    assert first.split == (("cash", 2_000), ("points", 500))
    assert first.entry is not None and split_in(ledger, first.entry.seq) == [
        ["cash", 2_000], ["points", 500]]
    rest = till.refund(seq)
    assert rest.split == (("points", 500), ("youth", 3_000))
    assert offline(ledger, token()) == {"youth": 0, "points": 0, "cash": 0}
    # a day's spending counts payments only, as central's daily limits do
    held = lp.card_pockets(ledger, token(), lp.seoul_day(int(clock() * 1000)))
    assert held is not None and held.spent_today["youth"] == 3_000


def test_mark_synced_recounts_from_the_unsynced_entries(ledger: Ledger, clock: FakeClock,
                                                        reader: VirtualReader) -> None:
    hold(ledger, {"cash": (10_000, [], None), "points": (1_000, [], None)})
    till = terminal(ledger, clock)
    one = till.pay(present(reader, UID), 1_500)
    two = till.pay(present(reader, UID), 700)
    assert one.entry is not None and two.entry is not None
    assert offline(ledger, token()) == {"points": 1_000, "cash": 1_200}
    ledger.mark_synced(one.entry.seq, "cp")
    assert offline(ledger, token()) == {"points": 0, "cash": 700}
    # a refund of the synced payment is floored at 0: no room beyond the snapshot's
    till.refund(one.entry.seq)
    assert offline(ledger, token()) == {"points": 0, "cash": 200}
    ledger.mark_synced(ledger.head.seq, "cp")
    assert offline(ledger, token()) == {"points": 0, "cash": 0}


def test_a_new_snapshot_replaces_the_card_and_a_reset_forgets_all(ledger: Ledger) -> None:
    hold(ledger, {"cash": (10_000, [], None), "youth": (1, ["2030-01-01"], None)})
    hold(ledger, {"cash": (4_000, [], None)}, version=2)
    held = lp.card_pockets(ledger, token(), lp.seoul_day(0))
    assert held is not None and [(b.pocket, b.balance) for b in held.balances] == [
        ("cash", 4_000)]
    lp.store(ledger, lp.PocketState(3, "default", "M-LOCAL", 1, RULES), {token(): None})
    assert lp.card_pockets(ledger, token(), lp.seoul_day(0)) is None
    hold(ledger, {"cash": (1, [], None)}, version=4)
    lp.store(ledger, lp.PocketState(0, "other"), {}, reset=True)
    assert lp.card_pockets(ledger, token(), lp.seoul_day(0)) is None
    assert lp.state(ledger) == lp.PocketState(0, "other")


# -- the screen and the receipt ---------------------------------------------------------------


def test_the_screen_and_the_receipt_show_the_split(tmp_path, ledger: Ledger,
                                                   clock: FakeClock, reader: VirtualReader
                                                   ) -> None:
    hold(ledger, {"cash": (10_000, [], None), "youth": (5_000, [later(clock, 30)], None)})
    decision = terminal(ledger, clock).pay(present(reader, UID), 8_000)
    view = ResultView.from_decision(decision, "pay")
    assert view.split == (("youth", 3_000), ("cash", 5_000))
    assert split_text(view.split, "ko") == "youth 3,000원 · 현금 5,000원"
    assert split_text(view.split, "en") == "youth 3,000 won · Cash 5,000 won"
    lines = receipt_lines(view, "ko")
    assert lines[0] == "결제 8,000원" and lines[1] == "youth 3,000원 · 현금 5,000원"
    assert receipt_lines(view, "en")[1] == "youth 3,000 won · Cash 5,000 won"
    from kiosk_ui.screens import render

    pygame.init()
    try:
        surface = pygame.Surface((800, 480))
        painter = Painter(surface, load_fonts())
        model = KioskModel(role="till", language="ko", place="M-LOCAL",
                           merchant_name="Ilsan Farm Store", screen=Screen.RESULT,
                           result=view, clock=lambda: 0.0)
        render(painter, model, till_statics())
        shown = {rec.name: rec for rec in painter.records}
        assert shown["split"].text == "youth 3,000원 · 현금 5,000원"
        assert shown["split"].inside() and shown["split"].fits
        pygame.image.save(surface, str(tmp_path / "till-approved-split-ko.png"))
        assert (tmp_path / "till-approved-split-ko.png").stat().st_size > 0
    finally:
        pygame.quit()


# -- the benchmark command (figures are printed, never asserted as timings) -------------------


def test_bench_split_prints_both_figures_and_the_floor(tmp_path) -> None:
    from click.testing import CliRunner

    from localpay.cli.main import cli

    result = CliRunner().invoke(cli, ["bench", "split", "--payments", "100", "--runs", "1",
                                      "--dir", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output[result.output.index("{"):])
    assert doc["payments_per_run"] == 100 and doc["runs"] == 1
    for key in ("with_p50_ms", "with_p99_ms", "floor_p50_ms", "floor_p99_ms",
                "split_decide_p50_ms", "split_decide_p99_ms"):
        assert doc[key] > 0
    assert doc["added_p99_ms"] == round(doc["with_p99_ms"] - doc["floor_p99_ms"], 3)


def test_the_client_refuses_a_malformed_pockets_answer() -> None:
    from localpay.errors import SyncProtocolError
    from sync.client import _pocket_answer

    good = {"municipality": "default", "merchant": "M-1", "rules": RULES, "rules_version": 2,
            "cards": {"t1": {"cash": [500, [], None], "youth": [9, ["2030-01-02"], None]},
                      "t2": None}}
    snapshot, cards = _pocket_answer(good, 7)
    assert snapshot == lp.PocketState(7, "default", "M-1", 2, RULES)
    assert cards == {"t1": {"cash": (500, [], None), "youth": (9, ["2030-01-02"], None)},
                     "t2": None}
    for bad in ({**good, "cards": []}, {**good, "rules": None},
                {**good, "cards": {"t1": {"cash": [1.5, [], None]}}},
                {**good, "cards": {"t1": {"cash": [True, [], None]}}},
                {**good, "cards": {"t1": {"cash": [1]}}}, {**good, "rules_version": "2"}):
        with pytest.raises(SyncProtocolError):
            _pocket_answer(bad, 7)
