"""Edges of the central store (central/store.py) that the service's tests pass over: the URL
forms it opens, the size of its connection pool and what closing gives back, the write lock
a SQLite write transaction takes at its start, and the PostgreSQL row locks that crediting
takes without holding up appends. Real SQLite and a real PostgreSQL, as everywhere in the
central tests; these are the tests the ``central-store`` mutation area runs with the store's
other tests (mutation/areas.toml).

Waits here are bounded (a thread joined with a timeout): a pool or a lock that misbehaves
makes a test fail in seconds, never hang on the pool's own 60 s wait."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from central.incentives import lock_crediting
from central.store import PostgresStore, SQLiteStore, Store, open_store
from localpay.errors import SyncUnavailableError
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401

# long enough for a free connection or lock to be handed over on a busy machine; a wait
# that is meant to happen is seen by a thread still waiting after BLOCKED_S
PASS_S = 10.0
BLOCKED_S = 0.5


def _in_thread(work: Callable[[], None]) -> threading.Thread:
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    return worker


@pytest.fixture
def pg_url(pg_cluster: Any) -> str:  # noqa: F811
    """A fresh schema on the session's PostgreSQL server, for what only PostgreSQL does."""
    return str(pg_cluster.new_schema())


# -- URLs ---------------------------------------------------------------------------------


def test_a_postgres_url_in_its_short_form_opens_postgresql(pg_url: str) -> None:
    short = "postgres://" + pg_url[len("postgresql://"):]
    store = open_store(short)
    try:
        assert isinstance(store, PostgresStore) and store.url == short
        with store.tx(write=False) as tx:
            assert tx.one("SELECT size FROM log_state WHERE id = 1") == (0,)
    finally:
        store.close()


# -- the pool -------------------------------------------------------------------------------


def _holds_exactly(store: Store, size: int) -> None:
    """``size`` transactions at once are served; one more waits until one of them ends."""
    served: list[int] = []
    with ExitStack() as held:
        for _ in range(size):
            tx = held.enter_context(store.tx(write=False))
            assert tx.one("SELECT 1") == (1,)

        def one_more() -> None:
            with store.tx(write=False) as tx:
                served.append(int(tx.one("SELECT 2")[0]))  # type: ignore[index]

        waiting = _in_thread(one_more)
        waiting.join(BLOCKED_S)
        assert waiting.is_alive() and served == []       # every connection is in use
    waiting.join(PASS_S)                                 # the first one returned serves it
    assert served == [2]


def _stores_of_default_size(url: str, tmp_path: Path) -> Iterator[Store]:
    if url.startswith("postgresql://"):
        yield PostgresStore(url)
    else:
        yield SQLiteStore(tmp_path / "direct.sqlite")
    yield open_store(url)


def test_a_store_pools_eight_connections_unless_told(store_url: str,  # noqa: F811
                                                      tmp_path: Path) -> None:
    for store in _stores_of_default_size(store_url, tmp_path):
        try:
            _holds_exactly(store, 8)
        finally:
            store.close()


def test_a_store_at_a_plain_path_pools_what_it_is_told(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "plain.sqlite"), pool_size=3)
    try:
        _holds_exactly(store, 3)
    finally:
        store.close()


def test_a_failed_connection_gives_back_exactly_its_place(tmp_path: Path) -> None:
    (tmp_path / "c.sqlite").mkdir()                      # a folder: every connect fails
    store = SQLiteStore(tmp_path / "c.sqlite", pool_size=2)
    try:
        for _ in range(3):
            with pytest.raises(SyncUnavailableError, match="unreachable"):
                with store.tx(write=False):
                    pass
        (tmp_path / "c.sqlite").rmdir()
        _holds_exactly(store, 2)                          # no more, no fewer than before
    finally:
        store.close()


