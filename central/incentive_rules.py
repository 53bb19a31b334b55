"""The incentive rules: a versioned TOML file that operators edit, validated here.

The defaults (``incentive_rules.toml`` beside this module) reproduce the Goyang programme:
a city or village bus ride earns its fare back for the first ride of each weekday (not on
weekends or the public holidays listed), at most 2,900 points a week for adults and 2,020
for youth, weeks Monday to Sunday in Asia/Seoul time; a local-food store payment earns 0.3 %
(``rate_bp = 30``) rounded down; a signed campaign QR code earns what its campaign sets,
once per card. Every setting is checked with a clear :class:`~localpay.errors.ConfigError`;
money and points are integers only.

Campaign codes (``LPC1:``) are made and read on the terminal by ``terminal.qr.campaign``;
the service must not import the terminal, so :func:`verify_campaign_code` is a second reading
of the same format, kept in step by the tests (the same way ``sync.protocol`` reads the
ledger's entry encoding).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from localpay.errors import ConfigError

RIDERS = ("adult", "youth", "child")
_ID = re.compile(r"[A-Za-z0-9._-]{1,32}")
_SLOT_MS = 900_000  # every UTC offset in use is a multiple of 15 minutes

CAMPAIGN_PREFIX = "LPC1:"
CAMPAIGN_DOMAIN = b"localpay campaign qr v1\x00"


def default_rules_text() -> str:
    """The shipped defaults (``central/incentive_rules.toml``)."""
    return resources.files("central").joinpath("incentive_rules.toml").read_text("utf-8")


class Calendar:
    """Days, weeks and months of wall-clock milliseconds in the rules' time zone."""

    def __init__(self, tz: str) -> None:
        self.tz = ZoneInfo(tz)
        self._slots: dict[int, date] = {}

    def day(self, wall_ms: int) -> date:
        # Entries of a batch share a few quarter hours: convert each one once.
        slot = wall_ms // _SLOT_MS
        found = self._slots.get(slot)
        if found is None:
            if len(self._slots) > 100_000:
                self._slots.clear()
            found = self._slots[slot] = datetime.fromtimestamp(
                slot * _SLOT_MS / 1000, self.tz).date()
        return found

    def today(self, now_ms: int) -> date:
        return datetime.fromtimestamp(now_ms / 1000, self.tz).date()


def week_start(day: date) -> date:
    """The Monday of ``day``'s week (ISO 8601 weeks run Monday to Sunday)."""
    return day - timedelta(days=day.weekday())


