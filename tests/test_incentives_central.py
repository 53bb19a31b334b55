"""Incentive crediting through the real ingest path, on SQLite and a real PostgreSQL: bus first
rides and weekly caps, Seoul weeks and months, arrival order across terminals, local food and
refunds, campaigns once per card, exactly-once under retries, payout idempotence, rules."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.incentive_rules import Rules, default_rules_text
from central.incentives import (
    CreditEntry,
    credit,
    credit_log,
    lock_crediting,
    points_delta,
)
from central.payouts import payout, statement
from central.profiles import set_profiles
from central.service import CentralLog, Ingested
from central.store import open_store
from central.versions import load_rules
from firmware_cfg.keys import public_hex
from localpay.errors import ConfigError, TransactionError
from sync.checkpoint import NoteSigner
from terminal.qr import campaign
from tests.incentives_data import Chain, chain, open_service, seoul_ms
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401

A, B, C, Y, K = ("a" * 32, "b" * 32, "c" * 32, "d" * 32, "e" * 32)


@pytest.fixture
def svc(store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    log = open_service(store_url)
    yield log
    log.store.close()


def pts(svc: CentralLog, token: str) -> list[tuple[str, str, int]]:
    return [(e["day"], e["rule"], e["points"]) for e in statement(svc.store, token)["entries"]]


def total(svc: CentralLog, token: str) -> int:
    return int(statement(svc.store, token)["earned"])


def test_first_weekday_ride_weekly_caps_and_categories(svc: CentralLog) -> None:
    bus, bus2 = chain(svc, "BUS-1"), chain(svc, "BUS-2")
    set_profiles(svc.store, {Y: "youth"})
    e = [
        bus.tap(A, seoul_ms(2025, 3, 10, 7)),               # Mon: 1500
        bus.tap(A, seoul_ms(2025, 3, 10, 18)),              # Mon again: first ride only
        bus.tap(A, seoul_ms(2025, 3, 11, 7)),               # Tue: 1400 left under 2900
        bus.tap(A, seoul_ms(2025, 3, 12, 7)),               # Wed: capped
        bus.tap(A, seoul_ms(2025, 3, 15, 9)),               # Sat: weekend
        # a second validator, its taps in the order of its clock
        bus2.tap(B, seoul_ms(2025, 3, 10, 7), bus_type="express"),  # not a city/village bus
        bus2.tap(Y, seoul_ms(2025, 3, 10, 7), fare=900),     # profile says youth: cap 2020
        bus2.tap(C, seoul_ms(2025, 3, 10, 7), fare=900, rider="youth"),  # no profile: the tap's
        bus2.tap(K, seoul_ms(2025, 3, 10, 7), fare=550, rider="child"),  # no cap: no points
        bus2.tap(B, seoul_ms(2025, 3, 10, 8), fare=1200, bus_type="village"),
        bus2.tap(Y, seoul_ms(2025, 3, 11, 7), fare=900),
        bus2.tap(Y, seoul_ms(2025, 3, 12, 7), fare=900),     # 220 left
    ]
    svc.ingest("BUS-1", e[:5])
    svc.ingest("BUS-2", e[5:])
    assert pts(svc, A) == [("2025-03-10", "bus", 1500), ("2025-03-11", "bus", 1400)]
    assert pts(svc, B) == [("2025-03-10", "bus", 1200)]
    assert [p for _, _, p in pts(svc, Y)] == [900, 900, 220]
    assert statement(svc.store, Y)["rider"] == "youth"
    assert pts(svc, C) == [("2025-03-10", "bus", 900)]
    assert pts(svc, K) == []
    weeks = statement(svc.store, A)["weeks"]
    assert weeks == [{"week_start": "2025-03-10", "points": 2900, "days": [0, 1, 2]}]


def test_week_and_month_boundaries_are_seoul_time(svc: CentralLog) -> None:
    bus = chain(svc, "BUS-1")
    svc.ingest("BUS-1", [
        bus.tap(A, seoul_ms(2025, 3, 13, 7)), bus.tap(A, seoul_ms(2025, 3, 14, 7)),
        # Sunday 23:59:59 and Monday 00:00:30 in Seoul: the same UTC day (16 March).
        bus.tap(A, seoul_ms(2025, 3, 16, 23, 59, 59)),
        bus.tap(A, seoul_ms(2025, 3, 17, 0, 0, 30)),
        # Monday 31 March 08:00 and Tuesday 1 April 00:30 in Seoul (31 March in UTC).
        bus.tap(B, seoul_ms(2025, 3, 31, 8)), bus.tap(B, seoul_ms(2025, 4, 1, 0, 30)),
    ])
    assert pts(svc, A) == [("2025-03-13", "bus", 1500), ("2025-03-14", "bus", 1400),
                           ("2025-03-17", "bus", 1500)]
    months = [(e["day"], e["payable_month"]) for e in statement(svc.store, B)["entries"]]
    assert months == [("2025-03-31", "2025-03"), ("2025-04-01", "2025-04")]


def test_holidays_from_the_rules_earn_nothing(svc: CentralLog) -> None:
    bus = chain(svc, "BUS-1")
    svc.ingest("BUS-1", [bus.tap(A, seoul_ms(2025, 3, 3, 8)),   # substitute holiday
                         bus.tap(A, seoul_ms(2025, 3, 4, 8))])
    assert pts(svc, A) == [("2025-03-04", "bus", 1500)]
    text = default_rules_text().replace("version = 1", "version = 2").replace(
        "effective_from = 2025-01-01", "effective_from = 2025-03-05").replace(
        "extra_holidays = []", "extra_holidays = [2025-03-05]")
    with pytest.raises(ConfigError, match="--recredit"):
        load_rules(svc.store, text)         # it starts in the past: points could change
    load_rules(svc.store, text, recredit=True)
    svc.ingest("BUS-1", [bus.tap(A, seoul_ms(2025, 3, 5, 8)), bus.tap(A, seoul_ms(2025, 3, 6, 8))])
    st = statement(svc.store, A)["entries"]
    assert [(e["day"], e["points"], e["rule_version"]) for e in st] == [
        ("2025-03-04", 1500, 1), ("2025-03-06", 1400, 2)]


def test_the_earliest_ride_of_a_day_earns_whatever_order_they_arrive_in(
        svc: CentralLog) -> None:
    """'First ride of the weekday' is the earliest by effective time, not the first to
    reach the server (on the old code the 18:00 ride synced first kept the credit)."""
    t1, t2 = chain(svc, "BUS-1"), chain(svc, "BUS-2")
    morning = t1.tap(A, seoul_ms(2025, 3, 10, 7), fare=1500)
    evening = t2.tap(A, seoul_ms(2025, 3, 10, 18), fare=1200, bus_type="village")
    svc.ingest("BUS-2", [evening])        # the later ride's validator syncs first
    svc.ingest("BUS-1", [morning])
    st = statement(svc.store, A)["entries"]
    # the evening's credit is taken back as an adjustment, the morning's given, once each
    assert [(e["terminal_id"], e["seq"], e["points"], e["adjustment"]) for e in st] == [
        ("BUS-2", 1, 1200, None),
        ("BUS-2", 1, -1200, "first ride moved to BUS-1/1"),
        ("BUS-1", 1, 1500, None)]
    assert sum(e["points"] for e in st) == 1500
    assert statement(svc.store, A)["weeks"][0]["points"] == 1500
    svc.ingest("BUS-1", [morning])        # sent again: nothing moves twice
    assert statement(svc.store, A)["entries"] == st
    # In the other order the morning ride simply earns.
    m2 = t1.tap(B, seoul_ms(2025, 3, 10, 7), fare=1500)
    e2 = t2.tap(B, seoul_ms(2025, 3, 10, 18), fare=1200, bus_type="village")
    svc.ingest("BUS-1", [m2])
    svc.ingest("BUS-2", [e2])
    assert [(e["terminal_id"], e["points"]) for e in statement(svc.store, B)["entries"]] == [
        ("BUS-1", 1500)]
    # A late ride of an earlier week counts against that week's cap, not this one's:
    # Monday 1,500 (moved), Tuesday 1,400 to the 2,900 cap, next Monday 1,500, and the
    # week's late Wednesday nothing.
    svc.ingest("BUS-1", [t1.tap(A, seoul_ms(2025, 3, 11, 7))])
    later, late = chain(svc, "BUS-3"), chain(svc, "BUS-4")
    svc.ingest("BUS-3", [later.tap(A, seoul_ms(2025, 3, 17, 7))])
    svc.ingest("BUS-4", [late.tap(A, seoul_ms(2025, 3, 12, 7))])
    assert [p for _, _, p in pts(svc, A)] == [1200, -1200, 1500, 2900 - 1500, 1500]


def test_a_moved_first_ride_respects_the_cap_and_a_paid_month(svc: CentralLog) -> None:
    t1, t2 = chain(svc, "BUS-1"), chain(svc, "BUS-2")
    # Mon 1,500 and Tue 1,400 reach the 2,900 cap; Tuesday's 08:00 ride arrives late and
    # dearer (a 1,500 city bus against a 1,200 village one): only what the cap leaves moves.
    svc.ingest("BUS-2", [t2.tap(A, seoul_ms(2025, 3, 10, 7)),
                         t2.tap(A, seoul_ms(2025, 3, 11, 18), fare=1200, bus_type="village")])
    svc.ingest("BUS-1", [t1.tap(A, seoul_ms(2025, 3, 11, 8))])
    want_tuesday = min(1500, 2900 - 1500)
    assert [p for _, _, p in pts(svc, A)] == [1500, 1200, -1200, want_tuesday]
    assert statement(svc.store, A)["weeks"][0]["points"] == 1500 + want_tuesday
    # Once April is paid, a late earlier ride of a paid day moves nothing.
    svc.set_balances({B: 0})
    svc.ingest("BUS-2", [t2.tap(B, seoul_ms(2025, 4, 1, 18))])
    assert payout(svc.store, "2025-04", seoul_ms(2025, 5, 1, 1)).points == 1500
    svc.ingest("BUS-1", [t1.tap(B, seoul_ms(2025, 4, 1, 7))])
    assert [(e["terminal_id"], e["points"]) for e in statement(svc.store, B)["entries"]] == [
        ("BUS-2", 1500)]
    assert statement(svc.store, B)["paid"] == 1500


def test_retries_duplicates_and_a_second_hook_run_credit_once(svc: CentralLog) -> None:
    bus, till = chain(svc, "BUS-1"), chain(svc, "TILL-1")
    taps = [bus.tap(A, seoul_ms(2025, 3, 10 + d, 7)) for d in range(3)]
    pays = [till.pay(B, 10_000, seoul_ms(2025, 3, 10, 12 + i)) for i in range(4)]
    svc.ingest("BUS-1", taps[:2])
    svc.ingest("BUS-1", taps[:2])          # a retry after a lost answer
    svc.ingest("BUS-1", taps)              # overlapping batch
    svc.ingest("BUS-1", taps)              # replayed
    for _ in range(2):
        svc.ingest("TILL-1", pays)
    assert total(svc, A) == 2900 and total(svc, B) == 120
    # Crediting run again on entries already credited changes nothing, by the cursor or,
    # without it, by the credits already held.
    assert credit_log(svc.store).credits == 0
    batch = [CreditEntry.of(Ingested(i, e, "")) for i, e in enumerate(pays)]
    with svc.store.tx() as tx:
        lock_crediting(tx)
        r = credit(tx, batch, Rules.default(), 0)
    assert r.credits == 0
    assert total(svc, B) == 120
    with svc.store.tx(write=False) as tx:
        assert tx.one("SELECT COUNT(*) FROM incentive_credits")[0] == 6  # type: ignore[index]


class _Down:
    """A crediter that fails every time, as one would with its database unreachable."""

    name = "crediting that is down"

    def __init__(self) -> None:
        self.calls = 0

    def follow(self, service: CentralLog) -> None:
        self.calls += 1
        raise TransactionError("crediting is down")


def test_crediting_follows_the_log_and_catches_up_after_a_failure(store_url: str) -> None:  # noqa: F811
    down = _Down()
    log = CentralLog(open_store(store_url), NoteSigner("test.example/log",
                                                       Ed25519PrivateKey.generate()),
                     followers=[down])
    try:
        bus = chain(log, "BUS-1")
        receipts = [log.ingest("BUS-1", [bus.tap(A, seoul_ms(2025, 3, 10 + d, 7))])
                    for d in range(3)]
        # The batches stand although crediting failed after each of them.
        assert down.calls == 3 and [r.accepted for r in receipts] == [1, 1, 1]
        assert total(log, A) == 0
        seen: list[tuple[int, int]] = []
        r = credit_log(log.store, chunk=2, progress=lambda done, size: seen.append((done, size)))
        assert (r.credits, r.points) == (2, 2900) and seen == [(2, 3), (3, 3)]
        assert [p for _, _, p in pts(log, A)] == [1500, 1400]
        with log.store.tx(write=False) as tx:
            assert tx.one("SELECT next_index FROM incentive_cursor")[0] == 3  # type: ignore[index]
        assert credit_log(log.store).credits == 0
        with pytest.raises(ConfigError, match="chunk"):
            credit_log(log.store, chunk=0)
    finally:
        log.store.close()


def test_batches_ingested_at_once_are_each_credited_once(svc: CentralLog) -> None:
    # Eight terminals send at the same time; every batch's own crediting run waits for the
    # one before it and takes up whatever is new, so the cursor ends at the log's end.
    cards = [f"{n:032x}" for n in range(8)]
    chains = [chain(svc, f"BUS-{n}") for n in range(8)]
    failures: list[BaseException] = []

    def send(n: int) -> None:
        try:
            for day in range(5):
                tap = chains[n].tap(cards[n], seoul_ms(2025, 3, 10 + day, 7 + n))
                svc.ingest(f"BUS-{n}", [tap])
        except BaseException as err:  # reported below, in the test's own thread
            failures.append(err)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert [[p for _, _, p in pts(svc, card)] for card in cards] == [[1500, 1400]] * 8
    with svc.store.tx(write=False) as tx:
        assert tx.one("SELECT next_index FROM incentive_cursor")[0] == 40  # type: ignore[index]
        assert tx.one("SELECT COUNT(*) FROM incentive_credits")[0] == 16  # type: ignore[index]


def test_a_store_from_before_crediting_followed_the_log(store_url: str) -> None:  # noqa: F811
    # A store made before the entries kept ref_seq and detail credited in its ingest
    # transactions: opening it adds the columns and credits on from the end of its log.
    store = open_store(store_url)
    with store.tx() as tx:
        tx.run("ALTER TABLE entries DROP COLUMN ref_seq")
        tx.run("ALTER TABLE entries DROP COLUMN detail")
        tx.run("DROP TABLE incentive_cursor")
        tx.run("UPDATE log_state SET size = 7 WHERE id = 1")
    store.close()
    store = open_store(store_url)
    try:
        with store.tx(write=False) as tx:
            assert tx.one("SELECT next_index FROM incentive_cursor")[0] == 7  # type: ignore[index]
            assert {"ref_seq", "detail"} <= store.columns(tx, "entries")
        assert credit_log(store).credits == 0
    finally:
        store.close()


def test_local_food_and_refunds(svc: CentralLog) -> None:
    till = chain(svc, "TILL-1")
    t = seoul_ms(2025, 3, 12, 12)
    p1 = till.pay(A, 12_345, t)                 # 37
    p2 = till.pay(A, 333, t + 1000)             # 0.999 -> 0
    p3 = till.pay(A, 10_000, t + 2000)          # 30
    p4 = till.pay(A, 50_000, t + 3000, category="general")  # not local food
    svc.ingest("TILL-1", [p1, p2, p3, p4])
    r1 = till.refund(A, 2_345, p1.seq, t + 4000)          # 10,000 left: 30 kept, -7
    r2 = till.refund(A, 5_000, p1.seq, t + 5000)          # 5,000 left: 15 kept, -15
    v3 = till.refund(A, 10_000, p3.seq, t + 6000, kind="void")  # -30
    r4 = till.refund(A, 50_000, p4.seq, t + 7000)         # nothing was earned
    p5 = till.pay(A, 1_000, t + 8000)                     # 3, refunded in the same batch
    r5 = till.refund(A, 400, p5.seq, t + 9000)            # 600 left: 1 kept, -2
    svc.ingest("TILL-1", [r1])
    svc.ingest("TILL-1", [r2, v3, r4, p5, r5])
    assert [(r, p) for _, r, p in pts(svc, A)] == [
        ("local_food", 37), ("local_food", 30), ("refund", -7), ("refund", -15),
        ("refund", -30), ("local_food", 3), ("refund", -2)]
    assert total(svc, A) == 15 + 1


def _campaign_rules(key: Ed25519PrivateKey, version: int = 2) -> str:
    return default_rules_text().replace("version = 1", f"version = {version}").replace(
        "keys = []", f'keys = ["{public_hex(key)}"]\n\n[campaigns.events.tree-day]\n'
        "points = 1000\nstart = 2025-04-05\nend = 2025-04-06")


def test_campaign_once_per_card_and_only_signed_known_running(svc: CentralLog) -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    load_rules(svc.store, _campaign_rules(key))
    t1, t2 = chain(svc, "BUS-1"), chain(svc, "BUS-2")
    when = seoul_ms(2025, 4, 5, 11)
    good = campaign.make(key, "tree-day", "w-1", 1000, valid_from=when // 1000 - 60)
    forged = campaign.make(other, "tree-day", "w-2", 9999, valid_from=when // 1000 - 60)
    unknown = campaign.make(key, "sea-day", "w-3", 500, valid_from=when // 1000 - 60)

    def claim(c: Chain, token: str, code: str, at: int) -> Any:
        cid = campaign.decode(code).code.campaign_id
        return c.entry("incentive", token, 0, at, detail=json.dumps(
            {"campaign": cid, "card": "w", "code": code, "points": 1, "scheme": "wallet"},
            sort_keys=True, separators=(",", ":")))

    svc.ingest("BUS-1", [claim(t1, A, good, when), claim(t1, B, forged, when),
                         claim(t1, C, unknown, when)])
    svc.ingest("BUS-2", [claim(t2, A, good, when + 60_000),        # again, elsewhere
                         claim(t2, K, good, when + 120_000),       # same wallet, other token
                         claim(t2, Y, campaign.make(key, "tree-day", "w-9", 1000,
                                                    valid_from=when // 1000),
                               seoul_ms(2025, 4, 8, 9))])          # after the campaign ended
    st = statement(svc.store, A)["entries"]
    assert [(e["rule"], e["points"], e["rule_version"], e["note"]) for e in st] == [
        ("campaign", 1000, 2, {"campaign": "tree-day"})]
    assert total(svc, B) == total(svc, C) == total(svc, K) == total(svc, Y) == 0


def test_payout_monthly_idempotent_late_entries_carry_and_held(svc: CentralLog) -> None:
    bus, till = chain(svc, "BUS-1"), chain(svc, "TILL-1")
    svc.set_balances({A: 10_000, B: 100_000})
    pay_b = till.pay(B, 100_000, seoul_ms(2025, 2, 27, 12))       # 300 in February
    c_tap = bus.tap(C, seoul_ms(2025, 2, 27, 8))                     # C has no account
    svc.ingest("BUS-1", [c_tap, bus.tap(A, seoul_ms(2025, 2, 28, 23, 50))])  # Friday, Seoul
    svc.ingest("TILL-1", [pay_b])
    feb_end = seoul_ms(2025, 2, 28, 23, 59)
    with pytest.raises(TransactionError, match="not ended"):
        payout(svc.store, "2025-02", feb_end)
    svc.ingest("BUS-1", [bus.tap(A, seoul_ms(2025, 3, 4, 8))])

    def balance(token: str) -> int:
        with svc.store.tx(write=False) as tx:
            return int(tx.one("SELECT balance FROM balances WHERE card_token = ?",
                              (token,))[0])  # type: ignore[index]

    before = balance(A)
    feb = payout(svc.store, "2025-02", seoul_ms(2025, 3, 1, 0, 0, 1))
    assert (feb.cards, feb.points, feb.held_cards, feb.held_points) == (2, 1800, 1, 1500)
    again = payout(svc.store, "2025-02", seoul_ms(2025, 3, 5))
    assert again.already and (again.cards, again.points) == (2, 1800)
    assert balance(A) == before + 1500 and balance(B) == 300
    delta = svc.balances_delta(0)
    assert delta["balances"][A] == before + 1500
    # A February entry arriving after February's payout is paid with March.
    late = chain(svc, "BUS-2")
    svc.ingest("BUS-2", [late.tap(A, seoul_ms(2025, 2, 26, 8), fare=1200)])
    assert statement(svc.store, A)["entries"][0]["payable_month"] == "2025-03"
    # March: B's refund takes back more than B earned in March: carried to April.
    svc.ingest("TILL-1", [till.refund(B, 100_000, pay_b.seq, seoul_ms(2025, 3, 3, 12))])
    svc.set_balances({C: 0})                       # C opens an account: held points follow
    mar = payout(svc.store, "2025-03", seoul_ms(2025, 4, 1, 1))
    assert (mar.cards, mar.points) == (2, 1500 + 1200 + 1500)
    st_b = statement(svc.store, B)
    assert [(p["month"], p["status"], p["paid"], p["carry"]) for p in st_b["payouts"]] == [
        ("2025-02", "paid", 300, 0), ("2025-03", "carried", 0, -300)]
    svc.ingest("TILL-1", [till.pay(B, 200_000, seoul_ms(2025, 4, 2, 12))])   # 600
    apr = payout(svc.store, "2025-04", seoul_ms(2025, 5, 1, 1))
    assert (apr.cards, apr.points) == (1, 300)
    assert statement(svc.store, B)["paid"] == 600 and balance(C) == 1500
    assert statement(svc.store, A)["paid"] == 1500 + 2700


def test_points_snapshot_for_terminals(svc: CentralLog) -> None:
    bus = chain(svc, "BUS-1")
    set_profiles(svc.store, {Y: "youth"})
    now = seoul_ms(2025, 3, 12, 9)
    svc.ingest("BUS-1", [bus.tap(B, seoul_ms(2025, 3, 7, 7)),         # last week
                         bus.tap(A, seoul_ms(2025, 3, 3 + 7, 7)),
                         bus.tap(Y, seoul_ms(2025, 3, 11, 7), fare=900)])
    doc = points_delta(svc.store, 0, now)
    assert doc["week_start"] == "2025-03-10" and doc["rules"]["weekly_cap"] == {
        "adult": 2900, "youth": 2020}
    assert doc["points"] == {A: [1500, 1, ""], Y: [900, 2, "youth"]}
    assert points_delta(svc.store, doc["version"], now)["points"] == {}
    svc.ingest("BUS-1", [bus.tap(A, seoul_ms(2025, 3, 12, 7))])
    assert points_delta(svc.store, doc["version"], now)["points"] == {A: [2900, 5, ""]}


def test_rules_are_validated_and_versioned(svc: CentralLog) -> None:
    base = default_rules_text()
    bad = {
        "version = 1": "version = 0",
        "rate_bp = 30": "rate_bp = 30.5",
        "adult = 2900": "senior = 2900",
        'timezone = "Asia/Seoul"': 'timezone = "Mars/Olympus"',
        "enabled = true\n# Points": "enabled = true\nrate = 3\n# Points",
        "extra_holidays = []": "extra_holidays = [2025-13-01]",
    }
    for old, new in bad.items():
        assert old in base
        with pytest.raises(ConfigError):
            Rules.from_toml(base.replace(old, new, 1))
    with pytest.raises(ConfigError, match="not valid TOML"):
        Rules.from_toml("version = ")
    with pytest.raises(ConfigError, match="key that signs"):
        Rules.from_toml(base + "\n[campaigns.events.x]\npoints = 5\nstart = 2025-01-01\n"
                        "end = 2025-01-02\n")
    rules = Rules.default()
    assert (rules.version, rules.bus.weekly_cap, rules.food.rate_bp) == (
        1, {"adult": 2900, "youth": 2020}, 30)
    key = Ed25519PrivateKey.generate()
    assert load_rules(svc.store, _campaign_rules(key, 3))[1] is True
    assert load_rules(svc.store, _campaign_rules(key, 3))[1] is False
    with pytest.raises(ConfigError, match="already held"):
        load_rules(svc.store, _campaign_rules(Ed25519PrivateKey.generate(), 3))
    with pytest.raises(ConfigError, match="older"):
        load_rules(svc.store, _campaign_rules(key, 2))
