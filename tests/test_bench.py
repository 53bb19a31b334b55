"""`localpay bench` runs end to end and reports every figure the README quotes; running it
twice on the same folder works (no timing is asserted: figures are for people to read)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from localpay.cli import cli


def test_bench_twice_on_one_folder(tmp_path: Path) -> None:
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(cli, ["bench", "--sizes", "100,300", "--taps", "100",
                                     "--dir", str(tmp_path)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        figures = json.loads(result.stdout)
        for key in ("p50_ms", "p99_ms", "max_ms", "taps_per_s", "fsyncs_per_s", "ratio",
                    "p99_growth", "rss_mb"):
            assert figures[key] > 0, key
        assert [s["ledger_entries_before"] for s in figures["stages"]] == [100, 300]
        assert all(s["approved"] == 100 and s["declined"] == 0 for s in figures["stages"])
        assert figures["wallet_qr"]["approved"] == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench-ledger.sqlite"]


def test_bench_payout_pays_every_credited_point_once() -> None:
    result = CliRunner().invoke(cli, ["bench", "payout", "--cards", "300"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    f = json.loads(result.stdout)
    # every point credited is either paid or held; the file has one row per paid card
    assert f["paid_points"] + f["held_points"] == f["points_credited"] > 0
    assert f["paid_cards"] + f["held_cards"] == f["cards"] == 300
    assert f["settlement_cards"] == f["paid_cards"]
    assert f["total_s"] >= 0 and f["fsyncs_per_s"] > 0
