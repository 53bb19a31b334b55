"""Types shared by every package: what a reader hands to the terminal."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol


class CardChannel(Protocol):
    """A way to talk to the card that is in the field right now."""

    def transmit(self, apdu: bytes) -> bytes:
        """Send one command APDU; return response data followed by SW1 SW2."""
        ...


@dataclass(frozen=True, slots=True)
class Presentation:
    """One card entering the field, or one code read by a scanner.

    ``kind`` is ``"card"`` (``uid``, ``atr``, ``protocol`` and ``channel`` describe it) or
    ``"qr"`` (``payload`` holds the decoded text). ``sensed_at`` is ``time.monotonic()``
    when the reader saw it, so tap-to-decision can be measured from the real start.
    """

    kind: Literal["card", "qr"]
    reader: str
    uid: bytes = b""
    atr: bytes = b""
    protocol: str = ""
    payload: str = ""
    channel: CardChannel | None = field(default=None, compare=False, repr=False)
    sensed_at: float = 0.0

    @property
    def is_card(self) -> bool:
        return self.kind == "card"
