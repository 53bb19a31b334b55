"""``make soak``: a thousand power cuts of the real ledger, and the controls that must fail.

Run from the repository's root: ``python -m tests.soak_power_cuts [--cuts N] [--seed S]``.
Prints the seed first (``--seed S`` replays the same cuts), a line every 100 cuts, then the
cuts survived and the controls caught. Exits 1 when a cut of the product's code lost a
reported approval or broke the terminal (on a set-up home or on a first boot, its keys being
made), when a control (``synchronous=NORMAL`` and ``OFF``, a first boot and a sync state
save without the directory fsync) was never caught, when a cut mid-install left anything
but one whole signed config (the old or the new), or when a cut while the sync client saved
its state left anything but the state before or after.
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.powercut import config_apply, sync_state
from tests.powercut.harness import RENEW_EVERY, Cut, run_cuts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=1000,
                        help="cuts of the real ledger on a set-up home, half drop and half "
                             "torn (1000)")
    parser.add_argument("--control-cuts", type=int, default=20,
                        help="cuts of each control: synchronous=NORMAL, OFF, and a first boot "
                             "without the directory fsync (20)")
    parser.add_argument("--first-boot-cuts", type=int, default=40,
                        help="cuts of a fresh home during its first run (40)")
    parser.add_argument("--config-cuts", type=int, default=100,
                        help="cuts of a terminal installing signed config bundles (100)")
    parser.add_argument("--state-cuts", type=int, default=50,
                        help="cuts of the sync client saving its state, and a fifth as many "
                             "of its control without the directory fsync (50)")
    parser.add_argument("--seed", type=int, default=None, help="replay this seed")
    parser.add_argument("--workers", type=int, default=2, help="worlds cut at a time (2)")
    parser.add_argument("--max-writes", type=int, default=2000,
                        help="a cut falls at a write call drawn from 1..this (2000)")
    parser.add_argument("--renew-every", type=int, default=RENEW_EVERY,
                        help=f"a world starts a fresh home after this many cuts ({RENEW_EVERY})")
    parser.add_argument("--dir", type=Path, default=None,
                        help="work here and keep it (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    # an install cut short is logged as a warning at every boot that finds it: expected here
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    print(f"power cut soak: seed {seed} (replay: make soak SOAK_ARGS='--seed {seed}')",
          flush=True)
    base = args.dir or Path(tempfile.mkdtemp(prefix="powercut-"))
    base.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    done = {"n": 0}

    def progress(cut: Cut) -> None:
        done["n"] += 1
        if not cut.survived and cut.sync == "FULL":
            print(f"  FAILED {cut.world} cut {cut.index} ({cut.mode} at write {cut.cut_at}, "
                  f"{cut.reported} reported): " + "; ".join(cut.problems), flush=True)
        if done["n"] % 100 == 0:
            print(f"  {done['n']} cuts, {time.monotonic() - started:.0f} s", flush=True)

    try:
        summary = run_cuts(base, seed=seed, full_cuts=args.cuts,
                           control_cuts=args.control_cuts,
                           first_boot_cuts=args.first_boot_cuts, workers=args.workers,
                           max_writes=args.max_writes, renew_every=args.renew_every,
                           progress=progress)
        configs, config_seconds = config_apply.run_config_cuts(
            base / "config", seed=seed, cuts=args.config_cuts)
        states, state_seconds = sync_state.run_state_cuts(
            base / "state", seed=seed, cuts=args.state_cuts,
            control_cuts=(args.state_cuts + 4) // 5)
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    print("\n".join(summary.lines()))
    print("\n".join(config_apply.summary_lines(configs, config_seconds)))
    print("\n".join(sync_state.summary_lines(states, state_seconds)))
    for c in configs:
        if not c.survived:
            print(f"  FAILED config cut {c.index} ({c.mode} at write {c.cut_at}): "
                  + "; ".join(c.problems))
    state_full = [s for s in states if s.sync == "FULL"]
    for s in state_full:
        if not s.survived:
            print(f"  FAILED sync state cut {s.index} ({s.mode} at write {s.cut_at}): "
                  + "; ".join(s.problems))
    checks = {
        "every cut of the product's ledger survived":
            not summary.failures and summary.survived == args.cuts
            and len(summary.first_boot) == args.first_boot_cuts,
        "every control was caught":
            not args.control_cuts
            or all(summary.caught(s) >= 1 for s in ("NORMAL", "OFF", "NODIRSYNC")),
        "every config cut left one whole config":
            len(configs) == args.config_cuts and all(c.survived for c in configs),
        "every sync state cut left the state before or after":
            len(state_full) == args.state_cuts and all(s.survived for s in state_full),
        "the sync state control was caught":
            not args.state_cuts or any(not s.survived for s in states if s.sync != "FULL"),
    }
    for what, ok in checks.items():
        if not ok:
            print(f"FAILED: not true that {what} (seed {seed})")
    print(f"power cut soak: {'passed' if all(checks.values()) else 'FAILED'} in "
          f"{time.monotonic() - started:.0f} s (seed {seed})", flush=True)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
