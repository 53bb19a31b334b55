"""Many municipalities on one platform: each one's terminals, cards, deny list, balances,
points, config, reports, books and settlement are its own.

Two municipalities with the same merchant id, each with accounts, cards, balances, deny
entries, a till and a bus validator, on SQLite and a real PostgreSQL. The terminal API is
asked by each terminal with signed requests, as the sync client makes them, over a real
``python -m central`` process; the reports, books and settlement through the library and the
real CLI. Nothing of one may show through the other, and a payment by one municipality's
card at the other's till reaches neither's books. Every figure of money is worked out here.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import accounts, books, municipalities, open_service
from central.enroll import issue_codes
from central.incentive_rules import default_rules_text
from central.merchants import Merchant, Registry
from central.profiles import set_profiles
from central.reconcile import report
from central.service import CentralLog
from central.settlement import settle
from central.settlement_check import check as settlement_check
from central.settlement_file import write_bank_file
from central.store import open_store
from central.versions import load_rules
from firmware_cfg.config import DEFAULT, brn_check_digit, dumps
from firmware_cfg.keys import public_hex
from localpay.cli import cli
from localpay.errors import ConfigError
from sync.protocol import (
    H_NONCE,
    H_SIGNATURE,
    H_TERMINAL,
    H_TIME,
    b64,
    request_message,
    response_message,
)
from terminal.home import Home
from tests.enroll_fixtures import issue_code, localpay_central, provision
from tests.incentives_data import Chain, seoul_ms, tap_detail
from tests.pg_fixtures import CentralProcess, central, pg_cluster, store_url  # noqa: F401
from tests.test_answer_key import answer_verifier

DAY = (2026, 11, 20)
DAY_TEXT = "2026-11-20"


def _brn(first9: str) -> str:
    return f"{first9[:3]}-{first9[3:5]}-{first9[5:]}{brn_check_digit(first9)}"


@dataclass
class Town:
    """One municipality of the test world, and what was done in it, tallied here."""

    mid: str
    name: str
    tag: str
    shop_name: str
    bank_account: str
    #: linked to the town's citizen, with a balance snapshot and cash in the books
    card: str
    #: linked to no account, with a balance snapshot
    loose: str
    #: deny-listed here
    denied: str
    cash: int
    snapshot: int
    loose_snapshot: int
    paid: int
    fare: int = 1500
    till: Chain | None = None
    bus: Chain | None = None

    @property
    def account(self) -> str:
        return f"{self.tag}-citizen"

    @property
    def till_id(self) -> str:
        return f"TILL-{self.tag.upper()}-1"

    @property
    def bus_id(self) -> str:
        return f"BUS-{self.tag.upper()}-1"

    def secrets_(self) -> list[str]:
        """What nobody of another municipality may see."""
        return [self.card, self.loose, self.denied, self.till_id, self.bus_id, self.account,
                self.shop_name, self.bank_account.replace("-", "")]


def towns() -> tuple[Town, Town]:
    goyang = Town("goyang", "Goyang", "gy", "Ilsan Farm Store", "301-0000-1111-11",
                  "a1" * 32, "a2" * 32, "a3" * 32, cash=20_000, snapshot=5_000,
                  loose_snapshot=9_000, paid=3_000)
    gimpo = Town("gimpo", "Gimpo", "gp", "Gimpo Riverside Bakery", "301-0000-2222-22",
                 "b1" * 32, "b2" * 32, "b3" * 32, cash=30_000, snapshot=7_000,
                 loose_snapshot=8_000, paid=4_000)
    return goyang, gimpo


def _register(svc: CentralLog, town: Town, tid: str) -> Chain:
    c = Chain(tid)
    svc.add_terminal(tid, bytes.fromhex(public_hex(c.key)), municipality=town.mid)
    return c


def _pay(c: Chain, card: str, amount: int, hour: int) -> Any:
    detail = json.dumps({"card": "1234", "merchant_category": "local_food", "rider": "adult",
                         "scheme": "uid"}, sort_keys=True, separators=(",", ":"))
    return c.entry("payment", card, amount, seoul_ms(*DAY, hour), detail=detail,
                   place="M-SHOP")


def build(svc: CentralLog, goyang: Town, gimpo: Town) -> int:
    """Both towns, their payments and taps; the cross payment (goyang's card at gimpo's
    till) and its amount is returned."""
    store = svc.store
    for n, town in enumerate((goyang, gimpo)):
        municipalities.add(store, town.mid, town.name, f"{town.name} Pay")
        # each town's own incentive programme (the shipped rules), so that its cards earn
        load_rules(store, default_rules_text(), municipality=town.mid)
        Registry(store, town.mid).add(Merchant(
            "M-SHOP", town.shop_name, _brn(f"13486726{n}"), "ksic:47121",
            bank_code="011", account_no=town.bank_account, account_holder=town.shop_name))
        with store.tx() as tx:
            accounts.link(tx, town.account, town.card, municipality=town.mid)
            books.open_account(tx, books.BANK_OUTSIDE, municipality=town.mid)
            books.transfer(tx, [books.Transfer(books.BANK_OUTSIDE,
                                               books.pocket(town.account, "cash"), town.cash,
                                               "topup", f"topup:{town.account}")],
                           municipality=town.mid, at_ms=0)
        svc.set_balances({town.card: town.snapshot, town.loose: town.loose_snapshot},
                         municipality=town.mid)
        svc.deny(town.denied, "stolen", municipality=town.mid)
        town.till = _register(svc, town, town.till_id)
        town.bus = _register(svc, town, town.bus_id)
        Registry(store, town.mid).assign_terminal(town.till_id, "M-SHOP")
    # gimpo deny-lists goyang's card: never told to gimpo's terminals all the same
    svc.deny(goyang.card, "seen at the border", municipality=gimpo.mid)
    set_profiles(store, {goyang.card: "youth"}, municipality=goyang.mid)
    set_profiles(store, {gimpo.card: "adult"}, municipality=gimpo.mid)
    cross = 1_000
    assert goyang.till is not None and gimpo.till is not None
    svc.ingest(goyang.till_id, [_pay(goyang.till, goyang.card, goyang.paid, 10)])
    svc.ingest(gimpo.till_id, [_pay(gimpo.till, gimpo.card, gimpo.paid, 10),
                               _pay(gimpo.till, goyang.card, cross, 11)])
    now = int(time.time() * 1000) - 120_000
    for town in (goyang, gimpo):
        assert town.bus is not None
        svc.ingest(town.bus_id, [town.bus.entry("tap", town.card, town.fare, now,
                                                detail=tap_detail()),
                                 town.bus.entry("tap", town.loose, town.fare, now + 1000,
                                                detail=tap_detail())])
    return cross


@pytest.fixture
def world(store_url: str, tmp_path: Path) -> Iterator[tuple[CentralLog, Town, Town, int]]:  # noqa: F811
    svc = open_service(store_url, tmp_path / "data")
    goyang, gimpo = towns()
    cross = build(svc, goyang, gimpo)
    try:
        yield svc, goyang, gimpo, cross
    finally:
        svc.store.close()


class Caller:
    """Signed requests of one terminal, as the sync client makes them; every answer's
    signature is checked against the answer key the log's key names."""

    def __init__(self, srv: CentralProcess, terminal_id: str, key: Ed25519PrivateKey) -> None:
        self.srv = srv
        self.terminal_id = terminal_id
        self.key = key
        self.verifier = answer_verifier(srv)

    def call(self, method: str, path: str, body: bytes = b"") -> httpx.Response:
        when = int(time.time() * 1000)
        nonce = secrets.token_hex(16)
        sig = self.key.sign(request_message(method, path, when, nonce, body))
        resp = httpx.request(method, self.srv.url + path, content=body, headers={
            H_TERMINAL: self.terminal_id, H_TIME: str(when), H_NONCE: nonce,
            H_SIGNATURE: b64(sig)}, timeout=30)
        self.verifier.public_key.verify(base64.b64decode(resp.headers[H_SIGNATURE]),
                                        response_message(nonce, resp.status_code,
                                                         resp.content))
        assert resp.status_code == 200, resp.text
        return resp


