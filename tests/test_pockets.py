"""Pockets (``localpay.pockets``): every eligibility rule, the limits, the drawing order, the
Goyang example, every refusal of the rules file, and properties of the split checked against
a second computation written here from the module's contract, not with its functions."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localpay.errors import ConfigError
from localpay.pockets import (
    DEFAULT_POCKET_RULES,
    DEFAULT_RULES,
    DeclineReason,
    MerchantFacts,
    PocketBalance,
    PocketRule,
    PocketRules,
    Split,
    load_rules,
    parse_rules,
    split,
)

DAY = date(2026, 5, 20)
LOCAL = MerchantFacts("m-bakery", "ksic:47121", "goyang")
MART = MerchantFacts("m-mart", "ksic:47111", "goyang", frozenset({"large-mart"}))
CASH = '[[pocket]]\nid = "cash"\nkind = "cash"\n'


def rules(*pockets: str) -> PocketRules:
    """A rules file of the cash pocket and the given ``[[pocket]]`` bodies."""
    return parse_rules(CASH + "".join(f"\n[[pocket]]\n{p}\n" for p in pockets), "test.toml")


def points(extra: str = "") -> PocketRules:
    return rules(f'id = "points"\nkind = "points"\n{extra}')


def pays(rule_set: PocketRules, merchant: MerchantFacts = LOCAL, day: date = DAY,
         **balances: int) -> Split:
    return split(1000, [PocketBalance(p, b) for p, b in balances.items()], rule_set,
                 merchant, day)


def only_points_at(rule_set: PocketRules, merchant: MerchantFacts, day: date = DAY) -> bool:
    """Whether a 1,000-won payment from 5,000 points alone is approved."""
    return pays(rule_set, merchant, day, points=5000).approved


# -- which pockets may pay --------------------------------------------------------------------


def test_excluded_merchant_id() -> None:
    r = points('exclude_merchants = ["m-bakery"]')
    assert not only_points_at(r, LOCAL)
    assert only_points_at(r, MART)


def test_excluded_ksic_category_matches_by_prefix() -> None:
    r = points('exclude_categories = ["ksic:4711"]')
    assert not only_points_at(r, MART)                      # ksic:47111 starts with 4711
    assert only_points_at(r, LOCAL)                         # ksic:47121 does not
    assert not only_points_at(points('exclude_categories = ["ksic:47"]'), LOCAL)


def test_excluded_mcc_category_matches_exactly_and_never_across_schemes() -> None:
    grocer = MerchantFacts("m-grocer", "mcc:5411", "goyang")
    diner = MerchantFacts("m-diner", "mcc:5812", "goyang")
    r = points('exclude_categories = ["mcc:5411"]')
    assert not only_points_at(r, grocer)
    assert only_points_at(r, diner)
    # a KSIC exclusion says nothing about a merchant known by its MCC, nor the reverse
    assert only_points_at(points('exclude_categories = ["ksic:47"]'), grocer)
    assert only_points_at(r, LOCAL)


def test_excluded_membership() -> None:
    r = points('exclude_memberships = ["large-mart", "franchise"]')
    assert not only_points_at(r, MART)
    assert only_points_at(r, LOCAL)


def test_allow_lists_restrict_to_named_merchants_or_categories() -> None:
    by_id = points('allow_merchants = ["m-bakery"]')
    assert only_points_at(by_id, LOCAL) and not only_points_at(by_id, MART)
    by_cat = points('allow_categories = ["ksic:4712"]')
    assert only_points_at(by_cat, LOCAL) and not only_points_at(by_cat, MART)
    # either list admits a merchant
    both = points('allow_merchants = ["m-mart"]\nallow_categories = ["ksic:4712"]')
    assert only_points_at(both, LOCAL) and only_points_at(both, MART)
    assert not only_points_at(both, MerchantFacts("m-x", "ksic:56111", "goyang"))


def test_exclusion_wins_over_allow() -> None:
    r = points('allow_categories = ["ksic:47"]\nexclude_memberships = ["large-mart"]')
    assert only_points_at(r, LOCAL)
    assert not only_points_at(r, MART)
    carve_out = points('allow_categories = ["ksic:47"]\nexclude_categories = ["ksic:4711"]')
    assert only_points_at(carve_out, LOCAL) and not only_points_at(carve_out, MART)


def test_regions() -> None:
    r = points('regions = ["goyang", "paju"]')
    assert only_points_at(r, LOCAL)
    assert not only_points_at(r, MerchantFacts("m-gimpo", "ksic:47121", "gimpo"))
    assert not only_points_at(r, MerchantFacts("m-blank", "ksic:47121", ""))


def test_rule_expiry_day_itself_pays_and_the_next_day_does_not() -> None:
    r = points("expires = 2026-05-20")
    assert only_points_at(r, LOCAL, DAY - timedelta(days=1))
    assert only_points_at(r, LOCAL, DAY)
    assert not only_points_at(r, LOCAL, DAY + timedelta(days=1))
    assert pays(r, LOCAL, DAY + timedelta(days=1), points=5000).reason \
        is DeclineReason.NO_ELIGIBLE_POCKET


def test_balance_expiry_and_the_sooner_of_both() -> None:
    r = points("expires = 2026-05-25")
    later, rule_end = date(2026, 6, 1), date(2026, 5, 25)
    for own, last in ((DAY, DAY), (later, rule_end), (None, rule_end)):
        bal = [PocketBalance("points", 5000, own)]
        assert split(1000, bal, r, LOCAL, last).approved, (own, last)
        assert not split(1000, bal, r, LOCAL, last + timedelta(days=1)).approved, (own, last)


def test_empty_or_negative_balance_pays_nothing() -> None:
    r = points()
    assert pays(r, points=0, cash=1000).parts == (("cash", 1000),)
    assert pays(r, points=-500, cash=1000).parts == (("cash", 1000),)
    assert pays(r, points=0, cash=0).reason is DeclineReason.NO_ELIGIBLE_POCKET


def test_a_pocket_the_rules_do_not_define_pays_nothing() -> None:
    ghost = PocketBalance("allowance:unknown", 5000)
    assert split(1000, [ghost], DEFAULT_POCKET_RULES, LOCAL, DAY).reason \
        is DeclineReason.NO_ELIGIBLE_POCKET
    assert split(1000, [ghost, PocketBalance("cash", 1000)], DEFAULT_POCKET_RULES, LOCAL,
                 DAY).parts == (("cash", 1000),)


# -- how much ---------------------------------------------------------------------------------


def test_per_payment_caps_the_contribution() -> None:
    r = points("per_payment = 300")
    assert pays(r, points=5000, cash=5000).parts == (("points", 300), ("cash", 700))
    assert pays(r, points=5000).reason is DeclineReason.INSUFFICIENT_BALANCE
    assert pays(r, points=5000).available == 300


def test_per_day_less_what_was_spent_today() -> None:
    r = points("per_day = 2000")
    bal = [PocketBalance("points", 5000), PocketBalance("cash", 5000)]
    assert split(1000, bal, r, LOCAL, DAY).parts == (("points", 1000),)
    assert split(1000, bal, r, LOCAL, DAY, {"points": 1600}).parts \
        == (("points", 400), ("cash", 600))
    assert split(1000, bal, r, LOCAL, DAY, {"points": 2000}).parts == (("cash", 1000),)
    # spent beyond the limit (limits changed since) leaves nothing, never a negative part
    assert split(1000, bal, r, LOCAL, DAY, {"points": 9000}).parts == (("cash", 1000),)
    # what another pocket spent does not count
    assert split(1000, bal, r, LOCAL, DAY, {"cash": 9000}).parts == (("points", 1000),)
    # and a pocket without a daily limit pays whatever it has spent today
    assert split(6000, bal, r, LOCAL, DAY, {"cash": 9000}).parts \
        == (("points", 2000), ("cash", 4000))


def test_all_caps_together_the_least_wins() -> None:
    r = points("per_payment = 700\nper_day = 900")
    assert pays(r, points=5000, cash=5000).parts == (("points", 700), ("cash", 300))
    assert split(1000, [PocketBalance("points", 5000), PocketBalance("cash", 5000)], r,
                 LOCAL, DAY, {"points": 500}).parts == (("points", 400), ("cash", 600))
    assert pays(r, points=100, cash=5000).parts == (("points", 100), ("cash", 900))


def test_a_daily_limit_used_up_is_no_eligible_pocket() -> None:
    r = points("per_day = 2000")
    got = split(1000, [PocketBalance("points", 5000)], r, LOCAL, DAY, {"points": 2000})
    assert got.reason is DeclineReason.NO_ELIGIBLE_POCKET and got.available == 0


# -- in which order ---------------------------------------------------------------------------


def test_allowances_then_points_then_cash() -> None:
    r = rules('id = "points"\nkind = "points"',
              'id = "allowance:youth-dividend"\nkind = "allowance"')
    got = split(2500, [PocketBalance("cash", 5000), PocketBalance("points", 1000),
                       PocketBalance("allowance:youth-dividend", 1000)], r, LOCAL, DAY)
    assert got.parts == (("allowance:youth-dividend", 1000), ("points", 1000), ("cash", 500))
    assert got.approved and got.reason is None and got.available == 7000


def test_soonest_expiry_first_and_no_expiry_last_within_a_kind() -> None:
    r = rules('id = "allowance:a"\nkind = "allowance"',
              'id = "allowance:b"\nkind = "allowance"\nexpires = 2026-06-30',
              'id = "allowance:c"\nkind = "allowance"\nexpires = 2026-05-31')
    bal = [PocketBalance("allowance:a", 100), PocketBalance("allowance:b", 100),
           PocketBalance("allowance:c", 100), PocketBalance("cash", 1000)]
    assert [p for p, _ in split(400, bal, r, LOCAL, DAY).parts] \
        == ["allowance:c", "allowance:b", "allowance:a", "cash"]
    # the balance's own expiry counts too: a's balance now lapses first
    bal[0] = PocketBalance("allowance:a", 100, date(2026, 5, 21))
    assert [p for p, _ in split(400, bal, r, LOCAL, DAY).parts] \
        == ["allowance:a", "allowance:c", "allowance:b", "cash"]


def test_ties_by_pocket_id() -> None:
    r = rules('id = "points:z"\nkind = "points"\nexpires = 2026-06-01',
              'id = "points:a"\nkind = "points"\nexpires = 2026-06-01',
              'id = "points:m"\nkind = "points"')
    bal = [PocketBalance("points:z", 100), PocketBalance("points:m", 100),
           PocketBalance("points:a", 100)]
    assert split(250, bal, r, LOCAL, DAY).parts \
        == (("points:a", 100), ("points:z", 100), ("points:m", 50))


def test_the_order_does_not_depend_on_the_order_given() -> None:
    r = rules('id = "points"\nkind = "points"', 'id = "allowance:x"\nkind = "allowance"')
    bal = [PocketBalance("cash", 900), PocketBalance("points", 900),
           PocketBalance("allowance:x", 900)]
    assert split(2000, bal, r, LOCAL, DAY) == split(2000, bal[::-1], r, LOCAL, DAY)


# -- Goyang -----------------------------------------------------------------------------------


def test_goyang_points_pay_at_a_local_merchant_never_at_a_large_mart() -> None:
    r = DEFAULT_POCKET_RULES
    bal = [PocketBalance("cash", 20_000), PocketBalance("points", 2_900)]
    at_bakery = split(5_000, bal, r, LOCAL, DAY)
    assert at_bakery.parts == (("points", 2_900), ("cash", 2_100))
    at_mart = split(5_000, bal, r, MART, DAY)
    assert at_mart.parts == (("cash", 5_000),)
    # cash pays at both; points alone cannot pay at the mart at all
    assert split(5_000, [PocketBalance("cash", 5_000)], r, MART, DAY).approved
    assert split(5_000, [PocketBalance("cash", 5_000)], r, LOCAL, DAY).approved
    assert split(1_000, [PocketBalance("points", 2_900)], r, MART, DAY).reason \
        is DeclineReason.NO_ELIGIBLE_POCKET
    assert split(25_000, bal, r, MART, DAY).reason is DeclineReason.INSUFFICIENT_BALANCE


def test_default_rules_text_and_parsed_default_agree() -> None:
    assert parse_rules(DEFAULT_RULES) == DEFAULT_POCKET_RULES
    assert [p.pocket for p in DEFAULT_POCKET_RULES] == ["cash", "points"]
    assert DEFAULT_POCKET_RULES.cash == PocketRule("cash", "cash")
    assert DEFAULT_POCKET_RULES["points"] == PocketRule(
        "points", "points", exclude_memberships=frozenset({"large-mart"}))
    assert "points" in DEFAULT_POCKET_RULES and DEFAULT_POCKET_RULES.get("nope") is None
    assert len(DEFAULT_POCKET_RULES) == 2


def test_decline_codes_are_stable() -> None:
    assert DeclineReason.NO_ELIGIBLE_POCKET == "no_eligible_pocket"
    assert DeclineReason.INSUFFICIENT_BALANCE == "insufficient_balance"


# -- arguments of the wrong shape -------------------------------------------------------------


@pytest.mark.parametrize("amount", [0, -1, True, 1.0, "100", None])
def test_amount_must_be_a_positive_int(amount: object) -> None:
    with pytest.raises(ValueError, match="amount must be a positive int"):
        split(amount, [PocketBalance("cash", 10)], DEFAULT_POCKET_RULES, LOCAL,  # type: ignore[arg-type]
              DAY)


def test_other_wrong_arguments_are_value_errors() -> None:
    cash = PocketBalance("cash", 10)
    with pytest.raises(ValueError, match="twice"):
        split(1, [cash, cash], DEFAULT_POCKET_RULES, LOCAL, DAY)
    with pytest.raises(ValueError, match="day must be a date"):
        split(1, [cash], DEFAULT_POCKET_RULES, LOCAL, datetime(2026, 5, 20))
    with pytest.raises(ValueError, match="spent_today"):
        split(1, [cash], DEFAULT_POCKET_RULES, LOCAL, DAY, {"cash": -1})
    with pytest.raises(ValueError, match="balance must be an int"):
        PocketBalance("cash", 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="merchant category"):
        MerchantFacts("m", "ksic:471", "goyang")      # a group, not a merchant's full code
    with pytest.raises(ValueError, match="merchant category"):
        MerchantFacts("m", "5411", "goyang")
    with pytest.raises(ValueError, match="memberships"):
        MerchantFacts("m", "mcc:5411", "goyang", ["large-mart"])  # type: ignore[arg-type]


def test_rules_built_in_code_are_checked_like_a_file() -> None:
    with pytest.raises(ConfigError, match=r"<rules>: pocket #2 'points': per_payment 5 is more"):
        PocketRules((PocketRule("cash", "cash"),
                     PocketRule("points", "points", per_payment=5, per_day=4)))
    with pytest.raises(ConfigError, match="no cash pocket"):
        PocketRules((PocketRule("points", "points"),))
    with pytest.raises(ConfigError, match="allow_merchants has '': a merchant id"):
        PocketRules((PocketRule("cash", "cash", allow_merchants=frozenset({""})),))
    with pytest.raises(ConfigError, match="regions must be a list of strings"):
        PocketRules((PocketRule("cash", "cash", regions=["goyang"]),))  # type: ignore[arg-type]


# -- the rules file: every refusal names the source, the pocket and the fault ------------------


def refused(text: str, *expected: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_rules(text, "pockets.toml")
    message = str(info.value)
    assert message.startswith("pockets.toml: "), message
    for part in expected:
        assert part in message, message
    return message


def second(body: str) -> str:
    return CASH + f'\n[[pocket]]\nid = "points"\nkind = "points"\n{body}\n'


def test_refuses_bad_toml_quoting_the_line() -> None:
    refused(CASH + 'per_day = 10 000\n', "not valid TOML", "line 4", "'per_day = 10 000'")


def test_refuses_unknown_top_level_key() -> None:
    refused('version = 1\n' + CASH, "unknown top-level setting 'version'")


def test_refuses_pocket_that_is_not_tables() -> None:
    refused('pocket = ["cash"]\n', "'pocket' must be [[pocket]] tables")


def test_refuses_unknown_key_suggesting_the_right_one() -> None:
    refused(second('exclude_membership = ["large-mart"]'), "pocket #2 'points'",
            "unknown setting 'exclude_membership'", "did you mean 'exclude_memberships'")


def test_refuses_missing_id() -> None:
    refused(CASH + '[[pocket]]\nkind = "points"\n', "pocket #2", "has no id")


@pytest.mark.parametrize("bad", ['"my points"', '""', "7", '"-points"', '"' + "p" * 65 + '"'])
def test_refuses_bad_id(bad: str) -> None:
    refused(CASH + f'[[pocket]]\nid = {bad}\nkind = "points"\n', "pocket #2", "is not valid")


def test_refuses_duplicate_ids_naming_both() -> None:
    refused(second("") + '[[pocket]]\nid = "points"\nkind = "allowance"\n',
            "pocket #3 'points'", "duplicate id", "pocket #2 has it")


def test_refuses_unknown_kind() -> None:
    refused(CASH + '[[pocket]]\nid = "voucher"\nkind = "voucher"\n', "pocket #2 'voucher'",
            "kind 'voucher' is unknown", "cash, points, allowance")


def test_refuses_missing_kind() -> None:
    refused(CASH + '[[pocket]]\nid = "points"\n', "pocket #2 'points'", "has no kind")


@pytest.mark.parametrize("key", ["allow_merchants", "allow_categories", "exclude_merchants",
                                 "exclude_categories", "exclude_memberships", "regions"])
@pytest.mark.parametrize("value", ['"goyang"', "[1]", '[["a"]]', '["a", true]', "{a = 1}"])
def test_refuses_lists_that_are_not_lists_of_strings(key: str, value: str) -> None:
    refused(second(f"{key} = {value}"), "pocket #2 'points'", f"{key} must be a list of strings")


@pytest.mark.parametrize(("key", "entry", "says"), [
    ("allow_merchants", "m 1", "a merchant id is 1-40"),
    ("exclude_merchants", "m_1", "a merchant id is 1-40"),
    ("exclude_merchants", "", "a merchant id is 1-40"),
    ("allow_merchants", "m" * 41, "a merchant id is 1-40"),
    ("exclude_memberships", "Large-Mart", "a membership is 1-32 of a-z 0-9 -"),
    ("exclude_memberships", "-mart", "a membership is 1-32 of a-z 0-9 -"),
    ("exclude_memberships", "large mart", "a membership is 1-32 of a-z 0-9 -"),
    ("regions", "", "a region is 1-64 characters"),
    ("regions", " goyang", "a region is 1-64 characters"),
    ("regions", "go\tyang", "a region is 1-64 characters"),
    ("regions", "r" * 65, "a region is 1-64 characters"),
])
def test_refuses_list_entries_the_registry_could_never_hold(key: str, entry: str,
                                                           says: str) -> None:
    refused(second(f'{key} = ["{entry}"]'), "pocket #2 'points'", f"{key} has ", says)


SAMPLES = ["m1", "m-bakery", "M-1", "m 1", "m_1", "", "-", "m" * 40, "m" * 41, "large-mart",
           "Large-Mart", "-mart", "nh", "a" * 32, "a" * 33, "ksic:47121", "KSIC:47121",
           "ksic:4712", "mcc:5411", "mcc:541", " mcc:5411", "가게"]


def rule_accepts(key: str, value: str) -> bool:
    try:
        parse_rules(CASH + f'[[pocket]]\nid = "p"\nkind = "points"\n'
                    f"{key} = [{json.dumps(value)}]\n")
    except ConfigError:
        return False
    return True


def facts_accept(**fields: object) -> bool:
    base: dict[str, object] = {"merchant_id": "m1", "category": "mcc:5411", "region": "",
                               "memberships": frozenset()}
    try:
        MerchantFacts(**{**base, **fields})  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def registry_accepts(check: Callable[[str], object], value: str) -> bool:
    """Whether the registry takes ``value`` exactly as given (not after tidying it)."""
    try:
        return check(value) == value
    except ConfigError:
        return False


def test_the_forms_agree_with_the_merchant_registry() -> None:
    """What the merchant registry accepts is what MerchantFacts and the rules accept, and
    no more: otherwise a rule could name a merchant that can never exist, or a registered
    merchant could not be paid."""
    from firmware_cfg import config

    def membership(value: str) -> object:
        return config.check_memberships([value])[0]

    for value in SAMPLES:
        is_id = registry_accepts(config.check_merchant_id, value)
        is_member = registry_accepts(membership, value)
        is_category = registry_accepts(config.check_category, value)
        assert rule_accepts("exclude_merchants", value) == is_id, value
        assert facts_accept(merchant_id=value) == is_id, value
        assert rule_accepts("exclude_memberships", value) == is_member, value
        assert facts_accept(memberships=frozenset({value})) == is_member, value
        assert facts_accept(category=value) == is_category, value


@pytest.mark.parametrize("category", ["ksic:4", "ksic:471211", "ksic:47a", "mcc:541",
                                      "mcc:54111", "5411", "naics:4451", "KSIC:47"])
def test_refuses_bad_category_syntax(category: str) -> None:
    refused(second(f'exclude_categories = ["{category}"]'), "pocket #2 'points'",
            f"exclude_categories has '{category}'", "'ksic:' and 2-5 digits")


def test_refuses_merchant_both_allowed_and_excluded() -> None:
    refused(second('allow_merchants = ["m1", "m2"]\nexclude_merchants = ["m2"]'),
            "pocket #2 'points'", "merchant 'm2' is both allowed and excluded")


def test_refuses_category_both_allowed_and_excluded() -> None:
    refused(second('allow_categories = ["mcc:5411"]\nexclude_categories = ["mcc:5411"]'),
            "pocket #2 'points'", "category 'mcc:5411' is both allowed and excluded")


def test_refuses_allowed_category_inside_an_excluded_one() -> None:
    refused(second('allow_categories = ["ksic:47121"]\nexclude_categories = ["ksic:471"]'),
            "pocket #2 'points'", "category 'ksic:47121' is allowed but excluded by 'ksic:471'")
    # the other way round is a carve-out, and accepted
    second_ok = second('allow_categories = ["ksic:471"]\nexclude_categories = ["ksic:47121"]')
    assert parse_rules(second_ok)["points"].exclude_categories == frozenset({"ksic:47121"})


def test_refuses_per_payment_above_per_day() -> None:
    refused(second("per_payment = 3000\nper_day = 2000"), "pocket #2 'points'",
            "per_payment 3000 is more than per_day 2000")


@pytest.mark.parametrize("key", ["per_payment", "per_day"])
@pytest.mark.parametrize("value", ["0", "-100", "100.0", "true", '"100"', str(2**63), "[100]"])
def test_refuses_amounts_that_are_not_positive_whole_won(key: str, value: str) -> None:
    refused(second(f"{key} = {value}"), "pocket #2 'points'",
            f"{key} must be a whole number of won")


@pytest.mark.parametrize("value", ['"2026-13-01"', '"20260501"', '"2026-W01-1"', '"soon"',
                                   "2026-05-01T00:00:00", "2026-05-01T00:00:00+09:00",
                                   "10:00:00", "20260501"])
def test_refuses_bad_expiry(value: str) -> None:
    refused(second(f"expires = {value}"), "pocket #2 'points'",
            "expires must be a date YYYY-MM-DD")


def test_refuses_impossible_toml_date() -> None:
    refused(second("expires = 2026-02-30"), "not valid TOML", "'expires = 2026-02-30'")


def test_accepts_expiry_as_a_date_or_its_string() -> None:
    assert parse_rules(second("expires = 2026-05-31"))["points"].expires == date(2026, 5, 31)
    assert parse_rules(second('expires = "2026-05-31"'))["points"].expires == date(2026, 5, 31)


def test_refuses_no_cash_pocket() -> None:
    refused('[[pocket]]\nid = "points"\nkind = "points"\n', "no cash pocket")
    refused("", "no cash pocket")


def test_refuses_a_second_cash_pocket() -> None:
    refused(CASH + '[[pocket]]\nid = "cash:2"\nkind = "cash"\n', "pocket #2 'cash:2'",
            "a second cash pocket", "pocket #1 is one")


def test_refuses_the_whole_file_for_one_bad_pocket() -> None:
    good = second('exclude_memberships = ["large-mart"]')
    assert parse_rules(good)
    refused(good + '[[pocket]]\nid = "allowance:x"\nkind = "allowance"\nper_day = 0\n',
            "pocket #3 'allowance:x'")


def test_load_rules(tmp_path: Path) -> None:
    path = tmp_path / "pockets.toml"
    path.write_text(DEFAULT_RULES, encoding="utf-8")
    assert load_rules(path) == DEFAULT_POCKET_RULES
    assert load_rules(path).source == str(path)
    path.write_text(second("per_day = 0"), encoding="utf-8")
    with pytest.raises(ConfigError, match=f"^{path}: pocket #2 'points': per_day"):
        load_rules(path)
    with pytest.raises(ConfigError, match="cannot read pocket rules"):
        load_rules(tmp_path / "missing.toml")
    path.write_bytes(b"\xff\xfe[[pocket]]")
    with pytest.raises(ConfigError, match="cannot read pocket rules"):
        load_rules(path)


# -- properties ---------------------------------------------------------------------------------

MERCHANT_IDS = ["m1", "m2", "m3"]
MERCHANT_CATEGORIES = ["ksic:47121", "ksic:47111", "ksic:56111", "mcc:5411", "mcc:5812"]
RULE_CATEGORIES = ["ksic:47", "ksic:471", "ksic:4711", "ksic:47121", "ksic:56", "mcc:5411",
                   "mcc:5812"]
MEMBERSHIPS = ["large-mart", "nh", "co-op"]
REGIONS = ["goyang", "gimpo"]
OPTIONAL_POCKETS = {"points": "points", "points:bus": "points", "allowance:youth": "allowance",
                    "allowance:care": "allowance", "points:zz": "points"}
KIND_ORDER = {"allowance": 0, "points": 1, "cash": 2}


def covers(entry: str, category: str) -> bool:
    """The contract's category matching, written again: KSIC by prefix, MCC exactly."""
    scheme, code = entry.split(":")
    m_scheme, m_code = category.split(":")
    if scheme != m_scheme:
        return False
    return m_code[:len(code)] == code if scheme == "ksic" else m_code == code


