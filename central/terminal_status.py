"""What the operator sees of each terminal, and revocation.

``terminal_status`` holds, per terminal, when it was last seen (its last authenticated
request, written in the transaction that records the request's nonce) and, once revoked,
when and why. It lives in the store, not in a worker's memory, so every API worker refuses
a revoked terminal at its next request and ``/metrics`` of any worker shows the same
last-seen times.

A revoked terminal's signature no longer authenticates anything (401): its batches,
deny-list and config requests are all refused. Its entries already in the central chain
stay there (nothing appended is removed); revocation is not undone by a command, since a
terminal whose key may have leaked must enrol again under a new id.

:func:`terminals` is ``central terminals``: place and role (from the newest config bundle
published for it), the merchant it is assigned to, when it was registered, last seen, its
last entry, its sync lag and clock state, its config version, the software version and
faults it last reported (:mod:`central.terminal_reports`), and whether it is revoked; all in
one query. :func:`row_text` is one row as text, the same in ``central terminals`` and in the
console's Fleet.

:func:`recent_terminals` is the same listing as the console's live fleet view reads it, kept
a few seconds: a city's 5,000 terminals take some 40 ms to list (more on a busy machine),
and an operator paging through them, or a table polling every few seconds, need not wait
for that on every request. :func:`page_of` filters, sorts and pages a listing: the console's
page pages the kept one, :func:`central.console_data.fleet` a fresh one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import tomllib
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from central import terminal_reports
from central.store import Store, Tx
from firmware_cfg import bundle as bundles
from localpay.errors import ConfigError, SyncAuthError, SyncProtocolError

log = logging.getLogger(__name__)

TABLES = """
CREATE TABLE IF NOT EXISTS terminal_status (
    terminal_id TEXT PRIMARY KEY, last_seen_ms BIGINT NOT NULL DEFAULT 0,
    revoked_ms BIGINT, revoked_reason TEXT NOT NULL DEFAULT '')
