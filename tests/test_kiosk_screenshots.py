"""Screenshots of every screen state are written, and show the expected colours where the
layout puts them; the merchant QR code in a screenshot scans. Also the CLI commands."""

from __future__ import annotations

from pathlib import Path

import pygame
import pytest
from click.testing import CliRunner
from pyzbar.pyzbar import ZBarSymbol, decode

from kiosk_ui import draw, save_screenshots
from kiosk_ui.i18n import LANGUAGES
from kiosk_ui.shots import ROLES, catalog
from localpay.cli import cli
from terminal.qr.mpm import parse

SIZES = ((800, 480), (1280, 720))


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("shots")
    paths = save_screenshots(folder, SIZES)
    return {p.name: p for p in paths}


def _share(path: Path, box: tuple[float, float, float, float], color: draw.Color) -> float:
    """The share of pixels in ``box`` (fractions of the screen) within 8 of ``color``."""
    image = pygame.image.load(str(path))
    w, h = image.get_size()
    x0, y0, x1, y1 = (round(v) for v in (box[0] * w, box[1] * h, box[2] * w, box[3] * h))
    hits = total = 0
    for y in range(y0, y1, 3):
        for x in range(x0, x1, 3):
            c = image.get_at((x, y))
            total += 1
            if all(abs(c[i] - color[i]) <= 8 for i in range(3)):
                hits += 1
    return hits / total


def test_every_state_is_saved_in_both_languages_and_sizes(shots: dict[str, Path]) -> None:
    expected = {f"{role}-{name}-{lang}-{w}x{h}.png"
                for w, h in SIZES for role in ROLES for lang in LANGUAGES
                for name, _ in catalog(role, lang)}
    assert set(shots) == expected
    for name, path in shots.items():
        image = pygame.image.load(str(path))
        assert image.get_size() == tuple(int(v) for v in name.rsplit("-", 1)[1][:-4]
                                         .split("x"))


# (file stem, region as fractions of the screen, colour, least share of that colour)
REGIONS = [
    ("validator-approved", (0.02, 0.12, 0.98, 0.98), draw.GREEN, 0.6),
    ("validator-declined-deny_listed", (0.02, 0.12, 0.98, 0.98), draw.RED, 0.6),
    ("validator-already-paid", (0.02, 0.12, 0.98, 0.98), draw.AMBER, 0.6),
    ("validator-reading", (0.02, 0.12, 0.98, 0.98), draw.BLUE, 0.6),
    ("validator-idle", (0.0, 0.12, 1.0, 1.0), draw.BG, 0.7),
    ("validator-idle", (0.0, 0.0, 1.0, 0.08), draw.PANEL, 0.5),
    ("till-approved", (0.02, 0.12, 0.98, 0.6), draw.GREEN, 0.6),
    ("till-declined-deny_listed", (0.02, 0.12, 0.98, 0.6), draw.RED, 0.6),
    ("till-keypad-amount", (0.04, 0.6, 0.24, 0.85), draw.BLUE, 0.8),  # the Card button
    ("till-keypad-amount", (0.27, 0.6, 0.47, 0.85), draw.GREEN, 0.8),  # the QR button
    ("till-refund-amount", (0.04, 0.6, 0.47, 0.75), draw.AMBER, 0.8),  # Refund button
]


@pytest.mark.parametrize("stem, box, color, least", REGIONS,
                         ids=[f"{r[0]}-{i}" for i, r in enumerate(REGIONS)])
@pytest.mark.parametrize("size", SIZES, ids=["800x480", "1280x720"])
@pytest.mark.parametrize("lang", LANGUAGES)
def test_colours_where_the_layout_puts_them(shots: dict[str, Path], stem: str, box: tuple,
                                            color: draw.Color, least: float,
                                            size: tuple[int, int], lang: str) -> None:
    path = shots[f"{stem}-{lang}-{size[0]}x{size[1]}.png"]
    assert _share(path, box, color) >= least


def test_outcome_colours_do_not_leak(shots: dict[str, Path]) -> None:
    # a declined screen has no green and an approved one no red, anywhere
    declined = shots["validator-declined-deny_listed-en-800x480.png"]
    approved = shots["validator-approved-en-800x480.png"]
    full = (0.0, 0.0, 1.0, 1.0)
    assert _share(declined, full, draw.GREEN) == 0
    assert _share(approved, full, draw.RED) == 0
    assert _share(approved, full, draw.GREEN) > 0.6


def test_offline_indicator_is_orange_in_the_status_bar(shots: dict[str, Path]) -> None:
    offline = shots["validator-idle-ko-800x480.png"]
    online = shots["validator-idle-online-ko-800x480.png"]
    bar = (0.35, 0.035, 0.365, 0.058)  # the dot before the status text
    assert _share(offline, bar, draw.ORANGE) > 0.5
    assert _share(online, bar, draw.ONLINE) > 0.5
    assert _share(online, bar, draw.ORANGE) == 0


@pytest.mark.parametrize("size", SIZES, ids=["800x480", "1280x720"])
def test_merchant_qr_in_the_screenshot_scans(shots: dict[str, Path],
                                             size: tuple[int, int]) -> None:
    image = pygame.image.load(str(shots[f"till-wait-qr-ko-{size[0]}x{size[1]}.png"]))
    w, h = image.get_size()
    found = decode((pygame.image.tobytes(image, "RGB")[0::3], w, h),
                   symbols=[ZBarSymbol.QRCODE])
    assert len(found) == 1
    mpm = parse(found[0].data.decode("ascii"))
    assert mpm.amount == "8800" and mpm.merchant_name == "Ilsan Farm Store"


def test_cli_screenshots_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["screenshots", str(tmp_path / "out"), "--size",
                                      "640x400"])
    assert result.exit_code == 0, result.output
    saved = sorted((tmp_path / "out").glob("*.png"))
    assert len(saved) == sum(1 for r in ROLES for lang in LANGUAGES for _ in catalog(r, lang))
    assert f"{len(saved)} screenshots" in result.output
    bad = CliRunner().invoke(cli, ["screenshots", str(tmp_path / "x"), "--size", "big"])
    assert bad.exit_code == 2 and "WIDTHxHEIGHT" in bad.output


@pytest.mark.parametrize("role", ["validator", "till"])
def test_cli_run_demo_starts_and_stops(role: str) -> None:
    result = CliRunner().invoke(cli, ["run", "--demo", "--role", role, "--windowed",
                                      "--seconds", "0.5", "--no-sound"])
    assert result.exit_code == 0, result.output


def test_cli_run_needs_config_or_demo(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run"])
    assert result.exit_code == 2 and "--config FILE or --demo" in result.output
    missing = CliRunner().invoke(cli, ["--home", str(tmp_path), "run", "--config",
                                       str(tmp_path / "none.toml"), "--reader", "virtual"])
    assert missing.exit_code == 2 and "does not exist" in missing.output
