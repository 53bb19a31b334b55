"""A short week of the city (issue #20; ``python -m tests.soak_city`` runs the full one):
three validators and two tills, each its own process on its own home provisioned against
``localpay central serve`` on PostgreSQL, two simulated days (a Wednesday that earns bus
points and a public holiday that does not), and each kind of fault twice: network cuts
and delays through the fault proxy, power cuts (SIGKILL), boots with the clock at the
epoch, central restarts and PostgreSQL restarts.

The checks (:mod:`tests.city.check`) must find no difference, and the four negative
controls planted after them (:mod:`tests.city.controls`) must each be caught.
``LOCALPAY_CITY_SEED`` replays a seed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.city.faults import KINDS, FaultRates
from tests.city.population import CityPlan
from tests.city.week import run_week

SEED = int(os.environ.get("LOCALPAY_CITY_SEED") or 20270512)


@pytest.mark.slow
def test_a_short_city_week_loses_nothing_and_counts_nothing_twice(tmp_path: Path) -> None:
    plan = CityPlan.make(SEED, 3, 2, 2, "2027-05-12", tap_gap_s=0.4, sync_interval_s=3)
    fig = run_week(tmp_path / "city", plan, day_s=20.0, rates=FaultRates(1, 1, 1, 1, 1, 1),
                   report_dir=tmp_path / "report", drain_s=45.0)
    assert fig["differences"] == [] and fig["problems"] == [], (SEED, fig["differences"],
                                                                fig["problems"])
    assert fig["controls_caught"] == {k: True for k in fig["controls_caught"]}
    assert len(fig["controls_caught"]) == 4
    assert fig["faults_injected"] == {kind: 2 for kind in KINDS}, fig["faults_injected"]
    assert fig["faults_failed"] == {}
    checks = fig["checks"]
    # the run did what it is there to prove: approvals, each proved, points of each rule
    assert checks["approvals_reported"] > 100
    assert checks["approvals_proved"] == checks["approvals_reported"]
    assert checks["clock_unknown_entries"] > 0, "no epoch boot took an approval"
    assert {"bus", "local_food"} <= set(checks["points_by_rule"])
    assert fig["points_reconciled"] == checks["points_credited"] > 0
    assert checks["checkpoints_verified"] >= len(plan.terminals())
    assert fig["terminal_boots"] == len(plan.terminals()) + 4
    assert fig["worst_sync_lag_s"] > 0
    assert checks["rss_terminals_compared"] >= 3
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["seed"] == SEED and len(saved["faults"]) == 12
    assert (tmp_path / "report" / "week.png").stat().st_size > 5000
