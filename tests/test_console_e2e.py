"""The operator's console end to end, in a real browser: Debian's chromium, headless, driven
by Selenium through Debian's chromedriver, against a real ``localpay central serve`` over
PostgreSQL, with a till that pays and syncs through the real sync client.

A call-centre operator logs in, finds the card by its PAN, denies it with a reason; the till's
next sync brings the deny list down and its next tap of that card is declined. A viewer is
refused the deny (403), a forged POST without the CSRF token is refused (403), and the audit
log page and ``central audit-log`` show the change under the operator's name.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

import terminal.cards_all  # noqa: F401 - registers the EMV application
from central import open_service
from drivers import wait
from drivers.emulators.emv_card import EmvCard
from drivers.virtual import VirtualCard, VirtualReader
from firmware_cfg.config import DEFAULT
from firmware_cfg.keys import DEMO_TOKEN_KEY, public_hex
from localpay.cli import cli
from localpay.types import Presentation
from offline_ledger import Ledger
from sync.client import SyncClient
from terminal.cards import card_token
from terminal.core import Terminal
from terminal.risk import Reason
from tests.pg_fixtures import CentralProcess, pg_cluster, start_central  # noqa: F401

# every test here starts chromium: one xdist worker runs them all, in the group "browser"
# (tests/conftest.py)
BROWSER = True

SERVE = ("-m", "localpay", "central", "serve")
PAN = "9410123456789012"   # the emulated card's
PASSWORD = "correct horse battery staple"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def present(reader: VirtualReader, card: EmvCard) -> Presentation:
    """The card on the till's reader (the reader stays open while the till reads it)."""
    reader.present_card(VirtualCard(uid=bytes.fromhex("04a1b2c3"), handler=card.handle))
    p = wait(reader, 1)
    assert p is not None
    return p


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM  # given, with the driver: selenium-manager fetches nothing
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium", ignore_errors=True)


