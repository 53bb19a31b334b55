"""Issue #17, opening and closing the till's day: the keypad after a result and its offline
maximum (more to come: clerks, the Z report)."""

from __future__ import annotations

import json

import pygame

from kiosk_ui.draw import Painter
from kiosk_ui.fonts import load_fonts
from kiosk_ui.model import KioskModel, Pay, Result, ResultView, Screen
from kiosk_ui.screens import Statics, render
from terminal.risk import Reason
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _type(m: KioskModel, keys: str) -> None:
    for k in keys:
        m.key(k)


def _drawn(m: KioskModel, name: str) -> str:
    surface = pygame.Surface((800, 480))
    painter = Painter(surface, load_fonts())
    render(painter, m, Statics())
    return next(r.text for r in painter.records if r.name == name)


def test_the_issues_sequence_declined_5200_then_3500() -> None:
    m = KioskModel(role="till", clock=Clock(), language="en")
    _type(m, "5200")
    assert m.key("c") == [Pay(5200, "card")]
    m.on_event(Result(ResultView("declined", "payment", 5200, reason=Reason.INSUFFICIENT_BALANCE)))
    assert m.screen == Screen.RESULT
    m.press("ok")
    assert m.screen == Screen.KEYPAD
    _type(m, "3500")
    assert m.amount == 3500  # was 52,003,500
    assert _drawn(m, "amount") == "3,500 won"


def test_keypad_empty_after_every_money_result() -> None:
    for outcome in ("approved", "declined", "already_paid"):
        m = KioskModel(role="till", clock=Clock())
        _type(m, "1500")
        m.key("q")
        m.on_event(Result(ResultView(outcome, "payment", 1500)))  # type: ignore[arg-type]
        assert m.digits == "", outcome
        m.tick()
        m.press("ok")
        assert m.screen == Screen.KEYPAD and m.amount == 0, outcome


def test_keypad_refuses_a_digit_over_the_offline_maximum() -> None:
    clock = Clock()
    m = KioskModel(role="till", clock=clock, max_amount=50_000, language="en")
    _type(m, "5000")
    m.key("0")
    assert m.amount == 50_000  # exactly the maximum is allowed
    m.key("0")
    assert m.amount == 50_000 and m.notice == "over_max"  # refused as typed, and told
    assert "50,000 won" in _drawn(m, "notice")
    m.key("backspace")
    m.key("backspace")
    _type(m, "9")
    assert m.amount == 5009
    m.press("digit:00")
    assert m.amount == 5009  # "00" would make 500,900: refused
    m.key("backspace")
    m.press("digit:00")
    assert m.amount == 50_000
    clock.now += 3
    m.tick()
    assert m.notice == ""


# -- clerks in the config ----------------------------------------------------------------

CLERKS_TOML = """
[terminal]
role = "till"
place = "SHOP-1"

[[clerk]]
id = "minji"
name = "김민지"
role = "supervisor"
pin_hash = "{minji}"

[[clerk]]
id = "junho"
name = "Junho"
pin_hash = "{junho}"
"""


def _clerks_config(**pins: str):
    from firmware_cfg.config import loads
    from firmware_cfg.pins import hash_pin

    hashes = {"minji": hash_pin("2468"), "junho": hash_pin("1357")}
    hashes.update({k: hash_pin(v) for k, v in pins.items()})
    return loads(CLERKS_TOML.format(**hashes))


def test_clerks_parse_round_trip_and_check_pins() -> None:
    from firmware_cfg.config import dumps, loads
    from firmware_cfg.pins import pin_matches

    config = _clerks_config()
    assert [(c.id, c.role) for c in config.clerk] == [("minji", "supervisor"),
                                                      ("junho", "clerk")]
    assert pin_matches(config.clerk[0].pin_hash, "2468")
    assert not pin_matches(config.clerk[0].pin_hash, "1357")
    assert loads(dumps(config)) == config
    # every clerk has a salt of its own: the same PIN hashes differently
    same = _clerks_config(minji="1111", junho="1111")
    assert same.clerk[0].pin_hash != same.clerk[1].pin_hash
    assert "[[clerk]]" not in dumps(loads('[terminal]\nrole = "till"\n'))


