"""A real ``localpay central serve`` on a free loopback port, and terminals provisioned
against it through the real CLI (``central enroll``, then ``provision``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from click.testing import CliRunner, Result

from localpay.cli import cli
from tests.pg_fixtures import CentralProcess, start_central


def start_localpay_central(db: str, data: Path, *, timeout: float = 30.0) -> CentralProcess:
    """``python -m localpay central serve --init`` (the ``localpay`` entry point) on a free
    port: its first start makes the log key and the store's schema."""
    return start_central(db, data, timeout=timeout,
                         command=("-m", "localpay", "central", "serve", "--init"))


@contextlib.contextmanager
def localpay_central(db: str, data: Path) -> Iterator[CentralProcess]:
    server = start_localpay_central(db, data)
    try:
        yield server
    finally:
        server.stop()


def issue_code(srv: CentralProcess, *args: str) -> str:
    result = CliRunner().invoke(cli, ["central", "enroll", "--db", srv.db, "--data",
                                      str(srv.data), *args])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def provision(home: Path, srv: CentralProcess, code: str, *args: str) -> Result:
    """``localpay provision`` with the code on its standard input (never on the command
    line, where ``ps`` shows it)."""
    return CliRunner().invoke(cli, ["--home", str(home), "provision", "--central", srv.url,
                                    *args], input=code + "\n")
