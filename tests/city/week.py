"""One week of the city, start to end: run it, check it, write the report (the part that
``python -m tests.soak_city`` and ``tests/test_city_week.py`` share)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.city import report
from tests.city.check import check
from tests.city.controls import run_controls
from tests.city.faults import FaultRates
from tests.city.population import CityPlan
from tests.city.world import CityWorld, Progress


def run_week(folder: Path, plan: CityPlan, *, day_s: float, rates: FaultRates,
             report_dir: Path, progress: Progress | None = None,
             drain_s: float = 90.0) -> dict[str, Any]:
    """The report's figures; ``figures["differences"]`` lists every check that failed."""
    began = time.monotonic()
    world = CityWorld(folder, plan, day_s=day_s, rates=rates, progress=progress,
                      drain_s=drain_s)
    try:
        world.run()
        world.final_sync()
        world.stop_central()
        if progress is not None:
            progress("checking")
        findings = check(world)
        series = report.lag_series(world, findings.batches)
        fig = report.figures(world, findings, series, time.monotonic() - began)
        if not findings.differences:
            caught = run_controls(world)
            fig["controls_caught"] = caught
            if not all(caught.values()):
                fig["differences"].append(f"negative controls not caught: {caught}")
        report.write(report_dir, world, fig, series)
        return fig
    finally:
        world.close()
