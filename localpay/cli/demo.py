"""``localpay demo``: a simulated morning on a validator and a till, network down.

Everything runs through the real core, the virtual reader and real ledgers in a scratch
home folder: bus taps, a duplicate tap, a hot-listed card, shop payments, a payment over
the offline limit, one over the card's known balance, and a refund.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers import wait
from drivers.emulators.emv_card import EmvCard
from drivers.virtual import VirtualCard, VirtualReader
from firmware_cfg.config import DEFAULT
from firmware_cfg.keys import DEMO_TOKEN_KEY, demo_issuer_key, public_hex
from offline_ledger import Ledger
from terminal.cards import card_token
from terminal.core import Decision, Terminal
from terminal.qr import wallet

SEOUL = ZoneInfo("Asia/Seoul")


@dataclass
class Step:
    at: str
    terminal: str
    what: str
    decision: Decision


@dataclass
class DemoResult:
    steps: list[Step] = field(default_factory=list)
    ledgers: dict[str, tuple[int, str, str]] = field(default_factory=dict)


class MorningClock:
    """A clock that starts at 07:00 Seoul time today and moves only when told."""

    def __init__(self) -> None:
        today = dt.datetime.now(SEOUL).date()
        self.now = dt.datetime.combine(today, dt.time(7, 0), SEOUL).timestamp()

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


def run(home: Path, on_step: Callable[[Step], None] | None = None) -> DemoResult:
    """Play the morning in ``home`` (a fresh folder); return every decision and both heads."""
    result = DemoResult()
    clock = MorningClock()
    reader = VirtualReader("demo reader")

    def record(terminal: str, what: str, decision: Decision) -> None:
        step = Step(clock.label(), terminal, what, decision)
        result.steps.append(step)
        if on_step:
            on_step(step)

    demo = DEFAULT.replace("keys", issuer_public_key=public_hex(demo_issuer_key()))
    bus_cfg = demo.replace("terminal", id="BUS-85-0001", role="validator", place="85")
    shop_cfg = demo.replace("terminal", id="SHOP-0427-01", role="till", place="M0427",
                            merchant_category="local_food", merchant_name="Ilsan Farm Store")
    bus_ledger = Ledger(home / "validator" / "ledger.sqlite", key=Ed25519PrivateKey.generate(),
                        terminal_id=bus_cfg.terminal.id)
    shop_ledger = Ledger(home / "till" / "ledger.sqlite", key=Ed25519PrivateKey.generate(),
                         terminal_id=shop_cfg.terminal.id)
    try:
        # What the last sync (yesterday evening) left behind: a deny list and a balance.
        hot = card_token(DEMO_TOKEN_KEY, "uid", RIDERS["hot-listed card"])
        bus_ledger.apply_deny_delta(1, {hot: "reported stolen"})
        shop_ledger.apply_deny_delta(1, {hot: "reported stolen"})
        shop_ledger.set_balances({card_token(DEMO_TOKEN_KEY, "uid", RIDERS["Dohyun"]): 4_000}, 0)
        bus = Terminal(bus_cfg, bus_ledger, DEMO_TOKEN_KEY, clock=clock)
        shop = Terminal(shop_cfg, shop_ledger, DEMO_TOKEN_KEY, clock=clock)

        def tap(name: str, after: float) -> None:
            clock.advance(after)
            reader.present_uid(RIDERS[name])
            p = wait(reader, 1.0)
            record("validator", f"{name} taps", bus.tap(p))

        def pay(name: str, amount: int, after: float) -> Decision:
            clock.advance(after)
            reader.present_uid(RIDERS[name])
            p = wait(reader, 1.0)
            decision = shop.pay(p, amount)
            record("till", f"{name} pays {amount:,} won", decision)
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
        record("validator", "a bank card (EMV) taps", bus.tap(wait(reader, 1.0)))
        clock.advance(90)
        code = wallet.make(demo_issuer_key(), "W-GY-0001", now=clock(), allowance=20_000)
        for what in ("Jiwoo pays 4,500 won by wallet QR", "the same QR shown again"):
            reader.present_code(code)
            record("till", what, shop.pay(wait(reader, 1.0), 4_500))
        if groceries.entry is not None:
            clock.advance(600)
            record("till", f"refund 2,800 won of entry {groceries.entry.seq}",
                   shop.refund(groceries.entry.seq, 2_800))
        for name, ledger in (("validator", bus_ledger), ("till", shop_ledger)):
            report = ledger.verify()
            result.ledgers[name] = (ledger.head.seq, ledger.head.entry_hash.hex(),
                                    report.summary())
    finally:
        reader.close()
        bus_ledger.close()
        shop_ledger.close()
    return result


# -- the command ------------------------------------------------------------------------


@click.command()
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the demo's ledgers in this folder instead of a temporary one.")
@click.option("--screenshots", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also save a PNG of every screen state (both roles and languages, "
              "800x480 and 1280x720) in this folder.")
def demo(keep: Path | None, screenshots: Path | None) -> None:
    """Play a simulated morning on a validator and a till, with the network down.

    Needs no config, no server and no hardware: virtual cards, embedded defaults.
    """
    def show(step: Step) -> None:
        d = step.decision
        mark = {"approved": "APPROVED", "declined": "DECLINED", "already_paid": "ALREADY PAID"}
        why = f" ({d.reason.value}: {d.reason.message})" if d.reason else ""
        if d.outcome == "already_paid":
            why = f" ({d.detail})"
        if d.approved and d.points:
            week = f", {d.points_week:,} this week" if d.points_week is not None else ""
            why += f" (+{d.points:,} points{week})"
        click.echo(f"{step.at}  {step.terminal:<9}  {step.what:<38} {mark[d.outcome]}{why}")

    click.echo("localpay demo: a morning on bus route 85 and at a local-food shop, offline\n")
    with tempfile.TemporaryDirectory(prefix="localpay-demo-") as tmp:
        home = keep or Path(tmp)
        result = run(home, show)
    _demo_summary(result)
    if screenshots is not None:
        from kiosk_ui import save_screenshots

        saved = save_screenshots(screenshots)
        click.echo(f"\n{len(saved)} screenshots in {screenshots}")


def _demo_summary(result: Any) -> None:
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
    for name, (seq, head, summary) in result.ledgers.items():
        click.echo(f"{name:<10} head seq {seq}  hash {head[:16]}…  {summary}")


COMMANDS = [demo]