def subsets(pool: list[str]) -> st.SearchStrategy[frozenset[str]]:
    # mostly empty: a rule with every restriction at once would almost never pay
    return st.integers(0, 5).flatmap(
        lambda n: st.frozensets(st.sampled_from(pool), min_size=1, max_size=3) if n == 3
        else st.just(frozenset()))


near_days = st.one_of(st.none(), st.integers(-2, 2).map(lambda d: DAY + timedelta(days=d)))


@st.composite
def pocket_rules(draw: st.DrawFn, pocket: str, kind: str) -> PocketRule:
    excl_m = draw(subsets(MERCHANT_IDS))
    excl_c = draw(subsets(RULE_CATEGORIES))
    allow_c = frozenset(a for a in draw(subsets(RULE_CATEGORIES))
                        if not any(covers(e, a) for e in excl_c))
    limits = [draw(st.one_of(st.none(), st.none(), st.integers(1, 20_000))) for _ in range(2)]
    if None not in limits:
        limits.sort()
    return PocketRule(
        pocket, kind,  # type: ignore[arg-type]
        allow_merchants=draw(subsets(MERCHANT_IDS)) - excl_m, allow_categories=allow_c,
        exclude_merchants=excl_m, exclude_categories=excl_c,
        exclude_memberships=draw(subsets(MEMBERSHIPS)), regions=draw(subsets(REGIONS)),
        expires=draw(near_days), per_payment=limits[0], per_day=limits[1])


