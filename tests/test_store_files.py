"""The SQLite store's own files: made private before SQLite opens them, tightened when an
older release left them readable, and only its own regular files touched; and the pool's
bounded waits (a connection when all are busy, a new connection while the server is away)
with what they log."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from central.store import SQLiteStore
from localpay.errors import SyncUnavailableError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_store_is_private_before_sqlite_opens_it(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = SQLiteStore(tmp_path / "new" / "c.sqlite")
    finally:
        os.umask(old)
    try:
        # made by the store itself, not yet by SQLite (no connection was opened)
        assert store._made == 0
        assert _mode(tmp_path / "new") == 0o700
        assert (tmp_path / "new" / "c.sqlite").is_file()
        assert _mode(tmp_path / "new" / "c.sqlite") == 0o600
    finally:
        store.close()


def test_files_an_older_release_left_readable_are_tightened(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    sqlite3.connect(path).close()
    for name in ("c.sqlite", "c.sqlite-wal", "c.sqlite-shm"):
        (tmp_path / name).touch()
        os.chmod(tmp_path / name, 0o644)
    SQLiteStore(path).close()
    assert [_mode(tmp_path / n) for n in ("c.sqlite", "c.sqlite-wal", "c.sqlite-shm")] == [
        0o600, 0o600, 0o600]


def test_only_what_others_could_read_is_changed(tmp_path: Path) -> None:
    """An owner's execute bit is nobody else's access: left as it is. A FIFO where the -shm
    goes is not SQLite's file: left alone."""
    path = tmp_path / "c.sqlite"
    sqlite3.connect(path).close()
    os.chmod(path, 0o700)
    os.mkfifo(tmp_path / "c.sqlite-shm", 0o644)
    os.chmod(tmp_path / "c.sqlite-shm", 0o644)
    SQLiteStore(path).close()
    assert (_mode(path), _mode(tmp_path / "c.sqlite-shm")) == (0o700, 0o644)


def test_a_store_it_cannot_make_private_still_opens_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # chmod cannot fail here (the tests run as root, whose chmod always succeeds): the
    # refusal a store owned by someone else would meet is stood in for
    path = tmp_path / "c.sqlite"
    store = SQLiteStore(path)
    os.chmod(path, 0o644)

    def refused(target: object, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted", str(target))

    monkeypatch.setattr(os, "chmod", refused)
    caplog.set_level(logging.WARNING, logger="central.store")
    try:
        with store.tx(write=False) as tx:
            assert tx.one("SELECT 1") == (1,)
    finally:
        store.close()
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot make the store {path} private: [Errno 1] Operation not permitted: "
        f"'{path}'"]


def test_a_transaction_waits_a_bounded_time_for_a_busy_pool(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.sqlite", pool_size=1)
    store.pool_wait_s = 0.3
    failed: list[BaseException] = []
    try:
        with store.tx(write=False):  # the one connection, held
            def second() -> None:
                try:
                    with store.tx(write=False):
                        pass
                except SyncUnavailableError as err:
                    failed.append(err)

            other = threading.Thread(target=second)
            other.start()
            other.join(30)
        assert [str(e) for e in failed] == [
            "central store sqlite: all 1 connections busy for 0.3 s"]
        with store.tx(write=False) as tx:  # given back: the next one gets it
            assert tx.one("SELECT 1") == (1,)
    finally:
        store.close()


class Refusing(SQLiteStore):
    """A store whose first connections fail as a server that is away does, noting when."""

    def __init__(self, path: Path, failures: int, message: str) -> None:
        super().__init__(path, pool_size=1)
        self.failures, self.message = failures, message
        self.tries: list[float] = []

    def connect(self) -> sqlite3.Connection:
        self.tries.append(time.monotonic())
        if len(self.tries) <= self.failures:
            raise sqlite3.OperationalError(self.message)
        return super().connect()


@pytest.mark.parametrize("message, shown", [
    ("unable to open database file\nsecond line", "unable to open database file"),
    ("", "OperationalError")])
def test_each_retry_is_logged_with_the_first_line_of_its_reason(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, message: str, shown: str) -> None:
    store = Refusing(tmp_path / "c.sqlite", 2, message)
    store.reconnect_s = 10.0
    caplog.set_level(logging.WARNING, logger="central.store")
    try:
        with store.tx(write=False) as tx:
            assert tx.one("SELECT 1") == (1,)
    finally:
        store.close()
    assert [r.getMessage() for r in caplog.records] == [
        f"central store sqlite unreachable, trying again: {shown}"] * 2


def test_retries_back_off_from_a_twentieth_of_a_second(tmp_path: Path) -> None:
    """Never a busy loop on a server that is away: each pause at least twice the one before,
    from 50 ms (a sleep never ends early; a loaded machine only makes them longer)."""
    store = Refusing(tmp_path / "c.sqlite", 4, "unable to open database file")
    store.reconnect_s = 10.0
    try:
        with store.tx(write=False):
            pass
    finally:
        store.close()
    pauses = [b - a for a, b in zip(store.tries, store.tries[1:], strict=False)]
    assert len(pauses) == 4
    for pause, least in zip(pauses, (0.05, 0.1, 0.2, 0.4), strict=True):
        assert pause >= least, pauses


def test_a_transient_error_of_sqlite_keeps_the_other_connections(tmp_path: Path) -> None:
    """A locked database is an error inside a store that is there: only the connection that
    met it is closed, not the others in the pool."""
    store = SQLiteStore(tmp_path / "c.sqlite", pool_size=2)
    try:
        with store.tx(write=False) as a, store.tx(write=False) as b:
            a.one("SELECT 1")
            b.one("SELECT 1")
        assert (store._made, store._pool.qsize()) == (2, 2)
        with pytest.raises(SyncUnavailableError, match="database is locked"), \
                store.tx(write=False):
            raise sqlite3.OperationalError("database is locked")
        assert (store._made, store._pool.qsize()) == (1, 1)
    finally:
        store.close()
