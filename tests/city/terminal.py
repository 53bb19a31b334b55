"""One terminal of the simulated city, as its own process: ``python -m tests.city.terminal
SPEC`` (SPEC: the JSON of :class:`TerminalSpec`).

It opens its provisioned home the way ``terminal.home.open_terminal`` does (the one-writer
hold, the keys, the ledger) but builds the :class:`~terminal.core.Terminal` itself, to hand
it the simulated clock (:mod:`tests.city.simclock`): the core's wall clock and a
:class:`~terminal.clock.ClockTrust` judging that clock. Presentations go through the real
core, card applications and ledger by the virtual reader, as ``localpay simulate`` drives
them; the product's :class:`~sync.client.SyncClient` syncs in its background thread, as
``localpay run`` starts it, against the URL of the signed config (a fault proxy, here).

Each approval is appended to the trace file once its entry is durable, one ``write`` per
line on an O_APPEND descriptor (as ``run --trace`` does): those lines are what riders and
clerks saw. A kill -9 leaves whole lines.

Clocks: the simulated clock stands for a wall clock kept by NTP (``ntp`` answers True). A
terminal booted at the epoch (``epoch``) reads 1970 plus the time since its boot, with no
NTP, until its first successful sync round; then its clock is set (what timesyncd does
once the network answers: the first verified answer of this boot, which carries the
central's time) and NTP reports it in sync. The core's trust in it goes by the
product's own rules (``terminal.clock``): ``unknown`` while it reads 1970. The boot clock
given to :class:`~terminal.clock.ClockTrust` names a boot of its own, so a central time the
sync client kept on the real boot clock is not carried across the simulated nights.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from drivers.virtual import VirtualReader
from offline_ledger import boot_now
from sync.client import SyncClient
from terminal.clock import ClockTrust
from terminal.core import Decision, Terminal
from terminal.home import Home
from terminal.qr import campaign
from tests.city.population import SIGNED_CAMPAIGN_POINTS, CityPlan
from tests.city.simclock import SimClock

log = logging.getLogger("city.terminal")


@dataclass(frozen=True)
class TerminalSpec:
    home: str
    clock: str
    plan: str
    index: int
    boot: int
    trace: str
    epoch: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class TerminalClock:
    """The simulated wall clock of this boot (see the module docstring)."""

    def __init__(self, sim: SimClock, epoch: bool) -> None:
        self.sim = sim
        self.booted = time.monotonic()
        # an epoch boot reads 1970 + the time since boot until set
        self.offset = -sim.now() if epoch else 0.0
        self.set_at: float | None = None if epoch else self.booted

    def now(self) -> float:
        return self.sim.now() + self.offset

    def ntp(self) -> bool:
        return self.set_at is not None

    def boot(self) -> tuple[str, int]:
        return (f"city-{os.getpid()}", int((time.monotonic() - self.booted) * 1000))

    def set_from_network(self) -> None:
        if self.set_at is None:
            self.offset = 0.0
            self.set_at = time.monotonic()


class Driver:
    """Presentations at one terminal: who comes, what they pay, refunds and campaign codes."""

    def __init__(self, spec: TerminalSpec, plan: CityPlan, terminal: Terminal,
                 clock: TerminalClock) -> None:
        self.spec = spec
        self.plan = plan
        self.terminal = terminal
        self.clock = clock
        self.rng = random.Random(f"{plan.seed}/{spec.index}/{spec.boot}")
        self.reader = VirtualReader("city")
        self.trace = os.open(spec.trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.recent: list[int] = []
        self.codes = 0
        self.campaign_key = plan.campaign_key()

    def _present(self, uid: bytes | None = None, code: str | None = None) -> Any:
        if uid is not None:
            self.reader.present_uid(uid)
        else:
            assert code is not None
            self.reader.present_code(code)
        p = self.reader.poll(1.0)
        if p is None:  # pragma: no cover - the queue was just filled
            raise RuntimeError("the virtual reader lost a presentation")
        return p

    def _card(self) -> bytes:
        if self.terminal.role == "validator" or self.rng.random() < 0.3:
            return self.plan.rider_uid(self.rng.randrange(self.plan.riders))
        return self.plan.shopper_uid(self.rng.randrange(self.plan.shoppers))

    def _record(self, decision: Decision) -> None:
        if decision.approved and decision.entry is not None:
            line = json.dumps({"t": round(time.time(), 3), "seq": decision.entry.seq,
                               "entry_hash": decision.entry.entry_hash.hex(),
                               "kind": decision.entry.kind, "amount": decision.amount,
                               "boot": self.spec.boot}) + "\n"
            os.write(self.trace, line.encode())

    def step(self) -> None:
        """One customer: a tap or a payment, now and then a refund, a void or a campaign
        code collected by the card presented after it."""
        t = self.terminal
        roll = self.rng.random()
        if roll < (0.04 if t.role == "till" else 0.01):
            self._campaign_code()
        if t.role == "validator":
            self._record(t.tap(self._present(self._card())))
            return
        if roll > 0.96 and self.recent:
            seq = self.recent.pop(self.rng.randrange(len(self.recent)))
            if self.rng.random() < 0.5:
                d = t.void(seq)
            else:
                d = t.refund(seq, self.rng.randrange(100, 1001, 100))
            self._record(d)
            return
        amount = self.rng.randrange(1_000, 10_001, 100)
        d = t.pay(self._present(self._card()), amount)
        self._record(d)
        if d.approved and d.entry is not None and d.entry.kind == "payment":
            self.recent = [*self.recent[-40:], d.entry.seq]

    def _campaign_code(self) -> None:
        c = self.plan.campaigns[self.rng.randrange(len(self.plan.campaigns))]
        self.codes += 1
        wallet = f"w{self.spec.index}-{self.spec.boot}-{self.codes}"
        now = int(self.clock.now())
        code = campaign.make(self.campaign_key, c.campaign_id, wallet, SIGNED_CAMPAIGN_POINTS,
                             valid_from=max(now - 3600, 0))
        p = self._present(code=code)
        if self.terminal.role == "till":
            self.terminal.pay(p, 1_000)  # a code at a till charges nothing
        else:
            self.terminal.tap(p)

    def close(self) -> None:
        self.reader.close()
        os.close(self.trace)


def run(spec: TerminalSpec) -> None:
    sim = SimClock.from_json(spec.clock)
    plan = CityPlan(**_plan_fields(json.loads(spec.plan)))
    clock = TerminalClock(sim, spec.epoch)
    home = Home(Path(spec.home))
    config = home.config()
    hold = home.own(holder="city terminal")
    key = home.terminal_key(config)
    tokens = home.token_key(config)
    ledger = home.open_ledger(key, config.terminal.id, hold=hold)
    trust = ClockTrust(ledger, wall=clock.now, ntp=clock.ntp, boot=clock.boot)
    terminal = Terminal(config, ledger, tokens, clock=clock.now, clock_trust=trust)
    client = SyncClient(home.ledger_path, key, config.central.url,
                        config.keys.central_public_key, batch_size=config.central.batch_size,
                        interval_s=config.central.sync_interval_s, clock=clock.now,
                        synchronised=clock.ntp)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client.start()
    driver = Driver(spec, plan, terminal, clock)
    gap = plan.tap_gap_s * (2 if terminal.role == "till" else 1)
    end = sim.t0 + sim.days * sim.day_s
    booted_ms = boot_now()[1]
    parent = os.getppid()
    try:
        while not stop.is_set():
            if os.getppid() != parent:
                break  # the run that started this terminal is gone: so is the city
            anchor = client.anchor
            if anchor is not None and anchor.boot_ms > booted_ms:
                clock.set_from_network()  # a verified answer of this boot carried the time
            if sim.t0 <= time.time() < end:
                driver.step()
            stop.wait(driver.rng.uniform(0.5, 1.5) * gap)
    finally:
        client.close()
        driver.close()
        ledger.close()


def _plan_fields(doc: dict[str, Any]) -> dict[str, Any]:
    from tests.city.population import CampaignPlan

    doc["campaigns"] = tuple(CampaignPlan(**c) for c in doc["campaigns"])
    return doc


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    spec = TerminalSpec(**json.loads(argv[0]))
    run(spec)


if __name__ == "__main__":
    main(sys.argv[1:])
