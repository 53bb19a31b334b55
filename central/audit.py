"""The audit of the central chain: every entry's own signature and hash link, checked again
after ingest.

Ingest checks each batch's hash links and the signature of its last entry (``anchor``, the
default): the links commit every earlier entry's bytes to that one signature, so what is
accepted is what the terminal signed. What ingest leaves unchecked is each earlier entry's
*own* signature. The chain does not commit signature bytes, but the batch arrives in a request
whose signature covers the body's SHA-256, so an entry with a bad own signature is accepted
only if the terminal sent it so (a bug in its signing, a damaged signature in its ledger, or
a key that signs something else). The audit finds those, and any row altered in the store
after ingest: it checks each stored entry's signature against its terminal's registered key
(a terminal's key never changes: a new key is a new terminal id), and that its ``prev_hash``
is the SHA-256 of its terminal's previous entry as stored now, with a later monotonic stamp.

It keeps its place in the store (``audit_cursor``: the next log index to check), so a run goes
on where the last one stopped, whichever process ran it: ``central audit`` by hand, or
``central serve`` in a thread every ``--audit-every`` seconds. Each failing entry is a row of
``audit_failures``; checking a range again replaces that range's rows, so the table says what
the latest check of each entry found, and ``/metrics`` counts it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from central.store import Store, Tx
from localpay import encoding
from localpay.errors import ConfigError, EntryEncodingError
from sync.protocol import ZERO_HASH

log = logging.getLogger(__name__)

TABLES = """
CREATE TABLE IF NOT EXISTS audit_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1), next_index BIGINT NOT NULL,
    checked_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_failures (
    log_index BIGINT PRIMARY KEY, terminal_id TEXT NOT NULL, seq BIGINT NOT NULL,
    reason TEXT NOT NULL, found_ms BIGINT NOT NULL)
"""

#: entries read and checked at a time: about 1 MB of rows, one write transaction each
CHUNK = 5000
#: default seconds between two background runs of ``central serve``
EVERY_S = 60.0

# Several workers starting at once would race on CREATE TABLE (PostgreSQL's catalogue).
_SCHEMA_LOCK = 0x6C7061756469740A  # "lpaudit\n"
_READY: weakref.WeakSet[Store] = weakref.WeakSet()


def ensure_schema(store: Store) -> None:
    """Make the audit's tables where missing (once per store in a process). A store from
    before the audit starts it at log index 0: every entry is checked once."""
    if store in _READY:
        return
    with store.tx() as tx:
        if store.kind == "postgresql":
            tx.one("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
        for statement in TABLES.split(";"):
            if statement.strip():
                tx.run(statement)
        tx.run("INSERT INTO audit_cursor (id, next_index, checked_ms) VALUES (1, 0, 0) "
               "ON CONFLICT (id) DO NOTHING")
    _READY.add(store)


@dataclass(frozen=True, slots=True)
class Failure:
    """An entry that failed its check, and why (reasons joined by ``; ``)."""

    log_index: int
    terminal_id: str
    seq: int
    reason: str


@dataclass
class AuditRun:
    """What one run checked: log indexes ``start`` to ``end`` (exclusive)."""

    start: int
    end: int
    checked: int = 0
    seconds: float = 0.0
    #: the failing entries this run found, in log order
    failures: list[Failure] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Head:
    """A terminal's entry as the next one must link to it."""

    seq: int
    digest: bytes
    mono: int | None  # None: its bytes do not decode (that entry is reported itself)


def _head(seq: int, data: bytes) -> _Head:
    try:
        mono: int | None = encoding.decode(data).mono
    except EntryEncodingError:
        mono = None
    return _Head(seq, hashlib.sha256(data).digest(), mono)


