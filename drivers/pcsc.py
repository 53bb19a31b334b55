"""PC/SC readers through ``pcscd`` and pyscard: contact and contactless, any CCID reader.

ACR122U, ACR1252U, Identiv and every other reader ``pcscd`` knows appear by their PC/SC
name; ``reader`` picks one by pattern (a glob such as ``"ACS ACR122U*"``, otherwise a
case-insensitive substring; empty: the first reader). The backend uses the low-level
``smartcard.scard`` API so that it owns its context and can rebuild it.

Recovery, without restarting the terminal (the most common complaint about pyscard is a
context that stays dead after a reader is unplugged or the service restarts):

- ``pcscd`` stopped or restarted: the context answers ``SCARD_E_NO_SERVICE``; it is released
  and a new one is established when the service is back (every 0.5 s until then).
- reader unplugged: its state turns ``UNKNOWN``/``UNAVAILABLE``; the reader is looked up
  again by pattern on the next polls, and used again when it is plugged back.
- card pulled mid-transaction: ``transmit`` raises :class:`~localpay.errors.CardRemovedError`
  (the transaction is abandoned, the core records nothing), the handle is dropped, and the
  next card insertion is a new presentation.

A new presentation is a new insertion as counted by ``pcscd`` itself (the event counter in
the upper 16 bits of ``dwEventState``), so the card left lying on the reader after a
transaction is never charged twice, and a card taken away and put back always is a new tap.

=========================  ===========================================================
can sense                  contact cards (T=0, T=1), ISO 14443-4 contactless cards,
                           contactless storage cards (UID through GET DATA FF CA),
                           insertion and removal, reader plug and unplug
can do                     APDU exchange, exclusive access while a card is in use,
                           ACR122U LED and buzzer (pseudo-APDU ``FF 00 40``)
cannot sense               QR codes; card type beyond what the ATR says; a reader
                           owned by another program (nfcpy on an ACR122U)
=========================  ===========================================================
"""

from __future__ import annotations

import fnmatch
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from smartcard import scard

from drivers import acr122u
from drivers.base import Reader
from localpay.errors import (
    CardRemovedError,
    ParseError,
    ReaderError,
    ReaderUnavailableError,
)
from localpay.types import Presentation

log = logging.getLogger(__name__)

#: the context is dead: the service stopped or restarted
_SERVICE_GONE = frozenset({
    scard.SCARD_E_NO_SERVICE, scard.SCARD_E_SERVICE_STOPPED, scard.SCARD_E_INVALID_HANDLE,
    scard.SCARD_F_COMM_ERROR, 0x80100004,  # SCARD_E_INVALID_PARAMETER on a freed context
})
#: the card is no longer there to answer (removed, reset, or mute after leaving the field)
_CARD_GONE = frozenset({
    scard.SCARD_W_REMOVED_CARD, scard.SCARD_E_NO_SMARTCARD, scard.SCARD_W_RESET_CARD,
    scard.SCARD_W_UNPOWERED_CARD, scard.SCARD_W_UNRESPONSIVE_CARD,
    scard.SCARD_E_NOT_TRANSACTED, scard.SCARD_E_READER_UNAVAILABLE,
    scard.SCARD_E_UNKNOWN_READER,
})
_READER_GONE_STATES = (scard.SCARD_STATE_UNKNOWN | scard.SCARD_STATE_UNAVAILABLE
                       | scard.SCARD_STATE_IGNORE)
_RETRY_S = 0.5
_GET_UID = bytes.fromhex("ffca000000")
#: PC/SC Part 3 §3.1.3.2.3: historical bytes of a storage card start 80 4F 0C + RID
_PCSC_RID = bytes.fromhex("a000000306")


# -- ATR ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Atr:
    """An Answer To Reset, parsed (ISO/IEC 7816-3 §8.2).

    ``protocols`` lists the offered protocols in order (T=0 when no TD byte names one);
    ``contactless`` is true for the ATR a PC/SC contactless reader makes up for its card
    (PC/SC Part 3 §3.1.3.2.3: ``3B 8n 80 01``); ``storage`` for a storage card (MIFARE
    and other UID/memory cards) whose historical bytes carry the PC/SC RID.
    """

    raw: bytes
    protocols: tuple[int, ...]
    historical: bytes
    tck_ok: bool | None

    @property
    def contactless(self) -> bool:
        r = self.raw
        return len(r) >= 5 and r[0] == 0x3B and r[1] & 0xF0 == 0x80 and r[2] == 0x80 \
            and r[3] == 0x01

    @property
    def storage(self) -> bool:
        h = self.historical
        return self.contactless and len(h) >= 8 and h[0] == 0x80 and h[1] == 0x4F \
            and h[3:8] == _PCSC_RID


