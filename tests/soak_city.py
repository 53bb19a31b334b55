"""A simulated week of a city (issue #20), for ``make soak``:
``python -m tests.soak_city [--seed S] [--days 7] [--validators 50] [--tills 20]
[--report DIR]``.

Each terminal is its own process on its own provisioned home, one central service runs on
PostgreSQL, and faults come on a schedule drawn from the seed (printed first: the same seed
replays the same schedule). Exits non-zero on any difference; the report (figures, faults,
a plot of throughput and sync lag) goes to DIR (default: a new temporary folder).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.city.faults import FaultRates
from tests.city.population import CityPlan
from tests.city.week import run_week

SEED_ENV = "LOCALPAY_CITY_SEED"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.soak_city", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("--seed", type=int, default=None,
                    help=f"replay a run (default: ${SEED_ENV}, else a fresh seed)")
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--validators", type=int, default=50)
    ap.add_argument("--tills", type=int, default=20)
    ap.add_argument("--report", type=Path, default=None, help="where the report goes")
    ap.add_argument("--day-seconds", type=float, default=110.0,
                    help="real seconds per simulated day")
    ap.add_argument("--first-day", default="2027-05-10",
                    help="the first simulated day (a Monday; Thursday 13 May 2027 is a "
                         "public holiday)")
    ap.add_argument("--tap-gap", type=float, default=0.6,
                    help="real seconds between two presentations at a validator (tills: "
                         "twice as long)")
    ap.add_argument("--sync-interval", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the homes, logs and traces")
    args = ap.parse_args(argv)
    seed = args.seed
    if seed is None:
        seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(2**31))
    print(f"city week seed {seed} (replay: python -m tests.soak_city --seed {seed})",
          flush=True)
    report_dir = args.report or Path(tempfile.mkdtemp(prefix="localpay-city-report-"))
    folder = Path(tempfile.mkdtemp(prefix="localpay-city-"))
    plan = CityPlan.make(seed, args.validators, args.tills, args.days, args.first_day,
                         tap_gap_s=args.tap_gap, sync_interval_s=args.sync_interval)
    began = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - began:7.1f} s] {message}", flush=True)

    try:
        fig = run_week(folder, plan, day_s=args.day_seconds, rates=FaultRates(),
                       report_dir=report_dir, progress=progress)
    finally:
        if args.keep:
            print(f"homes, logs and traces kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    print((report_dir / "report.txt").read_text(), end="")
    print(f"entries reconciled: {fig['entries_reconciled']:,}; points reconciled: "
          f"{fig['points_reconciled']:,}; worst sync lag: {fig['worst_sync_lag_s']} s")
    print(f"report: {report_dir}")
    if fig["differences"] or fig["problems"]:
        print(f"FAILED: {len(fig['differences'])} differences, {len(fig['problems'])} "
              f"problems (seed {seed})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