def test_clerk_errors_are_one_line_and_name_the_field() -> None:
    import pytest

    from firmware_cfg.config import loads
    from firmware_cfg.pins import hash_pin
    from localpay.errors import ConfigError

    good = hash_pin("2468")
    head = '[terminal]\nrole = "till"\n'

    def clerk(**fields: str) -> str:
        values = {"id": "minji", "name": "Minji", "role": "supervisor", "pin_hash": good}
        values.update(fields)
        return "[[clerk]]\n" + "".join(f'{k} = "{v}"\n' for k, v in values.items())

    cases = {
        clerk(pin_hash="1234"): "clerk[0].pin_hash: expected scrypt$",
        clerk(pin_hash=good.replace("scrypt", "md5")): "clerk[0].pin_hash: expected scrypt$",
        clerk(role="boss"): "clerk[0].role: expected one of ['clerk', 'supervisor']",
        clerk(id="a b"): "clerk[0].id: expected 1 to 32",
        clerk(name=""): "clerk[0].name: expected a non-empty text",
        clerk() + clerk(): "clerk[1].id: 'minji' appears twice",
        clerk(role="clerk"): "clerk: refunds need a supervisor",
        clerk(pin="1"): "[clerk[0]]: unknown key 'pin'",
    }
    for text, message in cases.items():
        with pytest.raises(ConfigError) as err:
            loads(head + text)
        assert message in str(err.value), (message, str(err.value))
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="clerk: a validator has no clerks"):
        loads('[terminal]\nrole = "validator"\n' + clerk())
    with pytest.raises(ConfigError, match="clerk: expected an array of tables"):
        loads('clerk = "minji"\n' + head)


def test_hash_pin_cli_prompts_and_never_echoes() -> None:
    from click.testing import CliRunner

    from firmware_cfg.config import loads
    from firmware_cfg.pins import pin_matches
    from localpay.cli import cli

    result = CliRunner().invoke(cli, ["clerk", "hash-pin"], input="482913\n482913\n")
    assert result.exit_code == 0, result.output
    assert "482913" not in result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith('pin_hash = "scrypt$')
    config = loads('[terminal]\nrole = "till"\n[[clerk]]\nid = "a"\nname = "A"\n'
                   'role = "supervisor"\n' + line + "\n")
    assert pin_matches(config.clerk[0].pin_hash, "482913")
    bad = CliRunner().invoke(cli, ["clerk", "hash-pin"], input="12\n12\n")
    assert bad.exit_code != 0 and "4 to 8 digits" in bad.output and "Traceback" not in bad.output


# -- signing in at the till -----------------------------------------------------------------


def _desk_till(clock: Clock, language: str = "en") -> KioskModel:
    from kiosk_ui.clerks import ClerkDesk

    desk = ClerkDesk(_clerks_config().clerk, clock=clock)
    return KioskModel(role="till", clock=clock, desk=desk, language=language)  # type: ignore[arg-type]


def _pin(m: KioskModel, pin: str) -> list:
    for k in pin:
        m.key(k)
    return m.key("return")


def test_no_clerks_configured_opens_on_the_keypad_as_before() -> None:
    m = KioskModel(role="till", clock=Clock())
    assert m.screen == Screen.KEYPAD and m.clerk is None
    _type(m, "12")
    assert m.key("c") == [Pay(12, "card")]  # no clerk: the entry records none


def test_sign_in_wrong_pins_lock_out_then_the_right_one_opens_the_keypad() -> None:
    from kiosk_ui.clerks import LOCK_AFTER, LOCK_SECONDS

    clock = Clock()
    m = _desk_till(clock)
    assert m.screen == Screen.SIGN_IN
    _type(m, "5")
    assert m.amount == 0 and m.screen == Screen.SIGN_IN  # no keypad before sign-in
    m.press("clerk:junho")
    assert m.screen == Screen.PIN and m.pin_for == "junho"
    for _ in range(LOCK_AFTER - 1):
        assert _pin(m, "2468") == []  # the supervisor's PIN is not Junho's
        assert m.screen == Screen.PIN and m.notice == "pin_wrong" and m.pin == ""
    _pin(m, "0000")
    assert m.notice == "pin_locked" and m.desk is not None and m.desk.locked_for() == LOCK_SECONDS
    _pin(m, "1357")
    assert m.screen == Screen.PIN and m.clerk is None  # locked: even the right PIN waits
    clock.now += LOCK_SECONDS
    _pin(m, "1357")
    assert m.screen == Screen.KEYPAD and m.clerk is not None and m.clerk.id == "junho"
    _type(m, "3000")
    assert m.key("q") == [Pay(3000, "qr", clerk="junho")]


