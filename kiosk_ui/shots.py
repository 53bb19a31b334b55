"""Every screen state with sample data: for screenshots, and for the layout tests.

:func:`catalog` builds one :class:`~kiosk_ui.model.KioskModel` per screen state (the
validator's and the till's) filled with representative, and for text the longest,
content; :func:`save_screenshots` renders each at each size in both languages to PNG.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pygame

from firmware_cfg.config import DEFAULT, Config
from kiosk_ui.draw import Painter
from kiosk_ui.fonts import Fonts, load_fonts
from kiosk_ui.i18n import LANGUAGES, Language
from kiosk_ui.model import (
    DayView,
    KioskModel,
    PaymentRow,
    ResultView,
    Role,
    Screen,
    SyncView,
)
from kiosk_ui.qr import merchant_payload
from kiosk_ui.screens import Statics, render
from kiosk_ui.service import DETAIL_CHARS, Blocker, Cause, DeviceState
from terminal.risk import MESSAGES, Reason

log = logging.getLogger(__name__)

ROLES: tuple[Role, ...] = ("validator", "till")
SIZES: tuple[tuple[int, int], ...] = ((800, 480), (1280, 720))


def longest_reason(language: Language) -> Reason:
    index = 1 if language == "ko" else 0
    return max(Reason, key=lambda r: len(MESSAGES[r][index]))


def sample_day() -> DayView:
    rows = [
        PaymentRow(131, "refund", 2_800, 0, "10:12", "", 118),
        PaymentRow(130, "payment", 45_500, 0, "10:05", "940912******4821"),
        PaymentRow(127, "payment", 3_500, 0, "09:41", "UID 08A1…03"),
        PaymentRow(122, "void", 12_000, 0, "09:30", "", 121),
        PaymentRow(121, "payment", 12_000, 0, "09:28", "UID 08A1…02", refunded=12_000),
        PaymentRow(118, "payment", 8_800, 0, "09:02", "UID 08A1…01", refunded=2_800),
        PaymentRow(112, "payment", 999_999_999, 0, "08:15", "940912******0007"),
        PaymentRow(105, "payment", 1_000, 0, "07:58", "UID 08A1…09"),
    ]
    paid = sum(r.amount for r in rows if r.kind == "payment")
    back = sum(r.amount for r in rows if r.kind != "payment")
    return DayView(tuple(rows), sum(r.kind == "payment" for r in rows), paid, back)


def catalog(role: Role, language: Language, *, every_reason: bool = False,
            config: Config = DEFAULT) -> Iterator[tuple[str, KioskModel]]:
    """(state name, model) for every screen state of ``role``.

    ``every_reason`` adds a declined screen per decline reason (for the layout tests);
    otherwise the longest reason of the language stands for them all.
    """
    t = config.terminal
    offline = SyncView(online=False, waiting=12_345, head_seq=20_000)
    base = KioskModel(role=role, language=language, place=t.place if role == "validator"
                      else "M0427", merchant_name="Ilsan Farm Store", fare=config.fares.default_fare
                      if role == "validator" else 0, demo=True, sync=offline,
                      clock=lambda: 0.0)

    def state(screen: Screen, **changes: Any) -> KioskModel:
        return replace(base, screen=screen, **changes)

    reasons = list(Reason) if every_reason else [longest_reason(language), Reason.DENY_LISTED]
    yield from _out_of_service(state, role)
    if role == "validator":
        yield "idle", state(Screen.IDLE)
        # the card reader unplugged, the scanner working: codes only, and the status says so
        yield "reader-missing", state(Screen.IDLE, sync=replace(offline, devices=(
            DeviceState("pcsc:ACS ACR122U", "card", False, "no PC/SC reader matches"),
            DeviceState("serial:/dev/ttyACM0", "scanner", True))))
        yield "idle-online", state(Screen.IDLE, sync=SyncView(online=True), demo=False)
        yield "idle-fault", state(Screen.IDLE, sync=SyncView(ledger_ok=False, reader_ok=False))
        yield "reading", state(Screen.READING)
        yield "approved", state(Screen.RESULT, result=ResultView(
            "approved", "tap", 1_500, balance=23_400, card="UID 08A1…01", rider="adult"))
        yield "approved-youth", state(Screen.RESULT, result=ResultView(
            "approved", "tap", 900, balance=23_400, card="UID 08A1…01", rider="youth"))
        yield "approved-points", state(Screen.RESULT, result=ResultView(
            "approved", "tap", 1_500, balance=1_234_567, points_now=1_500, points_week=2_900,
            rider="adult"))
        # a category the config adds has no label of ours: its name shows, the longest fits
        yield "approved-other-category", state(Screen.RESULT, result=ResultView(
            "approved", "tap", 0, rider="registered_disabled_companion"))
        yield "approved-no-balance", state(Screen.RESULT, result=ResultView(
            "approved", "tap", 1_500))
        yield "already-paid", state(Screen.RESULT, result=ResultView(
            "already_paid", "tap", 0, balance=21_900))
        yield from _claims(state, "wallet …ay-1")
        for reason in reasons:
            yield f"declined-{reason.value}", state(Screen.RESULT, result=ResultView(
                "declined", "tap", 1_500, reason=reason))
        return
    day = sample_day()
    yield "keypad", state(Screen.KEYPAD)
    yield "keypad-amount", state(Screen.KEYPAD, digits="8800")
    yield "keypad-max", state(Screen.KEYPAD, digits="999999999")
    yield "keypad-notice", state(Screen.KEYPAD, notice="enter_amount_first")
    # a till without its scanner takes cards; its QR screen asks for no code at a scanner
    no_scanner = replace(offline, devices=(
        DeviceState("nfc:usb:072f:2200", "card", True),
        DeviceState("serial:/dev/ttyACM0", "scanner", False, "no such file or directory")))
    yield "scanner-missing", state(Screen.KEYPAD, digits="8800", sync=no_scanner)
    yield "wait-qr-scanner-missing", state(Screen.WAIT_QR, digits="8800", pending=8_800,
                                           method="qr", sale_ref="000000000118",
                                           sync=no_scanner)
    yield "keypad-fault", state(Screen.KEYPAD, digits="1000", fault="ledger write failed",
                                sync=SyncView(ledger_ok=False))
    yield "wait-card", state(Screen.WAIT_CARD, digits="8800", pending=8_800)
    yield "wait-qr", state(Screen.WAIT_QR, digits="8800", pending=8_800, method="qr",
                           sale_ref="000000000118")
    yield "wait-qr-max", state(Screen.WAIT_QR, digits="999999999", pending=999_999_999,
                               method="qr", sale_ref="999999999999")
    yield "reading", state(Screen.READING, pending=8_800)
    yield "approved", state(Screen.RESULT, result=ResultView(
        "approved", "payment", 8_800, balance=41_200, card="UID 08A1…01", seq=118))
    yield "approved-points", state(Screen.RESULT, result=ResultView(
        "approved", "payment", 999_999_999, balance=999_999_999, points_now=2_999_999,
        points_week=9_999_999, card="940912******4821"))
    yield from _claims(state, "wallet …ay-1", digits="14000")
    for reason in reasons:
        yield f"declined-{reason.value}", state(Screen.RESULT, digits="14000", result=ResultView(
            "declined", "payment", 14_000, reason=reason, card="UID 08A1…02"))
    yield "refund-list", state(Screen.REFUND_LIST, day=day)
    yield "refund-list-empty", state(Screen.REFUND_LIST, day=DayView())
    target = day.refundable[1]
    yield "refund-amount", state(Screen.REFUND_AMOUNT, day=day, refund_target=target,
                                 digits=str(target.remaining))
    yield "refunded", state(Screen.RESULT, result=ResultView("approved", "refund", 2_800))
    yield "today", state(Screen.TODAY, day=day)
    yield "today-page-2", state(Screen.TODAY, day=day, page=1)
    yield "today-empty", state(Screen.TODAY, day=DayView())


def _out_of_service(state: Any, role: Role) -> Iterator[tuple[str, KioskModel]]:
    """The out-of-service screen for each cause, the technician's detail at its longest."""
    home = "/var/lib/localpay"
    broken = SyncView(ledger_ok=False, blocked=(
        Blocker(Cause.HOME_READ_ONLY, f"{home}: read-only file system"),
        Blocker(Cause.LEDGER_BROKEN, f"cannot open ledger {home}/ledger.sqlite: unable to "
                "open database file")))
    yield "out-of-service-read-only", state(Screen.OUT_OF_SERVICE, sync=broken)
    yield "out-of-service-key", state(Screen.OUT_OF_SERVICE, sync=SyncView(
        ledger_ok=False, blocked=(Blocker(Cause.KEY_MISSING, f"terminal key file {home}/keys/"
                                          "terminal.key does not exist"),)))
    yield "out-of-service-ledger", state(Screen.OUT_OF_SERVICE, sync=SyncView(
        ledger_ok=False, blocked=(Blocker(Cause.LEDGER_BROKEN, "entry 7: bad signature"),)))
    yield "out-of-service-exposure", state(Screen.OUT_OF_SERVICE, sync=SyncView(
        waiting=3_217, head_seq=20_000, blocked=(Blocker(
            Cause.EXPOSURE_REACHED, "4,999,100 won taken offline, limit 5,000,000: sync to "
            "take more"),)))
    card = "pcsc:ACS ACR122U" if role == "validator" else "nfc:usb:072f:2200"
    errors = (f"{card}: cannot open {card.split(':', 1)[0]} reader: no such device; "
              "serial:/dev/ttyACM0: cannot open scanner port '/dev/ttyACM0': [Errno 2] "
              "could not open port /dev/ttyACM0: No such file or directory")
    yield "out-of-service-no-reader", state(Screen.OUT_OF_SERVICE, sync=SyncView(
        blocked=(Blocker(Cause.NO_READER, errors[:DETAIL_CHARS - 1] + "…"),), devices=(
            DeviceState(card, "card", False, "no PC/SC reader matches"),
            DeviceState("serial:/dev/ttyACM0", "scanner", False, "no such file"))))


