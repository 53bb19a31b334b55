"""Run the real ``localpay simulate --trace`` on the power-cut file system, cut, and check.

A *world* is one terminal home on its own backing folder, kept across all of its cuts, so
each round also starts from a ledger that a previous cut left behind. One round:

1. mount :mod:`tests.powercut.fs` with a cut at the N-th write call (N drawn from the seed);
2. start ``localpay --home MOUNT/home simulate --taps 1000000 --trace`` (the controls run the
   same command through :mod:`tests.powercut.weak_sync`), collecting the approvals it reports:
   it reports one only after ``Ledger.append`` returned, i.e. after the commit was durable;
3. when the N-th write arrives it is blocked; the workload is killed with SIGKILL while it
   waits in that write, the write fails, and the file system is unmounted, which rolls the
   backing folder back to what the disk holds (``drop`` or ``torn``);
4. the checker opens the home as the terminal does at boot (``open_terminal``, strict) on
   the rolled-back folder and checks: every approval ever reported is there with its hash;
   the whole chain verifies; entries never reported are at most the one commit in flight at
   the cut (seq = last reported + 1: durable, though the terminal died before saying so);
   and the terminal takes the next tap (one more approval through the real code).

A check that finds anything wrong gives a list of problems: for ``FULL`` that is a failure
of the product, for the ``NORMAL`` and ``OFF`` controls it is the check proving it can see.

The first-boot worlds cut a fresh home during its first run, while its keys, config and
ledger are being made, and must survive the same way; their control, ``NODIRSYNC``, runs
the same code with :func:`localpay.durable.fsync_dir` doing nothing (as the key file was
written before issue #20's cuts found it lost: the terminal then makes a new key at the
next boot, which its ledger refuses).

A world cut again and again keeps its home for :data:`RENEW_EVERY` cuts, then starts a
fresh one, so that a thousand cuts check ledgers of the size a day leaves, not one ledger
grown to hundreds of thousands of entries.
"""

from __future__ import annotations

import json
import os
import queue
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from localpay.cli.simulate import run as run_taps
from localpay.cli.simulate import simulation_config
from localpay.errors import LocalpayError
from terminal.home import Home, open_terminal

REPO = Path(__file__).resolve().parents[2]
MODES = ("drop", "torn")
#: cards of round r are numbered from (r + 1) * CARD_BLOCK; a round never taps that many
CARD_BLOCK = 2_000_000
CHECK_CARD = CARD_BLOCK // 2 + CARD_BLOCK // 4
#: the worlds whose every cut falls on a fresh home, during its first run (keys, config and
#: ledger being made): what provisioning and a first boot leave after a power cut
FIRST_BOOT = "first-boot"
FIRST_BOOT_CONTROL = "first-boot-nodirsync"
#: every this many cuts (and at the last cut of a home) the check verifies the whole chain;
#: between them it verifies from a little before the previous check's head, and compares
#: every reported approval's stored hash
FULL_VERIFY_EVERY = 10
#: a world starts a fresh home after this many cuts of one (see the module docstring)
RENEW_EVERY = 100
#: a first run writes ~100 times before its first approval: its cuts fall near it
FIRST_BOOT_MAX_WRITES = 600
#: how long a round may take to reach its cut (the workload writes ~8 times per tap)
CUT_TIMEOUT_S = 120.0


class PowerCutHarnessError(LocalpayError, RuntimeError):
    """The harness itself could not run a round (not a finding about the ledger)."""


@dataclass
class Cut:
    world: str
    index: int
    mode: str
    sync: str
    cut_at: int
    reported: int
    in_flight: bool
    problems: list[str]
    fs: dict[str, object]
    seconds: float
    #: the cut fell on a fresh home's first run
    first_boot: bool = False

    @property
    def survived(self) -> bool:
        return not self.problems


