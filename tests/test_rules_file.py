"""The incentive rules file: holidays from the national calendar, effective dates, the
programme, capped campaign grants, and refusals that name the field."""

from __future__ import annotations

import json
import random
from datetime import date, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.incentive_rules import (
    CALENDAR_YEARS,
    Campaign,
    Rules,
    check_sequence,
    default_rules_text,
    in_force,
    national_holidays,
    starts_in_past,
    verify_campaign_code,
)
from firmware_cfg.keys import public_hex
from localpay.errors import ConfigError
from terminal.incentives import TerminalRules
from terminal.qr import campaign

BASE = default_rules_text()

# Written from the official calendar (관공서의 공휴일에 관한 규정 and the announced lunar dates),
# not read back from the library: the library must agree with each of them.
OFFICIAL = {
    date(2024, 2, 12): "substitute for Seollal (2024-02-10 a Saturday, 02-11 a Sunday)",
    date(2024, 4, 10): "National Assembly election day",
    date(2024, 9, 17): "Chuseok",
    date(2024, 10, 1): "Armed Forces Day, a temporary holiday in 2024",
    date(2025, 1, 27): "temporary holiday before Seollal",
    date(2025, 3, 3): "substitute for Independence Movement Day",
    date(2025, 10, 8): "substitute for Chuseok (2025-10-05 a Sunday)",
    date(2027, 1, 1): "New Year's Day",
    date(2027, 2, 6): "the day before Seollal (a Saturday)",
    date(2027, 2, 7): "Seollal (a Sunday)",
    date(2027, 2, 8): "the day after Seollal",
    date(2027, 2, 9): "substitute for Seollal falling on a Sunday",
    date(2027, 3, 1): "Independence Movement Day",
    date(2027, 5, 5): "Children's Day",
    date(2027, 5, 13): "Buddha's Birthday",
    date(2027, 8, 16): "substitute for Liberation Day (a Sunday)",
    date(2027, 9, 14): "the day before Chuseok",
    date(2027, 9, 15): "Chuseok",
    date(2027, 9, 16): "the day after Chuseok",
    date(2027, 10, 4): "substitute for National Foundation Day (a Sunday)",
    date(2027, 10, 11): "substitute for Hangul Day (a Saturday)",
    date(2027, 12, 27): "substitute for Christmas (a Saturday)",
}
ORDINARY_2027 = [date(2027, 3, 3), date(2027, 9, 13), date(2027, 9, 17), date(2027, 10, 5)]


def rules_with(old: str, new: str, version: int = 2) -> Rules:
    assert old in BASE
    return Rules.from_toml(BASE.replace("version = 1", f"version = {version}")
                           .replace(old, new, 1))


def local_days(extra: str, removed: str) -> Rules:
    return Rules.from_toml(BASE.replace("extra_holidays = []", f"extra_holidays = {extra}")
                           .replace("not_holidays = []", f"not_holidays = {removed}"))


def version(number: int, effective: str) -> Rules:
    return rules_with("effective_from = 2025-01-01", f"effective_from = {effective}", number)


# -- holidays ---------------------------------------------------------------------------------


def test_the_library_agrees_with_the_official_calendar() -> None:
    for day, name in OFFICIAL.items():
        assert day in national_holidays(day.year), f"{day} ({name}) missing from the calendar"
    assert 2024 in CALENDAR_YEARS and 2090 in CALENDAR_YEARS
    # Chuseok 2027 runs Tuesday to Thursday: no substitute day of its own.
    assert date(2027, 9, 17) not in national_holidays(2027)


def test_holidays_earn_nothing_in_every_year_and_ordinary_weekdays_do() -> None:
    bus = Rules.default().bus
    for day in OFFICIAL:
        assert not bus.earns_on(day), day
    for day in ORDINARY_2027:
        assert day.weekday() < 5 and bus.earns_on(day), day
    assert not bus.earns_on(date(2027, 2, 13))          # a Saturday


def test_local_days_are_added_and_removed() -> None:
    local, given_back = date(2027, 5, 20), date(2027, 10, 4)
    assert Rules.default().bus.earns_on(local)
    rules = local_days("[2027-05-20]", "[2027-10-04]")
    assert not rules.bus.earns_on(local)
    assert rules.bus.earns_on(given_back)
    assert not rules.bus.earns_on(date(2027, 10, 11))   # the rest of the calendar stands
    holidays = rules.bus.holidays_in(2027)
    assert local in holidays and given_back not in holidays
    assert rules.summary(date(2027, 1, 1))["holidays"].count("2027-05-20") == 1