@st.composite
def programmes(draw: st.DrawFn) -> PocketRules:
    others = draw(st.lists(st.sampled_from(sorted(OPTIONAL_POCKETS)), unique=True))
    ids = ["cash", *others]
    found = [draw(pocket_rules(p, OPTIONAL_POCKETS.get(p, "cash"))) for p in ids]
    order = draw(st.permutations(found))
    return PocketRules(tuple(order))


@dataclass(frozen=True)
class Case:
    amount: int
    balances: list[PocketBalance]
    rules: PocketRules
    merchant: MerchantFacts
    spent: dict[str, int]

    def run(self, balances: list[PocketBalance] | None = None) -> Split:
        return split(self.amount, self.balances if balances is None else balances, self.rules,
                     self.merchant, DAY, self.spent)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    rule_set = draw(programmes())
    ids = [r.pocket for r in rule_set] + ["allowance:ghost"]
    held = [p for p in draw(st.permutations(ids)) if draw(st.integers(0, 3)) < 3]
    money = st.one_of(st.integers(1, 20_000), st.integers(1, 5_000), st.integers(-100, 0))
    balances = [PocketBalance(p, draw(money), draw(near_days)) for p in held]
    spent = {p: draw(st.integers(0, 25_000))
             for p in draw(st.lists(st.sampled_from(ids), unique=True))}
    merchant = MerchantFacts(draw(st.sampled_from(MERCHANT_IDS)),
                             draw(st.sampled_from(MERCHANT_CATEGORIES)),
                             draw(st.sampled_from([*REGIONS, "paju"])), draw(subsets(MEMBERSHIPS)))
    amount = draw(st.one_of(st.integers(1, 5_000), st.integers(1, 60_000)))
    return Case(amount, balances, rule_set, merchant, spent)


