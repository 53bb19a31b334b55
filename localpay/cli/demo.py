"""``localpay demo``: a morning offline on a validator and a till, then the sync.

Everything runs through the real core, the virtual reader and real ledgers in a scratch
home folder: bus taps, a duplicate tap, a hot-listed card, shop payments, a payment over
the offline limit, one over the card's known balance, and a refund. Then connectivity
returns: an embedded central service takes both ledgers onto its chain with every proof
checked by the terminals, and credits the day's incentive points
(:mod:`localpay.cli.demo_central`).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers import wait
from drivers.emulators.emv_card import EmvCard
from drivers.virtual import VirtualCard, VirtualReader
from firmware_cfg.config import DEFAULT, Config
from firmware_cfg.keys import DEMO_TOKEN_KEY, demo_issuer_key, public_hex
from localpay.cli.central import statement_lines
from localpay.errors import ConfigError
from offline_ledger import Ledger
from terminal.cards import card_token
from terminal.core import Decision, Terminal
from terminal.qr import wallet

if TYPE_CHECKING:
    from localpay.cli.demo_central import CentralResult

SEOUL = ZoneInfo("Asia/Seoul")
#: whose points statement the demo shows
RIDER = "Minji"
#: what the kiosk calls a decision's transaction (``kiosk_ui.model.Action``)
Action = Literal["tap", "payment", "refund"]


@dataclass
class Step:
    number: int
    at: str
    terminal: str
    what: str
    decision: Decision
    action: Action
    #: the terminal's ledger head right after the decision (for its status bar)
    head_seq: int


@dataclass
class DemoResult:
    day: dt.date
    steps: list[Step] = field(default_factory=list)
    ledgers: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    configs: dict[str, Config] = field(default_factory=dict)
    central: CentralResult | None = None


class MorningClock:
    """A clock that starts at 07:00 Seoul time on ``day`` and moves only when told."""

    def __init__(self, day: dt.date) -> None:
        self.now = dt.datetime.combine(day, dt.time(7, 0), SEOUL).timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def label(self) -> str:
        return dt.datetime.fromtimestamp(self.now, SEOUL).strftime("%H:%M:%S")


RIDERS = {
    "Minji": bytes.fromhex("08a10001"),
    "Junho": bytes.fromhex("08a10002"),
    "Seoyeon": bytes.fromhex("08a10003"),
    "Dohyun": bytes.fromhex("08a10004"),
    "hot-listed card": bytes.fromhex("08bad001"),
}


def run(home: Path, on_step: Callable[[Step], None] | None = None, *,
        day: dt.date | None = None, central: bool = True) -> DemoResult:
    """Play the morning of ``day`` in ``home`` (a fresh folder), then, with ``central``,
    sync both terminals with an embedded central service in ``home / "central"``.

    ``day`` defaults to the most recent weekday before today that earns bus points.
    Returns every decision, both ledger heads and what the central service made of them.
    """
    # Imported here, not at the top: the central service's modules and the HTTP client
    # would add ~0.2 s to the start of every `localpay` command, and only the demo needs them.
    from localpay.cli import demo_central

    if any((home / sub).exists() for sub in ("validator", "till", "central")):
        raise ConfigError(f"{home} already holds a demo: give a new or empty folder")
    result = DemoResult(day or demo_central.demo_day())
    clock = MorningClock(result.day)
    reader = VirtualReader("demo reader")
    bus_key, shop_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()

    demo = DEFAULT.replace("keys", issuer_public_key=public_hex(demo_issuer_key()))
    bus_cfg = demo.replace("terminal", id="BUS-85-0001", role="validator", place="85")
    shop_cfg = demo.replace("terminal", id="SHOP-0427-01", role="till", place="M0427",
                            merchant_category="local_food", merchant_name="Ilsan Farm Store")
    result.configs = {"validator": bus_cfg, "till": shop_cfg}
    bus_ledger = Ledger(home / "validator" / "ledger.sqlite", key=bus_key,
                        terminal_id=bus_cfg.terminal.id)
    shop_ledger = Ledger(home / "till" / "ledger.sqlite", key=shop_key,
                         terminal_id=shop_cfg.terminal.id)
    ledgers = {"validator": bus_ledger, "till": shop_ledger}

    def record(terminal: str, what: str, action: Action, decision: Decision) -> None:
        step = Step(len(result.steps) + 1, clock.label(), terminal, what, decision, action,
                    ledgers[terminal].head.seq)
        result.steps.append(step)
        if on_step:
            on_step(step)

    # What the last sync (yesterday evening) left behind: a deny list and a balance.
    hot = card_token(DEMO_TOKEN_KEY, "uid", RIDERS["hot-listed card"])
    deny = {hot: "reported stolen"}
    balances = {card_token(DEMO_TOKEN_KEY, "uid", RIDERS["Dohyun"]): 4_000}
    try:
        bus_ledger.apply_deny_delta(1, deny)
        shop_ledger.apply_deny_delta(1, deny)
        shop_ledger.set_balances(balances, 1)
        bus = Terminal(bus_cfg, bus_ledger, DEMO_TOKEN_KEY, clock=clock)
        shop = Terminal(shop_cfg, shop_ledger, DEMO_TOKEN_KEY, clock=clock)

        def tap(name: str, after: float) -> None:
            clock.advance(after)
            reader.present_uid(RIDERS[name])
            p = wait(reader, 1.0)
            record("validator", f"{name} taps", "tap", bus.tap(p))

        def pay(name: str, amount: int, after: float) -> Decision:
            clock.advance(after)
            reader.present_uid(RIDERS[name])
            p = wait(reader, 1.0)
            decision = shop.pay(p, amount)
            record("till", f"{name} pays {amount:,} won", "payment", decision)
            return decision

        tap("Minji", 0)
        tap("Minji", 4)  # taps again by mistake: already paid, not a second fare
        tap("Junho", 40)
        tap("Seoyeon", 50)
        tap("hot-listed card", 30)
        tap("Dohyun", 70)
        groceries = pay("Minji", 8_800, 1800)
        pay("Junho", 14_000, 300)  # over the offline limit for one payment
        pay("Dohyun", 5_200, 240)  # more than the balance the last sync reported
        pay("Seoyeon", 3_500, 120)
        pay("hot-listed card", 2_000, 60)
        # A bank card (EMV contactless) on the bus, and the wallet app's signed QR at the
        # till, shown twice: the second showing is a replay.
        clock.advance(30)
        reader.present_card(VirtualCard(uid=bytes.fromhex("08c0ffee"), handler=EmvCard(
            pan="9410123456781234", label="LOCALPAY CHECK").handle))
        record("validator", "a bank card (EMV) taps", "tap", bus.tap(wait(reader, 1.0)))
        clock.advance(90)
        code = wallet.make(demo_issuer_key(), "W-GY-0001", now=clock(), allowance=20_000)
        for what in ("Jiwoo pays 4,500 won by wallet QR", "the same QR shown again"):
            reader.present_code(code)
            record("till", what, "payment", shop.pay(wait(reader, 1.0), 4_500))
        if groceries.entry is not None:
            clock.advance(600)
            record("till", f"refund 2,800 won of entry {groceries.entry.seq}", "refund",
                   shop.refund(groceries.entry.seq, 2_800))
        for name, ledger in ledgers.items():
            report = ledger.verify()
            result.ledgers[name] = (ledger.head.seq, ledger.head.entry_hash.hex(),
                                    report.summary())
    finally:
        reader.close()
        bus_ledger.close()
        shop_ledger.close()
    if central:
        terminals = [demo_central.DemoTerminal(role, result.configs[role].terminal.id,
                                               home / role / "ledger.sqlite", key)
                     for role, key in (("validator", bus_key), ("till", shop_key))]
        rider = (RIDER, card_token(DEMO_TOKEN_KEY, "uid", RIDERS[RIDER]))
        result.central = demo_central.reconcile(home / "central", terminals, deny=deny,
                                                balances=balances, rider=rider)
    return result


def save_screens(folder: Path, result: DemoResult,
                 size: tuple[int, int] = (800, 480)) -> list[Path]:
    """Save each decision of the demo as its terminal showed it: one PNG per step, named
    ``{step:02d}-{terminal}-{outcome}.png``, in the terminal's own language."""
    # Headless: the screens are drawn onto an off-screen surface. pygame's greeting on
    # import would land in the demo's output.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    from kiosk_ui.draw import Painter
    from kiosk_ui.fonts import load_fonts
    from kiosk_ui.model import KioskModel, Result, ResultView, SyncView
    from kiosk_ui.screens import Statics, render

    folder.mkdir(parents=True, exist_ok=True)
    surface = pygame.Surface(size)
    painter = Painter(surface, load_fonts())
    models: dict[str, KioskModel] = {}
    for role, cfg in result.configs.items():
        t = cfg.terminal
        models[role] = KioskModel(role=t.role, language=t.language, place=t.place,
                                  merchant_name=t.merchant_name,
                                  fare=cfg.fares.default_fare if t.role == "validator" else 0,
                                  demo=True, clock=lambda: 0.0)
    saved: list[Path] = []
    for step in result.steps:
        # The same events the kiosk's engine sends after a decision: the ledger's state for
        # the status bar (offline all morning, nothing synced yet), then the result.
        model = models[step.terminal]
        model.on_event(SyncView(online=False, waiting=step.head_seq, head_seq=step.head_seq))
        model.on_event(Result(ResultView.from_decision(step.decision, step.action)))
        render(painter, model.snapshot(), Statics())
        outcome = step.decision.outcome.replace("_", "-")
        path = folder / f"{step.number:02d}-{step.terminal}-{outcome}.png"
        pygame.image.save(surface, str(path))
        saved.append(path)
    return saved


