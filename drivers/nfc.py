"""Contactless readers driven by nfcpy: PN533, RC-S380, ACR122U over USB, PN532 over UART.

``path`` is nfcpy's device path: ``usb`` (the first supported USB reader),
``usb:072f:2200`` (vendor:product), ``usb:001:004`` (bus:device), ``tty:AMA0:pn532`` /
``tty:S0:pn532`` (a PN532 on a Raspberry Pi UART), ``udp:HOST:PORT`` (nfcpy's network
driver, used with :mod:`drivers.emulators.nfc_emulator` to run the whole stack with no radio).

A card is presented once per visit to the field: after a presentation the reader checks the
card's presence (ISO-DEP R(NAK), Type 2 READ) until it leaves, then senses again. An ISO-DEP
card (Type 4) talks APDUs; any other tag type is a UID-only card (``protocol="UID"``).

The ACR122U can be owned by either pcscd (the ``pcsc`` backend) or nfcpy, not both: opening
it here while pcscd holds it fails with a message that says so and what to do. nfcpy's
ACR122U driver is also known to fail when the device is opened again after a close (the
reader stays claimed or mute for a moment); opening retries with a pause, and for a USB
path resets the USB device between attempts.

=========================  ===========================================================
can sense                  ISO 14443-4 Type A cards (APDUs), Type 2 / Type 1 / FeliCa
                           tags (UID only), Type B where the device supports it,
                           removal (presence check)
cannot sense               contact cards, QR codes; two cards at once (the first wins)
stop latency               one sensing cycle: tens of ms on USB and UART devices, up to
                           1 s on ``udp`` (its SENS_REQ waits 1 s for an answer)
=========================  ===========================================================
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from typing import Any

import nfc
import nfc.clf
import nfc.tag
from nfc.tag.tt4 import Type4Tag

from drivers.base import Reader
from localpay.errors import CardRemovedError, ReaderUnavailableError
from localpay.types import Presentation

log = logging.getLogger(__name__)

ACR122U_USB_ID = "072f:2200"
_PCSCD_SOCKET = "/run/pcscd/pcscd.comm"


def pcscd_running() -> bool:
    """True when a pcscd answers on its socket (it then claims every CCID reader)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(_PCSCD_SOCKET)
        except OSError:
            return False
    return True


def _usb_ids_present() -> set[str]:
    """vendor:product of every USB device on the machine (empty without libusb)."""
    try:
        import usb1
    except ImportError:
        return set()
    try:
        with usb1.USBContext() as ctx:
            return {f"{d.getVendorID():04x}:{d.getProductID():04x}" for d in ctx.getDeviceList()}
    except Exception:  # no USB at all (containers): nothing to report
        return set()


def _usb_reset(usb_id: str) -> None:
    """Reset a USB device by vendor:product, so a claimed or mute reader can be opened."""
    try:
        import usb1

        vid, pid = (int(x, 16) for x in usb_id.split(":"))
        with usb1.USBContext() as ctx:
            handle = ctx.openByVendorIDAndProductID(vid, pid)
            if handle is not None:
                handle.resetDevice()
                handle.close()
    except Exception as err:  # best effort: the next open attempt tells the truth
        log.debug("USB reset of %s failed: %s", usb_id, err)


def acr122u_conflict(path: str) -> str | None:
    """The message to show when ``path`` would be an ACR122U that pcscd holds, else None."""
    if not path.startswith("usb"):
        return None
    wants_acr = path in ("usb", f"usb:{ACR122U_USB_ID}")
    if not wants_acr or ACR122U_USB_ID not in _usb_ids_present() or not pcscd_running():
        return None
    return ("the ACR122U (usb:072f:2200) is held by pcscd, and pcscd and nfcpy cannot both "
            "own it: use --reader pcsc:ACR122 instead, or stop pcscd first "
            "(systemctl stop pcscd.socket pcscd)")