def usable(rule: PocketRule | None, bal: PocketBalance, merchant: MerchantFacts,
           spent: Mapping[str, int]) -> int:
    """What one pocket may give here, straight from the contract (0: nothing)."""
    if rule is None or bal.balance <= 0:
        return 0
    if merchant.merchant_id in rule.exclude_merchants:
        return 0
    if any(covers(c, merchant.category) for c in rule.exclude_categories):
        return 0
    if merchant.memberships & rule.exclude_memberships:
        return 0
    allowed = (merchant.merchant_id in rule.allow_merchants
               or any(covers(c, merchant.category) for c in rule.allow_categories))
    if (rule.allow_merchants or rule.allow_categories) and not allowed:
        return 0
    if rule.regions and merchant.region not in rule.regions:
        return 0
    for expiry in (rule.expires, bal.expires):
        if expiry is not None and DAY > expiry:
            return 0
    limits = [bal.balance]
    if rule.per_payment is not None:
        limits.append(rule.per_payment)
    if rule.per_day is not None:
        limits.append(rule.per_day - spent.get(bal.pocket, 0))
    return max(0, min(limits))


def expected_caps(case: Case) -> dict[str, int]:
    by_id = {r.pocket: r for r in case.rules.pockets}
    return {b.pocket: usable(by_id.get(b.pocket), b, case.merchant, case.spent)
            for b in case.balances}


