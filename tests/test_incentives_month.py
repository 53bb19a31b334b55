"""A simulated month for 10,000 riders under the default rules, credited by the service's
crediting of its log, once following each round of syncs and once as a month's backlog (the
chain and its signatures are left out: they are tested elsewhere and would only slow this
down), checked against each other and against an independent computation.

Times are built and judged with fixed UTC+9 arithmetic, not zoneinfo; riders tap around
midnight in Seoul so that the UTC date differs; the period crosses two month ends and six
week boundaries; youth riders are known half by their central profile (their taps say
"adult"), half by their taps.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from central.incentives import credit_log
from central.payouts import payout, statement
from central.profiles import set_profiles
from central.service import Ingested
from central.store import open_store
from localpay.cli.bench.incentives import load_log
from tests.incentives_data import KST, pay_detail, seoul_ms, tap_detail, unsigned

RIDERS = 10_000
FIRST_DAY = date(2025, 2, 26)
DAYS = 36                      # to 2 April
HOLIDAYS = {date(2025, 3, 3)}  # the default rules' holiday in this period
CAPS = {"adult": 2900, "youth": 2020}
FARES = {("adult", "city"): 1500, ("adult", "village"): 1200, ("youth", "city"): 900,
         ("youth", "village"): 720, ("child", "city"): 550, ("child", "village"): 450,
         ("adult", "express"): 2800, ("youth", "express"): 1600, ("child", "express"): 1400}
SLOT_MS = 12 * 3_600_000       # sync rounds: every terminal sends its entries twice a day


@dataclass
class Event:
    wall: int
    terminal: str
    kind: str
    token: str
    amount: int
    detail: str
    rider: str = ""
    bus_type: str = ""
    pays: Event | None = None  # a refund's payment
    seq: int = 0


def seoul_day(ms: int) -> date:
    return (datetime.fromtimestamp(ms / 1000, UTC) + KST).date()


def month(d: date) -> str:
    return f"{d.year:04d}-{d.month:02d}"


def simulate(rng: random.Random) -> tuple[list[Event], dict[str, str]]:
    events: list[Event] = []
    profiles: dict[str, str] = {}
    for r in range(RIDERS):
        token = f"{r:032x}"
        u = rng.random()
        rider = "adult" if u < 0.7 else "youth" if u < 0.9 else "child"
        tap_rider = rider
        if rider == "youth" and r % 2 == 0:
            profiles[token] = "youth"
            tap_rider = "adult"   # the card's own record is wrong: the profile wins
        for n in range(DAYS):
            d = FIRST_DAY + timedelta(days=n)
            if rng.random() < 0.45:
                rides = [rng.choice([0, 6, 7, 8, 9])]          # 0: just after midnight
                if rng.random() < 0.35:
                    rides.append(rng.choice([16, 18, 20, 23]))  # 23: just before midnight
                for hour in rides:
                    bus = rng.choices(["city", "village", "express"], [7, 2, 1])[0]
                    wall = seoul_ms(d.year, d.month, d.day, hour, rng.randrange(60),
                                    rng.randrange(60))
                    events.append(Event(wall, f"BUS-{rng.randrange(50):02d}", "tap", token,
                                        FARES[(rider, bus)], tap_detail(bus, tap_rider),
                                        rider, bus))
        for _ in range(rng.choice([0, 1, 2, 3])):
            d = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
            wall = seoul_ms(d.year, d.month, d.day, rng.choice([10, 11, 22]), rng.randrange(60))
            till = f"TILL-{rng.randrange(100):02d}"
            food = rng.random() < 0.5
            pay = Event(wall, till, "payment", token, rng.randrange(1_000, 80_000),
                        pay_detail("local_food" if food else "general"))
            events.append(pay)
            if rng.random() < 0.2:
                back = rng.randrange(1, pay.amount + 1)
                kind = "void" if back == pay.amount else "refund"
                events.append(Event(wall + rng.randrange(1, 30) * 3_600_000, till, kind, token,
                                    back, '{"merchant_category":"x"}', pays=pay))
    return events, profiles


def independent(events: list[Event], profiles: dict[str, str]) -> tuple[
        dict[tuple[str, str], int], dict[tuple[str, date], int]]:
    """Points per (card, month) and bus points per (card, week), from the rules as written."""
    months: dict[tuple[str, str], int] = defaultdict(int)
    weeks: dict[tuple[str, date], int] = defaultdict(int)
    rode: set[tuple[str, date]] = set()
    for e in sorted((e for e in events if e.kind == "tap"), key=lambda e: e.wall):
        d = seoul_day(e.wall)
        if d.weekday() >= 5 or d in HOLIDAYS or e.bus_type == "express":
            continue
        if (e.token, d) in rode:
            continue
        rode.add((e.token, d))
        cap = CAPS.get(profiles.get(e.token, e.rider))
        if cap is None:
            continue
        wk = d - timedelta(days=d.weekday())
        got = min(e.amount, cap - weeks[(e.token, wk)])
        weeks[(e.token, wk)] += got
        months[(e.token, month(d))] += got
    for e in events:
        if e.kind == "payment" and '"local_food"' in e.detail:
            months[(e.token, month(seoul_day(e.wall)))] += e.amount * 3 // 1000
        elif e.pays is not None and '"local_food"' in e.pays.detail:
            p = e.pays
            months[(e.token, month(seoul_day(e.wall)))] += (
                (p.amount - e.amount) * 3 // 1000 - p.amount * 3 // 1000)
    return ({k: v for k, v in months.items() if v}, weeks)


def batches(events: list[Event]) -> list[list[list[Ingested]]]:
    """Per sync round, each terminal's batch in time order, with sequence numbers."""
    by_terminal: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        by_terminal[e.terminal].append(e)
    for evs in by_terminal.values():
        evs.sort(key=lambda e: e.wall)
        for i, e in enumerate(evs, 1):
            e.seq = i
    rounds: dict[int, dict[str, list[Event]]] = defaultdict(lambda: defaultdict(list))
    for tid, evs in by_terminal.items():
        for e in evs:
            rounds[(e.wall + KST // timedelta(milliseconds=1)) // SLOT_MS][tid].append(e)
    index = 0
    out = []
    for slot in sorted(rounds):
        this = []
        for tid in sorted(rounds[slot]):
            batch = []
            for e in rounds[slot][tid]:
                ref = e.pays.seq if e.pays is not None else 0
                batch.append(Ingested(index, unsigned(tid, e.seq, e.kind, e.token, e.amount,
                                                      e.wall, e.detail, ref), ""))
                index += 1
            this.append(batch)
        out.append(this)
    return out


def test_a_month_of_10000_riders(tmp_path: Path) -> None:
    rng = random.Random(20250301)
    events, profiles = simulate(rng)
    want_months, want_weeks = independent(events, profiles)
    near_midnight = sum(1 for e in events if e.kind == "tap" and seoul_day(e.wall) != datetime
                        .fromtimestamp(e.wall / 1000, UTC).date())
    assert near_midnight > 10_000 and len(events) > 150_000
    store = open_store(f"sqlite:///{tmp_path / 'central.sqlite'}")
    trickle = open_store(f"sqlite:///{tmp_path / 'trickle.sqlite'}")
    try:
        set_profiles(store, profiles)
        set_profiles(trickle, profiles)
        rounds = batches(events)
        for round_ in rounds:           # crediting follows each round of syncs
            load_log(trickle, round_)
            credit_log(trickle, now_ms=0)
        # The same log credited as one backlog, in chunks that split batches, gives the very
        # same credits: crediting depends on the log order only.
        load_log(store, [batch for round_ in rounds for batch in round_])
        credit_log(store, chunk=997, now_ms=0)
        query = "SELECT * FROM incentive_credits ORDER BY terminal_id, seq"
        weeks = "SELECT card_token, week_start, points, days_mask FROM incentive_weeks " \
                "ORDER BY card_token, week_start"
        with store.tx(write=False) as tx, trickle.tx(write=False) as tt:
            assert tx.all(query) == tt.all(query) and tx.all(weeks) == tt.all(weeks)
        with store.tx(write=False) as tx:
            got_rows = tx.all("SELECT card_token, day, SUM(points) FROM incentive_credits "
                              "GROUP BY card_token, day")
            bus_rows = tx.all("SELECT card_token, day, points FROM incentive_credits "
                              "WHERE rule = 'bus'")
        got: dict[tuple[str, str], int] = defaultdict(int)
        for token, day, points in got_rows:
            got[(str(token), str(day)[:7])] += int(points)
        assert {k: v for k, v in got.items() if v} == want_months
        week_sums: dict[tuple[str, date], int] = defaultdict(int)
        for token, day, points in bus_rows:
            d = date.fromisoformat(str(day))
            week_sums[(str(token), d - timedelta(days=d.weekday()))] += int(points)
        riders = {e.token: e.rider for e in events if e.kind == "tap"}
        for (token, wk), points in week_sums.items():
            assert points <= CAPS[profiles.get(token, riders[token])], (token, wk)
        assert week_sums == {k: v for k, v in want_weeks.items() if v}
        assert sum(1 for k, v in week_sums.items() if v == CAPS["adult"]) > 1000
        # Every rider has an account: February and March pay exactly what was earned.
        store_balances = {f"{r:032x}": 0 for r in range(RIDERS)}
        with store.tx() as tx:
            tx.many("INSERT INTO balances (card_token, balance, version) VALUES (?, ?, 1)",
                    list(store_balances.items()))
        end = seoul_ms(2025, 4, 3, 0, 0, 1)
        feb, mar = payout(store, "2025-02", end), payout(store, "2025-03", end)
        for result, m in ((feb, "2025-02"), (mar, "2025-03")):
            owed = _paid_by_month(want_months, m)
            assert result.points == sum(v for v in owed.values() if v > 0)
        assert payout(store, "2025-03", end).already
        sample = f"{rng.randrange(RIDERS):032x}"
        st = statement(store, sample)
        assert st["earned"] == sum(v for (t, _), v in want_months.items() if t == sample)
    finally:
        store.close()
        trickle.close()


def _paid_by_month(months: dict[tuple[str, str], int], m: str) -> dict[str, Any]:
    """What a month's payout owes each card: its net, plus a carried negative of the month
    before (February's payout is the first, so only March can carry)."""
    out: dict[str, int] = {t: v for (t, mm), v in months.items() if mm == m}
    if m == "2025-03":
        for (t, mm), v in months.items():
            if mm == "2025-02" and v < 0:
                out[t] = out.get(t, 0) + v
    return out