"""

_READY: weakref.WeakSet[Store] = weakref.WeakSet()
#: per store, (terminal id, config version) -> its role and place: a published bundle is
#: never changed (``configs`` is keyed by both), so each is parsed once per process, not on
#: every listing (parsing 5,000 bundles' TOML is a second; the console lists them often)
_ROLES: weakref.WeakKeyDictionary[Store, dict[tuple[str, int], tuple[str, str]]] = (
    weakref.WeakKeyDictionary())


class UnknownTerminalError(ConfigError):
    """The operator named a terminal that is not registered."""


class AlreadyRevokedError(ConfigError):
    """The terminal was revoked before."""


def ensure_schema(store: Store) -> None:
    """Make the table where missing (once per store in a process)."""
    if store in _READY:
        return
    with store.tx() as tx:
        # PostgreSQL's CREATE TABLE IF NOT EXISTS is not safe against a concurrent one (a
        # duplicate key in pg_type): the first requests of several terminals race here
        tx.lock_log()
        tx.run(TABLES)
    _READY.add(store)


def seen(tx: Tx, terminal_id: str, now_ms: int) -> None:
    """Record an authenticated request of ``terminal_id``; refuse a revoked terminal
    (raising inside the request's transaction undoes its nonce too)."""
    row = tx.one("SELECT revoked_ms, revoked_reason FROM terminal_status WHERE terminal_id = ?",
                 (terminal_id,))
    if row is not None and row[0] is not None:
        raise SyncAuthError(f"terminal {terminal_id!r} is revoked")
    if row is None:
        tx.run("INSERT INTO terminal_status (terminal_id, last_seen_ms) VALUES (?, ?) "
               "ON CONFLICT (terminal_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms",
               (terminal_id, now_ms))
    else:
        tx.run("UPDATE terminal_status SET last_seen_ms = ? WHERE terminal_id = ? "
               "AND last_seen_ms < ?", (now_ms, terminal_id, now_ms))


def revoke(store: Store, terminal_id: str, reason: str, *, now_ms: int | None = None) -> int:
    """Revoke ``terminal_id`` from now on; returns the time recorded (Unix ms)."""
    ensure_schema(store)
    reason = " ".join(reason.split())
    if len(reason) > 500:
        raise SyncProtocolError("a revocation reason is at most 500 characters")
    when = now_ms if now_ms is not None else int(time.time() * 1000)
    with store.tx() as tx:
        if tx.one("SELECT 1 FROM terminals WHERE terminal_id = ?", (terminal_id,)) is None:
            raise UnknownTerminalError(f"no terminal {terminal_id!r} is registered")
        row = tx.one("SELECT revoked_ms FROM terminal_status WHERE terminal_id = ?",
                     (terminal_id,))
        if row is not None and row[0] is not None:
            raise AlreadyRevokedError(f"terminal {terminal_id!r} was revoked already, at "
                                      f"{_iso(int(row[0]))}")
        tx.run("INSERT INTO terminal_status (terminal_id, revoked_ms, revoked_reason) "
               "VALUES (?, ?, ?) ON CONFLICT (terminal_id) DO UPDATE SET "
               "revoked_ms = excluded.revoked_ms, revoked_reason = excluded.revoked_reason",
               (terminal_id, when, reason))
    return when


@dataclass(frozen=True)
class TerminalRow:
    """One line of ``central terminals`` (times in Unix ms, 0: never)."""

    terminal_id: str
    municipality: str
    role: str
    place: str
    enrolled_ms: int
    last_seen_ms: int
    last_seq: int
    last_entry_ms: int
    #: at its last batch: arrival less the effective time of the batch's oldest new entry
    sync_lag_ms: int | None
    clock: str
    config_version: int
    revoked_ms: int | None
    revoked_reason: str
    #: the merchant it is assigned to ('' when none) and that merchant's name
    merchant_id: str = ""
    merchant_name: str = ""
    #: what it last reported of itself ('' and 0: it never did): its software version, and
    #: the faults it shows as (cause, detail), the one to fix first first
    software: str = ""
    faults: tuple[tuple[str, str], ...] = ()
    reported_ms: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def terminals(store: Store, municipality: str | None = None, *,
              terminal_id: str | None = None) -> list[TerminalRow]:
    """Every registered terminal (of ``municipality`` when given; only ``terminal_id`` when
    given), by id."""
    ensure_schema(store)
    terminal_reports.ensure_schema(store)
    conds, params = [], []
    if municipality:
        conds.append("t.municipality_id = ?")
        params.append(municipality)
    if terminal_id is not None:
        conds.append("t.terminal_id = ?")
        params.append(terminal_id)
    where = f"WHERE {' AND '.join(conds)}" if conds else ""
    with store.tx(write=False) as tx:
        # the sync lag is :func:`sync_lags`'s, found per terminal through the batches'
        # primary key (its newest batch, then that batch's first entry): the time grows with
        # the terminals listed, not with every batch ever received (millions in a year)
        rows = tx.all(
            "SELECT t.terminal_id, t.municipality_id, t.added_ms, t.last_seq, "
            "t.last_effective_ms, s.last_seen_ms, s.revoked_ms, s.revoked_reason, e.place, "
            "e.detail, b.received_ms, f.effective_ms, mt.merchant_id, m.name, r.software, "
            "r.faults, r.reported_ms FROM terminals t "
            "LEFT JOIN terminal_status s ON s.terminal_id = t.terminal_id "
            "LEFT JOIN merchant_terminals mt ON mt.municipality_id = t.municipality_id "
            "AND mt.terminal_id = t.terminal_id "
            "LEFT JOIN merchants m ON m.municipality_id = mt.municipality_id "
            "AND m.merchant_id = mt.merchant_id "
            "LEFT JOIN terminal_reports r ON r.terminal_id = t.terminal_id "
            "LEFT JOIN entries e ON e.terminal_id = t.terminal_id AND e.seq = t.last_seq "
            "LEFT JOIN batches b ON b.terminal_id = t.terminal_id AND b.last_seq = "
            "(SELECT MAX(m.last_seq) FROM batches m WHERE m.terminal_id = t.terminal_id) "
            "LEFT JOIN entries f ON f.terminal_id = b.terminal_id AND f.seq = b.first_seq "
            f"{where} ORDER BY t.terminal_id", tuple(params))
        roles = _ROLES.setdefault(store, {})
        vwhere = "WHERE terminal_id = ? " if terminal_id is not None else ""
        latest = {str(t): int(v) for t, v in tx.all(
            f"SELECT terminal_id, MAX(version) FROM configs {vwhere}GROUP BY terminal_id",
            (terminal_id,) if terminal_id is not None else ())}
        if any((t, v) not in roles for t, v in latest.items()):
            for t, v, b in tx.all(
                    "SELECT c.terminal_id, c.version, c.body FROM configs c JOIN (SELECT "
                    f"terminal_id, MAX(version) AS v FROM configs {vwhere}GROUP BY "
                    "terminal_id) m ON m.terminal_id = c.terminal_id AND m.v = c.version",
                    (terminal_id,) if terminal_id is not None else ()):
                roles[(str(t), int(v))] = _role_place(str(b))
    out = []
    for (tid, muni, added, last_seq, last_eff, seen_ms, revoked, reason, place,
         detail, received, first_eff, merchant, name, software, faults, reported) in rows:
        version = latest.get(str(tid), 0)
        role, conf_place = roles.get((str(tid), version), ("", ""))
        lag = max(0, int(received) - int(first_eff)) if first_eff is not None else None
        out.append(TerminalRow(
            str(tid), str(muni), role, conf_place or str(place or ""), int(added),
            int(seen_ms or 0), int(last_seq), int(last_eff), lag,
            _clock_of(detail), version, int(revoked) if revoked is not None else None,
            str(reason or ""), str(merchant or ""), str(name or ""), str(software or ""),
            terminal_reports.faults_of(faults) if faults else (), int(reported or 0)))
    return out


_FIELDS = frozenset(TerminalRow.__dataclass_fields__)
#: a listing of :func:`recent_terminals` younger than this is given as it is: the console's
#: live table asks every 5 s, so it sees a listing at most one of its rounds old, and a
#: worker lists the fleet at most once in that time however many operators look (each
#: listing holds the worker's interpreter some 30 ms, which requests arriving meanwhile wait)
RECENT_S = 5.0
#: one older than this (nobody looked for a while) is not shown: a new one is taken first
STALE_S = 10.0


@dataclass
class _Listing:
    rows: list[TerminalRow]
    taken: float  # time.monotonic() when the listing started
    refreshing: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


_RECENT: weakref.WeakKeyDictionary[Store, dict[str | None, _Listing]] = (
    weakref.WeakKeyDictionary())
_RECENT_LOCK = threading.Lock()


def recent_terminals(store: Store, municipality: str | None = None, *,
                     recent_s: float = RECENT_S,
                     stale_s: float = STALE_S) -> tuple[list[TerminalRow], float]:
    """:func:`terminals` as kept for the console, and its age in seconds: a listing
    younger than ``recent_s`` is given as it is; an older one is given too while a thread
    takes the next (the request after gets it), so no request but the first after a pause
    waits for a whole listing; one older than ``stale_s`` is replaced before it is given.
    Reads only."""
    with _RECENT_LOCK:
        kept = _RECENT.setdefault(store, {})
        listing = kept.get(municipality)
    now = time.monotonic()
    if listing is None or now - listing.taken > stale_s:
        started = time.monotonic()
        listing = _Listing(terminals(store, municipality), started)
        with _RECENT_LOCK:
            kept[municipality] = listing
        return listing.rows, time.monotonic() - started
    if now - listing.taken > recent_s:
        with listing.lock:
            start = not listing.refreshing
            listing.refreshing = True
        if start:
            threading.Thread(target=_refresh, args=(store, municipality, kept, listing),
                             name="fleet-listing", daemon=True).start()
    return listing.rows, now - listing.taken


def _refresh(store: Store, municipality: str | None, kept: dict[str | None, _Listing],
             old: _Listing) -> None:
    started = time.monotonic()
    try:
        rows = terminals(store, municipality)
    except Exception as err:  # in a thread of its own: the next request tries again
        log.warning("the fleet's listing was not renewed: %s", err)
        with old.lock:
            old.refreshing = False
        return
    with _RECENT_LOCK:
        kept[municipality] = _Listing(rows, started)


def page_of(rows: Sequence[TerminalRow], filter_text: str | None = None,
            role: str | None = None, sort: str = "terminal_id", desc: bool = False,
            offset: int = 0, limit: int = 100, *, software: str | None = None,
            faulty: bool = False) -> tuple[list[TerminalRow], int]:
    """Of ``rows``, those whose id, place, municipality, merchant (id or name) or software
    holds ``filter_text`` (any case), of ``role`` and running ``software`` (exactly) when
    given, showing a fault when ``faulty``; sorted by the field ``sort`` (a missing lag or
    revocation first, as the smallest; faults by their number; ties by id), ``limit`` from
    ``offset``; and how many passed. :func:`central.console_data.fleet` is this over
    :func:`terminals`, the console's page this over :func:`recent_terminals`."""
    if sort not in _FIELDS:
        raise ConfigError(f"sort: a field of TerminalRow, not {sort!r}")
    needle = (filter_text or "").strip().lower()
    out = [r for r in rows
           if (not needle or needle in _haystack(r))
           and (not role or r.role == role) and (not software or r.software == software)
           and (not faulty or r.faults)]

    def key(r: TerminalRow) -> tuple[Any, ...]:
        value = getattr(r, sort)
        if isinstance(value, tuple):
            value = len(value)
        return (value is not None, value if value is not None else 0, r.terminal_id)

    out.sort(key=key, reverse=desc)
    return out[offset:offset + limit], len(out)


def _haystack(r: TerminalRow) -> str:
    return (f"{r.terminal_id}\n{r.place}\n{r.municipality}\n{r.merchant_id}\n"
            f"{r.merchant_name}\n{r.software}").lower()


def lag_text(ms: int | None) -> str:
    """A sync lag in its largest whole unit: ``45s``, ``12m``, ``3h`` (``-``: none)."""
    if ms is None:
        return "-"
    seconds = ms // 1000
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def row_text(r: TerminalRow, when: Callable[[int | None], str]) -> dict[str, str]:
    """``r``'s figures as ``central terminals`` and the console's Fleet show them, times by
    ``when`` (each caller its own: UTC in the command, the service's zone on the page);
    ``-`` where there is nothing. The words around them (revoked or active) are each
    caller's, in its language."""
    merchant = (f"{r.merchant_id} ({r.merchant_name})" if r.merchant_name else r.merchant_id)
    return {"terminal": r.terminal_id, "municipality": r.municipality,
            "place": r.place or "-", "role": r.role or "-", "merchant": merchant or "-",
            "enrolled": when(r.enrolled_ms), "last_seen": when(r.last_seen_ms),
            "last_entry": when(r.last_entry_ms), "sync_lag": lag_text(r.sync_lag_ms),
            "clock": r.clock or "-", "config": f"v{r.config_version}",
            "software": r.software or "-",
            "faults": ", ".join(cause for cause, _ in r.faults) or "-",
            "reported": when(r.reported_ms)}


def sync_lags(tx: Tx) -> dict[str, int]:
    """Per terminal, at its last batch: how long the batch's oldest new entry had waited
    (arrival less its effective time, never below 0)."""
    return {str(t): max(0, int(received) - int(eff)) for t, received, eff in tx.all(
        "SELECT b.terminal_id, b.received_ms, e.effective_ms FROM batches b "
        "JOIN (SELECT terminal_id, MAX(last_seq) AS s FROM batches GROUP BY terminal_id) m "
        "ON m.terminal_id = b.terminal_id AND m.s = b.last_seq "
        "JOIN entries e ON e.terminal_id = b.terminal_id AND e.seq = b.first_seq")}


def _role_place(body: str) -> tuple[str, str]:
    """The role and place a config bundle gives its terminal ('' when there is none)."""
    if not body:
        return "", ""
    try:
        doc = tomllib.loads(bundles.peek_config(body.encode("utf-8")))
    except (ConfigError, tomllib.TOMLDecodeError, UnicodeError):
        return "", ""
    section = doc.get("terminal", {})
    if not isinstance(section, dict):
        return "", ""
    return str(section.get("role", "")), str(section.get("place", ""))


def _clock_of(detail: object) -> str:
    """The clock state the entry's detail states ('' when none or no entry)."""
    if not detail:
        return ""
    try:
        doc = json.loads(str(detail))
    except ValueError:
        return ""
    value = doc.get("clock") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else ""


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
