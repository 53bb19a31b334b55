"""Every application on an EMV card and whether this terminal would take it (``localpay read``).

A payment reads one application (:mod:`terminal.emv.reader`). A technician checking a rider's
card or phone wants them all, accepted or not:

1. the applications the card's PPSE / PSE lists (EMV 4.3 Book 1 §12.3.2), with their
   priority (87) and label (50); for a card without a directory (or with an empty one), what
   the list of AIDs finds (§12.3.3, every occurrence) under the terminal's AIDs and the
   defaults (the well-known schemes);
2. each one SELECTed, given GET PROCESSING OPTIONS and READ RECORD like a payment (Book 3
   §10.1-10.2), for its PAN (first 6 / last 4) and expiry. GPO counts as a transaction to the
   card: each application's ATC goes up by one, as with any card-reading tool;
3. whether the terminal accepts it: its AID matches ``[emv] aids`` (exactly, or by partial
   selection where the entry allows it, §12.3.1) and it does not ask for cardholder
   confirmation, which these terminals cannot give (§12.4).

An application that fails to read is listed with its error; the others are still read. The
full PAN of each is masked the moment it is read, and dropped.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from localpay.errors import APDUError, TLVError
from localpay.types import Presentation
from terminal import tlv
from terminal.cards import ReadContext, display_pan
from terminal.emv.app import is_contactless
from terminal.emv.reader import (
    DEFAULT_AIDS,
    Candidate,
    EmvReader,
    TerminalAid,
    terminal_data,
)
from terminal.transmission import Transmission, describe


@dataclass(frozen=True, slots=True)
class Application:
    """One application on the card, as ``localpay read`` shows it: never a full PAN."""

    aid: bytes
    label: str
    #: Application Priority Indicator (87) low nibble, 1 highest; None when the card gives none
    priority: int | None
    #: 87 b8: the card asks the cardholder to confirm this application
    confirmation: bool
    accepted: bool
    #: why the terminal would not take it ("" when it would)
    reason: str
    display: str | None = None
    expiry: dt.date | None = None
    #: what went wrong reading it (SELECT refused, GPO refused, malformed records)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "aid": self.aid.hex().upper(), "label": self.label, "priority": self.priority,
            "confirmation": self.confirmation, "accepted": self.accepted,
            "reason": self.reason or None, "display": self.display,
            "expiry": self.expiry.isoformat() if self.expiry else None, "error": self.error,
        }


def why_not(reader: EmvReader, cand: Candidate) -> str:
    """Why the terminal would not take ``cand`` ("" when it would)."""
    if not reader.accepts(cand.aid):
        exact = [t for t in reader.aids if not t.partial and cand.aid.startswith(t)]
        if exact:
            return (f"[emv] aids has {exact[0].hex().upper()} for exact selection only "
                    "(no *), and the card's AID is longer")
        return "not in this terminal's [emv] aids"
    if cand.confirm:
        return "asks for cardholder confirmation (87 b8), which this terminal cannot give"
    return ""


def _found(reader: EmvReader) -> list[Candidate]:
    listed = reader.directory()
    if listed:
        return listed
    probe: dict[bytes, TerminalAid] = {}
    for t in (*reader.aids, *DEFAULT_AIDS):
        probe.setdefault(bytes(t), t)
    return reader.list_of_aids(probe.values(), every=True)


def _read_one(reader: EmvReader, cand: Candidate, values: dict[int, bytes]
              ) -> tuple[str | None, dt.date | None, str | None]:
    """(display PAN, expiry, error) of one application."""
    rsp = reader.tx.select(cand.aid)
    if not rsp.ok:
        return None, None, f"SELECT: card answered {describe(rsp.sw)}"
    try:
        fci = tlv.decode_single(rsp.data, 0x6F)
        data = reader.read_selected(cand, fci, values)
    except (APDUError, TLVError) as err:
        return None, None, str(err)
    display = display_pan(data.pan)
    data.pan = ""  # the full PAN ends here (PCI DSS 3.5.1)
    return display, data.expiry, None


def survey(p: Presentation, ctx: ReadContext) -> list[Application]:
    """Every application on the card in ``p``, read; ``ctx.options["emv_aids"]`` says what
    this terminal accepts (the defaults without it). Card removal and reader faults raise."""
    if p.channel is None:
        raise APDUError("an EMV card needs an APDU channel")
    contactless = is_contactless(p)
    reader = EmvReader(Transmission(p.channel, p.protocol), contactless=contactless,
                       aids=ctx.options.get("emv_aids", DEFAULT_AIDS))
    tz = ZoneInfo(str(ctx.options.get("timezone", "Asia/Seoul")))
    now = dt.datetime.fromtimestamp(ctx.now_ms / 1000, tz)
    values = terminal_data(ctx.amount, now, contactless=contactless)
    try:
        found = _found(reader)
    except TLVError as err:
        raise APDUError(f"malformed card directory: {err}") from err
    out = []
    for cand in found:
        display, expiry, error = _read_one(reader, cand, values)
        reason = why_not(reader, cand)
        out.append(Application(
            aid=cand.aid, label=cand.label, priority=cand.priority or None,
            confirmation=cand.confirm, accepted=not reason, reason=reason, display=display,
            expiry=expiry, error=error))
    return out
