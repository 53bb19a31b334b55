"""Who is paying: turning a presentation into a card identity.

The full PAN (or a UID) never leaves this step: what goes on is a keyed token
(HMAC-SHA-256 with the scheme's token key, PCI DSS 3.5.1) and a display form.
Card applications register themselves in :data:`APPLICATIONS`; the first that claims a
presentation reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# defined below terminal/ and central/, which both compute it; re-exported for card apps
from firmware_cfg.card_tokens import card_token as card_token
from localpay.errors import TransactionError
from localpay.types import Presentation
from terminal.risk import Reason


class Declined(TransactionError):
    """Raised by a card application that declines by itself (expired QR, EMV decline).

    Part of the application contract: an application raises it from ``read`` with the
    reason the screen shows; the core turns it into a declined decision.
    """

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(detail or reason.message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CardIdentity:
    """A card (or wallet) as the rest of the terminal sees it: never a full PAN."""

    token: str
    display: str
    scheme: str
    label: str = ""
    aid: str = ""
    atc: int | None = None
    #: the rider category (adult, youth, child, or one the config adds) where the card itself
    #: carries it; ``None`` when it does not, and the central profile or the config's default
    #: decides. No application sets it yet: this is the hook for one that will.
    rider: str | None = None
    #: UID-only cards are weaker and get lower offline limits
    weak: bool = False
    #: one-time QR nonce and its expiry (ms), checked against and recorded in the ledger
    nonce: tuple[str, int] | None = None
    #: offline allowance a wallet QR carries, if any
    allowance: int | None = None
    #: a card application's own offline verdict (EMV terminal risk management); a decline
    #: reason code here declines the payment
    verdict: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def display_pan(pan: str) -> str:
    """First 6 and last 4 digits, the rest masked (PCI DSS 3.3)."""
    if len(pan) < 13:
        return "*" * len(pan)
    return f"{pan[:6]}{'*' * (len(pan) - 10)}{pan[-4:]}"


@dataclass(frozen=True, slots=True)
class ReadContext:
    """What a card application may use while reading: keys, clock and the amount."""

    token_key: bytes
    amount: int
    now_ms: int
    options: dict[str, Any] = field(default_factory=dict)


#: An application: (claims(presentation) -> bool, read(presentation, ctx) -> CardIdentity)
Application = tuple[Callable[[Presentation], bool], Callable[[Presentation, ReadContext],
                                                                CardIdentity]]


def _is_uid_card(p: Presentation) -> bool:
    return p.kind == "card" and (p.channel is None or p.protocol == "UID")


def read_uid(p: Presentation, ctx: ReadContext) -> CardIdentity:
    """A UID-only card (MIFARE Classic / Ultralight style): the UID is all there is."""
    uid = p.uid.hex().upper()
    return CardIdentity(
        token=card_token(ctx.token_key, "uid", p.uid),
        display=f"UID {uid[:4]}…{uid[-2:]}" if len(uid) > 6 else f"UID {uid}",
        scheme="uid",
        weak=True,
    )


#: Card applications in the order they are tried. Other modules append to it.
APPLICATIONS: list[tuple[str, Application]] = [
    ("uid", (_is_uid_card, read_uid)),
]


def register(name: str, claims: Callable[[Presentation], bool],
             read: Callable[[Presentation, ReadContext], CardIdentity],
             *, first: bool = False) -> None:
    """Add a card application (``first`` puts it before the others)."""
    entry = (name, (claims, read))
    if first:
        APPLICATIONS.insert(0, entry)
    else:
        APPLICATIONS.append(entry)


def find_application(p: Presentation) -> tuple[str, Callable[[Presentation, ReadContext],
                                                            CardIdentity]] | None:
    for name, (claims, read) in APPLICATIONS:
        if claims(p):
            return name, read
    return None
