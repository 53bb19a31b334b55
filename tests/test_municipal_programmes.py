"""Each municipality has its own incentive programme: rules versions, caps, first rides,
rider profiles, payouts and month runs of its own, credited by its terminals' entries.

One card rides and buys in ``default``, goyang and gimpo in the same week (2025-03-10 to
03-16: no public holiday), on SQLite and a real PostgreSQL. Every figure of points is
worked out here from the programmes' settings, written again in this file, not read from
the code under test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import accounts, books, municipalities, open_service
from central.incentive_rules import default_rules_text
from central.incentives import NoProgrammeError, credit_log, points_delta
from central.payouts import PointsBudgetShortError, fund_points, payout, statement
from central.profiles import profiles_delta, set_profiles
from central.service import CentralLog
from central.store import open_store
from central.versions import load_rules
from firmware_cfg.keys import public_hex
from localpay.cli import cli
from terminal.qr import campaign
from tests.incentives_data import Chain, pay_detail, seoul_ms, tap_detail
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401

DEFAULT, GOYANG, GIMPO = "default", "goyang", "gimpo"
CARD = "c1" * 32

#: each programme's settings, as its rules file says them (default: the shipped file)
CAPS = {DEFAULT: {"adult": 2900, "youth": 2020},
        GOYANG: {"adult": 2000, "youth": 800},
        GIMPO: {"adult": 4000, "youth": 1000}}
RATE_BP = {DEFAULT: 30, GOYANG: 100, GIMPO: 50}

#: (day of March 2025, hour, fare) of the card's rides at each municipality's bus
RIDES = {DEFAULT: [(10, 8, 1500), (10, 18, 1500), (11, 8, 1500), (12, 8, 1500), (15, 9, 1500)],
         GOYANG: [(10, 9, 1500), (11, 9, 1500), (11, 19, 1500), (12, 9, 1500), (13, 9, 1500)],
         GIMPO: [(10, 10, 1400), (11, 10, 1400), (12, 10, 1400), (13, 10, 1400),
                 (14, 10, 1400)]}
#: (day, amount) of the card's local-food payment at each municipality's till, and the
#: refund of part of it the next day (0: none)
PAYMENTS = {DEFAULT: (11, 40_000, 0), GOYANG: (11, 50_000, 20_000), GIMPO: (12, 30_000, 0)}


def rules_text(municipality: str, version: int = 1, effective: str = "2025-01-01",
               caps: dict[str, int] | None = None, rate_bp: int | None = None) -> str:
    caps = caps or CAPS[municipality]
    rate = RATE_BP[municipality] if rate_bp is None else rate_bp
    text = default_rules_text()
    for old, new in (("version = 1", f"version = {version}"),
                     ("effective_from = 2025-01-01", f"effective_from = {effective}"),
                     ("adult = 2900", f"adult = {caps['adult']}"),
                     ("youth = 2020", f"youth = {caps['youth']}"),
                     ("rate_bp = 30", f"rate_bp = {rate}")):
        assert old in text
        text = text.replace(old, new, 1)
    return text


def bus_points(rides: list[tuple[int, int, int]], cap_on: Any) -> list[int]:
    """The points of each weekday's first ride, in day order, under the week's cap: worked
    out from the programme's rule (first ride of a weekday, fare back, capped weekly)."""
    firsts: dict[int, int] = {}
    for day, _hour, fare in sorted(rides):
        if date(2025, 3, day).weekday() < 5 and day not in firsts:
            firsts[day] = fare
    total, out = 0, []
    for day in sorted(firsts):
        cap = cap_on(day)
        p = min(firsts[day], cap - total) if cap > total else 0
        total += p
        out.append(p)
    return out


def food_points(municipality: str) -> int:
    _day, amount, refund = PAYMENTS[municipality]
    rate = RATE_BP[municipality]
    # what the payment earns, less what the refund takes back of it
    return amount * rate // 10_000 + ((amount - refund) * rate // 10_000
                                      - amount * rate // 10_000 if refund else 0)


def expected(municipality: str, rider: str = "adult") -> tuple[int, int]:
    """(bus points, all points) of the card in ``municipality``'s programme."""
    bus = sum(bus_points(RIDES[municipality], lambda _d: CAPS[municipality][rider]))
    return bus, bus + food_points(municipality)