def _week_points(svc: CentralLog) -> dict[str, int]:
    """This week's bus points by card as the store holds them (whatever the weekday)."""
    from central.incentive_rules import week_start
    from central.incentives import active_rules

    with svc.store.tx(write=False) as tx:
        rules = active_rules(tx, store_default=False)
        week = week_start(rules.calendar().today(int(time.time() * 1000))).isoformat()
        return {str(t): int(p) for t, p in tx.all(
            "SELECT card_token, points FROM incentive_weeks WHERE week_start = ?", (week,))}


def _config_text(answer: dict[str, Any]) -> str:
    """The config text a ``/v1/config`` answer's bundle carries ('' for none)."""
    if not answer["body"]:
        return ""
    payload = json.loads(base64.b64decode(json.loads(answer["body"])["payload"]))
    return str(payload["config"])


def _bundle_for(svc: CentralLog, tmp: Path, tid: str) -> None:
    """``central config --sign-for``: the operator signs the till's next config, with the
    facts of its own municipality's merchant."""
    toml = tmp / f"{tid}.toml"
    toml.write_text(dumps(DEFAULT.replace("terminal", id=tid, role="till", place="M-SHOP")),
                    encoding="utf-8")
    result = CliRunner().invoke(cli, ["central", "config", "--db", svc.store.url, "--data",
                                      str(svc.data_dir), "--sign-for", tid, str(toml)])
    assert result.exit_code == 0, result.output


