"""The console's data (central/console_data.py, central/console_data_programme.py) over a
real PostgreSQL store and SQLite (the default store), its state built by the product's own
paths: signed batches ingested (with the balance and fraud hooks, crediting and posting to
the books following), payouts, allowances and settlements run by their functions. Every
figure of money or points is set against an independent computation written out here."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import accounts, allowances, books
from central import open_service as open_central
from central.console_data import (
    CONFIRMED,
    DISMISSED,
    FlagDecidedError,
    UnknownFlagError,
    config_versions,
    confirm_flag,
    day_overview,
    dismiss_flag,
    entries_of,
    fleet,
    fraud_flags,
    issue_enrolment_code,
    publish_config,
)
from central.console_data_programme import (
    allowance_months,
    payout_file,
    payout_runs,
    points_year,
    settlement_day,
    settlement_days,
)
from central.enroll import load_operator_key
from central.merchants import Merchant, Registry
from central.payouts import fund_points, payout, write_settlement
from central.service import CentralLog
from central.settlement import settle
from firmware_cfg import bundle as bundles
from firmware_cfg.config import DEFAULT, dumps
from firmware_cfg.keys import public_hex
from localpay.cli.bench.console_seed import CLOCKS, seed_fleet
from localpay.errors import ConfigError
from tests.incentives_data import chain, seoul_ms
from tests.payout_world import A_CARD, B_CARD, NOV_2, payout_world
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401
from tests.test_allowances import spend as spend_allowance
from tests.test_settlement import LATER, brn
from tests.test_spending import back, fund, pay, till

DAY = "2026-11-20"  # tests.test_spending's day
CARD_A, CARD_Y, CARD_Z = "aa" * 32, "bb" * 32, "cc" * 32
SHOP = Merchant("LF01", "Shop LF01", brn(1), "ksic:47211", bank_code="011",
                account_no="301-0000-0001-11", account_holder="Owner LF01")


@pytest.fixture
def svc(store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    """A service crediting and posting to the books as batches arrive; books checked to
    balance afterwards."""
    yield from payout_world(store_url)


# -- a day -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleDay:
    """What :func:`sample_day` sent, and its figures summed here."""

    sent: list[Any]
    taps: list[Any]
    #: kind -> [count, amount] of every entry sent
    kinds: dict[str, list[int]]
    #: what the cash pocket paid of the two payments, and what no pocket covered
    paid_cash: int
    owed: int


def sample_day(svc: CentralLog) -> SampleDay:
    """On :data:`DAY`: shop LF01's till pays 12,000 and 10,000 from card A (20,000 in its
    cash pocket) and refunds the first; bus BUS-7 taps card Z (1,000 held: an overdraft)
    and card Y; the till reports its totals right, the bus one tap short."""
    Registry(svc.store).add(SHOP)
    shop = till(svc, "T-LF01", SHOP)
    bus = chain(svc, "BUS-7")
    fund(svc, "A", CARD_A, cash=20_000)
    svc.set_balances({CARD_Z: 1_000})
    sent = [pay(shop, CARD_A, 12_000, 10), pay(shop, CARD_A, 10_000, 11),
            back(shop, CARD_A, 12_000, 1, hour=12)]
    svc.ingest("T-LF01", sent)
    taps = [bus.tap(CARD_Z, seoul_ms(2026, 11, 20, 8)), bus.tap(CARD_Y, seoul_ms(2026, 11, 20, 9))]
    svc.ingest("BUS-7", taps)
    svc.report_totals("T-LF01", DAY, {"payment": (2, 22_000), "refund": (1, 12_000)})
    svc.report_totals("BUS-7", DAY, {"tap": (1, 1_500)})  # one tap short

    # what was sent, summed here
    kinds: dict[str, list[int]] = {}
    for e in sent + taps:
        kinds.setdefault(e.kind, [0, 0])
        kinds[e.kind][0] += 1
        kinds[e.kind][1] += e.amount
    # the cash pocket pays while it holds, the rest is owed; the refund gives back payment 1
    cash, paid_cash, owed = 20_000, 0, 0
    for amount in (12_000, 10_000):
        take = min(cash, amount)
        cash -= take
        paid_cash += take
        owed += amount - take
    return SampleDay(sent, taps, kinds, paid_cash, owed)


def test_a_day_totals_differences_and_problems_link_to_their_entries(svc: CentralLog) -> None:
    sample = sample_day(svc)
    kinds, paid_cash, owed = sample.kinds, sample.paid_cash, sample.owed

    day = day_overview(svc, DAY)
    assert not day.clean
    assert {k.kind: [k.count, k.amount] for k in day.kinds} == kinds
    assert [(m.merchant_id, m.name, m.kind, m.count, m.amount) for m in day.merchants] == [
        ("LF01", "Shop LF01", "payment", 2, 22_000), ("LF01", "Shop LF01", "refund", 1, 12_000)]
    assert {p.pocket: (p.payments, p.paid, p.refunded, p.net) for p in day.pockets} == {
        "cash": (2, paid_cash, 12_000, paid_cash - 12_000), "": (1, owed, 0, owed)}
    diff, = day.differences
    assert (diff.terminal_id, diff.kind, diff.central_count, diff.central_amount,
            diff.terminal_count, diff.terminal_amount) == ("BUS-7", "tap", 2, 3_000, 1, 1_500)
    assert [e.seq for e in entries_of(svc.store, **diff.entries.as_dict())] == [1, 2]
    problems = {(p.what, p.terminal_id, p.seq): p for p in day.problems}
    overdraft = problems[("overdraft", "BUS-7", 1)]
    assert overdraft.facts["balance_after"] == 1_000 - 1_500
    linked, = entries_of(svc.store, **overdraft.entries.as_dict())
    assert (linked.card_token, linked.amount, linked.kind) == (CARD_Z, 1_500, "tap")
    short = problems[("pocket_overdraft", "T-LF01", 2)]
    assert (short.facts["pocket"], short.facts["amount"]) == ("cash", owed)
    assert [e.amount for e in entries_of(svc.store, **short.entries.as_dict())] == [10_000]
    json.dumps(day.as_dict())  # the page's JSON

    # the merchant's settlement of the day, as the run made it: payments less refunds
    settle(svc.store, DAY, now_ms=LATER)
    one, = settlement_day(svc.store, DAY)
    assert (one.merchant_id, one.gross, one.refunds, one.net) == (
        "LF01", 22_000, 12_000, 22_000 - 12_000)
    head, = settlement_days(svc.store)
    assert (head.day, head.merchants, head.net) == (DAY, 1, 22_000 - 12_000)
    assert sum(s["count"] for s in head.statuses.values()) == 1
    with pytest.raises(ConfigError):
        entries_of(svc.store, "BUS-7", limit=0)


# -- fraud -------------------------------------------------------------------------------------


def round_burst(svc: CentralLog) -> tuple[list[str], list[Any]]:
    """Seven payments of round amounts at one place within minutes, each by its own card:
    the round-burst rule (five in ten minutes) flags the fifth, sixth and seventh, and denies
    nobody by default."""
    shop = chain(svc, "SHOP-9")
    cards = [f"{i:02x}" * 32 for i in range(1, 8)]
    t0 = seoul_ms(2026, 11, 20, 14)
    sent = [shop.entry("payment", card, 20_000, t0 + i * 30_000, place="M9")
            for i, card in enumerate(cards)]
    svc.ingest("SHOP-9", sent)
    return cards, sent


def test_fraud_flags_newest_first_with_the_entries_behind_them(svc: CentralLog) -> None:
    cards, sent = round_burst(svc)
    flags = fraud_flags(svc.store)
    assert [(f.rule, f.terminal_id, f.seq) for f in flags] == [
        ("round_burst", "SHOP-9", 7), ("round_burst", "SHOP-9", 6), ("round_burst", "SHOP-9", 5)]
    newest = flags[0]
    assert newest.card_token == cards[6] and newest.decision is None
    # the flagged entry, then the earlier round payments at the place within ten minutes
    assert [e.seq for e in newest.entries] == [7, 1, 2, 3, 4, 5, 6]
    assert [e.amount for e in newest.entries] == [sent[6].amount] + [e.amount for e in sent[:6]]
    page = fraud_flags(svc.store, 1, before=flags[0].flag_id)
    assert [f.seq for f in page] == [6]
    assert fraud_flags(svc.store, before=flags[-1].flag_id) == []
    assert svc.deny_delta(0)["add"] == {}


def test_confirming_a_flag_denies_its_card_dismissing_does_not_and_once_only(
        svc: CentralLog) -> None:
    cards, _ = round_burst(svc)
    seventh, sixth, _fifth = fraud_flags(svc.store)
    before = svc.deny_delta(0)["version"]
    done = confirm_flag(svc, seventh.flag_id, "kim", "cash-out ring, checked with the shop")
    assert done.decision == CONFIRMED and done.deny_version is not None
    delta = svc.deny_delta(before)
    assert delta["add"] == {cards[6]: "fraud:round_burst:confirmed"}
    assert svc.deny_delta(before, terminal="SHOP-9")["add"] == delta["add"]  # what it fetches
    dismissed = dismiss_flag(svc.store, sixth.flag_id, "lee", "a school's bulk order")
    assert dismissed.decision == DISMISSED and dismissed.deny_version is None
    assert svc.deny_delta(0)["add"] == {cards[6]: "fraud:round_burst:confirmed"}
    for decide in (lambda: confirm_flag(svc, seventh.flag_id, "park", "again"),
                   lambda: dismiss_flag(svc.store, seventh.flag_id, "park", "again"),
                   lambda: confirm_flag(svc, sixth.flag_id, "park", "after all")):
        with pytest.raises(FlagDecidedError):
            decide()
    assert cards[5] not in svc.deny_delta(0)["add"]
    shown = {f.seq: f.decision for f in fraud_flags(svc.store)}
    assert shown[7] is not None and (shown[7].decision, shown[7].operator) == (CONFIRMED, "kim")
    assert shown[6] is not None and (shown[6].decision, shown[6].reason) == (
        DISMISSED, "a school's bulk order")
    assert shown[5] is None
    assert [f.seq for f in fraud_flags(svc.store, undecided_only=True)] == [5]
    with pytest.raises(UnknownFlagError):  # an operator of another municipality
        confirm_flag(svc, _fifth.flag_id, "kim", "x", municipality="elsewhere")
    for bad in ("999999-round_burst", "1-clock", "nonsense"):
        with pytest.raises(UnknownFlagError):
            dismiss_flag(svc.store, bad, "kim", "x")
    with pytest.raises(ConfigError):
        dismiss_flag(svc.store, _fifth.flag_id, " ", "no operator")


# -- the programme ------------------------------------------------------------------------------


def weekday_points(rides: list[tuple[int, str]]) -> dict[str, int]:
    """The default bus rule by hand: a weekday's first ride gives its fare (1,500) back, at
    most 2,900 points a week (adult)."""
    firsts: dict[tuple[str, date], int] = {}
    for ms, card in rides:
        d = datetime.fromtimestamp(ms / 1000, timezone(timedelta(hours=9))).date()
        if d.weekday() < 5:
            firsts.setdefault((card, d), 1_500)
    weeks: dict[tuple[str, tuple[int, int]], int] = {}
    for (card, d), fare in sorted(firsts.items()):
        key = (card, d.isocalendar()[:2])
        weeks[key] = min(2_900, weeks.get(key, 0) + fare)
    out: dict[str, int] = {}
    for (card, _), points in weeks.items():
        out[card] = out.get(card, 0) + points
    return out


HELD = "d4" * 32


def october_rides(svc: CentralLog) -> list[tuple[int, str]]:
    """October on bus BUS-1: card A (account A) and card HELD (no account) ride three
    weekdays of one week; card B (account B) rides a Monday twice and a Saturday once. The
    rides (time, card), as ingested."""
    with svc.store.tx() as tx:
        accounts.link(tx, "A", A_CARD)
        accounts.link(tx, "B", B_CARD)
    bus = chain(svc, "BUS-1")
    rides = [(seoul_ms(2026, 10, d, 8, n), card) for d in (12, 13, 15)
             for n, card in enumerate((A_CARD, HELD))]
    rides += [(seoul_ms(2026, 10, 19, 8), B_CARD), (seoul_ms(2026, 10, 19, 18), B_CARD),
              (seoul_ms(2026, 10, 24, 9), B_CARD)]
    svc.ingest("BUS-1", [bus.tap(card, ms) for ms, card in sorted(rides)])
    return rides


def test_points_per_month_payouts_and_their_file(svc: CentralLog, tmp_path: Path) -> None:
    rides = october_rides(svc)
    earned = weekday_points(rides)
    assert earned == {A_CARD: 2_900, HELD: 2_900, B_CARD: 1_500}  # the rule, read by hand

    before = points_year(svc.store, 2026)
    october, = before.months
    assert (october.month, october.credited, october.unpaid, october.paid, october.held,
            october.run_cards) == ("2026-10", sum(earned.values()), sum(earned.values()), 0, 0,
                                   None)
    assert (before.spent, before.committed) == (0, sum(earned.values()))

    fund_points(svc.store, 10_000, "2026-10", at_ms=NOV_2)
    payout(svc.store, "2026-10", NOV_2)
    into = earned[A_CARD] + earned[B_CARD]
    year = points_year(svc.store, 2026)
    october, = year.months
    assert (october.credited, october.unpaid, october.paid, october.held, october.run_cards) == (
        sum(earned.values()), earned[HELD], into, earned[HELD], 2)
    assert (year.spent, year.committed) == (into, earned[HELD])
    assert year.left == year.budget - into - earned[HELD]

    run, = payout_runs(svc.store, data_dir=tmp_path)
    assert (run.month, run.cards, run.points, run.held_cards, run.held_points,
            run.pocket_cards, run.pocket_points) == ("2026-10", 2, into, 1, earned[HELD], 2, into)
    assert run.file_path == str(tmp_path / "settlements" / "points-2026-10.csv")
    name, body = payout_file(svc.store, "2026-10")
    assert name == "points-2026-10.csv"
    rows = list(csv.reader(io.StringIO(body.decode("utf-8"))))
    assert rows == [["card_token", "category", "month", "bus", "local_food", "refund",
                     "campaign", "total"],
                    *sorted([[c, "", "2026-10", str(p), "0", "0", "0", str(p)]
                             for c, p in earned.items() if c != HELD])]
    write_settlement(svc.store, "2026-10", tmp_path / name)  # what `central payout` writes
    assert (tmp_path / name).read_bytes() == body
    json.dumps(year.as_dict())
    json.dumps([r.as_dict() for r in payout_runs(svc.store)])


def test_allowances_issued_spent_and_expired(svc: CentralLog) -> None:
    store = svc.store
    with store.tx() as tx:
        accounts.link(tx, "alice", "c-alice")
        accounts.link(tx, "bob", "c-bob")
    allowances.fund(store, "youth", 100_000, "f1")
    allowances.issue(store, "youth", "recipient\nalice\nbob\n", 10_000, "2026-11-30",
                     "2026-11")
    spend_allowance(store, "alice", "youth", 3_500, "pay-1")
    spend_allowance(store, "bob", "youth", 10_000, "pay-2")
    allowances.expire(store, "2026-12-01")
    issued, spent = 2 * 10_000, 3_500 + 10_000
    rows = [r for r in allowance_months(store) if r.issued or r.spent or r.expired]
    assert [(r.programme, r.issued, r.spent, r.expired, r.outstanding) for r in rows] == [
        ("youth", issued, spent, issued - spent, 0)]
    with store.tx(write=False) as tx:
        assert books.find_account(tx, "pocket:alice:youth").balance == 0  # type: ignore[union-attr]


# -- enrolment and config ------------------------------------------------------------------------


def test_enrolment_code_is_shown_once_and_configs_publish(store_url: str,  # noqa: F811
                                                          tmp_path: Path) -> None:
    service = open_central(store_url, tmp_path / "data")
    try:
        got = issue_enrolment_code(service, role="till", place="M1", ttl_s=3600)
        with service.store.tx(write=False) as tx:
            held = tx.all("SELECT * FROM enroll_codes")
            issued, expires = tx.one("SELECT issued_ms, expires_ms FROM enroll_codes") or (0, 0)
        assert got.expires_ms == expires == issued + 3_600_000
        assert len(held) == 1
        assert not any(got.code in (bytes(v).hex() if isinstance(v, (bytes, memoryview))
                                    else str(v)) for v in held[0])
        assert (got.role, got.place, got.municipality) == ("till", "M1", "default")

        key = load_operator_key(service.data_dir)  # type: ignore[arg-type]
        for tid in ("T-1", "T-2"):
            service.add_terminal(tid, bytes.fromhex(public_hex(Ed25519PrivateKey.generate())))
        text = dumps(DEFAULT.replace("terminal", id="T-1", role="till", place="M1"))
        assert publish_config(service, text, sign_for="T-1") == 1
        assert publish_config(service, text, sign_for="T-1") == 2
        body = service.latest_config("T-1")["body"]
        bundles.verify(body.encode("utf-8"), key.public_key(), "T-1", 1)
        signed = bundles.make(key, "T-2", 5, dumps(DEFAULT.replace(
            "terminal", id="T-2", role="validator", place="R1"))).decode("utf-8")
        assert publish_config(service, signed) == 5
        with pytest.raises(ConfigError):  # a till's config for the validator
            publish_config(service, text.replace('"T-1"', '"T-2"'), sign_for="T-2")
        assert [(v.version, v.terminals) for v in config_versions(service.store)] == [
            (2, ("T-1",)), (5, ("T-2",))]
    finally:
        service.store.close()


# -- the fleet ---------------------------------------------------------------------------------


def test_fleet_filters_sorts_and_pages(svc: CentralLog) -> None:
    seeded = seed_fleet(svc, 60, synced=12)
    assert len(seeded.terminal_ids) == 60
    with svc.store.tx(write=False) as tx:
        seen = {str(t): int(s) for t, s in tx.all("SELECT terminal_id, last_seen_ms FROM "
                                                  "terminal_status")}
    everyone = fleet(svc.store, limit=1000)
    assert everyone.total == 60
    assert [r.terminal_id for r in everyone.rows] == sorted(seeded.terminal_ids)
    validators = fleet(svc.store, role="validator", limit=1000)
    assert [r.terminal_id for r in validators.rows] == [f"FLEET-{i:05d}" for i in range(4, 61, 4)]
    tens = fleet(svc.store, "fleet-0001", limit=1000)
    assert [r.terminal_id for r in tens.rows] == [f"FLEET-{i:05d}" for i in range(10, 20)]
    newest = fleet(svc.store, sort="last_seen_ms", desc=True, offset=5, limit=10)
    order = sorted(seeded.terminal_ids, key=lambda t: (seen.get(t, 0) > 0, seen.get(t, 0), t),
                   reverse=True)
    assert [r.terminal_id for r in newest.rows] == order[5:15]
    assert newest.total == 60 and len(newest.rows) == 10
    synced = {r.terminal_id: r for r in everyone.rows if r.last_seq}
    assert sorted(synced) == sorted(seeded.synced)
    assert all(r.sync_lag_ms is not None and r.clock in CLOCKS for r in synced.values())
    # a batch an hour to a day old, by a clock the service trusts (an unknown clock's entries
    # are timed at their arrival)
    assert all(r.sync_lag_ms >= 3_600_000 - 1000 for r in synced.values()  # type: ignore[operator]
               if r.clock != "unknown")
    assert all(r.last_seq == 3 for r in synced.values())
    assert {r.config_version for r in everyone.rows} <= {1, 2, 3}
    assert sum(len(v.terminals) for v in config_versions(svc.store)) == 60
    with pytest.raises(ConfigError):
        fleet(svc.store, sort="password")
