"""The offline ledger: an append-only, hash-chained, signed SQLite journal.

One process writes (the terminal); any number may read. Every append is one durable commit
(WAL, ``synchronous=FULL``): when :meth:`Ledger.append` returns, the entry survives a power
cut, and only then may the terminal show an approval. When it raises
:class:`~localpay.errors.LedgerWriteError` nothing was recorded and the payment must be
declined.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from localpay.errors import (
    EntryEncodingError,
    LedgerCorruptError,
    LedgerError,
    LedgerStateError,
    LedgerWriteError,
)
from offline_ledger import encoding, pockets
from offline_ledger.anchor import ClockAnchor
from offline_ledger.encoding import ZERO_HASH, EntryFields
from offline_ledger.records import CardState, Entry, Head, PointsRow, VerifyReport
from offline_ledger.schema import migrate

log = logging.getLogger(__name__)

FORMAT = "1"
#: the bucket of :meth:`Ledger.pruned_sums`: a quarter hour, in which no day begins anywhere
QUARTER_MS = 900_000
_COLUMNS = (
    "seq, kind, terminal_id, card_token, amount, ref_seq, place, wall_ms, mono, detail, "
    "prev_hash, entry_hash, signature"
)


def _public_hex(key: Ed25519PublicKey) -> str:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def _wrap(err: sqlite3.Error, what: str) -> LedgerError:
    """Turn a sqlite3 error into ours: write failures, corruption, or misuse."""
    name = getattr(err, "sqlite_errorname", "")
    text = f"{what}: {err}"
    if name.startswith(("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN")):
        return LedgerWriteError(text)
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or (isinstance(
        err, sqlite3.DatabaseError
    ) and not isinstance(err, (sqlite3.OperationalError, sqlite3.IntegrityError))):
        return LedgerCorruptError(text)
    if "append-only" in str(err):
        return LedgerStateError(text)
    if isinstance(err, sqlite3.OperationalError):
        return LedgerWriteError(text)
    return LedgerError(text)


class Ledger:
    """The terminal's offline ledger in one SQLite file.

    ``Ledger(path, key=..., terminal_id=...)`` opens or creates a ledger for writing;
    ``Ledger(path)`` opens an existing one read-only (verify, show). ``memory=True`` keeps
    it in memory for tests. Opening for writing verifies the last ``tail_check`` entries
    and refuses a broken ledger with :class:`LedgerCorruptError`.
    """

    #: every ledger not yet closed, so tests can fail one that leaks an open database
    _open: ClassVar[weakref.WeakSet[Ledger]] = weakref.WeakSet()

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        key: Ed25519PrivateKey | None = None,
        terminal_id: str = "",
        memory: bool = False,
        tail_check: int = 64,
        max_pages: int | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.writable = key is not None
        self._key = key
        self._conn = self._connect(memory)
        try:
            if self.writable:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
                if max_pages is not None:
                    self._conn.execute(f"PRAGMA max_page_count={int(max_pages)}")
                migrate(self._conn)
                self._init_meta(terminal_id)
            else:
                self._check_readable()
            self.terminal_id = self.meta("terminal_id")
            self.public_key = Ed25519PublicKey.from_public_bytes(
                bytes.fromhex(self.meta("public_key"))
            )
            self._head = self._read_head()
            self._exposure = self._read_exposure()
            self._data_version = self._read_data_version()
        except sqlite3.Error as err:
            self._conn.close()
            raise _wrap(err, f"cannot open ledger {self.path or ':memory:'}") from err
        except BaseException:
            self._conn.close()
            raise
        if self.writable and tail_check:
            try:
                self.verify(start=max(self.first_seq(), self._head.seq - tail_check + 1))
            except BaseException:
                self._conn.close()
                raise
        Ledger._open.add(self)

    # -- opening ---------------------------------------------------------------------------

    def _connect(self, memory: bool) -> sqlite3.Connection:
        if memory:
            return sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        if self.path is None:
            raise LedgerStateError("a ledger needs a path, or memory=True")
        if not self.writable:
            if not self.path.exists():
                raise LedgerError(f"no ledger at {self.path}")
            uri = f"file:{self.path}?mode=ro"
            return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise LedgerWriteError(f"cannot create folder for ledger {self.path}: {err}") from err
        return sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)

    def _check_readable(self) -> None:
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master")}
        if not {"entries", "meta", "migrations"} <= tables:
            raise LedgerCorruptError(f"{self.path} is an SQLite file but not a localpay ledger")

    def _init_meta(self, terminal_id: str) -> None:
        assert self._key is not None
        pub = _public_hex(self._key.public_key())
        existing = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        if not existing or ("public_key" not in existing and self._holds_nothing()):
            # A new ledger; or one whose first boot was cut while its meta was written
            # (before these rows went in one transaction, each was committed alone): it
            # holds no entry, so it is made again rather than refused for ever.
            if not terminal_id:
                raise LedgerStateError("a new ledger needs a terminal_id")
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM meta")
                conn.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [
                        ("format", FORMAT),
                        ("terminal_id", terminal_id),
                        ("public_key", pub),
                        ("created_ms", str(int(time.time() * 1000))),
                    ],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return
        if existing.get("public_key") != pub:
            raise LedgerStateError(
                f"the key given does not match this ledger (ledger key "
                f"{existing.get('public_key', '?')[:16]}..., given {pub[:16]}...)"
            )
        if terminal_id and existing.get("terminal_id") != terminal_id:
            raise LedgerStateError(
                f"this ledger belongs to terminal {existing.get('terminal_id')!r}, "
                f"not {terminal_id!r}"
            )

    def _holds_nothing(self) -> bool:
        """No entry and no prune: a ledger nothing was ever written to."""
        return not any(self._conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
                       for table in ("entries", "prunes"))

    def meta(self, key: str) -> str:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise LedgerCorruptError(f"ledger meta has no {key!r}")
        return str(row[0])

    def _read_head(self) -> Head:
        row = self._conn.execute(
            "SELECT seq, entry_hash, mono FROM entries ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is not None:
            return Head(row[0], row[1], row[2])
        prune = self._conn.execute(
            "SELECT upto_seq, anchor_hash, anchor_mono FROM prunes ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if prune is not None:
            return Head(prune[0], prune[1], prune[2])
        return Head(0, ZERO_HASH, 0)

    def _read_data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    @property
    def exposure(self) -> int:
        """Offline won since the last sync, terminal-wide.

        Kept in memory for the tap path; re-read when another connection (the sync client
        marking entries synced) has committed since, which ``data_version`` tells cheaply.
        """
        version = self._read_data_version()
        if version != self._data_version:
            self._data_version = version
            self._exposure = self._read_exposure()
        return self._exposure

    def _read_exposure(self) -> int:
        if not self.writable:
            return 0
        row = self._conn.execute("SELECT COALESCE(SUM(offline_amount), 0) FROM card_counters")
        return int(row.fetchone()[0])

    def close(self) -> None:
        Ledger._open.discard(self)
        self._conn.close()

    @classmethod
    def open_instances(cls) -> list[Ledger]:
        return list(cls._open)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- appending -------------------------------------------------------------------------

    @property
    def head(self) -> Head:
        return self._head

    def next_mono(self, wall_ms: int) -> int:
        """The monotonic stamp the next entry gets: never below the last one + 1."""
        return max(self._head.mono + 1, wall_ms)

    def append(
        self,
        kind: str,
        *,
        card_token: str = "",
        amount: int = 0,
        ref_seq: int = 0,
        place: str = "",
        detail: dict[str, Any] | None = None,
        wall_ms: int | None = None,
        offline_delta: int | None = None,
        tap: bool = False,
        nonce: tuple[str, int] | None = None,
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> Entry:
        """Sign and durably commit one entry; return it once it is on disk.

        ``offline_delta`` adds to the card's offline amount (and, when positive, its count);
        ``tap`` records the entry as the card's last tap; ``nonce`` (text, expiry in ms)
        marks a one-time QR code as used; ``also`` writes more (pocket counters, see
        ``offline_ledger.pockets``). All of it commits in the same transaction.
        """
        if self._key is None:
            raise LedgerStateError("this ledger was opened read-only")
        if type(amount) is not int:
            raise LedgerStateError(f"amount must be integer won, not {type(amount).__name__}")
        if wall_ms is None:
            wall_ms = int(time.time() * 1000)
        head = self._head
        fields = EntryFields(
            seq=head.seq + 1,
            kind=kind,
            terminal_id=self.terminal_id,
            card_token=card_token,
            amount=amount,
            ref_seq=ref_seq,
            place=place,
            wall_ms=wall_ms,
            mono=self.next_mono(wall_ms),
            detail=encoding.canonical_detail(detail),
            prev_hash=head.entry_hash,
        )
        data = encoding.encode(fields)
        digest = encoding.entry_hash(data)
        signature = self._key.sign(data)
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    f"INSERT INTO entries ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        fields.seq, kind, fields.terminal_id, card_token, amount, ref_seq,
                        place, wall_ms, fields.mono, fields.detail, fields.prev_hash, digest,
                        signature,
                    ),
                )
                applied = 0  # what the card's counter really moves: it is floored at 0
                if card_token and (offline_delta or tap):
                    delta = offline_delta or 0
                    row = conn.execute(
                        "SELECT offline_amount FROM card_counters WHERE card_token = ?",
                        (card_token,),
                    ).fetchone()
                    held = row[0] if row is not None else 0
                    applied = max(held + delta, 0) - held
                    conn.execute(
                        "INSERT INTO card_counters VALUES "
                        "(:t, MAX(:d, 0), :n, :mono, :seq, :last) "
                        "ON CONFLICT (card_token) DO UPDATE SET "
                        "offline_amount = MAX(offline_amount + :d, 0), "
                        "offline_count = offline_count + :n, "
                        "last_tap_mono = CASE WHEN :tap THEN :mono ELSE last_tap_mono END, "
                        "last_tap_seq = CASE WHEN :tap THEN :seq ELSE last_tap_seq END, "
                        "last_amount = COALESCE(:last, last_amount)",
                        {
                            "t": card_token, "d": delta, "n": int(delta > 0), "tap": tap,
                            "mono": fields.mono if tap else 0, "seq": fields.seq if tap else 0,
                            "last": delta if delta > 0 else None,
                        },
                    )
                if nonce is not None:
                    conn.execute(
                        "INSERT INTO qr_nonces VALUES (?, ?, ?)", (nonce[0], fields.seq, nonce[1])
                    )
                if also is not None:
                    also(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:
            raise _wrap(err, f"entry {fields.seq} ({kind}) not recorded") from err
        self._head = Head(fields.seq, digest, fields.mono)
        # the sum of the counters, as _read_exposure would give it: a refund larger than what
        # its card still has offline (its payment already synced) takes off only what it had
        self._exposure += applied
        return Entry(fields, digest, signature)

    # -- reading ---------------------------------------------------------------------------

    def card_state(self, card_token: str) -> CardState:
        """Counters, balance snapshot and deny-list status of one card, in one query."""
        try:
            row = self._conn.execute(
                "SELECT c.offline_amount, c.offline_count, c.last_tap_mono, c.last_tap_seq, "
                "(SELECT balance FROM balances WHERE card_token = :t), "
                "(SELECT reason FROM deny_list WHERE card_token = :t) "
                "FROM (SELECT :t AS t) LEFT JOIN card_counters c ON c.card_token = :t",
                {"t": card_token},
            ).fetchone()
        except sqlite3.Error as err:
            raise _wrap(err, "cannot read card state") from err
        return CardState(row[0] or 0, row[1] or 0, row[2] or 0, row[3] or 0, row[4], row[5])

    def last_amount(self, card_token: str) -> int | None:
        """The card's last payment or fare at this terminal (EMV floor limit, Book 3 §10.6.1)."""
        row = self._conn.execute(
            "SELECT last_amount FROM card_counters WHERE card_token = ?", (card_token,)
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def nonce_used(self, nonce: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM qr_nonces WHERE nonce = ?", (nonce,)).fetchone()
        return row is not None

    def card_details(self, card_token: str, kind: str) -> list[str]:
        """The details of this card's entries of ``kind`` still held here. A scan (no index
        on the card token): for rare kinds such as ``incentive``, never on the tap path."""
        try:
            rows = self._conn.execute(
                "SELECT detail FROM entries WHERE kind = ? AND card_token = ? ORDER BY seq",
                (kind, card_token)).fetchall()
        except sqlite3.Error as err:
            raise _wrap(err, "cannot read the card's entries") from err
        return [str(r[0]) for r in rows]

    def first_seq(self) -> int:
        row = self._conn.execute("SELECT MIN(seq) FROM entries").fetchone()
        return int(row[0]) if row[0] is not None else self._head.seq + 1

    def count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> Entry:
        return Entry(EntryFields(*row[:11]), row[11], row[12])

    def entry(self, seq: int) -> Entry | None:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM entries WHERE seq = ?", (seq,)
        ).fetchone()
        return self._entry(row) if row else None

    def entries(
        self, start: int = 1, end: int | None = None, *, batch: int = 2000
    ) -> Iterator[Entry]:
        """Entries from ``start`` to ``end`` inclusive, in order, read in batches."""
        last = end if end is not None else self._head.seq
        seq = start
        while seq <= last:
            try:
                rows = self._conn.execute(
                    f"SELECT {_COLUMNS} FROM entries WHERE seq >= ? AND seq <= ? "
                    "ORDER BY seq LIMIT ?",
                    (seq, last, batch),
                ).fetchall()
            except sqlite3.Error as err:
                raise _wrap(err, f"cannot read entries from {seq}") from err
            if not rows:
                return
            for row in rows:
                yield self._entry(row)
            seq = rows[-1][0] + 1

    def kind_amounts(self) -> Iterator[tuple[int, str, int]]:
        """Each entry's wall time, kind and amount, in order: what a day's totals count,
        read without making an :class:`Entry` of every entry of the ledger."""
        try:
            # the cursor steps through the rows as they are asked for: none held at once
            yield from self._conn.execute("SELECT wall_ms, kind, amount FROM entries "
                                          "ORDER BY seq")
        except sqlite3.Error as err:
            raise _wrap(err, "cannot read entries") from err

    def pruned_sums(self) -> Iterator[tuple[int, str, int, int]]:
        """What pruning removed, by quarter hour of wall time (``wall_ms // QUARTER_MS``) and
        kind: ``(quarter, kind, count, amount)``. With :meth:`kind_amounts`, every entry the
        ledger ever held. Prunes of a release before migration 0007 were not summed."""
        try:
            yield from self._conn.execute("SELECT quarter, kind, count, amount FROM "
                                          "pruned_sums ORDER BY quarter, kind")
        except sqlite3.Error as err:
            if "no such table" in str(err):  # a read-only ledger from before migration 0007
                return
            raise _wrap(err, "cannot read the pruned sums") from err

    def refunded_total(self, seq: int) -> int:
        """Won already given back (refunds and voids) against payment ``seq``."""
        row = self._conn.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM entries WHERE ref_seq = ? "
            "AND kind IN ('refund', 'void')",
            (seq,),
        ).fetchone()
        return int(row[0])

    # -- verification ----------------------------------------------------------------------

    def verify(
        self, public_key: Ed25519PublicKey | None = None, *, start: int | None = None
    ) -> VerifyReport:
        """Walk the chain from ``start`` (default: the first entry kept) and check every
        encoding, hash link, sequence number and signature.

        Raises :class:`LedgerCorruptError` with ``seq`` set to the first bad entry.
        """
        key = public_key or self.public_key
        first = self.first_seq() if start is None else start
        prev: bytes | None = None
        prev_mono = -1
        if first > 1:
            before = self.entry(first - 1)
            if before is not None:
                prev, prev_mono = before.entry_hash, before.fields.mono
            else:
                anchor = self._conn.execute(
                    "SELECT anchor_hash, anchor_mono FROM prunes WHERE upto_seq = ?",
                    (first - 1,),
                ).fetchone()
                if anchor is None:
                    raise LedgerCorruptError(
                        f"entry {first - 1} is missing and no prune record accounts for it",
                        first - 1,
                    )
                prev, prev_mono = anchor[0], anchor[1]
        else:
            prev = ZERO_HASH
        count = 0
        expected_seq = first
        head_hash = prev
        # entries() turns any SQLite error into a ledger error naming the read
        for entry in self.entries(first):
            f = entry.fields
            if f.seq != expected_seq:
                raise LedgerCorruptError(
                    f"entry {expected_seq} is missing (next is {f.seq})", expected_seq
                )
            if f.prev_hash != prev:
                raise LedgerCorruptError(
                    f"entry {f.seq} does not link to entry {f.seq - 1}", f.seq
                )
            if f.mono <= prev_mono:
                raise LedgerCorruptError(f"entry {f.seq} goes back in time (mono)", f.seq)
            try:
                data = encoding.encode(f)
            except EntryEncodingError as err:
                raise LedgerCorruptError(
                    f"entry {f.seq} cannot be encoded: {err}", f.seq
                ) from err
            if encoding.entry_hash(data) != entry.entry_hash:
                raise LedgerCorruptError(f"entry {f.seq} does not match its hash", f.seq)
            if f.terminal_id != self.terminal_id:
                raise LedgerCorruptError(f"entry {f.seq} names another terminal", f.seq)
            try:
                key.verify(entry.signature, data)
            except InvalidSignature:
                raise LedgerCorruptError(f"entry {f.seq} has a bad signature", f.seq) from None
            prev, prev_mono, head_hash = entry.entry_hash, f.mono, entry.entry_hash
            expected_seq += 1
            count += 1
        return VerifyReport(count, first, expected_seq - 1, head_hash or ZERO_HASH)

    # -- side tables -----------------------------------------------------------------------

    def _write(self, what: str, statements: list[tuple[str, Any]]) -> None:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    if isinstance(params, list):
                        conn.executemany(sql, params)
                    else:
                        conn.execute(sql, params)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:
            raise _wrap(err, what) from err

    def deny_version(self) -> int:
        return int(self._conn.execute("SELECT deny_version FROM sync_state").fetchone()[0])

    def apply_deny_delta(
        self, version: int, add: dict[str, str], remove: list[str] = ()  # type: ignore[assignment]
    ) -> None:
        """Apply a deny-list delta (token → reason added, tokens removed) at ``version``."""
        if version <= self.deny_version():
            raise LedgerStateError(
                f"deny list version {version} is not newer than {self.deny_version()}"
            )
        self._write(
            "deny list not updated",
            [
                (
                    "INSERT OR REPLACE INTO deny_list VALUES (?, ?, ?)",
                    [(t, version, r) for t, r in add.items()],
                ),
                ("DELETE FROM deny_list WHERE card_token = ?", [(t,) for t in remove]),
                ("UPDATE sync_state SET deny_version = ?", (version,)),
            ],
        )

    def set_balances(self, balances: dict[str, int], as_of_seq: int) -> None:
        """Store balance snapshots from the central service."""
        now = int(time.time() * 1000)
        self._write(
            "balances not stored",
            [
                (
                    "INSERT OR REPLACE INTO balances VALUES (?, ?, ?, ?)",
                    [(t, b, as_of_seq, now) for t, b in balances.items()],
                )
            ],
        )

    def sync_checkpoint(self) -> str:
        """The central checkpoint that proved the entries up to :meth:`synced_upto`."""
        return str(self._conn.execute("SELECT checkpoint FROM sync_state").fetchone()[0])

    def synced_upto(self) -> int:
        return int(self._conn.execute("SELECT synced_upto FROM sync_state").fetchone()[0])

    def mark_synced(self, upto_seq: int, checkpoint: str, *, recount: bool = True) -> None:
        """Record that the central chain holds every entry up to ``upto_seq``.

        With ``recount`` the offline counters restart from the entries after it, which are
        still offline; a client sending a backlog in batches recounts after the last batch
        only (counters left high in between decline more, never less).
        """
        if upto_seq > self._head.seq or upto_seq < self.synced_upto():
            raise LedgerStateError(
                f"cannot mark {upto_seq} synced (head {self._head.seq}, synced "
                f"{self.synced_upto()})"
            )
        statements: list[tuple[str, Any]] = [
            ("UPDATE sync_state SET synced_upto = ?, checkpoint = ?", (upto_seq, checkpoint)),
        ]
        if recount:
            statements += [
                # only the cards with something offline: a city's 250,000 rows rewritten each
                # round were 15 MB of WAL and 0.2 s of the write lock a tap waits for
                ("UPDATE card_counters SET offline_amount = 0, offline_count = 0 "
                 "WHERE offline_amount != 0 OR offline_count != 0", ()),
                (
                    # floored at 0 as append floors it: a refund of an entry this round
                    # synced must not leave room beyond the card's cap
                    "UPDATE card_counters SET offline_amount = MAX(s.a, 0), "
                    "offline_count = s.n FROM "
                    "(SELECT card_token AS t, SUM(CASE WHEN kind IN ('payment','tap') THEN amount "
                    "ELSE -amount END) AS a, SUM(kind IN ('payment','tap')) AS n FROM entries "
                    "WHERE seq > ? AND kind IN ('payment','tap','refund','void') "
                    "GROUP BY card_token) AS s WHERE card_token = s.t",
                    (upto_seq,),
                ),
                *pockets.recount(upto_seq),
            ]
        self._write("sync state not stored", statements)
        self._exposure = self._read_exposure()

    def prune(self, upto_seq: int, checkpoint: str) -> int:
        """Delete entries up to ``upto_seq`` once the central chain has proved them.

        Recorded in ``prunes`` with the anchor hash so that verification continues from it.
        Returns how many entries were removed.
        """
        if upto_seq > self.synced_upto():
            raise LedgerStateError(
                f"cannot prune up to {upto_seq}: only {self.synced_upto()} are proved synced"
            )
        anchor = self.entry(upto_seq)
        if anchor is None:
            raise LedgerStateError(f"entry {upto_seq} is not in the ledger")
        before = self.count()
        self._write(
            "prune not done",
            [
                (
                    "INSERT INTO prunes (upto_seq, anchor_hash, anchor_mono, checkpoint, "
                    "pruned_at) VALUES (?, ?, ?, ?, ?)",
                    (upto_seq, anchor.entry_hash, anchor.fields.mono, checkpoint,
                     int(time.time() * 1000)),
                ),
                # summed in the same transaction: a day's totals stay whole (pruned_sums)
                (
                    "INSERT INTO pruned_sums (quarter, kind, count, amount) "
                    f"SELECT wall_ms / {QUARTER_MS}, kind, COUNT(*), SUM(amount) FROM entries "
                    f"WHERE seq <= ? GROUP BY wall_ms / {QUARTER_MS}, kind "
                    "ON CONFLICT (quarter, kind) DO UPDATE SET count = count + excluded.count, "
                    "amount = amount + excluded.amount",
                    (upto_seq,),
                ),
                ("DELETE FROM entries WHERE seq <= ?", (upto_seq,)),
            ],
        )
        return before - self.count()

    # -- incentive points (migration 0003) ---------------------------------------------------

    def points_state(self) -> tuple[int, str]:
        """The points snapshot's version and the rules' summary it came with (JSON, or "")."""
        row = self._conn.execute("SELECT version, rules FROM points_state").fetchone()
        return int(row[0]), str(row[1])

    def set_points_snapshot(self, rows: dict[str, tuple[str, int, int, str]], version: int,
                            rules: str, synced_at: int | None = None) -> None:
        """Store points from the central service: card -> (week_start, points_week,
        days_mask, rider), as of ``synced_at`` (ms, default now). A row of an older week
        never replaces a newer one."""
        now = int(time.time() * 1000) if synced_at is None else synced_at
        self._write(
            "points not stored",
            [
                (
                    "INSERT INTO points_snapshot VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (card_token) DO UPDATE SET week_start = excluded.week_start, "
                    "points_week = excluded.points_week, days_mask = excluded.days_mask, "
                    "rider = excluded.rider, synced_at = excluded.synced_at "
                    "WHERE excluded.week_start >= points_snapshot.week_start",
                    [(t, w, p, m, r, now) for t, (w, p, m, r) in rows.items()],
                ),
                ("UPDATE points_state SET version = ?, rules = ?", (version, rules)),
            ],
        )

    def points_snapshot(self, card_token: str) -> PointsRow | None:
        """One card's last known week of points: one primary-key lookup."""
        try:
            row = self._conn.execute(
                "SELECT week_start, points_week, days_mask, rider, synced_at FROM "
                "points_snapshot WHERE card_token = ?", (card_token,)
            ).fetchone()
        except sqlite3.Error as err:
            raise _wrap(err, "cannot read points") from err
        return PointsRow(*row) if row is not None else None

    # -- rider categories (migration 0004) ---------------------------------------------------

    def riders_version(self) -> int:
        """The last version of central rider profiles stored here (0: none yet)."""
        return int(self._conn.execute("SELECT version FROM riders_state").fetchone()[0])

    def set_riders(self, changes: dict[str, str], version: int) -> None:
        """Apply profile changes from the central service as of ``version``: card -> category,
        where ``""`` means the profile was removed (the card pays the default again).

        An answer older than what is stored is refused: applying it would undo newer
        changes. The same version again is taken (the service may resend it)."""
        held = self.riders_version()
        if version < held:
            raise LedgerStateError(f"rider profiles version {version} is older than {held}")
        self._write(
            "rider categories not stored",
            [
                (
                    "INSERT INTO rider_categories VALUES (?, ?, ?) ON CONFLICT (card_token) "
                    "DO UPDATE SET rider = excluded.rider, version = excluded.version",
                    [(t, r, version) for t, r in changes.items() if r],
                ),
                ("DELETE FROM rider_categories WHERE card_token = ?",
                 [(t,) for t, r in changes.items() if not r]),
                ("UPDATE riders_state SET version = ?", (version,)),
            ],
        )

    def rider_of(self, card_token: str) -> str | None:
        """The card's category from its central profile, if any: one primary-key lookup."""
        try:
            row = self._conn.execute(
                "SELECT rider FROM rider_categories WHERE card_token = ?", (card_token,)
            ).fetchone()
        except sqlite3.Error as err:
            raise _wrap(err, "cannot read the rider category") from err
        return str(row[0]) if row is not None else None

    # -- clock anchor (migration 0005) ---------------------------------------------------------

    def clock_anchor(self) -> ClockAnchor | None:
        """The central's last signed time and this terminal's clocks when it came (or None)."""
        try:
            row = self._conn.execute("SELECT central_ms, local_ms, boot_id, boot_ms, rtt_ms "
                                     "FROM clock_anchor").fetchone()
        except sqlite3.Error as err:  # a read-only ledger from before migration 0005
            if "no such table" in str(err):
                return None
            raise _wrap(err, "cannot read the clock anchor") from err
        return ClockAnchor(int(row[0]), int(row[1]), str(row[2]), int(row[3]),
                           int(row[4])) if row is not None else None

    def set_clock_anchor(self, anchor: ClockAnchor) -> None:
        """Keep ``anchor`` in place of the one held (the newest answer wins)."""
        a = anchor
        self._write("clock anchor not stored", [(
            "INSERT OR REPLACE INTO clock_anchor VALUES (1, ?, ?, ?, ?, ?)",
            (a.central_ms, a.local_ms, a.boot_id, a.boot_ms, a.rtt_ms))])
