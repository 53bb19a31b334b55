"""The simulated city: PostgreSQL, the central service, a fault proxy per terminal, and each
terminal its own process on its own provisioned home; the week run with its faults.

Set-up, as the product does it and with the tests' own helpers: a PostgreSQL cluster
(:class:`localpay.pgserver.PgCluster`, as ``tests.pg_fixtures``), ``localpay central serve
--init`` on it (``tests.pg_fixtures.start_central``), the week's rules (the defaults with two
campaigns) loaded, youth profiles set, one enrolment code per terminal carrying its config
template (``central.enroll.issue_codes``), and ``localpay provision`` on each home through
its proxy (``tests.enroll_fixtures.provision``). Each terminal then syncs once with the
product's client, which brings the rider profiles its fares depend on. The service is then
started again under the simulated clock (:mod:`tests.city.central_clock`) and the terminal
processes (:mod:`tests.city.terminal`) start.

Nights: the simulated clock jumps over each night in one step, in every process at once.
A request signed before the jump and checked after it would be refused as stale, and its
round trip, which the sync client measures on the wall clock, would span half a night: the
retry, signed with half a night's error, is refused too, and the client waits its longest
backoff (300 s). A real night has no such step, so every proxy cuts its connections and
refuses new ones from ``NIGHT_BEFORE_S`` before each jump to ``NIGHT_AFTER_S`` after it:
no request spans a jump. (The same would happen to a terminal whose clock NTP steps in the
middle of a request; the report of issue #20 says so.)

The run follows the fault schedule (:mod:`tests.city.faults`) in real time, each fault in a
thread of its own. Every few seconds it samples every terminal process's resident memory
(``VmRSS``; a process once past its first ``WARM_S`` seconds) and keeps each day's
largest; at the end of each simulated day it reads the checkpoint each terminal keeps.
After the last day it lets the terminals sync what is left, stops them (SIGTERM), and any
terminal still behind gets one clean sync by the product's client, as its next boot would
make.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
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
from typing import Any

from central import open_service
from central.enroll import issue_codes, load_scheme_token_key
from central.profiles import set_profiles
from central.versions import load_rules
from sync.client import SyncClient
from terminal.home import Home
from tests.city.faults import Fault, FaultRates, schedule
from tests.city.population import CityPlan, TerminalPlan
from tests.city.simclock import SimClock
from tests.city.terminal import TerminalSpec
from tests.enroll_fixtures import provision
from tests.faultproxy import CuttingProxy
from tests.pg_fixtures import ROOT, CentralProcess, PgCluster, start_central

Progress = Callable[[str], None]
#: a terminal process's memory is compared from this age on (s): imports, the first sync
#: round, the ledger's and HTTP client's caches fill within the first seconds
WARM_S = 20.0
#: how often every process's memory is sampled (s)
RSS_EVERY_S = 5.0
#: the network is down from this long before each night's jump of the simulated clock to
#: this long after it (see the module docstring)
NIGHT_BEFORE_S = 0.5
NIGHT_AFTER_S = 1.5


@dataclass
class Node:
    """One terminal: its plan, home, proxy, process and what was sampled of it."""

    plan: TerminalPlan
    home: Home
    proxy: CuttingProxy
    trace: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    boots: int = 0
    #: the process was killed on purpose and is not back yet
    off: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: when the running process was started (monotonic s)
    started: float = 0.0
    #: simulated day -> the largest VmRSS (kB) sampled that day of a process past its
    #: warm-up, with that process's pid
    rss: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: checkpoint notes seen in the terminal's sync state file
    checkpoints: set[str] = field(default_factory=set)


@dataclass
class Timings:
    setup_s: float = 0.0
    week_s: float = 0.0
    drain_s: float = 0.0
    #: terminals that needed the clean sync after the week (behind, or with days whose
    #: totals they had not reported, when stopped)
    final_syncs: int = 0


class CityWorld:
    """See the module docstring. ``run()`` returns once everything but PostgreSQL and the
    folder is stopped; :meth:`close` removes the rest."""

    def __init__(self, folder: Path, plan: CityPlan, *, day_s: float, rates: FaultRates,
                 progress: Progress | None = None, drain_s: float = 90.0) -> None:
        self.folder = folder
        self.plan = plan
        self.day_s = day_s
        self.rates = rates
        self.say = progress or (lambda _m: None)
        self.drain_limit = drain_s
        self.faults = schedule(plan.seed, plan.validators + plan.tills, plan.days, day_s, rates)
        self.applied: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.timings = Timings()
        self.nodes: list[Node] = []
        self.pg: PgCluster | None = None
        self.db = ""
        self.data = folder / "central"
        self.srv: CentralProcess | None = None
        self.clock: SimClock | None = None
        self.verifier = ""
        self.youth: dict[str, str] = {}
        self._central_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._next_rss = 0.0

    # -- set-up ------------------------------------------------------------------------------

    def setup(self) -> None:
        started = time.monotonic()
        self.pg = PgCluster()
        self.db = self.pg.new_database()
        # one worker: what the set-up asks of it is a few requests, and each worker process
        # costs seconds of start-up on a busy machine
        srv = start_central(self.db, self.data, timeout=120, command=(
            "-m", "localpay", "central", "serve", "--init", "--workers", "1"))
        self.srv = srv
        self.verifier = srv.verifier
        svc = open_service(self.db, self.data)
        try:
            load_rules(svc.store, self.plan.rules_text())
            self.youth = self.plan.youth_tokens(load_scheme_token_key(self.data, create=False))
            set_profiles(svc.store, self.youth)
            codes = [issue_codes(svc, role=t.role, place=t.place, template=self.plan.template(t),
                                 ttl_s=3600)[0] for t in self.plan.terminals()]
        finally:
            svc.store.close()
        for t, code in zip(self.plan.terminals(), codes, strict=True):
            self.nodes.append(self._provision(t, code, srv))
        self.say(f"provisioned {len(self.nodes)} terminals")
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(first_sync, [n.home for n in self.nodes]))
        srv.stop()
        self.timings.setup_s = time.monotonic() - started

    def _provision(self, t: TerminalPlan, code: str, srv: CentralProcess) -> Node:
        home = self.folder / "terminals" / t.name
        proxy = CuttingProxy(srv.port, seed=self.plan.seed + t.index, cut_connections=False)
        via = dataclasses.replace(srv, url=f"http://127.0.0.1:{proxy.port}")
        where = "--route" if t.role == "validator" else "--merchant"
        result = provision(home, via, code, "--role", t.role, where, t.place, "--no-selftest")
        if result.exit_code != 0:
            raise RuntimeError(f"provisioning {t.name} failed: {result.output}")
        return Node(t, Home(home), proxy, self.folder / "traces" / f"{t.name}.jsonl",
                    self.folder / "logs" / f"{t.name}.log")

    # -- processes ---------------------------------------------------------------------------

    def start_central(self) -> None:
        assert self.clock is not None
        self.srv = start_central(
            self.db, self.data, port=self.nodes[0].proxy.upstream, timeout=120,
            command=("-m", "tests.city.central_clock", self.clock.to_json(), "central",
                     "serve", "--workers", "1", "--log-format", "text", "--audit-every", "0"))

    def start_terminal(self, node: Node, *, epoch: bool = False) -> None:
        assert self.clock is not None
        node.boots += 1
        spec = TerminalSpec(str(node.home.path), self.clock.to_json(),
                            json.dumps(self.plan.as_dict()), node.plan.index, node.boots,
                            str(node.trace), epoch)
        with open(node.log, "ab") as out:
            node.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.city.terminal", spec.to_json()],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                env=dict(os.environ, PYTHONPATH=str(ROOT)))
        node.started = time.monotonic()
        node.off = False

    def _kill(self, node: Node) -> None:
        proc = node.proc
        if proc is None:
            return
        node.off = True
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    # -- the week ----------------------------------------------------------------------------

    def run(self) -> None:
        self.setup()
        for sub in ("traces", "logs"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        # time for the processes to start before day 0 opens: about 0.4 s of CPU each
        margin = 10.0 + 0.4 * len(self.nodes)
        self.clock = SimClock(time.time() + margin, self.day_s, self.plan.first_day,
                              self.plan.days)
        self.start_central()
        for node in self.nodes:
            self.start_terminal(node)
        self.say(f"{len(self.nodes)} terminals started; day 0 opens in "
                 f"{self.clock.t0 - time.time():.0f} s")
        started = time.monotonic()
        try:
            self._follow_schedule()
            self.timings.week_s = time.monotonic() - started
            self._drain()
        finally:
            for t in self._threads:
                t.join(60)
            self._stop_all()

    def _follow_schedule(self) -> None:
        assert self.clock is not None
        t0 = self.clock.t0
        events: list[tuple[float, str, Any]] = [(t0 + f.at, "fault", f) for f in self.faults]
        events += [(t0 + (d + 1) * self.day_s - 1.5, "sample", d) for d in range(self.plan.days)]
        events += [(t0 + d * self.day_s - NIGHT_BEFORE_S, "night", d)
                   for d in range(1, self.plan.days)]
        events.sort(key=lambda e: (e[0], e[1]))
        for when, what, arg in events:
            while time.time() < when:
                self._tick()
                time.sleep(min(0.25, max(0.0, when - time.time())))
            if what == "night":
                for node in self.nodes:
                    node.proxy.down(NIGHT_BEFORE_S + NIGHT_AFTER_S)
            elif what == "sample":
                self._sample(int(arg))
                self.say(f"day {arg} ({self.plan.day_date(int(arg))}) done: "
                         f"{self._approvals()} approvals so far")
            else:
                thread = threading.Thread(target=self._apply, args=(arg,), daemon=True)
                thread.start()
                self._threads.append(thread)
        end = t0 + self.plan.days * self.day_s
        while time.time() < end:
            self._tick()
            time.sleep(0.25)

    def _tick(self) -> None:
        self._watch()
        now = time.monotonic()
        if now >= self._next_rss:
            self._next_rss = now + RSS_EVERY_S
            self._sample_rss()

    def _sample_rss(self) -> None:
        assert self.clock is not None
        if not self.clock.t0 <= time.time() < self.clock.t0 + self.plan.days * self.day_s:
            return
        day = self.clock.day_index(time.time())
        for node in self.nodes:
            proc = node.proc
            if proc is None or node.off or time.monotonic() - node.started < WARM_S:
                continue
            kb = vm_rss_kb(proc.pid)
            if kb is not None and kb > node.rss.get(day, (0, 0))[1]:
                node.rss[day] = (proc.pid, kb)

    def _watch(self) -> None:
        """A terminal process that died without being killed is a finding; it is started
        again so that the run goes on."""
        for node in self.nodes:
            with node.lock:
                proc = node.proc
                if node.off or proc is None or proc.poll() is None:
                    continue
                tail = node.log.read_text(errors="replace")[-1500:]
                self.problems.append(f"terminal {node.plan.name} exited by itself "
                                     f"({proc.returncode}): {tail}")
                self.start_terminal(node)

    def _apply(self, fault: Fault) -> None:
        began = time.time()
        record: dict[str, Any] = fault.as_dict()
        try:
            if fault.kind == "net_cut":
                record["connections_cut"] = sum(self.nodes[i].proxy.down(fault.seconds)
                                                for i in fault.targets)
            elif fault.kind == "net_delay":
                for i in fault.targets:
                    self.nodes[i].proxy.delay(fault.seconds, fault.hold_s)
            elif fault.kind in ("power_cut", "epoch_boot"):
                node = self.nodes[fault.targets[0]]
                with node.lock:
                    self._kill(node)
                    time.sleep(fault.seconds)
                    self.start_terminal(node, epoch=fault.kind == "epoch_boot")
            elif fault.kind == "central_restart":
                with self._central_lock:
                    assert self.srv is not None
                    self.srv.kill()
                    time.sleep(fault.seconds)
                    self.start_central()
            elif fault.kind == "pg_restart":
                with self._central_lock:
                    assert self.pg is not None
                    self.pg.restart()
        except Exception as err:  # the run goes on; the report says what failed
            self.problems.append(f"fault {fault.kind} at {fault.at:.1f} s failed: {err!r}")
            record["error"] = repr(err)
        record["took_s"] = round(time.time() - began, 2)
        self.applied.append(record)

    def _sample(self, day: int) -> None:
        self._sample_rss()
        for node in self.nodes:
            note = self._kept_checkpoint(node)
            if note:
                node.checkpoints.add(note)

    @staticmethod
    def _kept_checkpoint(node: Node) -> str:
        path = node.home.ledger_path.with_name(node.home.ledger_path.name + ".sync.json")
        try:
            return str(json.loads(path.read_text(encoding="utf-8")).get("checkpoint", ""))
        except (OSError, ValueError):
            return ""  # being replaced this instant: the next sample reads it

    def _approvals(self) -> int:
        total = 0
        for node in self.nodes:
            with contextlib.suppress(OSError):
                with open(node.trace, "rb") as f:
                    total += sum(1 for _ in f)
        return total

    # -- after the week ----------------------------------------------------------------------

    def behind(self) -> list[Node]:
        """Terminals whose ledger has entries the central does not hold yet."""
        out = []
        for node in self.nodes:
            head, synced = ledger_progress(node.home.ledger_path)
            if synced < head:
                out.append(node)
        return out

    def _drain(self) -> None:
        started = time.monotonic()
        deadline = started + self.drain_limit
        while time.monotonic() < deadline:
            self._watch()
            if not self.behind():
                break
            time.sleep(1.0)
        self.timings.drain_s = time.monotonic() - started

    def _stop_all(self) -> None:
        for node in self.nodes:
            node.off = True
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(30)
            except subprocess.TimeoutExpired:
                self._kill(node)
        for node in self.nodes:
            self._sample_checkpoint_only(node)

    def _sample_checkpoint_only(self, node: Node) -> None:
        note = self._kept_checkpoint(node)
        if note:
            node.checkpoints.add(note)

    def final_sync(self) -> None:
        """A clean sync by the product's client for any terminal still behind, or with days
        it has not reported, as the terminal's next boot would make."""
        assert self.clock is not None
        clock = self.clock
        for node in self.nodes:
            head, synced = ledger_progress(node.home.ledger_path)
            state = node.home.ledger_path.with_name(node.home.ledger_path.name + ".sync.json")
            unreported = json.loads(state.read_text()).get("days_unreported") \
                if state.exists() else []
            if synced >= head and not unreported:
                continue
            self.timings.final_syncs += 1
            config = node.home.config()
            with SyncClient(node.home.ledger_path, node.home.terminal_key(config),
                            self.srv_url(), config.keys.central_public_key,
                            clock=clock.now, synchronised=lambda: True,
                            max_retries=10) as client:
                client.sync_once()
            self._sample_checkpoint_only(node)

    def srv_url(self) -> str:
        assert self.srv is not None
        return self.srv.url

    def stop_central(self) -> None:
        if self.srv is not None:
            self.srv.stop()

    def close(self) -> None:
        self.stop_central()
        for node in self.nodes:
            node.proxy.close()
        if self.pg is not None:
            self.pg.destroy()
            self.pg = None


def first_sync(home: Home) -> None:
    """The sync a technician runs after provisioning (``localpay sync --once``): it brings
    the rider profiles the validator's fares depend on."""
    config = home.config()
    with SyncClient(home.ledger_path, home.terminal_key(config), config.central.url,
                    config.keys.central_public_key) as client:
        client.sync_once()


def vm_rss_kb(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def ledger_progress(path: Path) -> tuple[int, int]:
    """(head seq, synced up to) of a ledger, read only, beside its running writer."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        head = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM entries").fetchone()[0]
        synced = conn.execute("SELECT synced_upto FROM sync_state").fetchone()[0]
    finally:
        conn.close()
    return int(head), int(synced)
