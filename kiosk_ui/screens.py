"""The screens, drawn from a :class:`~kiosk_ui.model.KioskModel` onto a surface of any size.

Boxes are given in 800×480 design pixels (the Raspberry Pi touch display) and scaled per
axis; text scales with the smaller axis and is fitted into its box (see :mod:`kiosk_ui.draw`).
Each screen draws its buttons through the painter, which is also what hit-tests touches,
so what is drawn is exactly what can be touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import pygame

from kiosk_ui import cash_receipt as crf
from kiosk_ui import draw as d
from kiosk_ui.draw import Painter
from kiosk_ui.ereceipt import draw_e_receipt
from kiosk_ui.i18n import Language, reason_text, rider_text, tr, won
from kiosk_ui.model import (
    PAGE_ROWS,
    Z_ROWS,
    KioskModel,
    PaymentRow,
    ResultView,
    Screen,
    split_text,
)
from kiosk_ui.outage import draw_out_of_service
from kiosk_ui.qr import Matrix, qr_matrix, qr_surface
from kiosk_ui.service import can_take
from terminal.zreport import text_lines

OUTCOME_COLOR = {"approved": d.GREEN, "declined": d.RED, "already_paid": d.AMBER,
                 "claim_pending": d.BLUE}
#: a darker green than the approved screen's, so the category reads as a label on it
RIDER_PILL: d.Color = (20, 83, 45)
#: the symbol beside a result's headline (a claim's prompt is a question, not a result)
RESULT_MARK: dict[str, d.Mark] = {"approved": "check", "declined": "cross",
                                  "already_paid": "bang"}
STATUS_H = 44


@dataclass
class Statics:
    """What the screens need besides the model: the till's QR code for a sale.

    Encoding a QR code takes ~10 ms of pure Python, most of a frame: with ``background``
    it is done on a thread of its own and the screen shows the code a frame or two after
    it is asked for, instead of dropping a frame.
    """

    #: (amount, sale reference) -> MPM payload
    qr_payload: Callable[[int, str], str] | None = None
    background: bool = False
    _made: dict[tuple[int, str], tuple[str, Matrix]] = field(default_factory=dict)
    _drawn: dict[tuple[int, str, int], pygame.Surface] = field(default_factory=dict)
    _jobs: dict[tuple[int, str], Future[tuple[str, Matrix]]] = field(default_factory=dict)
    _pool: ThreadPoolExecutor | None = None
    _ready: bool = False

    def _make(self, amount: int, reference: str) -> tuple[str, Matrix]:
        assert self.qr_payload is not None
        payload = self.qr_payload(amount, reference)
        return payload, qr_matrix(payload)

    def qr(self, amount: int, reference: str, side: int) -> tuple[str, pygame.Surface] | None:
        """The payload and its drawn code, or None while it is still being made."""
        if self.qr_payload is None:
            return None
        key = (amount, reference)
        made = self._made.get(key)
        if made is None:
            if not self.background:
                made = self._make(amount, reference)
            else:
                job = self._jobs.get(key)
                if job is None:
                    if self._pool is None:
                        self._pool = ThreadPoolExecutor(1, thread_name_prefix="kiosk-qr")
                    job = self._pool.submit(self._make, amount, reference)
                    job.add_done_callback(lambda _: setattr(self, "_ready", True))
                    self._jobs[key] = job
                if not job.done():
                    return None
                del self._jobs[key]
                made = job.result()
            if len(self._made) > 8:
                self._made.clear()
                self._drawn.clear()
            self._made[key] = made
        surface = self._drawn.get((amount, reference, side))
        if surface is None:
            surface = qr_surface(made[1], side)
            self._drawn[(amount, reference, side)] = surface
        return made[0], surface

    def take_ready(self) -> bool:
        """True once after a code made in the background is ready to be drawn."""
        ready, self._ready = self._ready, False
        return ready

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def render(p: Painter, m: KioskModel, statics: Statics) -> None:
    """Draw the whole screen for ``m`` (a full redraw: every pixel is painted)."""
    p.begin()
    p.surface.fill(d.BG)
    _status_bar(p, m)
    body = {
        Screen.IDLE: _idle,
        Screen.READING: _reading,
        Screen.RESULT: _result,
        Screen.KEYPAD: _keypad,
        Screen.REFUND_AMOUNT: _keypad,
        Screen.WAIT_CARD: _wait_card,
        Screen.WAIT_QR: _wait_qr,
        Screen.REFUND_LIST: _refund_list,
        Screen.TODAY: _today,
        Screen.OUT_OF_SERVICE: draw_out_of_service,
        Screen.SIGN_IN: _sign_in,
        Screen.PIN: _pin,
        Screen.Z_REPORT: _z_report,
        Screen.E_RECEIPT: draw_e_receipt,
        Screen.CASH_RECEIPT: _cash_receipt,
    }[m.screen]
    body(p, m, statics)


# -- status bar --------------------------------------------------------------------------


def status_text(m: KioskModel, *, rider: bool = False) -> tuple[str, d.Color]:
    """The status line; ``rider``: the one a rider sees, without the technician's sync count."""
    lang, s = m.language, m.sync
    if m.fault or not s.ledger_ok:
        return tr(lang, "ledger_fault"), d.RED_TEXT
    parts = [tr(lang, "online" if s.online else "offline")]
    missing = [dev for dev in s.devices if not dev.ok]
    # a missing device matters more than the sync count, and the line has room for one
    if not rider and not missing:
        parts.append(tr(lang, "waiting_sync", n=f"{s.waiting:,}") if s.waiting
                     else tr(lang, "all_synced"))
    if len(missing) == 1:
        parts.append(tr(lang, "device_missing", device=tr(lang, f"device_{missing[0].kind}"),
                        name=_short_name(missing[0].name)))
    elif missing:  # all of them: the out-of-service screen names each, with its error
        parts.append(tr(lang, "cause_no_reader"))
    if not s.reader_ok:
        parts.append(tr(lang, "reader_fault"))
    if s.clock == "unknown":
        parts.append(tr(lang, "clock_unknown"))
    color = (d.ONLINE if s.online and s.reader_ok and not missing and s.clock != "unknown"
             else d.ORANGE)
    return " · ".join(parts), color


