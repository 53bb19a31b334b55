"""The incentive rules: a versioned TOML file that operators edit, validated here.

The defaults (``incentive_rules.toml`` beside this module) reproduce the Goyang programme:
a city or village bus ride earns its fare back for the first ride of each weekday (not on
weekends or South Korea's public holidays), at most 2,900 points a week for adults and 2,020
for youth, weeks Monday to Sunday in Asia/Seoul time; a local-food store payment earns 0.3 %
(``rate_bp = 30``) rounded down; a signed campaign QR code earns at most what its campaign
sets, once per card. Every setting is checked with a clear :class:`~localpay.errors.ConfigError`;
money and points are integers only.

Public holidays come from the ``holidays`` package's calendar of South Korea (lunar,
substitute, election and temporary holidays, every year it covers), not from a list kept by
hand, which silently stopped at its last year; the file only adds local days
(``[bus] extra_holidays``) or takes days off the calendar (``[bus] not_holidays``).

Each version has an effective date (``effective_from``, by default the programme start): the
versions held form a sequence (:func:`check_sequence`), one of which is in force on any day
(:func:`in_force`); a version taking effect today or earlier touches points already credited
(:func:`starts_in_past`). ``[programme]`` sets the start and the yearly budget in points.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
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


#: The years the national calendar knows; outside them it answers "no holidays" silently.
CALENDAR_YEARS = range(holidays.KR.start_year, holidays.KR.end_year + 1)


@cache
def national_holidays(year: int) -> frozenset[date]:
    """South Korea's public holidays of ``year`` (the ``holidays`` package's calendar)."""
    if year not in CALENDAR_YEARS:
        # Refused rather than answered empty: every day would earn as a weekday.
        raise ConfigError(f"the public holiday calendar covers {CALENDAR_YEARS.start}-"
                          f"{CALENDAR_YEARS.stop - 1}, not {year}")
    return frozenset(holidays.KR(years=year))


@dataclass(frozen=True)
class BusRule:
    enabled: bool = True
    bus_types: frozenset[str] = frozenset({"city", "village"})
    weekly_cap: dict[str, int] = field(default_factory=lambda: {"adult": 2900, "youth": 2020})
    #: Local days off added to the national calendar, and national holidays that still earn.
    extra_holidays: frozenset[date] = frozenset()
    not_holidays: frozenset[date] = frozenset()
    _years: dict[int, frozenset[date]] = field(default_factory=dict, init=False, repr=False,
                                               compare=False)

    def holidays_in(self, year: int) -> frozenset[date]:
        """The days of ``year`` without the first-weekday-ride credit, weekends aside."""
        found = self._years.get(year)
        if found is None:
            found = self._years[year] = (
                national_holidays(year) | {d for d in self.extra_holidays if d.year == year}
            ) - self.not_holidays
        return found

    def earns_on(self, day: date) -> bool:
        # Runs for every tap credited: one set look-up once the year is known.
        if day.weekday() >= 5:
            return False
        off = self._years.get(day.year)
        return day not in (self.holidays_in(day.year) if off is None else off)


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

    def grant(self, signed_points: int) -> int:
        """Points credited for a code signed for ``signed_points``: never more than the rule
        gives, so a key that signs a larger figure cannot raise the programme's cost."""
        return max(0, min(signed_points, self.points))


@dataclass(frozen=True)
class Programme:
    """The programme's start and what it may pay in points in one calendar year."""

    start: date
    yearly_budget: int


