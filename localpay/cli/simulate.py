"""Drive many presentations through the real core, reader interface and ledger.

Used by ``localpay simulate`` (and its ``--trace`` observers in the crash tests) and by
``localpay bench``. Cards are virtual UID cards from a pool large enough that the duplicate
window and per-card limits do not decline them; the terminal-wide exposure limit is lifted,
since a simulation is a long run with no sync.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click

from drivers.virtual import VirtualReader
from firmware_cfg.config import Config
from localpay.cli.common import Context, UserError, db_option, pass_ctx, scratch_only
from terminal.core import Decision, Terminal
from terminal.home import open_terminal


def simulation_config(config: Config, role: str) -> Config:
    config = config.replace("terminal", role=role)
    return config.replace(
        "risk", terminal_exposure=10**15, card_offline_amount=10**12,
        uid_card_offline_amount=10**12, card_offline_count=10**9,
        # a host without NTP judges its clock unknown; like the exposure, the allowance for
        # that would end a long run in declines that measure nothing
        unknown_clock_amount=10**15,
    )


#: cards in the virtual pool: the UID's last six bytes number them
MAX_CARDS = 2**48


def card_uid(n: int) -> bytes:
    """The n-th card of the pool: 7-byte UIDs, first byte 0x08 (random-UID range)."""
    return b"\x08" + n.to_bytes(6, "big")


class Latencies:
    """Latencies counted per microsecond in a table made once, not kept one by one: a list of
    every tap's figure grew by 32 bytes a tap (a 100-million-tap run from 44 to 99 MB within
    minutes, 3 GB by its end). Figures are given to the microsecond, so the counts lose
    nothing printed; the rare tap of 100 ms or more is counted apart."""

    #: microseconds the table counts one by one (800 KB of counts)
    TABLE_US = 100_000

    def __init__(self) -> None:
        self.table = array("Q", bytes(8 * self.TABLE_US))
        self.slow: Counter[int] = Counter()
        self.n = 0
        self.total_us = 0
        self.max_us = 0

    def add(self, ms: float) -> None:
        us = max(0, round(ms * 1000))
        if us < self.TABLE_US:
            self.table[us] += 1
        else:
            self.slow[us] += 1
        self.n += 1
        self.total_us += us
        self.max_us = max(self.max_us, us)

    def percentile(self, pct: float) -> float:
        """Nearest-rank percentile (the smallest value with at least ``pct`` % of the taps
        at or below it), in ms."""
        if not self.n:
            return 0.0
        rank = max(1, math.ceil(pct * self.n / 100))
        seen = 0
        for us, count in enumerate(self.table):
            seen += count
            if seen >= rank:
                return us / 1000
        for us in sorted(self.slow):
            seen += self.slow[us]
            if seen >= rank:
                return us / 1000
        raise AssertionError("ranks past the count")  # pragma: no cover - rank <= n

    @property
    def mean(self) -> float:
        return self.total_us / self.n / 1000 if self.n else 0.0


@dataclass
class Figures:
    role: str
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    latencies: Latencies = field(default_factory=Latencies)
    seconds: float = 0.0

    def as_dict(self, terminal: Terminal) -> dict[str, object]:
        lat = self.latencies
        n = lat.n
        head = terminal.ledger.head if terminal.ledger else None
        return {
            "role": self.role,
            "presentations": n,
            "approved": self.outcomes["approved"],
            "declined": self.outcomes["declined"],
            "already_paid": self.outcomes["already_paid"],
            "decline_reasons": dict(self.reasons),
            "seconds": round(self.seconds, 3),
            "taps_per_s": round(n / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": lat.percentile(50),
            "p99_ms": lat.percentile(99),
            "max_ms": lat.max_us / 1000,
            "mean_ms": round(lat.mean, 3),
            "head_seq": head.seq if head else 0,
            "head_hash": head.entry_hash.hex() if head else "",
        }


def run(
    terminal: Terminal,
    count: int,
    *,
    first_card: int = 0,
    seed: int = 1,
    on_decision: Callable[[Decision], None] | None = None,
) -> Figures:
    """Present ``count`` cards through a virtual reader, one after another."""
    reader = VirtualReader("simulated")
    rng = random.Random(seed)
    figures = Figures(terminal.role)
    started = time.perf_counter()
    try:
        for i in range(count):
            reader.present_uid(card_uid(first_card + i))
            p = reader.poll(1.0)
            if p is None:  # pragma: no cover - the queue was just filled
                raise RuntimeError("virtual reader lost a presentation")
            if terminal.role == "validator":
                decision = terminal.tap(p)
            else:
                decision = terminal.pay(p, rng.randrange(1_000, 10_001, 100))
            figures.latencies.add((time.monotonic() - p.sensed_at) * 1000)
            figures.outcomes[decision.outcome] += 1
            if decision.reason is not None:
                figures.reasons[decision.reason.value] += 1
            if on_decision is not None:
                on_decision(decision)
    finally:
        reader.close()
    figures.seconds = time.perf_counter() - started
    return figures


# -- the command ------------------------------------------------------------------------


@click.command()
@click.option("--role", type=click.Choice(["validator", "till"]), default="validator",
              show_default=True)
@click.option("--taps", type=click.IntRange(min=1), default=1000, show_default=True,
              help="How many presentations to drive through the terminal.")
@db_option
@click.option("--trace", is_flag=True,
              help="Print one JSON line per approval, flushed only once it is durable.")
@click.option("--first-card", type=click.IntRange(min=0), default=0,
              help="Number of the first card of the virtual pool.")
@pass_ctx
def simulate(ctx: Context, role: str, taps: int, db: Path | None, trace: bool,
             first_card: int) -> None:
    """Drive N presentations through the real core and ledger; print figures as JSON.

    Keys are made in the home folder on first use. The terminal-wide exposure limit and the
    unknown clock's allowance are lifted, as for a long run with no sync. A provisioned
    terminal's ledger is real money: there, give --db FILE for a scratch ledger.
    """
    scratch_only(ctx, db, "simulate")
    if first_card + taps > MAX_CARDS:
        raise UserError(f"--first-card: the virtual pool's cards are numbered 0 to "
                        f"{MAX_CARDS - 1:,}; {first_card:,} plus {taps:,} taps goes past it")
    config = simulation_config(ctx.home.config(), role)
    terminal = open_terminal(ctx.home, config, ledger_path=db, create_keys=True, strict=True)

    def emit(decision: Decision) -> None:
        if decision.approved and decision.entry is not None:
            sys.stdout.write(json.dumps({"seq": decision.entry.seq,
                                         "entry_hash": decision.entry.entry_hash.hex(),
                                         "amount": decision.amount}) + "\n")
            sys.stdout.flush()

    try:
        figures = run(terminal, taps, first_card=first_card,
                      on_decision=emit if trace else None)
    finally:
        if terminal.ledger is not None:
            terminal.ledger.close()
    click.echo(json.dumps(figures.as_dict(terminal)))


COMMANDS = [simulate]