def _short_name(name: str, keep: int = 24) -> str:
    """A device's spec as the status line shows it: a path by its last part
    (``serial:/dev/ttyACM0`` -> ``serial:ttyACM0``), at most ``keep`` characters."""
    kind, _, rest = name.partition(":")
    if "/" in rest:
        name = f"{kind}:{rest.rsplit('/', 1)[1]}"
    return name if len(name) <= keep else name[:keep - 1] + "…"


def _status_bar(p: Painter, m: KioskModel) -> None:
    lang = m.language
    p.fill(p.box(0, 0, 800, STATUS_H), d.PANEL)
    text, color = status_text(m, rider=m.role == "validator")
    if m.role == "validator":
        p.text(tr(lang, "route", place=m.place), p.box(16, 4, 250, 36), size=22, bold=True,
               align="left", name="route")
        status_box = p.box(300, 4, 390, 36)
        dot_x = 286
    else:
        p.text(m.merchant_name or tr(lang, "till"), p.box(12, 4, 200, 36), size=20, bold=True,
               align="left", name="merchant")
        status_box = p.box(234, 4, 246, 36)
        dot_x = 222
        p.button("menu:refund", p.box(486, 5, 92, 34), tr(lang, "menu_refund"), size=18,
                 enabled=m.menus_open)
        p.button("menu:today", p.box(584, 5, 108, 34), tr(lang, "menu_today"), size=18,
                 enabled=m.menus_open)
    pygame.draw.circle(p.surface, color, p.box(dot_x, 22, 0, 0).topleft, p.px(7))
    p.text(text, status_box, size=18, color=color, align="left", max_lines=2, min_size=12,
           name="status")
    p.button("lang", p.box(698, 5, 96, 34), tr(lang, "lang_button"), size=17, bold=False)


# -- validator and shared screens -------------------------------------------------------


