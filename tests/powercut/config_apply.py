"""Power cuts in the middle of a signed config install: the old config or the new one.

A provisioned home (operator key in its config) on the power-cut file system installs
signed bundles one after another (:mod:`tests.powercut.apply_child`, the real
``terminal.config_update.install``), each changing the adult fare, until a cut at a random
write. The checker then reads the home as the terminal does at boot and checks:

- the config loads, and equals exactly the config of one version: the last one reported
  installed, or the one in flight at the cut; never another, never a mix of two; and the
  installed version (``config-version``, written last) is one of those two;
- the terminal boots on it.

An install cut short is finished or redone by the next round, which installs the next
versions on what the cut left.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_cfg import bundle as bundles
from firmware_cfg.config import DEFAULT, Config, dumps
from firmware_cfg.keys import public_hex
from localpay.errors import LocalpayError
from terminal.home import Home, open_terminal
from tests.powercut.harness import World

TERMINAL_ID = "BUS-85-0020"
#: bundles made ahead; a round installs a handful (each install is ~15 write calls)
VERSIONS = 4000


@dataclass
class ConfigCut:
    index: int
    mode: str
    cut_at: int
    applied: int  # the last version reported installed before the cut
    found: int  # the installed version the disk kept
    outcome: str  # "old" | "new" (the one in flight) | "broken"
    problems: list[str]

    @property
    def survived(self) -> bool:
        return not self.problems


def _config(version: int, operator: Ed25519PrivateKey) -> Config:
    base = DEFAULT.replace("terminal", id=TERMINAL_ID).replace(
        "keys", operator_public_key=public_hex(operator.public_key()))
    return base if version == 0 else base.replace("fares", adult=1000 + version)


class ConfigWorld(World):
    def __init__(self, base: Path, seed: int, max_writes: int = 120) -> None:
        super().__init__(base, "config-apply", "FULL", seed, max_writes)
        self.operator = Ed25519PrivateKey.generate()
        self.bundle_dir = base / "config-apply" / "bundles"
        self.applied = 0
        self._made = 0

    def setup(self) -> None:
        """A provisioned home, made durable before the first cut (as enrolment left it)."""
        home = Home(self.disk_home)
        home.path.mkdir(parents=True)
        home.config_path.write_text(dumps(_config(0, self.operator)), encoding="utf-8")
        terminal = open_terminal(home, home.config(), create_keys=True, strict=True)
        assert terminal.ledger is not None
        terminal.ledger.close()
        self.bundle_dir.mkdir(parents=True)

    def _bundles_up_to(self, version: int) -> None:
        while self._made < version:
            self._made += 1
            data = bundles.make(self.operator, TERMINAL_ID, self._made,
                                dumps(_config(self._made, self.operator)))
            (self.bundle_dir / f"{self._made}.bundle").write_bytes(data)

    def cut_config(self, mode: str) -> ConfigCut:
        self.rounds += 1
        cut_at = self.rng.randint(1, self.max_writes)
        fs_seed = self.rng.randrange(2**32)
        # more bundles than a round can install before its cut
        self._bundles_up_to(min(VERSIONS, self.applied + self.max_writes))
        _figures, printed = self.run_to_cut(
            [sys.executable, "-m", "tests.powercut.apply_child", str(self.mount / "home"),
             str(self.bundle_dir)], cut_at, mode, fs_seed)
        for line in printed:
            if line.startswith("applied ") and line.endswith("\n"):
                self.applied = max(self.applied, int(line.split()[1]))
        return self.check_config(mode, cut_at)

    def check_config(self, mode: str, cut_at: int) -> ConfigCut:
        home = Home(self.disk_home)
        problems: list[str] = []
        found = -1
        outcome = "broken"
        try:
            found = bundles.current_version(home.path)
            config = home.config()
        except LocalpayError as error:
            problems.append(f"the config does not load: {type(error).__name__}: {error}")
        else:
            # the version file is written last: a cut just before it leaves the new config
            # whole with the old number, and the next start finishes the install
            whole = [v for v in (self.applied, self.applied + 1)
                     if config == _config(v, self.operator)]
            if not whole:
                problems.append(f"the config is neither version {self.applied}'s (the last "
                                f"reported installed) nor the next one's: adult fare "
                                f"{config.fares.adult}, installed version {found}")
            elif found not in (whole[0] - 1, whole[0]):
                problems.append(f"installed version {found}, but the config is version "
                                f"{whole[0]}'s")
            else:
                outcome = "old" if whole[0] == self.applied else "new"
                self.applied = whole[0]
            try:
                terminal = open_terminal(home, config, strict=True)
            except LocalpayError as error:
                problems.append(f"the terminal does not boot: {type(error).__name__}: {error}")
            else:
                if terminal.ledger is not None:
                    terminal.ledger.close()
        return ConfigCut(self.rounds, mode, cut_at, self.applied, found, outcome, problems)


def run_config_cuts(base: Path, *, seed: int, cuts: int) -> tuple[list[ConfigCut], float]:
    """``cuts`` cuts of one provisioned home installing bundles, alternating drop and torn."""
    started = time.monotonic()
    world = ConfigWorld(base, seed)
    world.setup()
    results: list[ConfigCut] = []
    try:
        for i in range(cuts):
            result = world.cut_config("drop" if i % 2 == 0 else "torn")
            results.append(result)
            if not result.survived:
                break  # what it left is no home to go on from
    finally:
        if os.path.ismount(world.mount):
            subprocess.run(["fusermount3", "-u", "-z", str(world.mount)], check=False)
    return results, time.monotonic() - started


def summary_lines(results: list[ConfigCut], seconds: float) -> list[str]:
    counts = {k: sum(r.outcome == k for r in results) for k in ("old", "new", "broken")}
    return [f"  config install: {sum(r.survived for r in results)} of {len(results)} cuts "
            f"left one whole config ({counts['old']} the last installed, {counts['new']} the "
            f"one in flight, {counts['broken']} neither) in {seconds:.1f} s; "
            f"{max((r.applied for r in results), default=0)} versions installed"]
