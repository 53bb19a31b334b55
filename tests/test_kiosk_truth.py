"""Screens that tell the truth (issue #16): a terminal that cannot approve says so and never
asks for a card; a missing reader or scanner is named and retried while what works takes
payments; result text reaches WCAG AA, with a symbol beside it; local time on the till.

Real stacks throughout: a read-only home is a read-only bind mount in a mount namespace of
its own (``unshare --mount``, this machine runs the tests as root), a scanner plugged in
later is a socat pty appearing at its path, the kiosk is the real app under SDL's dummy
video driver, and contrast is measured from the rendered pixels with the WCAG formula.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pygame
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers import Reader, open_reader
from drivers.virtual import VirtualReader
from firmware_cfg.config import DEFAULT, Config, dumps
from firmware_cfg.keys import DEMO_TOKEN_KEY
from kiosk_ui.app import KioskApp
from kiosk_ui.draw import Painter
from kiosk_ui.fonts import Fonts, load_fonts
from kiosk_ui.i18n import LANGUAGES, tr
from kiosk_ui.model import Screen
from kiosk_ui.screens import Statics, render, status_text
from kiosk_ui.service import Cause, Device
from kiosk_ui.shots import ROLES, catalog, till_statics
from localpay.cli import cli
from offline_ledger import Ledger
from terminal.clock import ClockTrust
from terminal.core import Terminal
from terminal.home import Home, open_terminal
from terminal.risk import Reason
from tests.hw_fixtures import socat_ptys
from tests.test_kiosk_flow import MINJI, Clock, pump, touch

LOCALPAY = Path(sys.executable).with_name("localpay")
OUT_OF_SERVICE_KO = "이 단말기는 사용할 수 없습니다"
OUT_OF_SERVICE_EN = "Out of service, please use another door or reader"


def make_home(path: Path, config: Config) -> Home:
    path.mkdir(parents=True, exist_ok=True)
    (path / "terminal.toml").write_text(dumps(config), encoding="utf-8")
    home = Home(path)
    terminal = open_terminal(home, home.config(), create_keys=True)
    assert terminal.ledger is not None
    terminal.ledger.close()
    return home


def _env() -> dict[str, str]:
    return {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy",
            "PYGAME_HIDE_SUPPORT_PROMPT": "1"}


def _drawn(app: KioskApp) -> dict[str, str]:
    return {r.name: r.text for r in app.painter.records}


def _asks_for_a_card(drawn: dict[str, str]) -> bool:
    return any(name in drawn for name in ("tap_card", "tap_card_other", "wait_card_hint",
                                          "qr_or_scan", "show_code"))


# -- out of service --------------------------------------------------------------------


def test_read_only_home_is_out_of_service_and_run_exits_1(tmp_path: Path) -> None:
    assert shutil.which("unshare"), "util-linux unshare is needed"
    assert os.geteuid() == 0, "a bind mount in a mount namespace needs root here"
    cfg = DEFAULT.replace("terminal", id="T-RO", role="validator", language="en")
    home = make_home(tmp_path / "home", cfg)
    shot = tmp_path / "last.png"
    h = str(home.path)
    # The home is made read-only only inside the child's own mount namespace: the test
    # machine's mounts are untouched whatever happens to the child.
    script = (f"mount --bind {h} {h} && mount -o remount,ro,bind {h} && "
              f"exec {LOCALPAY} --home {h} run --config {h}/terminal.toml --windowed "
              f"--no-sound --seconds 2 --screenshot {shot}")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           script], env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "out of service" in done.stderr and "home folder is read-only" in done.stderr
    assert h in done.stderr  # the technician is told which folder
    # the last frame is the out-of-service screen: the rider's words, not "Tap card"
    image = pygame.image.load(str(shot))
    assert image.get_size() == (800, 480)
    expected = _render_state("validator", "out-of-service-read-only", "en")
    assert _same_band(image, expected, (0.0, 0.1, 1.0, 0.55))
    # and outside the namespace the home is writable as before
    (home.path / "probe").write_text("x")


def _render_state(role: str, name: str, language: str) -> pygame.Surface:
    fonts = load_fonts()
    surface = pygame.Surface((800, 480))
    painter = Painter(surface, fonts)
    model = dict(catalog(role, language))[name]  # type: ignore[arg-type]
    render(painter, model, till_statics())
    return surface


def _same_band(a: pygame.Surface, b: pygame.Surface, box: tuple[float, ...]) -> bool:
    """The rider's part of two screens is pixel for pixel the same."""
    w, h = a.get_size()
    x0, y0, x1, y1 = (round(box[0] * w), round(box[1] * h), round(box[2] * w),
                      round(box[3] * h))
    return all(a.get_at((x, y)) == b.get_at((x, y))
               for y in range(y0, y1, 2) for x in range(x0, x1, 2))


