"""The store's pool when its server goes away: the connections to a server that is gone are
dropped together, and a new connection is tried again for a bounded time (a standby being
promoted), except by a health check, which answers at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from central.store import PostgresStore, SQLiteStore, open_store
from localpay.errors import SyncUnavailableError
from tests.pg_fixtures import PgCluster, pg_cluster  # noqa: F401


def test_a_lost_connection_drops_the_idle_ones(pg_cluster: PgCluster) -> None:  # noqa: F811
    store = open_store(pg_cluster.new_schema())
    assert isinstance(store, PostgresStore)
    admin = open_store(pg_cluster.new_schema())
    try:
        with store.tx() as a, store.tx() as b:  # two pooled connections
            pids = [int(tx.one("SELECT pg_backend_pid()")[0]) for tx in (a, b)]  # type: ignore[index]
        assert store._made == 2 and store._pool.qsize() == 2
        with admin.tx() as tx:  # the server ends both, as a restart or a failover does
            for pid in pids:
                tx.one("SELECT pg_terminate_backend(?)", (pid,))
        idle = list(store._pool.queue)[:1]  # the one the next transaction does not take
        with pytest.raises(SyncUnavailableError, match="failed"), store.tx() as tx:
            tx.one("SELECT 1")
        assert store._made == 0 and store._pool.qsize() == 0  # the other one went with it
        assert [conn.closed for conn in idle] == [True]  # and was closed, not left open
        with store.tx() as tx:  # and the next transaction has a new connection
            assert tx.one("SELECT 1") == (1,)
    finally:
        store.close()
        admin.close()


def test_an_error_inside_the_server_keeps_the_other_connections(
        pg_cluster: PgCluster) -> None:  # noqa: F811
    url = pg_cluster.new_schema()
    store, holder = open_store(url), open_store(url)
    try:
        with store.tx() as a, store.tx() as b:  # two pooled connections
            a.one("SELECT 1")
            b.one("SELECT 1")
        with holder.tx() as held:
            held.lock_log()
            # a lock not granted in time: transient, yet the server is there
            with pytest.raises(SyncUnavailableError, match="lock timeout"), \
                    store.tx() as tx:
                tx.run("SET LOCAL lock_timeout = '50ms'")
                tx.lock_log()
        assert store._made == 1 and store._pool.qsize() == 1  # only its own was closed
    finally:
        store.close()
        holder.close()


def _unopenable(tmp_path: Path) -> tuple[SQLiteStore, Path]:
    """A store whose every connection fails (a folder where its file goes) until the folder
    is removed."""
    path = tmp_path / "c.sqlite"
    path.mkdir()
    return SQLiteStore(path, pool_size=2), path


def test_a_new_connection_is_tried_again_until_the_store_answers(tmp_path: Path) -> None:
    store, path = _unopenable(tmp_path)
    store.reconnect_s = 10.0
    opens = threading.Timer(0.4, path.rmdir)
    opens.start()
    started = time.monotonic()
    try:
        with store.tx(write=False) as tx:
            assert tx.one("SELECT 1") == (1,)
        waited = time.monotonic() - started
    finally:
        opens.join()
        store.close()
    assert 0.4 <= waited < 3.0


def test_a_new_connection_is_tried_for_a_bounded_time(tmp_path: Path) -> None:
    store, _ = _unopenable(tmp_path)
    store.reconnect_s = 0.5
    started = time.monotonic()
    try:
        with pytest.raises(SyncUnavailableError, match="unreachable"):
            with store.tx(write=False):
                pass
        waited = time.monotonic() - started
        assert store._made == 0  # its place in the pool given back
    finally:
        store.close()
    assert 0.5 <= waited < 2.0


def test_a_health_check_does_not_wait(tmp_path: Path) -> None:
    store, _ = _unopenable(tmp_path)
    store.reconnect_s = 10.0
    started = time.monotonic()
    try:
        with pytest.raises(SyncUnavailableError, match="unreachable"):
            with store.tx(write=False, reconnect=False):
                pass
    finally:
        store.close()
    assert time.monotonic() - started < 0.5
