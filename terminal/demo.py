"""``localpay demo``: a simulated morning on a validator and a till, network down.

Everything runs through the real core, the virtual reader and real ledgers in a scratch
home folder: bus taps, a duplicate tap, a hot-listed card, shop payments, a payment over
the offline limit, one over the card's known balance, and a refund.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers import wait
from drivers.emv_card import EmvCard
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