def drawing_order(case: Case) -> list[str]:
    by_id = {r.pocket: r for r in case.rules.pockets}

    def key(bal: PocketBalance) -> tuple[int, int, str]:
        rule = by_id[bal.pocket]
        dates = [d for d in (rule.expires, bal.expires) if d]
        soonest = min(dates).toordinal() if dates else 10**9
        return (KIND_ORDER[rule.kind], soonest, bal.pocket)

    caps = expected_caps(case)
    return [b.pocket for b in sorted((b for b in case.balances if caps[b.pocket] > 0), key=key)]


@settings(deadline=None)
@given(cases())
def test_approved_iff_usable_total_covers_and_the_reason_is_right(case: Case) -> None:
    total = sum(expected_caps(case).values())
    got = case.run()
    assert got.approved == (total >= case.amount)
    assert got.amount == case.amount
    if total == 0:
        assert got.reason is DeclineReason.NO_ELIGIBLE_POCKET
    elif total < case.amount:
        assert got.reason is DeclineReason.INSUFFICIENT_BALANCE
        assert got.available == total
    else:
        assert got.reason is None and got.available == total
    if not got.approved:
        assert got.parts == ()


@settings(deadline=None, max_examples=300)
@given(cases())
def test_approved_parts_sum_to_the_amount_within_every_limit(case: Case) -> None:
    got = case.run()
    if not got.approved:
        return
    caps = expected_caps(case)
    assert sum(won for _, won in got.parts) == case.amount
    assert len({p for p, _ in got.parts}) == len(got.parts)
    balances = {b.pocket: b.balance for b in case.balances}
    by_id = {r.pocket: r for r in case.rules.pockets}
    for pocket, won in got.parts:
        assert isinstance(won, int) and not isinstance(won, bool)
        assert won > 0
        assert caps[pocket] > 0, f"{pocket} may not pay here"
        assert won <= balances[pocket]
        rule = by_id[pocket]
        if rule.per_payment is not None:
            assert won <= rule.per_payment
        if rule.per_day is not None:
            assert won <= rule.per_day - case.spent.get(pocket, 0)