def _idle(p: Painter, m: KioskModel, s: Statics) -> None:
    lang = m.language
    other: Language = "en" if lang == "ko" else "ko"
    # with its card reader missing (and a scanner working) a validator asks only for codes
    ask = "tap_card" if can_take(m.sync.devices, "card") else "show_code"
    if ask == "tap_card":
        _contactless_mark(p, p.box(340, 62, 120, 70))
    p.text(tr(lang, ask), p.box(30, 140, 740, 110), size=72, bold=True, max_lines=2,
           min_size=36, name=ask)
    p.text(tr(other, ask), p.box(30, 250, 740, 60), size=38, color=d.MUTED, min_size=18,
           name=f"{ask}_other")
    if m.fare:
        p.text(tr(lang, "fare", amount=won(m.fare, lang)), p.box(30, 330, 740, 50), size=30,
               color=d.MUTED, name="fare")
    if m.demo:
        p.text(tr(lang, "demo_keys"), p.box(30, 432, 740, 36), size=18, color=d.DIM,
               name="demo_keys")


def _contactless_mark(p: Painter, box: pygame.Rect) -> None:
    """Four arcs, the contactless symbol's shape (ISO/IEC 14443 readers carry it)."""
    step = box.height / 2 / 4.2
    cx = box.centerx - int(step * 2)
    cy = box.centery
    for i in range(4):
        outer = step * (i + 1)
        inner = outer - step * 0.55
        points = [(cx + outer * math.cos(a), cy + outer * math.sin(a)) for a in _ARC]
        points += [(cx + inner * math.cos(a), cy + inner * math.sin(a)) for a in reversed(_ARC)]
        pygame.draw.polygon(p.surface, d.MUTED, points)


_ARC = [-0.8 + 1.6 * k / 16 for k in range(17)]


def _reading(p: Painter, m: KioskModel, s: Statics) -> None:
    lang = m.language
    p.fill(p.box(0, STATUS_H, 800, 480 - STATUS_H), d.BLUE)
    if m.role == "till" and m.pending:
        p.text(won(m.pending, lang), p.box(30, 80, 740, 90), size=64, bold=True,
               name="amount")
    p.text(tr(lang, "reading"), p.box(30, 190, 740, 90), size=60, bold=True, name="reading")
    p.text(tr(lang, "keep_card"), p.box(30, 290, 740, 60), size=34, name="keep_card")


