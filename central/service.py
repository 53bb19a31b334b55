"""The central service's logic over a :class:`~central.store.Store`, free of HTTP.

Ingesting a batch happens in two steps. First, outside any transaction, the batch is checked on
its own: one terminal, contiguous sequence numbers, each entry linking to the one before it,
time moving forward, and the signatures. Then, in one store transaction that holds the log's
append lock, it is checked against what the store already holds (continues exactly from the
terminal's last accepted entry; overlap with accepted entries must be byte-identical), appended
to the RFC 9162 tree through the stored frontier, every ingest hook runs on the new entries,
and a checkpoint of the new tree is signed. Either all of that commits or none of it does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from central import municipalities, terminal_status
from central.clock import EARLIEST_MS, effective_times
from central.store import ENTRY_COLUMNS, NODE_COLUMNS, Store, Tx
from firmware_cfg import bundle as bundles
from localpay.errors import (
    ChainMismatchError,
    ConfigError,
    ProofError,
    SyncAuthError,
    SyncProtocolError,
)
from sync import merkle
from sync.checkpoint import Checkpoint, NoteSigner
from sync.protocol import (
    STALE_MS,
    ZERO_HASH,
    BatchReceipt,
    WireEntry,
    check_nonce,
    decode_entry,
)

log = logging.getLogger(__name__)

VerifyPolicy = Literal["every", "anchor"]
DEFAULT_TZ = "Asia/Seoul"
#: the most rows of one kind an answer of changes holds (balances, weeks of points, riders);
#: the terminal asks again from the version it was told for the rest (:func:`whole_versions`)
PAGE = 50_000
#: seconds between the catch-up thread's runs of the followers (:meth:`CentralLog.keep_following`)
CATCH_UP_S = 60.0


@dataclass(frozen=True, slots=True)
class Ingested:
    """An entry as it enters the central chain."""

    log_index: int
    entry: WireEntry
    #: the day of its effective time, in the service's time zone
    day: str
    #: when central holds that it happened (:mod:`central.clock`); 0: its stated wall time
    effective_ms: int = 0

    @property
    def when_ms(self) -> int:
        return self.effective_ms or self.entry.wall_ms


@dataclass
class HookContext:
    """What an ingest hook may use besides the transaction."""

    service: CentralLog
    terminal_id: str
    lat: float | None
    lon: float | None
    now_ms: int
    denied: list[str] = field(default_factory=list)
    #: the municipality of the terminal whose batch this is
    municipality: str = municipalities.DEFAULT

    def deny(self, tx: Tx, card_token: str, reason: str) -> None:
        """Deny-list the card in the terminal's municipality."""
        if card_token and card_token not in self.denied:
            self.service.deny_add(tx, card_token, reason, municipality=self.municipality)
            self.denied.append(card_token)


class IngestHook(Protocol):
    """Runs in the ingest transaction on every batch's new entries, in log order.

    Raising aborts the whole batch; a hook that only records (flags, points) should not.
    """

    name: str

    def __call__(self, tx: Tx, batch: Sequence[Ingested], ctx: HookContext) -> None: ...


class Follower(Protocol):
    """Runs after each batch is committed, outside the ingest transaction: work that reads
    the log in order at its own pace, keeping its own place (incentive crediting).

    The log lock is not held while it runs, so ingest never waits for it; it catches up in
    chunks when batches arrive faster than one at a time. A failure is logged and leaves the
    batch accepted: the next run picks up from the follower's own cursor.
    """

    name: str

    def follow(self, service: CentralLog) -> None: ...


def _verify_sig(key: Ed25519PublicKey, entry: WireEntry) -> bool:
    try:
        key.verify(entry.signature, entry.data)
    except InvalidSignature:
        return False
    return True


