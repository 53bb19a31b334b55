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

from kiosk_ui import draw as d
from kiosk_ui.draw import Painter
from kiosk_ui.i18n import Language, reason_text, rider_text, tr, won
from kiosk_ui.model import PAGE_ROWS, KioskModel, PaymentRow, ResultView, Screen
from kiosk_ui.qr import Matrix, qr_matrix, qr_surface

OUTCOME_COLOR = {"approved": d.GREEN, "declined": d.RED, "already_paid": d.AMBER,
                 "claim_pending": d.BLUE}
#: a darker green than the approved screen's, so the category reads as a label on it
RIDER_PILL: d.Color = (21, 128, 61)
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
    }[m.screen]
    body(p, m, statics)


# -- status bar --------------------------------------------------------------------------


def status_text(m: KioskModel) -> tuple[str, d.Color]:
    lang, s = m.language, m.sync
    if m.fault or not s.ledger_ok:
        return tr(lang, "ledger_fault"), d.RED
    parts = [tr(lang, "online" if s.online else "offline")]
    parts.append(tr(lang, "waiting_sync", n=f"{s.waiting:,}") if s.waiting
                 else tr(lang, "all_synced"))
    if not s.reader_ok:
        parts.append(tr(lang, "reader_fault"))
    if s.clock == "unknown":
        parts.append(tr(lang, "clock_unknown"))
    color = d.ONLINE if s.online and s.reader_ok and s.clock != "unknown" else d.ORANGE
    return " · ".join(parts), color


def _status_bar(p: Painter, m: KioskModel) -> None:
    lang = m.language
    p.fill(p.box(0, 0, 800, STATUS_H), d.PANEL)
    text, color = status_text(m)
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
                 enabled=m.screen == Screen.KEYPAD)
        p.button("menu:today", p.box(584, 5, 108, 34), tr(lang, "menu_today"), size=18,
                 enabled=m.screen == Screen.KEYPAD)
    pygame.draw.circle(p.surface, color, p.box(dot_x, 22, 0, 0).topleft, p.px(7))
    p.text(text, status_box, size=18, color=color, align="left", name="status")
    p.button("lang", p.box(698, 5, 96, 34), tr(lang, "lang_button"), size=17, bold=False)


# -- validator and shared screens -------------------------------------------------------


def _idle(p: Painter, m: KioskModel, s: Statics) -> None:
    lang = m.language
    other: Language = "en" if lang == "ko" else "ko"
    _contactless_mark(p, p.box(340, 62, 120, 70))
    p.text(tr(lang, "tap_card"), p.box(30, 140, 740, 110), size=72, bold=True, name="tap_card")
    p.text(tr(other, "tap_card"), p.box(30, 250, 740, 60), size=38, color=d.MUTED,
           name="tap_card_other")
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
    p.text(tr(lang, headline), p.box(30, 54, 740, 76), size=56, bold=True, max_lines=2,
           min_size=28, name="headline")
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
        for i, (name, text) in enumerate(lines[:3]):
            p.text(text, p.box(24, 312 + 54 * i, 540, 48), size=30, align="left", name=name)
        # under a claim's prompt the button gives the claim up
        label = tr(lang, "cancel" if view.outcome == "claim_pending" else "ok")
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
            p.text(tr(lang, m.notice), p.box(156, 206, 224, 58), size=20, color=d.AMBER,
                   max_lines=2, min_size=14, name="notice")
        p.button("pay:card", p.box(28, 276, 170, 150), tr(lang, "pay_card"), fill=d.BLUE,
                 size=44, enabled=m.amount > 0)
        p.button("pay:qr", p.box(210, 276, 170, 150), tr(lang, "pay_qr"), fill=d.GREEN,
                 size=44, enabled=m.amount > 0)
        if m.fault:
            p.text(tr(lang, "internal_error"), p.box(28, 436, 352, 36), size=18,
                   color=d.RED, name="fault")
    for r, row in enumerate(_KEYS):
        for c, key in enumerate(row):
            box = p.box(404 + c * 128, 56 + r * 104, 118, 94)
            if key == "del":
                p.button("del", box, tr(lang, "delete"), size=34)
            else:
                p.button(f"digit:{key}", box, key, size=44)


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
    made = s.qr(m.pending, m.sale_ref, side)
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
    p.text(tr(lang, "qr_hint"), p.box(448, 188, 336, 90), size=30, bold=True, max_lines=2,
           min_size=18, name="qr_hint")
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
    color = d.TEXT if row.kind == "payment" else d.AMBER
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
    p.text(tr(lang, "today_title"), p.box(16, 50, 768, 42), size=26, bold=True, align="left",
           name="today_title")
    first, last = _pager(p, m, len(day.rows))
    if not day.rows:
        p.text(tr(lang, "today_none"), p.box(16, 180, 768, 60), size=28, color=d.MUTED,
               name="today_none")
    for i, row in enumerate(day.rows[first:last]):
        _row(p, p.box(16, 96 + 46 * i, 768, 42), row, lang, kind=True, fill=d.PANEL)
    p.fill(p.box(16, 372, 768, 40), d.PANEL, radius=6)
    p.text(tr(lang, "today_totals", count=f"{day.count:,}", paid=won(day.paid, lang),
              refunded=won(day.refunded, lang), net=won(day.net, lang)),
           p.box(24, 372, 752, 40), size=22, bold=True, min_size=13, name="today_totals")