def _result(p: Painter, m: KioskModel, s: Statics) -> None:
    view = m.result
    if view is None:  # the model never shows RESULT without one; draw the home screen then
        _idle(p, m, s) if m.role == "validator" else _keypad(p, m, s)
        return
    lang = m.language
    till = m.role == "till"
    p.fill(p.box(0, STATUS_H, 800, (300 if till else 480) - STATUS_H),
           OUTCOME_COLOR[view.outcome])
    approved = {"refund": "refunded", "claim": "points_collected"}.get(view.action, "approved")
    headline = {"approved": approved, "declined": "declined", "already_paid": "already_paid",
                "claim_pending": "claim_tap_card"}[view.outcome]
    mark = RESULT_MARK.get(view.outcome)
    # with a symbol the box keeps room for it on the left, and stays centred
    drawn = p.text(tr(lang, headline), p.box(110, 54, 580, 76) if mark else
                   p.box(30, 54, 740, 76), size=56, bold=True, max_lines=2, min_size=28,
                   name="headline")
    if mark is not None:
        p.mark(mark, drawn)
    lines = _result_lines(view, lang)
    if view.action == "claim" and view.outcome != "declined":
        _claim_body(p, view, lang, till)
        lines = []
    elif view.outcome == "declined" and view.reason is not None:
        p.text(reason_text(view.reason, lang), p.box(40, 134, 720, 116 if till else 150),
               size=40, bold=True, max_lines=3, min_size=22, name="reason")
        if view.amount:
            lines.insert(0, ("amount", tr(lang, "sale_amount" if till else "fare",
                                          amount=won(view.amount, lang))))
    elif view.outcome == "already_paid":
        p.text(tr(lang, "already_paid_sub"), p.box(40, 134, 720, 140), size=34, max_lines=3,
               min_size=22, name="already_paid_sub")
    elif not till and view.rider:
        # The category under the fare: a youth charged 900 sees why it is not 1,500.
        p.text(won(view.amount, lang), p.box(30, 126, 740, 114), size=104, bold=True,
               name="amount")
        label = rider_text(view.rider, lang)
        # As wide as the label (a category the config adds may have a long name), centred.
        ink = p.fonts.face(True).get_rect(label, size=p.px(32)).width / p.sx
        width = min(740.0, max(160.0, ink + 56))
        pill = p.box(400 - width / 2, 242, width, 50)
        p.fill(pill, RIDER_PILL, radius=25)
        p.text(label, pill.inflate(-p.px(24), -p.px(6)), size=32, bold=True, name="rider")
    else:
        p.text(won(view.amount, lang), p.box(30, 128, 740, 124 if till else 140),
               size=104, bold=True, name="amount")
    if till:
        if view.card:
            p.text(view.card, p.box(40, 254, 720, 40), size=24, name="card")
        receipt = m.receipt_fault
        if receipt is not None and receipt.seq == view.seq:
            # the payment stands; where the third detail line goes, why there is no receipt
            lines = lines[:2]
            p.text(tr(lang, receipt.key, seq=receipt.seq), p.box(24, 420, 540, 48), size=24,
                   align="left", color=d.AMBER_TEXT, max_lines=2, min_size=14,
                   name="receipt_fault")
        for i, (name, text) in enumerate(lines[:3]):
            p.text(text, p.box(24, 312 + 54 * i, 540, 48), size=30, align="left", name=name)
        # under a claim's prompt the button gives the claim up
        label = tr(lang, "cancel" if view.outcome == "claim_pending" else "ok")
        if view.e_receipt and crf.offered(view):  # and a cash receipt on request
            p.button("ereceipt", p.box(580, 306, 200, 50), tr(lang, "e_receipt"), size=24)
            p.button("cashreceipt", p.box(580, 362, 200, 50), tr(lang, "cr_button"), size=24)
            p.button("ok", p.box(580, 418, 200, 54), label, size=34)
        elif view.e_receipt:  # the customer's signed receipt, on request, as a QR
            p.button("ereceipt", p.box(580, 312, 200, 60), tr(lang, "e_receipt"), size=26)
            p.button("ok", p.box(580, 384, 200, 84), label, size=40)
        else:
            p.button("ok", p.box(580, 324, 200, 136), label, size=40)
    else:
        for i, (name, text) in enumerate(lines[:3]):
            p.text(text, p.box(40, 300 + 52 * i, 720, 48), size=34, name=name)


def _claim_body(p: Painter, view: ResultView, lang: Language, till: bool) -> None:
    """A campaign claim: the points in large (or the signed figure, marked as not confirmed),
    and that nothing is charged; under the prompt, which card to tap."""
    if view.points_now is not None:
        p.text(tr(lang, "points_claim", points=f"{view.points_now:,}"),
               p.box(30, 134, 740, 84 if till else 110), size=72, bold=True, name="points")
    elif view.points_unconfirmed is not None:
        p.text(tr(lang, "points_unconfirmed", points=f"{view.points_unconfirmed:,}"),
               p.box(30, 134, 740, 84 if till else 110), size=40, bold=True, max_lines=2,
               min_size=22, name="points")
    sub = "claim_tap_card_sub" if view.outcome == "claim_pending" else "nothing_charged"
    p.text(tr(lang, sub), p.box(40, 210 if till else 260, 720, 44 if till else 90), size=30,
           max_lines=2, min_size=18, name=sub)


def _result_lines(view: ResultView, lang: Language) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    if view.split and view.outcome == "approved":
        lines.append(("split", split_text(view.split, lang)))
    if view.balance is not None and view.outcome != "declined":
        lines.append(("balance", tr(lang, "balance", amount=won(view.balance, lang))))
    if view.points_now is not None:
        lines.append(("points_now", tr(lang, "points_now", points=f"{view.points_now:,}")))
    if view.points_week is not None:
        lines.append(("points_week", tr(lang, "points_week", points=f"{view.points_week:,}")))
    return lines


# -- till ----------------------------------------------------------------------------------

_KEYS = (("7", "8", "9"), ("4", "5", "6"), ("1", "2", "3"), ("00", "0", "del"))


