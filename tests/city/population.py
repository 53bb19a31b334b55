"""Who lives in the simulated city and what its programme credits: the terminals, the riders
and shoppers, the campaigns, and the config and rules the central service is given.

The shape is Goyang's (``central/incentive_rules.toml``, DESIGN.md): bus riders earn their
first weekday ride's fare back as points, up to 2,900 a week for adults and 2,020 for youth
(a youth card is known by its central profile, which validators also charge the youth fare
by); payments at local-food shops earn 0.3 %; campaign codes give a card points once per
campaign while it runs. Most validators are on city and village buses, which earn; some on
express and airport buses, which do not. About a third of the tills are local-food shops.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.incentive_rules import default_rules_text
from firmware_cfg.card_tokens import card_token
from firmware_cfg.config import DEFAULT, dumps
from firmware_cfg.keys import public_hex

#: rider cards per validator, shopper cards per till
RIDERS_PER_VALIDATOR = 40
SHOPPERS_PER_TILL = 60
#: every seventh rider card has a youth profile
YOUTH_EVERY = 7
#: bus types by validator index, repeating: six of eight earn
BUS_TYPES = ("city", "city", "village", "city", "express", "city", "village", "airport")
#: points a campaign code is signed for (more than any rule gives: the rule caps it)
SIGNED_CAMPAIGN_POINTS = 700


@dataclass(frozen=True)
class CampaignPlan:
    campaign_id: str
    points: int
    #: first and last day, as indexes of the simulated days
    first: int
    last: int


@dataclass(frozen=True)
class TerminalPlan:
    index: int
    role: str
    place: str
    bus_type: str = "city"
    merchant_category: str = "general"

    @property
    def name(self) -> str:
        return f"{self.role[0]}{self.index:03d}"


@dataclass(frozen=True)
class CityPlan:
    seed: int
    validators: int
    tills: int
    days: int
    first_day: str
    #: real seconds between two presentations at a validator (a till: twice as long)
    tap_gap_s: float
    #: the terminals' sync interval (s) and batch size
    sync_interval_s: int
    batch_size: int = 200
    campaigns: tuple[CampaignPlan, ...] = field(default_factory=tuple)

    @classmethod
    def make(cls, seed: int, validators: int, tills: int, days: int, first_day: str, *,
             tap_gap_s: float, sync_interval_s: int) -> CityPlan:
        campaigns = (CampaignPlan("city-week", 500, 1, 3), CampaignPlan("market-day", 300, 5, 5))
        return cls(seed, validators, tills, days, first_day, tap_gap_s, sync_interval_s,
                   campaigns=campaigns)

    def terminals(self) -> list[TerminalPlan]:
        out = [TerminalPlan(i, "validator", str(100 + i), bus_type=BUS_TYPES[i % len(BUS_TYPES)])
               for i in range(self.validators)]
        out += [TerminalPlan(self.validators + j, "till", f"M{j:04d}",
                             merchant_category="local_food" if j % 3 == 0 else "general")
                for j in range(self.tills)]
        return out

    @property
    def riders(self) -> int:
        return max(self.validators, 1) * RIDERS_PER_VALIDATOR

    @property
    def shoppers(self) -> int:
        return max(self.tills, 1) * SHOPPERS_PER_TILL

    def day_date(self, d: int) -> date:
        return date.fromisoformat(self.first_day) + timedelta(days=d)

    # -- cards ------------------------------------------------------------------------------

    @staticmethod
    def rider_uid(n: int) -> bytes:
        return b"\x08\xc1" + n.to_bytes(5, "big")

    @staticmethod
    def shopper_uid(n: int) -> bytes:
        return b"\x08\xc2" + n.to_bytes(5, "big")

    def youth_tokens(self, token_key: bytes) -> dict[str, str]:
        """The youth profiles the operator sets: token -> "youth"."""
        return {card_token(token_key, "uid", self.rider_uid(n)): "youth"
                for n in range(self.riders) if n % YOUTH_EVERY == 3}

    # -- the programme's keys, rules and terminal configs -----------------------------------

    def campaign_key(self) -> Ed25519PrivateKey:
        seed = (self.seed % 2**64).to_bytes(8, "big") * 4
        return Ed25519PrivateKey.from_private_bytes(seed)

    def rules_text(self) -> str:
        """The default rules (version 1) with the week's campaigns and their key."""
        events = "".join(
            f"\n[campaigns.events.{c.campaign_id}]\npoints = {c.points}\n"
            f"start = {self.day_date(c.first).isoformat()}\n"
            f"end = {self.day_date(c.last).isoformat()}\n" for c in self.campaigns)
        return default_rules_text().replace(
            "keys = []", f'keys = ["{public_hex(self.campaign_key())}"]\n{events}')

    def template(self, t: TerminalPlan) -> str:
        """The config an enrolment code carries (enrolment fixes id, role, place, URL and
        keys): the bus type or shop category, the sync cadence, the campaign key."""
        config = (DEFAULT.replace("terminal", bus_type=t.bus_type,
                                  merchant_category=t.merchant_category, language="en")
                  .replace("central", sync_interval_s=self.sync_interval_s,
                           batch_size=self.batch_size)
                  .replace("keys", issuer_public_key=public_hex(self.campaign_key())))
        return dumps(config)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)
