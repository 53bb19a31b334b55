"""A simulated year of a city, through the real central service, its money checked against an
independent computation written here.

10,000 riders ride the city's buses on a few weeks of 2025 and pay at local-food shops; the
validators' clocks fail (epoch boots, one an hour fast for two weeks, corrected mid-batch);
batches arrive days late and out of order across terminals, some twice; version 2 of the
rules takes effect on 1 July; Seollal and Chuseok pass; months are paid out in a shuffled
order, some twice, while cards get balance accounts between the runs.

:class:`Book` below is the independent computation: it places every entry in time, credits
it and pays it out from the programme's rules as written in this file (fares, caps, rates,
the 2025 holiday calendar), never from the service's modules. The service is then held to
it: every effective time and clock flag, every payout run, every card's earned and paid
points, every settlement file row by row, every balance, and the sum of all payouts.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import holidays
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.incentive_rules import default_rules_text
from central.incentives import IncentiveCrediter
from central.payouts import payout, statement, write_settlement
from central.profiles import set_profiles
from central.rules import default_hooks
from central.service import CentralLog
from central.store import open_store
from central.versions import load_rules
from firmware_cfg.keys import public_hex
from sync.checkpoint import NoteSigner
from sync.protocol import WireEntry
from tests.incentives_data import Chain, seoul_ms

# -- the programme, as this test holds it --------------------------------------------------------

#: Korean public holidays of 2025 (the official calendar): Seollal 28–30 January with the
#: temporary holiday of the 27th, Chuseok 5–7 October with its substitute on the 8th, the
#: presidential election of 3 June, and the substitutes for 1 March and 5 May.
HOLIDAYS_2025 = frozenset(date.fromisoformat(d) for d in (
    "2025-01-01", "2025-01-27", "2025-01-28", "2025-01-29", "2025-01-30", "2025-03-01",
    "2025-03-03", "2025-05-05", "2025-05-06", "2025-06-03", "2025-06-06", "2025-08-15",
    "2025-10-03", "2025-10-05", "2025-10-06", "2025-10-07", "2025-10-08", "2025-10-09",
    "2025-12-25"))
BUS_TYPES_EARNING = ("city", "village")
FOOD_CATEGORY = "local_food"
#: version: (first day in force, weekly bus caps by rider category, local-food rate in bp)
VERSIONS = {1: (date(2025, 1, 1), {"adult": 2900, "youth": 2020}, 30),
            2: (date(2025, 7, 1), {"adult": 3500, "youth": 2020}, 50)}
V2_LOADED = seoul_ms(2025, 6, 20, 10)          # before any July entry exists

EARLIEST_MS = seoul_ms(2020, 1, 1, 0, 0, 0)
SKEW_MS = 10 * 60_000
BACK_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
KST_MS = 9 * HOUR_MS
EPOCH = date(1970, 1, 1)

# -- the city -----------------------------------------------------------------------------------

SEED = 20_250_128
RIDERS = 10_000
VALIDATORS = 30
TILLS = 4
PAYMENTS = 3_000
OPENING = 1_000_000                 # what a card's balance account starts with
#: fares charged by a validator by its bus type and the category the card says
FARES = {"city": {"adult": 1500, "youth": 1000, "child": 600},
         "village": {"adult": 1200, "youth": 900, "child": 500},
         "intercity": {"adult": 2800, "youth": 2200, "child": 1400}}
EPOCH_BOOTERS = ("BUS-03", "BUS-17")
FAST = "BUS-08"                               # an hour fast from 14 April to 25 April noon
FAST_FROM, FAST_UNTIL = seoul_ms(2025, 4, 14, 0), seoul_ms(2025, 4, 25, 12)
LATE_OVER_NEW_YEAR = "BUS-05"                 # its last December days reach central in 2026
#: weeks many riders ride in: Seollal, 1 March, Children's Day, the election, the clock an
#: hour fast, the week the rules change, Chuseok and the days around it, the year's ends
SPECIAL_MONDAYS = tuple(date.fromisoformat(d) for d in (
    "2025-01-27", "2025-03-03", "2025-05-05", "2025-06-02", "2025-04-14", "2025-04-21",
    "2025-06-30", "2025-06-30", "2025-09-29", "2025-10-06", "2024-12-30", "2025-12-29"))
FIRST_DAY, LAST_DAY = date(2025, 1, 1), date(2025, 12, 31)


def seoul_day(ms: int) -> date:
    return EPOCH + timedelta(days=(ms + KST_MS) // DAY_MS)


def month_str(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def month_after(month: str) -> str:
    y, m = int(month[:4]), int(month[5:])
    return f"{y + m // 12:04d}-{m % 12 + 1:02d}"


def day_start_ms(day: date) -> int:
    return seoul_ms(day.year, day.month, day.day, 0, 0, 0)


# -- what happened, in true time -----------------------------------------------------------------


@dataclass
class Raw:
    """Something that happened at a terminal, at its true time."""

    true_ms: int
    kind: str                     # tap, payment, refund, void
    token: str
    amount: int
    bus_type: str = ""
    rider: str = "adult"          # the category the card says at the validator
    category: str = ""            # a payment's merchant category
    pid: int = -1                 # a payment's id, or the payment a refund refers to


@dataclass
class Batch:
    terminal_id: str
    send_ms: int
    entries: list[WireEntry]
    #: entries already sent in the terminal's previous batch, sent again in front of this one
    again: list[WireEntry] = field(default_factory=list)


@dataclass
class City:
    profiles: dict[str, str]                       # set before the year starts
    later_profiles: dict[str, str]                 # set on 15 July
    accounts_at_start: list[str]
    accounts_later: dict[int, list[str]]           # opened at these moments
    batches: list[Batch]
    runs: list[tuple[int, str]]                    # (when, month), re-runs included
    resent: set[int]                               # batches sent twice (indexes)
    chains: dict[str, Chain]
    true_ms: dict[tuple[str, int], int]            # when each entry really happened


def build_city(rng: random.Random) -> City:
    tokens = [hashlib.sha256(b"card %d" % i).hexdigest()[:32] for i in range(RIDERS)]
    profiles: dict[str, str] = {}
    says: dict[str, str] = {}
    for token in tokens:
        u = rng.random()
        if u < 0.08:
            profiles[token] = says[token] = "youth"
        elif u < 0.09:
            profiles[token] = says[token] = "child"        # no cap for children: no points
        elif u < 0.11:
            says[token] = "youth"                           # no profile: the tap's category
        elif u < 0.12:
            profiles[token], says[token] = "adult", "youth"  # the profile wins
        elif u < 0.125:
            says[token] = "child"
        else:
            says[token] = "adult"
    adults = [t for t in tokens if t not in profiles and says[t] == "adult"]
    later_profiles = {t: "youth" for t in rng.sample(adults, 200)}

    bus_type = {f"BUS-{n:02d}": ("intercity" if n in (29, 30) else
                                 "village" if n > 22 else "city")
                for n in range(1, VALIDATORS + 1)}
    validators = sorted(bus_type)
    raw: dict[str, list[Raw]] = defaultdict(list)
    mondays = [date(2024, 12, 30) + timedelta(weeks=w) for w in range(53)]
    for token in tokens:
        home = rng.sample(validators, 2)
        weeks = {rng.choice(SPECIAL_MONDAYS) if rng.random() < 0.3 else rng.choice(mondays)
                 for _ in range(rng.choice((1, 1, 1, 2, 2)))}
        for monday in sorted(weeks):             # sets of dates iterate by hash seed
            days = {rng.choice((0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6))
                    for _ in range(rng.choice((1, 2, 2, 3, 4)))}
            for wd in sorted(days):
                day = monday + timedelta(days=wd)
                if not FIRST_DAY <= day <= LAST_DAY:
                    continue
                u = rng.random()
                minute = (rng.randint(6 * 60, 20 * 60) if u < 0.85 else
                          rng.randint(20 * 60, 23 * 60) if u < 0.95 else
                          rng.randint(23 * 60, 23 * 60 + 58))
                at = day_start_ms(day) + minute * 60_000 + rng.randint(0, 59_999)
                for n in range(rng.choice((1, 1, 1, 2, 2, 3))):
                    if n:
                        at += rng.randint(15, 360) * 60_000
                    if seoul_day(at) > LAST_DAY:
                        break
                    tid = rng.choice(home) if rng.random() < 0.8 else rng.choice(validators)
                    fare = FARES[bus_type[tid]][says[token]]
                    u = rng.random()
                    if u < 0.03:
                        fare = 0                              # a free transfer
                    elif u < 0.10:
                        fare = rng.choice((250, 450, 1450, 1650))
                    raw[tid].append(Raw(at, "tap", token, fare, bus_type[tid], says[token]))

    # the morning BUS-08's clock is set right: its rides just after noon state times before
    # the hour-fast ones just before; some of their riders ride another bus meanwhile
    for k in range(16):
        at, token = seoul_ms(2025, 4, 25, 11, 20) + 7 * k * 60_000, rng.choice(tokens)
        raw[FAST].append(Raw(at, "tap", token, FARES["city"][says[token]], "city", says[token]))
        if k % 2:
            other = rng.choice(validators[:20])
            raw[other].append(Raw(at + 9 * 60_000, "tap", token, 1400, "city", says[token]))
    raw[FAST].append(Raw(seoul_ms(2025, 4, 25, 18), "tap", tokens[0], 1500, "city", "adult"))

    tills = [f"TILL-{n}" for n in range(1, TILLS + 1)]
    for pid in range(PAYMENTS):
        tid, token = rng.choice(tills), rng.choice(tokens)
        day = FIRST_DAY + timedelta(days=rng.randrange(365))
        at = day_start_ms(day) + rng.randint(9 * 60, 21 * 60) * 60_000
        u = rng.random()
        amount = (rng.randint(1, 190) if u < 0.05 else rng.randrange(3_000, 80_000, 10)
                  if u < 0.7 else rng.randrange(80_000, 400_000, 100))
        category = FOOD_CATEGORY if rng.random() < 0.8 else "grocery"
        raw[tid].append(Raw(at, "payment", token, amount, category=category, pid=pid))
        u = rng.random()
        refunds = 0 if u > 0.19 else 2 if u < 0.04 else 1
        when = at
        for _ in range(refunds):
            when += rng.randint(60, 40 * 24 * 60) * 60_000
            if seoul_day(when) > LAST_DAY:
                break
            back = amount if rng.random() < 0.3 else rng.randint(1, amount)
            kind = "void" if back == amount and seoul_day(when) == day else "refund"
            raw[tid].append(Raw(when, kind, token, back, category=FOOD_CATEGORY, pid=pid))

    chains: dict[str, Chain] = {}
    true_ms: dict[tuple[str, int], int] = {}
    batches: list[Batch] = []
    for tid in sorted(raw):
        happened = sorted(raw[tid], key=lambda r: r.true_ms)
        walls = stated_walls(rng, tid, happened)
        chain = chains[tid] = Chain(tid)
        pay_seq: dict[int, int] = {}
        weekly = tid == FAST or tid.startswith("TILL") or rng.random() < 0.85
        periods: dict[date, list[WireEntry]] = defaultdict(list)
        for r, wall in zip(happened, walls, strict=True):
            if r.kind == "tap":
                e = chain.tap(r.token, wall, fare=r.amount, bus_type=r.bus_type, rider=r.rider)
            elif r.kind == "payment":
                e = chain.pay(r.token, r.amount, wall, category=r.category)
                pay_seq[r.pid] = e.seq
            else:
                e = chain.refund(r.token, r.amount, pay_seq[r.pid], wall, kind=r.kind)
            true_ms[(tid, e.seq)] = r.true_ms
            day = seoul_day(r.true_ms)
            periods[day - timedelta(days=day.weekday()) if weekly else day].append(e)
        last_send = 0
        for start in sorted(periods):
            end = day_start_ms(start + timedelta(days=7 if weekly else 1))
            held_back = rng.random() < 0.08
            delay = (rng.randint(3 * 24, 15 * 24) if held_back else rng.randint(1, 30)) * HOUR_MS
            if tid == LATE_OVER_NEW_YEAR and start >= date(2025, 12, 20):
                delay = seoul_ms(2026, 1, 20) - end    # sent after December was paid out
            last_send = max(end + delay + rng.randint(0, HOUR_MS), last_send + 1)
            batches.append(Batch(tid, last_send, periods[start]))
    # a few terminals resend the tail of their previous batch in front of the next one
    previous: dict[str, Batch] = {}
    for b in sorted(batches, key=lambda b: b.send_ms):
        before = previous.get(b.terminal_id)
        if before is not None and rng.random() < 0.02:
            b.again = before.entries[-3:]
        previous[b.terminal_id] = b
    batches.sort(key=lambda b: (b.send_ms, b.terminal_id))
    resent = set(rng.sample(range(len(batches)), 8))

    # accounts: most cards from the start, some opened during the year, some never
    shuffled = rng.sample(tokens, len(tokens))
    at_start = shuffled[: RIDERS * 7 // 10]
    final = seoul_ms(2026, 2, 20, 10)
    moments = sorted(rng.randrange(seoul_ms(2025, 2, 1), final) for _ in range(25))
    accounts_later: dict[int, list[str]] = defaultdict(list)
    for token in shuffled[RIDERS * 7 // 10 : RIDERS * 9 // 10]:
        accounts_later[rng.choice(moments)].append(token)
    # payouts: each month some days to two months after it ends, two of the autumn months
    # only at the end, after every batch; four months run twice; January 2026 takes what
    # arrived for December after December was paid
    late = set(rng.sample(["2025-09", "2025-10", "2025-11"], 2))
    runs: list[tuple[int, str]] = []
    for m in range(1, 13):
        month = f"2025-{m:02d}"
        if month in late:
            continue
        ended = seoul_ms(2025 + m // 12, m % 12 + 1, 1, 0, 0, 0)
        after = rng.randint(1, 60) if m < 12 else 5
        runs.append((ended + after * DAY_MS + rng.randint(0, DAY_MS), month))
    for i, month in enumerate(rng.sample(sorted(late), len(late))):
        runs.append((final + i * HOUR_MS, month))
    runs.append((final + 5 * HOUR_MS, "2026-01"))
    for when, month in rng.sample(sorted(runs), 4):
        runs.append((when + rng.randint(1, 40) * DAY_MS, month))
    assert max(b.send_ms for b in batches) < final
    return City(profiles, later_profiles, at_start, dict(accounts_later), batches,
                sorted(runs), resent, chains, true_ms)


def stated_walls(rng: random.Random, tid: str, happened: list[Raw]) -> list[int]:
    """What the terminal's clock said at each of its entries."""
    walls = [r.true_ms for r in happened]
    if tid == FAST:
        walls = [w + HOUR_MS if FAST_FROM <= w < FAST_UNTIL else w for w in walls]
    if tid in EPOCH_BOOTERS:
        by_day: dict[date, list[int]] = defaultdict(list)
        for i, r in enumerate(happened):
            by_day[seoul_day(r.true_ms)].append(i)
        busy = [d for d in sorted(by_day) if len(by_day[d]) >= 3]
        for day in rng.sample(busy, 8):
            # a power cut overnight, no network at boot: the first rides of the day are
            # stamped seconds after the epoch, until NTP answers
            idx = by_day[day]
            for j, i in enumerate(idx[: rng.randint(1, len(idx) - 1)]):
                walls[i] = 3_000 + j * 11_000
    return walls


