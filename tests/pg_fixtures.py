"""Real stacks for the sync and central tests: a throwaway PostgreSQL cluster, the central
service in its own process, and ledgers filled fast.

PostgreSQL: ``initdb`` + ``pg_ctl`` from Debian's postgresql package on a free loopback port,
as the ``postgres`` user when we are root (initdb refuses root). One cluster per test session,
stopped when the session ends. Import the fixtures into a test module with
``from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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

_CLUSTER: PgCluster | None = None


@pytest.fixture(scope="session")
def pg_cluster(request: pytest.FixtureRequest) -> PgCluster:
    """The session's PostgreSQL server (started on first use, stopped at session end)."""
    global _CLUSTER
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
    return cluster.new_database()
