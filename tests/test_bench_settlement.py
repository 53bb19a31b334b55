"""`localpay bench settlement` at a tiny size, on both stores: what it prints is what an
independent sum of the day it fills gives (no timing is asserted: figures are for people)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from localpay.cli import cli
from localpay.cli.bench.settlement import plan
from tests.pg_fixtures import pg_cluster  # noqa: F401

MERCHANTS, PAYMENTS = 50, 2000
#: the default fees, written out again: KSIC 47 retail 25 bp, 56 food 15 bp, the rest 30
BP = {"ksic:47121": 25, "ksic:56111": 15}


def _by_hand() -> dict[str, int]:
    """The day's figures summed straight from what the benchmark fills."""
    p = plan(MERCHANTS, PAYMENTS)
    gross = [0] * MERCHANTS
    refunds = [0] * MERCHANTS
    late = 0
    for m, amount in zip(p.day.merchant, p.day.amount, strict=True):
        gross[m] += amount
    for m, amount in zip(p.late.merchant, p.late.amount, strict=True):
        gross[m] += amount
        late += amount
    for n, amount in p.refunds:
        refunds[p.day.merchant[n]] += amount
    out = {"paid": 0, "held": 0, "carried": 0, "gross": 0, "fees": 0, "net": 0}
    for i, merchant in enumerate(p.merchants):
        fee = gross[i] * BP.get(merchant.category, 30) // 10_000
        net = gross[i] - refunds[i] - fee
        if net <= 0:
            out["carried"] += 1
        elif not merchant.bank_code:
            out["held"] += 1
        else:
            out["paid"] += 1
            out["gross"] += gross[i]
            out["fees"] += fee
            out["net"] += net
    return {**out, "gross_all": sum(gross), "late_gross": late, "refunds": sum(refunds)}


def _invoke(*args: str) -> Any:
    result = CliRunner().invoke(cli, ["bench", "settlement", "--merchants", str(MERCHANTS),
                                      "--payments", str(PAYMENTS), "--runs", "1", *args],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(params=["sqlite", "postgresql"])
def store_args(request: pytest.FixtureRequest) -> list[str]:
    if request.param == "sqlite":
        return ["--store", "sqlite"]
    # the session's cluster (fsync off, as tests run): the command makes its own schema in it
    return ["--store-url", request.getfixturevalue("pg_cluster").url()]


def test_json_figures_are_the_filled_days(store_args: list[str]) -> None:
    want = _by_hand()
    f = json.loads(_invoke(*store_args, "--json").stdout)
    s = f["settled"]
    assert s["paid"] + s["held"] + s["carried"] == s["merchants"] == MERCHANTS
    assert s["held"] > 0 and s["carried"] > 0  # the tiny day still has every status
    assert {k: s[k] for k in want} == want
    assert f["books_balanced"] and f["gross_matches_filled"] and f["settlement_check_clean"]
    assert f["problems"] == []
    (run,) = f["runs"]
    assert run["settle_s"] > 0 and run["floor_scan_s"] > 0 and run["fsyncs_per_s"] > 0
    assert f["settle_s_median"] == run["settle_s"]
    assert f["process_peak_rss_mb"] > 0


def test_text_output_prints_the_figures(tmp_path: Path) -> None:
    want = _by_hand()
    fees = tmp_path / "fees.toml"
    # the default rules, from a file: the same figures
    fees.write_text("[settlement]\nfee_bp = 30\n[settlement.category_fee_bp]\n"
                    '"ksic:47" = 25\n"ksic:56" = 15\n', encoding="utf-8")
    out = _invoke("--store", "sqlite", "--fees", str(fees)).stdout
    assert (f"merchants paid {want['paid']:,}, held {want['held']:,}, carried "
            f"{want['carried']:,} (of {MERCHANTS})") in out
    assert f"gross {want['gross_all']:,} (late {want['late_gross']:,})" in out
    assert (f"paid merchants: gross {want['gross']:,}, fees {want['fees']:,}, "
            f"net {want['net']:,}") in out
    assert "median" in out and "books balanced: yes" in out and "PROBLEM" not in out


def test_fewer_payments_than_merchants_is_refused() -> None:
    result = CliRunner().invoke(cli, ["bench", "settlement", "--merchants", "10",
                                      "--payments", "5", "--store", "sqlite"])
    assert result.exit_code == 2 and "--payments" in result.output
