"""CSV files in and out of the service.

Out: a settlement or bank transfer file is read by someone else's system: half a file must
never exist under its name, nor a file other local users can read (it names accounts and
amounts), so it is written whole or not at all. In: the files staff load (merchants, card
balances, riders) are read line by line with the line numbers people see in their editor.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Iterable, Iterator, Sequence
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


def numbered_rows(text: str) -> Iterator[tuple[int, list[str] | str]]:
    """Each non-blank row of a CSV text as (its number, its cells stripped), a byte-order
    mark dropped. The number counts rows as an editor counts lines, a quoted cell that spans
    several physical lines counting as one. A row the csv module cannot read comes as (its
    number, the reason) instead of cells, and reading goes on after it."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    last = 0  # physical lines read so far
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield last + 1, f"not readable as CSV: {err}"
            if reader.line_num <= last:  # pragma: no cover - the reader always moves on
                return
            last = reader.line_num
            continue
        number, last = last + 1, reader.line_num
        cells = [c.strip() for c in row]
        if any(cells):
            yield number, cells