@dataclass
class World:
    svc: CentralLog
    bus: dict[str, Chain] = field(default_factory=dict)
    till: dict[str, Chain] = field(default_factory=dict)

    @property
    def store(self) -> Any:
        return self.svc.store


def add_town(w: World, mid: str, with_rules: bool = True) -> None:
    if mid != DEFAULT:
        municipalities.add(w.store, mid, mid.title(), f"{mid.title()} Pay")
        if with_rules:
            load_rules(w.store, rules_text(mid), municipality=mid)
    for kind, chains in (("BUS", w.bus), ("TILL", w.till)):
        c = Chain(f"{kind}-{mid.upper()}")
        w.svc.add_terminal(c.terminal_id, bytes.fromhex(public_hex(c.key)), municipality=mid)
        chains[mid] = c


def ride_and_buy(w: World, mid: str, card: str = CARD) -> None:
    bus, till = w.bus[mid], w.till[mid]
    w.svc.ingest(bus.terminal_id, [bus.entry("tap", card, fare, seoul_ms(2025, 3, d, h),
                                             detail=tap_detail())
                                   for d, h, fare in RIDES[mid]])
    day, amount, refund = PAYMENTS[mid]
    entries = [till.entry("payment", card, amount, seoul_ms(2025, 3, day, 12),
                          detail=pay_detail(), place="M-1")]
    if refund:
        entries.append(till.entry("refund", card, refund, seoul_ms(2025, 3, day + 1, 12),
                                  ref_seq=1, place="M-1",
                                  detail=json.dumps({"merchant_category": "local_food"})))
    w.svc.ingest(till.terminal_id, entries)
    credit_log(w.store)   # the follower's errors are logged only: here they fail the test


@pytest.fixture
def world(store_url: str, tmp_path: Path) -> Iterator[World]:  # noqa: F811
    w = World(open_service(store_url, tmp_path / "data"))
    try:
        for mid in (DEFAULT, GOYANG, GIMPO):
            add_town(w, mid)
        yield w
    finally:
        w.store.close()


def earned(w: World, mid: str, card: str = CARD) -> tuple[int, int]:
    st = statement(w.store, card, municipality=mid)
    return sum(e["points"] for e in st["entries"] if e["rule"] == "bus"), int(st["earned"])


def week_row(w: World, mid: str, card: str = CARD) -> tuple[int, int] | None:
    with w.store.tx(write=False) as tx:
        row = tx.one("SELECT points, days_mask FROM incentive_weeks WHERE municipality_id = ? "
                     "AND card_token = ? AND week_start = '2025-03-10'", (mid, card))
    return None if row is None else (int(row[0]), int(row[1]))


def weekday_mask(rides: list[tuple[int, int, int]]) -> int:
    return sum({1 << date(2025, 3, d).weekday() for d, _, _ in rides
                if date(2025, 3, d).weekday() < 5})


# -- crediting ------------------------------------------------------------------------------


def test_each_municipality_credits_under_its_own_programme(world: World) -> None:
    """The same card riding and buying in three municipalities earns under each programme
    separately: its own caps, first rides, local-food rate; each week apart."""
    for mid in (DEFAULT, GOYANG, GIMPO):
        ride_and_buy(world, mid)
    for mid in (DEFAULT, GOYANG, GIMPO):
        assert earned(world, mid) == expected(mid), mid
        bus, _ = expected(mid)
        assert week_row(world, mid) == (bus, weekday_mask(RIDES[mid])), mid
        # every credit of the statement is of that municipality's terminals
        st = statement(world.store, CARD, municipality=mid)
        assert {e["terminal_id"] for e in st["entries"]} == {f"BUS-{mid.upper()}",
                                                             f"TILL-{mid.upper()}"}
    # the figures themselves, so that the three programmes are seen to differ
    assert [expected(m) for m in (DEFAULT, GOYANG, GIMPO)] == [
        (1500 + 1400, 2900 + 120), (1500 + 500, 2000 + 500 - 200),
        (1400 + 1400 + 1200, 4000 + 150)]
    # what a terminal of each municipality is told: its own programme's week and rules
    now = seoul_ms(2025, 3, 14, 20)
    for mid in (DEFAULT, GOYANG, GIMPO):
        doc = points_delta(world.store, 0, now, municipality=mid)
        assert doc["points"][CARD][0] == expected(mid)[0]
        assert doc["rules"]["weekly_cap"] == CAPS[mid]
        assert doc["rules"]["rate_bp"] == RATE_BP[mid]