def test_nothing_of_one_municipality_shows_through_the_other(
        world: tuple[CentralLog, Town, Town, int], tmp_path: Path) -> None:
    svc, goyang, gimpo, cross = world
    assert svc.data_dir is not None
    for town in (goyang, gimpo):
        _bundle_for(svc, tmp_path, town.till_id)
    weeks = _week_points(svc)
    answers: dict[str, dict[str, Any]] = {}
    with central(svc.store.url, svc.data_dir) as srv:
        for town in (goyang, gimpo):
            for c in (town.till, town.bus):
                assert c is not None
                caller = Caller(srv, c.terminal_id, c.key)
                texts = {route: caller.call("GET", route).text for route in (
                    "/v1/deny?since=0", "/v1/balances?since=0", "/v1/config",
                    "/v1/points?since=0&riders_since=0", "/v1/pockets?since=0")}
                # the terminal's own end-of-day totals go up signed too
                caller.call("POST", "/v1/totals", json.dumps(
                    {"day": DAY_TEXT, "totals": {"payment": [9, 99]}}).encode())
                answers[c.terminal_id] = {r: json.loads(t) for r, t in texts.items()}
                config = _config_text(answers[c.terminal_id]["/v1/config"])
                answers[c.terminal_id]["config"] = config
                answers[c.terminal_id]["text"] = "\n".join([*texts.values(), config])
    for town, other in ((goyang, gimpo), (gimpo, goyang)):
        for tid in (town.till_id, town.bus_id):
            got = answers[tid]
            for secret in other.secrets_():
                assert secret not in got["text"], (tid, secret)
            # the deny list: its own entry, never the other's card (gimpo's entry on
            # goyang's linked card included)
            assert got["/v1/deny?since=0"]["add"] == {town.denied: "stolen"}
            # balances: the snapshot less what the town's own terminals took from it
            assert got["/v1/balances?since=0"]["balances"] == {
                town.card: town.snapshot - town.paid - town.fare,
                town.loose: town.loose_snapshot - town.fare}
            points = got["/v1/points?since=0&riders_since=0"]
            mine = {t: p for t, p in weeks.items() if t in (town.card, town.loose)}
            assert {t: v[0] for t, v in points["points"].items()} == mine
            # the first weekday ride's fare back (none on a weekend or holiday)
            assert set(mine.values()) <= {town.fare}
            assert points["riders"]["changes"] == {
                town.card: "youth" if town is goyang else "adult"}
        assert answers[town.till_id]["/v1/config"]["version"] == 1
        till_config = answers[town.till_id]["config"]
        assert town.shop_name in till_config and f'"{town.till_id}"' in till_config
        # the till's pockets: its merchant's, its citizens' cards with their book balances
        pockets = answers[town.till_id]["/v1/pockets?since=0"]
        assert (pockets["municipality"], pockets["merchant"]) == (town.mid, "M-SHOP")
        assert pockets["cards"] == {town.card: {"cash": [town.cash - town.paid, [], None],
                                                "points": [0, [], None]}}
        assert answers[town.bus_id]["/v1/pockets?since=0"]["cards"] == {}
        assert answers[town.bus_id]["/v1/config"] == {
            "version": 0, "body": "", "time_ms": answers[town.bus_id]["/v1/config"]["time_ms"]}
    # the books: each citizen paid at home only; goyang's card at gimpo's till moved nothing
    with svc.store.tx(write=False) as tx:
        for town in (goyang, gimpo):
            held = {p.name: p.balance for p in accounts.pockets(
                tx, town.account, municipality=town.mid)}
            assert held == {"cash": town.cash - town.paid, "points": 0}
            assert books.balance(tx, books.merchant_payable("M-SHOP"),
                                 municipality=town.mid) == town.paid
        refs = tx.all("SELECT municipality_id, ref FROM book_transfers WHERE code = 'payment'")
    assert sorted(refs) == [(gimpo.mid, f"pay:{gimpo.till_id}:1:cash"),
                            (goyang.mid, f"pay:{goyang.till_id}:1:cash")]
    for town in (goyang, gimpo):
        assert books.check(svc.store, town.mid).balanced
    _reports_are_scoped(svc, goyang, gimpo, cross, tmp_path)