@dataclass(frozen=True)
class Rules:
    """One validated version of the rules."""

    version: int
    timezone: str
    bus: BusRule
    food: FoodRule
    campaign_keys: tuple[bytes, ...]
    campaigns: dict[str, Campaign]
    programme: Programme
    effective_from: date
    text: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def calendar(self) -> Calendar:
        return Calendar(self.timezone)

    def today(self) -> date:
        """Today in the rules' time zone, by this host's clock."""
        return datetime.now(ZoneInfo(self.timezone)).date()

    def summary(self, today: date | None = None) -> dict[str, Any]:
        """What a terminal needs to estimate points (sent with the points snapshot).

        ``holidays`` are those of ``today``'s year and the next (``today`` by default: today
        in the rules' time zone by this host's clock), so that a terminal left offline over
        New Year still knows January's holidays; it gets the following year at a later sync.

        ``campaigns``: those not over by ``today`` (running or to come), with the points a
        code earns at most and the days it runs, so that a terminal shows what is credited
        (``Campaign.grant``) rather than the figure signed into a code. Older terminals
        ignore the key; older summaries lack it.
        """
        day = self.today() if today is None else today
        year = day.year
        days = [d for y in (year, year + 1) if y in CALENDAR_YEARS
                for d in self.bus.holidays_in(y)]
        return {
            "version": self.version,
            "timezone": self.timezone,
            "bus": self.bus.enabled,
            "bus_types": sorted(self.bus.bus_types),
            "weekly_cap": dict(sorted(self.bus.weekly_cap.items())),
            "holidays": sorted(d.isoformat() for d in days),
            "local_food": self.food.enabled,
            "rate_bp": self.food.rate_bp,
            "merchant_categories": sorted(self.food.merchant_categories),
            "campaigns": {c.campaign_id: {"points": c.points, "start": c.start.isoformat(),
                                          "end": c.end.isoformat()}
                          for c in sorted(self.campaigns.values(), key=lambda c: c.campaign_id)
                          if c.end >= day},
        }

    @classmethod
    def default(cls) -> Rules:
        return cls.from_toml(default_rules_text())

    @classmethod
    def from_toml(cls, text: str, source: str = "incentive rules", *,
                  stored: bool = False) -> Rules:
        """Parse and validate a rules file; raises :class:`ConfigError` naming the setting.

        ``stored``: a version a store already holds, perhaps written before the programme
        section and the national calendar existed; it is read as it was meant then (its
        hand-kept holidays are local days off, its programme starts with the earliest time
        a service accepts, with no budget), while a file being loaded must be current."""
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            # tomllib names only a line and column: quote the line, so a bad date says
            # which setting it was given for.
            at = re.search(r"at line (\d+)", str(err))
            lines = text.splitlines()
            shown = (f": {lines[int(at[1]) - 1].strip()[:80]!r}"
                     if at and 0 < int(at[1]) <= len(lines) else "")
            raise ConfigError(f"{source}: not valid TOML: {err}{shown}") from err
        if stored:
            doc = _upgrade(doc)
        return _build(doc, text, source)


def _upgrade(doc: dict[str, Any]) -> dict[str, Any]:
    doc = dict(doc)
    doc.setdefault("programme", {"start": LEGACY_START, "yearly_budget_points": 2**62})
    bus = dict(doc.get("bus", {}))
    if "holidays" in bus:
        bus["extra_holidays"] = bus.pop("holidays")
        doc["bus"] = bus
    return doc


#: the programme start of a stored version older than the [programme] section
LEGACY_START = date(2020, 1, 1)


def _fail(source: str, where: str, what: str) -> ConfigError:
    return ConfigError(f"{source}: {where} {what}")


_DATE = (date, str)  # a TOML date, or the same as a string


def _take(table: dict[str, Any], known: dict[str, type | tuple[type, ...]], source: str,
          where: str) -> dict[str, Any]:
    extra = sorted(set(table) - set(known))
    if extra:
        raise _fail(source, where, f"has unknown settings {extra}")
    for key, want in known.items():
        if key in table and (not isinstance(table[key], want) or (
                want is int and isinstance(table[key], bool))):
            names = ("a date YYYY-MM-DD" if want == _DATE else want.__name__
                     if isinstance(want, type) else "/".join(w.__name__ for w in want))
            raise _fail(source, key if where == "the file" else f"{where}.{key}",
                        f"must be {names}")
    return table