@dataclass
class Summary:
    seed: int
    cuts: list[Cut] = field(default_factory=list)
    seconds: float = 0.0

    def of(self, sync: str, *, first_boot: bool = False) -> list[Cut]:
        """The cuts of one mode (FULL or a control), on a set-up home or on first boots."""
        return [c for c in self.cuts if c.sync == sync and c.first_boot == first_boot]

    @property
    def first_boot(self) -> list[Cut]:
        return self.of("FULL", first_boot=True)

    @property
    def survived(self) -> int:
        """The cuts of the real ledger on a set-up home that lost nothing."""
        return sum(c.survived for c in self.of("FULL"))

    @property
    def failures(self) -> list[Cut]:
        """Every cut of the product's code (first boots included) that lost something."""
        return [c for c in self.cuts if c.sync == "FULL" and not c.survived]

    def caught(self, sync: str) -> int:
        return sum(not c.survived for c in self.cuts if c.sync == sync)

    def controls(self, sync: str) -> list[Cut]:
        return [c for c in self.cuts if c.sync == sync]

    def lines(self) -> list[str]:
        full = self.of("FULL")
        modes = {m: sum(1 for c in full if c.mode == m) for m in MODES}
        out = [
            f"power cuts: seed {self.seed}, {len(self.cuts)} cuts in {self.seconds:.1f} s",
            f"  FULL: {self.survived} of {len(full)} cuts survived "
            f"(drop {modes['drop']}, torn {modes['torn']}); "
            f"approvals reported before the cuts: {sum(c.reported for c in full)}; "
            f"durable commits in flight at the cut: {sum(c.in_flight for c in full)}",
        ]
        for sync in ("NORMAL", "OFF"):
            out.append(f"  control synchronous={sync}: caught {self.caught(sync)} of "
                       f"{len(self.controls(sync))} cuts")
        if self.first_boot:
            fb = self.first_boot
            out.append(f"  first boot (keys and ledger made on the cut disk): "
                       f"{sum(c.survived for c in fb)} of {len(fb)} cuts survived "
                       f"({sum(c.reported for c in fb)} approvals reported)")
        if self.controls("NODIRSYNC"):
            out.append(f"  control first boot without the directory fsync: caught "
                       f"{self.caught('NODIRSYNC')} of {len(self.controls('NODIRSYNC'))} cuts")
            for c in [c for c in self.controls("NODIRSYNC") if not c.survived][:1]:
                out.append(f"    e.g. cut {c.index} ({c.mode} at write {c.cut_at}): "
                           + "; ".join(c.problems))
        for c in self.failures[:10]:
            out.append(f"  FAILED {c.world} cut {c.index} ({c.mode} at write {c.cut_at}): "
                       + "; ".join(c.problems))
        return out