def _reports_are_scoped(svc: CentralLog, goyang: Town, gimpo: Town, cross: int,
                        tmp_path: Path) -> None:
    runner = CliRunner()
    for town, other in ((goyang, gimpo), (gimpo, goyang)):
        result = runner.invoke(cli, ["central", "report", "--db", svc.store.url, "--data",
                                     str(svc.data_dir), "--date", DAY_TEXT,
                                     "--municipality", town.mid, "--json"])
        assert result.exit_code == 1, result.output  # the totals differ: 9 / 99 reported
        doc = json.loads(result.stdout)
        assert doc["municipality"] == town.mid
        lines = {(x["terminal_id"], x["kind"]): (x["central_count"], x["central_amount"])
                 for x in doc["lines"] if x["central_count"]}
        own = [town.paid] + ([cross] if town is gimpo else [])
        assert lines == {(town.till_id, "payment"): (len(own), sum(own))}
        assert {x["terminal_id"] for x in doc["lines"]} == {town.till_id, town.bus_id}
        flags = doc["pocket_flags"]
        if town is gimpo:
            # goyang's card at gimpo's till: gimpo's flag, naming the card's municipality
            assert [(f["reason"], f["terminal_id"], f["seq"], f["card_token"])
                    for f in flags] == [("other_municipality", gimpo.till_id, 2, goyang.card)]
            assert json.loads(flags[0]["detail"]) == {"amount": cross,
                                                      "card_municipalities": [goyang.mid]}
            doc["pocket_flags"] = []  # the one place goyang's card is gimpo's business
        else:
            assert flags == []
        text = json.dumps(doc)
        for secret in other.secrets_():
            assert secret not in text, (town.mid, secret)
        assert report(svc, DAY_TEXT, town.mid).as_json()["lines"] == doc["lines"]
        # settlement: the town's merchant, its own payment only, to its own bank account
        run = settle(svc.store, DAY_TEXT, municipality=town.mid)
        assert [(s.merchant_id, s.gross, s.net, s.status) for s in run.settlements] == [
            ("M-SHOP", town.paid, town.paid, "pending")]
        bank = tmp_path / f"bank-{town.mid}.csv"
        write_bank_file(svc.store, DAY_TEXT, bank, municipality=town.mid)
        body = bank.read_text(encoding="utf-8")
        assert f",{town.bank_account.replace('-', '')},{town.shop_name},{town.paid}," in body
        for secret in other.secrets_():
            assert secret not in body
        checked = settlement_check(svc.store, DAY_TEXT, municipality=town.mid)
        assert [(x.merchant_id, x.books_gross) for x in checked.lines] == [
            ("M-SHOP", town.paid)]


