"""A pass-through FUSE file system that forgets what was never made durable (like LazyFS).

Run as ``python -m tests.powercut.fs BACKING MOUNT [--cut-at N --mode drop|torn --seed S]``.
It serves ``BACKING/root`` at ``MOUNT``. Every write reaches the backing file at once (so
reads, and SQLite's mmapped ``-shm``, see it, as they would see the page cache), and is also
kept apart, with the bytes it covered, until the file's next ``fsync``/``fdatasync``.

The model of the disk:

- **Data**: a file's writes and truncations since its last ``fsync`` (or ``fdatasync``) of any
  of its descriptors are volatile. ``fsync`` makes all of them durable; nothing else does.
- **Names**: a create, unlink, rename or mkdir is volatile until its directory is fsynced
  (both directories for a rename). This is the strict POSIX model, stricter than ext4 (whose
  journal commit on a file's fsync usually carries the directory entry with it): a file
  created, written and fsynced but whose directory was never fsynced vanishes on a cut.
  ``rmdir``, ``chmod``, ``chown`` and times are passed through and treated as durable.
- **A cut** happens at the N-th write call (``write`` or ``truncate``, counted from the
  mount): that call is blocked, never applied; the process prints ``cut N`` on stdout and
  waits for a line on stdin (the harness kills the workload in between); from then on every
  mutating call fails with EIO, as on a machine that has lost power. When the file system is
  then unmounted, the backing folder is rolled back to what a disk would hold:

  - ``drop``: every volatile write and name operation is undone;
  - ``torn``: each file keeps a random prefix of its volatile writes, cut into 512-byte
    sectors (so the last kept write may be torn mid-write at a sector boundary), and the
    volatile name operations keep a random prefix too.

Without ``--cut-at`` (or with 0) an unmount is a clean shutdown: everything stays.
On exit the process prints one JSON line of figures (writes seen, units kept and dropped).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import mfusepy

SECTOR = 512


@dataclass(frozen=True)
class Write:
    offset: int
    data: bytes
    #: what the write covered before: shorter than ``data`` where it extended the file
    old: bytes
    old_size: int


@dataclass(frozen=True)
class Truncate:
    length: int
    old_size: int
    #: what a shrinking truncate cut off
    old_tail: bytes


DataOp = Write | Truncate


@dataclass
class NameOp:
    kind: str  # create | unlink | rename | mkdir
    path: str  # relative to the root
    other: str = ""  # a rename's new name
    #: where an unlinked (or overwritten-by-rename) file waits, so a cut can bring it back
    grave: str = ""
    #: directories still to be fsynced before this operation is durable
    dirs: set[str] = field(default_factory=set)


def _parent(rel: str) -> str:
    return os.path.dirname(rel.strip("/"))


def sector_units(ops: list[DataOp]) -> Iterator[DataOp]:
    """The volatile operations in order, writes cut at 512-byte sector boundaries: what a disk
    may have persisted a prefix of."""
    for op in ops:
        if isinstance(op, Truncate):
            yield op
            continue
        start, end = op.offset, op.offset + len(op.data)
        while start < end:
            stop = min(end, (start // SECTOR + 1) * SECTOR)
            piece = op.data[start - op.offset:stop - op.offset]
            yield Write(start, piece, b"", 0)
            start = stop


class PowerCutFS(mfusepy.Operations):
    use_ns = True

    def __init__(self, root: str, grave: str, cut_at: int = 0) -> None:
        self.root = root
        self.grave = grave
        self.cut_at = cut_at
        self.writes = 0
        self.fsyncs = 0
        self.cut = False
        self._lock = threading.Lock()
        self._graves = 0
        self.data: dict[int, list[DataOp]] = {}
        self.names: list[NameOp] = []

    # -- paths and the cut ----------------------------------------------------------------

    def _full(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _new_grave(self) -> str:
        self._graves += 1
        return os.path.join(self.grave, str(self._graves))

    def _alive(self) -> None:
        if self.cut:
            raise mfusepy.FuseOSError(errno.EIO)

    def _boundary(self) -> None:
        """Count one write call; the cut_at-th one is where the power goes."""
        with self._lock:
            self._alive()
            self.writes += 1
            if self.writes != self.cut_at:
                return
            self.cut = True
        # Outside the lock: reads go on while the harness kills the workload, which is
        # blocked in this very call, so it cannot have seen the write complete.
        sys.stdout.write(f"cut {self.writes}\n")
        sys.stdout.flush()
        sys.stdin.readline()
        raise mfusepy.FuseOSError(errno.EIO)

    # -- the life cycle --------------------------------------------------------------------

    def init(self, path: str) -> None:
        sys.stdout.write("ready\n")
        sys.stdout.flush()

    # -- reading ---------------------------------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        try:
            st = os.fstat(fh) if fh is not None else os.lstat(self._full(path))
        except OSError as err:
            raise mfusepy.FuseOSError(err.errno) from None
        keys = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size")
        attrs: dict[str, Any] = {k: getattr(st, k) for k in keys}
        attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        return attrs

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._full(path))]

    def access(self, path: str, amode: int) -> int:
        if not os.access(self._full(path), amode):
            raise mfusepy.FuseOSError(errno.EACCES)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self._full(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files",
                "f_flag", "f_frsize", "f_namemax")
        return {k: getattr(st, k) for k in keys}

    def open(self, path: str, flags: int) -> int:
        full = self._full(path)
        if flags & os.O_TRUNC:
            self.truncate(path, 0)
        # the kernel gives every write its offset, O_APPEND included; and a write-only
        # descriptor is opened read-write here, to keep the bytes each write covers
        flags &= ~(os.O_TRUNC | os.O_CREAT | os.O_EXCL | os.O_APPEND)
        if flags & os.O_ACCMODE == os.O_WRONLY:
            flags = flags & ~os.O_ACCMODE | os.O_RDWR
        return os.open(full, flags)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def flush(self, path: str, fh: int) -> int:
        return 0

    def release(self, path: str, fh: int) -> int:
        os.close(fh)
        return 0

    # -- data ------------------------------------------------------------------------------

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        self._boundary()
        with self._lock:
            self._alive()
            st = os.fstat(fh)
            old = os.pread(fh, len(data), offset)
            written = os.pwrite(fh, data, offset)
            self.data.setdefault(st.st_ino, []).append(
                Write(offset, bytes(data[:written]), old[:written], st.st_size))
        return written

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        self._boundary()
        with self._lock:
            self._alive()
            fd = fh if fh is not None else os.open(self._full(path), os.O_RDWR)
            try:
                st = os.fstat(fd)
                tail = os.pread(fd, st.st_size - length, length) if length < st.st_size else b""
                os.ftruncate(fd, length)
            finally:
                if fh is None:
                    os.close(fd)
            self.data.setdefault(st.st_ino, []).append(Truncate(length, st.st_size, tail))
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        with self._lock:
            self._alive()
            self.fsyncs += 1
            self.data.pop(os.fstat(fh).st_ino, None)
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        rel = path.strip("/")
        with self._lock:
            self._alive()
            for op in self.names:
                op.dirs.discard(rel)
            self.names = [op for op in self.names if op.dirs]
        return 0

    # -- names -----------------------------------------------------------------------------

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        full = self._full(path)
        with self._lock:
            self._alive()
            existed = os.path.lexists(full)
            fd = os.open(full, os.O_RDWR | os.O_CREAT, mode)
            if not existed:
                self.names.append(NameOp("create", path.strip("/"), dirs={_parent(path)}))
        return fd

    def mkdir(self, path: str, mode: int) -> int:
        with self._lock:
            self._alive()
            os.mkdir(self._full(path), mode)
            self.names.append(NameOp("mkdir", path.strip("/"), dirs={_parent(path)}))
        return 0

    def rmdir(self, path: str) -> int:
        with self._lock:
            self._alive()
            os.rmdir(self._full(path))
        return 0

    def unlink(self, path: str) -> int:
        with self._lock:
            self._alive()
            grave = self._new_grave()
            os.rename(self._full(path), grave)
            self.names.append(NameOp("unlink", path.strip("/"), grave=grave,
                                     dirs={_parent(path)}))
        return 0

    def rename(self, old: str, new: str) -> int:
        with self._lock:
            self._alive()
            full_new = self._full(new)
            replaced = ""
            if os.path.lexists(full_new) and not os.path.isdir(full_new):
                replaced = self._new_grave()
                os.rename(full_new, replaced)
            os.rename(self._full(old), full_new)
            self.names.append(NameOp("rename", old.strip("/"), other=new.strip("/"),
                                     grave=replaced, dirs={_parent(old), _parent(new)}))
        return 0

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._full(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._full(path), uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        if times is None:
            os.utime(self._full(path))
        else:
            os.utime(self._full(path), ns=times)
        return 0

    # -- the cut ---------------------------------------------------------------------------

    def roll_back(self, mode: str, rng: random.Random) -> dict[str, int]:
        """Turn the backing folder into what the disk holds after the cut (see the module
        docstring). Call only once the file system is unmounted."""
        figures = {"name_ops_volatile": len(self.names), "name_ops_kept": 0,
                   "sectors_volatile": 0, "sectors_kept": 0, "files_touched": 0}
        keep_names = 0 if mode == "drop" else rng.randint(0, len(self.names))
        figures["name_ops_kept"] = keep_names
        for op in reversed(self.names[keep_names:]):
            self._undo_name(op)
        where = self._inodes()
        for ino, ops in self.data.items():
            path = where.get(ino)
            if path is None:  # its creation was undone, or it was unlinked for good
                continue
            units = list(sector_units(ops))
            keep = 0 if mode == "drop" else rng.randint(0, len(units))
            figures["sectors_volatile"] += len(units)
            figures["sectors_kept"] += keep
            figures["files_touched"] += 1
            fd = os.open(path, os.O_RDWR)
            try:
                for data_op in reversed(ops):
                    _undo(fd, data_op)
                for unit in units[:keep]:
                    _redo(fd, unit)
            finally:
                os.close(fd)
        return figures

    def _undo_name(self, op: NameOp) -> None:
        full = self._full(op.path)
        if op.kind == "create":
            if os.path.lexists(full):
                os.rename(full, self._new_grave())
        elif op.kind == "mkdir":
            shutil.rmtree(full, ignore_errors=True)
        elif op.kind == "unlink":
            os.rename(op.grave, full)
        elif op.kind == "rename":
            os.rename(self._full(op.other), full)
            if op.grave:
                os.rename(op.grave, self._full(op.other))

    def _inodes(self) -> dict[int, str]:
        found: dict[int, str] = {}
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                path = os.path.join(folder, name)
                found[os.lstat(path).st_ino] = path
        return found


def _undo(fd: int, op: DataOp) -> None:
    if isinstance(op, Write):
        os.pwrite(fd, op.old, op.offset)
        os.ftruncate(fd, op.old_size)
    else:
        os.ftruncate(fd, op.old_size)
        if op.old_tail:
            os.pwrite(fd, op.old_tail, op.length)


def _redo(fd: int, op: DataOp) -> None:
    if isinstance(op, Write):
        os.pwrite(fd, op.data, op.offset)
    else:
        os.ftruncate(fd, op.length)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backing")
    parser.add_argument("mount")
    parser.add_argument("--cut-at", type=int, default=0,
                        help="cut at this write call (1-based); 0: never")
    parser.add_argument("--mode", choices=["drop", "torn"], default="drop")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = os.path.join(args.backing, "root")
    grave = os.path.join(args.backing, "grave")
    os.makedirs(root, exist_ok=True)
    shutil.rmtree(grave, ignore_errors=True)
    os.makedirs(grave)
    fs = PowerCutFS(root, grave, args.cut_at)
    # direct_io stays off: SQLite mmaps the -shm file, which needs the page cache
    mfusepy.FUSE(fs, args.mount, foreground=True, fsname="powercut")
    figures: dict[str, Any] = {"writes": fs.writes, "fsyncs": fs.fsyncs, "cut": fs.cut}
    if fs.cut:
        figures.update(fs.roll_back(args.mode, random.Random(args.seed)))
    shutil.rmtree(grave, ignore_errors=True)
    sys.stdout.write(json.dumps(figures) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