def _lines(stream: IO[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


class World:
    """One terminal home on the power-cut file system, cut again and again."""

    def __init__(self, base: Path, name: str, sync: str, seed: int, max_writes: int,
                 *, fresh_home: bool = False) -> None:
        self.name = name
        self.fresh_home = fresh_home
        self.sync = sync
        self.seed = seed
        self.rng = random.Random(f"{seed}:{name}")
        self.max_writes = max_writes
        self.backing = base / name / "backing"
        self.mount = base / name / "mnt"
        self.backing.mkdir(parents=True)
        self.mount.mkdir(parents=True)
        self.reported: dict[int, str] = {}
        self.rounds = 0
        self.verified_upto = 0

    @property
    def disk_home(self) -> Path:
        return self.backing / "root" / "home"

    # -- the file system -------------------------------------------------------------------

    def _start_fs(self, cut_at: int, mode: str, seed: int) -> tuple[subprocess.Popen[str],
                                                                      queue.Queue[str | None]]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.powercut.fs", str(self.backing), str(self.mount),
             "--cut-at", str(cut_at), "--mode", mode, "--seed", str(seed)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True,
            # mfusepy takes libfuse 2 first when both are installed; the Makefile's fuse3
            # brings libfuse 3 and its fusermount3, which mounts for a user who is not root
            env={**os.environ, "FUSE_LIBRARY_NAME": "fuse3"},
        )
        assert proc.stdout is not None
        said: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_lines, args=(proc.stdout, said), daemon=True).start()
        line = said.get(timeout=30)
        if line != "ready\n":
            proc.kill()
            raise PowerCutHarnessError(f"{self.name}: the file system did not mount: {line!r}")
        return proc, said

    def _unmount(self, proc: subprocess.Popen[str], said: queue.Queue[str | None]) -> dict[
            str, object]:
        deadline = time.monotonic() + 20
        while True:
            done = subprocess.run(["fusermount3", "-u", str(self.mount)],
                                  capture_output=True, text=True, check=False)
            if done.returncode == 0:
                break
            if time.monotonic() > deadline:
                subprocess.run(["fusermount3", "-u", "-z", str(self.mount)], check=False)
                break
            time.sleep(0.05)
        proc.wait(timeout=60)
        figures: dict[str, object] = {}
        while (line := said.get(timeout=10)) is not None:
            if line.startswith("{"):
                figures = json.loads(line)
        if proc.returncode != 0 or not figures:
            raise PowerCutHarnessError(f"{self.name}: the file system exited with "
                                       f"{proc.returncode} and no figures")
        return figures

    def _command(self, taps: int, first_card: int) -> list[str]:
        args = ["--home", str(self.mount / "home"), "simulate", "--taps", str(taps), "--trace",
                "--first-card", str(first_card)]
        if self.sync == "FULL":
            return [sys.executable, "-m", "localpay", *args]
        return [sys.executable, "-m", "tests.powercut.weak_sync", self.sync, *args]

    # -- rounds ----------------------------------------------------------------------------

    def setup(self) -> None:
        """A fresh home (keys, config, a ledger with a few approvals), shut down cleanly."""
        proc, said = self._start_fs(0, "drop", 0)
        try:
            done = subprocess.run(self._command(3, 0), cwd=REPO, capture_output=True,
                                  text=True, timeout=120, check=False)
        finally:
            self._unmount(proc, said)
        if done.returncode != 0:
            raise PowerCutHarnessError(f"{self.name}: setup failed: {done.stderr[-2000:]}")
        self.reported.update(_approvals(done.stdout.splitlines(keepends=True)))

    def renew(self) -> None:
        """Start again from a fresh home (see :data:`RENEW_EVERY`)."""
        shutil.rmtree(self.disk_home)
        self.reported.clear()
        self.verified_upto = 0
        self.setup()

    def cut(self, mode: str, *, final: bool = False) -> Cut:
        self.rounds += 1
        index = self.rounds
        cut_at = self.rng.randint(1, self.max_writes)
        fs_seed = self.rng.randrange(2**32)
        started = time.monotonic()
        base_card = index * CARD_BLOCK
        if self.fresh_home:
            # the home folder itself is there, durably, as the package's install left it
            shutil.rmtree(self.disk_home, ignore_errors=True)
            self.disk_home.mkdir(parents=True)
            self.reported.clear()
            self.verified_upto = 0
        figures, printed = self.run_to_cut(self._command(1_000_000, base_card), cut_at, mode,
                                           fs_seed)
        round_reported = _approvals(printed)
        self.reported.update(round_reported)
        full = final or index % FULL_VERIFY_EVERY == 0
        problems, in_flight = self.check(index, max(self.reported, default=0) + 1, full=full)
        if problems and self.sync != "FULL" and not self.fresh_home:
            self._accept_losses()
        return Cut(self.name, index, mode, self.sync, cut_at, len(round_reported), in_flight,
                   problems, figures, time.monotonic() - started, self.fresh_home)

    def run_to_cut(self, command: list[str], cut_at: int, mode: str, fs_seed: int) -> tuple[
            dict[str, object], list[str]]:
        """Mount with a cut at write ``cut_at``, run ``command`` until the cut, kill it there
        and unmount (rolling the disk back); return the file system's figures and the lines
        the command printed."""
        proc, said = self._start_fs(cut_at, mode, fs_seed)
        work = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert work.stdout is not None and work.stderr is not None
        assert proc.stdin is not None
        out: queue.Queue[str | None] = queue.Queue()
        err: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_lines, args=(work.stdout, out), daemon=True).start()
        threading.Thread(target=_lines, args=(work.stderr, err), daemon=True).start()
        try:
            line = self._wait_cut(work, said, err)
        except BaseException:
            work.kill()
            work.wait()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            self._unmount(proc, said)
            raise
        # the workload is blocked inside the write that crosses the boundary: the power
        # goes now, before that write can complete
        os.kill(work.pid, signal.SIGKILL)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        work.wait(timeout=60)
        figures = self._unmount(proc, said)
        figures["cut_line"] = line.strip()
        printed: list[str] = []
        while (text := out.get(timeout=10)) is not None:
            printed.append(text)
        return figures, printed

    def _wait_cut(self, work: subprocess.Popen[str], said: queue.Queue[str | None],
                  err: queue.Queue[str | None]) -> str:
        deadline = time.monotonic() + CUT_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = said.get(timeout=0.2)
            except queue.Empty:
                if work.poll() is not None:
                    text = "".join(x for x in iter(err.get, None) if x)
                    raise PowerCutHarnessError(
                        f"{self.name}: the workload ended (rc {work.returncode}) before the "
                        f"cut: {text[-2000:]}") from None
                continue
            if line is not None and line.startswith("cut "):
                return line
            raise PowerCutHarnessError(f"{self.name}: the file system said {line!r}")
        raise PowerCutHarnessError(f"{self.name}: no cut within {CUT_TIMEOUT_S} s")

    # -- the check -------------------------------------------------------------------------

    def check(self, index: int, in_flight_seq: int, *, full: bool = True) -> tuple[
            list[str], bool]:
        """Boot the terminal on what the disk holds and check it; returns (problems,
        whether the commit in flight at the cut is there)."""
        home = Home(self.disk_home)
        try:
            config = simulation_config(home.config(), "validator")
            # a first boot makes its keys as `simulate` does; any later boot finds them
            terminal = open_terminal(home, config, strict=True, create_keys=self.fresh_home)
        except LocalpayError as error:
            return [f"the terminal does not boot: {type(error).__name__}: {error}"], False
        ledger = terminal.ledger
        assert ledger is not None  # strict: a refused ledger raised
        problems: list[str] = []
        in_flight = False
        try:
            try:
                ledger.verify(start=None if full else max(ledger.first_seq(),
                                                           self.verified_upto - 64))
                stored = _stored_hashes(home.ledger_path)
            except (LocalpayError, sqlite3.Error) as error:
                return [f"the chain does not verify: {type(error).__name__}: {error}"], False
            lost = sorted(s for s, h in self.reported.items() if stored.get(s) != h)
            if lost:
                problems.append(f"{len(lost)} reported approvals lost or changed "
                                f"(seq {lost[0]}..{lost[-1]})")
            never = sorted(set(stored) - set(self.reported))
            if never == [in_flight_seq]:
                in_flight = True  # durable, but the power went before it could be shown
                self.reported[in_flight_seq] = stored[in_flight_seq]
            elif never:
                problems.append(f"{len(never)} entries never reported (seq {never[:5]})")
            head = ledger.head.seq
            try:
                figures = run_taps(terminal, 1, first_card=index * CARD_BLOCK + CHECK_CARD)
            except LocalpayError as error:
                figures = None
                problems.append(f"the next tap failed: {type(error).__name__}: {error}")
            if figures is not None:
                if figures.outcomes["approved"] != 1 or ledger.head.seq != head + 1:
                    problems.append(f"the next tap was not approved: {dict(figures.outcomes)} "
                                    f"{dict(figures.reasons)}")
                else:
                    self.reported[ledger.head.seq] = ledger.head.entry_hash.hex()
                    self.verified_upto = ledger.head.seq
        finally:
            ledger.close()
        return problems, in_flight

    def _accept_losses(self) -> None:
        """After a control lost approvals, judge its next cut from what the disk holds now
        (or from a fresh home, when the terminal could not even boot)."""
        home = Home(self.disk_home)
        try:
            terminal = open_terminal(home, simulation_config(home.config(), "validator"),
                                     strict=True)
        except LocalpayError:
            terminal = None
        self.verified_upto = 0
        if terminal is None or terminal.ledger is None:
            self.reported.clear()
            for path in sorted(self.disk_home.glob("ledger.sqlite*")):
                path.unlink()
            return
        try:
            self.reported = _stored_hashes(home.ledger_path)
        except sqlite3.Error:
            self.reported.clear()
        finally:
            terminal.ledger.close()