class _Checker:
    """Checks entries in log order, keeping each terminal's last entry seen."""

    def __init__(self, keys: dict[str, bytes]) -> None:
        self._raw = keys
        self._keys: dict[str, Ed25519PublicKey | None] = {}
        self.heads: dict[str, _Head] = {}
        #: entries before a chunk that :meth:`wanted` named, as read from the store
        self.earlier: dict[tuple[str, int], _Head] = {}

    def key(self, terminal_id: str) -> Ed25519PublicKey | None:
        if terminal_id not in self._keys:
            raw = self._raw.get(terminal_id)
            try:
                self._keys[terminal_id] = (Ed25519PublicKey.from_public_bytes(raw)
                                           if raw is not None else None)
            except ValueError:
                self._keys[terminal_id] = None
        return self._keys[terminal_id]

    def wanted(self, rows: list[tuple[int, str, int, bytes, bytes]]) -> set[tuple[str, int]]:
        """The previous entries of ``rows`` that are neither among them nor remembered."""
        have = {t: h.seq for t, h in self.heads.items()}
        out: set[tuple[str, int]] = set()
        for _, tid, seq, _, _ in rows:
            if seq > 1 and have.get(tid) != seq - 1:
                out.add((tid, seq - 1))
            have[tid] = seq
        return out

    def check(self, tid: str, seq: int, data: bytes, signature: bytes) -> str | None:
        """Why the entry fails (None: it passes); it becomes the one the next links to."""
        reasons = []
        try:
            f: encoding.EntryFields | None = encoding.decode(data)
        except EntryEncodingError as err:
            f = None
            reasons.append(f"does not decode: {err}")
        if f is not None and (f.seq, f.terminal_id) != (seq, tid):
            reasons.append(f"its bytes are entry {f.seq} of {f.terminal_id}")
        key = self.key(tid)
        if key is None:
            reasons.append("its terminal is not registered")
        else:
            try:
                key.verify(signature, data)
            except (InvalidSignature, ValueError):
                reasons.append("bad signature")
        if f is not None:
            prev = self.heads.get(tid)
            if prev is None or prev.seq != seq - 1:
                prev = self.earlier.get((tid, seq - 1))
            if seq == 1:
                if f.prev_hash != ZERO_HASH:
                    reasons.append("does not start its terminal's chain")
            elif prev is None or prev.seq != seq - 1:
                reasons.append(f"entry {seq - 1} is missing")
            elif f.prev_hash != prev.digest or (prev.mono is not None and f.mono <= prev.mono):
                reasons.append(f"does not link to entry {seq - 1}")
        self.heads[tid] = _Head(seq, hashlib.sha256(data).digest(),
                                f.mono if f is not None else None)
        return "; ".join(reasons) or None


def _read_previous(tx: Tx, wanted: set[tuple[str, int]]) -> list[tuple[str, int, bytes]]:
    out: list[tuple[str, int, bytes]] = []
    pairs = sorted(wanted)
    for i in range(0, len(pairs), 1000):
        table, params = tx.values_table("w", ("terminal_id", "seq"), pairs[i:i + 1000])
        out.extend((str(t), int(q), bytes(d)) for t, q, d in tx.all(
            f"SELECT e.terminal_id, e.seq, e.data FROM {table} JOIN entries e "
            "ON e.terminal_id = w.terminal_id AND e.seq = w.seq", params))
    return out


def figures(tx: Tx) -> tuple[int, int]:
    """``(next log index to check, failing entries recorded)``, for ``/metrics`` (after
    :func:`ensure_schema`)."""
    row = tx.one("SELECT c.next_index, (SELECT COUNT(*) FROM audit_failures) "
                 "FROM audit_cursor c WHERE c.id = 1")
    return (int(row[0]), int(row[1])) if row else (0, 0)


def recorded(store: Store) -> list[tuple[Failure, int]]:
    """Every failing entry the store records, in log order, with when it was found (ms)."""
    ensure_schema(store)
    with store.tx(write=False) as tx:
        rows = tx.all("SELECT log_index, terminal_id, seq, reason, found_ms FROM "
                      "audit_failures ORDER BY log_index")
    return [(Failure(int(i), str(t), int(q), str(r)), int(ms)) for i, t, q, r, ms in rows]