# -- the command ------------------------------------------------------------------------


@click.command()
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the demo's ledgers, sync state and central store in this (new or "
              "empty) folder instead of a temporary one.")
@click.option("--screenshots", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also save each decision's screen, as the rider or clerk saw it, as a PNG "
              "(800x480, one per step) in this folder.")
def demo(keep: Path | None, screenshots: Path | None) -> None:
    """Play a morning offline on a validator and a till, then sync with the central chain.

    The central service runs embedded (SQLite, 127.0.0.1); it checks and logs both ledgers,
    and credits the day's incentive points. Needs no config, no server and no hardware:
    virtual cards, embedded defaults.
    """
    from localpay.cli import demo_central  # see run()

    def show(step: Step) -> None:
        d = step.decision
        mark = {"approved": "APPROVED", "declined": "DECLINED", "already_paid": "ALREADY PAID",
                "claim_pending": "TAP CARD TO CLAIM"}
        why = f" ({d.reason.value}: {d.reason.message})" if d.reason else ""
        if d.outcome == "already_paid":
            why = f" ({d.detail})"
        if d.approved and d.points:
            week = f", {d.points_week:,} this week" if d.points_week is not None else ""
            why += f" (+{d.points:,} points{week})"
        click.echo(f"{step.number:02d}  {step.at}  {step.terminal:<9}  {step.what:<38} "
                   f"{mark[d.outcome]}{why}")

    day = demo_central.demo_day()
    click.echo("localpay demo: a morning on bus route 85 and at a local-food shop, offline, "
               "then the sync")
    click.echo(f"played on {day:%A %Y-%m-%d}: the most recent weekday before today that is "
               f"not a public holiday, so first rides earn bus points\n")
    with tempfile.TemporaryDirectory(prefix="localpay-demo-") as tmp:
        home = keep or Path(tmp)
        result = run(home, show, day=day)
        _demo_summary(result)
        if result.central is not None:
            _central_summary(result.central, kept=keep is not None)
    if screenshots is not None:
        saved = save_screens(screenshots, result)
        click.echo(f"\n{len(saved)} screenshots, one per step, in {screenshots}")