def month_of(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def next_month(month: str) -> str:
    year, mon = int(month[:4]), int(month[5:7])
    return f"{year + mon // 12:04d}-{mon % 12 + 1:02d}"


def parse_month(text: str) -> str:
    """``YYYY-MM`` checked; raises :class:`ConfigError`."""
    if not re.fullmatch(r"\d{4}-\d{2}", text or "") or not 1 <= int(text[5:7]) <= 12:
        raise ConfigError(f"month {text!r} must be YYYY-MM")
    return text


@dataclass(frozen=True)
class BusRule:
    enabled: bool = True
    bus_types: frozenset[str] = frozenset({"city", "village"})
    weekly_cap: dict[str, int] = field(default_factory=lambda: {"adult": 2900, "youth": 2020})
    holidays: frozenset[date] = frozenset()

    def earns_on(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self.holidays


@dataclass(frozen=True)
class FoodRule:
    enabled: bool = True
    rate_bp: int = 30
    merchant_categories: frozenset[str] = frozenset({"local_food"})

    def points(self, amount: int) -> int:
        return amount * self.rate_bp // 10_000 if amount > 0 else 0


@dataclass(frozen=True)
class Campaign:
    campaign_id: str
    points: int
    start: date
    end: date


@dataclass(frozen=True)
class Rules:
    """One validated version of the rules."""

    version: int
    timezone: str
    bus: BusRule
    food: FoodRule
    campaign_keys: tuple[bytes, ...]
    campaigns: dict[str, Campaign]
    text: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def calendar(self) -> Calendar:
        return Calendar(self.timezone)

    def summary(self) -> dict[str, Any]:
        """What a terminal needs to estimate points (sent with the points snapshot)."""
        return {
            "version": self.version,
            "timezone": self.timezone,
            "bus": self.bus.enabled,
            "bus_types": sorted(self.bus.bus_types),
            "weekly_cap": dict(sorted(self.bus.weekly_cap.items())),
            "holidays": sorted(d.isoformat() for d in self.bus.holidays),
            "local_food": self.food.enabled,
            "rate_bp": self.food.rate_bp,
            "merchant_categories": sorted(self.food.merchant_categories),
        }

    @classmethod
    def default(cls) -> Rules:
        return cls.from_toml(default_rules_text())

    @classmethod
    def from_toml(cls, text: str, source: str = "incentive rules") -> Rules:
        """Parse and validate a rules file; raises :class:`ConfigError` naming the setting."""
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{source}: not valid TOML: {err}") from err
        return _build(doc, text, source)


def _fail(source: str, where: str, what: str) -> ConfigError:
    return ConfigError(f"{source}: {where} {what}")


def _take(table: dict[str, Any], known: dict[str, type | tuple[type, ...]], source: str,
          where: str) -> dict[str, Any]:
    extra = sorted(set(table) - set(known))
    if extra:
        raise _fail(source, where, f"has unknown settings {extra}")
    for key, want in known.items():
        if key in table and (not isinstance(table[key], want) or (
                want is int and isinstance(table[key], bool))):
            names = want.__name__ if isinstance(want, type) else "/".join(w.__name__ for w in want)
            raise _fail(source, f"{where}.{key}", f"must be {names}")
    return table


def _str_list(value: Any, source: str, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(source, where, "must be a list of names")
    return frozenset(value)


def _date(value: Any, source: str, where: str) -> date:
    if isinstance(value, datetime):
        raise _fail(source, where, "must be a date (YYYY-MM-DD), not a date-time")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise _fail(source, where, f"must be a date YYYY-MM-DD, not {value!r}")


def _build(doc: dict[str, Any], text: str, source: str) -> Rules:
    _take(doc, {"version": int, "timezone": str, "bus": dict, "local_food": dict,
                "campaigns": dict}, source, "the file")
    version = doc.get("version")
    if not isinstance(version, int) or version < 1:
        raise _fail(source, "version", "must be a whole number of 1 or more")
    tz = doc.get("timezone", "Asia/Seoul")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise _fail(source, "timezone", f"{tz!r} is not a known time zone") from err

    b = _take(dict(doc.get("bus", {})), {"enabled": bool, "bus_types": list, "holidays": list,
                                         "weekly_cap": dict}, source, "[bus]")
    caps_in = b.get("weekly_cap", {"adult": 2900, "youth": 2020})
    caps: dict[str, int] = {}
    for rider, cap in caps_in.items():
        if rider not in RIDERS:
            raise _fail(source, f"[bus.weekly_cap] {rider!r}", f"is not one of {RIDERS}")
        if type(cap) is not int or cap < 0:
            raise _fail(source, f"[bus.weekly_cap] {rider}", "must be whole points, 0 or more")
        caps[rider] = cap
    holidays = frozenset(_date(v, source, "[bus] holidays") for v in b.get("holidays", []))
    bus = BusRule(bool(b.get("enabled", True)),
                  _str_list(b.get("bus_types", ["city", "village"]), source, "[bus] bus_types"),
                  caps, holidays)

    f = _take(dict(doc.get("local_food", {})), {"enabled": bool, "rate_bp": int,
                                                "merchant_categories": list},
              source, "[local_food]")
    rate = f.get("rate_bp", 30)
    if not 0 <= rate <= 10_000:
        raise _fail(source, "[local_food] rate_bp", "must be 0-10000 (points per 10,000 won)")
    food = FoodRule(bool(f.get("enabled", True)), rate,
                    _str_list(f.get("merchant_categories", ["local_food"]), source,
                              "[local_food] merchant_categories"))

    c = _take(dict(doc.get("campaigns", {})), {"keys": list, "events": dict}, source,
              "[campaigns]")
    keys: list[bytes] = []
    for key in c.get("keys", []):
        try:
            raw = bytes.fromhex(key) if isinstance(key, str) else b""
            Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise _fail(source, "[campaigns] keys", f"{key!r} is not 64 hex digits") from None
        keys.append(raw)
    campaigns: dict[str, Campaign] = {}
    for cid, spec in c.get("events", {}).items():
        where = f"[campaigns.events.{cid}]"
        if not _ID.fullmatch(cid):
            raise _fail(source, where, "id must be 1-32 of A-Z a-z 0-9 . _ -")
        if not isinstance(spec, dict):
            raise _fail(source, where, "must be a table")
        _take(spec, {"points": int, "start": (date, str), "end": (date, str)}, source, where)
        points = spec.get("points")
        if type(points) is not int or not 0 < points < 2**31:
            raise _fail(source, f"{where} points", "must be whole points above 0")
        start = _date(spec.get("start"), source, f"{where} start")
        end = _date(spec.get("end"), source, f"{where} end")
        if end < start:
            raise _fail(source, where, "ends before it starts")
        campaigns[cid] = Campaign(cid, points, start, end)
    if campaigns and not keys:
        raise _fail(source, "[campaigns] keys", "must list the key that signs campaign codes")
    return Rules(version, tz, bus, food, tuple(keys), campaigns, text)


# -- campaign codes (second reading of terminal.qr.campaign's format) ------------------------


@dataclass(frozen=True, slots=True)
class CampaignClaim:
    campaign_id: str
    wallet_id: str
    points: int
    valid_from: int
    valid_until: int


def verify_campaign_code(text: str, keys: tuple[bytes, ...]) -> CampaignClaim | None:
    """The claim of a well-formed ``LPC1`` code signed by one of ``keys``, else ``None``."""
    if not isinstance(text, str) or not text.startswith(CAMPAIGN_PREFIX) or len(text) > 300:
        return None
    b32 = text[len(CAMPAIGN_PREFIX):]
    try:
        raw = base64.b32decode(b32 + "=" * (-len(b32) % 8))
    except (binascii.Error, ValueError):
        return None
    if base64.b32encode(raw).decode("ascii").rstrip("=") != b32:
        return None
    body, sig = raw[:-64], raw[-64:]
    try:
        if len(body) < 4 or body[0] != 1 or body[1] != 0:
            return None
        n = body[2]
        cid = body[3 : 3 + n].decode("ascii")
        m = body[3 + n]
        wid = body[4 + n : 4 + n + m].decode("ascii")
        points, start, until = struct.unpack(">III", body[4 + n + m :])
    except (IndexError, UnicodeDecodeError, struct.error):
        return None
    if not (_ID.fullmatch(cid) and _ID.fullmatch(wid)):
        return None
    for key in keys:
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(sig, CAMPAIGN_DOMAIN + body)
        except InvalidSignature:
            continue
        return CampaignClaim(cid, wid, points, start, until)
    return None