def _keypad(p: Painter, m: KioskModel, s: Statics) -> None:
    lang = m.language
    refund = m.screen == Screen.REFUND_AMOUNT
    target = m.refund_target
    if refund and target is not None:
        p.text(tr(lang, "refund_of", seq=target.seq, time=target.time,
                  amount=won(target.amount, lang)),
               p.box(28, 54, 352, 46), size=20, max_lines=2, min_size=14, name="refund_of")
    else:
        p.text(tr(lang, "amount_prompt"), p.box(28, 58, 352, 40), size=24, color=d.MUTED,
               align="left", name="amount_prompt")
    display = p.box(28, 104, 352, 92)
    p.fill(display, d.PANEL, radius=10)
    p.text(won(m.amount, lang), display.inflate(-p.px(24), -p.px(10)), size=58, bold=True,
           color=d.TEXT if m.amount else d.DIM, align="right", name="amount")
    p.button("clear", p.box(28, 206, 120, 58), tr(lang, "clear"), size=24,
             enabled=bool(m.digits))
    if refund and target is not None:
        p.text(tr(lang, "refund_left", amount=won(target.remaining, lang)),
               p.box(156, 206, 224, 58), size=20, color=d.MUTED, name="refund_left")
        ok = 0 < m.amount <= target.remaining
        p.button("refund:go", p.box(28, 276, 352, 100), tr(lang, "refund_go"), fill=d.AMBER,
                 size=40, enabled=ok)
        p.button("cancel", p.box(28, 388, 352, 80), tr(lang, "cancel"), size=30)
    else:
        if m.notice:
            p.text(tr(lang, m.notice, amount=won(m.max_amount, lang)), p.box(156, 206, 224, 58),
                   size=20, color=d.AMBER_TEXT, max_lines=2, min_size=14, name="notice")
        p.button("pay:card", p.box(28, 276, 170, 150), tr(lang, "pay_card"), fill=d.BLUE,
                 size=44, enabled=m.amount > 0 and can_take(m.sync.devices, "card"))
        p.button("pay:qr", p.box(210, 276, 170, 150), tr(lang, "pay_qr"), fill=d.GREEN,
                 size=44, enabled=m.amount > 0)
        if m.fault:
            p.text(tr(lang, "internal_error"), p.box(28, 436, 352, 36), size=18,
                   color=d.RED_TEXT, name="fault")
        elif m.receipt_fault is not None:  # until the next sale: reprint it from the ledger
            p.text(tr(lang, m.receipt_fault.key, seq=m.receipt_fault.seq),
                   p.box(28, 436, 352, 36), size=18, color=d.AMBER_TEXT, max_lines=2,
                   min_size=12, name="receipt_fault")
    _digit_keys(p, lang)


def _digit_keys(p: Painter, lang: Language) -> None:
    """The keypad's twelve keys on the right: the amount's and the PIN pad's."""
    for r, row in enumerate(_KEYS):
        for c, key in enumerate(row):
            box = p.box(404 + c * 128, 56 + r * 104, 118, 94)
            if key == "del":
                p.button("del", box, tr(lang, "delete"), size=34)
            else:
                p.button(f"digit:{key}", box, key, size=44)


def _pin_notice(m: KioskModel) -> str:
    """The lockout while it lasts (a countdown), else the last notice."""
    locked = math.ceil(m.desk.locked_for()) if m.desk is not None else 0
    if locked:
        return tr(m.language, "pin_locked", seconds=locked)
    return tr(m.language, m.notice) if m.notice else ""