def _claims(state: Any, wallet: str, **more: Any) -> Iterator[tuple[str, KioskModel]]:
    """A campaign code waiting for its card (points confirmed, or the signed figure not
    confirmed), and the card that collected them."""
    yield "claim-pending", state(Screen.RESULT, **more, result=ResultView(
        "claim_pending", "claim", 0, points_now=1_000, card=wallet))
    yield "claim-pending-unconfirmed", state(Screen.RESULT, **more, result=ResultView(
        "claim_pending", "claim", 0, points_unconfirmed=4_294_967_295, card=wallet))
    yield "claim-collected", state(Screen.RESULT, **more, result=ResultView(
        "approved", "claim", 0, points_now=1_000, card="940912******4821", seq=131))


def till_statics(config: Config = DEFAULT) -> Statics:
    cfg = config.replace("terminal", role="till", place="M0427",
                         merchant_name="Ilsan Farm Store", merchant_category="local_food")
    return Statics(qr_payload=lambda amount, ref: merchant_payload(cfg, amount, ref))


def save_screenshots(folder: Path, sizes: Sequence[tuple[int, int]] = SIZES, *,
                     fonts: Fonts | None = None) -> list[Path]:
    """Render every screen state of both roles, both languages, at each size, to PNGs.

    Files are named ``{role}-{state}-{language}-{width}x{height}.png``; returns their paths.
    """
    fonts = fonts or load_fonts()
    folder.mkdir(parents=True, exist_ok=True)
    statics = till_statics()
    saved: list[Path] = []
    for width, height in sizes:
        surface = pygame.Surface((width, height))
        painter = Painter(surface, fonts)
        for role in ROLES:
            for language in LANGUAGES:
                for name, model in catalog(role, language):
                    render(painter, model, statics)
                    path = folder / f"{role}-{name}-{language}-{width}x{height}.png"
                    pygame.image.save(surface, str(path))
                    saved.append(path)
    log.info("saved %d screenshots in %s", len(saved), folder)
    return saved
