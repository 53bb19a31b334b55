"""Files that leave the service for a bank or an auditor: written whole or not at all.

A settlement or bank transfer file is read by someone else's system: half a file must never
exist under its name, nor a file other local users can read (it names accounts and amounts).
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def write_private_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a CSV (UTF-8, CRLF line ends as RFC 4180 and banks' upload forms want, mode
    0600, its folder 0700 when made) through a temporary file renamed over ``path`` after an
    fsync. Raises OSError, leaving nothing behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out, lineterminator="\r\n")
            writer.writerow(header)
            writer.writerows(rows)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
