"""Where the central service keeps everything: one interface, SQLite and PostgreSQL behind it.

API servers hold no state of their own; every fact lives in the store, so more servers can
run over one PostgreSQL. Both backends speak the same SQL (written with ``?`` placeholders,
turned into ``%s`` for psycopg) and differ only in connecting, schema types, the global
append lock and bulk loading (``executemany`` for SQLite, ``COPY`` for PostgreSQL).

Tables: ``terminals`` (key, chain head), ``log_state`` (tree size and the frontier: the
O(log n) right-edge hashes), ``nodes`` (every complete subtree hash above the leaves, for
proofs in O(log n) reads; a leaf's hash is its entry's, from ``entries.data``), ``entries``,
``batches`` and ``checkpoints`` (so a batch sent again is answered the same way),
``nonces``, ``deny_changes``, ``balances``, ``overdrafts``, ``flags``, ``configs`` and
``terminal_totals``; the ``incentive_*`` tables belong to :mod:`central.incentives` (made
and migrated by :mod:`central.incentive_schema`), ``municipalities`` to
:mod:`central.municipalities`.

Each terminal, deny change, balance snapshot and enrolment code names its municipality
(``municipality_id``, ``default`` unless said otherwise). Stores from before that get the
column with ``default`` in every row; a terminal already assigned to a merchant of another
municipality moves to that one, and every municipality an older table names is registered.
A terminal's id stays unique over the whole platform: it is what signed requests name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from central import (
    accounts,
    allowances,
    books,
    incentive_schema,
    merchants,
    municipalities,
    settlement,
    topups,
)
from localpay.errors import ConfigError, SyncError, SyncUnavailableError

log = logging.getLogger(__name__)

_TABLES = """
CREATE TABLE IF NOT EXISTS terminals (
    terminal_id TEXT PRIMARY KEY, public_key {blob} NOT NULL, lat DOUBLE PRECISION,
    lon DOUBLE PRECISION, last_seq BIGINT NOT NULL DEFAULT 0, last_hash {blob} NOT NULL,
    added_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS log_state (
    id INTEGER PRIMARY KEY CHECK (id = 1), size BIGINT NOT NULL, frontier {blob} NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    level SMALLINT NOT NULL, idx BIGINT NOT NULL, hash {blob} NOT NULL,
    PRIMARY KEY (level, idx));
CREATE TABLE IF NOT EXISTS entries (
    log_index BIGINT PRIMARY KEY, terminal_id TEXT NOT NULL, seq BIGINT NOT NULL,
    kind TEXT NOT NULL, card_token TEXT NOT NULL, amount BIGINT NOT NULL, place TEXT NOT NULL,
    wall_ms BIGINT NOT NULL, day TEXT NOT NULL, entry_hash {blob} NOT NULL,
    data {blob} NOT NULL, signature {blob} NOT NULL, ref_seq BIGINT NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT '', UNIQUE (terminal_id, seq));
CREATE INDEX IF NOT EXISTS entries_card ON entries (card_token, wall_ms);
CREATE INDEX IF NOT EXISTS entries_place ON entries (place, wall_ms);
CREATE INDEX IF NOT EXISTS entries_day ON entries (day, terminal_id);
CREATE TABLE IF NOT EXISTS batches (
    terminal_id TEXT NOT NULL, first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL,
    tree_size BIGINT NOT NULL, received_ms BIGINT NOT NULL, PRIMARY KEY (terminal_id, last_seq));
CREATE TABLE IF NOT EXISTS checkpoints (
    size BIGINT PRIMARY KEY, root {blob} NOT NULL, note TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nonces (
    terminal_id TEXT NOT NULL, nonce TEXT NOT NULL, time_ms BIGINT NOT NULL,
    PRIMARY KEY (terminal_id, nonce));
CREATE TABLE IF NOT EXISTS deny_changes (
    version BIGINT PRIMARY KEY, card_token TEXT NOT NULL, action TEXT NOT NULL,
    reason TEXT NOT NULL, at_ms BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS deny_card ON deny_changes (card_token, version);
CREATE TABLE IF NOT EXISTS balances (
    card_token TEXT PRIMARY KEY, balance BIGINT NOT NULL, version BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS balances_version ON balances (version);
CREATE TABLE IF NOT EXISTS overdrafts (
    log_index BIGINT PRIMARY KEY, card_token TEXT NOT NULL, terminal_id TEXT NOT NULL,
    seq BIGINT NOT NULL, amount BIGINT NOT NULL, balance_after BIGINT NOT NULL,
    day TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS flags (
    log_index BIGINT NOT NULL, rule TEXT NOT NULL, card_token TEXT NOT NULL,
    terminal_id TEXT NOT NULL, seq BIGINT NOT NULL, day TEXT NOT NULL, detail TEXT NOT NULL,
    PRIMARY KEY (log_index, rule));
CREATE TABLE IF NOT EXISTS configs (
    terminal_id TEXT NOT NULL, version BIGINT NOT NULL, body TEXT NOT NULL,
    at_ms BIGINT NOT NULL, PRIMARY KEY (terminal_id, version));
CREATE TABLE IF NOT EXISTS terminal_totals (
    terminal_id TEXT NOT NULL, day TEXT NOT NULL, kind TEXT NOT NULL, count BIGINT NOT NULL,
    amount BIGINT NOT NULL, reported_ms BIGINT NOT NULL, PRIMARY KEY (terminal_id, day, kind));
CREATE TABLE IF NOT EXISTS enroll_codes (
    code_id TEXT PRIMARY KEY, code_key {blob} NOT NULL, terminal_id TEXT NOT NULL,
    role TEXT NOT NULL, place TEXT NOT NULL, template TEXT NOT NULL, issued_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL, used_ms BIGINT, used_by TEXT);
"""

#: An entry that contradicts its terminal's signed config (a ``flags`` row of rule ``config``,
#: :mod:`central.config_audit`) stays in the log, where nothing approved is lost, but earns no
#: points and reaches no books: a hand-edited fare or limit must not become money. Appended to
#: a ``WHERE`` over ``entries``.
NOT_CONFIG_REFUSED = ("AND NOT EXISTS (SELECT 1 FROM flags f WHERE f.log_index = "
                      "entries.log_index AND f.rule = 'config') ")
ENTRY_COLUMNS = ("log_index", "terminal_id", "seq", "kind", "card_token", "amount", "place",
                 "wall_ms", "day", "entry_hash", "data", "signature", "ref_seq", "detail",
                 "effective_ms")
#: columns added after the first release, made by :meth:`Store.init_schema` in older stores
_ADDED_COLUMNS = (("entries", "ref_seq", "BIGINT NOT NULL DEFAULT 0"),
                  ("entries", "detail", "TEXT NOT NULL DEFAULT ''"),
                  # the month whose payout paid the credit; NULL while unpaid
                  ("incentive_credits", "settled_month", "TEXT"),
                  # orders the profile changes that terminals fetch
                  ("incentive_profiles", "version", "BIGINT NOT NULL DEFAULT 0"),
                  # the time central gives the entry (wall_ms where that was plausible)
                  ("entries", "effective_ms", "BIGINT NOT NULL DEFAULT 0"),
                  # the last accepted entry's monotonic stamp and effective time
                  ("terminals", "last_mono", "BIGINT NOT NULL DEFAULT 0"),
                  ("terminals", "last_effective_ms", "BIGINT NOT NULL DEFAULT 0"),
                  # each weekday's first ride: when, which entry, its points
                  ("incentive_weeks", "firsts", "TEXT NOT NULL DEFAULT ''"),
                  # the municipality each belongs to (central.municipalities)
                  ("terminals", "municipality_id", "TEXT NOT NULL DEFAULT 'default'"),
                  ("deny_changes", "municipality_id", "TEXT NOT NULL DEFAULT 'default'"),
                  ("balances", "municipality_id", "TEXT NOT NULL DEFAULT 'default'"),
                  ("enroll_codes", "municipality_id", "TEXT NOT NULL DEFAULT 'default'"))
#: indexes on added columns, made after them
_ADDED_INDEXES = (
    "CREATE INDEX IF NOT EXISTS incentive_credits_unsettled ON incentive_credits "
    "(payable_month, card_token) WHERE settled_month IS NULL",
    "CREATE INDEX IF NOT EXISTS incentive_profiles_version ON incentive_profiles (version)",
    "CREATE INDEX IF NOT EXISTS terminals_municipality ON terminals (municipality_id, "
    "terminal_id)",
    "CREATE INDEX IF NOT EXISTS deny_municipality ON deny_changes (municipality_id, version)",
    "CREATE INDEX IF NOT EXISTS balances_municipality ON balances (municipality_id, version)",
    # which municipalities' accounts a card is linked to, for what terminals are told
    "CREATE INDEX IF NOT EXISTS account_links_holder ON account_links (holder)")
NODE_COLUMNS = ("level", "idx", "hash")


@dataclass(frozen=True)
class Rows:
    """Rows for :meth:`Tx.insert_all`; ``conflict`` is an ``ON CONFLICT`` clause or empty."""

    table: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    conflict: str = ""

    def insert_sql(self, source: str) -> str:
        return f"INSERT INTO {self.table} ({','.join(self.columns)}) {source} {self.conflict}"


class Tx:
    """One open transaction: the few operations the service needs, the same on both stores."""

    def __init__(self, store: Store, conn: Any) -> None:
        self.store = store
        self.conn = conn

    def _sql(self, sql: str) -> str:
        return self.store.translate(sql)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(self._sql(sql), params)
        return [tuple(r) for r in cur.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row = self.conn.execute(self._sql(sql), params).fetchone()
        return tuple(row) if row is not None else None

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return int(self.conn.execute(self._sql(sql), params).rowcount)

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.store.executemany(self.conn, self._sql(sql), rows)

    def run_all(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Statements whose answers nothing needs, in this order: sent together, one round
        trip, on PostgreSQL (a pipeline); an error in any fails the call."""
        self.store.run_all(self.conn, [(self._sql(sql), params) for sql, params in statements])

    def bulk(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert many rows fast (COPY on PostgreSQL)."""
        if rows:
            self.store.bulk_insert(self.conn, table, columns, rows)

    def lock_log(self) -> None:
        """Take the one lock that orders every append to the central chain."""
        self.store.lock_log(self.conn)

    def schema_lock(self, name: str) -> None:
        """Make ``name``'s tables one process at a time: PostgreSQL's CREATE TABLE IF NOT
        EXISTS fails one of two concurrent ones (a duplicate key in pg_type), as workers
        starting together or the first requests of a new service do. SQLite's BEGIN
        IMMEDIATE already serialises them."""
        if self.store.kind == "postgresql":
            self.one("SELECT pg_advisory_xact_lock(hashtext(?))", ("localpay schema " + name,))

    def one_for_update(self, sql: str, params: Sequence[Any] = (), *,
                       of: str = "") -> tuple[Any, ...] | None:
        """:meth:`one`, holding the row read locked until the transaction ends (of the table
        named ``of`` only, when it reads several)."""
        return self.one(self.store.for_update(sql, of), params)

    def in_list(self, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """``(?, ?, ...)`` for ``IN`` and its parameters."""
        return "(" + ",".join("?" * len(values)) + ")", list(values)

    def any_of(self, column: str, values: Sequence[str]) -> tuple[str, Any]:
        """``column`` is one of the strings ``values``, as one parameter: the SQL text stays
        the same whatever the number of values, so the server prepares it once."""
        return self.store.any_of(column), self.store.any_param(values)

    def among(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """``column`` is one of ``values``, for a hot query: one array parameter on
        PostgreSQL (the text stays the same, so it is planned once, not at every batch), a
        literal ``IN (?, ...)`` on SQLite (whose planner, without statistics, would rather
        scan another index than search through ``json_each``)."""
        if self.store.kind == "postgresql":
            return self.store.any_of(column), [list(values)]
        marks, params = self.in_list(values)
        return f"{column} IN {marks}", params

    def values_table(self, alias: str, columns: Sequence[str],
                     rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
        """``rows`` as a table named ``alias`` for ``FROM``/``JOIN``, in parameters whose
        number does not depend on the number of rows (so the statement text stays the same).
        Every row must be non-empty with the same value types."""
        return self.store.values_table(alias, columns, rows)

    def insert_all(self, inserts: Sequence[Rows]) -> None:
        """Insert the rows of several tables at once: one statement on PostgreSQL."""
        self.store.insert_all(self.conn, [i for i in inserts if i.rows])


class Store:
    """Base of both stores: a small connection pool and transactions."""

    url: str
    kind: str
    blob = "BLOB"
    #: seconds a new connection is tried again while the server does not answer
    reconnect_s = 0.0
    #: seconds a transaction waits for a pooled connection when all are in use
    pool_wait_s = 60.0

    def __init__(self, pool_size: int = 8) -> None:
        self._pool: queue.LifoQueue[Any] = queue.LifoQueue()
        self._made = 0
        self._lock = threading.Lock()
        self._pool_size = pool_size
        self._sql_cache: dict[str, str] = {}

    # -- backend hooks -----------------------------------------------------------------------

    def connect(self) -> Any:
        raise NotImplementedError

    def begin(self, conn: Any, write: bool) -> None:
        raise NotImplementedError

    def lock_log(self, conn: Any) -> None:
        raise NotImplementedError

    def bulk_insert(self, conn: Any, table: str, columns: Sequence[str],
                    rows: Sequence[Sequence[Any]]) -> None:
        placeholders = ",".join("?" * len(columns))
        self.executemany(conn, self.translate(
            f"INSERT INTO {table} ({','.join(columns)}) VALUES ({placeholders})"), rows)

    def executemany(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        conn.executemany(sql, rows)

    def run_all(self, conn: Any, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        for sql, params in statements:
            conn.execute(sql, params)

    def translate(self, sql: str) -> str:
        return sql

    def for_update(self, sql: str, of: str = "") -> str:
        """``sql`` locking the rows it reads until the transaction ends (SQLite's write
        transactions already hold the one database lock)."""
        return sql

    def any_of(self, column: str) -> str:
        return f"{column} IN (SELECT value FROM json_each(?))"

    def any_param(self, values: Sequence[str]) -> Any:
        return json.dumps(list(values))

    def values_table(self, alias: str, columns: Sequence[str],
                     rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
        picks = ", ".join(f"json_extract(value, '$[{i}]') AS {c}" for i, c in enumerate(columns))
        return f"(SELECT {picks} FROM json_each(?)) AS {alias}", [json.dumps(list(rows))]

    def insert_all(self, conn: Any, inserts: Sequence[Rows]) -> None:
        for rows in inserts:
            marks = "VALUES (" + ",".join("?" * len(rows.columns)) + ")"
            self.executemany(conn, self.translate(rows.insert_sql(marks)), rows.rows)

    def db_errors(self) -> tuple[type[BaseException], ...]:
        raise NotImplementedError

    def transient_errors(self) -> tuple[type[BaseException], ...]:
        """Errors that a later try may not meet: lost connection, server restart, lock."""
        raise NotImplementedError

    # -- pool and transactions ---------------------------------------------------------------

    def _get(self, reconnect: bool) -> Any:
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            new = self._made < self._pool_size
            if new:
                self._made += 1
        if new:  # outside the lock: a reconnect may wait for a failover
            try:
                return self._connect_retried(self.reconnect_s if reconnect else 0.0)
            except BaseException:
                with self._lock:
                    self._made -= 1
                raise
        try:
            return self._pool.get(timeout=self.pool_wait_s)
        except queue.Empty:
            raise SyncUnavailableError(
                f"central store {self.kind}: all {self._pool_size} connections busy for "
                f"{self.pool_wait_s:g} s") from None

    def _connect_retried(self, wait_s: float) -> Any:
        """:meth:`connect`, tried again with backoff for up to ``wait_s`` seconds while it
        fails with a transient error: a standby being promoted takes writes a second or a
        few after its primary died, and a request may wait that long rather than fail."""
        deadline = time.monotonic() + wait_s
        pause = 0.05
        while True:
            try:
                return self.connect()
            except self.transient_errors() as err:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                log.warning("central store %s unreachable, trying again: %s", self.kind,
                            str(err).splitlines()[0] if str(err) else type(err).__name__)
                time.sleep(min(pause, left))
                pause = min(pause * 2, 1.0)

    def lost(self, conn: Any) -> bool:
        """Whether ``conn`` lost its server (rather than met an error inside it)."""
        return False

    def _drop_idle(self) -> None:
        """Close the pooled connections: once one lost its server, the others most likely
        lead to the same dead server, and each would fail one more request."""
        while True:
            try:
                conn = self._pool.get_nowait()
            except queue.Empty:
                return
            self._put(conn, broken=True)

    def _put(self, conn: Any, broken: bool) -> None:
        if broken:
            try:
                conn.close()
            except Exception:  # a broken connection may fail to close too
                pass
            with self._lock:
                self._made -= 1
            return
        self._pool.put(conn)

    @contextmanager
    def tx(self, write: bool = True, *, reconnect: bool = True) -> Iterator[Tx]:
        """A transaction: committed when the block ends, rolled back on any exception.
        Without ``reconnect``, a store that does not answer fails it at once instead of
        after :attr:`reconnect_s` (a health check answers now, not after a failover)."""
        errors = self.db_errors()
        try:
            conn = self._get(reconnect)
        except errors as err:
            raise SyncUnavailableError(f"central store {self.kind} unreachable: {err}") from err
        broken = False
        try:
            self.begin(conn, write)
            yield Tx(self, conn)
            conn.commit()
        except errors as err:
            self._rollback(conn)
            if isinstance(err, self.transient_errors()):
                broken = True
                if self.lost(conn):
                    self._drop_idle()
                raise SyncUnavailableError(f"central store {self.kind} failed: {err}") from err
            raise SyncError(f"central store {self.kind}: {type(err).__name__}: {err}") from err
        except BaseException:
            self._rollback(conn)
            raise
        finally:
            self._put(conn, broken)

    @staticmethod
    def _rollback(conn: Any) -> None:
        try:
            conn.rollback()
        except Exception:  # the original error matters more
            pass

    def init_schema(self) -> None:
        with self.tx() as tx:
            parts = (_TABLES.format(blob=self.blob), merchants.TABLES, accounts.TABLES,
                     topups.TABLES, allowances.TABLES, settlement.TABLES,
                     municipalities.TABLES, incentive_schema.TABLES)
            for statement in ";".join(parts).split(";"):
                if statement.strip():
                    tx.run(statement)
            for statement in books.schema_statements(self.kind):
                tx.run(statement)
            for table, column, decl in _ADDED_COLUMNS:
                if column not in self.columns(tx, table):
                    tx.run(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
                    if (table, column) == ("entries", "effective_ms"):
                        # entries stored before effective times: their stated time stands
                        tx.run("UPDATE entries SET effective_ms = wall_ms")
                    if (table, column) == ("terminals", "municipality_id"):
                        # a store from before the registry: what its tables already name
                        municipalities.register_existing(tx)
            # one incentive programme per municipality; an older store's rows to default
            incentive_schema.migrate(tx, self.columns)
            municipalities.ensure_default(tx)
            for statement in _ADDED_INDEXES:
                tx.run(statement)
            state = tx.one("SELECT size FROM log_state WHERE id = 1")
            if state is None:
                tx.run("INSERT INTO log_state VALUES (1, 0, ?)", (b"",))
            if tx.one("SELECT next_index FROM incentive_cursor WHERE id = 1") is None:
                # A store from before crediting followed the log credited every entry in
                # its ingest transaction: crediting goes on from the end of its log.
                tx.run("INSERT INTO incentive_cursor VALUES (1, ?)",
                       (int(state[0]) if state else 0,))

    def columns(self, tx: Tx, table: str) -> set[str]:
        return {str(r[1]) for r in tx.all(f"PRAGMA table_info({table})")}

    def close(self) -> None:
        while True:
            try:
                conn = self._pool.get_nowait()
            except queue.Empty:
                break
            try:
                conn.close()
            except Exception:
                pass
        with self._lock:
            self._made = 0


class SQLiteStore(Store):
    """The default store: one SQLite file in WAL mode; nothing to install."""

    kind = "sqlite"

    def __init__(self, path: str | Path, pool_size: int = 8) -> None:
        super().__init__(pool_size)
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as err:
            raise ConfigError(f"cannot create the folder of {self.path}: {err}") from err
        # made 0600 before SQLite opens it (SQLite gives its -wal and -shm the same mode);
        # a path that cannot be a store fails at the first connection, as unavailable
        with contextlib.suppress(OSError):
            if not self.path.exists():
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            self._private_files()

    def _private_files(self) -> None:
        """The store and its -wal and -shm are 0600, whatever an older release left: they
        hold the enrolment codes' hashes, from which a terminal could be enrolled."""
        for path in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            with contextlib.suppress(FileNotFoundError):
                info = path.stat()
                if stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) & 0o077:
                    os.chmod(path, 0o600)

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                               timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        try:
            self._private_files()  # the -wal and -shm exist from here
        except OSError as err:  # not ours to chmod: say so, the store itself still works
            log.warning("cannot make the store %s private: %s", self.path, err)
        return conn

    def begin(self, conn: Any, write: bool) -> None:
        # IMMEDIATE takes the write lock up front, so two appends never interleave.
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def lock_log(self, conn: Any) -> None:
        """BEGIN IMMEDIATE already holds the database's one write lock."""

    def db_errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)

    def transient_errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.OperationalError,)


class PostgresStore(Store):
    """PostgreSQL through psycopg 3; appends ordered by a row lock on ``log_state``."""

    kind = "postgresql"
    blob = "BYTEA"
    #: A request waits this long for the store to come back before it is answered 503:
    #: promoting a standby takes a second or two once decided, and the terminal (30 s to
    #: answer by default) sends the batch again after a 503 anyway.
    reconnect_s = 10.0

    def __init__(self, url: str, pool_size: int = 8) -> None:
        super().__init__(pool_size)
        self.url = url
        try:
            import psycopg
        except ImportError as err:
            raise ConfigError(
                "PostgreSQL needs psycopg: pip install 'localpay[central]'"
            ) from err
        self._psycopg = psycopg

    def connect(self) -> Any:
        return self._psycopg.connect(self.url, connect_timeout=10)

    def lost(self, conn: Any) -> bool:
        # psycopg: "a broken connection is always closed"
        return bool(conn.closed)

    def begin(self, conn: Any, write: bool) -> None:
        """psycopg opens the transaction on the first statement."""

    def lock_log(self, conn: Any) -> None:
        conn.execute("SELECT size FROM log_state WHERE id = 1 FOR UPDATE")

    def for_update(self, sql: str, of: str = "") -> str:
        return sql + (f" FOR UPDATE OF {of}" if of else " FOR UPDATE")

    def columns(self, tx: Tx, table: str) -> set[str]:
        return {str(r[0]) for r in tx.all(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "AND table_schema = current_schema()", (table,))}

    def translate(self, sql: str) -> str:
        out = self._sql_cache.get(sql)
        if out is None:
            # ``?#``: a parameter sent in binary (arrays: no text quoting to do per element)
            out = sql.replace("%", "%%").replace("?#", "%b").replace("?", "%s")
            self._sql_cache[sql] = out
        return out

    def executemany(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with conn.cursor() as cur:
            cur.executemany(sql, rows)

    def run_all(self, conn: Any, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        with conn.pipeline():
            for sql, params in statements:
                conn.execute(sql, params)

    def any_of(self, column: str) -> str:
        return f"{column} = ANY(CAST(?# AS TEXT[]))"

    def any_param(self, values: Sequence[str]) -> Any:
        return list(values)

    def values_table(self, alias: str, columns: Sequence[str],
                     rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
        arrays = [list(col) for col in zip(*rows, strict=True)]
        casts = ", ".join(f"CAST(?# AS {_pg_array_type(col)})" for col in arrays)
        return f"unnest({casts}) AS {alias}({', '.join(columns)})", arrays

    def insert_all(self, conn: Any, inserts: Sequence[Rows]) -> None:
        """One statement whatever the number of rows: each table's rows go as one array per
        column through ``unnest``, the later tables as data-modifying ``WITH`` parts (which
        PostgreSQL always runs to completion). A round trip per small batch is what costs."""
        if not inserts:
            return
        parts: list[str] = []
        params: list[Any] = []
        for rows in inserts:
            # A column with one value in every row (a rules version, a time) goes once, not
            # as an array: dumping arrays is most of the client's work here.
            picks: list[str] = []
            casts: list[str] = []
            scalars: list[Any] = []
            arrays: list[list[Any]] = []
            for n, col in enumerate(zip(*rows.rows, strict=True)):
                kind = _pg_array_type(col)
                if n and len(rows.rows) > 1 and col.count(col[0]) == len(col) \
                        and col[0] is not None:
                    picks.append(f"CAST(%b AS {kind[:-2]})")
                    scalars.append(col[0])
                else:
                    picks.append(f"u.c{n}")
                    casts.append(f"CAST(%b AS {kind})")
                    arrays.append(list(col))
            names = ", ".join(f"c{n}" for n, p in enumerate(picks) if p.startswith("u."))
            parts.append(rows.insert_sql(
                f"SELECT {', '.join(picks)} FROM unnest({', '.join(casts)}) AS u({names})"))
            # the SELECT list's parameters come before those of FROM
            params.extend(scalars)
            params.extend(arrays)
        *first, last = parts
        sql = ""
        if first:
            sql = "WITH " + ", ".join(f"w{i} AS ({p})" for i, p in enumerate(first)) + " "
        conn.execute(sql + last, params)

    def bulk_insert(self, conn: Any, table: str, columns: Sequence[str],
                    rows: Sequence[Sequence[Any]]) -> None:
        with conn.cursor() as cur, cur.copy(
            f"COPY {table} ({','.join(columns)}) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)

    def db_errors(self) -> tuple[type[BaseException], ...]:
        return (self._psycopg.Error,)

    def transient_errors(self) -> tuple[type[BaseException], ...]:
        return (self._psycopg.OperationalError, self._psycopg.InterfaceError)


def _pg_array_type(values: Sequence[Any]) -> str:
    sample = next((v for v in values if v is not None), "")
    if isinstance(sample, bool):
        return "BOOLEAN[]"
    if isinstance(sample, int):
        return "BIGINT[]"
    if isinstance(sample, float):
        return "DOUBLE PRECISION[]"
    if isinstance(sample, (bytes, bytearray, memoryview)):
        return "BYTEA[]"
    return "TEXT[]"


def open_store(url: str, pool_size: int = 8) -> Store:
    """``sqlite:///path`` (or a plain path) or ``postgresql://...``; schema made if missing."""
    store: Store
    if url.startswith(("postgresql://", "postgres://")):
        store = PostgresStore(url, pool_size)
    elif url.startswith("sqlite:///"):
        store = SQLiteStore(url[len("sqlite:///"):], pool_size)
    elif "://" in url:
        raise ConfigError(f"unknown store URL {url!r}: use sqlite:///PATH or postgresql://...")
    else:
        store = SQLiteStore(url, pool_size)
    store.init_schema()
    return store
