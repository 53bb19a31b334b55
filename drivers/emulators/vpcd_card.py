"""A contactless card in software, seen by ``pcscd`` through the ``vpcd`` virtual reader.

``vsmartcard-vpcd`` (Debian package) is a PC/SC reader driver whose "card slot" is a TCP
port. A card is a process that connects to that port: connecting inserts the card, closing
the socket pulls it out. Through it, pyscard and every other PC/SC program talk to this card
exactly as to a card on a real reader, so the ``pcsc`` backend is exercised with no hardware.

The socket protocol (both directions): a 2-byte big-endian length, then the payload. From
the reader, a 1-byte payload is a control byte (0 power off, 1 power on, 2 reset, 4 get
ATR; only "get ATR" is answered, with the ATR); anything longer is a command APDU, answered
by the response APDU (data + SW1 SW2).

The card also plays the part a contactless PC/SC reader plays for its cards (PC/SC Part 3
§3.2.2.1.3): it answers the pseudo-APDU GET DATA ``FF CA 00 00 00`` with the UID, and gives
the ATR a contactless reader makes up for the card type (PC/SC Part 3 §3.1.3.2.3). A card
without an APDU handler is a UID-only card (MIFARE Classic style storage card).

=========================  ===========================================================
can present                ISO 14443-4 cards answering APDUs through a Python handler,
                           UID-only storage cards, contact cards (T=0 or T=1 ATR),
                           removal at any moment (also in the middle of an APDU)
cannot present             anything a physical field does: collisions, tearing of
                           writes, timing of the RF link
=========================  ===========================================================
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable

from localpay.errors import ReaderUnavailableError

log = logging.getLogger(__name__)

APDUHandler = Callable[[bytes], bytes]

#: vpcd control bytes (vsmartcard ``vpcd.h``)
VPCD_POWER_OFF, VPCD_POWER_ON, VPCD_RESET, VPCD_GET_ATR = 0, 1, 2, 4

#: Debian's ``/etc/reader.conf.d/vpcd`` opens its two readers on these ports
DEFAULT_PORT = 0x8C7B

#: PC/SC Part 3 ATR of an ISO 14443-4 Type A card without historical bytes
ATR_ISO_DEP = bytes.fromhex("3b80800101")
#: PC/SC Part 3 ATR of a MIFARE Classic 1K storage card (RID A0 00 00 03 06, SS 03, NN 0001)
ATR_STORAGE = bytes.fromhex("3b8f8001804f0ca000000306030001000000006a")
#: a contact card offering T=0 only (TS 3B, T0 with no interface bytes, 3 historical bytes)
ATR_CONTACT_T0 = bytes.fromhex("3b03010203")
#: a contact card offering T=1 only (TD1 81: T=1, TD2 31: IFSC FE and BWI/CWI 45 follow)
ATR_CONTACT_T1 = bytes.fromhex("3b808131fe458b")

_GET_UID = bytes.fromhex("ffca000000")
_SW_OK = b"\x90\x00"
_SW_INS_NOT_SUPPORTED = b"\x6d\x00"
_SW_WRONG_P1P2 = b"\x6b\x00"


def _tck(body: bytes) -> int:
    value = 0
    for b in body:
        value ^= b
    return value


def contactless_atr(historical: bytes = b"") -> bytes:
    """The ATR a PC/SC contactless reader builds for an ISO 14443-4 card (Part 3 §3.1.3.2.3)."""
    if len(historical) > 15:
        raise ValueError("at most 15 historical bytes")
    body = bytes([0x80 | len(historical), 0x80, 0x01]) + historical
    return b"\x3b" + body + bytes([_tck(body)])


class VpcdCard:
    """One card for one vpcd reader slot; :meth:`insert` and :meth:`remove` at will.

    ``handler`` answers command APDUs (``None``: a UID-only storage card). ``reader_apdus``
    makes the card also answer the ACR122U reader's own pseudo-APDUs (``FF 00 40 ...``
    LED and buzzer) as that reader does, so feedback code can be tested.
    ``remove_after`` pulls the card out instead of answering the APDU with that index
    (0-based), which is what a rider does who walks away mid-transaction.
    """

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        handler: APDUHandler | None = None,
        *,
        uid: bytes = bytes.fromhex("08a1b2c3"),
        atr: bytes | None = None,
        host: str = "127.0.0.1",
        reader_apdus: bool = False,
        remove_after: int | None = None,
    ) -> None:
        self.port = port
        self.host = host
        self.handler = handler
        self.uid = uid
        self.atr = atr if atr is not None else (
            ATR_ISO_DEP if handler is not None else ATR_STORAGE)
        self.reader_apdus = reader_apdus
        self.remove_after = remove_after
        #: every command APDU the card received (reader pseudo-APDUs included)
        self.apdus: list[bytes] = []
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._gone = threading.Event()

    # -- the field -------------------------------------------------------------------------

    @property
    def inserted(self) -> bool:
        return self._sock is not None and not self._gone.is_set()

    def insert(self, timeout: float = 5.0) -> None:
        """Put the card on the reader (connect to the vpcd slot)."""
        with self._lock:
            if self._sock is not None and not self._gone.is_set():
                return
            try:
                sock = socket.create_connection((self.host, self.port), timeout=timeout)
            except OSError as err:
                raise ReaderUnavailableError(
                    f"no vpcd reader slot listens on {self.host}:{self.port} "
                    f"(is pcscd running with the vpcd driver?): {err}") from err
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            self._gone.clear()
            self._thread = threading.Thread(target=self._serve, args=(sock,),
                                            name=f"vpcd-card-{self.port}", daemon=True)
            self._thread.start()
        log.debug("card %s inserted into vpcd port %d", self.uid.hex(), self.port)

    def remove(self) -> None:
        """Take the card off the reader (close the socket)."""
        with self._lock:
            sock, self._sock = self._sock, None
            thread, self._thread = self._thread, None
        if sock is not None:
            self._gone.set()
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        log.debug("card %s removed from vpcd port %d", self.uid.hex(), self.port)

    close = remove

    def __enter__(self) -> VpcdCard:
        self.insert()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # -- the card's side of the protocol ---------------------------------------------------

    def respond(self, apdu: bytes) -> bytes:
        """The response to one command APDU (reader pseudo-APDUs included)."""
        if apdu[:2] == b"\xff\xca":
            if apdu[2:4] == b"\x00\x00":
                return self.uid + _SW_OK
            return _SW_WRONG_P1P2
        if self.reader_apdus and apdu[:3] == b"\xff\x00\x40":
            return b"\x90\x00"  # ACR122U: SW2 carries the LED state; 00 = both off
        if self.handler is None:
            return _SW_INS_NOT_SUPPORTED
        return self.handler(apdu)

    def _serve(self, sock: socket.socket) -> None:
        try:
            while True:
                payload = _recv_frame(sock)
                if payload is None:
                    break
                if len(payload) == 1:
                    if payload[0] == VPCD_GET_ATR:
                        _send_frame(sock, self.atr)
                    continue
                index = len(self.apdus)
                self.apdus.append(payload)
                if self.remove_after is not None and index >= self.remove_after:
                    log.debug("card %s leaves the field at APDU %d", self.uid.hex(), index)
                    break
                try:
                    response = self.respond(payload)
                except Exception:  # a broken handler must look like a mute card, not hang
                    log.exception("card handler failed")
                    response = b"\x6f\x00"
                _send_frame(sock, response)
        except OSError:
            pass  # removed from another thread
        finally:
            self._gone.set()
            try:
                sock.close()
            except OSError:
                pass


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        # Without QUICKACK each APDU waits ~40 ms for the delayed ACK; it resets after
        # every recv, so it is set again each time.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _recv_frame(sock: socket.socket) -> bytes | None:
    head = _recv_exact(sock, 2)
    if head is None:
        return None
    (length,) = struct.unpack(">H", head)
    return _recv_exact(sock, length) if length else b""


def _send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">H", len(payload)) + payload)