def test_one_municipality_refuses_what_belongs_to_another(
        world: tuple[CentralLog, Town, Town, int]) -> None:
    svc, goyang, gimpo, _ = world
    with pytest.raises(municipalities.CrossMunicipalityError, match="belongs to municipality"):
        Registry(svc.store, goyang.mid).assign_terminal(gimpo.till_id, "M-SHOP")
    with pytest.raises(municipalities.CrossMunicipalityError, match="belongs to municipality"):
        assert gimpo.till is not None
        svc.add_terminal(gimpo.till_id, bytes.fromhex(public_hex(gimpo.till.key)),
                         municipality=goyang.mid)
    with pytest.raises(municipalities.CrossMunicipalityError, match="nothing was loaded"):
        svc.set_balances({"ff" * 32: 1, goyang.loose: 2}, municipality=gimpo.mid)
    with svc.store.tx(write=False) as tx:
        assert tx.one("SELECT 1 FROM balances WHERE card_token = ?", ("ff" * 32,)) is None
    with pytest.raises(municipalities.UnknownMunicipalityError, match="no municipality"):
        issue_codes(svc, municipality="incheon")
    with pytest.raises(municipalities.UnknownMunicipalityError):
        svc.deny("cc" * 32, "x", municipality="incheon")
    with pytest.raises(ConfigError, match="exists already"):
        municipalities.add(svc.store, gimpo.mid, "Gimpo", "Gimpo Pay")
    with pytest.raises(ConfigError, match="municipality id"):
        municipalities.add(svc.store, "Bad Id", "x", "y")
    # a code naming a terminal assigned to a merchant of another municipality
    Registry(svc.store, gimpo.mid).assign_terminal("TILL-GP-9", "M-SHOP")
    with pytest.raises(municipalities.CrossMunicipalityError, match="assigned to merchant"):
        issue_codes(svc, terminal_id="TILL-GP-9", municipality=goyang.mid)