def _demo_summary(result: DemoResult) -> None:
    rows = []
    for name in ("validator", "till"):
        steps = [s for s in result.steps if s.terminal == name]
        outcomes = Counter(s.decision.outcome for s in steps)
        approved = [s.decision for s in steps if s.decision.approved]
        charged = sum(d.amount for d in approved if d.entry and d.entry.kind in ("tap", "payment"))
        refunded = sum(d.amount for d in approved if d.entry and d.entry.kind in ("refund", "void"))
        reasons = Counter(s.decision.reason.value for s in steps if s.decision.reason)
        rows.append((name, outcomes, charged, refunded, reasons))
    click.echo("\nSummary")
    header = f"{'terminal':<10} {'approved':>8} {'declined':>8} {'dup':>4} {'charged':>10} " \
             f"{'refunded':>9} {'net':>10}  declined because"
    click.echo(header)
    click.echo("-" * len(header))
    for name, outcomes, charged, refunded, reasons in rows:
        why = ", ".join(f"{k} x{v}" for k, v in sorted(reasons.items())) or "-"
        click.echo(f"{name:<10} {outcomes['approved']:>8} {outcomes['declined']:>8} "
                   f"{outcomes['already_paid']:>4} {charged:>10,} {refunded:>9,} "
                   f"{charged - refunded:>10,}  {why}")
    click.echo("\nLedgers")
    synced = {s.role: s for s in result.central.syncs} if result.central else {}
    for name, (seq, head, summary) in result.ledgers.items():
        sync = synced.get(name)
        upto = f"; synced up to {sync.synced_upto}" if sync else ""
        click.echo(f"{name:<10} head seq {seq}  hash {head[:16]}…  {summary}{upto}")


