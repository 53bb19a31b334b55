"""The virtual reader: cards and codes presented by software.

Used by the demo, by ``localpay run --demo`` and by the tests. It is a real backend: the
terminal talks to it through exactly the same :class:`~drivers.base.Reader` interface.

=========================  ===========================================================
can sense                  UID-only cards, ISO-DEP cards answering APDUs through a
                           Python object, QR / barcode text
cannot sense               anything physical; timing is whatever the caller makes it
=========================  ===========================================================
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.base import Reader
from localpay.errors import CardRemovedError
from localpay.types import Presentation

#: A card application in software: command APDU in, response data + SW out.
APDUHandler = Callable[[bytes], bytes]


@dataclass
class VirtualCard:
    """A card for the virtual reader. ``handler`` answers APDUs (None: UID-only card).

    ``remove_after`` pulls the card from the field after that many APDUs, to test a
    transaction abandoned mid-way.
    """

    uid: bytes
    handler: APDUHandler | None = None
    atr: bytes = b"\x3b\x80\x80\x01\x01"
    remove_after: int | None = None
    apdus: list[bytes] = field(default_factory=list)


class VirtualReader(Reader):
    """Presentations come from :meth:`present_card` and :meth:`present_code`, from any thread."""

    kind = "virtual"
    senses = frozenset({"card", "qr"})

    def __init__(self, name: str = "virtual", *, debounce_s: float = 0.0) -> None:
        super().__init__(name, debounce_s=debounce_s)
        self._queue: queue.Queue[VirtualCard | str] = queue.Queue()
        self._card: VirtualCard | None = None

    def present_card(self, card: VirtualCard) -> None:
        self._queue.put(card)

    def present_uid(self, uid: bytes) -> None:
        self._queue.put(VirtualCard(uid=uid))

    def present_code(self, text: str) -> None:
        self._queue.put(text)

    def _poll_internal(self, timeout: float) -> Presentation | None:
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        self.forget()  # every queued item is a new tap, even of the same card
        if isinstance(item, str):
            self._card = None
            return Presentation(kind="qr", reader=self.name, payload=item)
        self._card = item
        protocol = "ISO-DEP" if item.handler is not None else "UID"
        return Presentation(
            kind="card", reader=self.name, uid=item.uid, atr=item.atr, protocol=protocol,
            channel=self,
        )

    def _transmit_internal(self, apdu: bytes) -> bytes:
        card = self._card
        if card is None or card.handler is None:
            raise CardRemovedError(f"no card answering APDUs in {self.name!r}")
        if card.remove_after is not None and len(card.apdus) >= card.remove_after:
            self._card = None
            raise CardRemovedError(f"card {card.uid.hex()} left the field")
        card.apdus.append(apdu)
        return card.handler(apdu)