def test_the_municipality_commands(store_url: str, tmp_path: Path) -> None:  # noqa: F811
    base = ["--db", store_url, "--data", str(tmp_path / "data")]
    runner = CliRunner()

    def run(command: str, *args: str, code: int = 0) -> str:
        result = runner.invoke(cli, ["central", *command.split(), *base, *args])
        assert result.exit_code == code, result.output
        return result.output

    run("init")
    assert json.loads(run("municipality list", "--json")) == [{
        "municipality_id": "default", "name": "default", "currency": "local currency",
        "created_ms": json.loads(run("municipality list", "--json"))[0]["created_ms"]}]
    assert "registered" in run("municipality add", "gimpo", "--name", "Gimpo",
                               "--currency", "Gimpo Pay")
    run("municipality add", "gimpo", "--name", "Gimpo", "--currency", "x", code=2)
    listed = json.loads(run("municipality list", "--json"))
    assert [(m["municipality_id"], m["currency"]) for m in listed] == [
        ("default", "local currency"), ("gimpo", "Gimpo Pay")]
    key = Ed25519PrivateKey.generate()
    assert "municipality gimpo" in run("terminal add", "BUS-GP-7", public_hex(key),
                                       "--municipality", "gimpo")
    run("terminal add", "BUS-X", public_hex(key), "--municipality", "nowhere", code=2)
    shown = json.loads(run("municipality show", "gimpo", "--json"))
    assert (shown["name"], shown["terminals"], shown["merchants"], shown["accounts"]) == (
        "Gimpo", 1, 0, 0)
    assert "Gimpo, currency Gimpo Pay" in run("municipality show", "gimpo")
    run("municipality show", "incheon", code=2)
    csv_file = tmp_path / "b.csv"
    csv_file.write_text("card_token,balance\n" + "d4" * 16 + ",4500\n", encoding="utf-8")
    assert "1 balances loaded" in run("balances", str(csv_file), "--municipality", "gimpo")
    run("deny", "e5" * 16, "--reason", "lost", "--municipality", "gimpo")
    run("deny", "f6" * 16, "--reason", "lost")
    svc = open_service(store_url, tmp_path / "data")
    try:
        assert svc.deny_delta(0, terminal="BUS-GP-7")["add"] == {"e5" * 16: "lost"}
        assert svc.deny_delta(0)["add"] == {"f6" * 16: "lost"}
        assert svc.balances_delta(0, terminal="BUS-GP-7")["balances"] == {"d4" * 16: 4500}
        assert svc.balances_delta(0)["balances"] == {}
    finally:
        svc.store.close()
    out = run("report", "--date", DAY_TEXT, "--municipality", "gimpo")
    assert "municipality gimpo" in out and "all terminals reconcile" in out
    run("report", "--date", DAY_TEXT, "--municipality", "incheon", code=2)


def test_an_enrolment_code_is_for_one_municipality(store_url: str,  # noqa: F811
                                                  tmp_path: Path) -> None:
    svc = open_service(store_url, tmp_path / "central")
    try:
        for n, (mid, shop) in enumerate((("goyang", "Ilsan Farm Store"),
                                         ("gimpo", "Gimpo Riverside Bakery"))):
            municipalities.add(svc.store, mid, mid.title(), f"{mid.title()} Pay")
            Registry(svc.store, mid).add(Merchant("M-SHOP", shop, _brn(f"22081123{n}"),
                                                  "ksic:47121"))
    finally:
        svc.store.close()
    with localpay_central(store_url, tmp_path / "central") as srv:
        code = issue_code(srv, "--role", "till", "--place", "M-SHOP", "--municipality",
                          "gimpo")
        home = tmp_path / "till"
        result = provision(home, srv, code, "--role", "till", "--merchant", "M-SHOP",
                           "--no-selftest")
        assert result.exit_code == 0, result.output
    config = Home(home).config()
    # the merchant of the code's municipality, though goyang has one of the same id
    assert config.merchant.name == "Gimpo Riverside Bakery"
    svc = open_service(store_url, tmp_path / "central")
    try:
        with svc.store.tx(write=False) as tx:
            assert municipalities.of_terminal(tx, config.terminal.id) == "gimpo"
            assert tx.all("SELECT municipality_id, merchant_id FROM merchant_terminals "
                          "WHERE terminal_id = ?", (config.terminal.id,)) == [
                ("gimpo", "M-SHOP")]
    finally:
        svc.store.close()


