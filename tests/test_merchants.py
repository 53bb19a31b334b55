"""The merchant registry: checks, changes, CSV files, terminals, and the facts a till gets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from central import open_service
from central.enroll import load_operator_key
from central.merchants import (
    Merchant,
    MerchantFileError,
    Registry,
    apply_facts,
    ensure_schema,
    facts,
)
from central.store import Store, open_store
from firmware_cfg import bundle as bundles
from firmware_cfg.config import DEFAULT, brn_check_digit, dumps, loads, parse_brn
from firmware_cfg.keys import public_hex
from localpay.cli.merchants import merchant as merchant_cli
from localpay.errors import ConfigError
from terminal.config_update import install
from terminal.home import Home, open_terminal
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401

FARM = Merchant("M0427", "Ilsan Farm Store", "134-86-72683", "ksic:47121", region="ilsan-dong",
                memberships=("local-food",), bank_code="011", account_no="301-0123-4567-81",
                account_holder="Kim")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:  # noqa: F811
    s = open_store(store_url)
    ensure_schema(s)
    ensure_schema(s)  # a second run changes nothing
    yield s
    s.close()


@pytest.fixture
def reg(store: Store) -> Registry:
    return Registry(store)


# -- the business registration number ---------------------------------------------------------


def independent_check(first9: str) -> int:
    """The check digit computed digit by digit, each product reduced mod 10 first (the
    form tax-office SQL scripts use): the same number mod 10 as the published weighted sum."""
    d = [int(c) for c in first9]
    total = (d[0] + d[1] * 3 % 10 + d[2] * 7 % 10 + d[3] + d[4] * 3 % 10 + d[5] * 7 % 10
             + d[6] + d[7] * 3 % 10 + d[8] * 5 % 10 + d[8] * 5 // 10)
    return (10 - total % 10) % 10


@pytest.mark.parametrize("number", ["134-86-72683", "1348672683",  # python-stdnum's example
                                    "123-45-67891", "1234567891", "000-00-00000"])
def test_valid_numbers(number: str) -> None:
    digits = number.replace("-", "")
    assert independent_check(digits[:9]) == int(digits[9])
    assert parse_brn(number) == digits


@pytest.mark.parametrize("number", ["134-86-72684", "1234567890", "123-45-67890",
                                    "000-00-00001"])
def test_numbers_failing_their_check_digit(number: str) -> None:
    digits = number.replace("-", "")
    assert independent_check(digits[:9]) != int(digits[9])
    with pytest.raises(ConfigError, match="fails its check digit"):
        parse_brn(number)


@pytest.mark.parametrize("number", ["", "123456789", "12345678911", "123-4567891",
                                    "12-345-67891", "123 45 67891", "１２３４５６７８９１",
                                    "abcdefghij"])
def test_numbers_of_the_wrong_form(number: str) -> None:
    with pytest.raises(ConfigError, match="10 digits"):
        parse_brn(number)


@given(st.text(alphabet="0123456789", min_size=9, max_size=9))
def test_one_last_digit_in_ten_is_right(first9: str) -> None:
    assert brn_check_digit(first9) == independent_check(first9)
    valid = [d for d in "0123456789" if _ok(first9 + d)]
    assert valid == [str(independent_check(first9))]


def _ok(number: str) -> bool:
    try:
        parse_brn(number)
    except ConfigError:
        return False
    return True


# -- a merchant's fields ----------------------------------------------------------------------


def test_stored_forms() -> None:
    m = Merchant("M-1", "  Shop  ", "123-45-67891", "MCC:5411",
                 memberships=("nh", " large-mart", "nh"))
    assert (m.name, m.brn, m.category, m.memberships) == (
        "Shop", "1234567891", "mcc:5411", ("large-mart", "nh"))
    assert m.brn_display == "123-45-67891"


@pytest.mark.parametrize(("changes", "message"), [
    ({"merchant_id": ""}, "merchant id"),
    ({"merchant_id": "M 1"}, "merchant id"),
    ({"merchant_id": "x" * 41}, "merchant id"),
    ({"merchant_id": "가게"}, "merchant id"),
    ({"name": ""}, "name: expected a non-empty"),
    ({"name": "   "}, "name: expected a non-empty"),
    ({"name": "a\nb"}, "name: control characters"),
    ({"name": "x" * 101}, "name: expected at most 100"),
    ({"brn": "1234567890"}, "check digit"),
    ({"brn": "12345"}, "brn: expected"),
    ({"category": "ksic:4712"}, "category"),
    ({"category": "mcc:541"}, "category"),
    ({"category": "47121"}, "category"),
    ({"category": "naics:445110"}, "category"),
    ({"region": "a\x00b"}, "region: control"),
    ({"memberships": ("Large Mart",)}, "memberships"),
    ({"memberships": "large_mart"}, "memberships"),
    ({"bank_code": "11"}, "bank_code"),
    ({"bank_code": "0111"}, "bank_code"),
    ({"bank_code": "abc"}, "bank_code"),
    ({"account_no": "12-34"}, "account_no"),
    ({"account_no": "123--456789"}, "account_no"),
    ({"account_no": "-123456789"}, "account_no"),
    ({"account_no": "abc123456"}, "account_no"),
    ({"bank_code": ""}, "needs both"),
    ({"account_no": ""}, "needs both"),
    ({"account_holder": "K\tim"}, "account_holder: control"),
    ({"active": 1}, "active: expected true or false"),
])
def test_each_refusal(changes: dict[str, Any], message: str) -> None:
    values = {**FARM.as_dict(), **changes}
    with pytest.raises(ConfigError, match=message):
        Merchant(**values)


def test_every_bad_field_is_told_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        Merchant("M 1", "", "1234567890", "mcc:54")
    for field in ("merchant id", "name", "brn", "category"):
        assert f"{field}: " in str(caught.value)


# -- the registry -----------------------------------------------------------------------------


def test_add_get_and_a_taken_id(reg: Registry) -> None:
    added = reg.add(FARM)
    assert added.version == 1 and added.updated_ms > 0
    assert reg.get("M0427") == added
    assert reg.get("M9999") is None
    with pytest.raises(ConfigError, match="exists already"):
        reg.add(FARM)


def test_update_touches_only_the_fields_given(reg: Registry) -> None:
    before = reg.add(FARM)
    after = reg.update("M0427", name="Ilsan Farm & Deli", memberships="nh")
    assert after.version == 2
    assert (after.name, after.memberships) == ("Ilsan Farm & Deli", ("nh",))
    for field in ("brn", "category", "region", "bank_code", "account_no", "account_holder",
                  "active"):
        assert getattr(after, field) == getattr(before, field)
    assert reg.get("M0427") == after
    # the same values again: nothing written, no new version
    assert reg.update("M0427", name="Ilsan Farm & Deli") == after
    with pytest.raises(ConfigError, match="check digit"):
        reg.update("M0427", brn="1234567890")
    with pytest.raises(ConfigError, match="not a field an update changes"):
        reg.update("M0427", version=9)
    with pytest.raises(ConfigError, match="no merchant"):
        reg.update("M9999", name="x")
    assert reg.get("M0427") == after


def test_list_filters(reg: Registry) -> None:
    reg.add(FARM)
    reg.add(Merchant("M0500", "Mart", "1234567891", "ksic:47111", region="juyeop-dong",
                     memberships=("large-mart", "nh")))
    reg.add(Merchant("M0600", "Cafe", "1348672683", "mcc:5814", active=False))

    def ids(**kw: Any) -> list[str]:
        return [m.merchant_id for m in reg.list(**kw)]

    assert ids() == ["M0427", "M0500", "M0600"]
    assert ids(category="ksic:47") == ["M0427", "M0500"]
    assert ids(category="ksic:4712") == ["M0427"]
    assert ids(category="ksic:47121") == ["M0427"]
    assert ids(category="mcc:5814") == ["M0600"]
    assert ids(region="juyeop-dong") == ["M0500"]
    assert ids(membership="nh") == ["M0500"]
    assert ids(membership="large-mart") == ["M0500"]
    assert ids(membership="mart") == []
    assert ids(active=False) == ["M0600"]
    assert ids(active=True, category="ksic:47") == ["M0427", "M0500"]
    with pytest.raises(ConfigError, match="category"):
        reg.list(category="mcc:58")


def test_assignment(reg: Registry) -> None:
    reg.add(FARM)
    reg.add(Merchant("M0500", "Mart", "1234567891", "ksic:47111"))
    assert reg.merchant_of("TILL-1") is None
    assert reg.assign_terminal("TILL-1", "M0427") is None
    assert reg.assign_terminal("TILL-2", "M0427") is None
    assert reg.assign_terminal("TILL-1", "M0427") is None  # again: no change
    assert reg.merchant_of("TILL-1") == reg.get("M0427")
    assert reg.terminals_of("M0427") == ("TILL-1", "TILL-2")
    # a terminal belongs to one merchant: assigning it again moves it
    assert reg.assign_terminal("TILL-2", "M0500") == "M0427"
    assert reg.terminals_of("M0427") == ("TILL-1",)
    assert reg.merchant_of("TILL-2").merchant_id == "M0500"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="no merchant"):
        reg.assign_terminal("TILL-3", "M9999")
    reg.update("M0500", active=False)
    with pytest.raises(ConfigError, match="not active"):
        reg.assign_terminal("TILL-3", "M0500")
    with pytest.raises(ConfigError, match="terminal id"):
        reg.assign_terminal("", "M0427")


def test_municipalities_keep_their_own_merchants(store: Store) -> None:
    goyang, gimpo = Registry(store, "goyang"), Registry(store, "gimpo")
    goyang.add(FARM)
    gimpo.add(FARM)
    gimpo.update("M0427", name="Gimpo Farm")
    assert goyang.get("M0427").name == "Ilsan Farm Store"  # type: ignore[union-attr]
    assert [m.municipality_id for m in gimpo.list()] == ["gimpo"]


# -- CSV files --------------------------------------------------------------------------------

HEADER = "merchant_id,name,brn,category,region,memberships,active\n"


def snapshot(reg: Registry) -> dict[str, Merchant]:
    return {m.merchant_id: m for m in reg.list()}


def test_csv_adds_updates_and_counts(reg: Registry, tmp_path: Path) -> None:
    reg.add(FARM)
    reg.add(Merchant("M0500", "Mart", "1234567891", "ksic:47111"))
    path = tmp_path / "m.csv"
    path.write_text("\ufeff" + HEADER
                    + "M0427,Ilsan Farm Store,134-86-72683,ksic:47121,ilsan-dong,local-food,\n"
                    + "M0500,Big Mart,1234567891,ksic:47111,,\"large-mart,nh\",yes\n"
                    + "\n"
                    + "M0700,New Shop,0000000000,mcc:5411,,,0\n", encoding="utf-8")
    result = reg.load_csv(path)
    assert result.as_dict() == {"added": 1, "updated": 1, "unchanged": 1}
    now = snapshot(reg)
    assert now["M0500"].memberships == ("large-mart", "nh") and now["M0500"].version == 2
    assert now["M0427"].version == 1 and now["M0427"].account_no == FARM.account_no
    assert now["M0700"].active is False
    assert reg.load_csv(path).as_dict() == {"added": 0, "updated": 0, "unchanged": 3}


def test_csv_with_several_bad_lines_reports_each_and_applies_nothing(
        reg: Registry, tmp_path: Path) -> None:
    reg.add(FARM)
    before = snapshot(reg)
    path = tmp_path / "m.csv"
    path.write_text(HEADER
                    + "M0427,Renamed,134-86-72683,ksic:47121,,,\n"           # 2: good
                    + "M0800,Bad Number,1234567890,ksic:47121,,,\n"          # 3
                    + "M0801,,1234567891,ksic:47121,,,\n"                    # 4
                    + "M0802,Cat,1234567891,ksic:471,,,\n"                   # 5
                    + "M0803,Short,1234567891\n"                             # 6
                    + "M0427,Again,134-86-72683,ksic:47121,,,\n"             # 7
                    + "M0804,Good,1234567891,mcc:5411,,,maybe\n"             # 8
                    + "M0805,Fine,1234567891,mcc:5411,,,\n"                  # 9: good
                    + "M0806,Two,1234567890,mcc:54,,,\n",                    # 10
                    encoding="utf-8")
    with pytest.raises(MerchantFileError) as caught:
        reg.load_csv(path)
    lines = [n for n, _ in caught.value.problems]
    assert lines == [3, 4, 5, 6, 7, 8, 10]
    text = str(caught.value)
    for n, why in [(3, "check digit"), (4, "name"), (5, "category"), (6, "expected 7 fields"),
                   (7, "repeated (first on line 2)"), (8, "active"), (10, "brn"),
                   (10, "; category")]:
        assert f"{path}:{n}: " in text
        assert why in dict(caught.value.problems)[n]
    assert snapshot(reg) == before


@pytest.mark.parametrize(("text", "line", "why"), [
    ("", 1, "header"),
    ("\n\n", 1, "header"),
    ("merchant_id,name,brn\n", 1, "missing column 'category'"),
    ("merchant_id,name,brn,category,colour\n", 1, "unknown column 'colour'"),
    ("merchant_id,name,brn,category,name\n", 1, "named twice"),
    (HEADER + 'M1,"open quote,1234567891,mcc:5411,,,\n', 2, "CSV"),
])
def test_csv_form_errors(reg: Registry, text: str, line: int, why: str) -> None:
    with pytest.raises(MerchantFileError) as caught:
        reg.load_csv_text(text, "f.csv")
    assert caught.value.problems[0][0] == line and why in caught.value.problems[0][1]


def test_csv_not_utf8_says_where(reg: Registry, tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(HEADER.encode() + "M1,가게,1234567891,mcc:5411,,,\n".encode("cp949"))
    with pytest.raises(MerchantFileError, match=r"m\.csv:2: not UTF-8"):
        reg.load_csv(path)


#: per column: values that pass, then values that do not (drawn one time in six)
_CELLS = {
    "merchant_id": (["M1", "M2", "M3", "M0427"], ["", "M 4"]),
    "name": (["Shop", "가게", '"q"', "x,y"], ["", "a\x00b"]),
    "brn": (["1234567891", "123-45-67891", "1348672683"], ["1234567890", "12"]),
    "category": (["ksic:47121", "mcc:5411", "MCC:5411"], ["ksic:1", ""]),
    "region": (["", "ilsan-dong"], ["\x07"]),
    "memberships": (["", "nh", "large-mart;nh"], ["Bad One"]),
    "active": (["", "1", "no"], ["maybe"]),
}


def _cell(draw: st.DrawFn, column: str) -> str:
    good, bad = _CELLS[column]
    return draw(st.sampled_from(bad if draw(st.integers(0, 5)) == 0 else good))


def _csv_quote(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"' if any(c in cell for c in ',"\n\r') else cell


@st.composite
def csv_texts(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 5)) == 0:
        return draw(st.text(max_size=200))  # anything at all
    required = ["merchant_id", "name", "brn", "category"]
    if draw(st.integers(0, 9)) == 0:
        required.remove(draw(st.sampled_from(required)))
    optional = draw(st.lists(st.sampled_from(list(_CELLS)[4:]), unique=True))
    columns = draw(st.permutations(required + optional))
    lines = [",".join(columns)]
    for _ in range(draw(st.integers(0, 5))):
        row = [_csv_quote(_cell(draw, c)) for c in columns]
        if draw(st.integers(0, 15)) == 0:
            row = row[:-1]
        lines.append(",".join(row))
    junk = draw(st.sampled_from(["", "", "", "", '"', "\x00", "\r", "a,b"]))
    return "\n".join(lines) + "\n" + junk


@given(text=csv_texts())
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_csv_gives_a_result_or_every_bad_line_and_never_half_applies(
        reg: Registry, text: str) -> None:
    before = snapshot(reg)
    try:
        result = reg.load_csv_text(text, "any.csv")
    except ConfigError as err:
        assert isinstance(err, MerchantFileError) and err.problems
        assert all(1 <= n <= text.count("\n") + text.count("\r") + 1 for n, _ in err.problems)
        assert str(err).startswith("any.csv:")
        assert snapshot(reg) == before
        return
    after = snapshot(reg)
    assert len(after) - len(before) == result.added
    bumped = [k for k in before if after[k].version != before[k].version]
    assert len(bumped) == result.updated
    assert all(after[k].version == before[k].version + 1 for k in bumped)
    assert all(after[k] == before[k] for k in before if k not in bumped)


# -- the terminal's [merchant] section ----------------------------------------------------------


def test_a_config_without_a_merchant_is_the_demo_one() -> None:
    assert "[merchant]" not in dumps(DEFAULT)
    assert loads(dumps(DEFAULT)) == DEFAULT
    assert DEFAULT.terminal.merchant_name == "Demo Shop"


def test_facts_in_a_config_round_trip_and_name_the_till() -> None:
    till = DEFAULT.replace("terminal", id="TILL-M0427-0001", role="till", place="M0427")
    text = apply_facts(dumps(till), FARM)
    config = loads(text)
    assert config.terminal.merchant_name == "Ilsan Farm Store"
    assert config.terminal.place == "M0427"
    assert config.merchant.brn == "1348672683" and config.merchant.category == "ksic:47121"
    assert config.merchant.memberships == ("local-food",)
    assert loads(dumps(config)) == config
    assert facts(FARM) == {"id": "M0427", "name": "Ilsan Farm Store", "brn": "1348672683",
                           "category": "ksic:47121", "region": "ilsan-dong",
                           "memberships": ["local-food"]}


def test_the_merchant_section_fills_what_the_terminal_section_leaves_out() -> None:
    config = loads('[terminal]\nid = "T1"\nrole = "till"\n[merchant]\nid = "M1"\n'
                   'name = "Shop"\nbrn = "123-45-67891"\ncategory = "mcc:5411"\n'
                   'memberships = ["nh"]\n')
    assert (config.terminal.merchant_name, config.terminal.place) == ("Shop", "M1")


@pytest.mark.parametrize(("merchant", "terminal", "message"), [
    ('name = "Shop"\nbrn = "1234567891"\ncategory = "mcc:5411"', "", "needs the merchant's id"),
    ('id = "M1"\nname = "Shop"\nbrn = "1234567890"\ncategory = "mcc:5411"', "", "check digit"),
    ('id = "M1"\nname = ""\nbrn = "1234567891"\ncategory = "mcc:5411"', "", "merchant.name"),
    ('id = "M1"\nname = "Shop"\nbrn = "1234567891"\ncategory = "mcc:54"', "",
     "merchant.category"),
    ('id = "M1"\nname = "Shop"\nbrn = "1234567891"\ncategory = "mcc:5411"\n'
     'memberships = ["nh", "large-mart"]', "", "sorted"),
    ('id = "M1"\nname = "Shop"\nbrn = "1234567891"\ncategory = "mcc:5411"\n'
     'memberships = "nh"', "", "expected an array"),
    ('id = "M1"\nname = "Shop"\nbrn = "1234567891"\ncategory = "mcc:5411"',
     'merchant_name = "Other"', "terminal.merchant_name"),
    ('id = "M1"\nname = "Shop"\nbrn = "1234567891"\ncategory = "mcc:5411"',
     'place = "M2"', "terminal.place"),
    ('id = "M1"\nname = "Shop"\nbrn = "1234567891"\ncategory = "mcc:5411"\nphone = "1"', "",
     "unknown key 'phone'"),
])
def test_merchant_section_refusals(merchant: str, terminal: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        loads(f'[terminal]\nid = "T1"\nrole = "till"\n{terminal}\n[merchant]\n{merchant}\n')


def test_the_bundle_carries_the_facts_and_the_till_shows_the_name(
        reg: Registry, tmp_path: Path) -> None:
    operator = Ed25519PrivateKey.generate()
    reg.add(FARM)
    reg.assign_terminal("TILL-M0427-0001", "M0427")
    home = Home(tmp_path / "home")
    running = DEFAULT.replace("terminal", id="TILL-M0427-0001", role="till", place="M0427"
                              ).replace("keys", operator_public_key=public_hex(operator))
    home.path.mkdir(parents=True)
    home.config_path.write_text(dumps(running), encoding="utf-8")
    assert home.config().terminal.merchant_name == "Demo Shop"
    signed = bundles.make(operator, "TILL-M0427-0001", 2,
                          reg.config_for("TILL-M0427-0001", dumps(running)))
    assert "[merchant]" in bundles.peek_config(signed)
    terminal = open_terminal(home, home.config(), create_keys=True)
    try:
        install(terminal, home, signed)
        assert terminal.config.terminal.merchant_name == "Ilsan Farm Store"
    finally:
        assert terminal.ledger is not None
        terminal.ledger.close()
    shown = home.config()
    assert shown.terminal.merchant_name == "Ilsan Farm Store"
    assert shown.merchant.brn == "1348672683" and shown.merchant.region == "ilsan-dong"
    # a terminal assigned to no merchant keeps its config as it is
    assert reg.config_for("TILL-OTHER", dumps(running)) == dumps(running)


def test_enrolment_config_takes_the_assigned_or_the_named_merchant(reg: Registry) -> None:
    from central.enroll import compose_config

    reg.add(FARM)
    reg.add(Merchant("M0500", "Mart", "1234567891", "ksic:47111"))
    reg.assign_terminal("TILL-BOUND", "M0500")

    def first(terminal_id: str, role: str, place: str) -> str:
        return compose_config("", terminal_id=terminal_id, role=role, place=place,
                              central_url="http://c", reader="", scanner="", central_key="",
                              operator_hex="")

    with reg.store.tx() as tx:
        bound = loads(reg.enrolment_config(tx, "TILL-BOUND", first("TILL-BOUND", "till",
                                                                   "M0500")))
        named = loads(reg.enrolment_config(tx, "TILL-NEW", first("TILL-NEW", "till", "M0427")))
        bus = first("BUS-85-0001", "validator", "85")
        assert reg.enrolment_config(tx, "BUS-85-0001", bus) == bus
    assert bound.terminal.merchant_name == "Mart" and bound.merchant.id == "M0500"
    assert named.terminal.merchant_name == "Ilsan Farm Store"
    assert reg.merchant_of("TILL-NEW") == reg.get("M0427")
    # a refused enrolment takes its assignment back with it
    with pytest.raises(RuntimeError), reg.store.tx() as tx:
        reg.enrolment_config(tx, "TILL-GONE", first("TILL-GONE", "till", "M0427"))
        raise RuntimeError("refused later in the enrolment")
    assert reg.merchant_of("TILL-GONE") is None


# -- the commands -----------------------------------------------------------------------------


def cli(url: str, tmp_path: Path, *args: str) -> Any:
    # the store's key and schema, as `central init` makes them
    open_service(url, tmp_path / "data").store.close()
    return CliRunner().invoke(merchant_cli, [args[0], "--db", url, "--data",
                                             str(tmp_path / "data"), *args[1:]])


def test_commands(store_url: str, tmp_path: Path) -> None:  # noqa: F811
    out = cli(store_url, tmp_path, "add", "M0427", "--name", "Ilsan Farm Store", "--brn",
              "134-86-72683", "--category", "ksic:47121", "--membership", "local-food",
              "--bank-code", "011", "--account-no", "301-0123-4567-81")
    assert out.exit_code == 0, out.output
    assert "M0427 registered (version 1)" in out.output
    out = cli(store_url, tmp_path, "add", "M0428", "--name", "X", "--brn", "1234567890",
              "--category", "mcc:5411")
    assert out.exit_code == 1 and "check digit" in out.output
    out = cli(store_url, tmp_path, "add", "M0428", "--name", "X")
    assert out.exit_code == 2 and "--brn, --category" in out.output
    out = cli(store_url, tmp_path, "update", "M0427", "--region", "ilsan-dong")
    assert out.exit_code == 0 and "updated (version 2)" in out.output
    out = cli(store_url, tmp_path, "update", "M0427", "--region", "ilsan-dong")
    assert out.exit_code == 0 and "unchanged" in out.output
    out = cli(store_url, tmp_path, "list")
    assert out.exit_code == 0 and "Ilsan Farm Store" in out.output
    assert "134-86-72683" in out.output and "1 merchant(s)" in out.output
    out = cli(store_url, tmp_path, "list", "--json", "--category", "ksic:47")
    assert [m["region"] for m in json.loads(out.output)] == ["ilsan-dong"]
    out = cli(store_url, tmp_path, "list", "--json", "--inactive")
    assert json.loads(out.output) == []
    out = cli(store_url, tmp_path, "assign", "TILL-M0427-0001", "M0427")
    assert out.exit_code == 0 and "belongs to merchant M0427" in out.output
    out = cli(store_url, tmp_path, "show", "M0427", "--json")
    shown = json.loads(out.output)
    assert shown["terminals"] == ["TILL-M0427-0001"] and shown["version"] == 2
    out = cli(store_url, tmp_path, "show", "M0427")
    assert "011 301-0123-4567-81" in out.output
    out = cli(store_url, tmp_path, "show", "M9999")
    assert out.exit_code == 1 and "no merchant 'M9999'" in out.output


def test_load_command_prints_every_bad_line_and_applies_nothing(
        store_url: str, tmp_path: Path) -> None:  # noqa: F811
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "M1,Shop,1234567891,mcc:5411,,,\n"
                   + "M2,Shop,1234567890,mcc:5411,,,\n" + "M3,Shop,1234567891,mcc:99,,,\n",
                   encoding="utf-8")
    out = cli(store_url, tmp_path, "load", str(bad))
    assert out.exit_code == 1
    assert f"{bad}:3: brn" in out.stderr and f"{bad}:4: category" in out.stderr
    assert "nothing applied" in out.stderr
    assert json.loads(cli(store_url, tmp_path, "list", "--json").output) == []
    good = tmp_path / "good.csv"
    good.write_text(HEADER + "M1,Shop,1234567891,mcc:5411,,,\n", encoding="utf-8")
    out = cli(store_url, tmp_path, "load", str(good), "--json")
    assert json.loads(out.output) == {"added": 1, "updated": 0, "unchanged": 0}


def test_assign_publish_sends_the_till_its_merchant(
        store_url: str, tmp_path: Path) -> None:  # noqa: F811
    data = tmp_path / "data"
    service = open_service(store_url, data)
    try:
        service.add_terminal("TILL-1", bytes(32))
        running = DEFAULT.replace("terminal", id="TILL-1", role="till", place="M0427")
        service.publish_config(bundles.make(load_operator_key(data), "TILL-1", 1,
                                            dumps(running)).decode())
    finally:
        service.store.close()
    assert cli(store_url, tmp_path, "add", "M0427", "--name", "Ilsan Farm Store", "--brn",
               "1348672683", "--category", "ksic:47121").exit_code == 0
    out = cli(store_url, tmp_path, "assign", "TILL-1", "M0427", "--publish")
    assert out.exit_code == 0, out.output
    assert "TILL-1: config version 2 published" in out.output
    out = cli(store_url, tmp_path, "update", "M0427", "--name", "Ilsan Farm & Deli",
              "--publish")
    assert "TILL-1: config version 3 published" in out.output
    service = open_service(store_url, data)
    try:
        body = service.latest_config("TILL-1")["body"].encode()
    finally:
        service.store.close()
    config = bundles.verify(body, load_operator_key(data).public_key(), "TILL-1", 2).config
    assert config.terminal.merchant_name == "Ilsan Farm & Deli"
    assert config.merchant.id == "M0427"
    out = cli(store_url, tmp_path, "assign", "TILL-1", "M0427", "--publish")
    assert "TILL-1: config version 3 is up to date" in out.output
