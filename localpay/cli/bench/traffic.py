"""What terminals really record, for the benchmarks' synthetic ledgers.

The details are built with the same fields and the same canonical JSON as
``terminal.core.Terminal._detail`` writes into each tap and payment (``scheme``, ``card``,
``rider``, ``clock``, and ``bus_type`` on a validator or ``merchant_category`` on a till), so
the central service's crediting (:mod:`central.incentives`) reads them as it reads real
ones: a city or village bus tap earns its first ride of a weekday, a local-food purchase
earns points, an express bus or a general store earns nothing.

The mix follows a Goyang day (``localpay bench incentives``): three validators to one till;
city, village and express buses 7:2:1; 30 % of tills local-food stores; one youth rider in
ten; about 2.6 taps per rider per day.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from firmware_cfg.config import DEFAULT
from localpay.encoding import canonical_detail

#: entries per batch: the terminal's own default (``[central] batch_size``), which the sync
#: client sends unless a terminal's config says otherwise
BATCH = DEFAULT.central.batch_size

#: Wednesday 18 November 2026, 05:00 in Seoul (first buses): a plain weekday, no holiday
#: that week, so bus taps earn and a backlog spanning a day or two stays on weekdays
WEEKDAY_MS = 1_794_945_600_000

#: taps per rider per day (Goyang: 1.125 M taps by about 430,000 riders)
TAPS_PER_RIDER = 2.6
BUS_TYPES = (("city", 7), ("village", 2), ("express", 1))
FARES = {"city": 1500, "village": 1200, "express": 2800}
#: share of tills that are local-food stores
LOCAL_FOOD_SHARE = 0.3
#: one rider in ten is a youth (their fare and weekly cap differ)
YOUTH_EVERY = 10


def tap_detail(bus_type: str, rider: str, card: str = "UID 08BE…01",
               clock: str = "synchronised") -> str:
    """A validator's tap detail, as ``terminal.core`` writes it for a UID card."""
    return canonical_detail({"bus_type": bus_type, "card": card, "clock": clock,
                             "rider": rider, "scheme": "uid"})


def payment_detail(merchant_category: str, card: str = "941012******1234",
                   clock: str = "synchronised", atc: int = 1) -> str:
    """A till's payment detail, as ``terminal.core`` writes it for an EMV card."""
    return canonical_detail({"atc": atc, "card": card, "clock": clock,
                             "merchant_category": merchant_category, "rider": "adult",
                             "scheme": "emv"})


def card_token(n: int, prefix: str = "c") -> str:
    """A card token shaped like ``terminal.cards.card_token``'s (32 hex characters)."""
    return f"{prefix}{n:031x}"


@dataclass(frozen=True)
class Traffic:
    """One terminal's entries: its kind (a validator taps, a till takes payments) and per
    entry the card, the amount and the detail."""

    kind: str
    cards: list[str]
    amounts: list[int]
    details: list[str]

    def __len__(self) -> int:
        return len(self.cards)


def validator_traffic(n: int, *, seed: int = 1, bus_type: str | None = None,
                      riders: int | None = None, card_prefix: str = "c") -> Traffic:
    """``n`` taps on one bus: ``riders`` cards (default: one per 2.6 taps), one in ten a
    youth paying the youth fare; the bus type drawn 7:2:1 city/village/express unless
    given."""
    rng = random.Random(seed)
    bus = bus_type or rng.choices([b for b, _ in BUS_TYPES], [w for _, w in BUS_TYPES])[0]
    pool = riders or max(1, round(n / TAPS_PER_RIDER))
    details = {r: tap_detail(bus, r) for r in ("adult", "youth")}
    cards, amounts, out = [], [], []
    for _ in range(n):
        r = rng.randrange(pool)
        youth = r % YOUTH_EVERY == 0
        cards.append(card_token(r, card_prefix))
        amounts.append(FARES[bus] * (6 if youth else 10) // 10)
        out.append(details["youth" if youth else "adult"])
    return Traffic("tap", cards, amounts, out)


def till_traffic(n: int, *, seed: int = 1, local_food: bool | None = None,
                 shoppers: int | None = None, card_prefix: str = "s") -> Traffic:
    """``n`` payments at one till of 1,000 to 80,000 won; a local-food store (30 % of tills
    unless given) or a general one."""
    rng = random.Random(seed)
    food = rng.random() < LOCAL_FOOD_SHARE if local_food is None else local_food
    category = "local_food" if food else "general"
    pool = shoppers or max(1, n * 4 // 5)
    cards, amounts, details = [], [], []
    for i in range(n):
        cards.append(card_token(rng.randrange(pool), card_prefix))
        amounts.append(rng.randrange(1000, 80_000, 10))
        details.append(payment_detail(category, atc=i + 1))
    return Traffic("payment", cards, amounts, details)


def terminal_traffic(index: int, n: int, terminals: int, *, seed: int = 1) -> Traffic:
    """The ``index``-th of ``terminals`` terminals of a city, ``n`` entries each: every
    fourth a till, the others validators; three tills in ten are local-food stores (the
    first till is one). Riders and shoppers are the city's, shared by all its terminals
    (about 2.6 taps per rider; as many shoppers as payments)."""
    tills = terminals // 4
    if index % 4 == 3:
        return till_traffic(n, seed=seed * 7919 + index, shoppers=max(1, tills * n),
                            local_food=(index // 4) % 10 < round(LOCAL_FOOD_SHARE * 10))
    taps = (terminals - tills) * n
    return validator_traffic(n, seed=seed * 7919 + index,
                             riders=max(1, round(taps / TAPS_PER_RIDER)))