def check_batch(
    terminal_id: str, key: Ed25519PublicKey, entries: Sequence[WireEntry], policy: VerifyPolicy
) -> None:
    """Everything about a batch that needs nothing from the store.

    ``every`` checks each entry's signature. ``anchor`` checks each hash link and the last
    entry's signature, which covers every earlier entry of the batch through the links
    (a forgery would need a SHA-256 second preimage); any failure then falls back to checking
    each signature so that the first bad sequence number is the one reported.
    """
    prev: WireEntry | None = None
    first_bad_link: int | None = None
    for e in entries:
        if e.terminal_id != terminal_id:
            raise ChainMismatchError(f"entry {e.seq} names terminal {e.terminal_id!r}", e.seq)
        if prev is not None:
            if e.seq != prev.seq + 1:
                raise ChainMismatchError(
                    f"batch is not contiguous: entry {e.seq} follows {prev.seq}", prev.seq + 1)
            if first_bad_link is None and (
                e.prev_hash != prev.entry_hash or e.mono <= prev.mono
            ):
                first_bad_link = e.seq
        elif e.seq < 1:
            raise ChainMismatchError("sequence numbers start at 1", e.seq)
        prev = e
    if policy == "anchor" and first_bad_link is None and _verify_sig(key, entries[-1]):
        return
    for e in entries:
        if not _verify_sig(key, e):
            raise ChainMismatchError(f"entry {e.seq} has a bad signature", e.seq)
        if first_bad_link == e.seq:
            raise ChainMismatchError(
                f"entry {e.seq} does not link to entry {e.seq - 1}", e.seq)


class SharedRuns:
    """The bookkeeping of runs shared by callers that each need one run to start after they
    ask (:meth:`CentralLog.follow_committed`), kept apart from the threads so that every
    order in which they can meet is a plain sequence of calls in a test.

    Each caller takes a ticket (1, 2, 3, ... in the order asked). A run covers every ticket
    taken before it started. A caller whose ticket a finished run covers has what it
    needs; one that asked while a run was going waits for it to finish, then either is
    covered or starts the next run itself. Runs never overlap (the caller holds the
    condition that guards this), so what a run covers never falls.
    """

    def __init__(self) -> None:
        self.taken = 0
        self.covered = 0
        self.running = False

    def take(self) -> int:
        """A new ticket, one above the last."""
        self.taken += 1
        return self.taken

    def waits(self, ticket: int) -> bool:
        """Whether the caller of ``ticket`` must wait: a run is going and none finished
        covers the ticket yet."""
        return self.running and self.covered < ticket

    def done(self, ticket: int) -> bool:
        """Whether a finished run covers ``ticket``."""
        return self.covered >= ticket

    def start(self) -> int:
        """Start a run; return the last ticket it covers."""
        self.running = True
        return self.taken

    def finish(self, covers: int) -> None:
        """The run that covers up to ``covers`` is over."""
        self.running = False
        self.covered = covers


