"""The operator's console: operators and their Argon2 hashes, lockout counted in the store,
sessions, CSRF and role refusals, and the wall between the console and the terminals' API
(a terminal's signed headers open no console page; a console cookie opens no /v1 route).

Against real PostgreSQL, through the real application (``central.app.create_app``) and
FastAPI's TestClient over ``https://`` (the session cookie is ``Secure``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from central.app import create_app
from central.console import i18n, operators
from central.console.operators import (
    ConsoleAuthError,
    ConsoleError,
    LockedOutError,
    Lockout,
)
from central.service import CentralLog
from central.store import open_store
from firmware_cfg.card_tokens import card_token
from firmware_cfg.keys import public_hex
from localpay.cli import cli
from terminal.cards import card_token as terminal_card_token
from tests.console_fixtures import (
    PASSWORD,
    TOKEN_KEY,
    client,
    console_service,
    csrf_of,
    log_in,
)
from tests.pg_fixtures import pg_cluster, signed_entries  # noqa: F401 - fixtures
from tests.signed_requests import signed_headers

PAN = "9410123456789012"


@pytest.fixture
def svc(pg_cluster: Any, tmp_path: Path) -> Iterator[CentralLog]:  # noqa: F811
    """A service with its data folder and no operator: each test adds its own."""
    service = console_service(pg_cluster.new_schema(), tmp_path / "data")
    yield service
    service.store.close()


# -- operators, hashing --------------------------------------------------------------------------


def test_operators_are_stored_with_argon2id_hashes(svc: CentralLog) -> None:
    op = operators.add_operator(svc.store, "alice", "admin", PASSWORD, by="cli:root")
    assert (op.name, op.role, op.municipality, op.disabled_ms) == ("alice", "admin", "default",
                                                                   None)
    with svc.store.tx(write=False) as tx:
        (hashed,) = tx.all("SELECT password_hash FROM console_operators WHERE name = 'alice'")[0]
    assert hashed.startswith("$argon2id$") and PASSWORD not in hashed
    with pytest.raises(ConsoleError, match="exists already"):
        operators.add_operator(svc.store, "alice", "viewer", PASSWORD)
    with pytest.raises(ConsoleError, match="role"):
        operators.add_operator(svc.store, "bob", "root", PASSWORD)
    with pytest.raises(ConsoleError, match="12 to 256"):
        operators.add_operator(svc.store, "bob", "viewer", "short")
    with pytest.raises(ConsoleError, match="operator name"):
        operators.add_operator(svc.store, "Bob Smith", "viewer", PASSWORD)
    assert [o.name for o in operators.operators(svc.store)] == ["alice"]
    assert [r.action for r in operators.audit_rows(svc.store)] == ["operator.add"]
    assert operators.audit_rows(svc.store)[0].operator == "cli:root"


def test_roles_are_ordered() -> None:
    assert operators.role_at_least("admin", "callcentre")
    assert operators.role_at_least("callcentre", "callcentre")
    assert not operators.role_at_least("viewer", "callcentre")
    assert not operators.role_at_least("callcentre", "operator")
    with pytest.raises(ConsoleError):
        operators.role_at_least("viewer", "superuser")


# -- lockout, kept in the store -------------------------------------------------------------------


def test_lockout_by_name_and_by_address_is_shared_by_every_worker(svc: CentralLog) -> None:
    operators.add_operator(svc.store, "alice", "viewer", PASSWORD)
    # long enough that the logins below (Argon2, a busy machine) all fall within it
    lock = Lockout(limit=3, window_s=60, lock_s=6)
    for _ in range(3):
        with pytest.raises(ConsoleAuthError, match="wrong name or password"):
            operators.login(svc.store, "alice", "wrong password!!", "10.0.0.1", lockout=lock)
    # another worker: its own connection pool over the same store, no memory shared
    other = open_store(svc.store.url)
    try:
        with pytest.raises(LockedOutError) as locked:
            operators.login(other, "alice", PASSWORD, "10.0.0.2", lockout=lock)
        assert 0 < locked.value.wait_s <= 6
        # an address that tried three unknown names is locked for every name
        for name in ("x1", "x2", "x3"):
            with pytest.raises(ConsoleAuthError):
                operators.login(other, name, "whatever at all", "10.0.0.9", lockout=lock)
        with pytest.raises(LockedOutError):
            operators.login(svc.store, "x4", "whatever at all", "10.0.0.9", lockout=lock)
    finally:
        other.close()
    with svc.store.tx(write=False) as tx:
        counted = tx.all("SELECT scope, subject, COUNT(*) FROM console_login_failures "
                         "GROUP BY scope, subject ORDER BY scope, subject")
    assert [tuple(r) for r in counted] == [
        ("address", "10.0.0.1", 3), ("address", "10.0.0.9", 3), ("name", "alice", 3),
        ("name", "x1", 1), ("name", "x2", 1), ("name", "x3", 1)]
    time.sleep(6.1)  # the lock is over
    sid, session = operators.login(svc.store, "alice", PASSWORD, "10.0.0.1", lockout=lock)
    assert session.operator.name == "alice" and sid


# -- sessions --------------------------------------------------------------------------------------


def test_sessions_are_stored_hashed_and_end(svc: CentralLog) -> None:
    operators.add_operator(svc.store, "alice", "viewer", PASSWORD)
    sid, session = operators.login(svc.store, "alice", PASSWORD, "10.0.0.1")
    assert operators.csrf_ok(sid, session.csrf) and not operators.csrf_ok(sid, "0" * 64)
    with svc.store.tx(write=False) as tx:
        stored = [str(v) for row in tx.all("SELECT * FROM console_sessions") for v in row]
    assert sid not in " ".join(stored)
    found = operators.session(svc.store, sid)
    assert found is not None and found.operator.name == "alice"
    assert operators.session(svc.store, sid + "x") is None
    assert operators.session(svc.store, sid, idle_s=0) is None  # idle timeout
    with svc.store.tx() as tx:
        tx.run("UPDATE console_sessions SET expires_ms = ?", (operators.now_ms() - 1,))
    assert operators.session(svc.store, sid) is None  # absolute expiry
    sid2, _ = operators.login(svc.store, "alice", PASSWORD, "10.0.0.1")
    operators.logout(svc.store, sid2)
    assert operators.session(svc.store, sid2) is None
    sid3, _ = operators.login(svc.store, "alice", PASSWORD, "10.0.0.1")
    operators.disable_operator(svc.store, "alice", by="cli:root", reason="left the team")
    assert operators.session(svc.store, sid3) is None
    with pytest.raises(ConsoleAuthError):
        operators.login(svc.store, "alice", PASSWORD, "10.0.0.1")


# -- over HTTP ------------------------------------------------------------------------------------


def test_cookie_is_secure_httponly_samesite_strict(svc: CentralLog) -> None:
    operators.add_operator(svc.store, "alice", "viewer", PASSWORD)
    with client(svc) as c:
        assert c.get("/console/fleet").text.count('id="login"') == 1  # the login page
        done = log_in(c, "alice")
        assert done.status_code == 200 and 'id="fleet"' in done.text
        cookie = next(h for h in done.history[0].headers.get_list("set-cookie")
                      if h.startswith("__Host-lp_console="))
        attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "secure", "samesite", "path"} <= attrs
        assert "samesite=strict" in cookie.lower() and "path=/;" in cookie.lower() + ";"
        assert done.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in done.headers["content-security-policy"]
        bad = log_in(c, "alice", "not the password")
        assert bad.status_code == 401 and 'id="error"' in bad.text


def test_csrf_and_role_refusals(svc: CentralLog) -> None:
    operators.add_operator(svc.store, "vera", "viewer", PASSWORD)
    operators.add_operator(svc.store, "carl", "callcentre", PASSWORD)
    token = card_token(TOKEN_KEY, "pan", PAN)
    with client(svc) as viewer, client(svc) as callc:
        log_in(viewer, "vera")
        log_in(callc, "carl")
        page = callc.get(f"/console/cards/{token}?lang=en")
        assert page.status_code == 200 and 'id="deny-form"' in page.text
        # a forged form: no token, another session's token, a token with no session
        for form in ({"reason": "forged"},
                     {"reason": "forged", "csrf": csrf_of(viewer.get("/console/cards").text)}):
            refused = callc.post(f"/console/cards/{token}/deny?lang=en", data=form)
            assert refused.status_code == 403
            assert "The form expired or was forged" in refused.text
        with client(svc) as nobody:
            refused = nobody.post(f"/console/cards/{token}/deny",
                                  data={"reason": "x", "csrf": csrf_of(page.text)})
            assert refused.status_code == 403
        # a viewer, with its own valid token: refused by role
        vpage = viewer.get(f"/console/cards/{token}?lang=en")
        assert 'id="deny-form"' not in vpage.text
        refused = viewer.post(f"/console/cards/{token}/deny?lang=en",
                              data={"reason": "not mine", "csrf": csrf_of(vpage.text)})
        assert refused.status_code == 403 and "role needed: call centre" in refused.text
        refused = viewer.post("/console/cards/find",
                              data={"pan": PAN, "csrf": csrf_of(vpage.text)})
        assert refused.status_code == 403
        with svc.store.tx(write=False) as tx:
            assert tx.all("SELECT COUNT(*) FROM deny_changes") == [(0,)]
        # the call centre may
        done = callc.post(f"/console/cards/{token}/deny?lang=en",
                          data={"reason": "stolen", "csrf": csrf_of(page.text)})
        assert done.status_code == 200 and "denied: stolen" in done.text
    assert svc.deny_delta(0)["add"] == {token: "stolen"}
    change = operators.audit_rows(svc.store, obj=f"card:{token}")
    assert [(r.operator, r.action, r.before, r.after["denied"], r.reason) for r in change] == [
        ("carl", "card.deny", {"denied": False}, True, "stolen")]


def test_pan_lookup_stores_and_logs_no_pan(svc: CentralLog,
                                           caplog: pytest.LogCaptureFixture) -> None:
    operators.add_operator(svc.store, "carl", "callcentre", PASSWORD)
    expected = card_token(TOKEN_KEY, "pan", PAN)
    # one function for both sides: the terminal's is the shared one
    assert terminal_card_token(TOKEN_KEY, "pan", PAN) == expected
    caplog.set_level(logging.DEBUG)
    with client(svc) as c:
        log_in(c, "carl")
        page = c.get("/console/cards")
        found = c.post("/console/cards/find", data={"pan": "9410 1234 5678 9012",
                                                    "csrf": csrf_of(page.text)})
        assert found.status_code == 200
        assert str(found.url).endswith(f"/console/cards/{expected}")
        assert PAN not in found.text and PAN not in str(found.url)
        assert 'name="pan" id="pan" type="password"' in page.text  # never shown back
        bad = c.post("/console/cards/find", data={"pan": "12ab", "csrf": csrf_of(page.text)})
        assert bad.status_code == 400 and "12ab" not in bad.text
    assert PAN not in caplog.text and "9410 1234" not in caplog.text
    with svc.store.tx(write=False) as tx:
        for table in ("console_audit", "console_sessions", "console_login_failures"):
            text = json.dumps([list(map(str, r)) for r in tx.all(f"SELECT * FROM {table}")])
            assert PAN not in text and "56789012" not in text


def test_terminal_headers_open_no_console_and_cookies_no_api(svc: CentralLog) -> None:
    key = Ed25519PrivateKey.generate()
    svc.add_terminal("BUS-1", bytes.fromhex(public_hex(key)))
    operators.add_operator(svc.store, "ada", "admin", PASSWORD)
    with client(svc) as c:
        # the terminal's signature is good on its own API...
        ok = c.get("/v1/deny?since=0", headers=signed_headers(key, "BUS-1", "GET",
                                                                "/v1/deny?since=0"))
        assert ok.status_code == 200 and "add" in ok.json()
        # ...and opens no console page or JSON
        for path in ("/console/fleet", "/console/fleet.json", "/console/audit"):
            got = c.get(path, headers=signed_headers(key, "BUS-1", "GET", path))
            assert 'id="login"' in got.text and "BUS-1" not in got.text, path
        posted = c.post("/console/cards/" + "a" * 32 + "/deny", data={"reason": "x"},
                        headers=signed_headers(key, "BUS-1", "POST",
                                               "/console/cards/" + "a" * 32 + "/deny"))
        assert posted.status_code == 403
        # an admin's session cookie opens no /v1 route
        log_in(c, "ada")
        assert c.get("/console/fleet.json").json()["rows"][0]["terminal"] == "BUS-1"
        for path in ("/v1/deny?since=0", "/v1/config", "/v1/round"):
            refused = c.get(path)
            assert refused.status_code == 401 and refused.json()["error"] == "refused", path
        assert c.post("/v1/batches", content=b"[]").status_code in (400, 401)


def test_fleet_terminal_page_and_both_languages(svc: CentralLog) -> None:
    key = Ed25519PrivateKey.generate()
    svc.add_terminal("BUS-7", bytes.fromhex(public_hex(key)))
    svc.add_terminal("TILL-2", bytes.fromhex(public_hex(Ed25519PrivateKey.generate())))
    entries = signed_entries(key, "BUS-7", 12, amount=1450, cards=["ab" * 16, "cd" * 16],
                             wall0=int(time.time() * 1000) - 60_000)
    svc.ingest("BUS-7", entries)
    day = svc.day_of(entries[0].wall_ms)
    # the terminal says one tap fewer than it sent: the page shows the difference
    svc.report_totals("BUS-7", day, {"tap": (11, 11 * 1450)})
    operators.add_operator(svc.store, "vera", "viewer", PASSWORD)
    assert i18n.missing() == {}
    with client(svc) as c:
        log_in(c, "vera")
        rows = c.get("/console/fleet.json?q=bus").json()["rows"]
        assert [r["terminal"] for r in rows] == ["BUS-7"]
        by_seen = c.get("/console/fleet.json?sort=terminal&dir=desc").json()["rows"]
        assert [r["terminal"] for r in by_seen] == ["TILL-2", "BUS-7"]
        page = c.get("/console/terminals/BUS-7?lang=en")
        assert page.status_code == 200
        assert f"<td>{day}</td><td>tap</td>" in page.text
        assert f"12 · {12 * 1450:,} won" in page.text and f"11 · {11 * 1450:,} won" in page.text
        assert 'class="differs"' in page.text and "<td>1</td><td>12</td>" in page.text
        assert c.get("/console/terminals/NOPE").status_code == 404
        token = entries[0].card_token
        for lang, word in (("ko", "단말기"), ("en", "Fleet")):
            for path in ("/console/fleet", "/console/cards", f"/console/cards/{token}",
                         "/console/audit", "/console/terminals/BUS-7"):
                got = c.get(f"{path}?lang={lang}")
                assert got.status_code == 200 and f'<html lang="{lang}">' in got.text, path
                assert word in got.text, (path, lang)
        # the language chosen stays
        assert '<html lang="en">' in c.get("/console/fleet?lang=en").text
        assert '<html lang="en">' in c.get("/console/fleet").text


# -- the commands ---------------------------------------------------------------------------------


def test_operator_commands_and_audit_log(svc: CentralLog, tmp_path: Path) -> None:
    run = CliRunner()
    opts = ["--db", svc.store.url, "--data", str(tmp_path / "data")]
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    out = run.invoke(cli, ["central", "operator", "add", "ada", "--role", "admin",
                           "--password-file", str(pw), *opts])
    assert out.exit_code == 0, out.output
    out = run.invoke(cli, ["central", "operator", "add", "carl", "--role", "callcentre",
                           "--password-file", "-", *opts], input=PASSWORD + "\n")
    assert out.exit_code == 0, out.output
    out = run.invoke(cli, ["central", "operator", "add", "dan", "--role", "viewer", *opts],
                     input=f"{PASSWORD}\n{PASSWORD}\n")
    assert out.exit_code == 0 and PASSWORD not in out.output, out.output
    out = run.invoke(cli, ["central", "operator", "add", "eve", "--role", "viewer",
                           "--password", PASSWORD, *opts])
    assert out.exit_code != 0  # never on the command line
    out = run.invoke(cli, ["central", "operator", "add", "eve", "--role", "viewer",
                           "--password-file", "-", *opts], input="short\n")
    assert out.exit_code == 2 and "12 to 256" in out.output
    out = run.invoke(cli, ["central", "operator", "disable", "dan", "--reason", "left", *opts])
    assert out.exit_code == 0, out.output
    out = run.invoke(cli, ["central", "operator", "list", "--json", *opts])
    listed = [json.loads(line) for line in out.output.splitlines()]
    assert [(o["name"], o["role"], o["disabled_ms"] is not None) for o in listed] == [
        ("ada", "admin", False), ("carl", "callcentre", False), ("dan", "viewer", True)]
    _, session = operators.login(svc.store, "carl", PASSWORD, "10.0.0.5")
    assert session.operator.role == "callcentre"
    out = run.invoke(cli, ["central", "audit-log", "--json", *opts])
    rows = [json.loads(line) for line in out.output.splitlines()]
    assert [r["action"] for r in rows] == ["operator.add"] * 3 + ["operator.disable", "login"]
    assert rows[-1]["operator"] == "carl" and rows[3]["reason"] == "left"
    out = run.invoke(cli, ["central", "audit-log", "--since", "2999-01-01", *opts])
    assert out.exit_code == 0 and out.output == ""
    out = run.invoke(cli, ["central", "audit-log", "--operator", "carl", *opts])
    assert out.output.count("\n") == 1 and "carl  login  operator:carl" in out.output
    out = run.invoke(cli, ["central", "operator", "list", "--db",
                           f"sqlite:///{tmp_path / 'none.sqlite'}", "--data",
                           str(tmp_path / "none")])
    assert out.exit_code == 2 and "not initialised" in out.output


def test_plain_http_cookies_only_by_the_documented_switch(svc: CentralLog,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    from central.console.web import INSECURE_ENV

    operators.add_operator(svc.store, "alice", "viewer", PASSWORD)
    # by default, over plain HTTP the Secure cookie is never sent back: no session
    with TestClient(create_app(svc), base_url="http://testserver") as c:
        log_in(c, "alice")
        assert 'id="login"' in c.get("/console/fleet").text
    monkeypatch.setenv(INSECURE_ENV, "1")
    with TestClient(create_app(svc), base_url="http://testserver") as c:
        done = log_in(c, "alice")
        cookie = next(h for h in done.history[0].headers.get_list("set-cookie")
                      if h.startswith("lp_console="))
        assert "secure" not in cookie.lower() and "httponly" in cookie.lower()
        assert 'id="fleet"' in c.get("/console/fleet").text


def test_admin_disables_an_operator_and_others_may_not(svc: CentralLog) -> None:
    operators.add_operator(svc.store, "ada", "admin", PASSWORD)
    operators.add_operator(svc.store, "opal", "operator", PASSWORD)
    operators.add_operator(svc.store, "carl", "callcentre", PASSWORD)
    with client(svc) as admin, client(svc) as op, client(svc) as carl:
        log_in(admin, "ada")
        log_in(op, "opal")
        log_in(carl, "carl")
        assert op.get("/console/operators").status_code == 403
        assert 'href="/console/operators"' not in op.get("/console/fleet").text
        refused = op.post("/console/operators/carl/disable",
                          data={"reason": "x", "csrf": csrf_of(op.get("/console/fleet").text)})
        assert refused.status_code == 403
        page = admin.get("/console/operators?lang=en")
        assert page.status_code == 200 and "<td>carl</td><td>call centre</td>" in page.text
        done = admin.post("/console/operators/carl/disable",
                          data={"reason": "left the team", "csrf": csrf_of(page.text)})
        assert done.status_code == 200 and "disabled " in done.text
        assert 'id="login"' in carl.get("/console/fleet").text  # its session ended
        assert op.get("/console/fleet").status_code == 200
    row = operators.audit_rows(svc.store, obj="operator:carl")[0]
    assert (row.operator, row.action, row.before, row.after, row.reason) == (
        "ada", "operator.disable", {"disabled": False}, {"disabled": True}, "left the team")
