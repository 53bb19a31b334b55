"""A terminal's software version and the faults it is showing, told to central.

``POST /v1/status`` (signed like every terminal request) carries::

    {"software": "localpay 0.1.0",
     "faults": [{"cause": "no_reader", "detail": "pcsc: no reader"}, ...]}

``cause`` is one of the kiosk's out-of-service causes (``kiosk_ui.service.Cause``: what
stops the terminal approving) or another short name written ``[a-z_]``; ``detail`` is the
text the screen shows. An empty list says the terminal approves. The operators' Fleet page
shows both, so that a terminal that cannot take a tap is seen from the office, not only by
the rider at its door.

The client sends it when it differs from what central last acknowledged (kept in the sync
state file), so a terminal whose state does not change sends it once; a service from before
the route (an unsigned 404) is asked again ten minutes later. Both sides parse it here.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from localpay import __version__
from localpay.errors import SyncProtocolError

PATH = "/v1/status"
SOFTWARE = f"localpay {__version__}"
#: more faults than a terminal has causes are cut: the screen shows the first anyway
MAX_FAULTS = 16
MAX_DETAIL = 200
MAX_SOFTWARE = 64
_CAUSE = re.compile(r"[a-z][a-z_]{0,39}")
_SOFTWARE = re.compile(r"[\x20-\x7e]{1," + str(MAX_SOFTWARE) + "}")


def status_body(faults: list[tuple[str, str]], software: str = SOFTWARE) -> bytes:
    """The request body for ``faults`` (cause, detail), in the order the screen ranks them."""
    doc = {"software": software,
           "faults": [{"cause": c, "detail": d[:MAX_DETAIL]} for c, d in faults[:MAX_FAULTS]]}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def parse_status(body: bytes) -> tuple[str, list[dict[str, str]]]:
    """The software version and faults of a status body; a typed error for anything else."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as err:
        raise SyncProtocolError(f"status is not JSON: {err}") from None
    if not isinstance(doc, dict) or set(doc) != {"software", "faults"}:
        raise SyncProtocolError("status must be an object of exactly software and faults")
    software, faults = doc["software"], doc["faults"]
    if not isinstance(software, str) or not _SOFTWARE.fullmatch(software):
        raise SyncProtocolError(f"status software must be 1 to {MAX_SOFTWARE} printable ASCII "
                                f"characters")
    if not isinstance(faults, list) or len(faults) > MAX_FAULTS:
        raise SyncProtocolError(f"status faults must be a list of at most {MAX_FAULTS}")
    out = []
    for fault in faults:
        if not isinstance(fault, dict) or set(fault) != {"cause", "detail"}:
            raise SyncProtocolError("each status fault is an object of exactly cause and detail")
        cause, detail = fault["cause"], fault["detail"]
        if not isinstance(cause, str) or not _CAUSE.fullmatch(cause):
            shown = json.dumps(cause, ensure_ascii=False)[:40]
            raise SyncProtocolError(f"status fault cause {shown} is not a short name [a-z_]")
        if not isinstance(detail, str) or len(detail) > MAX_DETAIL or not detail.isprintable():
            raise SyncProtocolError(f"status fault detail must be printable text of at most "
                                    f"{MAX_DETAIL} characters")
        out.append({"cause": cause, "detail": detail})
    return software, out


def faults_of(blockers: Any) -> list[tuple[str, str]]:
    """(cause, detail) of the kiosk's blockers (``kiosk_ui.service.Blocker``)."""
    return [(str(getattr(b.cause, "value", b.cause)), str(b.detail)) for b in blockers]


__all__ = ["MAX_FAULTS", "PATH", "SOFTWARE", "digest", "faults_of", "parse_status",
           "status_body"]