def parse_atr(raw: bytes) -> Atr:
    """Parse an ATR; raise :class:`~localpay.errors.ParseError` when it is malformed."""
    if len(raw) < 2 or len(raw) > 33:
        raise ParseError(f"an ATR has 2 to 33 bytes, got {len(raw)}")
    if raw[0] not in (0x3B, 0x3F):
        raise ParseError(f"ATR TS must be 3B or 3F, got {raw[0]:02X}")
    t0 = raw[1]
    n_hist = t0 & 0x0F
    pos = 2
    y = t0 >> 4
    protocols: list[int] = []
    while True:
        for bit in (0x1, 0x2, 0x4):  # TA, TB, TC
            if y & bit:
                pos += 1
        if not y & 0x8:
            break
        if pos >= len(raw):
            raise ParseError(f"ATR {raw.hex()} ends inside its interface bytes")
        td = raw[pos]
        pos += 1
        protocols.append(td & 0x0F)
        y = td >> 4
    if pos + n_hist > len(raw):
        raise ParseError(f"ATR {raw.hex()} announces {n_hist} historical bytes it lacks")
    historical = raw[pos:pos + n_hist]
    rest = raw[pos + n_hist:]
    offered = tuple(dict.fromkeys(p for p in protocols if p != 15)) or (0,)
    # TCK is present unless T=0 is the only protocol (ISO/IEC 7816-3 §8.2.5)
    needs_tck = offered != (0,)
    tck_ok: bool | None = None
    if needs_tck:
        if len(rest) != 1:
            raise ParseError(f"ATR {raw.hex()} lacks its check byte TCK")
        check = 0
        for b in raw[1:]:
            check ^= b
        tck_ok = check == 0
    elif rest:
        raise ParseError(f"ATR {raw.hex()} has {len(rest)} bytes after its historical bytes")
    return Atr(raw, offered, historical, tck_ok)


# -- the reader -----------------------------------------------------------------------------


Share = Literal["exclusive", "shared"]