def test_earns_on_reads_the_calendar_once_per_year() -> None:
    bus = Rules.default().bus
    bus.earns_on(date(2031, 6, 2))
    before = national_holidays.cache_info().misses
    day = date(2031, 1, 1)
    while day.year == 2031:
        bus.earns_on(day)
        day += timedelta(days=1)
    assert national_holidays.cache_info().misses == before


def test_a_year_outside_the_calendar_is_refused_not_read_as_workdays() -> None:
    after = date(CALENDAR_YEARS.stop, 1, 1)
    while after.weekday() >= 5:
        after += timedelta(days=1)
    with pytest.raises(ConfigError, match="calendar covers"):
        Rules.default().bus.earns_on(after)


def test_the_old_hand_kept_list_is_refused_naming_its_replacement() -> None:
    text = BASE.replace("extra_holidays = []", "holidays = [2025-01-01, 2025-03-03]")
    with pytest.raises(ConfigError, match=r"\[bus\] holidays.*extra_holidays.*not_holidays"):
        Rules.from_toml(text)
    with pytest.raises(ConfigError, match=r"\[bus\] holidays"):
        Rules.from_toml(BASE.replace("extra_holidays = []", "holidays = []"))
    assert "holidays = [20" not in BASE                 # nothing kept by hand any more


@pytest.mark.parametrize("setting", [
    'extra_holidays = ["festival"]', "extra_holidays = [20270501]",
    'extra_holidays = "2027-05-01"', "extra_holidays = [2027-05-01T09:00:00]",
    "not_holidays = [1]", "not_holidays = [[2027-05-01]]",
])
def test_a_holiday_that_is_not_a_date_is_refused(setting: str) -> None:
    key = setting.split(" ")[0]
    old = "extra_holidays = []" if key == "extra_holidays" else "not_holidays = []"
    with pytest.raises(ConfigError, match=rf"\[bus\][ .]{key}"):
        rules_with(old, setting)


def test_a_day_both_added_and_removed_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"both list.*2027-05-20"):
        local_days("[2027-05-20]", "[2027-05-20]")


# -- the summary terminals read ---------------------------------------------------------------


def test_summary_keeps_its_shape_and_sends_this_year_and_the_next() -> None:
    rules = Rules.default()
    for today in (date(2026, 1, 1), date(2026, 11, 26), date(2027, 12, 31)):
        summary = rules.summary(today)
        assert set(summary) == {"version", "timezone", "bus", "bus_types", "weekly_cap",
                                "holidays", "local_food", "rate_bp", "merchant_categories",
                                "campaigns"}
        parsed = TerminalRules.parse(json.dumps(summary))
        assert parsed is not None and parsed.version == 1
        assert date(2027, 2, 8) in parsed.holidays and date(2027, 2, 9) in parsed.holidays
        years = {date.fromisoformat(d).year for d in summary["holidays"]}
        assert years == {today.year, today.year + 1}
    assert "2027-02-08" not in rules.summary(date(2028, 3, 1))["holidays"]
    this_year = rules.today().year          # the default: today in the rules' time zone
    assert {date.fromisoformat(d).year for d in rules.summary()["holidays"]} == {
        this_year, this_year + 1}


# -- effective dates --------------------------------------------------------------------------


def test_version_one_takes_effect_at_the_programme_start() -> None:
    rules = Rules.default()
    assert rules.effective_from == rules.programme.start == date(2025, 1, 1)
    unset = rules_with("effective_from = 2025-01-01\n", "")
    assert unset.effective_from == unset.programme.start


def test_in_force_on_before_and_after_each_boundary() -> None:
    v1, v2, v3 = Rules.default(), version(2, "2026-09-01"), version(3, "2027-01-01")
    held = [v3, v1, v2]
    random.Random(7).shuffle(held)
    expect = {
        date(2024, 6, 1): v1,         # before the first version: the first
        date(2025, 1, 1): v1,
        date(2026, 8, 31): v1,
        date(2026, 9, 1): v2,
        date(2026, 12, 31): v2,
        date(2027, 1, 1): v3,
        date(2031, 5, 5): v3,
    }
    for day, want in expect.items():
        assert in_force(held, day).version == want.version, day
    with pytest.raises(ConfigError):
        in_force([], date(2026, 1, 1))