# -- the independent computation ---------------------------------------------------------------


@dataclass
class Credit:
    token: str
    rule: str                      # bus, local_food, refund
    points: int
    payable: str
    settled: str | None = None


@dataclass
class First:
    """The first ride of a card's weekday so far: when, and its credit (None: it earned 0)."""

    effective_ms: int
    credit: Credit | None


@dataclass
class Week:
    points: int = 0
    firsts: dict[int, First] = field(default_factory=dict)


@dataclass
class Run:
    cards: int = 0
    points: int = 0
    held_cards: int = 0
    held_points: int = 0
    paid: dict[str, int] = field(default_factory=dict)


class Book:
    """The programme's money, computed from this file's rules, entry by entry in the order
    the service receives them, and run by run."""

    def __init__(self) -> None:
        self.last_effective: dict[str, int] = {}
        self.effective: dict[tuple[str, int], int] = {}
        self.clock_flags: set[tuple[str, int]] = set()
        self.profiles: dict[str, str] = {}
        self.accounts: dict[str, int] = {}
        self.credits: list[Credit] = []
        self.weeks: dict[tuple[str, date], Week] = {}
        self.payments: dict[tuple[str, int], list[int]] = {}   # [amount left, kept, rate]
        self.runs: dict[str, Run] = {}
        self.paid: dict[str, int] = defaultdict(int)
        #: what the year went through, to be sure it did: first rides moved, first rides
        #: that stayed because their credit was paid, rides past the weekly cap, credits
        #: payable after their month, refunds, carried nets, cards held
        self.seen: dict[str, int] = defaultdict(int)

    # time
    def place(self, tid: str, entries: list[WireEntry], arrival_ms: int) -> list[int]:
        """Effective times of a batch of ``tid``: the stated time when it is plausible, else
        the next plausible stated time in the batch, never before the previous entry."""
        start = self.last_effective.get(tid, 0)
        lowest = max(EARLIEST_MS, start - BACK_MS)
        upper = arrival_ms + SKEW_MS
        out: list[int] = []
        prev = start
        walls = [e.wall_ms for e in entries]
        for i, wall in enumerate(walls):
            if EARLIEST_MS <= wall <= upper and wall >= prev - BACK_MS:
                eff = max(wall, prev)
            else:
                self.clock_flags.add((tid, entries[i].seq))
                later = [w for w in walls[i + 1:] if lowest <= w <= upper]
                # the latest it can have happened; the scenario never leaves it the arrival,
                # which is today: 2025's batches all arrive late
                assert later, f"{tid}: an implausible last entry would take its arrival time"
                eff = max(min([arrival_ms, *later]), prev, EARLIEST_MS)
            out.append(eff)
            prev = eff
        self.last_effective[tid] = prev
        return out

    # crediting
    def version(self, day: date) -> int:
        return 2 if day >= VERSIONS[2][0] else 1

    def payable(self, day: date) -> str:
        month = month_str(day)
        while month in self.runs:
            month = month_after(month)
        return month

    def add(self, token: str, rule: str, points: int, day: date) -> Credit:
        c = Credit(token, rule, points, self.payable(day))
        if c.payable != month_str(day):
            self.seen["payable late"] += 1
        self.credits.append(c)
        return c

    def ingest(self, tid: str, entries: list[WireEntry], arrival_ms: int) -> None:
        effs = self.place(tid, entries, arrival_ms)
        for e, eff in zip(entries, effs, strict=True):
            self.effective[(tid, e.seq)] = eff
            if e.card_token in self.accounts:       # the balance follows what is spent
                self.accounts[e.card_token] += (-e.amount if e.kind in ("tap", "payment")
                                                else e.amount)
            day = seoul_day(eff)
            if e.kind == "tap":
                self.tap(e, eff, day)
            elif e.kind == "payment":
                self.pay(e, day)
            else:
                self.refund(e, day)

    def tap(self, e: WireEntry, eff: int, day: date) -> None:
        detail = _detail(e.detail)
        if e.amount <= 0 or detail["bus_type"] not in BUS_TYPES_EARNING:
            return
        if day.weekday() >= 5 or day in HOLIDAYS_2025:
            if day.weekday() < 5:
                self.seen["holiday rides"] += 1
            return
        version = self.version(day)
        cap = VERSIONS[version][1].get(self.profiles.get(e.card_token) or detail["rider"])
        if cap is None:
            return
        week = self.weeks.setdefault((e.card_token, day - timedelta(days=day.weekday())),
                                     Week())
        first = week.firsts.get(day.weekday())
        base = week.points
        if first is not None:
            if eff >= first.effective_ms:
                return                      # a later ride of a day that had its first
            if first.credit is not None:
                if first.credit.settled is not None:
                    self.seen["first ride paid, stays"] += 1
                    return                  # the first ride's credit is paid: it stays
                self.seen["first ride moved"] += 1
                base -= first.credit.points
                self.add(e.card_token, "bus", -first.credit.points, day)
        points = max(0, min(e.amount, cap - base))
        if points < e.amount:
            self.seen["capped"] += 1
        week.points = base + points
        credit = self.add(e.card_token, "bus", points, day) if points else None
        week.firsts[day.weekday()] = First(eff, credit)

    def pay(self, e: WireEntry, day: date) -> None:
        if _detail(e.detail).get("merchant_category") != FOOD_CATEGORY or e.amount <= 0:
            return
        rate = VERSIONS[self.version(day)][2]
        points = e.amount * rate // 10_000
        if points:
            self.payments[(e.terminal_id, e.seq)] = [e.amount, points, rate]
            self.add(e.card_token, "local_food", points, day)

    def refund(self, e: WireEntry, day: date) -> None:
        paid = self.payments.get((e.terminal_id, e.ref_seq))
        if paid is None:
            return                          # the payment earned nothing
        left = max(paid[0] - e.amount, 0)
        keep = left * paid[2] // 10_000
        self.add(e.card_token, "refund", keep - paid[1], day)
        self.seen["refunds"] += 1
        paid[0], paid[1] = left, keep

    # payouts
    def run(self, month: str) -> tuple[Run, bool]:
        if month in self.runs:
            return self.runs[month], True
        due: dict[str, list[Credit]] = defaultdict(list)
        for c in self.credits:
            if c.settled is None and (c.payable == month or c.payable in self.runs):
                due[c.token].append(c)
        run = Run()
        for token, credits in due.items():
            net = sum(c.points for c in credits)
            if net > 0 and token not in self.accounts:
                run.held_cards += 1
                run.held_points += net
                self.seen["held"] += 1
                continue
            if net < 0:
                self.seen["carried"] += 1
                continue                    # carried to the next run
            for c in credits:
                c.settled = month
            if net > 0:
                run.cards += 1
                run.points += net
                run.paid[token] = net
                self.paid[token] += net
                self.accounts[token] += net
        self.runs[month] = run
        return run, False

    def settlement(self, month: str, riders: dict[str, str]) -> list[list[str]]:
        run = self.runs[month]
        by_card: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for c in self.credits:
            if c.settled == month and c.token in run.paid:
                by_card[c.token][c.rule] += c.points
        rows = []
        for token in sorted(by_card):
            r = by_card[token]
            total = r["bus"] + r["local_food"] + r["refund"]
            assert total == run.paid[token]
            rows.append([token, riders.get(token, ""), month, str(r["bus"]),
                         str(r["local_food"]), str(r["refund"]), "0", str(total)])
        return rows

    def earned(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for c in self.credits:
            out[c.token] += c.points
        return out


def _detail(text: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(text)
    return doc


# -- the year ------------------------------------------------------------------------------------


def version_2_text() -> str:
    text = default_rules_text()
    for old, new in (("version = 1", "version = 2"),
                     ("effective_from = 2025-01-01", "effective_from = 2025-07-01"),
                     ("adult = 2900", "adult = 3500"), ("rate_bp = 30", "rate_bp = 50")):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[CentralLog]:
    log = CentralLog(open_store(f"sqlite:///{tmp_path / 'central.sqlite'}"),
                     NoteSigner("test.example/log", Ed25519PrivateKey.generate()),
                     hooks=default_hooks(), followers=[IncentiveCrediter()], policy="anchor")
    yield log
    log.store.close()


def test_the_2025_calendar_is_the_official_one() -> None:
    assert set(holidays.KR(years=2025)) == HOLIDAYS_2025


def test_a_year_of_a_city_pays_what_an_independent_computation_says(
        svc: CentralLog, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    city = build_city(rng)
    book = Book()
    for tid, chain in city.chains.items():
        svc.add_terminal(tid, bytes.fromhex(public_hex(chain.key)))

    # the moments of the year, in order: (when, order among equals, what)
    events: list[tuple[int, int, str, Any]] = [(0, 0, "profiles", city.profiles),
                                               (0, 1, "accounts", city.accounts_at_start),
                                               (V2_LOADED, 0, "rules", None),
                                               (seoul_ms(2025, 7, 15, 9), 0, "profiles",
                                                city.later_profiles)]
    events += [(when, 1, "accounts", tokens) for when, tokens in city.accounts_later.items()]
    events += [(b.send_ms, 2, "batch", i) for i, b in enumerate(city.batches)]
    events += [(when, 3, "run", month) for when, month in city.runs]
    events.sort(key=lambda ev: ev[:2])
    first_july = min(b.send_ms for b in city.batches
                     if any(seoul_day(e.wall_ms) >= VERSIONS[2][0] for e in b.entries))
    assert V2_LOADED < first_july

    results: dict[str, tuple[int, int, int, int]] = {}
    for when, _, what, arg in events:
        if what == "profiles":
            set_profiles(svc.store, arg)
            book.profiles.update(arg)
        elif what == "accounts":
            svc.set_balances(dict.fromkeys(arg, OPENING))
            book.accounts.update(dict.fromkeys(arg, OPENING))
        elif what == "rules":
            _, stored = load_rules(svc.store, version_2_text(), now_ms=when)
            assert stored
        elif what == "batch":
            b = city.batches[arg]
            arrival = int(time.time() * 1000)
            receipt = svc.ingest(b.terminal_id, b.again + b.entries)
            assert (receipt.first_seq, receipt.accepted) == (b.entries[0].seq, len(b.entries))
            book.ingest(b.terminal_id, b.entries, arrival)
            if arg in city.resent:           # the answer was lost: the terminal sends it again
                assert svc.ingest(b.terminal_id, b.entries).accepted == 0
        else:
            got = payout(svc.store, arg, when)
            want, already = book.run(arg)
            assert (got.cards, got.points, got.held_cards, got.held_points, got.already) == (
                want.cards, want.points, want.held_cards, want.held_points, already), arg
            results[arg] = (got.cards, got.points, got.held_cards, got.held_points)

    # time: every entry's effective time, and the clock flags
    with svc.store.tx(write=False) as tx:
        effective = {(str(t), int(s)): int(e) for t, s, e in tx.all(
            "SELECT terminal_id, seq, effective_ms FROM entries")}
        flagged = [(str(t), int(s)) for t, s in tx.all(
            "SELECT terminal_id, seq FROM flags WHERE rule = 'clock'")]
        versions = {int(v): (str(lo), str(hi)) for v, lo, hi in tx.all(
            "SELECT rule_version, MIN(day), MAX(day) FROM incentive_credits GROUP BY "
            "rule_version")}
        balances = {str(t): int(b) for t, b in tx.all("SELECT card_token, balance FROM balances")}
        earned_db = {str(t): int(p) for t, p in tx.all(
            "SELECT card_token, SUM(points) FROM (SELECT card_token, points FROM "
            "incentive_credits UNION ALL SELECT card_token, points FROM incentive_adjustments) "
            "x GROUP BY card_token")}
        paid_db = {str(t): int(p) for t, p in tx.all(
            "SELECT card_token, SUM(paid) FROM incentive_payouts GROUP BY card_token")}
    assert effective == book.effective
    assert len(flagged) == len(book.clock_flags)
    assert set(flagged) == book.clock_flags
    # each credit by the version in force on its day
    assert versions[1][1] < "2025-07-01" <= versions[2][0], versions

    # points: each card's earned and paid, through statements and the whole tables
    earned = dict(book.earned())
    tokens = sorted(set(earned) | set(book.paid))
    assert earned_db == earned
    assert {t: p for t, p in paid_db.items() if p} == {t: p for t, p in book.paid.items() if p}
    for token in tokens:
        st = statement(svc.store, token)
        assert (st["earned"], st["paid"]) == (earned.get(token, 0), book.paid.get(token, 0)), token

    # settlement files, row by row
    riders = {**city.profiles, **city.later_profiles}
    for month in sorted(book.runs):
        path = tmp_path / f"points-{month}.csv"
        rows = book.settlement(month, riders)
        assert write_settlement(svc.store, month, path) == len(rows)
        with open(path, newline="") as f:
            got_rows = list(csv.reader(f))
        assert got_rows[0] == ["card_token", "category", "month", "bus", "local_food", "refund",
                               "campaign", "total"]
        assert got_rows[1:] == rows, month

    # money, twice: what the runs paid is what the cards with accounts earned, less what
    # they still carry; and every balance is its opening, less what was spent, plus points
    total_paid = sum(r[1] for r in results.values())
    assert total_paid == sum(book.paid.values())
    carried = sum(c.points for c in book.credits if c.settled is None and c.token in book.accounts)
    assert carried <= 0
    assert total_paid == sum(p for t, p in earned.items() if t in book.accounts) - carried
    assert balances == book.accounts

    # and the year went through what it claims to
    walls = {(b.terminal_id, e.seq): e.wall_ms for b in city.batches for e in b.entries}
    booted = [k for k in book.clock_flags if walls[k] < EARLIEST_MS]
    assert len(booted) >= 16 and len(book.clock_flags) > len(booted)   # boots, and catching up
    shifted = [k for k, eff in book.effective.items()
               if k[0] == FAST and seoul_day(eff) != seoul_day(city.true_ms[k])]
    assert shifted                     # rides late at night counted on the next day
    seen = book.seen
    assert seen["first ride moved"] > 1000 and seen["first ride paid, stays"] > 0
    assert seen["capped"] > 1000 and seen["holiday rides"] > 1000
    assert seen["payable late"] > 0 and seen["carried"] > 0 and seen["refunds"] > 300
    assert sum(1 for r in results.values() if r[2]) == len(results)   # cards held every month
    assert any(book.paid.get(t) for ts in city.accounts_later.values() for t in ts)
    assert results["2026-01"][0] > 0   # December's late rides, after December was paid