def test_a_connection_broken_by_an_error_gives_back_exactly_its_place(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.sqlite", pool_size=2)
    try:
        for _ in range(3):
            with pytest.raises(SyncUnavailableError, match="failed"), store.tx() as tx:
                tx.run("SELEC 1")            # an OperationalError: the connection is dropped
        _holds_exactly(store, 2)
    finally:
        store.close()


def test_a_closed_store_can_open_its_whole_pool_again(store_url: str) -> None:  # noqa: F811
    store = open_store(store_url, pool_size=2)
    try:
        _holds_exactly(store, 2)
        store.close()                                    # both pooled connections closed
        _holds_exactly(store, 2)
    finally:
        store.close()


# -- locks ----------------------------------------------------------------------------------


def test_sqlite_write_transactions_take_the_write_lock_at_their_start(tmp_path: Path) -> None:
    """Two read-then-write transactions never interleave: the second waits at its start for
    the first to commit, so neither's update is lost (nor refused for a stale read)."""
    store = open_store(f"sqlite:///{tmp_path / 'c.sqlite'}")
    errors: list[BaseException] = []
    second_started = threading.Event()

    def bump() -> None:
        try:
            second_started.set()
            with store.tx() as tx:
                size = int(tx.one("SELECT size FROM log_state WHERE id = 1")[0])  # type: ignore[index]
                tx.run("UPDATE log_state SET size = ? WHERE id = 1", (size + 1,))
        except BaseException as err:  # the test reports it below
            errors.append(err)

    try:
        with store.tx() as tx:
            size = int(tx.one("SELECT size FROM log_state WHERE id = 1")[0])  # type: ignore[index]
            second = _in_thread(bump)
            assert second_started.wait(PASS_S)
            second.join(BLOCKED_S)
            assert second.is_alive()                     # waiting for this transaction
            tx.run("UPDATE log_state SET size = ? WHERE id = 1", (size + 1,))
        second.join(PASS_S)
        assert errors == [] and not second.is_alive()
        with store.tx(write=False) as tx:
            assert tx.one("SELECT size FROM log_state WHERE id = 1") == (2,)
    finally:
        store.close()


def test_crediting_locks_its_cursor_not_the_log_it_reads(pg_url: str) -> None:
    """On PostgreSQL crediting reads the log's size with its cursor and locks only the
    cursor's row (``FOR UPDATE OF``): an append, which locks the log's row, goes on meanwhile
    (on SQLite one write lock orders both)."""
    store = open_store(pg_url)
    appended: list[int] = []

    def append() -> None:
        with store.tx() as tx:
            tx.lock_log()
            appended.append(int(tx.one("SELECT size FROM log_state WHERE id = 1")[0]))  # type: ignore[index]

    try:
        with store.tx() as tx:
            assert lock_crediting(tx) == (0, 0)
            appender = _in_thread(append)
            appender.join(PASS_S)
            passed = not appender.is_alive()
        appender.join(PASS_S)
        assert passed and appended == [0]
    finally:
        store.close()


def test_a_locking_read_of_one_table_of_an_outer_join(pg_url: str) -> None:
    """``one_for_update(..., of=t)`` locks the rows of ``t`` only, which PostgreSQL allows
    beside an outer join's nullable side (where a lock of every table is refused)."""
    store = open_store(pg_url)
    try:
        with store.tx() as tx:
            row = tx.one_for_update(
                "SELECT s.size, c.next_index FROM log_state s LEFT JOIN incentive_cursor c "
                "ON c.id = s.id + 1 WHERE s.id = ?", (1,), of="s")
            assert row == (0, None)
    finally:
        store.close()


def test_among_finds_the_rows_and_keeps_one_text_on_postgresql(
        store_url: str) -> None:  # noqa: F811
    """``Tx.among`` is a hot query's ``IN``: the rows whose column is one of the values, on
    both stores; on PostgreSQL one array parameter, so the text (and the plan the server
    keeps for it) is the same for 2 values as for 500; on SQLite a literal list of
    placeholders, which its planner searches by the key."""
    store = open_store(store_url)
    try:
        with store.tx() as tx:
            tx.run("CREATE TABLE among_t (k TEXT PRIMARY KEY, v BIGINT NOT NULL)")
            tx.many("INSERT INTO among_t VALUES (?, ?)", [(f"k{i}", i) for i in range(10)])
        with store.tx(write=False) as tx:
            two_sql, two = tx.among("k", ["k1", "k7"])
            three_sql, three = tx.among("k", ["k2", "k3", "nope"])
            got = {r[0]: r[1] for r in tx.all(
                f"SELECT k, v FROM among_t WHERE {three_sql}", three)}
            assert got == {"k2": 2, "k3": 3}
            assert sorted(r[0] for r in tx.all(
                f"SELECT v FROM among_t WHERE {two_sql} ORDER BY v", two)) == [1, 7]
    finally:
        store.close()
    if store.kind == "postgresql":
        assert two_sql == three_sql and two == [["k1", "k7"]]
    else:
        assert (two_sql, three_sql) == ("k IN (?,?)", "k IN (?,?,?)")
        assert three == ["k2", "k3", "nope"]