@settings(deadline=None, max_examples=300)
@given(cases())
def test_parts_follow_the_documented_order_greedily(case: Case) -> None:
    got = case.run()
    if not got.approved:
        return
    caps = expected_caps(case)
    order = drawing_order(case)
    pockets = [p for p, _ in got.parts]
    assert pockets == order[:len(pockets)]
    # every pocket but the last gave all it could
    assert all(won == caps[p] for p, won in got.parts[:-1])


@settings(deadline=None)
@given(cases(), st.randoms(use_true_random=False))
def test_deterministic_and_independent_of_the_order_given(case: Case,
                                                          rnd: random.Random) -> None:
    first = case.run()
    assert case.run() == first
    shuffled = list(case.balances)
    rnd.shuffle(shuffled)
    assert case.run(shuffled) == first
    assert case.run(shuffled[::-1]) == first


def toml_of(rule_set: PocketRules) -> str:
    out = []
    for rule in rule_set:
        lines = ["[[pocket]]", f"id = {json.dumps(rule.pocket)}", f'kind = "{rule.kind}"']
        for name in ("allow_merchants", "allow_categories", "exclude_merchants",
                     "exclude_categories", "exclude_memberships", "regions"):
            values = sorted(getattr(rule, name))
            if values:
                lines.append(f"{name} = {json.dumps(values)}")
        if rule.expires:
            lines.append(f"expires = {rule.expires.isoformat()}")
        for name in ("per_payment", "per_day"):
            if getattr(rule, name) is not None:
                lines.append(f"{name} = {getattr(rule, name)}")
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


