"""The out-of-service screen: the rider's words on top, the technician's cause below.

Shown while :mod:`kiosk_ui.service` finds a cause that stops the terminal approving. The
rider is told in both languages, whatever the screen language, to use another door or
reader, and nothing on it asks for a card or a code. Below, for the technician, each cause
in the screen language and its detail (a path, an error, a figure) as the terminal gave it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiosk_ui import draw as d
from kiosk_ui.draw import Painter
from kiosk_ui.i18n import Language, tr
from kiosk_ui.model import KioskModel

if TYPE_CHECKING:
    from kiosk_ui.screens import Statics

#: where the rider's part ends and the technician's begins (design pixels)
RIDER_BOTTOM = 296


def draw_out_of_service(p: Painter, m: KioskModel, s: Statics) -> None:
    lang = m.language
    other: Language = "en" if lang == "ko" else "ko"
    p.fill(p.box(0, 44, 800, RIDER_BOTTOM - 44), d.OUT_OF_SERVICE)
    first = p.text(tr(lang, "out_of_service"), p.box(110, 66, 580, 120), size=50, bold=True,
                   max_lines=2, min_size=26, name=f"oos_{lang}")
    p.mark("bang", first, whole=True)
    p.text(tr(other, "out_of_service"), p.box(40, 196, 720, 84), size=32, max_lines=2,
           min_size=18, name=f"oos_{other}")
    blocked = m.sync.blocked
    if not blocked:  # the model shows this screen only with a cause; nothing to explain
        return
    p.text(tr(lang, "for_technician"), p.box(30, 306, 740, 30), size=18, color=d.MUTED,
           align="left", name="for_technician")
    p.text(" · ".join(tr(lang, f"cause_{b.cause.value}") for b in blocked),
           p.box(30, 338, 740, 44), size=28, bold=True, align="left", max_lines=1,
           min_size=16, name="oos_cause")
    details = " / ".join(b.detail for b in blocked if b.detail)
    if details:
        p.text(details, p.box(30, 386, 740, 86), size=18, color=d.MUTED, align="left",
               valign="top", max_lines=3, min_size=12, name="oos_detail")
