"""``kill -9`` of a running terminal and of the central service, at random moments (issue #20).

One world, real throughout: a PostgreSQL database, ``localpay central serve`` on it in a
process group of its own, and a validator's home provisioned against it running
``localpay run`` under SDL's dummy video driver, its sync thread sending to the service
every second. Riders' wallet QR codes reach the kiosk through a real pty that the kiosk
opens as its serial scanner (real pyserial), a few a second, each a new wallet so no tap is
a duplicate. ``run --trace`` appends a line for each approval once its entry is durable:
those lines are what riders saw.

A cycle picks its victim from the seed, the terminal (kiosk worker and sync thread die
together) or the service (every process of its group, as systemd kills a unit's cgroup),
waits a random time (from the seed) while taps and syncs go on, sends SIGKILL and starts
the victim again on the same home or the same store. Which instruction the kill lands on
is the scheduler's: a seed replays the same victims and delays, not the same
interleaving.

:meth:`KillWorld.check` at the end, after one clean sync by the product's own
:class:`~sync.client.SyncClient`:

- every reported approval is in the ledger with the hash reported, and the chain verifies;
- every ledger entry is on the central chain exactly once, seqs 1..head with no gap, with
  the ledger's hash;
- central's count and sum per kind for the terminal equal the ledger's, both computed here;
- no entry credited twice: ``incentive_credits``, ``overdrafts`` and ``flags`` hold each
  (terminal, seq) at most once per rule, and only for entries on the chain.

Used by ``tests/test_kills.py`` (a short run) and ``tests/soak_kills.py`` (1,000 cycles).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pty
import random
import signal
import subprocess
import sys
import termios
import threading
import time
import tty
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_cfg.config import DEFAULT, dumps
from firmware_cfg.keys import public_hex
from localpay.pgserver import free_port
from offline_ledger import Ledger
from terminal.home import Home, open_terminal
from terminal.qr import wallet

TERMINAL_ID = "BUS-KILL-1"
FARE = 1500  # the default adult fare: a wallet code carries no rider category
SEED_ENV = "LOCALPAY_KILLS_SEED"
ROOT = Path(__file__).resolve().parents[1]


class KillCheckError(AssertionError):
    """A promise broken: an approval lost, an entry twice, totals that differ."""


@dataclass
class Figures:
    seed: int
    cycles: int = 0
    terminal_kills: int = 0
    central_kills: int = 0
    terminal_starts: int = 0
    central_starts: int = 0
    codes_sent: int = 0
    reported: int = 0
    ledger_entries: int = 0
    central_entries: int = 0
    #: entries the kiosk's own sync thread had sent before the final clean sync
    synced_by_kiosk: int = 0
    credits: int = 0
    seconds: float = 0.0
    worst_restart_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["seconds"] = round(self.seconds, 1)
        out["worst_restart_s"] = round(self.worst_restart_s, 2)
        return out


def seed_from_env(default: int | None = None) -> int:
    """The seed: ``LOCALPAY_KILLS_SEED`` when set (replaying a failure), else ``default``,
    else a fresh one."""
    text = os.environ.get(SEED_ENV)
    if text:
        return int(text)
    return default if default is not None else random.SystemRandom().randrange(2**31)


def _env() -> dict[str, str]:
    return {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy",
            "PYGAME_HIDE_SUPPORT_PROMPT": "1", "PYTHONPATH": str(ROOT)}


def _killpg(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL to every process of ``proc``'s group (it leads one of its own)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}, not a kill"


class Scanner:
    """The kiosk's serial scanner: a pty whose far end a feeder thread types codes into.

    Both ends stay open here for the whole run, so the tty outlives every kiosk process that
    opens it; input left over from a killed kiosk is flushed before the next one starts
    (a real scanner's buffered line would be a tap, just an old one)."""

    def __init__(self, issuer: Ed25519PrivateKey, rate_per_s: float) -> None:
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.issuer = issuer
        self.gap = 1.0 / rate_per_s
        self.sent = 0
        self.on = threading.Event()
        self._stop = threading.Event()
        self._counter = itertools.count(1)
        self._thread = threading.Thread(target=self._feed, name="scanner-feed", daemon=True)
        self._thread.start()

    def flush(self) -> None:
        termios.tcflush(self.slave, termios.TCIOFLUSH)

    def _feed(self) -> None:
        while not self._stop.is_set():
            if self.on.wait(0.1) and not self._stop.is_set():
                n = next(self._counter)
                code = wallet.make(self.issuer, f"kill-rider-{n}", ttl_s=120)
                with contextlib.suppress(OSError):  # a full tty buffer drops a tap
                    os.write(self.master, code.encode("ascii") + b"\r")
                    self.sent += 1
                self._stop.wait(self.gap)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self.master)
        os.close(self.slave)


