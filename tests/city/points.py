"""Points the programme owes, worked out here from the terminals' ledgers alone, without the
central's crediting code (``central.incentives``), to be set against what it credited.

The rules, as the programme states them (``central/incentive_rules.toml``), written out
again:

- **bus**: a tap earns its fare back if it is the card's first ride of a weekday that is
  not a South Korean public holiday (the national calendar, the ``holidays`` package), on a
  city or village bus; a card's bus points in one week (Monday to Sunday) are at most 2,900
  for an adult and 2,020 for youth (youth: the card's central profile, else the rider the
  tap recorded). A card's fare is the same all week (its category is set before the week),
  so a week earns ``min(cap, sum of its first rides' fares)`` whatever order the rides
  arrive in; a week whose first rides differ in fare is reported, not guessed;
- **local food**: a payment at a ``local_food`` till earns 30 points per 10,000 won of what
  is left of it after its refunds and voids, rounded down;
- **campaigns**: an ``incentive`` entry on a day its campaign runs earns the campaign's
  points (never more than the code was signed for), once per card and campaign.

Days, weekdays and weeks are those of the entry's time in Seoul: its stated time when its
clock was trusted, else the time the central gave it (an entry whose terminal said its
clock was ``unknown`` states 1970; where it belongs is the central's to say, and
:mod:`tests.city.check` checks that it put it between its neighbours).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import holidays

from tests.city.population import SIGNED_CAMPAIGN_POINTS, CityPlan
from tests.city.simclock import SEOUL

EARNING_BUSES = frozenset({"city", "village"})
WEEKLY_CAP = {"adult": 2900, "youth": 2020}
FOOD_RATE_BP = 30


@dataclass(frozen=True)
class Item:
    """What the computation needs of one ledger entry."""

    terminal: str
    seq: int
    kind: str
    card: str
    amount: int
    ref_seq: int
    detail: dict[str, Any]
    #: the entry's time (ms): stated, or the central's when its clock was unknown
    when_ms: int


@dataclass
class Owed:
    by_card: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_rule: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: weeks the model cannot judge (first rides of different fares)
    unjudged: list[str] = field(default_factory=list)

    def add(self, card: str, rule: str, points: int) -> None:
        if points:
            self.by_card[card] += points
            self.by_rule[rule] += points


def day_of(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, SEOUL).date()


def _earning_day(day: date, calendars: dict[int, Any]) -> bool:
    if day.weekday() >= 5:
        return False
    if day.year not in calendars:
        calendars[day.year] = holidays.KR(years=day.year)
    return day not in calendars[day.year]


def owed(items: Iterable[Item], plan: CityPlan, profiles: Mapping[str, str]) -> Owed:
    """Every card's points (see the module docstring)."""
    out = Owed()
    calendars: dict[int, Any] = {}
    # card -> Monday -> day -> (first ride's time, fare), and the card's category
    firsts: dict[str, dict[date, dict[date, tuple[int, int]]]] = defaultdict(
        lambda: defaultdict(dict))
    rider: dict[str, str] = {}
    payments: dict[tuple[str, int], list[int]] = {}
    food_cards: dict[tuple[str, int], str] = {}
    backs: list[Item] = []
    claims: list[Item] = []
    for it in items:
        if not it.card:
            continue
        if it.kind == "tap":
            day = day_of(it.when_ms)
            if (it.amount <= 0 or it.detail.get("bus_type") not in EARNING_BUSES
                    or not _earning_day(day, calendars)):
                continue
            monday = day - timedelta(days=day.weekday())
            held = firsts[it.card][monday].get(day)
            if held is None or it.when_ms < held[0]:
                firsts[it.card][monday][day] = (it.when_ms, it.amount)
            rider[it.card] = profiles.get(it.card) or str(it.detail.get("rider", "adult"))
        elif it.kind == "payment" and it.amount > 0 \
                and it.detail.get("merchant_category") == "local_food":
            payments[(it.terminal, it.seq)] = [it.amount]
            food_cards[(it.terminal, it.seq)] = it.card
        elif it.kind in ("refund", "void") and it.ref_seq:
            backs.append(it)
        elif it.kind == "incentive":
            claims.append(it)
    for card, weeks in firsts.items():
        cap = WEEKLY_CAP.get(rider[card])
        if cap is None:
            continue
        for monday, days in weeks.items():
            fares = [fare for _, fare in days.values()]
            if len(set(fares)) > 1:
                out.unjudged.append(f"{card[:12]} week of {monday}: fares {sorted(fares)}")
            out.add(card, "bus", min(cap, sum(fares)))
    for it in backs:
        paid = payments.get((it.terminal, it.ref_seq))
        if paid is not None:
            paid[0] = max(paid[0] - it.amount, 0)
    for key, (kept,) in payments.items():
        out.add(food_cards[key], "local_food", kept * FOOD_RATE_BP // 10_000)
    granted: set[tuple[str, str]] = set()
    wallets: set[tuple[str, str]] = set()
    rules = {c.campaign_id: c for c in plan.campaigns}
    for it in claims:
        c = rules.get(str(it.detail.get("campaign", "")))
        if c is None:
            continue
        day = day_of(it.when_ms)
        if not plan.day_date(c.first) <= day <= plan.day_date(c.last):
            continue
        wallet = str(it.detail.get("wallet", ""))
        if (c.campaign_id, it.card) in granted or (c.campaign_id, wallet) in wallets:
            continue
        granted.add((c.campaign_id, it.card))
        wallets.add((c.campaign_id, wallet))
        out.add(it.card, "campaign", min(c.points, SIGNED_CAMPAIGN_POINTS))
    return out


def detail_of(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text) if text else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
