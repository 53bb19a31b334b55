"""What each terminal last said of itself: its software version and the faults it shows.

A terminal sends ``POST /v1/status`` (:mod:`sync.status_report`) when either changes; the
newest report of each terminal is kept here, with when it came, and the operators' Fleet page
and a terminal's page show it. Only the newest is kept: the access log and the structured
log hold every report (a change of faults is logged with the terminal's id), and what an
operator asks is "what is wrong with it now".
"""

from __future__ import annotations

import json
import logging
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from central.store import Store
from sync.status_report import parse_status

log = logging.getLogger(__name__)

TABLES = """
CREATE TABLE IF NOT EXISTS terminal_reports (
    terminal_id TEXT PRIMARY KEY, municipality_id TEXT NOT NULL, software TEXT NOT NULL,
    faults TEXT NOT NULL, reported_ms BIGINT NOT NULL)
"""

_READY: weakref.WeakSet[Store] = weakref.WeakSet()


@dataclass(frozen=True)
class Report:
    software: str
    #: (cause, detail), the one to fix first first; empty: the terminal approves
    faults: tuple[tuple[str, str], ...]
    reported_ms: int

    def as_dict(self) -> dict[str, Any]:
        return {"software": self.software, "reported_ms": self.reported_ms,
                "faults": [{"cause": c, "detail": d} for c, d in self.faults]}


def ensure_schema(store: Store) -> None:
    """Make the table where missing (once per store in a process)."""
    if store in _READY:
        return
    with store.tx() as tx:
        tx.schema_lock("terminal_reports")
        tx.run(TABLES)
    _READY.add(store)


def record(store: Store, terminal_id: str, municipality: str, body: bytes,
           now_ms: int | None = None) -> dict[str, Any]:
    """Keep ``terminal_id``'s report (a typed error for a malformed body, nothing kept)."""
    software, faults = parse_status(body)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    ensure_schema(store)
    text = json.dumps(faults, separators=(",", ":"), ensure_ascii=False)
    with store.tx() as tx:
        row = tx.one("SELECT faults FROM terminal_reports WHERE terminal_id = ?",
                     (terminal_id,))
        tx.run("INSERT INTO terminal_reports VALUES (?, ?, ?, ?, ?) ON CONFLICT (terminal_id) "
               "DO UPDATE SET municipality_id = excluded.municipality_id, "
               "software = excluded.software, faults = excluded.faults, "
               "reported_ms = excluded.reported_ms",
               (terminal_id, municipality, software, text, now))
    if row is None or str(row[0]) != text:
        log.info("terminal %s reports %s", terminal_id,
                 "; ".join(f"{f['cause']}: {f['detail']}" for f in faults) or "no fault",
                 extra={"terminal": terminal_id, "software": software,
                        "faults": [f["cause"] for f in faults]})
    return {"software": software, "faults": len(faults)}


def reports(store: Store, terminal_ids: Iterable[str] | None = None) -> dict[str, Report]:
    """The newest report of each terminal (of ``terminal_ids`` when given) that sent one."""
    ensure_schema(store)
    with store.tx(write=False) as tx:
        if terminal_ids is None:
            rows = tx.all("SELECT terminal_id, software, faults, reported_ms "
                          "FROM terminal_reports")
        else:
            wanted = sorted(set(terminal_ids))
            rows = []
            for i in range(0, len(wanted), 5000):
                test, param = tx.any_of("terminal_id", wanted[i:i + 5000])
                rows += tx.all(f"SELECT terminal_id, software, faults, reported_ms FROM "
                               f"terminal_reports WHERE {test}", (param,))
    return {str(t): Report(str(s), faults_of(faults), int(ms)) for t, s, faults, ms in rows}


def faults_of(text: object) -> tuple[tuple[str, str], ...]:
    """The faults column as (cause, detail) pairs (it holds what :func:`record` parsed)."""
    if text == "[]":  # most terminals, most of the time: the Fleet lists thousands
        return ()
    return tuple((str(f["cause"]), str(f["detail"])) for f in json.loads(str(text)))


__all__ = ["Report", "ensure_schema", "faults_of", "record", "reports"]
