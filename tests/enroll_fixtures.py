"""A real ``localpay central serve`` on a free loopback port, and terminals provisioned
against it through the real CLI (``central enroll``, then ``provision``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from click.testing import CliRunner, Result

from terminal.cli import cli
from tests.pg_fixtures import ROOT, CentralProcess, free_port


def start_localpay_central(db: str, data: Path, *, timeout: float = 30.0) -> CentralProcess:
    """``python -m terminal central serve`` (the ``localpay`` entry point) on a free port."""
    port = free_port()
    data.mkdir(parents=True, exist_ok=True)
    log_path = data / f"serve-{port}.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "terminal", "central", "serve", "--db", db, "--data",
             str(data), "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env,
            cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"central serve exited: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"central serve did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.05)
    return CentralProcess(url, port, data, db, proc, log_path)


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
    return CliRunner().invoke(cli, ["--home", str(home), "provision", "--central", srv.url,
                                    "--enroll-code", code, *args])
