"""The bank's bulk-transfer file (일괄이체) of a day's merchant settlements.

CSV, UTF-8 without a byte-order mark, ``\\r\\n`` line ends, one header line and then one
line per settlement that was posted (``pending``, ``sent``, ``confirmed`` or ``returned``), by
merchant id. Korean banks' bulk-transfer upload templates are fixed columns read by
position under one header row; a header makes the file checkable by eye and costs the
bank's reader one skipped line. The columns, in order::

    seq          순번          1, 2, ... in the file
    bank_code    입금은행코드   3 digits (KFTC bank code: 004 KB, 011 NH, 020 Woori ...)
    account_no   입금계좌번호   digits only (hyphens removed, as upload forms want)
    holder       예금주         the registry's account holder, checked by the bank
    amount       이체금액       whole won, no separators
    note         받는분통장표시  ``LOCALPAY <day>``, shown in the merchant's passbook
    merchant_id  (reference)   ours, for matching the bank's result file
    brn          사업자등록번호  10 digits

No trailer line: a CSV reader would take it for a transfer; the totals are in the run's
answer. A bank whose template wants CP949 takes the file through ``iconv -t CP949``.
The file is written atomically (temporary file, fsync, rename) with mode 0600, by default
as ``settlements/merchants-<day>.csv`` in the data folder; the same day writes the same file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from central import books
from central.csvfiles import write_private_csv
from central.settlement import POSTED, parse_day, settlements_of
from localpay.errors import ConfigError

if TYPE_CHECKING:
    from central.store import Store

FILE_HEADER = ("seq", "bank_code", "account_no", "holder", "amount", "note", "merchant_id",
               "brn")


# -- the bank file -----------------------------------------------------------------------------

def bank_file_rows(store: Store, day: str, *, municipality: str = books.DEFAULT_MUNICIPALITY
                   ) -> list[tuple[Any, ...]]:
    """The lines of ``day``'s bulk-transfer file after its header (:data:`FILE_HEADER`)."""
    posted = [s for s in settlements_of(store, day, municipality=municipality).settlements
              if s.status in POSTED]
    return [(n, s.bank_code, s.account_no.replace("-", ""), s.holder, s.net,
             f"LOCALPAY {s.day}", s.merchant_id, s.brn) for n, s in enumerate(posted, 1)]


def write_bank_file(store: Store, day: str, path: Path, *,
                    municipality: str = books.DEFAULT_MUNICIPALITY) -> int:
    """Write ``day``'s bulk-transfer file (CSV, 0600) atomically and record its path on the
    day's settlements; the number of transfers in it."""
    rows = bank_file_rows(store, day, municipality=municipality)
    try:
        write_private_csv(path, FILE_HEADER, rows)
    except OSError as err:
        raise ConfigError(f"bank file {path} not written: {err}; the settlement of {day} is "
                          "done, run it again to write the file") from err
    with store.tx() as tx:
        tx.run("UPDATE settlements SET file = ? WHERE municipality_id = ? AND day = ? AND "
               f"status IN ({', '.join('?' * len(POSTED))})",
               (str(path), municipality, parse_day(day), *POSTED))
    return len(rows)
