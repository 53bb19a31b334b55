"""Real stacks for the sync and central tests: a throwaway PostgreSQL cluster, the central
service in its own process, and ledgers filled fast.

PostgreSQL: ``initdb`` + ``pg_ctl`` from Debian's postgresql package on a free loopback port,
as the ``postgres`` user when we are root (initdb refuses root). One cluster per test session,
stopped when the session ends. Import the fixtures into a test module with
``from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401``.

``LOCALPAY_TEST_PG_URL`` names a server that is already running instead: the mutation run
(``tools/mutation.py``) starts one for all its thousands of short test sessions, where a
cluster each would cost more than the tests. Such a server is shared, so it is never
stopped or restarted from here.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from localpay.cli.bench.stacks import (  # noqa: F401 - re-exported for the tests
    ROOT,
    CentralProcess,
    PgCluster,
    central,
    fill_ledger,
    free_port,
    new_terminal_key,
    signed_entries,
    start_central,
)
from localpay.pgserver import new_schema

_CLUSTER: PgCluster | None = None


class ExternalPg:
    """A running server given by URL: fresh databases on it, nothing else."""

    def __init__(self, url: str) -> None:
        self.admin_url = url

    def url(self, db: str = "postgres") -> str:
        return self.admin_url.rsplit("/", 1)[0] + "/" + db

    def new_database(self) -> str:
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def new_schema(self) -> str:
        return new_schema(self.admin_url)

    def restart(self) -> None:
        raise RuntimeError("a shared PostgreSQL server (LOCALPAY_TEST_PG_URL) is not restarted")


@pytest.fixture(scope="session")
def pg_cluster(request: pytest.FixtureRequest) -> PgCluster | ExternalPg:
    """The session's PostgreSQL server (started on first use, stopped at session end)."""
    global _CLUSTER
    if os.environ.get("LOCALPAY_TEST_PG_URL"):
        return ExternalPg(os.environ["LOCALPAY_TEST_PG_URL"])
    if _CLUSTER is None:
        _CLUSTER = PgCluster()
        request.config.add_cleanup(_destroy_cluster)
    return _CLUSTER


def _destroy_cluster() -> None:
    global _CLUSTER
    if _CLUSTER is not None:
        _CLUSTER.destroy()
        _CLUSTER = None


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty central store of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'central.sqlite'}"
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.new_schema()


@contextlib.contextmanager
def central_with_terminal(folder: Path, terminal_id: str) -> Iterator[
        tuple[CentralProcess, Ed25519PrivateKey, str, Path]]:
    """A real ``central serve`` on a SQLite store in ``folder`` where ``terminal_id`` is
    registered with a new key: (server, key, store URL, data folder)."""
    from central import open_service
    from firmware_cfg.keys import public_hex

    db, data = f"sqlite:///{folder / 'central.sqlite'}", folder / "data"
    key = new_terminal_key()
    svc = open_service(db, data)
    svc.add_terminal(terminal_id, bytes.fromhex(public_hex(key)))
    svc.store.close()
    with central(db, data) as server:
        yield server, key, db, data
