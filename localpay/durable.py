"""Files that survive a power cut: a rename made durable with its directory.

``os.replace`` swaps a file in atomically, but the new name lives in the directory, and a
directory's change reaches the disk only when the directory itself is fsynced (POSIX; ext4
usually carries it along with a later journal commit, an SD card's FAT or a strict disk
does not). Until then a cut may bring back the old file, or no file at all where there was
none: a terminal's first key, made on its first boot, lost with the ledger it signed.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fsync_dir(folder: str | Path) -> None:
    """Make the names in ``folder`` (files created, renamed or removed in it) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(src: str | Path, dst: str | Path) -> None:
    """``os.replace(src, dst)``, returning once the rename is on the disk; ``src`` must be
    written and fsynced already, and in the same directory as ``dst``."""
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)


def write_durably(path: str | Path, data: str | bytes, *, mode: int = 0o666) -> None:
    """Put ``data`` (text is written as UTF-8) at ``path`` whole, durably: written and
    fsynced under a name of this writer's own, created with ``mode`` (less the umask; 0600
    for a secret, never wider even for a moment), then renamed over ``path``. Two processes
    saving the same file at once (a running terminal's sync and a ``localpay sync`` beside
    it) each rename their own whole file, and the last rename wins; with one shared
    temporary name, one would rename the other's half-written file, or find its own gone.
    A failed write leaves no temporary file."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        replace_durably(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def make_dirs(folder: str | Path, mode: int = 0o777) -> None:
    """``mkdir -p folder`` (``mode`` for the last one, as ``Path.mkdir`` does), each folder
    it made durable in its parent."""
    folder = Path(folder)
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir(mode=mode if made == missing[0] else 0o777, exist_ok=True)
        fsync_dir(made.parent)