class KillWorld:
    """The service, the terminal and the rider, with kills; see the module docstring."""

    def __init__(self, folder: Path, db_url: str, seed: int, *, workers: int = 1,
                 taps_per_s: float = 6.0, max_wait_s: float = 0.5) -> None:
        self.folder = folder
        self.db = db_url
        self.rng = random.Random(seed)
        self.figures = Figures(seed)
        self.workers = workers
        self.max_wait_s = max_wait_s
        self.data = folder / "central"
        self.trace = folder / "approvals.jsonl"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.central: subprocess.Popen[bytes] | None = None
        self.kiosk: subprocess.Popen[bytes] | None = None
        self._reported: dict[int, str] = {}
        self._trace_at = 0
        self.issuer = Ed25519PrivateKey.generate()
        self.scanner = Scanner(self.issuer, taps_per_s)
        self._provision()

    # -- set-up ----------------------------------------------------------------------------

    def _provision(self) -> None:
        from central import open_service

        svc = open_service(self.db, self.data)  # makes the log key and the schema
        try:
            verifier = svc.signer.verifier.text()
        finally:
            svc.store.close()
        home_path = self.folder / "home"
        home_path.mkdir(parents=True)
        config = (DEFAULT.replace("terminal", id=TERMINAL_ID, role="validator", place="85",
                                  language="en")
                  .replace("central", url=self.url, sync_interval_s=1, batch_size=50)
                  .replace("keys", central_public_key=verifier,
                           issuer_public_key=public_hex(self.issuer))
                  .replace("readers", scanner=f"serial:{self.scanner.path}")
                  # many taps between syncs while the service is down: no limit stops them
                  .replace("risk", terminal_exposure=10**12, unknown_clock_amount=10**12))
        (home_path / "terminal.toml").write_text(dumps(config), encoding="utf-8")
        self.home = Home(home_path)
        terminal = open_terminal(self.home, self.home.config(), create_keys=True)
        assert terminal.ledger is not None
        terminal.ledger.close()
        self.key = self.home.terminal_key(self.home.config())
        self.verifier = verifier
        svc = open_service(self.db, self.data)
        try:
            svc.add_terminal(TERMINAL_ID, bytes.fromhex(public_hex(self.key)))
        finally:
            svc.store.close()

    # -- processes -------------------------------------------------------------------------

    def start_central(self, timeout: float = 90.0) -> float:
        started = time.monotonic()
        with open(self.data / "serve.log", "ab") as out:  # the child keeps its own copy
            self.central = subprocess.Popen(
                [sys.executable, "-m", "localpay", "central", "serve", "--db", self.db,
                 "--data", str(self.data), "--port", str(self.port), "--workers",
                 str(self.workers), "--log-format", "text", "--audit-every", "0"],
                stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=self.data,
                start_new_session=True)
        while True:
            if self.central.poll() is not None:
                raise RuntimeError("central serve exited: "
                                   + (self.data / "serve.log").read_text()[-2000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() - started > timeout:
                raise RuntimeError("central serve did not answer")
            time.sleep(0.05)
        self.figures.central_starts += 1
        return time.monotonic() - started

    def start_kiosk(self) -> None:
        self.scanner.flush()
        with open(self.folder / "kiosk.log", "ab") as out:
            self.kiosk = subprocess.Popen(
                [sys.executable, "-m", "localpay", "--home", str(self.home.path), "run",
                 "--config", str(self.home.config_path), "--windowed", "--no-sound",
                 # the scanner only: no PC/SC stack is wanted here
                 "--reader", f"serial:{self.scanner.path}", "--trace", str(self.trace)],
                stdout=out, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
        self.figures.terminal_starts += 1
        self.scanner.on.set()

    def kill_kiosk(self) -> None:
        assert self.kiosk is not None
        self.scanner.on.clear()
        if self.kiosk.poll() is not None:
            raise RuntimeError(f"localpay run had exited ({self.kiosk.returncode}) before "
                               "its kill: " + self._tail(self.folder / "kiosk.log"))
        _killpg(self.kiosk)
        self.figures.terminal_kills += 1

    def kill_central(self) -> None:
        assert self.central is not None
        if self.central.poll() is not None:
            raise RuntimeError(f"central serve had exited ({self.central.returncode}) before "
                               "its kill: " + self._tail(self.data / "serve.log"))
        _killpg(self.central)
        self.figures.central_kills += 1

    @staticmethod
    def _tail(path: Path) -> str:
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    # -- the run ---------------------------------------------------------------------------

    def reported(self) -> dict[int, str]:
        """seq -> entry hash of every approval the kiosk reported (whole lines only: a line
        cut short by a kill was never a completed report), read on from where it was."""
        if not self.trace.exists():
            return self._reported
        with self.trace.open("rb") as f:
            f.seek(self._trace_at)
            chunk = f.read()
        whole = chunk[:chunk.rfind(b"\n") + 1]
        self._trace_at += len(whole)
        for raw in whole.splitlines():
            try:
                record = json.loads(raw)
            except ValueError as err:
                # one write(2) per line on O_APPEND: a kill never leaves half of one
                raise KillCheckError(f"a torn trace line: {raw[:80]!r}") from err
            seq = int(record["seq"])
            if seq in self._reported and self._reported[seq] != record["entry_hash"]:
                raise KillCheckError(f"seq {seq} reported twice with different hashes")
            self._reported[seq] = record["entry_hash"]
        return self._reported

    def _wait_for_approval(self, after: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.reported()) > after:
                return True
            if self.kiosk is not None and self.kiosk.poll() is not None:
                raise RuntimeError(f"localpay run exited ({self.kiosk.returncode}): "
                                   + self._tail(self.folder / "kiosk.log"))
            time.sleep(0.05)
        return False

    def cycle(self) -> None:
        """One kill: pick the victim and the moment from the seed, kill, start it again."""
        victim = "terminal" if self.rng.random() < 0.5 else "central"
        # most kills land while taps flow; some while the kiosk is still starting up
        settle = self.rng.random() < 0.8
        delay = self.rng.uniform(0.0, self.max_wait_s)
        if settle and not self._wait_for_approval(len(self.reported()), 60.0):
            raise RuntimeError("no approval within 60 s: "
                               + self._tail(self.folder / "kiosk.log"))
        time.sleep(delay)
        started = time.monotonic()
        if victim == "terminal":
            self.kill_kiosk()
            self.start_kiosk()
        else:
            self.kill_central()
            self.start_central()
        self.figures.worst_restart_s = max(self.figures.worst_restart_s,
                                           time.monotonic() - started)
        self.figures.cycles += 1

    def run(self, cycles: int, progress: Any = None) -> Figures:
        begun = time.monotonic()
        self.start_central()
        self.start_kiosk()
        try:
            for n in range(cycles):
                self.cycle()
                if progress is not None:
                    progress(n + 1, self.figures)
            # the last word: the terminal dies once more, and nothing is left running
            self._wait_for_approval(len(self.reported()), 60.0)
            self.kill_kiosk()
        finally:
            self.scanner.on.clear()
            if self.kiosk is not None and self.kiosk.poll() is None:
                _killpg(self.kiosk)
        try:
            self.final_sync()
            self.check()
        finally:
            self.close()
        self.figures.codes_sent = self.scanner.sent
        self.figures.seconds = time.monotonic() - begun
        return self.figures

    def final_sync(self) -> None:
        """One clean sync by the product's client, as the next boot's thread would make."""
        from sync.client import SyncClient

        if self.central is None or self.central.poll() is not None:
            self.start_central()
        with psycopg.connect(self.db) as conn:
            row = conn.execute("SELECT count(*) FROM entries WHERE terminal_id = %s",
                               (TERMINAL_ID,)).fetchone()
        self.figures.synced_by_kiosk = int(row[0]) if row else 0
        with SyncClient(self.home.ledger_path, self.key, self.url, self.verifier,
                        batch_size=200, max_retries=5) as client:
            summary = client.sync_once()
        if summary.synced_upto != summary.head:
            raise KillCheckError(f"final sync reached {summary.synced_upto} of "
                                 f"{summary.head}")

    def close(self) -> None:
        if self.central is not None and self.central.poll() is None:
            self.central.terminate()
            try:
                self.central.wait(15)
            except subprocess.TimeoutExpired:
                _killpg(self.central)
        self.scanner.close()

    # -- the checks ------------------------------------------------------------------------

    def check(self) -> None:
        reported = self.reported()
        if not reported:
            raise KillCheckError("no approval was reported: the run proved nothing")
        with Ledger(self.home.ledger_path) as ledger:
            report = ledger.verify()
            entries = list(ledger.entries())
        stored = {e.seq: e.entry_hash.hex() for e in entries}
        if report.entries != len(stored):
            raise KillCheckError(f"verify saw {report.entries} entries, the ledger has "
                                 f"{len(stored)}")
        lost = sorted(s for s, h in reported.items() if stored.get(s) != h)
        if lost:
            raise KillCheckError(f"reported approvals lost or changed: {lost[:10]}")
        local = Counter[tuple[str, str]]()
        for e in entries:
            local[(e.kind, "count")] += 1
            local[(e.kind, "amount")] += e.amount
        with psycopg.connect(self.db) as conn:
            rows = conn.execute(
                "SELECT seq, entry_hash FROM entries WHERE terminal_id = %s ORDER BY seq",
                (TERMINAL_ID,)).fetchall()
            seqs = [int(r[0]) for r in rows]
            twice = [s for s, n in Counter(seqs).items() if n > 1]
            if twice:
                raise KillCheckError(f"entries on the central chain twice: {twice[:10]}")
            if seqs != list(range(1, len(entries) + 1)):
                gaps = sorted(set(range(1, len(entries) + 1)) - set(seqs))
                raise KillCheckError(f"central chain has {len(seqs)} entries of "
                                     f"{len(entries)}; missing {gaps[:10]}")
            wrong = [int(s) for s, h in rows if bytes(h).hex() != stored[int(s)]]
            if wrong:
                raise KillCheckError(f"central holds other hashes for seqs {wrong[:10]}")
            central = Counter[tuple[str, str]]()
            for kind, count, amount in conn.execute(
                    "SELECT kind, count(*), coalesce(sum(amount), 0) FROM entries "
                    "WHERE terminal_id = %s GROUP BY kind", (TERMINAL_ID,)):
                central[(kind, "count")] += int(count)
                central[(kind, "amount")] += int(amount)
            if central != local:
                raise KillCheckError(f"central's totals {dict(central)} != the ledger's "
                                     f"{dict(local)}")
            for table, key in (("incentive_credits", "seq"), ("overdrafts", "seq"),
                               ("flags", "seq, rule")):
                dup = conn.execute(
                    f"SELECT {key}, count(*) FROM {table} WHERE terminal_id = %s "
                    f"GROUP BY {key} HAVING count(*) > 1", (TERMINAL_ID,)).fetchall()
                if dup:
                    raise KillCheckError(f"{table}: credited twice: {dup[:10]}")
                stray = conn.execute(
                    f"SELECT count(*) FROM {table} WHERE terminal_id = %s "
                    "AND seq NOT IN (SELECT seq FROM entries WHERE terminal_id = %s)",
                    (TERMINAL_ID, TERMINAL_ID)).fetchone()
                if stray and stray[0]:
                    raise KillCheckError(f"{table}: {stray[0]} rows for entries not logged")
            credits = conn.execute("SELECT count(*) FROM incentive_credits WHERE "
                                   "terminal_id = %s", (TERMINAL_ID,)).fetchone()
        self.figures.reported = len(reported)
        self.figures.ledger_entries = len(entries)
        self.figures.central_entries = len(seqs)
        self.figures.credits = int(credits[0]) if credits else 0