class NfcReader(Reader):
    """A contactless reader opened through nfcpy at ``path`` (see the module docstring).

    ``targets`` are the bit rates and types sensed in each cycle (nfcpy names:
    ``106A``, ``106B``, ``212F``); the default is Type A and B on hardware, Type A only on
    ``udp`` where each type costs a second.
    """

    kind = "nfc"
    senses = frozenset({"card"})

    def __init__(self, path: str = "usb", *, name: str | None = None,
                 targets: tuple[str, ...] | None = None, debounce_s: float = 1.0,
                 presence_interval: float = 0.1, open_attempts: int = 3) -> None:
        super().__init__(name or f"nfc:{path}", debounce_s=debounce_s)
        self.path = path
        self.targets = targets or (("106A",) if path.startswith("udp") else ("106A", "106B"))
        self.presence_interval = presence_interval
        self.open_attempts = max(1, open_attempts)
        self._tag: Any = None
        self._clf: Any = self._open()

    # -- the device ------------------------------------------------------------------------

    def _open(self) -> Any:
        conflict = acr122u_conflict(self.path)
        if conflict:
            raise ReaderUnavailableError(conflict)
        last: str = "no such device"
        for attempt in range(self.open_attempts):
            clf = nfc.ContactlessFrontend()
            try:
                if clf.open(self.path):
                    log.info("%s: opened %s", self.name, clf.device)
                    return clf
            except OSError as err:
                last = os.strerror(err.errno) if err.errno else str(err)
                if err.errno == errno.EACCES:
                    raise ReaderUnavailableError(
                        f"no permission to open {self.path!r}: run `python -m nfc` for the "
                        "udev rule to add, or add the user to the plugdev/dialout group") from err
                if err.errno == errno.EBUSY and self.path.startswith("usb"):
                    conflict = acr122u_conflict("usb")
                    if conflict:
                        raise ReaderUnavailableError(conflict) from err
            except Exception as err:  # nfcpy raises plain errors for malformed paths
                raise ReaderUnavailableError(f"cannot open nfc reader {self.path!r}: {err}") \
                    from err
            if attempt + 1 < self.open_attempts:
                usb_id = self.path[4:]
                if self.path.startswith("usb:") and len(usb_id) == 9 and usb_id[4] == ":":
                    _usb_reset(usb_id)  # the ACR122U's known failure to reopen after close
                time.sleep(0.3 * (attempt + 1))
        raise ReaderUnavailableError(f"cannot open nfc reader {self.path!r}: {last}")

    def _lost_device(self, err: BaseException) -> None:
        log.warning("%s: device lost (%s); reopening", self.name, err)
        self._tag = None
        clf, self._clf = self._clf, None
        if clf is not None:
            try:
                clf.close()
            except Exception as close_err:
                log.debug("%s: close after loss failed: %s", self.name, close_err)

    # -- backend ---------------------------------------------------------------------------

    def _poll_internal(self, timeout: float) -> Presentation | None:
        if self._clf is None:
            try:
                self._clf = self._open()
            except ReaderUnavailableError as err:
                log.debug("%s: still unavailable: %s", self.name, err)
                self._stop.wait(min(timeout, 0.5))
                return None
        if self._tag is not None:
            if not self._wait_gone(timeout):
                return None
        try:
            target = self._clf.sense(*(nfc.clf.RemoteTarget(t) for t in self.targets),
                                     iterations=1, interval=0.0)
            if target is None:
                if not self.path.startswith("udp"):
                    self._stop.wait(min(timeout, 0.05))
                return None
            tag = nfc.tag.activate(self._clf, target)
        except nfc.clf.CommunicationError as err:
            log.debug("%s: sensing: %s", self.name, err)
            return None
        except OSError as err:  # the device was unplugged or failed
            self._lost_device(err)
            return None
        if tag is None:
            return None
        self._tag = tag
        self.forget()  # a new visit to the field is a new tap, even of the same card
        iso_dep = isinstance(tag, Type4Tag)
        return Presentation(kind="card", reader=self.name, uid=bytes(tag.identifier),
                            protocol="ISO-DEP" if iso_dep else "UID",
                            channel=self if iso_dep else None)

    def _wait_gone(self, timeout: float) -> bool:
        """Presence-check the last card until it leaves; True once it has."""
        deadline = time.monotonic() + timeout
        while not self._stop.is_set():
            try:
                present = bool(self._tag.is_present)
            except OSError as err:
                self._lost_device(err)
                return False
            except Exception:  # any failure to answer a presence check: the card is gone
                present = False
            if not present:
                log.debug("%s: card left the field", self.name)
                self._tag = None
                self.forget()
                return True
            wait = min(self.presence_interval, deadline - time.monotonic())
            if wait <= 0:
                return False
            self._stop.wait(wait)
        return False

    def _transmit_internal(self, apdu: bytes) -> bytes:
        tag = self._tag
        if tag is None or not isinstance(tag, Type4Tag):
            raise CardRemovedError(f"no ISO-DEP card in the field of {self.name!r}")
        try:
            return bytes(tag.transceive(bytearray(apdu)))
        except (nfc.clf.CommunicationError, nfc.tag.TagCommandError) as err:
            self._tag = None
            raise CardRemovedError(f"card left {self.name!r} mid-transaction ({err!r})") \
                from err
        except OSError as err:
            self._lost_device(err)
            raise CardRemovedError(f"{self.name}: device lost mid-transaction: {err}") from err

    def _close_internal(self) -> None:
        self._tag = None
        clf, self._clf = self._clf, None
        if clf is not None:
            clf.close()
