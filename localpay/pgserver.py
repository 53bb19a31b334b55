"""A throwaway PostgreSQL server of our own, for the benchmarks, the tests and the mutation
run: ``initdb`` + ``pg_ctl`` from Debian's postgresql package on a free loopback port, as
the ``postgres`` user when we are root (initdb refuses root)."""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries are missing: apt-get install postgresql")
    return Path(found[-1]).parent


def new_schema(admin_url: str) -> str:
    """Create an empty schema on the server of ``admin_url``; a URL that works inside it."""
    import psycopg

    name = "t_" + secrets.token_hex(6)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return f"{admin_url}?options=-csearch_path%3D{name}"


class PgCluster:
    """A PostgreSQL server of our own in a temporary folder."""

    def __init__(self, *, durable: bool = False) -> None:
        """``durable``: fsync on, as in production (benchmarks); tests run without it."""
        self.durable = durable
        self.bin = _pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="localpay-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w",
                  "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} "
                  f"-c fsync={'on' if self.durable else 'off'} -c max_connections=300",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop("immediate")
        self.start()

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def new_schema(self) -> str:
        """A URL whose connections see only a fresh, empty schema of the ``postgres`` database.

        A test needs a store nobody else has written to, not a database of its own:
        ``CREATE DATABASE`` copies a template and costs 0.2 s, a schema a millisecond, and the
        central tests create hundreds (the mutation run, hundreds per mutant).
        """
        return new_schema(self.url())

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