def test_sequence_refuses_backward_and_overlapping_versions() -> None:
    held = [Rules.default(), version(2, "2026-09-01")]
    with pytest.raises(ConfigError, match="effective_from 2026-08-31 is before 2026-09-01"):
        check_sequence(held, version(3, "2026-08-31"))
    with pytest.raises(ConfigError, match="effective_from 2026-09-01 is the day version 2"):
        check_sequence(held, version(3, "2026-09-01"))
    check_sequence(held, version(3, "2026-09-02"))
    check_sequence(held, version(2, "2026-09-01"))      # the same version again: a reload
    check_sequence([], Rules.default())
    # A later version that forgot its date starts with the programme, so it overlaps version 1.
    with pytest.raises(ConfigError, match="effective_from"):
        check_sequence([Rules.default()], rules_with("effective_from = 2025-01-01\n", ""))


def test_starts_in_past() -> None:
    new = version(2, "2026-09-01")
    assert not starts_in_past(new, date(2026, 8, 31))
    assert starts_in_past(new, date(2026, 9, 1))        # today's rides may be credited already
    assert starts_in_past(new, date(2026, 12, 1))


@pytest.mark.parametrize("value", ['"soon"', "2026-09-01T00:00:00", "20260901", "2026-02-30"])
def test_an_effective_date_that_is_not_a_date_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"effective_from"):
        rules_with("effective_from = 2025-01-01", f"effective_from = {value}")


def test_an_effective_date_before_the_programme_is_refused() -> None:
    with pytest.raises(ConfigError, match="effective_from 2024-12-31 is before the programme"):
        version(2, "2024-12-31")


# -- the programme ----------------------------------------------------------------------------


def test_programme_start_and_yearly_budget() -> None:
    rules = Rules.default()
    assert (rules.programme.start, rules.programme.yearly_budget) == (date(2025, 1, 1),
                                                                     2_000_000_000)
    assert type(rules.programme.yearly_budget) is int
    other = rules_with("yearly_budget_points = 2_000_000_000", "yearly_budget_points = 5")
    assert other.programme.yearly_budget == 5


@pytest.mark.parametrize("value", ["2e9", "2000000000.0", '"2000000000"', "true", "0", "-1",
                                   "[1]"])
def test_a_budget_that_is_not_whole_points_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="yearly_budget_points"):
        rules_with("yearly_budget_points = 2_000_000_000", f"yearly_budget_points = {value}")


@pytest.mark.parametrize("value", ['"next spring"', "2025", "2025-01-01T00:00:00", "[2025-01-01]"])
def test_a_start_that_is_not_a_date_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"\[programme\][ .]start"):
        rules_with("start = 2025-01-01", f"start = {value}")


def test_the_programme_table_is_required_and_closed() -> None:
    start = BASE.index("[programme]")
    without = BASE[:start] + BASE[BASE.index("[bus]"):]
    with pytest.raises(ConfigError, match=r"\[programme\] is missing"):
        Rules.from_toml(without)
    with pytest.raises(ConfigError, match=r"\[programme\] has unknown settings \['budget'\]"):
        rules_with("yearly_budget_points = 2_000_000_000",
                   "yearly_budget_points = 1\nbudget = 1")
    with pytest.raises(ConfigError, match=r"yearly_budget_points must be whole points"):
        rules_with("yearly_budget_points = 2_000_000_000\n", "")


# -- campaigns --------------------------------------------------------------------------------


def test_campaign_grant_is_capped_by_the_rule() -> None:
    rule = Campaign("tree-day", 1000, date(2025, 4, 5), date(2025, 4, 6))
    assert [rule.grant(n) for n in (1, 999, 1000, 1001, 2**32 - 1, 0, -5)] == [
        1, 999, 1000, 1000, 1000, 0, 0]


def test_a_code_carries_its_signed_figure_and_the_rule_caps_it() -> None:
    key = Ed25519PrivateKey.generate()
    rules = rules_with("keys = []", f'keys = ["{public_hex(key)}"]\n\n'
                       "[campaigns.events.tree-day]\npoints = 1000\nstart = 2025-04-05\n"
                       "end = 2025-04-06")
    code = campaign.make(key, "tree-day", "w-1", 9999, valid_from=1_743_800_000)
    claim = verify_campaign_code(code, rules.campaign_keys)
    assert claim is not None and claim.points == 9999
    assert rules.campaigns["tree-day"].grant(claim.points) == 1000
    small = verify_campaign_code(campaign.make(key, "tree-day", "w-2", 250,
                                               valid_from=1_743_800_000), rules.campaign_keys)
    assert small is not None and rules.campaigns["tree-day"].grant(small.points) == 250