@pytest.fixture
def terminal_and_ledger(tmp_path: Path) -> Iterator[Callable[[Config], tuple[Terminal, Ledger]]]:
    opened: list[Ledger] = []

    def make(cfg: Config) -> tuple[Terminal, Ledger]:
        ledger = Ledger(tmp_path / f"l{len(opened)}.sqlite", key=Ed25519PrivateKey.generate(),
                        terminal_id=cfg.terminal.id)
        opened.append(ledger)
        # the kernel's NTP state on a CI machine is whatever it is; the clock is not what
        # these tests are about, so its answer (only that) is given: in sync
        trust = ClockTrust(ledger, ntp=lambda: True)
        return Terminal(cfg, ledger, DEMO_TOKEN_KEY, clock_trust=trust), ledger

    yield make
    for led in opened:
        led.close()


def test_broken_ledger_is_out_of_service_and_a_card_still_gets_its_answer() -> None:
    from localpay.errors import LedgerCorruptError

    cfg = DEFAULT.replace("terminal", role="validator", id="T-broken", language="en")
    terminal = Terminal(cfg, None, DEMO_TOKEN_KEY,
                        ledger_fault=LedgerCorruptError("entry 7: bad signature", 7))
    reader = VirtualReader("r")
    app = KioskApp(terminal, reader.poll, sound=False)
    app.model.clock = Clock()
    try:
        app.start()
        pump(app, lambda: app.model.screen == Screen.OUT_OF_SERVICE, "out of service")
        drawn = _drawn(app)
        assert not _asks_for_a_card(drawn)
        assert drawn["oos_ko"] == OUT_OF_SERVICE_KO and drawn["oos_en"] == OUT_OF_SERVICE_EN
        assert drawn["oos_cause"] == tr("en", "cause_ledger_broken")
        assert "entry 7: bad signature" in drawn["oos_detail"]
        assert [b.cause for b in app.model.sync.blocked] == [Cause.LEDGER_BROKEN]
        # a card tapped anyway is answered by the terminal, then the screen goes back
        reader.present_uid(MINJI)
        pump(app, lambda: app.model.screen == Screen.RESULT, "decision")
        assert app.model.result is not None
        assert app.model.result.reason == Reason.LEDGER_BROKEN
        app.model.clock.now += 60
        pump(app, lambda: app.model.screen == Screen.OUT_OF_SERVICE, "back out of service")
    finally:
        app.close()
        reader.close()


def test_exposure_reached_is_out_of_service_until_the_terminal_syncs(terminal_and_ledger) -> None:
    # room for one adult fare and nothing more: after it, not even a child's 550 fits
    cfg = DEFAULT.replace("terminal", role="validator", id="T-exposure", language="en")
    cfg = cfg.replace("risk", terminal_exposure=1500)
    terminal, ledger = terminal_and_ledger(cfg)
    reader = VirtualReader("r")
    app = KioskApp(terminal, reader.poll, sound=False)
    app.model.clock = Clock()
    try:
        app.start()
        pump(app, lambda: app.model.sync.head_seq == 0 and app.model.sync.ledger_ok, "status")
        assert app.model.screen == Screen.IDLE and "tap_card" in _drawn(app)
        reader.present_uid(MINJI)
        pump(app, lambda: app.model.screen == Screen.RESULT, "the fare")
        assert app.model.result is not None and app.model.result.outcome == "approved"
        app.model.clock.now += 60
        pump(app, lambda: app.model.screen == Screen.OUT_OF_SERVICE, "exposure reached")
        assert [b.cause for b in app.model.sync.blocked] == [Cause.EXPOSURE_REACHED]
        assert "1,500" in _drawn(app)["oos_detail"]
        assert not _asks_for_a_card(_drawn(app))
        ledger.mark_synced(ledger.head.seq, "checkpoint")  # what the sync client does
        pump(app, lambda: app.model.screen == Screen.IDLE, "in service again", 15)
        assert "tap_card" in _drawn(app)
    finally:
        app.close()
        reader.close()


