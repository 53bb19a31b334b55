"""A throwaway PostgreSQL server of our own, for the benchmarks, the tests and the mutation
run: ``initdb`` + ``pg_ctl`` from Debian's postgresql package on a free loopback port, as
the ``postgres`` user when we are root (initdb refuses root).

For the failover and backup tests: a streaming standby made with ``pg_basebackup -R``, a
primary that waits for it (:func:`sync_primary_settings`), promotion, the loss of a server
(SIGKILL to all its processes), WAL archiving into a folder and a restore from a base backup
and that archive."""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
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


def run_as_postgres(*cmd: str) -> None:
    """Run ``cmd``, as the ``postgres`` user when we are root (the server refuses root)."""
    full = list(cmd)
    if os.geteuid() == 0:
        full = ["runuser", "-u", "postgres", "--", *full]
    subprocess.run(full, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def pg_folder(prefix: str) -> Path:
    """A new temporary folder the server's user owns (data, base backups, WAL archives)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    return path


def new_schema(admin_url: str) -> str:
    """Create an empty schema on the server of ``admin_url``; a URL that works inside it."""
    import psycopg

    name = "t_" + secrets.token_hex(6)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return f"{admin_url}?options=-csearch_path%3D{name}"


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command's name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


class PgCluster:
    """A PostgreSQL server of our own in a temporary folder."""

    def __init__(self, *, durable: bool = False, settings: Mapping[str, str] | None = None,
                 make: Callable[[PgCluster], None] | None = None) -> None:
        """``durable``: fsync on, as in production (benchmarks); tests run without it.
        ``settings``: server settings given at every start (``-c name=value``). ``make``
        fills the empty data folder instead of ``initdb`` (a base backup, a restore)."""
        self.durable = durable
        self.settings = dict(settings or {})
        self.bin = _pg_bin()
        self.dir = pg_folder("localpay-pg-")
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if make is None:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E",
                      "UTF8", "--locale=C.UTF-8", "--no-sync")
        else:
            make(self)
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        run_as_postgres(str(self.bin / tool), *args)

    def start(self) -> None:
        # pg_ctl hands these options to a shell
        extra = "".join(f" -c {shlex.quote(f'{k}={v}')}" for k, v in self.settings.items())
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w",
                  "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} "
                  f"-c fsync={'on' if self.durable else 'off'} -c max_connections=300{extra}",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop("immediate")
        self.start()

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def cpu_seconds(self) -> float | None:
        """CPU seconds (user and system) the server's processes have used so far: the
        postmaster, its live processes (backends, WAL writer, checkpointer) and those it has
        reaped. None where ``/proc`` cannot tell (not Linux, or the server is not running).
        A backend reaped between the two reads is counted twice, so it is good to a
        backend's worth: what a benchmark needs to say where its CPU went."""
        try:
            postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for name in os.listdir("/proc"):
            if name.isdigit() and name != str(postmaster):
                fields = _proc_stat(int(name))
                if fields is not None and int(fields[1]) == postmaster:
                    total += int(fields[11]) + int(fields[12])  # utime, stime
        fields = _proc_stat(postmaster)  # read last: a child reaped meanwhile is in cutime
        if fields is None:
            return None
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        return total / tick

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

    # -- replication, failover, backups ------------------------------------------------------

    @classmethod
    def standby_of(cls, primary: PgCluster, name: str) -> PgCluster:
        """A streaming standby of ``primary``, made by ``pg_basebackup -R`` (which writes
        ``primary_conninfo`` and ``standby.signal``); ``name`` is its ``application_name``,
        what the primary's ``synchronous_standby_names`` lists."""

        def make(standby: PgCluster) -> None:
            standby._run("pg_basebackup", "-D", str(standby.data), "-d",
                         f"host=127.0.0.1 port={primary.port} user=postgres "
                         f"application_name={name}", "-R", "-X", "stream", "-c", "fast",
                         "--no-sync")

        return cls(durable=primary.durable, make=make)

    @classmethod
    def restored(cls, backup: Path, archive: Path) -> PgCluster:
        """A server restored from the base backup in ``backup`` and replayed to the end of
        the WAL archive in ``archive``: the backup copied, ``restore_command`` added to its
        ``postgresql.conf`` and ``recovery.signal`` made. With no recovery target it replays
        every archived segment, then ends recovery and takes writes."""

        def make(server: PgCluster) -> None:
            run_as_postgres("cp", "-a", str(backup), str(server.data))
            with open(server.data / "postgresql.conf", "a", encoding="utf-8") as conf:
                conf.write(restore_conf(archive))
            run_as_postgres("touch", str(server.data / "recovery.signal"))

        server = cls(make=make)
        server.wait_writable()
        return server

    def base_backup(self, dest: Path) -> None:
        """``pg_basebackup`` of this server into the empty or missing folder ``dest`` (which
        the server's user may write), with the WAL it needs to be consistent."""
        self._run("pg_basebackup", "-D", str(dest), "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", "postgres", "-X", "stream", "-c", "fast", "--no-sync")

    def promote(self) -> None:
        """End a standby's recovery: it takes writes from now on (``pg_ctl promote``)."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "promote")

    def kill(self) -> None:
        """The loss of the server: SIGKILL to the postmaster and every process it started,
        at once, as a machine that dies takes them all (stopped first, so that it forks
        nothing new meanwhile)."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGSTOP)
        children = [p for p in _processes() if _parent(p) == pid]
        os.kill(pid, signal.SIGKILL)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in (pid, *children)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL processes of {self.data} outlived SIGKILL")
            time.sleep(0.01)

    def query(self, sql: str, db: str = "postgres") -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(self.url(db), autocommit=True) as conn:
            return [tuple(r) for r in conn.execute(sql).fetchall()]

    def wait_writable(self, timeout: float = 60.0) -> None:
        """Wait until recovery has ended: a server replaying WAL answers reads before it
        takes writes (``pg_ctl start -w`` returns at the first)."""
        deadline = time.monotonic() + timeout
        while self.query("SELECT pg_is_in_recovery()") != [(False,)]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.data} still replays WAL after {timeout:.0f} s")
            time.sleep(0.05)

    def wait_sync_standby(self, name: str, timeout: float = 30.0) -> None:
        """Wait until the standby ``name`` streams from this server as its synchronous
        standby (``pg_stat_replication.sync_state = 'sync'``)."""
        deadline = time.monotonic() + timeout
        while self.query(f"SELECT 1 FROM pg_stat_replication WHERE application_name = "
                         f"'{name}' AND sync_state = 'sync' AND state = 'streaming'") == []:
            if time.monotonic() > deadline:
                raise RuntimeError(f"standby {name} is not a synchronous standby after "
                                   f"{timeout:.0f} s")
            time.sleep(0.05)

    def archive_all(self, timeout: float = 30.0) -> str:
        """Close the current WAL segment (``pg_switch_wal()``) and wait until the archiver
        has copied it: everything committed so far is then in the archive. Its file name."""
        segment = str(self.query("SELECT pg_walfile_name(pg_switch_wal())")[0][0])
        deadline = time.monotonic() + timeout
        while True:
            done = self.query("SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver")
            if done[0][0] is not None and str(done[0][0]) >= segment:
                return segment
            if time.monotonic() > deadline:
                raise RuntimeError(f"WAL segment {segment} not archived after {timeout:.0f} s "
                                   f"(last failed: {done[0][1]})")
            time.sleep(0.05)