class PcscReader(Reader):
    """A PC/SC reader found by name pattern; see the module docstring for its behaviour.

    ``share="exclusive"`` (default) connects to each card exclusively; ``"shared"``
    connects shared and holds a PC/SC transaction (``SCardBeginTransaction``) while the
    card is in use, so other programs can still see the reader between taps.
    ``feedback`` drives the ACR122U LED and buzzer; ``None`` turns it on for readers whose
    name says ACR122.
    """

    kind = "pcsc"
    senses = frozenset({"card"})

    def __init__(self, reader: str = "", *, name: str | None = None, share: Share = "exclusive",
                 feedback: bool | None = None, debounce_s: float = 1.0) -> None:
        super().__init__(name or f"pcsc:{reader or '*'}", debounce_s=debounce_s)
        if share not in ("exclusive", "shared"):
            raise ReaderUnavailableError(f"share must be 'exclusive' or 'shared', got {share!r}")
        self.pattern = reader
        self.share: Share = share
        self.feedback = feedback
        self._ctx: Any = None
        self._next_try = 0.0
        self._outage_logged = False
        self._reader: str | None = None
        self._known = scard.SCARD_STATE_UNAWARE
        self._reported: int | None = None
        self._card: Any = None
        self._proto = 0
        self._atr = b""
        self._in_transaction = False
        hresult, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hresult != scard.SCARD_S_SUCCESS:
            raise ReaderUnavailableError(
                f"PC/SC service not available ({_msg(hresult)}): is pcscd running? "
                "(Debian: apt install pcscd; systemctl start pcscd)")
        self._ctx = ctx

    # -- what the terminal sees ------------------------------------------------------------

    @property
    def reader_name(self) -> str | None:
        """The PC/SC name of the reader in use, once one matching the pattern was seen."""
        return self._reader

    def readers(self) -> list[str]:
        """Every reader the service knows now (empty when the service is down)."""
        if not self._ensure_context():
            return []
        hresult, names = scard.SCardListReaders(self._ctx, [])
        if hresult in _SERVICE_GONE:
            self._lost_service(hresult)
            return []
        return list(names) if hresult == scard.SCARD_S_SUCCESS else []

    def describe(self) -> str:
        """One line saying what the reader is waiting on, for messages and diagnostics."""
        if self._ctx is None:
            return "the PC/SC service is not available"
        if self._reader is None:
            present = self.readers()
            want = f"matching {self.pattern!r}" if self.pattern else "at all"
            return f"no reader {want}; readers present: {present or 'none'}"
        return f"waiting on {self._reader!r}"

    def signal(self, ok: bool) -> bool:
        """Blink and beep the outcome on readers that can (ACR122U); True when it did."""
        wants = self.feedback
        if wants is None:
            wants = self._reader is not None and "ACR122" in self._reader.upper()
        if not wants or self._card is None:
            return False
        apdu = acr122u.approved() if ok else acr122u.declined()
        hresult, response = scard.SCardTransmit(self._card, self._proto, list(apdu))
        done = hresult == scard.SCARD_S_SUCCESS and bytes(response[:1]) == b"\x90"
        if not done:
            log.debug("%s: LED/buzzer command refused (%s)", self.name, _msg(hresult))
        return done

    def stop(self) -> None:
        super().stop()
        ctx = self._ctx
        if ctx is not None:
            scard.SCardCancel(ctx)  # wakes a blocked SCardGetStatusChange at once

    # -- backend ---------------------------------------------------------------------------

    def _poll_internal(self, timeout: float) -> Presentation | None:
        if not self._ensure_context():
            self._stop.wait(min(timeout, _RETRY_S))
            return None
        if self._reader is None:
            self._reader = self._find_reader()
            if self._reader is None:
                self._stop.wait(min(timeout, _RETRY_S))
                return None
            log.info("%s: using reader %r", self.name, self._reader)
            self._known = scard.SCARD_STATE_UNAWARE
        reader = self._reader
        hresult, states = scard.SCardGetStatusChange(
            self._ctx, max(1, int(timeout * 1000)), [(reader, self._known)])
        if hresult in (scard.SCARD_E_TIMEOUT, scard.SCARD_E_CANCELLED):
            return None
        if hresult in _SERVICE_GONE:
            self._lost_service(hresult)
            return None
        if hresult in (scard.SCARD_E_UNKNOWN_READER, scard.SCARD_E_READER_UNAVAILABLE):
            self._lost_reader(_msg(hresult))
            return None
        if hresult != scard.SCARD_S_SUCCESS:
            raise ReaderError(f"{self.name}: SCardGetStatusChange failed: {_msg(hresult)}")
        _, event_state, atr = states[0]
        self._known = event_state & ~scard.SCARD_STATE_CHANGED
        if event_state & _READER_GONE_STATES:
            self._lost_reader("state unknown/unavailable")
            return None
        counter = event_state >> 16
        if not event_state & scard.SCARD_STATE_PRESENT:
            if self._card is not None or self._reported is not None:
                log.debug("%s: card left", reader)
            self._drop_card()
            self._reported = None
            self.forget()
            return None
        if self._reported == counter:
            return None  # the card already presented is still lying there
        return self._connect(reader, counter, bytes(atr))

    def _connect(self, reader: str, counter: int, atr: bytes) -> Presentation | None:
        self._drop_card()
        mode = scard.SCARD_SHARE_EXCLUSIVE if self.share == "exclusive" \
            else scard.SCARD_SHARE_SHARED
        hresult, card, proto = scard.SCardConnect(
            self._ctx, reader, mode, scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
        if hresult == scard.SCARD_E_SHARING_VIOLATION:
            log.warning("%s: card in use by another program; retrying", reader)
            self._known = scard.SCARD_STATE_UNAWARE
            self._stop.wait(0.1)
            return None
        if hresult in _SERVICE_GONE:
            self._lost_service(hresult)
            return None
        if hresult != scard.SCARD_S_SUCCESS:
            # a card that left while being powered, or is mute: wait for the next insertion
            log.info("%s: could not connect to the card: %s", reader, _msg(hresult))
            self._reported = counter
            return None
        self._card, self._proto, self._reported = card, proto, counter
        if self.share == "shared":
            hresult = scard.SCardBeginTransaction(card)
            if hresult != scard.SCARD_S_SUCCESS:
                self._drop_card()
                self._known = scard.SCARD_STATE_UNAWARE
                return None
            self._in_transaction = True
        try:
            parsed = parse_atr(atr)
        except ParseError as err:
            log.warning("%s: %s; reading the card anyway", reader, err)
            parsed = Atr(atr, (0,), b"", None)
        uid = b""
        if parsed.contactless:
            hresult, response = scard.SCardTransmit(card, proto, list(_GET_UID))
            data = bytes(response)
            if hresult == scard.SCARD_S_SUCCESS and data[-2:] == b"\x90\x00":
                uid = data[:-2]
        protocol = "UID" if parsed.storage else ("T=0" if proto == scard.SCARD_PROTOCOL_T0
                                                 else "T=1")
        self._atr = atr
        self.forget()  # pcscd counted a new insertion: a new tap even of the same card
        return Presentation(kind="card", reader=reader, uid=uid, atr=atr, protocol=protocol,
                            channel=self)

    def _transmit_internal(self, apdu: bytes) -> bytes:
        card = self._card
        if card is None:
            raise CardRemovedError(f"no card connected in {self._reader or self.name!r}")
        hresult, response = scard.SCardTransmit(card, self._proto, list(apdu))
        data = bytes(response)
        if hresult == scard.SCARD_S_SUCCESS and len(data) >= 2:
            return data
        self._drop_card()
        if hresult in _SERVICE_GONE:
            self._lost_service(hresult)
            raise CardRemovedError(f"{self.name}: the PC/SC service went away mid-transaction")
        if hresult == scard.SCARD_S_SUCCESS or hresult in _CARD_GONE:
            # vpcd and real contactless readers both give an empty answer, then
            # "transaction failed", when the card leaves the field mid-APDU
            raise CardRemovedError(
                f"card left {self._reader!r} mid-transaction ({_msg(hresult)})")
        raise ReaderError(f"{self.name}: SCardTransmit failed: {_msg(hresult)}")

    def _close_internal(self) -> None:
        self._drop_card()
        if self._ctx is not None:
            scard.SCardReleaseContext(self._ctx)
            self._ctx = None

    # -- recovery --------------------------------------------------------------------------

    def _ensure_context(self) -> bool:
        if self._ctx is not None:
            return True
        now = time.monotonic()
        if now < self._next_try:
            return False
        self._next_try = now + _RETRY_S
        hresult, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hresult != scard.SCARD_S_SUCCESS:
            if not self._outage_logged:
                log.warning("%s: PC/SC service not available (%s); retrying", self.name,
                            _msg(hresult))
                self._outage_logged = True
            return False
        log.info("%s: PC/SC service is back", self.name)
        self._ctx, self._outage_logged = ctx, False
        return True

    def _lost_service(self, hresult: int) -> None:
        log.warning("%s: PC/SC service lost (%s); rebuilding the context", self.name,
                    _msg(hresult))
        self._card = None  # its handle died with the service
        self._in_transaction = False
        if self._ctx is not None:
            scard.SCardReleaseContext(self._ctx)
        self._ctx = None
        self._reader = None
        self._reported = None
        self._known = scard.SCARD_STATE_UNAWARE
        self._next_try = 0.0

    def _lost_reader(self, why: str) -> None:
        if self._reader is not None:
            log.warning("%s: reader %r went away (%s)", self.name, self._reader, why)
        self._drop_card()
        self._reader = None
        self._reported = None
        self._known = scard.SCARD_STATE_UNAWARE

    def _find_reader(self) -> str | None:
        hresult, names = scard.SCardListReaders(self._ctx, [])
        if hresult in _SERVICE_GONE:
            self._lost_service(hresult)
            return None
        if hresult != scard.SCARD_S_SUCCESS:
            return None  # SCARD_E_NO_READERS_AVAILABLE: nothing plugged in yet
        return match_reader(list(names), self.pattern)

    def _drop_card(self) -> None:
        card, self._card = self._card, None
        if card is None:
            return
        if self._in_transaction:
            scard.SCardEndTransaction(card, scard.SCARD_LEAVE_CARD)
            self._in_transaction = False
        scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)


def service_up() -> bool:
    """Whether pcscd answers (a context can be established)."""
    hresult, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        return False
    scard.SCardReleaseContext(ctx)
    return True


def list_readers() -> list[str]:
    """The readers pcscd has now; empty when it has none or does not answer."""
    hresult, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        return []
    try:
        hresult, names = scard.SCardListReaders(ctx, [])
        return list(names) if hresult == scard.SCARD_S_SUCCESS else []
    finally:
        scard.SCardReleaseContext(ctx)


def match_reader(names: list[str], pattern: str) -> str | None:
    """The first reader name (in sorted order) that ``pattern`` picks, or None.

    A pattern with ``*``, ``?`` or ``[`` is a case-insensitive glob; otherwise a
    case-insensitive substring. The empty pattern picks the first reader.
    """
    wanted = pattern.casefold()
    for name in sorted(names):
        folded = name.casefold()
        if not wanted:
            return name
        if any(c in wanted for c in "*?["):
            if fnmatch.fnmatchcase(folded, wanted):
                return name
        elif wanted in folded:
            return name
    return None


def _msg(hresult: int) -> str:
    return f"{scard.SCardGetErrorMessage(hresult)} (0x{hresult & 0xFFFFFFFF:08X})"