def test_a_till_out_of_its_offline_limit_still_refunds(terminal_and_ledger) -> None:
    # a refund needs no card and gives exposure back: the clerk can still make one
    cfg = DEFAULT.replace("terminal", role="till", id="T-exposure-till", place="M0001",
                          language="en").replace("risk", terminal_exposure=10_000)
    terminal, ledger = terminal_and_ledger(cfg)
    reader = VirtualReader("r")
    app = KioskApp(terminal, reader.poll, sound=False)
    app.model.clock = Clock()
    try:
        app.start()
        for digit in "10000":
            touch(app, f"digit:{digit}")
        touch(app, "pay:card")
        reader.present_uid(MINJI)
        pump(app, lambda: app.model.screen == Screen.RESULT, "the payment")
        assert app.model.result is not None and app.model.result.outcome == "approved"
        touch(app, "ok")
        pump(app, lambda: app.model.screen == Screen.OUT_OF_SERVICE, "exposure reached")
        assert app.button_rect("pay:card") is None and not _asks_for_a_card(_drawn(app))
        touch(app, "menu:refund")
        seq = ledger.head.seq
        pump(app, lambda: app.button_rect(f"row:{seq}") is not None, "refund row")
        touch(app, f"row:{seq}")
        touch(app, "refund:go")
        pump(app, lambda: app.model.screen == Screen.RESULT, "the refund")
        assert app.model.result is not None and app.model.result.outcome == "approved"
        assert ledger.exposure == 0
        app.model.clock.now += 60
        pump(app, lambda: app.model.screen == Screen.KEYPAD, "in service again")
    finally:
        app.close()
        reader.close()


def test_missing_key_starts_out_of_service_and_run_exits_1(tmp_path: Path) -> None:
    cfg = DEFAULT.replace("terminal", id="T-nokey", role="till", place="M0001",
                          language="ko")
    home = make_home(tmp_path / "home", cfg)
    home.key_path(cfg).unlink()
    shot = tmp_path / "last.png"
    result = CliRunner().invoke(cli, ["--home", str(home.path), "run", "--config",
                                      str(home.config_path), "--windowed", "--no-sound",
                                      "--seconds", "1.5", "--screenshot", str(shot)])
    assert result.exit_code == 1, result.output
    assert "out of service" in result.output
    assert "key file of the terminal is missing" in result.output
    image = pygame.image.load(str(shot))
    expected = _render_state("till", "out-of-service-key", "ko")
    assert _same_band(image, expected, (0.0, 0.1, 1.0, 0.55))


# -- devices ---------------------------------------------------------------------------




