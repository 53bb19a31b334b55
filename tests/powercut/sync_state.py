"""Power cuts while the sync client saves its state: the state before or after, never a mix.

The state kept beside the ledger (``ledger.sqlite.sync.json``) holds the last checkpoint the
terminal verified, which every later checkpoint must be consistent with: a cut that lost it
would let a central log that rewrote its history pass again. The workload
(``python -m tests.powercut.sync_state HOME SEED``) is the product's
:class:`~sync.client.SyncClient` on a home of the power-cut file system, doing what a sync
round does with its state, round after round: load it (``_load_state``), move it on, and
save it (``_save_state``), printing ``saved N`` once the save returned. State N holds a
checkpoint of a log of size N signed by a log key drawn from the seed, so the checker can
make every state again on its own. The service is never called.

After the cut the checker loads the state with the client's own loader and checks it is
state N (the last reported saved) or N + 1 (the one in flight), whole. The control
``NODIRSYNC`` (``--weak``) runs the same workload with the directory fsync switched off
(:mod:`tests.powercut.weak_sync`): the rename then may not survive, and the check must see
the state go back.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from localpay.errors import LocalpayError
from sync.checkpoint import Checkpoint, NoteSigner
from sync.client import SyncClient
from tests.powercut.harness import World

#: a save is one write call (two when the temporary file left by a cut is truncated)
MAX_WRITES = 40
LEDGER = "ledger.sqlite"


def _signer(seed: int) -> NoteSigner:
    secret = hashlib.sha256(f"sync-state log key {seed}".encode()).digest()
    return NoteSigner("central.example", Ed25519PrivateKey.from_private_bytes(secret))


def state_for(n: int, signer: NoteSigner) -> dict[str, Any]:
    """State N, shaped as a sync round leaves it (Ed25519 signs deterministically)."""
    if n == 0:
        return {}
    root = hashlib.sha256(n.to_bytes(8, "big")).digest()
    return {
        "checkpoint": Checkpoint(signer.name, n, root).sign(signer),
        # a week of days whose totals are still to be reported: the file spans sectors
        "days_unreported": [f"2027-03-{d:02d}" for d in range(1 + n % 7, 29)],
        "balances_version": n,
        "config_version": n // 10,
        "status_sent": f"0.1.0 round {n}",
    }


def _client(home: Path, signer: NoteSigner) -> SyncClient:
    # the address is never called: only the state kept beside the ledger is used
    return SyncClient(home / LEDGER, Ed25519PrivateKey.generate(), "http://127.0.0.1:9",
                      signer.verifier, max_retries=0)


def workload(home: Path, seed: int) -> None:
    signer = _signer(seed)
    client = _client(home, signer)
    state = client._load_state()
    n = int(state.get("balances_version", 0))
    while True:
        n += 1
        state = client._load_state()
        state.update(state_for(n, signer))
        client._save_state(state)
        sys.stdout.write(f"saved {n}\n")
        sys.stdout.flush()


@dataclass
class StateCut:
    index: int
    mode: str
    sync: str
    cut_at: int
    saved: int  # the last state reported saved before the cut (or found at the last check)
    outcome: str  # "old" | "new" (the one in flight) | "broken"
    problems: list[str]

    @property
    def survived(self) -> bool:
        return not self.problems


class StateWorld(World):
    def __init__(self, base: Path, seed: int, sync: str = "FULL") -> None:
        super().__init__(base, f"sync-state-{sync.lower()}", sync, seed, MAX_WRITES)
        self.signer = _signer(seed)
        self.saved = 0

    def setup(self) -> None:
        """The terminal's home folder, durable, with no sync state yet."""
        self.disk_home.mkdir(parents=True)

    def cut_state(self, mode: str) -> StateCut:
        self.rounds += 1
        cut_at = self.rng.randint(1, self.max_writes)
        fs_seed = self.rng.randrange(2**32)
        command = [sys.executable, "-m", "tests.powercut.sync_state",
                   str(self.mount / "home"), str(self.seed)]
        if self.sync != "FULL":
            command += ["--weak", self.sync]
        _figures, printed = self.run_to_cut(command, cut_at, mode, fs_seed)
        for line in printed:
            if line.startswith("saved ") and line.endswith("\n"):
                self.saved = max(self.saved, int(line.split()[1]))
        return self.check_state(mode, cut_at)

    def check_state(self, mode: str, cut_at: int) -> StateCut:
        client = _client(self.disk_home, self.signer)
        saved = self.saved
        state: dict[str, Any] | None = None
        try:
            state = client._load_state()
        except LocalpayError as error:
            problem = f"the state does not load: {type(error).__name__}: {error}"
        finally:
            client.close()
        if state == state_for(saved, self.signer):
            return StateCut(self.rounds, mode, self.sync, cut_at, saved, "old", [])
        if state == state_for(saved + 1, self.signer):
            self.saved = saved + 1
            return StateCut(self.rounds, mode, self.sync, cut_at, saved, "new", [])
        if state is not None:
            problem = (f"the state is neither state {saved} (the last reported saved) nor "
                       f"{saved + 1}: it holds state {state.get('balances_version', 0)}'s "
                       "version")
        # go on from what the disk holds, as the terminal would
        self.saved = int((state or {}).get("balances_version", 0))
        return StateCut(self.rounds, mode, self.sync, cut_at, saved, "broken", [problem])


def run_state_cuts(base: Path, *, seed: int, cuts: int, control_cuts: int) -> tuple[
        list[StateCut], float]:
    """``cuts`` cuts of the real state save and ``control_cuts`` of its ``NODIRSYNC``
    control, each alternating drop and torn."""
    started = time.monotonic()
    results: list[StateCut] = []
    for sync, count in (("NODIRSYNC", control_cuts), ("FULL", cuts)):
        if not count:
            continue
        world = StateWorld(base, seed, sync)
        world.setup()
        for i in range(count):
            results.append(world.cut_state("drop" if i % 2 == 0 else "torn"))
    return results, time.monotonic() - started


def summary_lines(results: list[StateCut], seconds: float) -> list[str]:
    full = [r for r in results if r.sync == "FULL"]
    control = [r for r in results if r.sync != "FULL"]
    counts = {k: sum(r.outcome == k for r in full) for k in ("old", "new", "broken")}
    out = [f"  sync state save: {sum(r.survived for r in full)} of {len(full)} cuts left one "
           f"whole state ({counts['old']} the last saved, {counts['new']} the one in flight, "
           f"{counts['broken']} neither) in {seconds:.1f} s; "
           f"{max((r.saved for r in full), default=0)} states saved"]
    if control:
        out.append(f"  control sync state without the directory fsync: caught "
                   f"{sum(not r.survived for r in control)} of {len(control)} cuts")
    return out


def main(argv: list[str]) -> None:
    if len(argv) == 4 and argv[2] == "--weak":
        from tests.powercut.weak_sync import weaken

        weaken(argv[3])
    workload(Path(argv[0]), int(argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