def _str_list(value: Any, source: str, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(source, where, "must be a list of names")
    return frozenset(value)


def _dates(value: Any, source: str, where: str) -> frozenset[date]:
    if not isinstance(value, list):
        raise _fail(source, where, "must be a list of dates YYYY-MM-DD")
    return frozenset(_date(v, source, where) for v in value)


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
    _take(doc, {"version": int, "effective_from": _DATE, "timezone": str,
                "programme": dict, "bus": dict, "local_food": dict, "campaigns": dict},
          source, "the file")
    version = doc.get("version")
    if not isinstance(version, int) or version < 1:
        raise _fail(source, "version", "must be a whole number of 1 or more")
    tz = doc.get("timezone", "Asia/Seoul")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise _fail(source, "timezone", f"{tz!r} is not a known time zone") from err

    if "programme" not in doc:
        raise _fail(source, "[programme]", "is missing: give its start and "
                    "yearly_budget_points")
    p = _take(dict(doc["programme"]), {"start": _DATE, "yearly_budget_points": int},
              source, "[programme]")
    start = _date(p.get("start"), source, "[programme] start")
    budget = p.get("yearly_budget_points")
    if budget is None or not 0 < budget < 2**63:
        raise _fail(source, "[programme] yearly_budget_points", "must be whole points above 0")
    programme = Programme(start, budget)
    effective = _date(doc.get("effective_from", start), source, "effective_from")
    if effective < start:
        raise _fail(source, "effective_from", f"{effective} is before the programme start "
                    f"{start}")

    b = dict(doc.get("bus", {}))
    if "holidays" in b:
        raise _fail(source, "[bus] holidays", "is no longer read: public holidays come from the "
                    "national calendar; list local days off in [bus] extra_holidays and "
                    "calendar days that still earn in [bus] not_holidays")
    _take(b, {"enabled": bool, "bus_types": list, "extra_holidays": list,
              "not_holidays": list, "weekly_cap": dict}, source, "[bus]")
    caps_in = b.get("weekly_cap", {"adult": 2900, "youth": 2020})
    caps: dict[str, int] = {}
    for rider, cap in caps_in.items():
        if rider not in RIDERS:
            raise _fail(source, f"[bus.weekly_cap] {rider!r}", f"is not one of {RIDERS}")
        if type(cap) is not int or cap < 0:
            raise _fail(source, f"[bus.weekly_cap] {rider}", "must be whole points, 0 or more")
        caps[rider] = cap
    extra = _dates(b.get("extra_holidays", []), source, "[bus] extra_holidays")
    not_off = _dates(b.get("not_holidays", []), source, "[bus] not_holidays")
    if extra & not_off:
        raise _fail(source, "[bus] extra_holidays", f"and not_holidays both list "
                    f"{sorted(d.isoformat() for d in extra & not_off)}")
    bus = BusRule(bool(b.get("enabled", True)),
                  _str_list(b.get("bus_types", ["city", "village"]), source, "[bus] bus_types"),
                  caps, extra, not_off)

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
        _take(spec, {"points": int, "start": _DATE, "end": _DATE}, source, where)
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
    return Rules(version, tz, bus, food, tuple(keys), campaigns, programme, effective, text)


# -- versions in time ---------------------------------------------------------------------------


def check_sequence(held: Sequence[Rules], new: Rules) -> None:
    """Refuse ``new`` unless it takes effect after the newest version held (by number).

    Two versions in force from the same day would leave that day's credits ambiguous, and one
    taking effect before its predecessor would hide part of it. The same version with the same
    text again (a reload) passes: it adds nothing.
    """
    if not held or any(h.version == new.version and h.sha256 == new.sha256 for h in held):
        return
    newest = max(held, key=lambda r: r.version)
    where = f"incentive rules version {new.version}: effective_from"
    if new.effective_from < newest.effective_from:
        raise ConfigError(f"{where} {new.effective_from} is before {newest.effective_from}, "
                          f"when version {newest.version} takes effect: a new version cannot "
                          "start before the one it follows")
    if new.effective_from == newest.effective_from:
        raise ConfigError(f"{where} {new.effective_from} is the day version {newest.version} "
                          "takes effect too: give the day this version starts")


def in_force(versions: Sequence[Rules], day: date) -> Rules:
    """The version in force on ``day``: the latest effective on or before it; before the first
    version's date, the first (the programme's days before its first rules follow them)."""
    if not versions:
        raise ConfigError("no incentive rules version is held")
    ordered = sorted(versions, key=lambda r: (r.effective_from, r.version))
    found = ordered[0]
    for rules in ordered[1:]:
        if rules.effective_from > day:
            break
        found = rules
    return found


def starts_in_past(new: Rules, today: date) -> bool:
    """Whether ``new`` would change points already credited: it takes effect ``today`` or
    earlier (today counts, its rides may be credited already), so loading it needs the
    operator's explicit ``--recredit``."""
    return new.effective_from <= today


# -- campaign codes (second reading of terminal.qr.campaign's format) ------------------------


@dataclass(frozen=True, slots=True)
class CampaignClaim:
    campaign_id: str
    wallet_id: str
    #: The figure signed into the code; credit ``Campaign.grant(points)``, never this.
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