def test_refund_asks_a_supervisor_pin_and_records_the_clerk() -> None:
    from kiosk_ui.model import DayView, PaymentRow, RefreshCmd, RefundCmd

    clock = Clock()
    m = _desk_till(clock)
    m.press("clerk:junho")
    _pin(m, "1357")
    assert m.press("menu:refund") == []
    assert m.screen == Screen.PIN and m.pin_for == "supervisor"
    _pin(m, "1357")  # a clerk's own PIN does not approve a refund
    assert m.screen == Screen.PIN and m.notice == "pin_wrong"
    assert _pin(m, "2468") == [RefreshCmd()]
    assert m.screen == Screen.REFUND_LIST and m.clerk is not None and m.clerk.id == "junho"
    m.on_event(DayView(rows=(PaymentRow(7, "payment", 9000, 0, "10:00"),), count=1, paid=9000))
    m.press("row:7")
    assert m.press("refund:go") == [RefundCmd(7, 9000, clerk="junho")]
    # escape on the supervisor's PIN pad goes back to the keypad, signed in still
    m.on_event(Result(ResultView("approved", "refund", 9000)))
    m.press("ok")
    m.press("menu:refund")
    m.key("escape")
    assert m.screen == Screen.KEYPAD and m.clerk is not None


def test_a_supervisor_signed_in_refunds_without_a_second_pin_and_signs_out() -> None:
    clock = Clock()
    m = _desk_till(clock)
    m.press("clerk:minji")
    _pin(m, "2468")
    assert m.screen == Screen.KEYPAD
    m.press("menu:refund")
    assert m.screen == Screen.REFUND_LIST
    m.press("back")
    m.press("menu:today")
    m.press("signout")
    assert m.screen == Screen.SIGN_IN and m.clerk is None


def _check_layout(painter: Painter, size: tuple[int, int], where: str) -> None:
    screen = pygame.Rect((0, 0), size)
    for rec in painter.records:
        if rec.text:
            assert rec.rects and rec.inside() and rec.fits, (where, rec.name, rec.text)
    rects = painter.buttons
    for i, (a, ra) in enumerate(rects):
        assert screen.contains(ra), (where, a)
        for b, rb in rects[i + 1:]:
            assert not ra.colliderect(rb), (where, a, b)


def test_sign_in_and_pin_screens_render_in_both_languages_and_sizes() -> None:
    fonts = load_fonts()
    for size in ((800, 480), (1280, 720)):
        for language in ("ko", "en"):
            clock = Clock()
            m = _desk_till(clock, language)
            surface = pygame.Surface(size)
            painter = Painter(surface, fonts)
            states = []
            render(painter, m, Statics())
            states.append(("sign_in", painter))
            _check_layout(painter, size, f"sign_in {language} {size}")
            names = {r.text for r in painter.records}
            assert "김민지" in " ".join(names) and "Junho" in " ".join(names)
            # touching a name picks it: what is drawn is what can be touched
            rect = dict(painter.buttons)["clerk:junho"]
            assert painter.hit(rect.center) == "clerk:junho"
            m.press("clerk:junho")
            for step in ("1", "3", "5"):
                m.key(step)
                render(painter, m, Statics())
                _check_layout(painter, size, f"pin {language} {size}")
                drawn = {r.name: r.text for r in painter.records}
                assert drawn["pin"] == "●" * len(m.pin)  # never the digits
            _pin(m, "0")  # 1350: wrong
            for _ in range(2):
                _pin(m, "9999")
            render(painter, m, Statics())
            _check_layout(painter, size, f"locked {language} {size}")
            drawn = {r.name: r.text for r in painter.records}
            assert drawn["notice"].count("30") == 1
            clock.now += 30
            _pin(m, "1357")
            m.press("menu:today")
            render(painter, m, Statics())
            _check_layout(painter, size, f"today {language} {size}")
            assert "signout" in dict(painter.buttons)