def test_till_without_its_scanner_takes_cards_and_a_scanner_plugged_later_works(
        tmp_path: Path) -> None:
    assert shutil.which("socat"), "socat is needed (apt install socat)"
    cfg = DEFAULT.replace("terminal", role="till", id="T-noscan", place="M0001",
                          merchant_name="Test Store", language="en")
    port = tmp_path / "ttyAPP"
    card_reader = VirtualReader("till reader")
    card = Device("virtual", "card", lambda: card_reader)
    scanner = Device(f"serial:{port}", "scanner",
                     lambda: open_reader("serial", port=str(port), debounce_s=0.0),
                     first_retry_s=0.2, max_retry_s=0.8)
    proc = None
    with Ledger(tmp_path / "l.sqlite", key=Ed25519PrivateKey.generate(),
                terminal_id=cfg.terminal.id) as ledger:
        terminal = Terminal(cfg, ledger, DEMO_TOKEN_KEY,  # NTP answer given, as above
                            clock_trust=ClockTrust(ledger, ntp=lambda: True))
        app = KioskApp(terminal, [card, scanner], sound=False)
        app.model.clock = Clock()
        try:
            app.start()
            pump(app, lambda: any(not d.ok for d in app.model.sync.devices), "device state")
            assert app.model.screen == Screen.KEYPAD  # cards still work: no out-of-service
            text, _ = status_text(app.model)
            assert text.endswith(f"Scanner missing: serial:{port.name}")
            # no busy loop while it is missing: a few tries in a second, not thousands
            started, tries = time.monotonic(), scanner.attempts
            time.sleep(1.0)
            # per second actually slept: a loaded machine may oversleep
            seconds = max(time.monotonic() - started, 1.0)
            assert scanner.attempts - tries <= 4 * seconds, (scanner.attempts - tries, seconds)

            # a card payment goes through with the scanner missing
            for digit in "1000":
                app._send(app.model.press(f"digit:{digit}"))
            app._send(app.model.press("pay:card"))
            app.step()
            card_reader.present_uid(MINJI)
            pump(app, lambda: app.model.screen == Screen.RESULT, "card payment")
            assert app.model.result is not None and app.model.result.outcome == "approved"
            assert ledger.head.seq == 1
            app._send(app.model.press("ok"))
            # the QR screen does not ask for a code at a scanner that is not there
            for digit in "500":
                app._send(app.model.press(f"digit:{digit}"))
            app._send(app.model.press("pay:qr"))
            app.step(force=True)
            assert "qr_or_scan" not in _drawn(app)
            app._send(app.model.press("cancel"))

            proc = socat_ptys(tmp_path)  # plugged in, no restart
            pump(app, lambda: all(d.ok for d in app.model.sync.devices), "scanner found", 15)
            assert "missing" not in status_text(app.model)[0]
            app._send(app.model.press("pay:qr"))
            app.step(force=True)
            assert "qr_or_scan" in _drawn(app)
            with open(tmp_path / "ttySCANNER", "wb", buffering=0) as line:
                line.write(b"NOT-A-PAYMENT-CODE\r")
            pump(app, lambda: app.model.screen == Screen.RESULT, "decision on the code")
            assert app.model.result is not None
            assert app.model.result.reason == Reason.QR_INVALID
        finally:
            app.close()
            card.close()
            scanner.close()
            if proc is not None:
                proc.terminate()
                proc.wait(10)


def test_run_with_its_only_reader_missing_starts_and_exits_1(tmp_path: Path) -> None:
    cfg = DEFAULT.replace("terminal", id="T-noreader", role="validator", language="en")
    home = make_home(tmp_path / "home", cfg)
    missing = f"serial:{tmp_path / 'ttyNOPE'}"
    args = ["--home", str(home.path), "run", "--config", str(home.config_path),
            "--windowed", "--no-sound", "--seconds", "1.5"]
    result = CliRunner().invoke(cli, [*args, "--reader", missing])
    assert result.exit_code == 1, result.output
    assert "no reader or scanner works" in result.output and missing in result.output
    # with a reader that works beside it, the kiosk serves: exit 0
    served = CliRunner().invoke(cli, [*args, "--reader", "virtual", "--reader", missing])
    assert served.exit_code == 0, served.output


# -- contrast, symbols, what the rider sees --------------------------------------------


