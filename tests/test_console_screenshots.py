"""``localpay console-screenshots DIR``: a real central service, headless Chromium, a PNG of
every page of the console's navigation (and the login, a terminal's and a card's page) in
English and Korean, each a real picture at 1280x900.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from localpay.cli import cli

# starts chromium: one xdist worker runs the browser tests, in the group "browser"
# (tests/conftest.py)
BROWSER = True

#: pages every console has (others' pages join through the navigation)
PAGES = {"login", "fleet", "cards", "audit", "operators", "terminal", "card"}


def test_every_page_in_both_languages(tmp_path: Path) -> None:
    out = tmp_path / "shots"
    run = CliRunner().invoke(cli, ["console-screenshots", str(out), "--terminals", "30"])
    assert run.exit_code == 0, run.output
    written = sorted(out.glob("*.png"))
    assert sorted(str(p) for p in written) == sorted(
        line for line in run.output.splitlines() if line.endswith(".png"))
    # every page fits the window: nothing hidden behind a sideways scroll on a tablet
    assert "wider than the window" not in run.output, run.output
    names = {p.stem.rsplit("-", 1)[0] for p in written}
    assert PAGES <= names
    assert {p.name for p in written} == {f"{n}-{lang}.png" for n in names
                                         for lang in ("en", "ko")}
    for path in written:
        with Image.open(path) as im:
            im.verify()  # a whole, valid PNG
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == (1280, 900), path.name
            # a page drawn, not a blank or one-colour frame: text is anti-aliased
            colours = im.convert("RGB").getcolors(1 << 24)
            assert colours is not None and len(colours) > 50, (path.name, len(colours or []))
    # the two languages are two different pictures of each page
    for name in names:
        assert (out / f"{name}-en.png").read_bytes() != (out / f"{name}-ko.png").read_bytes()