def _sign_in(p: Painter, m: KioskModel, s: Statics) -> None:
    lang = m.language
    p.text(tr(lang, "sign_in_title"), p.box(16, 52, 768, 44), size=28, bold=True,
           align="left", name="sign_in_title")
    clerks = m.desk.clerks if m.desk is not None else ()
    for i, clerk in enumerate(clerks):
        # numbered: a keyboard's digit picks the same name (KioskModel.key)
        label = f"{i + 1}  {clerk.name}"
        if clerk.role == "supervisor":
            label += f" · {tr(lang, 'role_supervisor')}"
        p.button(f"clerk:{clerk.id}", p.box(16 + 392 * (i % 2), 104 + 76 * (i // 2), 376, 66),
                 label, size=28)
    notice = _pin_notice(m)
    if notice:
        p.text(notice, p.box(16, 414, 768, 52), size=24, color=d.AMBER_TEXT, max_lines=2,
               min_size=14, name="notice")


def _pin(p: Painter, m: KioskModel, s: Statics) -> None:
    lang = m.language
    who = m.desk.find(m.pin_for) if m.desk is not None else None
    title = (tr(lang, "pin_for", name=who.name) if who is not None
             else tr(lang, "pin_supervisor"))
    p.text(title, p.box(28, 54, 352, 46), size=24, bold=True, max_lines=2, min_size=14,
           name="pin_title")
    display = p.box(28, 104, 352, 92)
    p.fill(display, d.PANEL, radius=10)
    if m.pin:  # dots only: a PIN is never drawn, whoever stands behind the clerk
        p.text("●" * len(m.pin), display.inflate(-p.px(24), -p.px(10)), size=44, bold=True,
               name="pin")
    notice = _pin_notice(m)
    if notice:
        p.text(notice, p.box(28, 206, 352, 58), size=20, color=d.AMBER_TEXT, max_lines=2,
               min_size=12, name="notice")
    locked = m.desk is not None and m.desk.locked_for() > 0
    p.button("pin:go", p.box(28, 276, 352, 100), tr(lang, "ok"), fill=d.BLUE, size=40,
             enabled=len(m.pin) >= 4 and not locked)
    p.button("cancel", p.box(28, 388, 352, 80), tr(lang, "cancel"), size=30)
    _digit_keys(p, lang)


def _wait_card(p: Painter, m: KioskModel, s: Statics) -> None:
    lang = m.language
    p.text(won(m.pending, lang), p.box(30, 60, 740, 110), size=84, bold=True, name="amount")
    _contactless_mark(p, p.box(340, 176, 120, 70))
    p.text(tr(lang, "tap_card"), p.box(30, 244, 740, 80), size=56, bold=True,
           name="tap_card")
    p.text(tr(lang, "wait_card_hint"), p.box(30, 322, 740, 44), size=26, color=d.MUTED,
           name="wait_card_hint")
    p.button("cancel", p.box(300, 376, 200, 64), tr(lang, "cancel"), size=30)
    if m.demo:
        p.text(tr(lang, "demo_keys"), p.box(30, 446, 740, 30), size=16, color=d.DIM,
               name="demo_keys")


def _wait_qr(p: Painter, m: KioskModel, s: Statics) -> None:
    lang = m.language
    area = p.box(16, 52, 420, 420)
    side = min(area.width, area.height)
    # a code that would pay nothing now (m.qr_notice says why) is not shown
    made = None if m.qr_notice else s.qr(m.pending, m.sale_ref, side)
    if made is not None:
        code = made[1]
        p.surface.blit(code, code.get_rect(center=area.center))
    else:
        square = pygame.Rect(0, 0, side, side)
        square.center = area.center
        p.fill(square, d.PANEL, radius=6)
    p.text(won(m.pending, lang), p.box(448, 56, 336, 80), size=56, bold=True, name="amount")
    p.text(m.merchant_name, p.box(448, 138, 336, 40), size=24, color=d.MUTED,
           name="merchant_name")
    if m.qr_notice:
        p.text(tr(lang, m.qr_notice), p.box(448, 188, 336, 90), size=24, bold=True,
               max_lines=3, min_size=14, color=d.AMBER_TEXT, name="qr_notice")
    elif m.qr_offline:  # the app's payment cannot be confirmed: say so, offer the others
        p.text(tr(lang, "qr_no_network"), p.box(448, 188, 336, 90), size=24, bold=True,
               max_lines=3, min_size=14, color=d.AMBER_TEXT, name="qr_no_network")
    else:
        p.text(tr(lang, "qr_hint"), p.box(448, 188, 336, 90), size=30, bold=True,
               max_lines=2, min_size=18, name="qr_hint")
    if can_take(m.sync.devices, "scanner"):  # never ask for a code no scanner can read
        p.text(tr(lang, "qr_or_scan"), p.box(448, 284, 336, 70), size=22, color=d.MUTED,
               max_lines=2, min_size=14, name="qr_or_scan")
    p.button("cancel", p.box(516, 372, 200, 64), tr(lang, "cancel"), size=30)
    if m.demo:
        p.text(tr(lang, "demo_keys"), p.box(448, 444, 336, 30), size=14, color=d.DIM,
               min_size=9, name="demo_keys")


def _pager(p: Painter, m: KioskModel, rows: int) -> tuple[int, int]:
    pages = max(1, -(-rows // PAGE_ROWS))
    page = min(m.page, pages - 1)
    lang = m.language
    p.button("back", p.box(16, 416, 150, 56), tr(lang, "back"), size=26)
    p.text(tr(lang, "page", page=page + 1, pages=pages), p.box(330, 416, 140, 56), size=24,
           color=d.MUTED, name="page")
    p.button("page:prev", p.box(500, 416, 134, 56), tr(lang, "prev"), size=26,
             enabled=page > 0)
    p.button("page:next", p.box(646, 416, 138, 56), tr(lang, "next"), size=26,
             enabled=page < pages - 1)
    return page * PAGE_ROWS, min(rows, (page + 1) * PAGE_ROWS)


def _row(p: Painter, box: pygame.Rect, row: PaymentRow, lang: Language, *, kind: bool,
         fill: d.Color) -> None:
    p.fill(box, fill, radius=6)
    y, h = box.top / p.sy, box.height / p.sy
    color = d.TEXT if row.kind == "payment" else d.AMBER_TEXT
    p.text(row.time, p.box(24, y, 70, h), size=22, align="left", name="row_time")
    p.text(f"#{row.seq}", p.box(96, y, 96, h), size=22, color=d.MUTED, align="left",
           name="row_seq")
    if kind:
        p.text(tr(lang, f"kind_{row.kind}"), p.box(194, y, 84, h), size=22, color=color,
               align="left", name="row_kind")
    card = row.card if row.kind == "payment" else f"← #{row.ref_seq}"
    p.text(card, p.box(282 if kind else 194, y, 230 if kind else 300, h), size=20,
           color=d.MUTED, align="left", name="row_card")
    amount = won(row.amount, lang) if row.kind == "payment" else f"-{won(row.amount, lang)}"
    if row.kind == "payment" and row.refunded:
        amount = f"{won(row.amount, lang)} → {won(row.remaining, lang)}"
    p.text(amount, p.box(514, y, 262, h), size=24, bold=True, color=color, align="right",
           name="row_amount")


def _refund_list(p: Painter, m: KioskModel, s: Statics) -> None:
    lang = m.language
    rows = m.day.refundable
    p.text(tr(lang, "refund_pick"), p.box(16, 50, 768, 42), size=26, bold=True, align="left",
           name="refund_pick")
    first, last = _pager(p, m, len(rows))
    if not rows:
        p.text(tr(lang, "refund_none"), p.box(16, 180, 768, 60), size=28, color=d.MUTED,
               name="refund_none")
    for i, row in enumerate(rows[first:last]):
        box = p.box(16, 96 + 52 * i, 768, 46)
        _row(p, box, row, lang, kind=False, fill=d.BUTTON)
        p.region(f"row:{row.seq}", box)


def _today(p: Painter, m: KioskModel, s: Statics) -> None:
    lang = m.language
    day = m.day
    p.text(tr(lang, "today_title"), p.box(16, 50, 500 if m.clerk else 768, 42), size=26,
           bold=True, align="left", name="today_title")
    if m.clerk is not None:
        p.button("signout", p.box(528, 50, 256, 40), tr(lang, "sign_out", name=m.clerk.name),
                 size=20)
    p.button("close:day", p.box(176, 416, 144, 56), tr(lang, "close_day"), fill=d.AMBER,
             size=24)
    first, last = _pager(p, m, len(day.rows))
    if not day.rows:
        p.text(tr(lang, "today_none"), p.box(16, 180, 768, 60), size=28, color=d.MUTED,
               name="today_none")
    for i, row in enumerate(day.rows[first:last]):
        box = p.box(16, 96 + 46 * i, 768, 42)
        _row(p, box, row, lang, kind=True, fill=d.PANEL)
        if row.kind == "payment" and not row.refunded:  # a cash receipt for it, on touch
            p.region(f"row:{row.seq}", box)
    p.fill(p.box(16, 372, 768, 40), d.PANEL, radius=6)
    p.text(tr(lang, "today_totals", count=f"{day.count:,}", paid=won(day.paid, lang),
              refunded=won(day.refunded, lang), net=won(day.net, lang)),
           p.box(24, 372, 752, 40), size=22, bold=True, min_size=13, name="today_totals")


def _z_report(p: Painter, m: KioskModel, s: Statics) -> None:
    """The Z report as recorded, by page: the lines the receipt printer prints too."""
    lang = m.language
    if m.closing is None:
        p.text(tr(lang, "z_making"), p.box(30, 180, 740, 80), size=44, bold=True,
               name="z_making")
        return
    names = {c.id: c.name for c in m.desk.clerks} if m.desk is not None else {}
    lines = text_lines(m.closing, lang, names)
    pages = max(1, -(-len(lines) // Z_ROWS))
    page = min(m.page, pages - 1)
    for i, line in enumerate(lines[page * Z_ROWS:(page + 1) * Z_ROWS]):
        p.text(line, p.box(24, 52 + 44 * i, 752, 40), size=24, bold=i == 0 and page == 0,
               align="left", min_size=12, name="z_line")
    if m.receipt_fault is not None:  # the report is recorded; only its paper is missing
        p.text(tr(lang, m.receipt_fault.key, seq=m.receipt_fault.seq),
               p.box(172, 416, 318, 56), size=18, color=d.AMBER_TEXT, max_lines=2,
               min_size=10, name="receipt_fault")
    else:
        p.text(tr(lang, "page", page=page + 1, pages=pages), p.box(330, 416, 140, 56),
               size=24, color=d.MUTED, name="page")
    p.button("back", p.box(16, 416, 150, 56), tr(lang, "back"), size=26)
    p.button("page:prev", p.box(500, 416, 134, 56), tr(lang, "prev"), size=26,
             enabled=page > 0)
    p.button("page:next", p.box(646, 416, 138, 56), tr(lang, "next"), size=26,
             enabled=page < pages - 1)


def _cash_receipt(p: Painter, m: KioskModel, s: Statics) -> None:
    """The cash-receipt form (kiosk_ui.cash_receipt): the payment, the number as typed (the
    masked form once recorded), the purpose, then OK; the digit keys on the right."""
    lang = m.language
    form = m.cash
    if form is None:  # the model never shows it without its form
        _keypad(p, m, s)
        return
    p.text(tr(lang, "cr_title", seq=form.seq, amount=won(form.amount, lang)),
           p.box(28, 52, 352, 46), size=22, bold=True, max_lines=2, min_size=12,
           name="cr_title")
    display = p.box(28, 102, 352, 64)
    p.fill(display, d.PANEL, radius=10)
    shown = form.done or form.digits
    p.text(shown or tr(lang, "cr_hint"), display.inflate(-p.px(16), -p.px(8)), size=34,
           bold=bool(shown), color=d.TEXT if shown else d.DIM, min_size=14, name="cr_number")
    for i, (button, key) in enumerate((("cr:income", "cr_income"),
                                        ("cr:expense", "cr_expense"))):
        picked = form.purpose == ("income_deduction" if i == 0 else "expense_proof")
        p.button(button, p.box(28 + 180 * i, 174, 172, 56), tr(lang, key), size=20,
                 fill=d.BLUE if picked else d.BUTTON, enabled=not form.done)
    note = ("cr_done" if form.done else form.message or
            ("cr_busy" if form.busy else ""))
    if note:
        p.text(tr(lang, note), p.box(28, 234, 352, 40), size=18,
               color=d.GREEN if form.done else d.AMBER_TEXT, max_lines=2, min_size=11,
               name="cr_note")
    if form.done:
        p.button("ok", p.box(28, 282, 352, 186), tr(lang, "ok"), fill=d.GREEN, size=40)
    else:
        p.button("cr:go", p.box(28, 282, 352, 100), tr(lang, "cr_go"), fill=d.BLUE, size=34,
                 enabled=bool(form.digits) and not form.busy)
        p.button("cancel", p.box(28, 392, 352, 76), tr(lang, "cancel"), size=30)
    _digit_keys(p, lang)
