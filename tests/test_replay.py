"""``localpay replay``: scenarios played through a home's real terminal, ledger, virtual reader
and, for ``sync`` lines, a real central service; bad scenarios refused whole."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from central import open_service
from firmware_cfg.config import DEFAULT, Config, dumps
from firmware_cfg.keys import public_hex
from localpay.cli import cli
from localpay.cli.replay import load_scenario
from localpay.errors import ConfigError
from offline_ledger import Ledger
from terminal.home import Home, open_terminal
from tests.pg_fixtures import central

DATA = Path(__file__).resolve().parent / "data" / "replay"
KEYS = ["outcome", "amount", "reason", "seq", "token", "category", "points", "points_week"]
#: the default adult fare, written out here rather than read from the code under test
FARE = 1500
#: 2025-03-04T07:00:00+09:00 in ms since the epoch (2025-03-03T22:00:00Z)
SEVEN_AM_MS = 1_741_039_200_000
MINUTE_MS = 60_000


def make_home(path: Path, config: Config = DEFAULT) -> Home:
    """A home with ``config`` in terminal.toml, its keys and an empty ledger."""
    path.mkdir(parents=True, exist_ok=True)
    if config != DEFAULT:
        (path / "terminal.toml").write_text(dumps(config), encoding="utf-8")
    home = Home(path)
    terminal = open_terminal(home, home.config(), create_keys=True)
    assert terminal.ledger is not None
    terminal.ledger.close()
    return home


def replay(home: Home, scenario: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home.path), "replay", str(scenario), *args])


def decisions(result: Result) -> list[dict[str, object]]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def token(home: Home, uid: str) -> str:
    """A UID card's token as DESIGN.md defines it: HMAC-SHA-256 with the token key."""
    key = home.token_key(home.config())
    return hmac.new(key, b"uid:" + bytes.fromhex(uid), hashlib.sha256).hexdigest()[:32]


def entries(home: Home, db: Path | None = None) -> list[dict[str, object]]:
    with Ledger(db or home.ledger_path) as ledger:
        return [e.as_dict() for e in ledger.entries()]


def write(path: Path, lines: Sequence[object]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n"
                            for x in lines), encoding="utf-8")
    return path


def test_validator_taps_a_duplicate_and_another_card(tmp_path: Path) -> None:
    assert DEFAULT.fares.adult == FARE
    home = make_home(tmp_path / "home")
    out = decisions(replay(home, DATA / "validator.jsonl"))
    assert [list(line) for line in out] == [KEYS] * 3
    a, b = token(home, "08a10001"), token(home, "08a10002")
    assert [(d["outcome"], d["amount"], d["reason"], d["seq"], d["token"]) for d in out] == [
        ("approved", FARE, None, 1, a),
        ("already_paid", 0, None, None, a),
        ("approved", FARE, None, 2, b),
    ]
    assert out[0]["category"] == out[2]["category"] == "adult"
    assert out[1]["category"] is None  # no entry, and a UID card carries no category
    recorded = entries(home)
    assert [(e["seq"], e["kind"], e["amount"], e["card_token"]) for e in recorded] == [
        (1, "tap", FARE, a), (2, "tap", FARE, b)]
    assert [e["wall_ms"] for e in recorded] == [SEVEN_AM_MS, SEVEN_AM_MS + 40_000]


def test_till_pays_refunds_voids_and_declines(tmp_path: Path) -> None:
    config = DEFAULT.replace("terminal", role="till", id="SHOP-0427-01", place="M0427")
    assert 14_000 > config.risk.uid_max_amount  # the 14,000 won payment is over the limit
    home = make_home(tmp_path / "home", config)
    db = tmp_path / "scratch.sqlite"
    out = decisions(replay(home, DATA / "till.jsonl", "--db", str(db)))
    assert all(list(line) == KEYS for line in out)
    a, b, c = (token(home, uid) for uid in ("08a10001", "08a10002", "08a10003"))
    assert [(d["outcome"], d["amount"], d["reason"], d["seq"], d["token"]) for d in out] == [
        ("approved", 8_800, None, 1, a),
        ("approved", 3_000, None, 2, a),  # a part of payment 1 back
        ("approved", 5_000, None, 3, b),
        ("approved", 5_000, None, 4, b),  # payment 3 voided whole
        ("declined", 8_800, "not_refundable", None, None),  # partly refunded: no void
        ("declined", 14_000, "over_limit", None, c),
        ("declined", 1_000, "qr_invalid", None, None),
    ]
    assert out[0]["category"] == "adult"
    assert [(e["seq"], e["kind"], e["amount"], e["ref_seq"]) for e in entries(home, db)] == [
        (1, "payment", 8_800, 0), (2, "refund", 3_000, 1), (3, "payment", 5_000, 0),
        (4, "void", 5_000, 3)]
    assert entries(home) == []  # --db: the home's own ledger is left alone


