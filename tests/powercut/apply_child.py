"""The workload of the config cuts: install signed bundles one after another, as a terminal
does when central pushes them (``terminal.config_update.install``, the real code).

``python -m tests.powercut.apply_child HOME BUNDLES`` installs every ``BUNDLES/<version>.bundle``
newer than the home's installed version, in order, and prints ``applied <version>`` once
``install`` has returned for it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from firmware_cfg import bundle as bundles
from terminal.config_update import install
from terminal.home import Home, open_terminal


def main() -> None:
    home = Home(Path(sys.argv[1]))
    terminal = open_terminal(home, home.config(), strict=True)
    try:
        for path in sorted(Path(sys.argv[2]).glob("*.bundle"), key=lambda p: int(p.stem)):
            if int(path.stem) <= bundles.current_version(home.path):
                continue
            install(terminal, home, path.read_bytes())
            sys.stdout.write(f"applied {int(path.stem)}\n")
            sys.stdout.flush()
    finally:
        if terminal.ledger is not None:
            terminal.ledger.close()


if __name__ == "__main__":
    main()
