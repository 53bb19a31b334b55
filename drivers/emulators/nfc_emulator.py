"""A contactless card emulated with nfcpy on its ``udp`` driver: the card side of the link.

The reader side (:mod:`drivers.nfc` opened on ``udp:HOST:PORT``) and this card exchange the
NFC Forum Digital frames as UDP datagrams, so the whole of nfcpy's reader stack (sensing,
anticollision, activation, ISO-DEP block handling) runs for real with no radio.

The card is an ISO 14443-4 Type A card (ISO-DEP, answering APDUs through a handler such as
``EmvCard().handle``) or, with no handler, a Type 2 UID card. Its ISO-DEP layer (ISO/IEC
14443-4 §7.5) is kept to what a reader needs: RATS → ATS, I-blocks with the PCB echoed,
R(NAK) → R(ACK) (presence check), S(DESELECT). Taking the card away sends ``RFOFF``, the udp
driver's "field lost" message, so the reader learns it at once instead of after a frame
waiting time.

=========================  ===========================================================
can present                ISO-DEP cards (APDUs through a handler), Type 2 UID cards,
                           removal between or in the middle of APDUs
cannot present             chaining of long frames (no EMV response needs it), Type B,
                           FeliCa, collisions of two cards
=========================  ===========================================================

Run as a process: ``python -m drivers.emulators.nfc_emulator --port 54321 [--uid HEX] [--emv]``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import nfc
import nfc.clf

log = logging.getLogger(__name__)

APDUHandler = Callable[[bytes], bytes]

#: ATS: TL 05, T0 78 (FSCI 8 = 256 bytes, TA TB TC follow), TA 80, TB E0 (FWI 14, the
#: longest wait, for slow machines; removal is signalled, not timed out), TC 02 (CID
#: not supported, NAD not supported)
ATS = bytes.fromhex("057880e002")
_SW_INS_NOT_SUPPORTED = b"\x6d\x00"


class NfcCardEmulator:
    """A card on ``udp:HOST:PORT`` that nfcpy readers find; start with :meth:`insert`."""

    def __init__(self, port: int, handler: APDUHandler | None = None, *,
                 uid: bytes = bytes.fromhex("08c0ffee"), host: str = "127.0.0.1",
                 remove_after: int | None = None) -> None:
        if len(uid) not in (4, 7, 10):
            raise ValueError("an ISO 14443-A UID has 4, 7 or 10 bytes")
        self.port = port
        self.host = host
        self.handler = handler
        self.uid = uid
        self.remove_after = remove_after
        #: every command APDU received
        self.apdus: list[bytes] = []
        #: sessions (activations by a reader) so far
        self.sessions = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._clf: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- the field -------------------------------------------------------------------------

    def insert(self, timeout: float = 10.0) -> None:
        """Put the card in the field of the reader on the same port."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=f"nfc-card-{self.port}",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            self.remove()
            raise OSError(f"card emulator on udp port {self.port} did not start: {self._error}")

    def remove(self) -> None:
        """Take the card out of the field (the reader gets RFOFF)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(10.0)

    close = remove

    def __enter__(self) -> NfcCardEmulator:
        self.insert()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # -- the card --------------------------------------------------------------------------

    def _target(self) -> Any:
        if self.handler is not None:
            return nfc.clf.LocalTarget("106A", sens_res=bytearray.fromhex("4400"),
                                       sdd_res=bytearray(self.uid),
                                       sel_res=bytearray.fromhex("20"))
        return nfc.clf.LocalTarget("106A", sens_res=bytearray.fromhex("4400"),
                                   sdd_res=bytearray(self.uid), sel_res=bytearray.fromhex("00"))

    def _run(self) -> None:
        clf = nfc.ContactlessFrontend()
        try:
            if not clf.open(f"udp:{self.host}:{self.port}"):
                raise OSError(f"cannot open udp:{self.host}:{self.port}")
        except BaseException as err:  # reported to insert()
            self._error = err
            self._ready.set()
            return
        self._clf = clf
        self._ready.set()
        try:
            while not self._stop.is_set():
                try:
                    activated = clf.listen(self._target(), 1.0)
                except nfc.clf.CommunicationError:
                    continue
                if activated is None:
                    continue
                self.sessions += 1
                self._session(clf, activated)
        finally:
            clf.close()
            self._clf = None

    def _field_off(self, clf: Any, target: Any) -> None:
        # the udp driver's "RF off": the reader's next receive raises BrokenLinkError
        sock = clf.device.socket
        if sock is not None and getattr(target, "_addr", None):
            sock.sendto(b"RFOFF", target._addr)

    def _session(self, clf: Any, target: Any) -> None:
        first = target.tt4_cmd if self.handler is not None else target.tt2_cmd
        if first is None:
            return
        cmd = bytes(first)
        while True:
            rsp, leave = self._answer(cmd)
            if leave:
                self._field_off(clf, target)
                self._stop.set()
                return
            frame = bytearray(rsp) if rsp is not None else None
            while True:  # send the answer once, then wait for the next command
                if self._stop.is_set():
                    self._field_off(clf, target)
                    return
                try:
                    raw = clf.exchange(frame, 0.25)
                except nfc.clf.TimeoutError:
                    raw = None
                except nfc.clf.CommunicationError:
                    return  # the reader switched its field off or went away
                frame = None
                if raw is not None:
                    cmd = bytes(raw)
                    break

    def _answer(self, cmd: bytes) -> tuple[bytes | None, bool]:
        """(response frame or None, whether the card leaves instead of answering)."""
        if self.handler is None:
            if cmd[:1] == b"\x30" and len(cmd) >= 2:  # Type 2 READ: 4 pages of 4 bytes
                memory = (self.uid + bytes(64))[: 16 * 4]
                page = cmd[1] * 4
                return (memory + memory)[page:page + 16], False
            return None, False
        if cmd[:1] == b"\xe0":  # RATS
            return ATS, False
        pcb = cmd[0]
        if pcb & 0xEE == 0x02:  # I-block; ISO/IEC 14443-4 §7.5.3
            apdu = cmd[1:]
            index = len(self.apdus)
            self.apdus.append(apdu)
            if self.remove_after is not None and index >= self.remove_after:
                return None, True
            try:
                response = self.handler(apdu)
            except Exception:  # a broken handler must look like a mute card, not hang
                log.exception("card handler failed")
                response = b"\x6f\x00"
            return bytes([pcb & 0x03 | 0x02]) + response, False
        if pcb & 0xF6 == 0xB2:  # R(NAK): presence check -> R(ACK) with the same block number
            return bytes([0xA2 | pcb & 0x01]), False
        if pcb & 0xF7 == 0xC2:  # S(DESELECT)
            return bytes([pcb]), False
        return None, False


def _main() -> None:
    parser = argparse.ArgumentParser(description="Emulate a contactless card on nfcpy's udp "
                                     "driver until interrupted.")
    parser.add_argument("--port", type=int, default=54321)
    parser.add_argument("--uid", default="08c0ffee", help="UID in hex (4, 7 or 10 bytes)")
    parser.add_argument("--emv", action="store_true", help="an EMV card (else UID only)")
    parser.add_argument("--pan", default="9410123456789012")
    args = parser.parse_args()
    handler = None
    if args.emv:
        from drivers.emulators.emv_card import EmvCard

        handler = EmvCard(pan=args.pan).handle
    card = NfcCardEmulator(args.port, handler, uid=bytes.fromhex(args.uid))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    card.insert()
    sys.stdout.write(f"card on udp port {args.port}\n")
    sys.stdout.flush()
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    card.remove()


if __name__ == "__main__":
    _main()