def _central_summary(c: CentralResult, *, kept: bool) -> None:
    click.echo(f"\nConnectivity returns: central service on {c.url} (SQLite in {c.data_dir})")
    click.echo(f"terminals registered: {', '.join(s.terminal_id for s in c.syncs)}")
    click.echo("\nSync")
    for s in c.syncs:
        m = s.summary
        click.echo(f"{s.role:<10} {s.terminal_id:<13} sent {m.sent} entries in {m.batches} "
                   f"batches, synced up to {s.synced_upto} of {s.head}, checkpoint size "
                   f"{s.checkpoint_size}")
        click.echo(f"{'':<24} received: deny list v{m.deny_version}, balances of {m.balances} "
                   f"card(s), this week's points of {m.points} card(s)")
        click.echo(f"{'':<24} sync state: {s.state_file}")
    receipts = sum(s.summary.batches for s in c.syncs)
    consistency = sum(s.consistency_proofs for s in c.syncs)
    click.echo(f"proofs: every inclusion and consistency proof verified by the terminals' "
               f"sync clients: {receipts} batch receipts, each a signed checkpoint and the "
               f"inclusion proof of the batch's last entry, and {consistency} consistency "
               f"proofs between the checkpoints each terminal kept (RFC 9162)")
    click.echo(f"\nCentral log: {c.log_size} entries. Latest checkpoint (C2SP signed note):")
    for line in c.checkpoint.splitlines():
        click.echo(f"  {line}" if line else "")
    click.echo(f"verifier key: {c.verifier}")
    click.echo("\nPoints credited")
    for rule, credits, points in c.credited:
        click.echo(f"{rule:<12} {credits:>3} credits {points:>7,} points")
    _statement(c)
    if kept:
        click.echo(f"\nSee it again: localpay central points --data {c.data_dir} "
                   f"--card {c.card_token}")


def _statement(c: CentralResult) -> None:
    # The layout of `localpay central points`, for the demo's rider.
    st = c.statement
    click.echo(f"\n{c.rider}'s points: card {c.card_token[:12]}… "
               f"(rider: {st['rider'] or 'from the taps'})")
    for line in statement_lines(st):
        click.echo(line)


COMMANDS = [demo]
