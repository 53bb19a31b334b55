"""Incentive points as the terminal sees them: an estimate to show, and campaign claims.

The central service credits points (``central.incentives``); the terminal only shows
what a tap is likely to earn, offline, from what it already holds:

- the rules' summary and this week's bus points per card, from the last sync
  (``GET /v1/points`` into the ledger's ``points_snapshot``, migration ``0003_points``);
- the card's last tap at this validator (``card_counters``, read anyway by the tap path);
- the rider category the core charged the fare for (its own, the central profile's or the
  config's default; see ``Terminal._fare``), whose weekly cap applies.

The first ride of a weekday is *derived*, not counted: this tap is today's first when neither
the snapshot's day mask nor this validator's last tap says the card rode today. When the last
tap here was today and came after the snapshot, that ride's points are not in the snapshot
yet; it is counted with this tap's fare (the same validator charges the same fare). Rides at
other validators since their last sync are not known here, so the figure is an estimate;
what is credited is decided centrally. The cost on the tap path is one primary-key lookup.

Campaign codes (``terminal.qr.campaign``) are read by the QR application into a
:class:`CardIdentity` with ``extra["campaign"]``; the core holds the claim until a card is
presented and records it then as one ``incentive`` entry for that card, with no money
(``Terminal._claim``). What the screen shows is what the central service credits,
``min(signed points, the campaign's points)``, when the rules' summary names the campaign and
it runs on the claim's day (:func:`campaign_points`); otherwise the signed figure is shown as
not confirmed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from localpay.errors import LedgerError
from offline_ledger import Ledger
from offline_ledger.ledger import CardState
from terminal.cards import CardIdentity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CampaignRule:
    """A campaign as the summary sends it: the most a code earns, and the days it runs."""

    points: int
    start: date
    end: date


@dataclass(frozen=True)
class TerminalRules:
    """The rules' summary the central service sends with the points snapshot."""

    version: int
    tz: ZoneInfo
    bus: bool
    bus_types: frozenset[str]
    weekly_cap: dict[str, int]
    holidays: frozenset[date]
    local_food: bool
    rate_bp: int
    merchant_categories: frozenset[str]
    #: ``None`` when the summary predates campaigns (then no campaign can be confirmed)
    campaigns: dict[str, CampaignRule] | None = None

    @classmethod
    def parse(cls, text: str) -> TerminalRules | None:
        """``None`` for an empty or unusable summary (then no points are shown)."""
        if not text:
            return None
        try:
            doc = json.loads(text)
            return cls(
                int(doc["version"]), ZoneInfo(str(doc["timezone"])), bool(doc["bus"]),
                frozenset(str(t) for t in doc["bus_types"]),
                {str(k): int(v) for k, v in doc["weekly_cap"].items()},
                frozenset(date.fromisoformat(d) for d in doc["holidays"]),
                bool(doc["local_food"]), int(doc["rate_bp"]),
                frozenset(str(c) for c in doc["merchant_categories"]),
                _campaigns(doc.get("campaigns")))
        except (ValueError, KeyError, TypeError, AttributeError, ZoneInfoNotFoundError) as err:
            log.warning("points rules summary unusable, no points shown: %s", err)
            return None

    def day(self, ms: int) -> date:
        return datetime.fromtimestamp(ms / 1000, self.tz).date()


def _campaigns(doc: object) -> dict[str, CampaignRule] | None:
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise TypeError(f"campaigns is {type(doc).__name__}, not an object")
    return {str(cid): CampaignRule(int(c["points"]), date.fromisoformat(str(c["start"])),
                                   date.fromisoformat(str(c["end"])))
            for cid, c in doc.items()}


class PointsEstimator:
    """Points of this tap and this week's total, for the validator's screen."""

    def __init__(self, ledger: Ledger | None, *, refresh_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ledger = ledger
        self.refresh_s = refresh_s
        self.clock = clock
        self._rules: TerminalRules | None = None
        self._text: str | None = None
        self._next = 0.0

    def rules(self) -> TerminalRules | None:
        # The sync client writes new rules from its own connection: look again now and then
        # instead of on every tap.
        now = self.clock()
        if self.ledger is not None and now >= self._next:
            self._next = now + self.refresh_s
            _, text = self.ledger.points_state()
            if text != self._text:
                self._text, self._rules = text, TerminalRules.parse(text)
        return self._rules

    def estimate(self, role: str, bus_type: str, merchant_category: str, card: CardIdentity,
                 amount: int, state: CardState, now_ms: int,
                 rider: str) -> tuple[int | None, int | None]:
        """``(points now, points this week)``; ``None`` where nothing is known or applies.
        ``rider`` is the category the fare was charged for (its weekly cap applies).
        Never raises: an approval is already committed when this runs."""
        try:
            rules = self.rules()
            if rules is None or self.ledger is None:
                return None, None
            if role == "validator":
                return self._tap(rules, bus_type, card, rider, amount, state, now_ms)
            if rules.local_food and merchant_category in rules.merchant_categories:
                return amount * rules.rate_bp // 10_000, None
        except LedgerError as err:
            log.warning("points not estimated: %s", err)
        return None, None

    def _tap(self, rules: TerminalRules, bus_type: str, card: CardIdentity, rider: str,
             fare: int, state: CardState, now_ms: int) -> tuple[int | None, int | None]:
        if not rules.bus or bus_type not in rules.bus_types or self.ledger is None:
            return None, None
        cap = rules.weekly_cap.get(rider)
        if cap is None:
            return None, None
        snap = self.ledger.points_snapshot(card.token)
        today = rules.day(now_ms)
        week = (today - timedelta(days=today.weekday())).isoformat()
        base, mask = (snap.points_week, snap.days_mask) if (
            snap is not None and snap.week_start == week) else (0, 0)
        bit = 1 << today.weekday()
        rode_here_today = bool(state.last_tap_seq) and rules.day(state.last_tap_mono) == today
        if rode_here_today:
            if not mask & bit and (snap is None or state.last_tap_mono > snap.synced_at):
                base = min(base + fare, cap)   # today's first ride, not synced yet
            mask |= bit
        earns = today.weekday() < 5 and today not in rules.holidays
        points = 0 if not earns or mask & bit else max(min(fare, cap - base), 0)
        return points, base + points


# -- campaign claims as ledger entries ----------------------------------------------------------


def campaign_points(rules: TerminalRules | None, campaign: str, signed: int,
                    now_ms: int) -> int | None:
    """What the central service will credit for a code signed for ``signed`` points:
    the same cap as ``central.incentive_rules.Campaign.grant``; ``None`` when the rules held
    here do not confirm it (no summary, an older one, or the campaign unknown or not running
    on ``now_ms``'s day in the rules' time zone)."""
    rule = rules.campaigns.get(campaign) if rules is not None and rules.campaigns else None
    if rules is None or rule is None or not rule.start <= rules.day(now_ms) <= rule.end:
        return None
    return max(0, min(signed, rule.points))


def claim_detail(code: CardIdentity, card: CardIdentity) -> dict[str, str | int | bool]:
    """The ``incentive`` entry's detail: the campaign, the code (the central service
    re-checks it itself), the wallet that brought it, and the card that claimed it."""
    return {"campaign": str(code.extra["campaign"]), "points": int(code.extra["points"]),
            "code": str(code.extra["code"]), "wallet": str(code.extra["wallet"]),
            "scheme": card.scheme, "card": card.display}


def claimed_by(details: list[str], campaign: str) -> bool:
    """Whether one of a card's ``incentive`` entry details claims ``campaign``."""
    for text in details:
        try:
            doc = json.loads(text)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("campaign") == campaign:
            return True
    return False
