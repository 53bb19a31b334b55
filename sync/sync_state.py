"""The sync state kept beside the ledger (``<ledger>.sync.json``): the last checkpoint central
proved (what the next one is checked against: central's log only grows), the days whose
totals are still owed, and the versions of what was fetched.

A file that cannot be read, or holds values of the wrong kind, is refused with what to do:
it is never dropped silently, as that would drop the append-only check with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from localpay.durable import write_durably
from localpay.errors import LedgerWriteError, SyncProtocolError

#: the state's values and their types (a value may be absent)
TYPES: dict[str, type] = {"checkpoint": str, "days_unreported": list,
                          "balances_version": int, "config_version": int,
                          "status_sent": str}


def load(path: Path) -> dict[str, Any]:
    """The state held at ``path`` ({} when there is none yet)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise bad(path, str(err)) from err
    if not isinstance(data, dict):
        raise bad(path, f"a JSON {type(data).__name__}, not an object")
    for key, kind in TYPES.items():
        value = data.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise bad(path, f"{key} is {value!r}, not a {kind.__name__}")
    if not all(isinstance(day, str) for day in data.get("days_unreported") or ()):
        raise bad(path, "days_unreported holds a day that is not text")
    return data


def bad(path: Path, why: str) -> SyncProtocolError:
    return SyncProtocolError(
        f"sync state {path} unreadable: {why}. It holds the last checkpoint central proved "
        "and the days whose totals are still owed: restore it from a backup, or move it "
        "aside and sync again (sync then starts from central's next checkpoint, without the "
        "append-only check against the one it held)")


def save(path: Path, state: dict[str, Any]) -> None:
    """Replace the state at ``path`` whole: a cut leaves this state or the one before, never
    a part (the kept checkpoint must not be lost)."""
    try:
        write_durably(path, json.dumps(state))
    except OSError as err:  # the disk full: the last state stands, the round is retried
        raise LedgerWriteError(f"sync state {path} not written: {err}") from err
