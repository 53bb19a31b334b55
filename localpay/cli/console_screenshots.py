"""``localpay console-screenshots DIR``: a PNG of every page of the operator's console, in
English and Korean, for the README and for review.

A throwaway central service (SQLite in a temporary folder) is filled with a small fleet
(:func:`localpay.cli.bench.console_seed.seed_fleet`: registered terminals with their
configs, the first of them syncing signed entries through the real ingest), a denied card and
a terminal's day totals that differ from central's (the service's own ``deny_add`` and
``report_totals``); an admin operator is created and ``localpay central serve`` started.
Debian's headless Chromium, driven by Selenium through Debian's chromedriver (both given by
path: selenium-manager is never asked to fetch anything), logs in through the login form and
saves each page at 1280x900 as ``<page>-<lang>.png``.

The pages are those the console's navigation links to, read from the page at run time (a
page added to the navigation is photographed without a change here), plus the login page, a
terminal's page and a card's page.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from localpay.cli.common import UserError, progress

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1280, 900
LANGS = ("en", "ko")
OPERATOR, PASSWORD = "ada", "console screenshots password"
SERVE = ("-m", "localpay", "central", "serve")
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync",
               f"--window-size={WIDTH},{HEIGHT}")


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """Headless Chromium through chromedriver, its profile in ``profile``, the viewport
    exactly :data:`WIDTH` x :data:`HEIGHT` CSS pixels at scale 1."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            raise UserError(f"{path} is missing: apt-get install chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM  # given, with the driver: selenium-manager fetches nothing
    for arg in (*CHROME_ARGS, f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    try:
        driver = webdriver.Chrome(options=opts,
                                  service=Service(executable_path=CHROMEDRIVER))
    except WebDriverException as err:
        raise UserError(f"chromium did not start: {err.msg}") from None
    try:
        driver.set_page_load_timeout(60)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
        yield driver
    finally:
        driver.quit()


def fill(db: str, data: Path, terminals: int) -> dict[str, str]:
    """A small fleet with traffic, a denied card, a day's totals that differ, an admin;
    returns a synced terminal's id and a card token that has entries."""
    from central import open_service
    from central.console import operators
    from localpay.cli.bench.console_seed import seed_fleet

    svc = open_service(db, data)
    try:
        svc.store.init_schema()
        seeded = seed_fleet(svc, terminals, synced=max(1, terminals // 3))
        # a validator that synced (one in four is a validator), and a card it saw
        tid = next((t for t in seeded.synced if int(t[-5:]) % 4 == 0), seeded.synced[0])
        with svc.store.tx(write=False) as tx:
            rows = tx.all("SELECT card_token, wall_ms, kind, amount FROM entries WHERE "
                          "terminal_id = ? ORDER BY seq", (tid,))
        card, wall = str(rows[0][0]), int(rows[0][1])
        kind, amount = str(rows[0][2]), int(rows[0][3])
        # the terminal's own totals say one entry fewer than central received
        svc.report_totals(tid, svc.day_of(wall), {kind: (len(rows) - 1,
                                                         amount * (len(rows) - 1))})
        with svc.store.tx() as tx:
            svc.deny_add(tx, card, "reported lost by the holder")
        operators.add_operator(svc.store, OPERATOR, "admin", PASSWORD, by="screenshots")
    finally:
        svc.store.close()
    return {"terminal": tid, "card": card}


def _with_lang(url: str, lang: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}lang={lang}"


def _name(href: str) -> str:
    """``/console/fleet`` -> ``fleet``; ``/console/day/x`` -> ``day-x``."""
    path = urlsplit(href).path.strip("/").split("/")[1:] or ["home"]
    return "-".join(p for p in path if p).replace(".", "-")


def shoot(driver: Any, base: str, out: Path, extra: dict[str, str],
          say: Callable[[str], None]) -> list[Path]:
    """Log in, then save every page of the navigation and ``extra`` (name -> path) in
    every language; the login page first."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    saved: list[Path] = []

    def save(name: str, lang: str) -> None:
        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script("return document.readyState") == "complete")
        driver.execute_script("return document.fonts.ready")
        target = out / f"{name}-{lang}.png"
        if not driver.save_screenshot(str(target)):
            raise UserError(f"chromium saved no screenshot of {driver.current_url}")
        saved.append(target)
        say(f"{target.name}: {driver.current_url}")
        # a table that needs a sideways scroll at this width hides columns on a tablet
        wide = driver.execute_script(
            "return Math.max(document.documentElement.scrollWidth, ...Array.from("
            "document.querySelectorAll('.scroll'), e => e.scrollWidth - e.clientWidth "
            "+ document.documentElement.clientWidth));")
        if int(wide) > WIDTH:
            say(f"{target.name}: {int(wide):,} px wide, wider than the window "
                f"({WIDTH:,} px): it needs a sideways scroll")

    for lang in LANGS:
        driver.get(_with_lang(f"{base}/console/login", lang))
        save("login", lang)
    driver.find_element(By.ID, "name").send_keys(OPERATOR)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login").click()
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, "operator")))
    for lang in LANGS:
        driver.get(_with_lang(f"{base}/console/fleet", lang))
        links = [a.get_attribute("href") or "" for a in
                 driver.find_elements(By.CSS_SELECTOR, "header nav a")]
        pages = {_name(h): h for h in links if h.startswith(base + "/console/")}
        if not pages:
            raise UserError("the console's navigation links to no page")
        pages.update({name: base + path for name, path in extra.items()})
        for name, url in pages.items():
            driver.get(_with_lang(url, lang))
            save(name, lang)
    return saved


def take(out: Path, *, terminals: int = 120, say: Callable[[str], None] = progress) -> list[Path]:
    """Everything ``localpay console-screenshots`` does; returns the PNGs written."""
    from localpay.cli.bench.stacks import start_central

    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="localpay-console-shots-"))
    try:
        db, data = f"sqlite:///{tmp / 'central.sqlite'}", tmp / "data"
        say(f"filling a throwaway central store with {terminals} terminals")
        facts = fill(db, data, terminals)
        server = start_central(db, data, command=SERVE, timeout=120)
        try:
            # "localhost": a secure context for Chromium, which then keeps the console's
            # Secure cookie over plain HTTP on loopback
            base = f"http://localhost:{server.port}"
            started = time.monotonic()
            with chromium(tmp / "chromium") as driver:
                saved = shoot(driver, base, out, {
                    "terminal": f"/console/terminals/{facts['terminal']}",
                    "card": f"/console/cards/{facts['card']}"}, say)
            say(f"{len(saved)} screenshots in {time.monotonic() - started:.1f} s")
            return saved
        finally:
            server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@click.command("console-screenshots")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--terminals", type=click.IntRange(min=4, max=2000), default=120,
              show_default=True, help="Terminals in the throwaway fleet.")
def console_screenshots(folder: Path, terminals: int) -> None:
    """Save a PNG of every console page, in English and Korean, into FOLDER.

    Starts a throwaway central service (SQLite, a temporary folder) with a small fleet and
    traffic, logs in with headless Chromium (Debian's chromium and chromium-driver) and
    saves each page of the navigation, the login page, a terminal's and a card's page at
    1280x900 as <page>-<lang>.png (fleet-en.png, fleet-ko.png, ...).
    """
    for path in take(folder, terminals=terminals):
        click.echo(str(path))


COMMANDS = [console_screenshots]