def unmount_all(base: Path) -> None:
    """Leave no mount behind (a round that failed half-way may have)."""
    for mount in base.glob("*/mnt"):
        if os.path.ismount(mount):
            subprocess.run(["fusermount3", "-u", "-z", str(mount)], check=False,
                           capture_output=True)


def _stored_hashes(path: Path) -> dict[int, str]:
    """Every entry's seq and stored hash, read in one query (the terminal's ledger is open:
    WAL lets a reader in beside it)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {seq: bytes(h).hex() for seq, h in conn.execute(
            "SELECT seq, entry_hash FROM entries")}
    finally:
        conn.close()


def _approvals(lines: list[str]) -> dict[int, str]:
    """The approvals a trace reported: whole lines only (a torn last line was never seen)."""
    found: dict[int, str] = {}
    for line in lines:
        if not line.endswith("\n") or not line.startswith('{"seq"'):
            continue
        record = json.loads(line)
        found[int(record["seq"])] = str(record["entry_hash"])
    return found


def run_cuts(base: Path, *, seed: int, full_cuts: int, control_cuts: int,
             first_boot_cuts: int = 0, max_writes: int = 2000, workers: int = 2,
             renew_every: int = RENEW_EVERY,
             progress: Callable[[Cut], None] | None = None) -> Summary:
    """``full_cuts`` cuts of the real ledger (half ``drop``, half ``torn``, in two worlds)
    and ``control_cuts`` for each of NORMAL and OFF, ``workers`` worlds at a time;
    ``first_boot_cuts`` cuts of a fresh home during its first run (:data:`FIRST_BOOT`), and
    as many of its control (:data:`FIRST_BOOT_CONTROL`) as ``control_cuts``."""
    alternate = [MODES[i % 2] for i in range(control_cuts)]
    # (name, sync, modes, fresh home at every cut); the controls first: their catches are
    # the proof that the check can fail
    plans = [(f"control-{sync.lower()}", sync, alternate, False) for sync in ("NORMAL", "OFF")]
    if first_boot_cuts:
        plans.append((FIRST_BOOT_CONTROL, "NODIRSYNC", alternate, True))
        plans.append((FIRST_BOOT, "FULL", [MODES[i % 2] for i in range(first_boot_cuts)],
                      True))
    # half the cuts drop, half tear; each half shared out over worlds enough to keep
    # ``workers`` busy (a cut waits on the file system's round trips as much as it computes)
    per_mode = max(1, workers // 2)
    for mode, count in (("drop", (full_cuts + 1) // 2), ("torn", full_cuts // 2)):
        for k in range(per_mode):
            share = count // per_mode + (k < count % per_mode)
            name = f"full-{mode}" if per_mode == 1 else f"full-{mode}-{k + 1}"
            plans.append((name, "FULL", [mode] * share, False))
    summary = Summary(seed)
    lock = threading.Lock()
    started = time.monotonic()

    def play(name: str, sync: str, modes: list[str], fresh: bool) -> None:
        if not modes:
            return
        world = World(base, name, sync, seed, FIRST_BOOT_MAX_WRITES if fresh else max_writes,
                      fresh_home=fresh)
        if not fresh:
            world.setup()
        for i, mode in enumerate(modes):
            if not fresh and i and i % renew_every == 0:
                world.renew()
            last = i == len(modes) - 1 or (i + 1) % renew_every == 0
            cut = world.cut(mode, final=last)
            with lock:
                summary.cuts.append(cut)
            if progress is not None:
                progress(cut)

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(play, *plan) for plan in plans]:
                future.result()
    finally:
        unmount_all(base)
    summary.seconds = time.monotonic() - started
    return summary
