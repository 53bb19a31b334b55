"""Every screen state renders at 800×480 and 1280×720, in Korean and English, with no text
outside its box (the painted rectangles of each line are measured against the layout), no
glyph missing, and touch targets that stay on screen and do not overlap."""

from __future__ import annotations

from pathlib import Path

import pygame
import pygame.freetype
import pytest

from kiosk_ui.draw import Painter
from kiosk_ui.fonts import Fonts, find_font, load_fonts, missing_glyphs
from kiosk_ui.i18n import LANGUAGES, STRINGS, all_texts, reason_text, tr
from kiosk_ui.model import KioskModel, ResultView, Screen
from kiosk_ui.shots import ROLES, catalog, longest_reason, till_statics
from localpay.errors import ConfigError
from terminal.risk import Reason

SIZES = [(800, 480), (1280, 720)]


@pytest.fixture(scope="module")
def fonts() -> Fonts:
    return load_fonts()


def _render_all(fonts: Fonts, size: tuple[int, int]):
    from kiosk_ui.screens import render

    statics = till_statics()
    surface = pygame.Surface(size)
    painter = Painter(surface, fonts)
    for role in ROLES:
        for language in LANGUAGES:
            for name, model in catalog(role, language, every_reason=True):
                render(painter, model, statics)
                yield f"{role}/{name}/{language}", model, painter


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_no_text_leaves_its_box(fonts: Fonts, size: tuple[int, int]) -> None:
    screens = 0
    problems = []
    for where, _model, painter in _render_all(fonts, size):
        screens += 1
        assert painter.records, f"{where}: nothing drawn"
        for rec in painter.records:
            if not rec.text:
                continue
            if not rec.rects:
                problems.append(f"{where} {rec.name}: {rec.text!r} drew nothing")
            if not rec.inside():
                outside = [r for r in rec.rects if not rec.box.contains(r)]
                problems.append(f"{where} {rec.name}: {rec.text!r} at {outside} outside "
                                f"{rec.box}")
            if not rec.fits:
                problems.append(f"{where} {rec.name}: {rec.text!r} does not fit at "
                                f"{rec.size}px")
            if rec.size < rec.min_size:
                problems.append(f"{where} {rec.name}: {rec.size}px below {rec.min_size}px")
    # 2 roles x 2 languages x (every reason + the other states)
    assert screens >= 2 * 2 * len(Reason)
    assert not problems, "\n".join(problems[:30])


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_buttons_on_screen_and_apart(fonts: Fonts, size: tuple[int, int]) -> None:
    screen = pygame.Rect((0, 0), size)
    for where, _model, painter in _render_all(fonts, size):
        rects = painter.buttons
        for ident, rect in rects:
            assert screen.contains(rect), f"{where}: {ident} {rect} off screen"
            # a finger is ~9 mm: at least 34 px on the 7-inch 800x480 panel
            assert min(rect.size) >= 30 * min(size[0] / 800, size[1] / 480), (where, ident)
        for i, (a, ra) in enumerate(rects):
            for b, rb in rects[i + 1:]:
                assert not ra.colliderect(rb), f"{where}: {a} {ra} overlaps {b} {rb}"


def test_decline_text_is_the_reason_in_the_screen_language(fonts: Fonts) -> None:
    from kiosk_ui.screens import Statics, render

    painter = Painter(pygame.Surface((800, 480)), fonts)
    for language in LANGUAGES:
        reason = longest_reason(language)
        model = KioskModel(role="validator", language=language, screen=Screen.RESULT,
                           result=ResultView("declined", "tap", 1500, reason=reason))
        render(painter, model, Statics())
        drawn = {r.name: r.text for r in painter.records}
        assert drawn["reason"] == reason_text(reason, language)
        assert drawn["headline"] == tr(language, "declined")
    assert reason_text(Reason.DENY_LISTED, "ko") == Reason.DENY_LISTED.message_ko


def test_points_line_only_when_known(fonts: Fonts) -> None:
    from kiosk_ui.screens import Statics, render

    painter = Painter(pygame.Surface((800, 480)), fonts)
    base = dict(role="validator", language="en", screen=Screen.RESULT)
    render(painter, KioskModel(**base, result=ResultView("approved", "tap", 1500,  # type: ignore[arg-type]
                                                          balance=100)), Statics())
    names = {r.name for r in painter.records}
    assert "balance" in names and "points_now" not in names and "points_week" not in names
    render(painter, KioskModel(**base, result=ResultView("approved", "tap", 1500,  # type: ignore[arg-type]
                                                          points_now=1500, points_week=2900)),
           Statics())
    drawn = {r.name: r.text for r in painter.records}
    assert drawn["points_now"] == "+1,500 points"
    assert drawn["points_week"] == "2,900 points this week"
    assert "balance" not in drawn


def test_every_text_has_glyphs_in_the_font(fonts: Fonts) -> None:
    for face in (fonts.regular, fonts.bold):
        for language in LANGUAGES:
            assert missing_glyphs(face, all_texts(language)) == ""


def test_the_glyph_check_catches_a_font_without_hangul() -> None:
    # pygame's own default font has no Hangul: the check must name the missing characters
    default = pygame.freetype.Font(None)
    lacking = missing_glyphs(default, [tr("ko", "tap_card")])
    assert set(lacking) == set("카드를대주세요")
    assert missing_glyphs(default, ["Tap card"]) == ""


def test_missing_font_is_a_clear_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fonts-nanum"):
        find_font([tmp_path / "NoSuchFont.ttf"])
    assert find_font([tmp_path / "nope.ttf", Path("/usr/share/fonts/truetype/nanum/"
                                                    "NanumGothic.ttf")]).name == \
        "NanumGothic.ttf"


def test_a_font_lacking_glyphs_is_refused(tmp_path: Path) -> None:
    # DejaVu (pygame's bundled freesansbold) has Latin only: load_fonts must refuse it
    latin = Path(pygame.__file__).parent / "freesansbold.ttf"
    with pytest.raises(ConfigError, match="no glyph for"):
        load_fonts(latin)


def test_every_string_has_both_languages() -> None:
    for key, (en, ko) in STRINGS.items():
        assert en and ko, key
        assert en.count("{") == ko.count("{"), key


def test_the_measurement_sees_overflow(fonts: Fonts) -> None:
    # the same checks as above, on a box too small for its text at the floor size
    painter = Painter(pygame.Surface((800, 480)), fonts)
    painter.begin()
    box = pygame.Rect(100, 100, 60, 20)
    rec = painter.text(reason_text(longest_reason("ko"), "ko"), box, size=40, min_size=30,
                       max_lines=1)
    assert not rec.fits
    assert not rec.inside()
    assert rec.size == painter.px(30)
    # and a box that is large enough keeps the requested size
    ok = painter.text("1,500원", pygame.Rect(0, 0, 400, 120), size=60)
    assert ok.fits and ok.inside() and ok.size == 60
