"""``make soak``: a thousand ``kill -9``s of a running terminal and of the central service.

Run from the repository's root: ``python -m tests.soak_kills [--cycles N] [--seed S]``.
Prints the seed first (``--seed S`` replays the same victims and delays), a line every 100
kills, then the kills survived and the figures (:mod:`tests.kills` says what a cycle does
and what is checked). Exits 1 when an approval the kiosk reported was lost, an entry
reached the central chain twice or not at all, the totals differ, or an entry was credited
twice.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from localpay.pgserver import PgCluster
from tests.kills import Figures, KillCheckError, KillWorld


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1000, help="kills, mixed (1000)")
    parser.add_argument("--seed", type=int, default=None, help="replay this seed")
    parser.add_argument("--worlds", type=int, default=3,
                        help="independent worlds (service, database, terminal) killed side by "
                             "side; the cycles are shared out, world i takes seed S+i (3: while "
                             "one world waits on a start, another computes)")
    parser.add_argument("--workers", type=int, default=1,
                        help="central serve --workers; a kill takes the whole group (1)")
    parser.add_argument("--max-wait", type=float, default=0.5,
                        help="a kill falls up to this many seconds after taps flow (0.5: a "
                             "few taps and a sync land in it)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="work here and keep it (default: a temporary folder, removed "
                             "unless the run fails)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    print(f"kill soak: seed {seed} (replay: python -m tests.soak_kills --seed {seed})",
          flush=True)
    base = args.dir or Path(tempfile.mkdtemp(prefix="kills-"))
    base.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    lock = threading.Lock()
    done = {"n": 0}

    def progress(n: int, figures: Figures) -> None:
        with lock:
            done["n"] += 1
            if done["n"] % 100 == 0:
                print(f"  {done['n']} kills, {time.monotonic() - started:.0f} s", flush=True)

    share = [args.cycles // args.worlds + (i < args.cycles % args.worlds)
             for i in range(args.worlds)]
    results: list[Figures | BaseException | None] = [None] * args.worlds
    cluster = PgCluster()

    def one(i: int) -> None:
        try:
            world = KillWorld(base / f"world-{i}", cluster.new_database(), seed + i,
                              workers=args.workers, max_wait_s=args.max_wait)
            results[i] = world.run(share[i], progress)
        except BaseException as err:  # reported below, in the main thread
            results[i] = err

    try:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(args.worlds)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        cluster.destroy()
    failures = [(i, r) for i, r in enumerate(results) if not isinstance(r, Figures)]
    for i, err in failures:
        what = "FAILED" if isinstance(err, KillCheckError) else "BROKEN"
        print(f"{what} world {i} (seed {seed + i}, kept in {base / f'world-{i}'}): {err!r}",
              flush=True)
    if failures:
        return 1
    if args.dir is None:
        shutil.rmtree(base, ignore_errors=True)
    figures = [r for r in results if isinstance(r, Figures)]
    total = {k: sum(getattr(f, k) for f in figures)
             for k in ("cycles", "terminal_kills", "central_kills", "reported",
                       "ledger_entries", "central_entries", "synced_by_kiosk", "credits")}
    seconds = time.monotonic() - started
    print(f"kills survived: {total['terminal_kills'] + total['central_kills']} "
          f"({total['terminal_kills']} of localpay run, {total['central_kills']} of central "
          f"serve; {total['cycles']} cycles and each world's last kill) in {seconds:.0f} s "
          f"over {args.worlds} worlds; {total['reported']} approvals reported, "
          f"{total['ledger_entries']} entries in the ledgers and {total['central_entries']} "
          f"on the central chains, each once; {total['credits']} credited once each; worst "
          f"restart {max(f.worst_restart_s for f in figures):.1f} s", flush=True)
    print(json.dumps({"seed": seed, "seconds": round(seconds, 1), **total,
                      "worlds": [f.as_dict() for f in figures]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