@pytest.fixture
def world(pg_cluster: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:  # noqa: F811
    db, data = pg_cluster.new_database(), tmp_path / "data"
    svc = open_service(db, data)
    # the scheme's token key the terminals are provisioned with (here the demo key)
    (data / "token.key").write_text(DEMO_TOKEN_KEY.hex())
    (data / "token.key").chmod(0o600)
    key = Ed25519PrivateKey.generate()
    svc.add_terminal("TILL-1", bytes.fromhex(public_hex(key)))
    svc.store.close()
    run = CliRunner()
    opts = ["--db", db, "--data", str(data)]
    for name, role in (("carl", "callcentre"), ("vera", "viewer")):
        out = run.invoke(cli, ["central", "operator", "add", name, "--role", role,
                               "--password-file", "-", *opts], input=PASSWORD + "\n")
        assert out.exit_code == 0, out.output
    server = start_central(db, data, command=SERVE, timeout=90)
    try:
        yield {"db": db, "data": data, "key": key, "server": server, "opts": opts}
    finally:
        server.stop()


def log_in(driver: webdriver.Chrome, server: CentralProcess, name: str) -> None:
    # "localhost": a secure context for the browser, so it keeps the Secure cookie over
    # plain HTTP on loopback (no flag turns Secure off for this test)
    driver.get(f"http://localhost:{server.port}/console/fleet?lang=en")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login").click()
    WebDriverWait(driver, 20).until(ec.presence_of_element_located((By.ID, "operator")))
    assert name in driver.find_element(By.ID, "operator").text


def post_status(driver: webdriver.Chrome, path: str, form: dict[str, str]) -> int:
    """The status of a POST the page's own origin makes with the browser's cookies."""
    status: int = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {method: 'POST', credentials: 'same-origin',"
        " body: new URLSearchParams(arguments[1])}).then(r => done(r.status));", path, form)
    return status


def test_call_centre_denies_a_card_found_by_pan(world: dict[str, Any],
                                                browser: webdriver.Chrome,
                                                tmp_path: Path) -> None:
    server: CentralProcess = world["server"]
    token = card_token(DEMO_TOKEN_KEY, "pan", PAN)
    path = tmp_path / "till.sqlite"
    ledger = Ledger(path, key=world["key"], terminal_id="TILL-1")
    reader = VirtualReader()
    try:
        cfg = DEFAULT.replace("terminal", role="till", id="TILL-1", place="M0001")
        till = Terminal(cfg, ledger, DEMO_TOKEN_KEY, read_options={"ledger": ledger})
        first = till.pay(present(reader, EmvCard()), 5000)
        assert first.approved, first.detail
        client = SyncClient(path, world["key"], server.url, server.verifier)
        assert client.sync_once().sent == 1

        # the call centre: log in, find the card by its PAN, deny it with a reason
        log_in(browser, server, "carl")
        browser.find_element(By.LINK_TEXT, "Cards").click()
        browser.find_element(By.ID, "pan").send_keys(PAN)
        browser.find_element(By.ID, "find-pan").click()
        WebDriverWait(browser, 20).until(ec.presence_of_element_located((By.ID, "not-denied")))
        assert browser.current_url.endswith(f"/console/cards/{token}")
        assert PAN not in browser.page_source
        assert "TILL-1" in browser.find_element(By.ID, "entries").text
        assert "5,000 won" in browser.find_element(By.ID, "entries").text
        # a forged form, without the session's CSRF token, changes nothing
        assert post_status(browser, f"/console/cards/{token}/deny",
                           {"reason": "forged", "action": "deny"}) == 403
        browser.find_element(By.ID, "reason").send_keys("reported stolen by the holder")
        browser.find_element(By.ID, "deny-submit").click()
        WebDriverWait(browser, 20).until(ec.presence_of_element_located((By.ID, "denied")))
        assert "reported stolen by the holder" in browser.find_element(By.ID, "denied").text

        # the till's next sync brings the deny list; its next tap of the card is declined
        client.sync_once()
        client.close()
        assert ledger.card_state(token).denied == "reported stolen by the holder"
        declined = till.pay(present(reader, EmvCard()), 1000)
        assert not declined.approved and declined.reason is Reason.DENY_LISTED

        # the audit log page names the operator, before and after
        browser.find_element(By.LINK_TEXT, "Audit log").click()
        rows = browser.find_element(By.ID, "audit").text
        assert "carl card.deny" in rows and f"card:{token}" in rows
        assert '"denied": false' in rows and '"denied": true' in rows
        browser.find_element(By.ID, "logout").click()
        WebDriverWait(browser, 20).until(ec.presence_of_element_located((By.ID, "login")))

        # a viewer sees the card and is refused the undeny, form token or not
        log_in(browser, server, "vera")
        browser.get(f"http://localhost:{server.port}/console/cards/{token}")
        assert browser.find_elements(By.ID, "deny-form") == []
        csrf = browser.find_element(By.NAME, "csrf").get_attribute("value")
        assert post_status(browser, f"/console/cards/{token}/deny",
                           {"reason": "mine now", "action": "undeny", "csrf": csrf}) == 403
        assert post_status(browser, "/console/cards/find", {"pan": PAN, "csrf": csrf}) == 403
        browser.get(f"http://localhost:{server.port}/console/fleet?lang=ko")
        assert "TILL-1" in browser.find_element(By.ID, "fleet").text
        assert "단말기 현황" in browser.page_source
        # the fleet table updates itself: a terminal registered now appears, no reload
        browser.execute_script("window.stillThisPage = true;")
        svc = open_service(world["db"], world["data"])
        svc.add_terminal("BUS-NEW", bytes.fromhex(public_hex(Ed25519PrivateKey.generate())))
        svc.store.close()
        WebDriverWait(browser, 30).until(
            lambda d: "BUS-NEW" in d.find_element(By.ID, "fleet").text)
        assert browser.execute_script("return window.stillThisPage === true;")
        assert browser.find_element(By.ID, "live").is_displayed()
        assert "단말기 2대" in browser.find_element(By.ID, "count").text
    finally:
        reader.close()
        ledger.close()

    out = CliRunner().invoke(cli, ["central", "audit-log", "--json", *world["opts"]])
    assert out.exit_code == 0, out.output
    changes = [json.loads(line) for line in out.output.splitlines()
               if json.loads(line)["action"].startswith("card.")]
    assert [(c["operator"], c["action"], c["object"], c["before"]["denied"],
             c["after"]["denied"], c["reason"]) for c in changes] == [
        ("carl", "card.deny", f"card:{token}", False, True, "reported stolen by the holder")]
    text = CliRunner().invoke(cli, ["central", "audit-log", *world["opts"]]).output
    assert f"carl  card.deny  card:{token}" in text
    assert PAN not in server.log_path.read_text()
