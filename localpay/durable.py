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


def write_durably(path: str | Path, text: str) -> None:
    """Put ``text`` at ``path`` whole, durably: written and fsynced under a name of this
    writer's own, then renamed over ``path``. Two processes saving the same file at once (a
    running terminal's sync and a ``localpay sync`` beside it) each rename their own
    whole file, and the last rename wins; with one shared temporary name, one would rename
    the other's half-written file, or find its own gone."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
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