def sync_primary_settings(standby: str) -> dict[str, str]:
    """A primary that answers a commit only once ``standby`` has applied it."""
    return {"wal_level": "replica", "synchronous_standby_names": f"FIRST 1 ({standby})",
            "synchronous_commit": "remote_apply"}


def archive_settings(archive: Path) -> dict[str, str]:
    """WAL archiving into the folder ``archive``; a segment already there is never
    overwritten (the command fails, and the server retries and says so in its log)."""
    return {"wal_level": "replica", "archive_mode": "on",
            "archive_command": f"test ! -f {archive}/%f && cp %p {archive}/%f"}


def restore_conf(archive: Path) -> str:
    """The lines a restored server's ``postgresql.conf`` gets: where archived WAL is."""
    return f"\nrestore_command = 'cp {archive}/%f %p'\nrecovery_target_timeline = 'latest'\n"


def multi_host_url(*servers: PgCluster, db: str = "postgres") -> str:
    """One URL for all ``servers``: libpq tries each in turn and keeps the one that takes
    writes (``target_session_attrs=read-write``), which after a failover is the new
    primary."""
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in servers)
    return f"postgresql://postgres@{hosts}/{db}?target_session_attrs=read-write"


def _processes() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _stat(pid: int) -> list[str]:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return text[text.rindex(")") + 2:].split()  # the command name may hold spaces


def _parent(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[1]) if fields else 0


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] not in ("Z", "X")
