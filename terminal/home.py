"""The terminal's home folder: config, keys and ledger in one place.

``--home DIR`` (or ``LOCALPAY_HOME``) names it. Without one, a service (started by
systemd, or running as root) uses ``/var/lib/localpay`` and a user
``$XDG_DATA_HOME/localpay`` (``~/.local/share/localpay``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_cfg import keys
from firmware_cfg.config import DEFAULT, Config, load
from localpay.errors import KeyFileError, LedgerError
from offline_ledger import Ledger
from terminal.core import Terminal

log = logging.getLogger(__name__)

SERVICE_HOME = Path("/var/lib/localpay")


def default_home() -> Path:
    if os.environ.get("INVOCATION_ID") or os.geteuid() == 0:
        return SERVICE_HOME
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "localpay"


@dataclass(frozen=True)
class Home:
    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / "terminal.toml"

    @property
    def ledger_path(self) -> Path:
        return self.path / "ledger.sqlite"

    def config(self) -> Config:
        """The config file when there is one, the embedded defaults otherwise."""
        if self.config_path.exists():
            return load(self.config_path)
        return DEFAULT

    def key_path(self, config: Config) -> Path:
        return self.path / config.keys.terminal_key

    def terminal_key(self, config: Config, *, create: bool = False) -> Ed25519PrivateKey:
        path = self.key_path(config)
        if create and not path.exists():
            log.info("making a new terminal key at %s", path)
            return keys.generate_terminal_key(path)
        return keys.load_terminal_key(path)

    def token_key(self, config: Config, *, create: bool = False) -> bytes:
        path = self.path / config.keys.token_key
        if create and not path.exists():
            return keys.generate_token_key(path)
        return keys.load_token_key(path)


def open_terminal(
    home: Home,
    config: Config,
    *,
    ledger_path: Path | None = None,
    create_keys: bool = False,
    token_key: bytes | None = None,
) -> Terminal:
    """A terminal over the home's ledger.

    A broken ledger does not stop the terminal from starting: it starts refusing every
    payment with the reason, so the screen can say what is wrong. A missing key does stop
    it (:class:`KeyFileError`), since nothing could be signed.
    """
    key = home.terminal_key(config, create=create_keys)
    if token_key is None:
        token_key = home.token_key(config, create=create_keys)
    path = ledger_path or home.ledger_path
    try:
        ledger = Ledger(path, key=key, terminal_id=config.terminal.id)
    except KeyFileError:
        raise
    except LedgerError as err:
        log.error("ledger %s refused: %s", path, err)
        return Terminal(config, None, token_key, ledger_fault=err)
    return Terminal(config, ledger, token_key)
