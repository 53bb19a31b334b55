"""An online QR sale expires at central: a till that crashed while showing its code does not
leave it payable for ever. Against a real ``localpay central serve`` on SQLite and
PostgreSQL; the sale's age is set in the store (what 180 s of waiting would do). Also the
app partners' registry: a disabled partner's key is refused, and the disabling recorded."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner

from central import books, mpm_payments
from central import open_service as open_central
from localpay.cli import cli
from terminal.mpm_online import new_reference
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401
from tests.test_mpm_online import CASH, Stack, app_pay, balance, moved, stack  # noqa: F401

#: the documented default, written here on its own: 3 minutes
EXPIRY_MS = 180 * 1000


def age(s: Stack, reference: str, ms: int) -> None:
    """The sale was opened ``ms`` earlier than it was."""
    with s.svc.store.tx() as tx:
        assert tx.run("UPDATE mpm_sales SET opened_ms = opened_ms - ? WHERE reference = ?",
                      (ms, reference)) == 1


def test_an_open_sale_expires_at_central(stack: Stack) -> None:  # noqa: F811
    s = stack
    assert mpm_payments.SALE_EXPIRY_S * 1000 == EXPIRY_MS
    # a till opened it and crashed: nobody closes it
    stale = new_reference()
    s.link.open(stale, 1_200)
    age(s, stale, EXPIRY_MS + 1_000)
    r = app_pay(s, stale, 1_200, "exp-1")
    assert r.status_code == 410, r.text
    body = r.json()
    assert (body["error"], body["kind"]) == ("expired", "sale_expired")
    assert "ask the till for a new code" in body["message"]
    assert moved(s) == {} and balance(s, books.pocket("A")) == CASH
    # the till that asks is told it expired (and no payment)
    doc = mpm_payments.sale_status(s.svc.store, "TILL-1", stale)
    assert (doc["status"], doc["payment"]) == ("expired", None)
    with s.svc.store.tx(write=False) as tx:
        opened = int(tx.one("SELECT opened_ms FROM mpm_sales WHERE reference = ?",
                            (stale,))[0])
    assert doc["expires_ms"] == opened + EXPIRY_MS
    # a sale 5 s short of its expiry is still paid
    fresh = new_reference()
    s.link.open(fresh, 1_300)
    age(s, fresh, EXPIRY_MS - 5_000)
    paid = app_pay(s, fresh, 1_300, "exp-2")
    assert paid.status_code == 200, paid.text
    assert list(moved(s).values()) == [1_300]
    assert balance(s, books.pocket("A")) == CASH - 1_300
    # long after, the app's replay of that payment still answers it, nothing moves again
    age(s, fresh, 10 * EXPIRY_MS)
    again = app_pay(s, fresh, 1_300, "exp-2")
    assert again.status_code == 200, again.text
    assert again.json()["payment"] == paid.json()["payment"] and again.json()["replayed"]
    # and another app's payment of it is told it was paid, not that it expired
    other = app_pay(s, fresh, 1_300, "exp-3")
    assert other.status_code == 409 and other.json()["payment"] == paid.json()["payment"]
    assert balance(s, books.pocket("A")) == CASH - 1_300
    assert mpm_payments.sale_status(s.svc.store, "TILL-1", fresh)["status"] == "paid"
    # a closed sale says closed, not open
    shut = new_reference()
    s.link.open(shut, 900)
    assert s.link.close(shut) is None
    assert mpm_payments.sale_status(s.svc.store, "TILL-1", shut)["status"] == "closed"


def test_a_disabled_app_partner_is_refused(stack: Stack) -> None:  # noqa: F811
    s = stack
    reference = new_reference()
    s.link.open(reference, 800)
    before = time.time_ns() // 1_000_000
    assert mpm_payments.disable_app_partner(s.svc.store, "cityapp", reason="key leaked")
    after = time.time_ns() // 1_000_000
    refused = app_pay(s, reference, 800, "dis-1")
    assert refused.status_code == 401, refused.text
    assert refused.json()["kind"] == "partner_refused"
    assert "cityapp is disabled" in refused.json()["message"]
    assert moved(s) == {} and balance(s, books.pocket("A")) == CASH
    # recorded: when and why; disabling again records nothing more
    assert not mpm_payments.disable_app_partner(s.svc.store, "cityapp", reason="again")
    (row,) = mpm_payments.app_partners(s.svc.store)
    assert (row["partner"], row["active"], row["reason"]) == ("cityapp", False, "key leaked")
    assert before <= row["disabled_ms"] <= after
    with s.svc.store.tx(write=False) as tx:
        assert tx.one("SELECT COUNT(*) FROM mpm_partner_changes")[0] == 1


def test_partner_disable_and_list_commands(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'central.sqlite'}"
    where = ["--db", db, "--data", str(tmp_path / "data")]
    run = CliRunner().invoke
    assert run(cli, ["central", "init", *where]).exit_code == 0
    added = run(cli, ["central", "mpm", "partner-add", *where, "cityapp"])
    assert added.exit_code == 0, added.output
    key = added.stdout.strip().splitlines()[-1]
    assert run(cli, ["central", "mpm", "partner-add", *where, "busapp"]).exit_code == 0
    listed = run(cli, ["central", "mpm", "partner-list", *where])
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines() == ["busapp\tactive", "cityapp\tactive"]
    off = run(cli, ["central", "mpm", "partner-disable", *where, "--reason", "leaked",
                    "cityapp"])
    assert off.exit_code == 0 and "app partner cityapp disabled" in off.output, off.output
    twice = run(cli, ["central", "mpm", "partner-disable", *where, "cityapp"])
    assert twice.exit_code == 0 and "disabled already" in twice.output
    nobody = run(cli, ["central", "mpm", "partner-disable", *where, "nobody"])
    assert nobody.exit_code == 2 and "no app partner nobody" in nobody.output
    doc = json.loads(run(cli, ["central", "mpm", "partner-list", *where, "--json"]).stdout)
    assert [(p["partner"], p["active"], p["reason"]) for p in doc["partners"]] == [
        ("busapp", True, None), ("cityapp", False, "leaked")]
    svc = open_central(db, tmp_path / "data")
    try:
        try:
            mpm_payments.authenticate(svc.store, key)
        except mpm_payments.MpmPartnerAuthError as err:
            assert "disabled" in str(err)
        else:
            raise AssertionError("a disabled partner's key was accepted")
    finally:
        svc.store.close()