def test_caps_are_separate(world: World) -> None:
    """goyang's cap reached does not stop the card earning in gimpo the same days, and
    gimpo's rides do not count towards goyang's cap."""
    ride_and_buy(world, GOYANG)
    assert week_row(world, GOYANG) == (CAPS[GOYANG]["adult"], weekday_mask(RIDES[GOYANG]))
    ride_and_buy(world, GIMPO)
    assert earned(world, GIMPO) == expected(GIMPO)
    assert earned(world, GOYANG) == expected(GOYANG)
    # the figure of gimpo's week is its own rides' only
    assert week_row(world, GIMPO) == (sum(bus_points(RIDES[GIMPO], lambda _d: 4000)),
                                      weekday_mask(RIDES[GIMPO]))


def test_a_profile_in_one_municipality_does_not_apply_in_another(world: World) -> None:
    set_profiles(world.store, {CARD: "youth"}, municipality=GOYANG)
    for mid in (DEFAULT, GOYANG, GIMPO):
        ride_and_buy(world, mid)
    assert earned(world, GOYANG) == expected(GOYANG, "youth")
    assert earned(world, GOYANG)[0] == 800                 # youth's cap in goyang
    assert earned(world, GIMPO) == expected(GIMPO, "adult")
    assert earned(world, DEFAULT) == expected(DEFAULT, "adult")
    assert statement(world.store, CARD, municipality=GOYANG)["rider"] == "youth"
    assert statement(world.store, CARD, municipality=GIMPO)["rider"] is None
    # each municipality's validators hear of its own profiles only
    assert profiles_delta(world.store, 0, municipality=GOYANG)["changes"] == {CARD: "youth"}
    assert profiles_delta(world.store, 0, municipality=GIMPO)["changes"] == {}


def test_a_rules_load_in_one_leaves_the_others_unchanged(world: World) -> None:
    for mid in (DEFAULT, GOYANG, GIMPO):
        ride_and_buy(world, mid)
    before = {m: statement(world.store, CARD, municipality=m) for m in (DEFAULT, GIMPO)}
    weeks = {m: week_row(world, m) for m in (DEFAULT, GIMPO)}
    # goyang's version 2 from Wednesday 12th: adult cap 2,500 (recomputed as adjustments)
    load_rules(world.store, rules_text(GOYANG, 2, "2025-03-12", {"adult": 2500, "youth": 800}),
               recredit=True, now_ms=seoul_ms(2025, 3, 20), municipality=GOYANG)
    credit_log(world.store)
    new_bus = sum(bus_points(RIDES[GOYANG], lambda d: 2500 if d >= 12 else 2000))
    assert new_bus == 1500 + 500 + 500
    assert earned(world, GOYANG) == (new_bus, new_bus + food_points(GOYANG))
    for mid in (DEFAULT, GIMPO):
        assert statement(world.store, CARD, municipality=mid) == before[mid]
        assert week_row(world, mid) == weeks[mid]
    assert versions_listed(world, "--municipality", GOYANG) == [1, 2]
    assert versions_listed(world) == [1]
    assert versions_listed(world, "--municipality", GIMPO) == [1]


def versions_listed(w: World, *options: str) -> list[int]:
    """The versions ``central rules versions`` lists."""
    out = _cli(w, ["rules", "versions"], *options)
    return [int(line.split()[1]) for line in out.splitlines() if line]


def _cli(w: World, command: list[str], *options: str, code: int = 0) -> str:
    assert w.svc.data_dir is not None
    result = CliRunner().invoke(cli, ["central", *command, "--db", w.store.url,
                                      "--data", str(w.svc.data_dir), *options])
    assert result.exit_code == code, result.output
    return result.output


