"""Drawing primitives: text fitted into boxes, buttons, and what was drawn where.

Every text goes into a layout box. It is wrapped at spaces (Korean separates words with
spaces too) and shrunk step by step down to a floor until it fits; whatever it ends up
covering is recorded as a :class:`TextRecord`, so tests can hold the real painted
rectangles against their boxes. Fitting and rendering are cached: the same screen redrawn
next frame costs blits only.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

import pygame
import pygame.freetype

from kiosk_ui.fonts import Fonts

log = logging.getLogger(__name__)

Color = tuple[int, int, int]
Align = Literal["left", "center", "right"]
Mark = Literal["check", "cross", "bang"]
VAlign = Literal["top", "middle", "bottom"]

# Colours: dark background for contrast in a bright bus; the three outcomes are told apart
# by hue, by their words and by a symbol (Painter.mark), never by hue alone. Text on the
# outcome colours (TEXT) reaches WCAG AA, 4.5:1: GREEN 5.4, RED 5.9, AMBER 5.2, BLUE 4.7
# (tests/test_kiosk_truth.py measures it from the pixels). The earlier brighter fills gave
# 3.0, 4.4 and 2.9: they stay as the *_TEXT colours, for words on the dark background.
BG: Color = (15, 23, 42)
PANEL: Color = (30, 41, 59)
BUTTON: Color = (51, 65, 85)
BUTTON_OFF: Color = (38, 48, 64)
TEXT: Color = (241, 245, 249)
MUTED: Color = (148, 163, 184)
DIM: Color = (100, 116, 139)
GREEN: Color = (21, 115, 56)
RED: Color = (185, 28, 28)
AMBER: Color = (168, 76, 8)
AMBER_TEXT: Color = (217, 119, 6)
RED_TEXT: Color = (248, 113, 113)
#: the out-of-service screen's panel: neither an outcome's hue nor the idle background
OUT_OF_SERVICE: Color = (71, 85, 105)
BLUE: Color = (37, 99, 235)
ORANGE: Color = (234, 88, 12)
ONLINE: Color = (34, 197, 94)
WHITE: Color = (255, 255, 255)
BLACK: Color = (0, 0, 0)

_CACHE_SIZE = 1024


@dataclass(frozen=True)
class TextRecord:
    """One text as drawn: its box, the rectangles its lines covered, the size used."""

    name: str
    text: str
    box: pygame.Rect
    rects: tuple[pygame.Rect, ...]
    size: int
    min_size: int
    fits: bool

    def inside(self) -> bool:
        return all(self.box.contains(r) for r in self.rects)


@dataclass(frozen=True)
class Fitted:
    size: int
    lines: tuple[str, ...]
    fits: bool


class _Lru(OrderedDict[tuple[object, ...], object]):
    def get_or(self, key: tuple[object, ...]) -> object | None:
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key: tuple[object, ...], value: object) -> None:
        self[key] = value
        if len(self) > _CACHE_SIZE:
            self.popitem(last=False)


@dataclass
class Painter:
    """Draws onto one surface in one frame; ``scale`` turns 800×480 design pixels into ours."""

    surface: pygame.Surface
    fonts: Fonts
    fit_cache: _Lru = field(default_factory=_Lru)
    render_cache: _Lru = field(default_factory=_Lru)
    records: list[TextRecord] = field(default_factory=list)
    buttons: list[tuple[str, pygame.Rect]] = field(default_factory=list)
    #: the symbols drawn (kind, square), for the tests to find them
    marks: list[tuple[Mark, pygame.Rect]] = field(default_factory=list)

    @property
    def width(self) -> int:
        return self.surface.get_width()

    @property
    def height(self) -> int:
        return self.surface.get_height()

    @property
    def sx(self) -> float:
        return self.width / 800

    @property
    def sy(self) -> float:
        return self.height / 480

    @property
    def scale(self) -> float:
        """Text scale: the smaller of the two axes, so text never outgrows its box's height."""
        return min(self.sx, self.sy)

    def begin(self, surface: pygame.Surface | None = None) -> None:
        """Start a new frame (optionally on another surface of any size)."""
        if surface is not None:
            self.surface = surface
        self.records = []
        self.buttons = []
        self.marks = []

    def box(self, x: float, y: float, w: float, h: float) -> pygame.Rect:
        """A rectangle given in 800×480 design pixels, scaled to the surface."""
        left, top = round(x * self.sx), round(y * self.sy)
        return pygame.Rect(left, top, round((x + w) * self.sx) - left,
                           round((y + h) * self.sy) - top)

    def px(self, design: float) -> int:
        return max(1, round(design * self.scale))

    # -- text ------------------------------------------------------------------------------

    def _width(self, text: str, size: int, bold: bool) -> int:
        return int(self.fonts.face(bold).get_rect(text, size=size).width)

    def _wrap(self, text: str, width: int, size: int, bold: bool) -> list[str]:
        lines: list[str] = []
        for paragraph in text.split("\n"):
            current = ""
            for word in paragraph.split(" "):
                candidate = f"{current} {word}" if current else word
                if self._width(candidate, size, bold) <= width:
                    current = candidate
                    continue
                if current:
                    lines.append(current)
                # a word wider than the box is broken between characters
                current = ""
                for ch in word:
                    if current and self._width(current + ch, size, bold) > width:
                        lines.append(current)
                        current = ""
                    current += ch
            lines.append(current)
        return lines

    def fit(self, text: str, width: int, height: int, size: int, min_size: int,
            bold: bool, max_lines: int) -> Fitted:
        """The largest size from ``size`` down to ``min_size`` at which ``text`` fits."""
        key = (text, width, height, size, min_size, bold, max_lines)
        cached = self.fit_cache.get_or(key)
        if isinstance(cached, Fitted):
            return cached
        face = self.fonts.face(bold)
        s = size
        while True:
            lines = self._wrap(text, width, s, bold)
            tall = len(lines) * face.get_sized_height(s)
            fits = (len(lines) <= max_lines and tall <= height
                    and all(self._width(line, s, bold) <= width for line in lines))
            if fits or s <= min_size:
                break
            s = max(min_size, int(s * 0.92))
        result = Fitted(s, tuple(lines[:max(max_lines, 1)] if fits else lines), fits)
        if not fits:
            log.warning("text does not fit its box at %d px: %r", s, text)
        self.fit_cache.put(key, result)
        return result

    def _render(self, line: str, size: int, bold: bool,
                color: Color) -> tuple[pygame.Surface, pygame.Rect]:
        key = (line, size, bold, color)
        cached = self.render_cache.get_or(key)
        if cached is not None:
            return cached  # type: ignore[return-value]
        surface, rect = self.fonts.face(bold).render(line, color, size=size)
        self.render_cache.put(key, (surface, rect))
        return surface, rect

    def text(self, text: str, box: pygame.Rect, *, size: float, color: Color = TEXT,
             bold: bool = False, align: Align = "center", valign: VAlign = "middle",
             max_lines: int = 1, min_size: float | None = None, name: str = "") -> TextRecord:
        """Draw ``text`` inside ``box``; ``size`` and ``min_size`` are design pixels."""
        want = self.px(size)
        floor = self.px(min_size if min_size is not None else max(12.0, size * 0.6))
        fitted = self.fit(text, box.width, box.height, want, min(floor, want), bold, max_lines)
        face = self.fonts.face(bold)
        line_h = face.get_sized_height(fitted.size)
        ascender = face.get_sized_ascender(fitted.size)
        block = line_h * len(fitted.lines)
        if valign == "top":
            top = box.top
        elif valign == "bottom":
            top = box.bottom - block
        else:
            top = box.top + (box.height - block) // 2
        rects = []
        for i, line in enumerate(fitted.lines):
            if not line:
                continue
            surface, ink = self._render(line, fitted.size, bold, color)
            w = surface.get_width()
            if align == "left":
                x = box.left
            elif align == "right":
                x = box.right - w
            else:
                x = box.left + (box.width - w) // 2
            baseline = top + i * line_h + ascender
            dest = pygame.Rect(x, baseline - ink.y, w, surface.get_height())
            self.surface.blit(surface, dest)
            rects.append(dest)
        record = TextRecord(name or text[:24], text, pygame.Rect(box), tuple(rects),
                            fitted.size, min(floor, want), fitted.fits)
        self.records.append(record)
        return record

    # -- shapes ----------------------------------------------------------------------------

    def fill(self, rect: pygame.Rect, color: Color, radius: float = 0) -> None:
        pygame.draw.rect(self.surface, color, rect, border_radius=self.px(radius) if radius else 0)

    def button(self, ident: str, rect: pygame.Rect, label: str, *, fill: Color = BUTTON,
               color: Color = TEXT, size: float = 26, enabled: bool = True,
               bold: bool = True) -> None:
        """A touch target: drawn, and remembered for hit-testing when enabled."""
        self.fill(rect, fill if enabled else BUTTON_OFF, radius=10)
        pad = self.px(8)
        self.text(label, rect.inflate(-2 * pad, -pad), size=size, bold=bold,
                  color=color if enabled else DIM, name=f"button:{ident}")
        if enabled:
            self.buttons.append((ident, rect))

    def region(self, ident: str, rect: pygame.Rect) -> None:
        """A touch target drawn by the caller (a list row)."""
        self.buttons.append((ident, rect))

    def hit(self, pos: tuple[int, int]) -> str | None:
        """The button under ``pos`` (the last one drawn wins, as it is on top)."""
        for ident, rect in reversed(self.buttons):
            if rect.collidepoint(pos):
                return ident
        return None

    # -- symbols ---------------------------------------------------------------------------

    def mark(self, kind: Mark, beside: TextRecord, color: Color = TEXT, *,
             whole: bool = False) -> pygame.Rect:
        """✓, ✗ or ! to the left of a drawn text, as tall as its first line (``whole``: as
        tall as all its lines).

        Drawn as shapes: NanumGothic has no ✓ or ✗ (freetype gives no glyph, and pygame
        would draw an empty box), and a shape needs no font to be there at all.
        """
        first = beside.rects[0]
        top = min(r.top for r in beside.rects)
        bottom = max(r.bottom for r in beside.rects)
        side = max(8, round((bottom - top if whole else first.height) * 0.8))
        square = pygame.Rect(0, 0, side, side)
        square.right = min(r.left for r in beside.rects) - max(4, side // 4)
        square.centery = (top + bottom) // 2
        draw_mark(self.surface, kind, square, color)
        self.marks.append((kind, square))
        return square


def draw_mark(surface: pygame.Surface, kind: Mark, square: pygame.Rect, color: Color) -> None:
    """The symbol ``kind`` filling ``square``: strokes a seventh of its side wide."""
    s = square.width
    width = max(2, round(s / 7))

    def at(fx: float, fy: float) -> tuple[int, int]:
        return square.left + round(fx * s), square.top + round(fy * s)

    if kind == "check":
        pygame.draw.lines(surface, color, False, [at(0.1, 0.55), at(0.4, 0.82), at(0.92, 0.18)],
                          width)
        for point in (at(0.1, 0.55), at(0.4, 0.82), at(0.92, 0.18)):
            pygame.draw.circle(surface, color, point, width // 2)
    elif kind == "cross":
        for a, b in ((at(0.15, 0.15), at(0.85, 0.85)), (at(0.85, 0.15), at(0.15, 0.85))):
            pygame.draw.line(surface, color, a, b, width + 1)
            for point in (a, b):
                pygame.draw.circle(surface, color, point, (width + 1) // 2)
    else:
        bar = pygame.Rect(0, 0, max(2, round(s * 0.22)), round(s * 0.54))
        bar.midtop = at(0.5, 0.04)
        pygame.draw.rect(surface, color, bar, border_radius=bar.width // 3)
        pygame.draw.circle(surface, color, at(0.5, 0.84), max(2, round(s * 0.11)))
