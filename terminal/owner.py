"""One process writes a ledger: an advisory lock on a file beside it.

A ledger has exactly one writer. Its ``Ledger`` object keeps the chain's head in memory, so
a second process appending to the same file would build on a stale head: its appends fail
(``UNIQUE`` on ``seq``) and every tap is declined as ``ledger_broken``. Whatever appends
entries (``localpay run``, ``simulate``, ``replay``, ``ledger prune``) therefore takes
:func:`take` first, and a second writer is refused at start with
:class:`LedgerInUseError` naming the holder's process.

The lock is ``flock(2)`` on ``<ledger stem>.lock`` beside the ledger (``ledger.lock`` in a
home folder). The kernel drops it when its holder exits, however it exits, so a crash or
``kill -9`` never leaves it stuck, and the file is never deleted (deleting a lock file lets
two processes each lock a file of that name). The holder writes its PID and what it is in
the file, for the refusal and for a technician's ``cat``::

    1234 localpay run

Readers need no lock: ``ledger show`` and ``verify`` open the file read-only, and a
separate ``localpay sync`` process, which never appends entries, writes only short
single-transaction side tables (synced marks, deny list, balances, points, the clock
anchor) that SQLite's WAL and busy timeout queue behind the writer's commits, as the sync
thread inside ``localpay run`` does.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path

from localpay.errors import LedgerError, LedgerWriteError

#: what this process is, written in the lock file; the command line sets it
_process = {"name": ""}
#: a new holder writes its PID right after locking: how long a refused writer waits to read it
#: (or for a holder that was letting go to be gone)
PID_WAIT_S = 1.0


class LedgerInUseError(LedgerError):
    """Another process holds the ledger for writing. ``pid`` is its process id (0 when the
    lock file did not say), ``holder`` what it is (``localpay run``)."""

    #: the message is a whole sentence for a person: shown without the class name
    sentence = True

    def __init__(self, message: str, pid: int, holder: str) -> None:
        super().__init__(message)
        self.pid = pid
        self.holder = holder


def set_process_name(name: str) -> None:
    """What this process is (``localpay run``), as a refused writer will be told."""
    _process["name"] = name


def process_name() -> str:
    return _process["name"] or os.path.basename(sys.argv[0]) or "python"


def lock_path(ledger_path: Path) -> Path:
    return ledger_path.with_suffix(".lock")


class LedgerOwner:
    """This process's hold on one ledger; :meth:`release` (or exiting) lets it go."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # an emptied file tells a reader nobody holds it; the kernel unlocks on close
            os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> LedgerOwner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def take(ledger_path: Path, what: str, holder: str | None = None) -> LedgerOwner:
    """Hold ``ledger_path`` for writing, or raise :class:`LedgerInUseError`.

    ``what`` names the ledger in the refusal (``the ledger in /var/lib/localpay``).
    """
    lock = lock_path(ledger_path)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise LedgerWriteError(f"cannot open the lock file {lock}: "
                               f"{err.strerror or err}") from err
    deadline = time.monotonic() + PID_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            pid, name = _holder(fd)
            # an empty file: the holder has just locked it and not yet written its PID, or
            # is letting go; either settles within moments
            if pid or time.monotonic() > deadline:
                os.close(fd)
                who = f"process {pid} ({name})" if pid else "another process"
                raise LedgerInUseError(f"{what} is in use by {who}; stop it first", pid,
                                       name) from None
            time.sleep(0.02)
        except OSError as err:
            os.close(fd)
            raise LedgerWriteError(f"cannot lock {lock}: {err.strerror or err}") from err
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {holder or process_name()}\n".encode(), 0)
    except OSError as err:
        os.close(fd)
        raise LedgerWriteError(f"cannot write the lock file {lock}: "
                               f"{err.strerror or err}") from err
    return LedgerOwner(lock, fd)


def _holder(fd: int) -> tuple[int, str]:
    """(pid, what) from a held lock file; (0, "") while it holds no whole line."""
    raw = os.pread(fd, 4096, 0)
    pid, _, name = raw.decode("utf-8", "replace").strip().partition(" ")
    if raw.endswith(b"\n") and pid.isdigit():
        return int(pid), name.strip() or "?"
    return 0, ""
