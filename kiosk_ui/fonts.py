"""The Korean font, found at run time.

pygame's default font draws Hangul as empty boxes and says nothing, so the kiosk refuses to
start without a font that has every glyph it will show. Debian's ``fonts-nanum`` provides
NanumGothic; ``LOCALPAY_UI_FONT`` may name another TrueType file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pygame
import pygame.freetype

from kiosk_ui.i18n import LANGUAGES, all_texts
from localpay.errors import ConfigError

log = logging.getLogger(__name__)

#: Where Debian's fonts-nanum puts its files, tried after fontconfig's own answer.
CANDIDATES: tuple[Path, ...] = (
    Path("/usr/share/fonts/truetype/nanum/NanumGothic.ttf"),
    Path("/usr/share/fonts/truetype/nanum/NanumBarunGothic.ttf"),
    Path("/usr/share/fonts/truetype/nanum/NanumSquareR.ttf"),
)

_INSTALL_HINT = "install Debian's fonts-nanum (apt-get install fonts-nanum; `make` does it)"


@dataclass(frozen=True)
class Fonts:
    """The regular and bold faces, as freetype fonts sized per call."""

    regular: pygame.freetype.Font
    bold: pygame.freetype.Font
    regular_path: Path
    bold_path: Path

    def face(self, bold: bool) -> pygame.freetype.Font:
        return self.bold if bold else self.regular


def find_font(candidates: Sequence[Path] | None = None) -> Path:
    """The path of a Korean-capable TrueType font, or :class:`ConfigError` naming the fix.

    With ``candidates`` given, only those paths are tried (no environment, no fontconfig).
    """
    if candidates is None:
        tried: list[Path] = []
        env = os.environ.get("LOCALPAY_UI_FONT")
        if env:
            if not Path(env).is_file():
                raise ConfigError(f"LOCALPAY_UI_FONT names {env}, which is not a font file")
            return Path(env)
        matched = pygame.font.match_font("nanumgothic")
        if matched:
            tried.append(Path(matched))
        tried.extend(CANDIDATES)
    else:
        tried = list(candidates)
    for path in tried:
        if path.is_file():
            return path
    where = ", ".join(str(p) for p in tried) or "nowhere"
    raise ConfigError(f"no Korean font found for the kiosk screens (looked at {where}): "
                      f"{_INSTALL_HINT}")


def _bold_sibling(path: Path) -> Path:
    """NanumGothic.ttf -> NanumGothicBold.ttf when it exists, else the same file."""
    sibling = path.with_name(f"{path.stem}Bold{path.suffix}")
    return sibling if sibling.is_file() else path


def missing_glyphs(font: pygame.freetype.Font, texts: Iterable[str]) -> str:
    """The characters of ``texts`` that ``font`` has no glyph for (freetype gives None)."""
    chars = sorted({c for t in texts for c in t if not c.isspace()})
    if not chars:
        return ""
    metrics = font.get_metrics("".join(chars), 16)
    return "".join(c for c, m in zip(chars, metrics, strict=True) if m is None)


def load_fonts(path: Path | None = None) -> Fonts:
    """Open the font (found with :func:`find_font` unless given) and check every glyph."""
    if not pygame.freetype.get_init():
        pygame.freetype.init()
    regular_path = path or find_font()
    bold_path = _bold_sibling(regular_path)
    try:
        regular = pygame.freetype.Font(str(regular_path))
        bold = pygame.freetype.Font(str(bold_path))
    except (OSError, pygame.error) as err:
        raise ConfigError(f"font {regular_path} cannot be opened: {err}") from err
    if bold_path == regular_path:
        bold.strong = True
    texts = [t for lang in LANGUAGES for t in all_texts(lang)]
    texts.append("0123456789,.:#+-/원 won")
    for face, where in ((regular, regular_path), (bold, bold_path)):
        lacking = missing_glyphs(face, texts)
        if lacking:
            raise ConfigError(f"font {where} has no glyph for {lacking!r}: {_INSTALL_HINT}, "
                              "or set LOCALPAY_UI_FONT to a font with Hangul")
    log.debug("kiosk fonts: %s, %s", regular_path, bold_path)
    return Fonts(regular, bold, regular_path, bold_path)