class CentralLog:
    """The central chain: terminals, batches, proofs, deny list, balances and config."""

    def __init__(
        self,
        store: Store,
        signer: NoteSigner,
        *,
        hooks: Sequence[IngestHook] = (),
        followers: Sequence[Follower] = (),
        policy: VerifyPolicy = "anchor",
        tz: str = DEFAULT_TZ,
        stale_ms: int = STALE_MS,
        earliest_ms: int = EARLIEST_MS,
        programme_start: Callable[[Tx], int | None] | None = None,
    ) -> None:
        self.store = store
        self.signer = signer
        self.origin = signer.name
        self.hooks = list(hooks)
        self.followers = list(followers)
        self.policy: VerifyPolicy = policy
        self.tz = ZoneInfo(tz)
        self.stale_ms = stale_ms
        #: an entry stating a time before this is flagged and given an effective time
        self.earliest_ms = earliest_ms
        #: the programme's start (ms) as the rules in the store say, read in each ingest
        #: transaction: before it a stated time is implausible too
        self.programme_start = programme_start
        self._nonce_checks = 0
        # group following (follow_committed)
        self._follow = threading.Condition()
        self._runs = SharedRuns()
        #: folder of the service's key files (log, operator, token key), when it has one
        self.data_dir: Path | None = None
        #: registered terminals' public keys as read (:meth:`terminal_key`)
        self._keys: dict[str, Ed25519PublicKey] = {}

    def day_of(self, wall_ms: int) -> str:
        return datetime.fromtimestamp(wall_ms / 1000, self.tz).strftime("%Y-%m-%d")

    # -- terminals and request authentication -------------------------------------------------

    def add_terminal(self, terminal_id: str, public_key: bytes, *, lat: float | None = None,
                     lon: float | None = None,
                     municipality: str = municipalities.DEFAULT) -> None:
        """Register a terminal of ``municipality`` (a registered one); a terminal never
        moves to another municipality."""
        if not terminal_id or len(public_key) != 32:
            raise SyncProtocolError("a terminal needs an id and a 32-byte Ed25519 public key")
        with self.store.tx() as tx:
            municipalities.require(tx, municipality)
            row = tx.one("SELECT public_key, municipality_id FROM terminals "
                         "WHERE terminal_id = ?", (terminal_id,))
            if row is not None:
                if bytes(row[0]) != public_key:
                    raise SyncProtocolError(
                        f"terminal {terminal_id!r} is registered with another key")
                if str(row[1]) != municipality:
                    raise municipalities.CrossMunicipalityError(
                        f"terminal {terminal_id!r} belongs to municipality {row[1]!r}, "
                        f"not {municipality!r}")
                tx.run("UPDATE terminals SET lat = ?, lon = ? WHERE terminal_id = ?",
                       (lat, lon, terminal_id))
                return
            municipalities.check_assignment(tx, terminal_id, municipality)
            tx.run("INSERT INTO terminals (terminal_id, public_key, lat, lon, last_seq, "
                   "last_hash, added_ms, municipality_id) VALUES (?, ?, ?, ?, 0, ?, ?, ?)",
                   (terminal_id, public_key, lat, lon, ZERO_HASH, _now(), municipality))

    def terminal_municipality(self, terminal_id: str) -> str:
        """The municipality of a registered terminal (SyncAuthError when unknown)."""
        with self.store.tx(write=False) as tx:
            found = municipalities.of_terminal(tx, terminal_id)
        if found is None:
            raise SyncAuthError(f"unknown terminal {terminal_id!r}")
        return found

    def terminal_key(self, terminal_id: str) -> Ed25519PublicKey:
        # A registered terminal's key never changes (add_terminal refuses another, nothing
        # deletes a terminal), so each process reads it once: every request and every batch
        # asked the store for it, a transaction each.
        key = self._keys.get(terminal_id)
        if key is not None:
            return key
        with self.store.tx(write=False) as tx:
            row = tx.one("SELECT public_key FROM terminals WHERE terminal_id = ?", (terminal_id,))
        if row is None:
            raise SyncAuthError(f"unknown terminal {terminal_id!r}")
        key = self._keys[terminal_id] = Ed25519PublicKey.from_public_bytes(bytes(row[0]))
        return key

    def authenticate(self, terminal_id: str, time_ms: int, nonce: str, signature: bytes,
                     message: bytes) -> None:
        """Refuse unknown terminals, bad signatures, stale and replayed requests."""
        key = self.terminal_key(terminal_id)
        try:
            key.verify(signature, message)
        except InvalidSignature:
            raise SyncAuthError(f"request signature of {terminal_id!r} does not verify") from None
        now = _now()
        if abs(now - time_ms) > self.stale_ms:
            raise SyncAuthError(
                f"request is stale: its time is {(now - time_ms) / 1000:+.0f} s from ours "
                f"(at most {self.stale_ms // 1000} s)")
        check_nonce(nonce)
        terminal_status.ensure_schema(self.store)
        with self.store.tx() as tx:
            if tx.store.kind == "postgresql":
                # Not waiting for this commit's flush is safe: WAL is flushed in order, so
                # a request that changes anything makes its nonce durable (on the standby
                # too) with its own commit, before its answer; a crash can lose only the
                # nonce of a request that changed nothing, whose replay changes nothing.
                tx.run("SET LOCAL synchronous_commit = off")
            # a revoked terminal is refused here, by every worker, at its next request
            terminal_status.seen(tx, terminal_id, now)
            if self._nonce_checks % 500 == 0:
                tx.run("DELETE FROM nonces WHERE time_ms < ?", (now - 2 * self.stale_ms,))
            self._nonce_checks += 1
            added = tx.run("INSERT INTO nonces VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                           (terminal_id, nonce, time_ms))
        if added != 1:
            raise SyncAuthError(f"replayed request from {terminal_id!r} (nonce seen before)")

    # -- ingest -------------------------------------------------------------------------------

    def ingest(self, terminal_id: str, entries: Sequence[WireEntry], *,
               follow: bool = True) -> BatchReceipt:
        """Append a batch (idempotent); return the signed checkpoint and inclusion proof.
        ``follow=False``: the caller lets the followers catch up before it answers
        (:class:`central.batch_gate.BatchGate`), rather than this thread."""
        if not entries:
            raise SyncProtocolError("batch has no entries")
        key = self.terminal_key(terminal_id)
        check_batch(terminal_id, key, entries, self.policy)
        with self.store.tx() as tx:
            # Read before the log's lock, which one batch at a time holds: every round trip
            # under it stretches each batch's turn. The programme's start changes only when
            # rules are loaded, which a batch may as well have seen before that load.
            start = self.programme_start(tx) if self.programme_start is not None else None
            state = tx.one_for_update("SELECT size, frontier FROM log_state WHERE id = 1")
            if state is None:
                raise ProofError("the store has no log state")
            # The terminal's chain is read once the lock is held, in a statement of its own:
            # read with the lock in one statement, a batch that waited for the lock would see
            # the terminal as it was before the batch ahead of it committed (PostgreSQL reads
            # the locked row again, not the others), so a resend waiting behind its own first
            # copy was appended twice and refused by the unique key (an error, not its receipt).
            chain = tx.one("SELECT last_seq, last_hash, lat, lon, last_mono, last_effective_ms, "
                           "municipality_id FROM terminals WHERE terminal_id = ?",
                           (terminal_id,))
            if chain is None:
                raise SyncAuthError(f"unknown terminal {terminal_id!r}")
            row = (*chain, *state)
            last_seq, last_hash = int(row[0]), bytes(row[1])
            first, last = entries[0].seq, entries[-1].seq
            if first <= last_seq:
                self._check_overlap(tx, terminal_id, entries[: last_seq - first + 1])
                if last <= last_seq:
                    result = self._answer_duplicate(tx, terminal_id, first, entries[-1])
                    log.info("batch %s %d..%d already held", terminal_id, first, last)
                    return result
                entries = entries[last_seq - first + 1 :]
            new_first = entries[0]
            if new_first.seq != last_seq + 1:
                raise ChainMismatchError(
                    f"gap: terminal {terminal_id} is accepted up to entry {last_seq}, the batch "
                    f"starts at {new_first.seq}", last_seq + 1)
            if new_first.prev_hash != last_hash:
                raise ChainMismatchError(
                    f"fork: entry {new_first.seq} does not continue the accepted entry "
                    f"{last_seq} of terminal {terminal_id}", new_first.seq)
            last_mono, last_effective = int(row[4]), int(row[5])
            if last_seq and not last_mono:
                # a store from before the column holds 0 here: the stamp is in the entry
                held = tx.one("SELECT data, signature FROM entries WHERE terminal_id = ? "
                              "AND seq = ?", (terminal_id, last_seq))
                if held is not None:
                    last_mono = decode_entry(bytes(held[0]), bytes(held[1])).mono
            if last_seq and new_first.mono <= last_mono:
                # the same rule as between two entries of one batch (check_batch)
                raise ChainMismatchError(
                    f"entry {new_first.seq} does not link to entry {last_seq}: its monotonic "
                    f"stamp {new_first.mono} is not after {last_mono}", new_first.seq)
            arrival = _now()
            frontier = merkle.Frontier.from_blob(int(row[7]), bytes(row[8]))
            batch = self._append(tx, terminal_id, entries, frontier, last_effective, arrival,
                                 start)
            ctx = HookContext(self, terminal_id, row[2], row[3], arrival,
                              municipality=str(row[6]))
            for hook in self.hooks:
                hook(tx, batch, ctx)
            size, root = frontier.size, frontier.root()
            note = Checkpoint(self.origin, size, root).sign(self.signer)
            # the writes whose answers nothing waits for go together (one round trip)
            tx.run_all([
                ("UPDATE log_state SET size = ?, frontier = ? WHERE id = 1",
                 (size, frontier.blob())),
                ("INSERT INTO checkpoints VALUES (?, ?, ?)", (size, root, note)),
                ("UPDATE terminals SET last_seq = ?, last_hash = ?, last_mono = ?, "
                 "last_effective_ms = ? WHERE terminal_id = ?",
                 (entries[-1].seq, entries[-1].entry_hash, entries[-1].mono,
                  batch[-1].effective_ms, terminal_id)),
                ("INSERT INTO batches VALUES (?, ?, ?, ?, ?)",
                 (terminal_id, entries[0].seq, entries[-1].seq, size, _now())),
            ])
        if follow:
            self.follow_committed()
        last_index = batch[-1].log_index
        proof = self.inclusion_proof(last_index, size)
        return BatchReceipt(terminal_id, entries[0].seq, entries[-1].seq, len(entries),
                            last_index, note, proof)

    def follow_committed(self) -> None:
        """Return once the followers have caught up with everything committed before this
        call, as :meth:`run_followers`, but shared: while one request's thread runs them,
        the batches committed meanwhile wait for the next run, which covers them all. So
        200 batches arriving at once are credited in a few runs (each a chunk per
        transaction) rather than 200 runs queued on the cursor's row lock, and every
        batch is credited before its answer, unless a follower fails: the batch is held and
        answered all the same, and the follower catches up at the next batch or the next
        run of :meth:`keep_following`."""
        with self._follow:
            ticket = self._runs.take()
            while self._runs.waits(ticket):
                self._follow.wait()
            if self._runs.done(ticket):
                return  # a run that started after this batch committed has covered it
            covers = self._runs.start()  # every ticket so far committed before this run
        try:
            self.run_followers()
        finally:
            with self._follow:
                self._runs.finish(covers)
                self._follow.notify_all()

    def keep_following(self, every_s: float = CATCH_UP_S,
                       stop: threading.Event | None = None) -> None:
        """Run the followers at once, then every ``every_s`` seconds until ``stop`` is set:
        ``central serve``'s catch-up thread. Batches run them anyway; this covers the
        entries committed just before the service stopped, and a follower that failed
        (the store away mid-run) when no batch comes after it, as at night."""
        stop = stop or threading.Event()
        while True:
            self.run_followers()
            if stop.wait(every_s):
                return

    def run_followers(self) -> None:
        """Let every follower catch up with the log (see :class:`Follower`)."""
        for follower in self.followers:
            try:
                follower.follow(self)
            except Exception:  # the batch is committed; the follower's cursor says where
                log.exception("%s could not follow the log; it resumes on the next batch",
                              follower.name)

    def _check_overlap(self, tx: Tx, terminal_id: str, entries: Sequence[WireEntry]) -> None:
        held = dict(tx.all(
            "SELECT seq, entry_hash FROM entries WHERE terminal_id = ? AND seq BETWEEN ? AND ?",
            (terminal_id, entries[0].seq, entries[-1].seq)))
        for e in entries:
            stored = held.get(e.seq)
            if stored is None:
                raise ChainMismatchError(
                    f"entry {e.seq} of {terminal_id} was accepted but is no longer held", e.seq)
            if bytes(stored) != e.entry_hash:
                raise ChainMismatchError(
                    f"fork: entry {e.seq} differs from the one accepted before", e.seq)

    def _answer_duplicate(self, tx: Tx, terminal_id: str, first: int,
                          last: WireEntry) -> BatchReceipt:
        row = tx.one(
            "SELECT b.first_seq, b.tree_size, c.note, e.log_index FROM batches b "
            "JOIN checkpoints c ON c.size = b.tree_size JOIN entries e "
            "ON e.terminal_id = b.terminal_id AND e.seq = ? "
            "WHERE b.terminal_id = ? AND b.first_seq <= ? AND b.last_seq >= ?",
            (last.seq, terminal_id, last.seq, last.seq))
        if row is None:
            raise ChainMismatchError(f"entry {last.seq} is held but its batch is not", last.seq)
        size, note, index = int(row[1]), str(row[2]), int(row[3])
        proof = merkle.inclusion_proof(index, size, self._source(tx))
        return BatchReceipt(terminal_id, first, last.seq, 0, index, note, proof)

    def _append(self, tx: Tx, terminal_id: str, entries: Sequence[WireEntry],
                frontier: merkle.Frontier, previous_ms: int, arrival_ms: int,
                start: int | None) -> list[Ingested]:
        """Write ``entries`` and their tree nodes at the end of ``frontier`` (moved on
        past them); ``start``: the programme's start (ms), if known."""
        rows: list[tuple[Any, ...]] = []
        nodes: list[tuple[int, int, bytes]] = []
        batch: list[Ingested] = []
        flags: list[tuple[Any, ...]] = []
        days: dict[int, str] = {}
        # The detail is canonical JSON (keys sorted, no spaces, quotes inside strings
        # escaped), so this text occurs only as the clock's own key and value.
        trusted = ['"clock":"unknown"' not in e.detail for e in entries]
        earliest = max(self.earliest_ms, start or 0)
        timed = effective_times([e.wall_ms for e in entries], previous_ms, arrival_ms,
                                earliest_ms=earliest, trusted=trusted)
        for e, t in zip(entries, timed, strict=True):
            index = frontier.size
            # a leaf (level 0) is its entry's own hash: proofs read it from entries.data
            nodes.extend(frontier.append(hashlib.sha256(b"\x00" + e.data).digest())[1:])
            # Entries of one batch mostly share a day: convert each quarter hour once (every
            # UTC offset in use since 1972 is a multiple of 15 minutes; an hour would put
            # two entries of Asia/Kathmandu's 23:50 and 00:05 on one day).
            quarter = t.effective_ms // 900_000
            day = days.get(quarter)
            if day is None:
                day = days[quarter] = self.day_of(t.effective_ms)
            rows.append((index, terminal_id, e.seq, e.kind, e.card_token, e.amount, e.place,
                         e.wall_ms, day, e.entry_hash, e.data, e.signature, e.ref_seq,
                         e.detail, t.effective_ms))
            batch.append(Ingested(index, e, day, t.effective_ms))
            if t.problem is not None:
                # accepted (the money happened), flagged for the operator's report
                flags.append((index, "clock", e.card_token, terminal_id, e.seq, day,
                              json.dumps({"wall_ms": e.wall_ms, "effective_ms": t.effective_ms,
                                          "problem": t.problem}, sort_keys=True)))
        tx.bulk("entries", ENTRY_COLUMNS, rows)
        if flags:
            tx.bulk("flags", ("log_index", "rule", "card_token", "terminal_id", "seq", "day",
                              "detail"), flags)
        tx.bulk("nodes", NODE_COLUMNS, nodes)
        return batch

    # -- proofs -------------------------------------------------------------------------------

    def _source(self, tx: Tx) -> merkle.NodeSource:
        def source(wanted: list[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
            # one query for every level: a proof wants a node or two of each of ~20 levels,
            # and a query each was about 8 round trips a batch on PostgreSQL
            by_level: dict[int, list[int]] = {}
            for lv, i in wanted:
                by_level.setdefault(lv, []).append(i)
            parts: list[str] = []
            where: list[str] = []
            params: list[int] = []
            # Leaves are not kept in nodes (a row each was a third of the append's writes):
            # each is hashed from its entry's bytes. Stores from before keep theirs, unread.
            if 0 in by_level:
                marks, values = tx.in_list(by_level.pop(0))
                parts.append(f"SELECT 0, log_index, data FROM entries WHERE log_index IN {marks}")
                params.extend(values)
            for level, idxs in sorted(by_level.items()):
                marks, values = tx.in_list(idxs)
                where.append(f"(level = ? AND idx IN {marks})")
                params.extend([level, *values])
            if where:
                parts.append(f"SELECT level, idx, hash FROM nodes WHERE {' OR '.join(where)}")
            if not parts:
                return {}
            return {(int(lv), int(i)): merkle.leaf_hash(bytes(h)) if int(lv) == 0 else bytes(h)
                    for lv, i, h in tx.all(" UNION ALL ".join(parts), params)}

        return source

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        with self.store.tx(write=False) as tx:
            return merkle.inclusion_proof(index, size, self._source(tx))

    def consistency_proof(self, m: int, n: int) -> list[bytes]:
        with self.store.tx(write=False) as tx:
            top = tx.one("SELECT size FROM log_state WHERE id = 1")
            if top is None or n > int(top[0]):
                raise SyncProtocolError(f"the log has no size {n} yet")
            return merkle.consistency_proof(m, n, self._source(tx))

    def checkpoint(self, size: int | None = None) -> str:
        """The signed checkpoint at ``size`` (default: the latest)."""
        with self.store.tx(write=False) as tx:
            if size is None:
                row = tx.one("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1")
                if row is None:
                    return Checkpoint(self.origin, 0, merkle.EMPTY_ROOT).sign(self.signer)
            else:
                row = tx.one("SELECT note FROM checkpoints WHERE size = ?", (size,))
                if row is None:
                    raise SyncProtocolError(f"no checkpoint of size {size}")
        return str(row[0])

    def leaf(self, index: int) -> bytes:
        with self.store.tx(write=False) as tx:
            row = tx.one("SELECT data FROM entries WHERE log_index = ?", (index,))
        if row is None:
            raise SyncProtocolError(f"no entry at log index {index}")
        return bytes(row[0])

    # -- deny list, balances, config, totals --------------------------------------------------

    def deny_add(self, tx: Tx, card_token: str, reason: str, *,
                 municipality: str = municipalities.DEFAULT) -> int:
        return self._deny_change(tx, card_token, "add", reason, municipality)

    def _deny_change(self, tx: Tx, card_token: str, action: str, reason: str,
                     municipality: str) -> int:
        tx.lock_log()
        last = tx.one("SELECT action, version FROM deny_changes WHERE municipality_id = ? "
                      "AND card_token = ? ORDER BY version DESC LIMIT 1",
                      (municipality, card_token))
        if last is not None and last[0] == action:
            return int(last[1])
        # one numbering for every municipality: a version orders changes across all of them
        row = tx.one("SELECT COALESCE(MAX(version), 0) FROM deny_changes")
        version = int(row[0] if row else 0) + 1
        tx.run("INSERT INTO deny_changes (version, card_token, action, reason, at_ms, "
               "municipality_id) VALUES (?, ?, ?, ?, ?, ?)",
               (version, card_token, action, reason, _now(), municipality))
        return version

    def deny(self, card_token: str, reason: str, *, remove: bool = False,
             municipality: str = municipalities.DEFAULT) -> int:
        """Deny-list a card for the terminals of ``municipality`` (or take it off)."""
        with self.store.tx() as tx:
            municipalities.require(tx, municipality)
            return self._deny_change(tx, card_token, "remove" if remove else "add", reason,
                                     municipality)

    def deny_delta(self, since: int, *, terminal: str | None = None,
                   municipality: str = municipalities.DEFAULT) -> dict[str, Any]:
        """Changes after version ``since`` for the terminals of ``municipality`` (of
        ``terminal``'s, when given): the last word on each card wins. A card linked to
        another municipality's accounts only is never told."""
        with self.store.tx(write=False) as tx:
            if terminal is not None:
                municipality = municipalities.of_terminal(tx, terminal) or municipality
            return self.deny_delta_in(tx, since, municipality)

    @staticmethod
    def deny_delta_in(tx: Tx, since: int, municipality: str) -> dict[str, Any]:
        """:meth:`deny_delta` of ``municipality``, read in ``tx``."""
        rows = tx.all("SELECT version, card_token, action, reason FROM deny_changes "
                      "WHERE municipality_id = ? AND version > ? ORDER BY version",
                      (municipality, since))
        top = tx.one("SELECT COALESCE(MAX(version), 0) FROM deny_changes "
                     "WHERE municipality_id = ?", (municipality,))
        shown = None if municipalities.only_one(tx) else municipalities.visible_cards(
            tx, municipality, {str(r[1]) for r in rows})
        add: dict[str, str] = {}
        remove: set[str] = set()
        for _, token, action, reason in rows:
            if shown is not None and token not in shown:
                continue
            if action == "add":
                add[token] = reason
                remove.discard(token)
            else:
                add.pop(token, None)
                remove.add(token)
        return {"version": max(int(top[0]) if top else 0, since), "add": add,
                "remove": sorted(remove)}

    def set_balances(self, balances: dict[str, int], *,
                     municipality: str = municipalities.DEFAULT) -> int:
        """Load balance snapshots for the terminals of ``municipality``. A card's snapshot
        belongs to one municipality: a card held by another is refused, and nothing is
        loaded."""
        with self.store.tx() as tx:
            municipalities.require(tx, municipality)
            tx.lock_log()
            tokens = sorted(balances)
            for i in range(0, len(tokens), 5000):
                test, param = tx.any_of("card_token", tokens[i:i + 5000])
                other = tx.one(f"SELECT card_token, municipality_id FROM balances WHERE {test} "
                               "AND municipality_id <> ? ORDER BY card_token LIMIT 1",
                               (param, municipality))
                if other is not None:
                    raise municipalities.CrossMunicipalityError(
                        f"card {str(other[0])[:12]}… has its balance in municipality "
                        f"{other[1]!r}, not {municipality!r}; nothing was loaded")
            version = self.next_balance_version(tx)
            tx.many("INSERT INTO balances (card_token, balance, version, municipality_id) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (card_token) DO UPDATE "
                    "SET balance = excluded.balance, version = excluded.version",
                    [(t, b, version, municipality) for t, b in balances.items()])
            return version

    @staticmethod
    def next_balance_version(tx: Tx) -> int:
        row = tx.one("SELECT COALESCE(MAX(version), 0) FROM balances")
        return int(row[0] if row else 0) + 1

    def balances_delta(self, since: int, limit: int = PAGE, *, terminal: str | None = None,
                       municipality: str = municipalities.DEFAULT) -> dict[str, Any]:
        """Balance snapshots of ``municipality`` (``terminal``'s, when given) changed after
        version ``since``. Every card of a municipality may tap any of its terminals, so
        each of them may see every card's balance there; a card linked to another
        municipality's accounts only is never told."""
        with self.store.tx(write=False) as tx:
            if terminal is not None:
                municipality = municipalities.of_terminal(tx, terminal) or municipality
            return self.balances_delta_in(tx, since, municipality, limit)

    @staticmethod
    def balances_delta_in(tx: Tx, since: int, municipality: str,
                          limit: int = PAGE) -> dict[str, Any]:
        """:meth:`balances_delta` of ``municipality``, read in ``tx``."""
        rows = tx.all("SELECT card_token, balance, version FROM balances WHERE "
                      "municipality_id = ? AND version > ? ORDER BY version LIMIT ?",
                      (municipality, since, limit))
        top = tx.one("SELECT COALESCE(MAX(version), 0) FROM balances "
                     "WHERE municipality_id = ?", (municipality,))
        rows, cut = whole_versions(rows, limit, 2, lambda v: tx.all(
            "SELECT card_token, balance, version FROM balances WHERE municipality_id = ? "
            "AND version = ?", (municipality, v)))
        shown = None if municipalities.only_one(tx) else municipalities.visible_cards(
            tx, municipality, {str(r[0]) for r in rows})
        version = max(int(top[0]) if top else 0, since) if cut is None else cut
        return {"version": version, "balances": {str(t): int(b) for t, b, _ in rows
                                                 if shown is None or str(t) in shown}}

    def publish_config(self, body: str) -> int:
        """File a signed config bundle under the terminal it names; return its version.

        The service checks the bundle's form and that its version rises for that terminal;
        the terminal checks the operator's signature before it applies anything.
        """
        terminal_id, version = bundles.peek(body.encode("utf-8"))
        with self.store.tx() as tx:
            tx.lock_log()
            if tx.one("SELECT 1 FROM terminals WHERE terminal_id = ?", (terminal_id,)) is None:
                raise ConfigError(f"config bundle is for {terminal_id!r}, which is not "
                                  f"registered")
            row = tx.one("SELECT COALESCE(MAX(version), 0) FROM configs WHERE terminal_id = ?",
                         (terminal_id,))
            newest = int(row[0] if row else 0)
            if version <= newest:
                raise ConfigError(f"config bundle version {version} for {terminal_id} is not "
                                  f"newer than the published version {newest}")
            tx.run("INSERT INTO configs VALUES (?, ?, ?, ?)", (terminal_id, version, body, _now()))
        return version

    def latest_config(self, terminal_id: str) -> dict[str, Any]:
        """The newest bundle published for ``terminal_id`` (version 0 and no body: none)."""
        with self.store.tx(write=False) as tx:
            return self.latest_config_in(tx, terminal_id)

    @staticmethod
    def latest_config_in(tx: Tx, terminal_id: str) -> dict[str, Any]:
        """:meth:`latest_config`, read in ``tx``."""
        row = tx.one("SELECT version, body FROM configs WHERE terminal_id = ? "
                     "ORDER BY version DESC LIMIT 1", (terminal_id,))
        return {"version": int(row[0]), "body": str(row[1])} if row else {"version": 0,
                                                                           "body": ""}

    def report_totals(self, terminal_id: str, day: str,
                      totals: dict[str, tuple[int, int]]) -> None:
        """Store a terminal's own end-of-day totals (kind -> count, amount)."""
        with self.store.tx() as tx:
            tx.run("DELETE FROM terminal_totals WHERE terminal_id = ? AND day = ?",
                   (terminal_id, day))
            tx.many("INSERT INTO terminal_totals VALUES (?, ?, ?, ?, ?, ?)",
                    [(terminal_id, day, k, c, a, _now()) for k, (c, a) in totals.items()])

    def size(self) -> int:
        with self.store.tx(write=False) as tx:
            row = tx.one("SELECT size FROM log_state WHERE id = 1")
        return int(row[0]) if row else 0


def whole_versions(rows: list[tuple[Any, ...]], limit: int, at: int,
                   rest_of: Callable[[int], list[tuple[Any, ...]]]
                   ) -> tuple[list[tuple[Any, ...]], int | None]:
    """An answer of versioned rows (ordered by version, column ``at``) cut to ``limit``,
    never splitting a version across two answers, since the terminal asks again from the
    version it was told. Returns the rows and the version to tell (None: every row after
    ``since`` is in, tell the newest held). A single version larger than ``limit`` (a city's
    balance snapshot) is answered whole: cut inside it, the rest of it would never be told."""
    if len(rows) < limit or not rows:
        return rows, None
    cut = int(rows[-1][at])
    kept = [r for r in rows if int(r[at]) < cut]
    if kept:
        return kept, int(kept[-1][at])
    return rest_of(cut), cut


def _now() -> int:
    return int(time.time() * 1000)