def run_audit(store: Store, *, start: int | None = None, chunk: int = CHUNK,
              progress: Callable[[int, int], None] | None = None,
              stop: Callable[[], bool] | None = None) -> AuditRun:
    """Check the entries from ``start`` (default: the cursor) to the log's end as it is now,
    recording each chunk's failures and moving the cursor on after it (never back: a run
    ``--from`` an earlier index leaves a later cursor where it was). ``progress(done,
    total)`` after each chunk; ``stop()`` true ends the run between chunks."""
    ensure_schema(store)
    began = time.perf_counter()
    with store.tx(write=False) as tx:
        state = tx.one("SELECT size FROM log_state WHERE id = 1")
        size = int(state[0]) if state else 0
        at = tx.one("SELECT next_index FROM audit_cursor WHERE id = 1")
        keys = {str(t): bytes(k) for t, k in tx.all(
            "SELECT terminal_id, public_key FROM terminals")}
    lo = (int(at[0]) if at else 0) if start is None else start
    if lo < 0 or lo > size:
        raise ConfigError(f"--from {lo} is past the end of the log ({size} entries)")
    run = AuditRun(lo, lo)
    checker = _Checker(keys)
    while lo < size and not (stop is not None and stop()):
        hi = min(lo + chunk, size)
        with store.tx(write=False) as tx:
            rows = [(int(i), str(t), int(q), bytes(d), bytes(g)) for i, t, q, d, g in tx.all(
                "SELECT log_index, terminal_id, seq, data, signature FROM entries "
                "WHERE log_index >= ? AND log_index < ? ORDER BY log_index", (lo, hi))]
            wanted = checker.wanted(rows)
            earlier = _read_previous(tx, wanted) if wanted else []
        checker.earlier = {(tid, seq): _head(seq, data) for tid, seq, data in earlier}
        found: list[Failure] = []
        expected = lo
        for index, tid, seq, data, signature in rows:
            # a hole in the log's indexes: a row deleted from the store
            found.extend(Failure(i, "", 0, "no entry at this log index")
                         for i in range(expected, index))
            expected = index + 1
            reason = checker.check(tid, seq, data, signature)
            if reason is not None:
                found.append(Failure(index, tid, seq, reason))
        found.extend(Failure(i, "", 0, "no entry at this log index")
                     for i in range(expected, hi))
        _record(store, lo, hi, found)
        run.failures.extend(found)
        run.checked += len(rows)
        run.end = lo = hi
        if progress is not None:
            progress(hi - run.start, size - run.start)
    run.seconds = time.perf_counter() - began
    return run


def _record(store: Store, lo: int, hi: int, found: list[Failure]) -> None:
    now = int(time.time() * 1000)
    with store.tx() as tx:
        tx.run("DELETE FROM audit_failures WHERE log_index >= ? AND log_index < ?", (lo, hi))
        # two auditors (a worker's thread and the command) may record one range at once
        tx.many("INSERT INTO audit_failures (log_index, terminal_id, seq, reason, found_ms) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (log_index) DO UPDATE SET "
                "terminal_id = excluded.terminal_id, seq = excluded.seq, "
                "reason = excluded.reason",
                [(f.log_index, f.terminal_id, f.seq, f.reason, now) for f in found])
        tx.run("UPDATE audit_cursor SET next_index = ?, checked_ms = ? WHERE id = 1 "
               "AND next_index < ?", (hi, now, hi))


class BackgroundAudit:
    """``central serve``'s audit: a daemon thread running :func:`run_audit` every ``every_s``
    seconds (the first at once), logging each failing entry at ERROR. A failed run (the
    store away) is logged and the next one goes on from the cursor."""

    def __init__(self, store: Store, every_s: float = EVERY_S) -> None:
        self.store = store
        self.every_s = every_s
        self.thread = threading.Thread(target=self._loop, name="audit", daemon=True)

    def start(self) -> BackgroundAudit:
        self.thread.start()
        return self

    def _loop(self) -> None:
        while True:
            try:
                run = run_audit(self.store)
            except Exception:  # the cursor says where the next run starts
                log.exception("audit: the run failed; the next one goes on from the cursor")
            else:
                for f in run.failures:
                    log.error("audit: entry %d of terminal %s (log index %d) fails: %s",
                              f.seq, f.terminal_id, f.log_index, f.reason,
                              extra={"event": "audit_failure", "terminal": f.terminal_id,
                                     "seq": f.seq, "reason": f.reason})
            time.sleep(self.every_s)
