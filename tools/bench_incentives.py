"""Incentive crediting for a Goyang-sized day on PostgreSQL (a throwaway cluster) or SQLite.

``python tools/bench_incentives.py [--events N] [--follow backlog|batch] [--chunk N]
[--store postgresql|sqlite|URL]``; see
:mod:`sync.server.bench_incentives` for what is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sync.server.bench_incentives import bench_incentives  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench_incentives")
    parser.add_argument("--events", type=int, default=1_500_000)
    parser.add_argument("--round-s", type=int, default=3600,
                        help="sync round: a terminal's entries of this many seconds per batch")
    parser.add_argument("--follow", choices=("backlog", "batch"), default="backlog",
                        help="credit the day's log in chunks, or after every batch")
    parser.add_argument("--chunk", type=int, default=5000, help="log entries per transaction")
    parser.add_argument("--store", default="postgresql",
                        help="postgresql (a throwaway local cluster), sqlite, or a store URL")
    args = parser.parse_args()
    cluster = None
    url: str | None = args.store
    if args.store == "postgresql":
        from tests.pg_fixtures import PgCluster

        cluster = PgCluster(durable=True)
        url = cluster.new_database()
    elif args.store == "sqlite":
        url = None
    try:
        result = bench_incentives(args.events, url, round_s=args.round_s, follow=args.follow,
                                  chunk=args.chunk)
    finally:
        if cluster is not None:
            cluster.destroy()
    result["machine"] = {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
