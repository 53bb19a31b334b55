"""Fraud rules on ingest and the reconciliation report (``localpay central report``), on both
stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import open_service
from central.reconcile import report
from central.rules import FraudConfig
from central.service import CentralLog
from firmware_cfg.keys import public_hex
from localpay.errors import ConfigError
from tests.pg_fixtures import pg_cluster, signed_entries, store_url  # noqa: F401

WALL0 = 1_790_000_000_000  # 2026-09-21 in Seoul


@pytest.fixture
def svc(store_url: str, tmp_path: Path) -> Iterator[CentralLog]:  # noqa: F811
    service = open_service(store_url, tmp_path / "data")
    yield service
    service.store.close()


def _term(svc: CentralLog, tid: str, lat: float | None = None,
          lon: float | None = None) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    svc.add_terminal(tid, bytes.fromhex(public_hex(key)), lat=lat, lon=lon)
    return key


def _flags(svc: CentralLog) -> list[tuple[str, str, int]]:
    with svc.store.tx(write=False) as tx:
        return [(str(r[0]), str(r[1]), int(r[2])) for r in
                tx.all("SELECT rule, terminal_id, seq FROM flags ORDER BY log_index, rule")]


def test_travel_rule(svc: CentralLog) -> None:
    card = "a" * 64
    goyang = _term(svc, "GOYANG", 37.658, 126.832)
    busan = _term(svc, "BUSAN", 35.180, 129.076)
    near = _term(svc, "GOYANG-2", 37.660, 126.835)
    svc.ingest("GOYANG", signed_entries(goyang, "GOYANG", 1, cards=[card], wall0=WALL0))
    svc.ingest("GOYANG-2", signed_entries(near, "GOYANG-2", 1, cards=[card], wall0=WALL0 + 60_000))
    assert _flags(svc) == []
    svc.ingest("BUSAN", signed_entries(busan, "BUSAN", 1, cards=[card], wall0=WALL0 + 600_000))
    assert _flags(svc) == [("travel", "BUSAN", 1)]
    assert svc.deny_delta(0)["add"] == {card: "fraud:travel"}


def test_round_amount_burst_at_one_merchant(svc: CentralLog) -> None:
    shop = _term(svc, "SHOP")
    cards = [f"{i:064x}" for i in range(6)]
    odd = signed_entries(shop, "SHOP", 3, cards=cards, amount=12_340, kind="payment",
                         place="M7", wall0=WALL0, step_ms=30_000)
    svc.ingest("SHOP", odd)
    assert _flags(svc) == []
    burst = signed_entries(shop, "SHOP", 6, seq0=4, prev=odd[-1].entry_hash, cards=cards,
                           amount=50_000 - 10_000, kind="payment", place="M7",
                           wall0=WALL0 + 100_000, step_ms=30_000)
    svc.ingest("SHOP", burst[:3])
    svc.ingest("SHOP", burst[3:])
    assert [f[2] for f in _flags(svc) if f[0] == "round_burst"] == [8, 9]
    assert svc.deny_delta(0)["add"] == {}  # round_burst flags only, by default


def test_just_below_limit_amounts(svc: CentralLog) -> None:
    till = _term(svc, "TILL")
    card = "b" * 64
    e = signed_entries(till, "TILL", 4, cards=[card], amount=49_500, kind="payment",
                       place="M1", wall0=WALL0, step_ms=600_000)
    svc.ingest("TILL", e)
    assert [f[2] for f in _flags(svc) if f[0] == "below_limit"] == [3, 4]
    assert svc.deny_delta(0)["add"] == {card: "fraud:below_limit"}


def test_rules_config_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[travel]\nmax_kmh = 300\ndeny = false\n[round_burst]\nenabled = false\n")
    cfg = FraudConfig.load(path)
    assert cfg.travel.max_kmh == 300.0 and not cfg.travel.deny and not cfg.round_burst.enabled
    for bad in ("[travel]\nspeed = 1\n", "[nope]\n", "[travel]\nmax_kmh = 'fast'\n", "x ="):
        path.write_text(bad)
        with pytest.raises(ConfigError):
            FraudConfig.load(path)


def test_report_shows_differences_and_overdrafts(svc: CentralLog, store_url: str,  # noqa: F811
                                                 tmp_path: Path) -> None:
    k1, k2 = _term(svc, "T1"), _term(svc, "T2")
    card = "c" * 64
    svc.set_balances({card: 3000})
    day = svc.day_of(WALL0)
    svc.ingest("T1", signed_entries(k1, "T1", 2, cards=[card], amount=1500, kind="payment",
                                    place="M1", wall0=WALL0))
    svc.ingest("T2", signed_entries(k2, "T2", 3, cards=[card], amount=1000, kind="payment",
                                    place="M2", wall0=WALL0))
    svc.report_totals("T1", day, {"payment": (2, 3000)})
    svc.report_totals("T2", day, {"payment": (4, 4000)})  # one entry never reached central
    rep = report(svc, day)
    assert [(d.terminal_id, d.central_count, d.terminal_count) for d in rep.differences] == [
        ("T2", 3, 4)]
    assert [(o["terminal_id"], o["seq"], o["balance_after"]) for o in rep.overdrafts] == [
        ("T2", 1, -1000), ("T2", 2, -2000), ("T2", 3, -3000)]
    from localpay.cli import cli

    result = CliRunner().invoke(cli, ["central", "report", "--db", store_url, "--data",
                                      str(tmp_path / "data"), "--date", day])
    assert result.exit_code == 1, result.output
    assert "DIFFERENCE T2 payment: central 3 / 3,000 won, terminal 4 / 4,000 won" in result.output
    assert result.output.count("OVERDRAFT") == 3
    result = CliRunner().invoke(cli, ["central", "report", "--db", store_url, "--data",
                                      str(tmp_path / "data"), "--date", day, "--json"])
    doc = json.loads(result.output)
    assert doc["clean"] is False and len(doc["lines"]) == 2
    svc.report_totals("T2", day, {"payment": (3, 3000)})
    assert report(svc, day).differences == []
