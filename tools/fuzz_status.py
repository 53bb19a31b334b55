"""Fuzz a terminal's status report parser (``sync.status_report``): any bytes give the
software and faults, or SyncProtocolError; whatever parses is written back the same.

Run: ``python tools/fuzz_status.py -max_total_time=60`` (libFuzzer options, via atheris).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from localpay.errors import SyncProtocolError
    from sync.status_report import parse_status, status_body


def test_one_input(data: bytes) -> None:
    try:
        software, faults = parse_status(data)
    except SyncProtocolError:
        return
    again = parse_status(status_body([(f["cause"], f["detail"]) for f in faults], software))
    if again != (software, faults):
        raise AssertionError(f"a report does not read back as written: {data!r}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