def test_a_clerks_day_through_the_real_app_records_who(tmp_path) -> None:
    """The real app, engine, terminal and ledger: sign in by touch, pay by card, refund with
    a supervisor's PIN; both entries name the clerk, and the keypad refuses past the max."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from drivers.virtual import VirtualReader
    from firmware_cfg.keys import DEMO_TOKEN_KEY
    from kiosk_ui.app import KioskApp
    from offline_ledger import Ledger
    from terminal.clock import ClockTrust
    from terminal.core import Terminal
    from tests.test_kiosk_flow import JUNHO, pump, touch

    cfg = _clerks_config().replace("terminal", id="T-till", merchant_name="Test Store")
    ledger = Ledger(tmp_path / "ledger.sqlite", key=Ed25519PrivateKey.generate(),
                    terminal_id=cfg.terminal.id)
    terminal = Terminal(cfg, ledger, DEMO_TOKEN_KEY,
                        clock_trust=ClockTrust(ledger, ntp=lambda: True))
    reader = VirtualReader("test reader")
    app = KioskApp(terminal, reader.poll)
    try:
        app.start()
        app.step()
        assert app.model.screen == Screen.SIGN_IN
        assert app.model.max_amount == cfg.risk.max_amount
        touch(app, "clerk:junho")
        for d in "1357":
            touch(app, f"digit:{d}")
        touch(app, "pin:go")
        assert app.model.screen == Screen.KEYPAD and app.model.clerk_id == "junho"
        for d in "600000":  # 50,000 is the offline maximum: the last 0 is refused
            touch(app, f"digit:{d}")
        assert app.model.amount == 60_000 // 10 and app.model.notice == "over_max"
        touch(app, "del")
        touch(app, "pay:card")
        reader.present_uid(JUNHO)
        pump(app, lambda: app.model.screen == Screen.RESULT, "the payment's decision")
        paid = ledger.entry(ledger.head.seq)
        assert paid is not None and paid.kind == "payment" and paid.amount == 600
        assert json.loads(paid.fields.detail)["clerk"] == "junho"
        touch(app, "ok")
        assert app.model.amount == 0

        touch(app, "menu:refund")
        assert app.model.screen == Screen.PIN
        for d in "2468":
            touch(app, f"digit:{d}")
        touch(app, "pin:go")
        seq = paid.seq
        pump(app, lambda: app.button_rect(f"row:{seq}") is not None, "refund row")
        touch(app, f"row:{seq}")
        touch(app, "refund:go")
        pump(app, lambda: app.model.screen == Screen.RESULT, "the refund's decision")
        refund = ledger.entry(ledger.head.seq)
        assert refund is not None and refund.kind == "refund" and refund.amount == 600
        # who did it (a supervisor approved it with a PIN)
        assert json.loads(refund.fields.detail)["clerk"] == "junho"
        touch(app, "ok")

        # a decline the kiosk counts (no ledger entry), then the closing of the day
        for d in "14000":  # over the 10,000 won of a UID-only card
            touch(app, f"digit:{d}")
        touch(app, "pay:card")
        reader.present_uid(JUNHO)
        pump(app, lambda: app.model.screen == Screen.RESULT, "the decline")
        touch(app, "ok")
        touch(app, "menu:today")
        touch(app, "close:day")
        pump(app, lambda: app.model.closing is not None, "the Z report")
        z = ledger.entry(ledger.head.seq)
        assert z is not None and z.kind == "z_report" and z.amount == 0
        told = json.loads(z.fields.detail)
        assert told["count"] == [["payment", 1], ["refund", 1], ["void", 0]]
        assert told["amount"] == [["payment", 600], ["refund", 600], ["void", 0]]
        assert told["clerk_paid"] == [["junho", 600]] and told["clerk_back"] == [["junho", 600]]
        assert told["declines"] == [["over_limit", 1]]
        assert (told["first_seq"], told["last_seq"]) == (paid.seq, refund.seq)
        lines = [r.text for r in app.painter.records if r.name == "z_line"]
        assert "결제 1건  600원" in lines and "합계 0원" in lines
        assert app.model.declines == {}
        touch(app, "back")
        assert app.model.screen == Screen.KEYPAD
    finally:
        app.close()
        reader.close()
        ledger.close()


# -- closing the day: the Z report, through a real central -----------------------------------


def test_z_report_from_the_ledger_recorded_synced_and_matched_by_central(
        tmp_path, store_url: str) -> None:  # noqa: F811
    import time as _time
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from central import open_service
    from central.reconcile import report
    from drivers.virtual import VirtualReader
    from firmware_cfg.keys import public_hex
    from offline_ledger import Ledger
    from sync.client import SyncClient
    from terminal import zreport
    from tests.conftest import FakeClock, present
    from tests.pg_fixtures import central
    from tests.test_pockets_terminal import OTHER, UID, hold, later, terminal

    seoul = ZoneInfo("Asia/Seoul")
    now = _time.time()
    midnight = datetime.fromtimestamp(now, seoul).replace(hour=0, minute=0, second=0,
                                                          microsecond=0).timestamp()
    clock = FakeClock(max(midnight + 60, now - 3600))
    day = datetime.fromtimestamp(clock(), seoul).date().isoformat()
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path, key=key, terminal_id="T-TEST-01")
    reader = VirtualReader()
    try:
        hold(ledger, {"cash": (100_000, [], None), "points": (2_000, [], None),
                      "youth": (9_000, [later(clock, 30)], None)})
        till = terminal(ledger, clock)
        # (clerk, card, amount) of each payment; then a partial refund and a void
        sales = [("junho", UID, 6_000), ("minji", UID, 2_500), ("junho", UID, 4_000),
                 ("", OTHER, 1_200)]
        paid = []
        for clerk, card, amount in sales:
            till.clerk = clerk
            d = till.pay(present(reader, card), amount)
            clock.advance(10)
            assert d.approved, d.reason
            assert d.entry is not None
            paid.append((clerk, d.entry.seq, amount, d.split))
        till.clerk = "minji"
        refund = till.refund(paid[0][1], 1_000)
        clock.advance(10)
        void = till.void(paid[2][1])
        clock.advance(10)
        assert refund.approved and void.approved
        assert refund.entry is not None and void.entry is not None
        backs = [("minji", 1_000, refund.split), ("minji", 4_000, void.split)]

        # what the report must say, worked out here from what was done
        want_pockets: dict[str, int] = {}
        for _c, _s, _a, split in paid:
            for p, w in split:
                want_pockets[p] = want_pockets.get(p, 0) + w
        for _c, _a, split in backs:
            for p, w in split:
                want_pockets[p] = want_pockets.get(p, 0) - w
        assert sum(want_pockets.values()) == 6_000 + 2_500 + 4_000 - 1_000 - 4_000  # 7,500

        report_z = zreport.compute(zreport.day_entries(ledger, day, seoul), day, "T-TEST-01",
                                   {"insufficient_balance": 2, "over_limit": 1}, 5)
        assert report_z.kinds == {"payment": (4, 13_700), "refund": (1, 1_000),
                                  "void": (1, 4_000)}
        assert report_z.net == 13_700 - 5_000
        assert report_z.pockets == {k: v for k, v in sorted(want_pockets.items())}
        assert report_z.clerk_paid == {"": (1, 1_200), "junho": (2, 10_000),
                                       "minji": (1, 2_500)}
        assert report_z.clerk_back == {"minji": (2, 5_000)}
        assert (report_z.first_seq, report_z.last_seq) == (paid[0][1], void.entry.seq)
        lines = zreport.text_lines(report_z, "en", {"junho": "Junho"})
        assert "Payments 4  13,700 won" in lines and "Net 8,700 won" in lines
        assert "  Junho  2 · 10,000 won / 0 · -0 won" in lines
        assert "  insufficient_balance  2" in lines
        assert "결제 4건  13,700원" in zreport.text_lines(report_z, "ko")
        entry = zreport.record(ledger, report_z, place="M-LOCAL", wall_ms=int(clock() * 1000))
        assert entry.kind == "z_report" and entry.amount == 0 and entry.fields.card_token == ""
        # a second, forged closing: signed by the till, but 1,000 won more paid than the log
        forged = zreport.ZReport(**{**report_z.__dict__, "kinds": {
            **report_z.kinds, "payment": (4, 14_700)}})
        clock.advance(10)
        bad = zreport.record(ledger, forged, place="M-LOCAL", wall_ms=int(clock() * 1000))
        assert ledger.verify().last_seq == bad.seq  # raises unless intact
    finally:
        reader.close()
        ledger.close()

    svc = open_service(store_url, tmp_path / "data")
    svc.add_terminal("T-TEST-01", bytes.fromhex(public_hex(key)))
    svc.store.close()
    with central(store_url, tmp_path / "data") as srv:
        client = SyncClient(path, key, srv.url, srv.verifier, batch_size=100)
        summary = client.sync_once()
        client.close()
    assert summary.synced_upto == bad.seq
    svc = open_service(store_url, tmp_path / "data")
    try:
        rep = report(svc, day)
    finally:
        svc.store.close()
    assert rep.z_reports == [
        {"terminal_id": "T-TEST-01", "seq": entry.seq, "last_seq": void.entry.seq,
         "matches": True},
        {"terminal_id": "T-TEST-01", "seq": bad.seq, "last_seq": void.entry.seq,
         "matches": False}]
    assert rep.z_report_differences == [
        {"terminal_id": "T-TEST-01", "seq": bad.seq, "figure": "amount.payment",
         "terminal": 14_700, "central": 13_700}]
    assert not rep.clean
    # the closings are no money: the kind lines still match the terminal's day totals
    assert all(line.matches for line in rep.lines)
    assert rep.as_json()["z_report_differences"] == rep.z_report_differences
    from click.testing import CliRunner

    from localpay.cli import cli

    out = CliRunner().invoke(cli, ["central", "report", "--db", store_url, "--data",
                                   str(tmp_path / "data"), "--date", day])
    assert out.exit_code == 1, out.output
    assert (f"Z REPORT DIFFERS T-TEST-01 entry {bad.seq} amount.payment: terminal 14,700, "
            "central 13,700") in out.output.splitlines()
    assert sum("Z REPORT DIFFERS" in line for line in out.output.splitlines()) == 1


def test_closing_from_today_counts_the_sessions_declines_and_shows_the_report() -> None:
    from kiosk_ui.model import Closed, CloseDayCmd
    from terminal.zreport import ZReport, text_lines

    clock = Clock()
    m = KioskModel(role="till", clock=clock, language="en")
    for reason in (Reason.INSUFFICIENT_BALANCE, Reason.OVER_LIMIT, Reason.INSUFFICIENT_BALANCE):
        _type(m, "100")
        m.key("c")
        m.on_event(Result(ResultView("declined", "payment", 100, reason=reason)))
        m.press("ok")
    m.on_event(Result(ResultView("approved", "payment", 100)))  # not a decline
    m.press("ok")
    m.press("menu:today")
    assert m.press("close:day") == [CloseDayCmd((("insufficient_balance", 2),
                                                 ("over_limit", 1)))]
    assert m.screen == Screen.Z_REPORT and m.closing is None
    report = ZReport("2026-11-26", "T-1", 1, 9, {"payment": (3, 9000), "refund": (1, 500),
                                                 "void": (0, 0)}, {"cash": 8500},
                     {"": (3, 9000)}, {"": (1, 500)}, {"insufficient_balance": 2})
    m.on_event(Closed(report, 10))
    assert m.closing == report and m.declines == {}
    fonts = load_fonts()
    for size in ((800, 480), (1280, 720)):
        for language in ("en", "ko"):
            m.language = language  # type: ignore[assignment]
            m.page = 0
            lines = text_lines(report, language)  # type: ignore[arg-type]
            drawn_all: list[str] = []
            for _ in range(5):
                painter = Painter(pygame.Surface(size), fonts)
                render(painter, m, Statics())
                _check_layout(painter, size, f"z_report {language} {size}")
                drawn_all += [r.text for r in painter.records if r.name == "z_line"]
                m.press("page:next")
            assert drawn_all[:len(lines)] == lines  # every line, in order, over the pages
    m.press("back")
    assert m.screen == Screen.KEYPAD
