"""Command APDUs out, responses in: the one place that knows T=0 from T=1.

A T=0 card cannot return data on a command that carried data: it answers ``61xx`` ("xx
bytes are waiting") and the terminal fetches them with GET RESPONSE; a case-2 command sent
with the wrong Le gets ``6Cxx`` ("resend with Le = xx") (EMV 4.3 Book 1 §9.3.1; ISO/IEC
7816-4 §5.1.3). T=1 and ISO-DEP (ISO/IEC 14443-4) cards answer with the data directly.
:class:`Transmission` handles both, here and nowhere else, so card applications see one
response: data and the final status word.

Status words mean what :data:`STATUS_WORDS` says (pyscard's ``ISO7816_4ErrorChecker``
pattern: a table, not a chain of ifs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from localpay.errors import APDUError
from localpay.types import CardChannel

log = logging.getLogger(__name__)

#: most GET RESPONSE rounds for one command; a card that keeps saying 61xx is broken
MAX_GET_RESPONSE = 32
#: most response data one command may gather (a READ RECORD is at most 256 bytes)
MAX_RESPONSE = 4096

#: (SW1, SW2) or (SW1, None for any SW2) -> meaning (ISO/IEC 7816-4 §5.1.3, EMV Book 1 §9.4)
STATUS_WORDS: dict[tuple[int, int | None], str] = {
    (0x90, 0x00): "normal processing",
    (0x61, None): "response bytes still available",
    (0x62, 0x00): "warning: no information given",
    (0x62, 0x81): "warning: part of returned data may be corrupted",
    (0x62, 0x82): "warning: end of file or record reached before reading Le bytes",
    (0x62, 0x83): "warning: selected file deactivated (application blocked)",
    (0x62, 0x84): "warning: FCI not formatted according to ISO/IEC 7816-4",
    (0x63, 0x00): "warning: authentication failed",
    (0x63, None): "warning: counter (PIN tries left in SW2 low nibble)",
    (0x64, 0x00): "execution error: state of non-volatile memory unchanged",
    (0x65, 0x81): "execution error: memory failure",
    (0x67, 0x00): "wrong length",
    (0x68, 0x81): "logical channel not supported",
    (0x68, 0x82): "secure messaging not supported",
    (0x69, 0x81): "command incompatible with file structure",
    (0x69, 0x82): "security status not satisfied",
    (0x69, 0x83): "authentication method blocked",
    (0x69, 0x84): "referenced data invalidated",
    (0x69, 0x85): "conditions of use not satisfied",
    (0x69, 0x86): "command not allowed (no current EF)",
    (0x6A, 0x80): "incorrect parameters in the data field",
    (0x6A, 0x81): "function not supported (card or application blocked)",
    (0x6A, 0x82): "file or application not found",
    (0x6A, 0x83): "record not found",
    (0x6A, 0x84): "not enough memory space in the file",
    (0x6A, 0x86): "incorrect parameters P1-P2",
    (0x6A, 0x88): "referenced data not found",
    (0x6B, 0x00): "wrong parameters P1-P2",
    (0x6C, None): "wrong Le: SW2 gives the exact length",
    (0x6D, 0x00): "instruction code not supported",
    (0x6E, 0x00): "class not supported",
    (0x6F, 0x00): "no precise diagnosis",
}


def describe(sw: int) -> str:
    """A status word in words, e.g. ``describe(0x6A82)``."""
    sw1, sw2 = sw >> 8, sw & 0xFF
    text = STATUS_WORDS.get((sw1, sw2)) or STATUS_WORDS.get((sw1, None))
    return f"{sw:04X} {text or 'unknown status'}"


def is_success(sw: int) -> bool:
    """9000, or a warning (62xx / 63xx) that still carries a usable response (Book 1 §9.4.4)."""
    return sw == 0x9000 or (sw >> 8) in (0x62, 0x63)


@dataclass(frozen=True, slots=True)
class Response:
    data: bytes
    sw: int

    @property
    def ok(self) -> bool:
        return self.sw == 0x9000

    def check(self, what: str) -> bytes:
        """The data of a 9000 response; :class:`APDUError` naming ``what`` otherwise."""
        if self.sw != 0x9000:
            raise APDUError(f"{what}: card answered {describe(self.sw)}")
        return self.data


def command(cla: int, ins: int, p1: int, p2: int, data: bytes = b"",
            le: int | None = None) -> bytes:
    """A short command APDU (ISO/IEC 7816-3 §12.1); ``le=0`` means "up to 256"."""
    if len(data) > 255:
        raise APDUError(f"command data of {len(data)} bytes needs extended length")
    apdu = bytes([cla, ins, p1, p2])
    if data:
        apdu += bytes([len(data)]) + data
    if le is not None:
        apdu += bytes([le & 0xFF])
    return apdu


class Transmission:
    """Sends commands over a card channel and hides the transport's quirks.

    ``protocol`` is the presentation's protocol: ``"T=0"`` sends case-4 commands without
    Le (the T=0 TPDU mapping, ISO/IEC 7816-3 §12.2); anything else (``"T=1"``,
    ``"ISO-DEP"``) sends them with Le = 00. Both kinds of card may still answer ``61xx`` or
    ``6Cxx`` (contactless readers built on T=0 chips do), and both are handled.
    """

    def __init__(self, channel: CardChannel, protocol: str = "ISO-DEP") -> None:
        self.channel = channel
        self.protocol = protocol
        self.exchanges = 0

    def _raw(self, apdu: bytes) -> tuple[bytes, int]:
        self.exchanges += 1
        rsp = self.channel.transmit(apdu)
        if len(rsp) < 2:
            raise APDUError(f"response of {len(rsp)} bytes has no status word")
        return rsp[:-2], (rsp[-2] << 8) | rsp[-1]

    def send(self, cla: int, ins: int, p1: int, p2: int, data: bytes = b"",
             *, expect_data: bool = True) -> Response:
        """Send one command; follow ``61xx`` / ``6Cxx``; return all data and the last SW."""
        le: int | None = 0 if expect_data else None
        if data and self.protocol == "T=0":
            le = None
        apdu = command(cla, ins, p1, p2, data, le)
        body, sw = self._raw(apdu)
        if sw >> 8 == 0x6C:
            # wrong Le: resend the same command once with the length the card asked for
            resend = apdu[:-1] + bytes([sw & 0xFF]) if le is not None else apdu + bytes(
                [sw & 0xFF])
            body, sw = self._raw(resend)
            if sw >> 8 == 0x6C:
                raise APDUError(f"card asked twice for a different Le ({describe(sw)})")
        out = bytearray(body)
        rounds = 0
        while sw >> 8 == 0x61:
            rounds += 1
            if rounds > MAX_GET_RESPONSE:
                raise APDUError(f"card kept answering 61xx after {MAX_GET_RESPONSE} GET RESPONSE")
            more, sw = self._raw(command(0x00, 0xC0, 0x00, 0x00, b"", sw & 0xFF))
            if sw >> 8 == 0x6C:
                more, sw = self._raw(command(0x00, 0xC0, 0x00, 0x00, b"", sw & 0xFF))
            out += more
            if len(out) > MAX_RESPONSE:
                raise APDUError(f"card returned more than {MAX_RESPONSE} bytes for one command")
        return Response(bytes(out), sw)

    # -- the commands card applications use ------------------------------------------------

    def select(self, name: bytes, *, next_occurrence: bool = False) -> Response:
        """SELECT by DF name (EMV Book 1 §11.3.2): P1=04, P2=00 first / 02 next."""
        return self.send(0x00, 0xA4, 0x04, 0x02 if next_occurrence else 0x00, name)

    def read_record(self, sfi: int, record: int) -> Response:
        """READ RECORD (Book 3 §6.5.11): P1 = record number, P2 = SFI << 3 | 4."""
        if not 1 <= sfi <= 30 or not 1 <= record <= 255:
            raise APDUError(f"no READ RECORD for SFI {sfi} record {record}")
        return self.send(0x00, 0xB2, record, (sfi << 3) | 0x04)

    def get_processing_options(self, pdol_data: bytes) -> Response:
        """GET PROCESSING OPTIONS (Book 3 §6.5.8): data is tag 83 with the PDOL values."""
        return self.send(0x80, 0xA8, 0x00, 0x00, b"\x83" + bytes([len(pdol_data)]) + pdol_data)

    def get_data(self, tag: int) -> Response:
        """GET DATA (Book 3 §6.5.7) for a two-byte tag such as 9F36 or 9F13."""
        return self.send(0x80, 0xCA, (tag >> 8) & 0xFF, tag & 0xFF)
