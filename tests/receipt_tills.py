"""A till for the receipt tests: its ledger, its terminal on a fixed clock, its reader."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.virtual import VirtualReader
from firmware_cfg.config import Config, dumps
from firmware_cfg.keys import DEMO_TOKEN_KEY
from offline_ledger import Ledger
from terminal.clock import ClockTrust
from terminal.core import Terminal

NOW = 1_800_000_000.0  # 2027-01-15 17:00:00 in Seoul, a Friday

Till = tuple[Terminal, Ledger, VirtualReader]


def till_home(tmp_path: Path, config: Config) -> Path:
    """A terminal's home folder under ``tmp_path`` holding ``config`` as its terminal.toml."""
    folder = tmp_path / "home"
    folder.mkdir()
    (folder / "terminal.toml").write_text(dumps(config), encoding="utf-8")
    return folder


@contextmanager
def open_till(ledger_path: Path, config: Config,
              prepare: Callable[[Ledger], None] | None = None) -> Iterator[Till]:
    """``config``'s till on a new ledger at ``ledger_path`` (``prepare`` fills it before the
    terminal opens), its clock fixed at :data:`NOW` and trusted."""
    ledger = Ledger(ledger_path, key=Ed25519PrivateKey.generate(),
                    terminal_id=config.terminal.id)
    if prepare is not None:
        prepare(ledger)
    terminal = Terminal(config, ledger, DEMO_TOKEN_KEY, clock=lambda: NOW,
                        clock_trust=ClockTrust(ledger, wall=lambda: NOW, ntp=lambda: True))
    reader = VirtualReader()
    try:
        yield terminal, ledger, reader
    finally:
        reader.close()
        ledger.close()