def test_a_campaign_is_claimed_once_in_each_programme(world: World) -> None:
    """The same campaign id in two programmes: a card (and its wallet) claims it once in
    each, for what each programme's campaign gives at most."""
    key = Ed25519PrivateKey.generate()
    gives = {GOYANG: 1000, GIMPO: 700}
    for mid, points in gives.items():
        text = rules_text(mid, 2, "2025-04-01").replace(
            "keys = []", f'keys = ["{public_hex(key)}"]\n\n[campaigns.events.tree-day]\n'
            f"points = {points}\nstart = 2025-04-05\nend = 2025-04-06")
        load_rules(world.store, text, recredit=True, municipality=mid)
    when = seoul_ms(2025, 4, 5, 11)
    code = campaign.make(key, "tree-day", "w-1", 1000, valid_from=when // 1000 - 60)
    detail = json.dumps({"campaign": "tree-day", "code": code})
    for mid in (GOYANG, GIMPO, GOYANG):      # goyang's second claim earns nothing
        till = world.till[mid]
        world.svc.ingest(till.terminal_id, [till.entry("incentive", CARD, 0, when,
                                                       detail=detail)])
        credit_log(world.store)
    for mid, points in gives.items():
        st = statement(world.store, CARD, municipality=mid)
        assert [(e["rule"], e["points"]) for e in st["entries"]] == [
            ("campaign", min(1000, points))]
    with world.store.tx(write=False) as tx:
        assert sorted(tx.all("SELECT municipality_id, holder FROM incentive_claims")) == [
            (GIMPO, "w-1"), (GOYANG, "w-1")]


# -- a municipality before its rules -------------------------------------------------------


def test_a_new_municipality_earns_nothing_until_its_rules_and_then_once(world: World) -> None:
    """Before its operator loads rules, a new municipality's entries earn nothing; its
    first version taking effect in the past credits its entries from that day, once."""
    add_town(world, "paju", with_rules=False)
    RIDES["paju"], PAYMENTS["paju"] = RIDES[GIMPO], (13, 60_000, 0)
    CAPS["paju"], RATE_BP["paju"] = {"adult": 3000, "youth": 1000}, 200
    try:
        ride_and_buy(world, "paju")
        assert earned(world, "paju") == (0, 0)
        assert week_row(world, "paju") is None
        out = _cli(world, ["rules", "show"], "--municipality", "paju", code=2)
        assert "no incentive programme" in out
        with pytest.raises(NoProgrammeError):
            payout(world.store, "2025-03", seoul_ms(2025, 4, 2), municipality="paju")
        # version 1 from Wednesday 12th: Monday's and Tuesday's rides earn nothing
        load_rules(world.store, rules_text("paju", 1, "2025-03-12"), municipality="paju")
        bus = sum(bus_points([r for r in RIDES["paju"] if r[0] >= 12], lambda _d: 3000))
        assert bus == 1400 + 1400 + 200
        food = 60_000 * 200 // 10_000
        assert earned(world, "paju") == (bus, bus + food)
        credit_log(world.store)                               # nothing twice
        assert earned(world, "paju") == (bus, bus + food)
        assert week_row(world, "paju") == (bus, weekday_mask(
            [r for r in RIDES["paju"] if r[0] >= 12]))
        # later entries are credited as they come: Friday's second ride earns nothing, the
        # next Monday's first ride its fare (a new week)
        bus_chain = world.bus["paju"]
        world.svc.ingest(bus_chain.terminal_id, [
            bus_chain.entry("tap", CARD, 1400, seoul_ms(2025, 3, 14, 19), detail=tap_detail()),
            bus_chain.entry("tap", CARD, 1400, seoul_ms(2025, 3, 17, 8), detail=tap_detail())])
        credit_log(world.store)
        assert earned(world, "paju") == (bus + 1400, bus + 1400 + food)
        # the others' figures are what they were: nothing, nothing ridden there
        assert earned(world, GIMPO) == (0, 0) and earned(world, DEFAULT) == (0, 0)
        assert versions_listed(world, "--municipality", "paju") == [1]
    finally:
        RIDES.pop("paju", None)
        PAYMENTS.pop("paju", None)
        CAPS.pop("paju", None)
        RATE_BP.pop("paju", None)


# -- payouts --------------------------------------------------------------------------------


def pocket_points(w: World, account: str, mid: str) -> int:
    with w.store.tx(write=False) as tx:
        return {p.name: p.balance for p in accounts.pockets(tx, account, municipality=mid)
                }.get("points", 0)


def budget_left(w: World, mid: str) -> int:
    with w.store.tx(write=False) as tx:
        return books.balance(tx, books.programme_points("incentives"), municipality=mid)


def test_a_payout_pays_only_its_municipality_from_its_budget(world: World,
                                                             tmp_path: Path) -> None:
    for mid in (DEFAULT, GOYANG, GIMPO):
        ride_and_buy(world, mid)
    with world.store.tx() as tx:
        for mid in (GOYANG, GIMPO):
            accounts.link(tx, f"{mid}-citizen", CARD, municipality=mid)
    fund_points(world.store, 10_000, "fund-1", municipality=GOYANG)
    after = seoul_ms(2025, 4, 2)
    _, goyang_total = expected(GOYANG)
    _, gimpo_total = expected(GIMPO)
    _, default_total = expected(DEFAULT)
    got = payout(world.store, "2025-03", after, municipality=GOYANG)
    assert (got.points, got.pocket_points, got.pocket_cards) == (goyang_total, goyang_total, 1)
    assert pocket_points(world, "goyang-citizen", GOYANG) == goyang_total
    assert budget_left(world, GOYANG) == 10_000 - goyang_total
    # gimpo's and default's credits are not paid by goyang's run
    for mid in (GIMPO, DEFAULT):
        st = statement(world.store, CARD, municipality=mid)
        assert all(e["paid_in"] is None for e in st["entries"]) and st["payouts"] == []
    assert pocket_points(world, "gimpo-citizen", GIMPO) == 0
    # gimpo's run pays from gimpo's budget: none yet, so nothing at all
    with pytest.raises(PointsBudgetShortError):
        payout(world.store, "2025-03", after, municipality=GIMPO)
    assert statement(world.store, CARD, municipality=GIMPO)["pending"] == gimpo_total
    # through the commands, as an operator runs them
    settlement = tmp_path / "gimpo.csv"
    _cli(world, ["payout-fund"], "--amount", "5000", "--ref", "g-1", "--municipality", GIMPO)
    out = _cli(world, ["payout"], "--month", "2025-03", "--municipality", GIMPO, "--json",
               "--settlement", str(settlement))
    doc = json.loads(out)
    assert (doc["points"], doc["pocket_points"], doc["already"]) == (gimpo_total, gimpo_total,
                                                                     False)
    assert settlement.read_text().splitlines()[1:] == [
        f"{CARD},,2025-03,{expected(GIMPO)[0]},{food_points(GIMPO)},0,0,{gimpo_total}"]
    assert pocket_points(world, "gimpo-citizen", GIMPO) == gimpo_total
    assert budget_left(world, GIMPO) == 5000 - gimpo_total
    assert pocket_points(world, "goyang-citizen", GOYANG) == goyang_total   # unchanged
    # default: the card has no account there, nor a balance: its points are held
    held = payout(world.store, "2025-03", after)
    assert (held.points, held.held_points, held.held_cards) == (0, default_total, 1)
    # a second run of goyang's month answers what the first did
    again = payout(world.store, "2025-03", after, municipality=GOYANG)
    assert (again.already, again.points) == (True, goyang_total)
    for mid in (DEFAULT, GOYANG, GIMPO):
        assert books.check(world.store, mid).balanced, mid
    assert books.check(world.store).balanced


# -- a store from before ----------------------------------------------------------------------

#: the incentive tables as they were before programmes per municipality: columns, then keys
_OLD = {
    "incentive_rules": (("version", "sha256", "body", "loaded_ms"),
                        "version BIGINT PRIMARY KEY, sha256 TEXT NOT NULL, body TEXT NOT NULL, "
                        "loaded_ms BIGINT NOT NULL"),
    "incentive_weeks": (("card_token", "week_start", "points", "days_mask", "version", "firsts"),
                        "card_token TEXT NOT NULL, week_start TEXT NOT NULL, points BIGINT NOT "
                        "NULL, days_mask INTEGER NOT NULL, version BIGINT NOT NULL, firsts TEXT "
                        "NOT NULL DEFAULT '', PRIMARY KEY (card_token, week_start)"),
    "incentive_profiles": (("card_token", "rider", "updated_ms", "version"),
                           "card_token TEXT PRIMARY KEY, rider TEXT NOT NULL, updated_ms BIGINT "
                           "NOT NULL, version BIGINT NOT NULL DEFAULT 0"),
    "incentive_claims": (("campaign_id", "card_token", "holder", "terminal_id", "seq"),
                         "campaign_id TEXT NOT NULL, card_token TEXT NOT NULL, holder TEXT NOT "
                         "NULL, terminal_id TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY "
                         "(campaign_id, card_token), UNIQUE (campaign_id, holder)"),
    "incentive_payouts": (("card_token", "month", "points", "paid", "carry", "status",
                           "balance_version", "paid_ms"),
                          "card_token TEXT NOT NULL, month TEXT NOT NULL, points BIGINT NOT "
                          "NULL, paid BIGINT NOT NULL, carry BIGINT NOT NULL, status TEXT NOT "
                          "NULL, balance_version BIGINT, paid_ms BIGINT NOT NULL, PRIMARY KEY "
                          "(card_token, month)"),
    "incentive_runs": (("month", "cards", "points", "held_cards", "held_points",
                        "balance_version", "ran_ms"),
                       "month TEXT PRIMARY KEY, cards BIGINT NOT NULL, points BIGINT NOT NULL, "
                       "held_cards BIGINT NOT NULL, held_points BIGINT NOT NULL, "
                       "balance_version BIGINT, ran_ms BIGINT NOT NULL"),
}


def _make_old(url: str) -> None:
    """Put the store's incentive tables back into their form from before."""
    store = open_store(url)
    try:
        with store.tx() as tx:
            for index in ("incentive_weeks_version", "incentive_weeks_card",
                          "incentive_profiles_card", "incentive_profiles_version",
                          "incentive_credits_municipality"):
                tx.run(f"DROP INDEX {index}")
            for table, (names, ddl) in _OLD.items():
                tx.run(f"CREATE TABLE {table}_was ({ddl})")
                tx.run(f"INSERT INTO {table}_was ({', '.join(names)}) SELECT "
                       f"{', '.join(names)} FROM {table}")
                tx.run(f"DROP TABLE {table}")
                tx.run(f"ALTER TABLE {table}_was RENAME TO {table}")
            for table in ("incentive_credits", "incentive_adjustments"):
                tx.run(f"ALTER TABLE {table} DROP COLUMN municipality_id")
            tx.run("CREATE INDEX incentive_weeks_version ON incentive_weeks "
                   "(week_start, version)")
            tx.run("CREATE INDEX incentive_profiles_version ON incentive_profiles (version)")
            for table in (*_OLD, "incentive_credits", "incentive_adjustments"):
                assert "municipality_id" not in store.columns(tx, table)
    finally:
        store.close()


def test_a_store_from_before_keeps_its_credits_under_default(store_url: str,  # noqa: F811
                                                            tmp_path: Path) -> None:
    w = World(open_service(store_url, tmp_path / "data"))
    try:
        add_town(w, DEFAULT)
        set_profiles(w.store, {CARD: "youth"})
        ride_and_buy(w, DEFAULT)
        payout(w.store, "2025-03", seoul_ms(2025, 4, 2))
        before = statement(w.store, CARD)
    finally:
        w.store.close()
    bus, total = expected(DEFAULT, "youth")
    assert (sum(e["points"] for e in before["entries"] if e["rule"] == "bus"),
            before["earned"]) == (bus, total)
    _make_old(store_url)
    w = World(open_service(store_url, tmp_path / "data"))
    try:
        assert statement(w.store, CARD) == before
        assert before["payouts"] == [{"month": "2025-03", "points": total, "paid": 0,
                                      "carry": total, "status": "held"}]
        with w.store.tx(write=False) as tx:
            for table in ("incentive_rules", "incentive_weeks", "incentive_profiles",
                          "incentive_payouts", "incentive_runs", "incentive_credits",
                          "incentive_adjustments"):
                assert {str(r[0]) for r in tx.all(
                    f"SELECT DISTINCT municipality_id FROM {table}")} <= {DEFAULT}, table
            assert tx.one("SELECT COUNT(*) FROM incentive_rules")[0] == 1  # type: ignore[index]
        # crediting goes on from the migrated week: the youth cap is met already
        assert week_row(w, DEFAULT) == (bus, weekday_mask(RIDES[DEFAULT]))
        c2 = Chain("BUS-DEFAULT-2")
        w.svc.add_terminal(c2.terminal_id, bytes.fromhex(public_hex(c2.key)))
        w.svc.ingest(c2.terminal_id, [c2.entry("tap", CARD, 1500, seoul_ms(2025, 3, 14, 8),
                                               detail=tap_detail())])
        credit_log(w.store)
        youth_cap = CAPS[DEFAULT]["youth"]
        assert statement(w.store, CARD)["earned"] == total + (youth_cap - bus)
        # a second opening changes nothing
        w.store.close()
        w = World(open_service(store_url, tmp_path / "data"))
        assert statement(w.store, CARD)["earned"] == total + (youth_cap - bus)
    finally:
        w.store.close()