def test_a_single_municipality_install_needs_no_setting(store_url: str,  # noqa: F811
                                                        tmp_path: Path) -> None:
    """No flag anywhere: every terminal is told every card, as before."""
    runner = CliRunner()
    base = ["--db", store_url, "--data", str(tmp_path / "data")]
    key = Ed25519PrivateKey.generate()
    assert runner.invoke(cli, ["central", "init", *base]).exit_code == 0
    for args in (["terminal", "add", "BUS-1", public_hex(key)],
                 ["deny", "a1" * 16, "--reason", "stolen"]):
        result = runner.invoke(cli, ["central", args[0], *base, *args[1:]]
                               if args[0] == "deny" else
                               ["central", args[0], args[1], *base, *args[2:]])
        assert result.exit_code == 0, result.output
    svc = open_service(store_url, tmp_path / "data")
    svc.set_balances({"b2" * 32: 7000, "c3" * 32: 100})
    with svc.store.tx() as tx:
        accounts.link(tx, "citizen-1", "c3" * 32)  # default's own account: still told
    set_profiles(svc.store, {"c3" * 32: "youth"})
    svc.store.close()
    with central(store_url, tmp_path / "data") as srv:
        caller = Caller(srv, "BUS-1", key)
        deny = caller.call("GET", "/v1/deny?since=0").json()
        balances = caller.call("GET", "/v1/balances?since=0").json()
        points = caller.call("GET", "/v1/points?since=0&riders_since=0").json()
    assert (deny["version"], deny["add"], deny["remove"]) == (1, {"a1" * 16: "stolen"}, [])
    assert (balances["version"], balances["balances"]) == (1, {"b2" * 32: 7000,
                                                              "c3" * 32: 100})
    assert points["riders"]["changes"] == {"c3" * 32: "youth"}
    svc = open_service(store_url, tmp_path / "data")
    try:
        with svc.store.tx(write=False) as tx:
            assert municipalities.ids(tx) == ["default"]
            assert municipalities.of_terminal(tx, "BUS-1") == "default"
        assert report(svc, DAY_TEXT).municipality == "default"
    finally:
        svc.store.close()


def test_a_store_from_before_municipalities_is_migrated(store_url: str) -> None:  # noqa: F811
    """Existing rows go to ``default``; a terminal already assigned to another
    municipality's merchant goes there, and every municipality named is registered."""
    store = open_store(store_url)
    with store.tx() as tx:
        # the schema as it was: no registry, no municipality on terminals, deny, balances
        tx.run("DROP TABLE municipalities")
        for table, index in (("terminals", "terminals_municipality"),
                             ("deny_changes", "deny_municipality"),
                             ("balances", "balances_municipality")):
            tx.run(f"DROP INDEX {index}")
            tx.run(f"ALTER TABLE {table} DROP COLUMN municipality_id")
        tx.run("ALTER TABLE enroll_codes DROP COLUMN municipality_id")
        for tid in ("TILL-OLD", "TILL-GP"):
            tx.run("INSERT INTO terminals (terminal_id, public_key, lat, lon, last_seq, "
                   "last_hash, added_ms) VALUES (?, ?, NULL, NULL, 0, ?, 0)",
                   (tid, bytes(32) if tid == "TILL-OLD" else bytes([1] * 32), bytes(32)))
        tx.run("INSERT INTO deny_changes VALUES (1, ?, 'add', 'old', 0)", ("a1" * 32,))
        tx.run("INSERT INTO balances VALUES (?, 500, 1)", ("b2" * 32,))
    Registry(store, "gimpo").add(Merchant("M-1", "Shop", _brn("105871111"), "ksic:47121"))
    with store.tx() as tx:
        tx.run("INSERT INTO merchant_terminals VALUES ('gimpo', 'TILL-GP', 'M-1', 0)")
    store.close()
    store = open_store(store_url)
    try:
        with store.tx(write=False) as tx:
            assert municipalities.ids(tx) == ["default", "gimpo"]
            assert tx.all("SELECT terminal_id, municipality_id FROM terminals ORDER BY 1") == [
                ("TILL-GP", "gimpo"), ("TILL-OLD", "default")]
            assert tx.all("SELECT municipality_id FROM deny_changes") == [("default",)]
            assert tx.all("SELECT municipality_id FROM balances") == [("default",)]
    finally:
        store.close()
