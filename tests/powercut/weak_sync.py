"""The ``localpay`` command with its durability weakened: the power-cut proof's negative
controls.

``python -m tests.powercut.weak_sync MODE ARGS...`` runs ``localpay ARGS...`` weakened by
MODE:

- ``NORMAL`` or ``OFF``: every writable ledger's connection is set to
  ``PRAGMA synchronous=MODE`` right after the ledger opened it;
- ``NODIRSYNC``: :func:`localpay.durable.fsync_dir` does nothing, so a file renamed or a
  folder made (the terminal's key on its first boot, the sync state) is durable only as far
  as the file system happens to carry it: the code as it was before the directory fsync.

Test-only: the product has no such switch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from localpay import durable
from offline_ledger import ledger as ledger_module

LEDGER_MODES = ("NORMAL", "OFF")
MODES = (*LEDGER_MODES, "NODIRSYNC")


def weaken(mode: str) -> None:
    if mode not in MODES:
        raise SystemExit(f"weak_sync: mode must be one of {MODES}, not {mode!r}")
    if mode == "NODIRSYNC":
        def no_fsync_dir(folder: str | Path) -> None:
            del folder

        durable.fsync_dir = no_fsync_dir
        return
    opened = ledger_module.Ledger.__init__

    def weakened(self: ledger_module.Ledger, *args: Any, **kwargs: Any) -> None:
        opened(self, *args, **kwargs)
        if self.writable:
            self._conn.execute(f"PRAGMA synchronous={mode}")

    ledger_module.Ledger.__init__ = weakened  # type: ignore[method-assign]


def main() -> None:
    weaken(sys.argv[1])
    sys.argv = ["localpay", *sys.argv[2:]]
    from localpay.cli import main as localpay_main

    localpay_main()


if __name__ == "__main__":
    main()