def test_clock_lines_set_the_terminals_clock_until_the_next(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    slow = SEVEN_AM_MS - 20 * MINUTE_MS + 123  # 06:40:00.123 while it is truly 07:10
    scenario = write(tmp_path / "clock.jsonl", [
        {"at": "2025-03-04T07:00:00+09:00", "tap": {"uid": "08a10001"}},
        {"at": "2025-03-04T07:10:00+09:00", "clock": "2025-03-04T06:40:00.123+09:00",
         "tap": {"uid": "08a10002"}},
        {"at": "2025-03-04T07:15:00+09:00", "tap": {"uid": "08a10003"}},
        {"at": "2025-03-04T07:20:00+09:00", "clock": "2025-03-04T07:20:00+09:00",
         "tap": {"uid": "08a10004"}},
        {"at": "2025-03-04T07:21:00+09:00", "clock": "1970-01-01T00:00:00Z",
         "tap": {"uid": "08a10005"}},  # a Raspberry Pi with no real-time clock
        {"at": "2025-03-04T07:22:00+09:00", "tap": {"uid": "08a10006"}},
    ])
    out = decisions(replay(home, scenario))
    assert [d["outcome"] for d in out] == ["approved"] * 6
    walls = [e["wall_ms"] for e in entries(home)]
    assert walls == [SEVEN_AM_MS, slow, slow + 5 * MINUTE_MS, SEVEN_AM_MS + 20 * MINUTE_MS,
                     0, MINUTE_MS]
    # the terminal judges its clock as on site: true while it reads true, else not trusted
    # (20 minutes slow: behind the first entry; the epoch: behind everything)
    states = [json.loads(str(e["detail"])).get("clock") for e in entries(home)]
    assert states == ["synchronised", "unknown", "unknown", "synchronised", "unknown",
                      "unknown"]


GOOD = {
    "validator": [{"at": "2025-03-04T07:00:00+09:00", "tap": {"uid": "08a10001"}},
                  {"at": "2025-03-04T07:00:30+09:00", "tap": {"uid": "08a10002"}},
                  {"at": "2025-03-04T07:02:00+09:00", "tap": {"uid": "08a10003"}}],
    "till": [{"at": "2025-03-04T09:30:00+09:00", "pay": {"uid": "08a10001", "amount": 800}},
             {"at": "2025-03-04T09:30:30+09:00", "pay": {"uid": "08a10002", "amount": 900}},
             {"at": "2025-03-04T09:32:00+09:00", "pay": {"uid": "08a10003", "amount": 700}}],
}
AT = {"validator": '"2025-03-04T07:01:00+09:00"', "till": '"2025-03-04T09:31:00+09:00"'}
BAD = [
    # (role, line 3 with @ for a good "at", what the message says)
    ("validator", '{"at": @, "tap": {"uid": "08a10004"}', "not JSON"),
    ("validator", "not json at all", "not JSON"),
    ("validator", '["tap", "08a10004"]', "expected a JSON object, found an array"),
    ("validator", '{"tap": {"uid": "08a10004"}}', 'no "at"'),
    ("validator", '{"at": @}', "expected exactly one action"),
    ("validator", '{"at": @, "tap": {"uid": "08a10004"}, "code": "C"}', 'found "tap" and "code"'),
    ("validator", '{"at": @, "tap": {"uid": "08a10004"}, "tap": {"uid": "08"}}', "twice"),
    ("validator", '{"at": @, "tap": {"uid": "08a10004"}, "amount": 5}', "unknown key 'amount'"),
    ("validator", '{"at": @, "tap": {"uid": "08a10004", "amount": 5}}', "unknown key 'amount'"),
    ("validator", '{"at": @, "tap": {}}', '"tap" has no "uid"'),
    ("validator", '{"at": @, "tap": "08a10004"}', '"tap" must be an object'),
    ("validator", '{"at": @, "tap": {"uid": 8}}', '"tap.uid" must be'),
    ("validator", '{"at": 1741039260, "tap": {"uid": "08a10004"}}', '"at" must be'),
    ("validator", '{"at": @, "code": 7}', '"code" must be'),
    ("validator", '{"at": @, "code": ""}', '"code" is empty'),
    ("validator", '{"at": @, "sync": "yes"}', '"sync" must be true'),
    ("validator", '{"at": @, "tap": {"uid": "08a1zz04"}}', "not hex"),
    ("validator", '{"at": @, "tap": {"uid": "08a1000"}}', "not hex"),
    ("validator", '{"at": @, "tap": {"uid": "0x08a10004"}}', "not hex"),
    ("validator", '{"at": @, "tap": {"uid": "00112233445566778899aa"}}', "at most 10"),
    ("validator", '{"at": "2025-03-04T06:59:00+09:00", "tap": {"uid": "08a10004"}}',
     "before line 2's"),
    ("validator", '{"at": "yesterday", "tap": {"uid": "08a10004"}}', "not an ISO 8601 time"),
    ("validator", '{"at": @, "clock": "2025-13-01T00:00:00+09:00", "tap": {"uid": "08"}}',
     '"clock" \'2025-13-01T00:00:00+09:00\' is not an ISO 8601 time'),
    ("validator", '{"at": "2025-03-04T07:01:00", "tap": {"uid": "08a10004"}}', "no offset"),
    ("validator", '{"at": @, "clock": "1969-12-31T23:59:59Z", "tap": {"uid": "08"}}',
     "before 1970"),
    ("validator", '{"at": @, "pay": {"uid": "08a10004", "amount": 100}}',
     "a pay is for a till"),
    ("validator", '{"at": @, "refund": {"seq": 1, "amount": 100}}', "a refund is for a till"),
    ("validator", '{"at": @, "sync": true}', "central.url and keys.central_public_key"),
    ("till", '{"at": @, "pay": {"uid": "08a10004", "amount": -100}}',
     '"pay.amount" is negative'),
    ("till", '{"at": @, "pay": {"uid": "08a10004", "amount": "100"}}',
     '"pay.amount" must be a whole number'),
    ("till", '{"at": @, "pay": {"uid": "08a10004", "amount": 1.5}}', "whole number"),
    ("till", '{"at": @, "pay": {"uid": "08a10004", "amount": true}}', "whole number"),
    ("till", '{"at": @, "pay": {"uid": "08a10004", "amount": NaN}}', "NaN"),
    ("till", '{"at": @, "pay": {"uid": "08a10004", "code": "C", "amount": 100}}',
     'exactly one of "uid"'),
    ("till", '{"at": @, "pay": {"uid": "08a10004"}}', '"pay" has no "amount"'),
    ("till", '{"at": @, "refund": {"seq": 1, "amount": -1}}', '"refund.amount" is negative'),
    ("till", '{"at": @, "refund": {"seq": 1}}', '"refund" has no "amount"'),
    ("till", '{"at": @, "void": {"seq": 0}}', '"void.seq" is less than 1'),
    ("till", '{"at": @, "void": {"seq": 99999999999999999999}}', "too large"),
    ("till", '{"at": @, "tap": {"uid": "08a10004"}}', "a tap is for a validator"),
    ("till", '{"at": @, "code": "SOME-CODE"}', '"pay": {"code"'),
]


@pytest.mark.parametrize(("role", "bad", "says"), BAD,
                         ids=[f"{role}: {says}" for role, _, says in BAD])
def test_a_bad_line_is_refused_and_nothing_is_recorded(tmp_path: Path, role: str, bad: str,
                                                       says: str) -> None:
    config = DEFAULT.replace("terminal", role=role)
    home = make_home(tmp_path / "home", config)
    good = GOOD[role]
    scenario = write(tmp_path / "scenario.jsonl",
                     [good[0], good[1], bad.replace("@", AT[role]), good[2]])
    result = replay(home, scenario)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(f"Error: ConfigError: {scenario} line 3: "), message
    assert says in message
    assert entries(home) == []
    with Ledger(home.ledger_path) as ledger:
        assert ledger.count() == 0
    with pytest.raises(ConfigError, match=r"scenario\.jsonl line 3: "):
        load_scenario(scenario, role, central=False)


def test_what_is_not_a_line_is_skipped_or_refused(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    assert replay(home, tmp_path / "missing.jsonl").exit_code == 2
    empty = write(tmp_path / "empty.jsonl", ["", "  "])
    result = replay(home, empty)
    assert result.exit_code == 2 and "no lines to play" in result.stderr
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(json.dumps(GOOD["validator"][0]).encode() + b"\n\xff\xfe\n")
    result = replay(home, binary)
    assert result.exit_code == 2 and "binary.jsonl line 2: not UTF-8" in result.stderr
    # Blank lines are skipped but counted; equal times are fine (lines never go back).
    lines = [GOOD["validator"][0], "", {"at": "2025-03-04T07:00:00+09:00", "code": "X"},
             "   ", "[]"]
    result = replay(home, write(tmp_path / "gaps.jsonl", lines))
    assert result.exit_code == 2 and "gaps.jsonl line 5: " in result.stderr
    out = decisions(replay(home, write(tmp_path / "ok.jsonl", lines[:4])))
    assert [d["outcome"] for d in out] == ["approved", "declined"]
    assert entries(home)[0]["wall_ms"] == SEVEN_AM_MS


def test_sync_lines_send_the_approved_entries_to_central(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.sqlite'}"
    data = tmp_path / "data"
    config = DEFAULT.replace("terminal", id="BUS-85-0007")
    home = make_home(tmp_path / "home", config)
    svc = open_service(db, data)
    svc.add_terminal("BUS-85-0007", bytes.fromhex(public_hex(home.terminal_key(config))))
    svc.store.close()
    taps = [("07:00:00", "08a10001"), ("07:00:10", "08a10001"), ("07:01:00", "08a10002"),
            ("07:02:00", "08a10003")]
    later = [("07:20:00", "08a10001"), ("07:20:05", "08a10004")]
    # Approved, counted here: one per card, except a card again within the 30 s window.
    first, second = 3, 2

    def at(t: str) -> str:
        return f"2025-03-04T{t}+09:00"

    scenario = write(tmp_path / "sync.jsonl", [
        *({"at": at(t), "tap": {"uid": uid}} for t, uid in taps),
        {"at": at("07:10:00"), "sync": True},
        *({"at": at(t), "tap": {"uid": uid}} for t, uid in later),
        {"at": at("07:30:00"), "sync": True},
    ])
    with central(db, data) as srv:
        configured = config.replace("central", url=srv.url).replace(
            "keys", central_public_key=srv.verifier)
        (home.path / "terminal.toml").write_text(dumps(configured), encoding="utf-8")
        out = decisions(replay(home, scenario))
    assert [list(line) for line in out] == [KEYS] * 4 + [["sync"]] + [KEYS] * 2 + [["sync"]]
    assert [d["outcome"] for d in out if "sync" not in d].count("approved") == first + second
    syncs = [d["sync"] for d in out if "sync" in d]
    assert isinstance(syncs[0], dict) and isinstance(syncs[1], dict)
    assert (syncs[0]["sent"], syncs[0]["synced_upto"], syncs[0]["head"]) == (first, first, first)
    assert syncs[1]["sent"] == second
    assert syncs[1]["synced_upto"] == first + second
    with Ledger(home.ledger_path) as ledger:
        assert ledger.synced_upto() == ledger.count() == first + second
    svc = open_service(db, data)
    try:
        assert svc.size() == first + second
    finally:
        svc.store.close()


def test_help_names_the_contract() -> None:
    result = CliRunner().invoke(cli, ["replay", "--help"])
    assert result.exit_code == 0
    for word in ('"at"', '"clock"', '"tap"', '"pay"', '"code"', '"refund"', '"void"',
                 '"sync"', "Ledger file (default: the home's ledger)", *KEYS):
        assert word in result.output
