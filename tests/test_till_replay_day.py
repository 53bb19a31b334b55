"""Issue #17's last items: the Z report printed at closing (and reprinted from its entry),
the e-receipt's QR on the till's result screen, and a shop's whole day played through
``localpay replay`` into a fresh home, against a real central service for its pockets.

Every figure is worked out here from the test's own inputs (the scenario file and the
pockets central holds), never read from the code under test; the printed bytes are read
back with the ESC/POS decoder of tests/test_receipts.py.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pygame
import pytest
from click.testing import CliRunner
from pyzbar.pyzbar import ZBarSymbol
from pyzbar.pyzbar import decode as zbar_decode

from central import open_service
from central.merchants import Registry
from central.spending import load_rules
from drivers.printer import VirtualPrinter
from firmware_cfg.config import ClerkSection, Config, dumps
from firmware_cfg.keys import demo_issuer_key, public_hex
from firmware_cfg.pins import hash_pin
from kiosk_ui.draw import Painter
from kiosk_ui.engine import Engine
from kiosk_ui.fonts import load_fonts
from kiosk_ui.i18n import Language, tr
from kiosk_ui.model import (
    Closed,
    CloseDayCmd,
    Event,
    KioskModel,
    ReceiptFault,
    Result,
    ResultView,
    Screen,
)
from kiosk_ui.screens import Statics, render
from localpay.cli import cli
from offline_ledger import Ledger
from terminal import receipt as rc
from terminal import zreport
from tests.pg_fixtures import central
from tests.test_pockets_e2e import LOCAL, RULES, config_of, open_account
from tests.test_receipts import (  # noqa: F401 - home and till are fixtures
    PtyPrinter,
    decode_escpos,
    home,
    pay,
    till,
)
from tests.test_replay import make_home, replay, token

SCENARIO = Path(__file__).resolve().parent / "data" / "replay" / "shop_day.jsonl"
RULE = "-" * 42


# -- 1. the Z report printed at closing -------------------------------------------------------


def _close_through_the_engine(terminal, printer: VirtualPrinter,  # type: ignore[no-untyped-def]
                              journal: rc.ReceiptJournal) -> list[Event]:
    engine = Engine(terminal, None, receipts=rc.ReceiptDesk(terminal.config, printer, journal))
    engine.start()
    seen: list[Event] = []
    try:
        engine.send(CloseDayCmd((("over_limit", 1),)))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen += engine.events()
            closed = [e for e in seen if isinstance(e, Closed)]
            if closed and (printer.jobs or printer.paper_out):
                time.sleep(0.1)  # a fault comes right after Closed, on the same worker
                seen += engine.events()
                break
            time.sleep(0.01)
    finally:
        engine.stop()
    return seen


def test_closing_prints_the_z_report_in_korean_and_english(till, home: Path) -> None:  # noqa: F811
    terminal, _, reader = till
    pay(terminal, reader, 12_300)
    pay(terminal, reader, 8_000)
    assert terminal.refund(1, 5_000).approved
    printer = VirtualPrinter()
    journal = rc.ReceiptJournal(rc.journal_path(home / "ledger.sqlite"))
    seen = _close_through_the_engine(terminal, printer, journal)
    closed = [e for e in seen if isinstance(e, Closed)]
    assert len(closed) == 1 and closed[0].seq == 4
    assert not [e for e in seen if isinstance(e, ReceiptFault)]
    # worked out by hand: 12,300 + 8,000 paid, 5,000 back, no clerks, no pockets held
    paid, back = 12_300 + 8_000, 5_000
    want = [
        "마감 보고 2027-01-15", "단말기 T-TILL-07", "거래번호 1-3",
        f"결제 2건  {paid:,}원", f"환불 1건  -{back:,}원", "취소 0건  -0원",
        f"합계 {paid - back:,}원", "지갑별", "  없음", "직원별 (결제 / 환불)",
        f"  (로그인 없음)  2 · {paid:,}원 / 1 · -{back:,}원", "거절 사유별 (이번 실행)",
        "  over_limit  1",
        RULE,
        "Z report 2027-01-15", "Terminal T-TILL-07", "Entries #1-#3",
        f"Payments 2  {paid:,} won", f"Refunds 1  -{back:,} won", "Voids 0  -0 won",
        f"Net {paid - back:,} won", "By pocket", "  none", "By clerk (paid / given back)",
        f"  (no sign-in)  2 · {paid:,} won / 1 · -{back:,} won",
        "Declines by reason (this session)", "  over_limit  1",
    ]
    assert len(printer.jobs) == 1
    assert decode_escpos(printer.jobs[0]) == want
    # the reprint from the ledger entry, by the clerk's command, is the same job
    out = CliRunner().invoke(cli, ["--home", str(home), "receipt", "show", "4"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines() == want
    out = CliRunner().invoke(cli, ["--home", str(home), "receipt", "show", "4", "--payload"])
    assert out.exit_code != 0 and "no e-receipt" in out.output


def test_a_printer_fault_keeps_the_z_report_and_the_clerk_sees_it(
        till, home: Path) -> None:  # noqa: F811
    terminal, ledger, reader = till
    pay(terminal, reader, 4_000)
    printer = VirtualPrinter()
    printer.paper_out = True
    journal = rc.ReceiptJournal(rc.journal_path(home / "ledger.sqlite"))
    seen = _close_through_the_engine(terminal, printer, journal)
    z = ledger.entry(2)
    assert z is not None and z.kind == "z_report"  # recorded before the printer was asked
    assert [e for e in seen if isinstance(e, ReceiptFault)] == [ReceiptFault(2, "out of paper")]
    assert printer.output == b"" and journal.unprinted() == [2]
    # what the clerk reads under the report, in both languages and sizes
    model = KioskModel(role="till", language="en")
    model.press("menu:today")
    model.press("close:day")
    for event in seen:
        model.on_event(event)
    assert model.screen == Screen.Z_REPORT and model.receipt_fault == ReceiptFault(2,
                                                                                   "out of paper")
    fonts = load_fonts()
    for size in ((800, 480), (1280, 720)):
        for language in ("ko", "en"):
            model.language = language  # type: ignore[assignment]
            painter = Painter(pygame.Surface(size), fonts)
            render(painter, model, Statics())
            found = [r for r in painter.records if r.name == "receipt_fault"]
            assert len(found) == 1
            assert found[0].text == tr(language, "receipt_paper_out", seq=2)  # type: ignore[arg-type]
            assert found[0].fits and found[0].inside()
    # a new roll: the clerk's command prints it from the ledger, byte for byte the report
    pty = PtyPrinter()
    try:
        out = CliRunner().invoke(cli, ["--home", str(home), "receipt", "print", "2",
                                       "--printer", f"serial:{pty.path}"])
        assert out.exit_code == 0, out.output
        expected = VirtualPrinter()
        expected.print_lines(zreport.printed_lines(zreport.from_entry(z)))
        pty.wait_received(len(expected.output))
        got = decode_escpos(bytes(pty.received))
    finally:
        pty.close()
    assert "결제 1건  4,000원" in got and "Payments 1  4,000 won" in got
    assert journal.unprinted() == []


# -- 2. the e-receipt QR on the result screen -------------------------------------------------


def _scan(surface: pygame.Surface) -> list[str]:
    w, h = surface.get_size()
    grey = bytes(pygame.image.tobytes(surface, "RGB")[1::3])  # the green channel
    return [f.data.decode() for f in zbar_decode((grey, w, h), symbols=[ZBarSymbol.QRCODE])]


@pytest.mark.parametrize("language", ["ko", "en"])
def test_the_e_receipt_qr_on_screen_scans_and_verifies(till, language: Language) -> None:  # noqa: F811
    terminal, ledger, reader = till
    decision = pay(terminal, reader, 12_300)
    model = KioskModel(role="till", language=language)
    model.on_event(Result(ResultView.from_decision(decision, "payment")))
    fonts = load_fonts()
    surface = pygame.Surface((800, 480))
    painter = Painter(surface, fonts)
    render(painter, model, Statics())
    buttons = dict(painter.buttons)
    assert "ereceipt" in buttons and "ok" in buttons
    assert not buttons["ereceipt"].colliderect(buttons["ok"])
    label = next(r for r in painter.records if r.text == tr(language, "e_receipt"))
    assert label.fits and label.inside()
    assert painter.hit(buttons["ereceipt"].center) == "ereceipt"
    model.key("e")  # a keyboard's E, as the touch on the button
    assert model.screen == Screen.E_RECEIPT
    for size in ((800, 480), (1280, 720)):
        surface = pygame.Surface(size)
        painter = Painter(surface, fonts)
        render(painter, model, Statics())
        for r in painter.records:
            if r.text:
                assert r.fits and r.inside(), (size, r.name, r.text)
        found = _scan(surface)
        assert len(found) == 1, size
        payload = found[0]
        assert payload.startswith("LPR1:")
        signed = rc.verify(payload, ledger.public_key)  # the terminal's own key
        assert decision.entry is not None
        assert signed.fields == decision.entry.fields
        assert (signed.fields.kind, signed.fields.amount) == ("payment", 12_300)
    model.press("back")
    assert model.screen == Screen.KEYPAD and model.result is None


def test_no_e_receipt_button_for_a_decline(till) -> None:  # noqa: F811
    terminal = till[0]
    decision = terminal.refund(99, 1_000)  # no such payment: declined
    assert not decision.approved
    model = KioskModel(role="till")
    model.on_event(Result(ResultView.from_decision(decision, "refund")))
    painter = Painter(pygame.Surface((800, 480)), load_fonts())
    render(painter, model, Statics())
    assert "ereceipt" not in dict(painter.buttons)
    assert model.press("ereceipt") == [] and model.screen == Screen.RESULT


# -- 3. a shop's day through `localpay replay` ------------------------------------------------

#: the card linked to an account at central, with its pockets; another card with none
CARD_A, CARD_B = "08000001", "08a10002"
CASH, YOUTH = 30_000, 5_000


def day_config() -> Config:
    config = config_of(LOCAL, "TILL-DAY-01").replace(
        "keys", issuer_public_key=public_hex(demo_issuer_key().public_key()))
    return dataclasses.replace(config, clerk=(
        ClerkSection("minji", "김민지", "supervisor", hash_pin("2468")),
        ClerkSection("junho", "Junho", "clerk", hash_pin("1357"))))


def expected_day(lines: list[dict[str, object]], outcomes: list[str]) -> dict[str, object]:
    """The Z report's figures worked out from the scenario's lines, the outcome each line
    is meant to have (a hand-written list, below) and the pockets central holds: card A's
    youth allowance pays first in retail, then its cash; a refund gives back newest first."""
    kinds = {"payment": [0, 0], "refund": [0, 0], "void": [0, 0]}
    pockets: dict[str, int] = {}
    clerk_paid: dict[str, list[int]] = {}
    clerk_back: dict[str, list[int]] = {}
    declines: dict[str, int] = {}
    youth_left = YOUTH
    payments: dict[int, tuple[int, list[tuple[str, int]]]] = {}
    clerk, seq = "", 0
    for line, outcome in zip(lines, outcomes, strict=True):
        if "clerk" in line:
            clerk = str(line["clerk"])
            continue
        if outcome.startswith("declined:"):
            reason = outcome.removeprefix("declined:")
            declines[reason] = declines.get(reason, 0) + 1
            continue
        if outcome != "approved":
            continue
        seq += 1
        if "pay" in line:
            pay_ = line["pay"]
            assert isinstance(pay_, dict)
            amount = int(pay_["amount"])
            parts: list[tuple[str, int]] = []
            if pay_.get("uid") == CARD_A:
                youth = min(youth_left, amount)
                youth_left -= youth
                parts = [(p, w) for p, w in (("youth", youth), ("cash", amount - youth)) if w]
            payments[seq] = (amount, parts)
            kinds["payment"][0] += 1
            kinds["payment"][1] += amount
            for p, w in parts:
                pockets[p] = pockets.get(p, 0) + w
            slot = clerk_paid.setdefault(clerk, [0, 0])
        else:
            kind = "refund" if "refund" in line else "void"
            ref = line[kind]
            assert isinstance(ref, dict)
            paid_amount, parts = payments[int(ref["seq"])]
            amount = int(ref.get("amount", paid_amount))
            kinds[kind][0] += 1
            kinds[kind][1] += amount
            left = amount
            for p, w in reversed(parts):  # newest drawn first
                given = min(w, left)
                left -= given
                if given:
                    pockets[p] = pockets.get(p, 0) - given
            slot = clerk_back.setdefault(clerk, [0, 0])
        slot[0] += 1
        slot[1] += amount
    return {
        "count": [[k, c] for k, (c, _) in kinds.items()],
        "amount": [[k, a] for k, (_, a) in kinds.items()],
        "pockets": [[p, w] for p, w in sorted(pockets.items())],
        "clerk_paid_count": [[k, c] for k, (c, _) in sorted(clerk_paid.items())],
        "clerk_paid": [[k, a] for k, (_, a) in sorted(clerk_paid.items())],
        "clerk_back_count": [[k, c] for k, (c, _) in sorted(clerk_back.items())],
        "clerk_back": [[k, a] for k, (_, a) in sorted(clerk_back.items())],
        "declines": [[r, n] for r, n in sorted(declines.items())],
    }


#: what each line of tests/data/replay/shop_day.jsonl is meant to do: the wallet code shown
#: twice is a replay; 60,000 won is over the offline maximum of one sale (50,000); a code
#: that is no payment code is invalid
OUTCOMES = ["sync", "clerk", "approved", "approved", "approved", "declined:qr_replay",
            "declined:over_limit", "declined:qr_invalid", "clerk", "approved", "approved",
            "approved", "clerk", "approved", "close"]


def test_a_shops_day_replayed_into_a_fresh_home(tmp_path: Path) -> None:
    lines = [json.loads(t) for t in SCENARIO.read_text(encoding="utf-8").splitlines()]
    config = day_config()
    shop = make_home(tmp_path / "home", config)
    db, data = f"sqlite:///{tmp_path / 'central.sqlite'}", tmp_path / "data"
    svc = open_service(db, data)
    try:
        svc.store.init_schema()
        Registry(svc.store).add(LOCAL)
        load_rules(svc.store, RULES)
        open_account(svc, "A", token(shop, CARD_A), cash=CASH, youth=YOUTH)
        svc.add_terminal("TILL-DAY-01", bytes.fromhex(public_hex(shop.terminal_key(config))))
        Registry(svc.store).assign_terminal("TILL-DAY-01", LOCAL.merchant_id)
    finally:
        svc.store.close()
    with central(db, data) as srv:
        online = config.replace("central", url=srv.url).replace(
            "keys", central_public_key=srv.verifier)
        (shop.path / "terminal.toml").write_text(dumps(online), encoding="utf-8")
        result = replay(shop, SCENARIO)
    assert result.exit_code == 0, result.output
    out = [json.loads(t) for t in result.stdout.splitlines()]
    assert len(out) == len(lines) == len(OUTCOMES)
    said = []
    for line in out:
        if "sync" in line:
            said.append("sync")
        elif "clerk" in line:
            said.append("clerk")
        elif "z_report" in line:
            said.append("close")
        else:
            said.append(line["outcome"] if line["outcome"] != "declined"
                        else f"declined:{line['reason']}")
    assert said == OUTCOMES
    assert out[0]["sync"]["pockets"] == 1  # card A's pockets came down before the day
    assert [line["clerk"] for line in out if "clerk" in line] == ["junho", "minji", "junho"]

    want = expected_day(lines, OUTCOMES)
    # the same sums by hand, as a check on expected_day itself: paid 8,000 + 6,500 + 4,500
    # + 4,000 + 1,200; card A's youth 5,000 went first, then cash 3,000 + 4,000 + 1,200 less
    # the 2,000 refunded of payment 1 (its cash part, drawn last)
    assert want["amount"] == [["payment", 24_200], ["refund", 2_000], ["void", 6_500]]
    assert want["pockets"] == [["cash", 6_200], ["youth", 5_000]]
    z_line = out[-1]["z_report"]
    z_seq = z_line["seq"]
    with Ledger(shop.ledger_path) as ledger:
        assert ledger.verify().last_seq == z_seq == ledger.head.seq  # the chain is intact
        z = ledger.entry(z_seq)
        assert z is not None and z.kind == "z_report" and z.amount == 0
        recorded = json.loads(z.fields.detail)
        entries = list(ledger.entries(1, z_seq - 1))
    for key, value in want.items():
        assert recorded[key] == value, key
        assert z_line[key] == value, key
    assert recorded["day"] == "2026-03-04"
    money = [e for e in entries if e.kind in ("payment", "refund", "void")]
    assert (recorded["first_seq"], recorded["last_seq"]) == (money[0].seq, money[-1].seq)
    # a supervisor's refund and void: the ledger names who, as the kiosk would
    backs = [json.loads(e.fields.detail).get("clerk") for e in money if e.kind != "payment"]
    assert backs == ["minji", "minji"]

    # the Z report as the till prints it (virtual printer), read back from the bytes
    printer = VirtualPrinter()
    desk = rc.ReceiptDesk(shop.config(), printer)
    assert desk.issue_z(z, {c.id: c.name for c in config.clerk}) is None
    printed = decode_escpos(printer.jobs[0])
    amounts = dict(want["amount"])  # type: ignore[arg-type]
    counts = dict(want["count"])  # type: ignore[arg-type]
    net = amounts["payment"] - amounts["refund"] - amounts["void"]
    assert printed[0] == "마감 보고 2026-03-04" and RULE in printed
    assert f"결제 {counts['payment']}건  {amounts['payment']:,}원" in printed
    assert f"Payments {counts['payment']}  {amounts['payment']:,} won" in printed
    assert f"Refunds {counts['refund']}  -{amounts['refund']:,} won" in printed
    assert f"Voids {counts['void']}  -{amounts['void']:,} won" in printed
    assert f"합계 {net:,}원" in printed and f"Net {net:,} won" in printed
    for pocket, won in want["pockets"]:  # type: ignore[attr-defined]
        assert f"  {pocket}  {won:,} won" in printed
    paid = dict(want["clerk_paid"])  # type: ignore[arg-type]
    paid_n = dict(want["clerk_paid_count"])  # type: ignore[arg-type]
    back = dict(want["clerk_back"])  # type: ignore[arg-type]
    back_n = dict(want["clerk_back_count"])  # type: ignore[arg-type]
    assert (f"  김민지  {paid_n['minji']} · {paid['minji']:,} won / {back_n['minji']} · "
            f"-{back['minji']:,} won") in printed
    assert f"  Junho  {paid_n['junho']} · {paid['junho']:,}원 / 0 · -0원" in printed
    for reason, n in want["declines"]:  # type: ignore[attr-defined]
        assert f"  {reason}  {n}" in printed
    # and the clerk's reprint command prints the same bytes from the ledger
    reprint = CliRunner().invoke(cli, ["--home", str(shop.path), "receipt", "print",
                                       str(z_seq), "--printer", "virtual"])
    assert reprint.exit_code == 0, reprint.output
    assert f"({len(printer.jobs[0])} bytes captured)" in reprint.output


def test_clerk_and_close_lines_are_checked(tmp_path: Path) -> None:
    shop = make_home(tmp_path / "home", day_config())
    cases = {
        '{"at": "2026-03-04T09:00:00+09:00", "clerk": "nobody"}': "not a [[clerk]]",
        '{"at": "2026-03-04T09:00:00+09:00", "clerk": 7}': '"clerk" must be',
        '{"at": "2026-03-04T09:00:00+09:00", "close": 1}': '"close" must be true',
    }
    for text, says in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text + "\n", encoding="utf-8")
        result = replay(shop, bad)
        assert result.exit_code == 2 and says in result.stderr, result.output
    validator = make_home(tmp_path / "bus")
    bad = tmp_path / "close.jsonl"
    bad.write_text('{"at": "2026-03-04T09:00:00+09:00", "close": true}\n', encoding="utf-8")
    result = replay(validator, bad)
    assert result.exit_code == 2 and "a close is for a till" in result.stderr
    helped = CliRunner().invoke(cli, ["replay", "--help"])
    assert '"clerk": "ID"' in helped.output and '"close": true' in helped.output
    assert '{"z_report": {"seq": S' in helped.output
