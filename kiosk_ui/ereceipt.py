"""The e-receipt on the till's screen: an approved payment's ``LPR1:`` code as a QR that the
customer's phone keeps (:mod:`terminal.receipt`), from the result screen's E-receipt button.

The code is the signed ledger entry itself, about 540 characters for a card payment with its
signed receipt facts: QR version 18 at level M, 89 modules and a 4-module quiet zone each
side, so the 420 design pixels give 4 whole pixels a module on the 800×480 display (a 7"
panel: about 0.75 mm a module, a 7 cm code), which a phone camera reads at arm's length.
Up to version 20 (97 modules) still gets 4 pixels a module; a two-pocket split payment with
a 7-digit balance is version 19.
"""

from __future__ import annotations

from functools import lru_cache

import pygame
import segno

from kiosk_ui import draw as d
from kiosk_ui.draw import Painter
from kiosk_ui.i18n import tr, won
from kiosk_ui.model import KioskModel
from kiosk_ui.qr import Matrix, qr_surface

#: the QR's square on screen, in design pixels (as the sale's QR on WAIT_QR)
QR_BOX = (16, 52, 420, 420)


@lru_cache(maxsize=4)
def e_receipt_matrix(payload: str) -> Matrix:
    """The modules of the e-receipt's QR: a full QR symbol (zbar and phones skip Micro QR),
    level M, byte mode (base64url's lower case needs it), as ``localpay receipt show --qr``.
    Cached: the screen redraws often and encoding takes ~20 ms."""
    return tuple(tuple(row) for row in segno.make_qr(payload, error="m", mode="byte").matrix)


def draw_e_receipt(p: Painter, m: KioskModel, s: object) -> None:
    """The E_RECEIPT screen: the QR on the left, what it is and Back on the right."""
    lang = m.language
    view = m.result
    if view is None or not view.e_receipt:  # the model never shows it without one
        return
    area = p.box(*QR_BOX)
    side = min(area.width, area.height)
    code = _surface(view.e_receipt, side)
    p.surface.blit(code, code.get_rect(center=area.center))
    p.text(tr(lang, "e_receipt_title"), p.box(448, 56, 336, 50), size=30, bold=True,
           name="e_receipt_title")
    p.text(won(view.amount, lang), p.box(448, 110, 336, 70), size=48, bold=True,
           name="amount")
    if view.seq is not None:
        p.text(tr(lang, "e_receipt_entry", seq=view.seq), p.box(448, 184, 336, 36), size=22,
               color=d.MUTED, name="e_receipt_entry")
    p.text(tr(lang, "e_receipt_hint"), p.box(448, 226, 336, 120), size=24, max_lines=3,
           min_size=14, name="e_receipt_hint")
    p.button("back", p.box(516, 372, 200, 64), tr(lang, "back"), size=30)


@lru_cache(maxsize=4)
def _surface(payload: str, side: int) -> pygame.Surface:
    return qr_surface(e_receipt_matrix(payload), side)