@settings(deadline=None)
@given(programmes())
def test_written_rules_read_back_the_same(rule_set: PocketRules) -> None:
    assert parse_rules(toml_of(rule_set)) == rule_set


FRAGMENTS = ["[[pocket]]", '[pocket]', 'id = "cash"', 'id = "points"', 'id = ""', "id = 1",
             'kind = "cash"', 'kind = "points"', 'kind = "allowance"', 'kind = "x"',
             'exclude_memberships = ["large-mart"]', 'allow_categories = ["ksic:47"]',
             'exclude_categories = ["ksic:4711"]', 'allow_merchants = ["m1"]',
             'exclude_merchants = ["m1"]', 'regions = ["goyang"]', "regions = []",
             "expires = 2026-05-01", 'expires = "2026-05-01"', "expires = 2026-05-01T10:00:00",
             "per_payment = 100", "per_day = 50", "per_day = true", "per_day = 1.5",
             "per_payment = -1", "x = 1", "pocket = 3", "[other]", "= 1", '"', "[[", "{a=[1]}"]


@settings(deadline=None)
@given(st.one_of(st.text(), st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("\n".join)))
def test_any_text_gives_rules_or_config_error(text: str) -> None:
    try:
        parsed = parse_rules(text, "any.toml")
    except ConfigError as err:
        assert str(err).startswith("any.toml: ")
    else:
        assert isinstance(parsed, PocketRules)
        assert sum(1 for r in parsed if r.kind == "cash") == 1