def _luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG 2.x relative luminance of an sRGB colour."""
    def channel(v: int) -> float:
        c = v / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(v) for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _text_and_ground(surface: pygame.Surface,
                     rects: tuple[pygame.Rect, ...]) -> tuple[tuple[int, int, int], ...]:
    """(text colour, background colour) of a drawn text, from its pixels alone: the
    background is the commonest colour of its rectangles, the text the commonest colour
    clearly apart from it (anti-aliased edges are mixtures, fewer than the solid strokes)."""
    pixels: Counter[tuple[int, int, int]] = Counter()
    for rect in rects:
        clip = rect.clip(surface.get_rect())
        for y in range(clip.top, clip.bottom):
            for x in range(clip.left, clip.right):
                c = surface.get_at((x, y))
                pixels[(c[0], c[1], c[2])] += 1
    ground = pixels.most_common(1)[0][0]
    ink = [(n, c) for c, n in pixels.items()
           if sum(abs(c[i] - ground[i]) for i in range(3)) > 120]
    assert ink, "no text pixels found"
    return max(ink)[1], ground


RESULT_STATES = {
    "validator": ["approved", "approved-youth", "already-paid", "declined-deny_listed",
                  "approved-points", "claim-pending"],
    "till": ["approved", "approved-points", "declined-deny_listed", "refunded"],
}


@pytest.fixture(scope="module")
def fonts() -> Fonts:
    return load_fonts()


def test_result_text_reaches_wcag_aa_measured_from_pixels(fonts: Fonts) -> None:
    surface = pygame.Surface((800, 480))
    painter = Painter(surface, fonts)
    worst: dict[str, float] = {}
    for role, states in RESULT_STATES.items():
        for language in LANGUAGES:
            models = dict(catalog(role, language))
            for state in states:
                render(painter, models[state], till_statics())
                panel_bottom = painter.box(0, 300 if role == "till" else 480, 1, 1).top
                for rec in painter.records:
                    on_panel = [r for r in rec.rects if r.bottom <= panel_bottom
                                and r.top >= painter.box(0, 44, 1, 1).top]
                    if not on_panel or rec.name.startswith("button:"):
                        continue
                    fg, bg = _text_and_ground(surface, tuple(on_panel))
                    ratio = contrast(fg, bg)
                    key = f"{role}/{state}"
                    worst[key] = min(worst.get(key, 99.0), ratio)
                    assert ratio >= 4.5, (f"{key}/{language} {rec.name} {rec.text!r}: "
                                          f"{fg} on {bg} is {ratio:.2f}:1")
    print("lowest result-text contrast:", {k: round(v, 2) for k, v in worst.items()})


@pytest.mark.parametrize("state, mark", [("approved", "check"), ("declined-deny_listed",
                                         "cross"), ("already-paid", "bang")])
@pytest.mark.parametrize("role", ROLES)
def test_a_symbol_beside_each_result_drawn_as_its_shape(fonts: Fonts, role: str, state: str,
                                                        mark: str) -> None:
    surface = pygame.Surface((800, 480))
    painter = Painter(surface, fonts)
    models = dict(catalog(role, "ko"))
    if state not in models:
        state = "approved"
        mark = "check"
    render(painter, models[state], till_statics())
    marks = [(k, r) for k, r in painter.marks]
    assert [k for k, _ in marks] == [mark]
    rect = marks[0][1]
    headline = next(r for r in painter.records if r.name == "headline")
    assert rect.right < min(r.left for r in headline.rects)  # beside, to the left
    assert abs(rect.centery - headline.rects[0].centery) < rect.height

    ground = surface.get_at((rect.left - 2, rect.top - 2))

    def ink(fx: float, fy: float) -> bool:
        c = surface.get_at((rect.left + round(fx * (rect.width - 1)),
                            rect.top + round(fy * (rect.height - 1))))
        return sum(abs(c[i] - ground[i]) for i in range(3)) > 120

    # a missing glyph's box would ink the middle of every edge: none of these do
    edges = [ink(0.5, 0.02), ink(0.02, 0.5), ink(0.98, 0.5), ink(0.5, 0.98)]
    if mark == "check":
        assert ink(0.4, 0.78) and ink(0.85, 0.25) and ink(0.2, 0.64)
        assert not ink(0.15, 0.15) and not ink(0.85, 0.85)
        assert not edges[0] and not edges[3]
    elif mark == "cross":
        assert ink(0.5, 0.5) and ink(0.25, 0.25) and ink(0.75, 0.75) and ink(0.75, 0.25)
        assert not any(edges)
    else:
        assert ink(0.5, 0.3) and ink(0.5, 0.84)
        assert not ink(0.5, 0.66)  # the gap between bar and dot
        assert not any(edges) and not ink(0.2, 0.3) and not ink(0.8, 0.3)


def test_the_riders_status_bar_has_no_sync_count(fonts: Fonts) -> None:
    surface = pygame.Surface((800, 480))
    painter = Painter(surface, fonts)
    for role in ROLES:
        model = dict(catalog(role, "en"))["keypad" if role == "till" else "idle"]
        assert model.sync.waiting == 12_345
        render(painter, model, Statics())
        status = next(r.text for r in painter.records if r.name == "status")
        if role == "validator":
            assert "12,345" not in status and "sync" not in status.lower()
        else:  # the clerk's till keeps it, for the technician
            assert "12,345" in status
    # the technician's full line keeps it on both
    assert "12,345" in status_text(dict(catalog("validator", "en"))["idle"])[0]


def test_the_till_shows_local_time_whatever_the_process_zone(tmp_path: Path) -> None:
    # 2026-11-26 23:30 UTC is 08:30 on the 27th in Seoul: both the time and the day move
    when = dt.datetime(2026, 11, 26, 23, 30, tzinfo=dt.UTC).timestamp()
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    cfg = DEFAULT.replace("terminal", role="till", id="T-tz", place="M0001", language="en")
    reader = VirtualReader("r")
    try:
        with Ledger(tmp_path / "l.sqlite", key=Ed25519PrivateKey.generate(),
                    terminal_id=cfg.terminal.id) as ledger:
            terminal = Terminal(cfg, ledger, DEMO_TOKEN_KEY, clock=lambda: when)
            app = KioskApp(terminal, reader.poll, sound=False)
            try:
                app.start()
                for digit in "800":
                    app._send(app.model.press(f"digit:{digit}"))
                app._send(app.model.press("pay:card"))
                app.step()
                reader.present_uid(MINJI)
                pump(app, lambda: app.model.day.count == 1, "today's list")
                assert app.model.day.rows[0].time == "08:30"
            finally:
                app.close()
    finally:
        reader.close()
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


def test_out_of_service_and_missing_devices_join_the_screenshots() -> None:
    for role in ROLES:
        names = {name for name, _ in catalog(role, "ko")}
        assert {"out-of-service-read-only", "out-of-service-key", "out-of-service-ledger",
                "out-of-service-exposure", "out-of-service-no-reader"} <= names
        assert ("scanner-missing" if role == "till" else "reader-missing") in names


def test_device_backoff_does_not_busy_loop(tmp_path: Path) -> None:
    calls: list[float] = []
    port = tmp_path / "ttyNONE"

    def scanner() -> Reader:
        # the real serial backend, on a port that is not there (an unplugged USB scanner)
        calls.append(time.monotonic())
        return open_reader("serial", port=str(port))

    device = Device(f"serial:{port}", "scanner", scanner, first_retry_s=0.1,
                    max_retry_s=0.4)
    with closing(device):
        started = time.monotonic()
        while time.monotonic() - started < 1.5:
            assert device(0.2) is None
        state = device.state()
    assert not state.ok and "cannot open scanner port" in state.error
    assert state.name == f"serial:{port}" and state.kind == "scanner"
    # 0.1, 0.2, 0.4, 0.4, ... apart: about six tries in 1.5 s
    assert 3 <= len(calls) <= 8, len(calls)
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert all(g >= 0.09 for g in gaps), gaps


def test_the_model_follows_the_service_state() -> None:
    from kiosk_ui.model import CancelCmd, KioskModel, Result, ResultView, SyncView
    from kiosk_ui.service import Blocker

    clock = Clock()
    m = KioskModel(role="till", clock=clock)
    m.press("digit:5")
    m.press("pay:card")
    assert m.screen == Screen.WAIT_CARD
    blocked = SyncView(blocked=(Blocker(Cause.EXPOSURE_REACHED, "5,000,000 won"),))
    # a sale waiting for a card is dropped: the terminal is told to stop waiting
    assert m.on_event(blocked) == [CancelCmd()]
    assert m.screen == Screen.OUT_OF_SERVICE and m.pending == 0
    assert m.press("digit:1") == [] and m.key("return") == [] and m.digits == "5"
    # a decision still shows, then the screen goes back out of service
    m.on_event(Result(ResultView("declined", "payment", 5, reason=Reason.TERMINAL_EXPOSURE)))
    assert m.screen == Screen.RESULT
    clock.now += 60
    m.tick()
    assert m.screen == Screen.OUT_OF_SERVICE
    assert m.on_event(SyncView()) == [] and m.screen == Screen.KEYPAD
