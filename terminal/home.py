"""The terminal's home folder: config, keys and ledger in one place.

``--home DIR`` (or ``LOCALPAY_HOME``) names it. Without one, a service (started by
systemd, or running as root) uses ``/var/lib/localpay`` and a user
``$XDG_DATA_HOME/localpay`` (``~/.local/share/localpay``).

Its ledger has one writer (:mod:`terminal.owner`): :func:`open_terminal` and
:meth:`Home.open_ledger` take ``ledger.lock`` before touching keys or ledger, and the
ledger they return lets it go when it is closed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_cfg import keys
from firmware_cfg.bundle import current_version
from firmware_cfg.config import DEFAULT, SIGNED_FILE, Config, load
from localpay.errors import ConfigError, KeyFileError, LedgerError
from offline_ledger import Ledger
from terminal import owner
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

    @property
    def lock_path(self) -> Path:
        return owner.lock_path(self.ledger_path)

    @property
    def provisioned(self) -> bool:
        """Whether central enrolled this terminal (a signed config was applied): its
        ledger is then real money, and test taps must go elsewhere."""
        return current_version(self.path) > 0

    def own(self, ledger_path: Path | None = None, holder: str | None = None) -> owner.LedgerOwner:
        """This process becomes the one writer of ``ledger_path`` (default: the home's), or
        :class:`~terminal.owner.LedgerInUseError` names the process that is."""
        path = ledger_path or self.ledger_path
        what = (f"the ledger in {self.path}" if path.resolve() == self.ledger_path.resolve()
                else f"the ledger {path}")
        return owner.take(path, what, holder)

    def open_ledger(self, key: Ed25519PrivateKey, terminal_id: str, *,
                    ledger_path: Path | None = None, hold: owner.LedgerOwner | None = None,
                    holder: str | None = None) -> Ledger:
        """The ledger for writing, held by this process until it is closed (``hold``: a
        hold :meth:`own` gave already, which the ledger then keeps)."""
        if hold is None:
            hold = self.own(ledger_path, holder)
        return _owned(hold, ledger_path or self.ledger_path, key, terminal_id)

    def config(self) -> Config:
        """The config file when there is one, the embedded defaults otherwise."""
        if self.config_path.exists():
            return load(self.config_path)
        if (self.path / SIGNED_FILE).exists():
            # A provisioned home whose file was deleted must not fall back to the embedded
            # defaults (their fares and limits are the demo's, not the signed ones).
            raise ConfigError(f"{self.config_path} is missing but {self.path / SIGNED_FILE} "
                              "says this terminal runs a signed config: restore the file, "
                              "or apply the bundle again")
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
    strict: bool = False,
) -> Terminal:
    """A terminal over the home's ledger.

    This process becomes the ledger's one writer first (before keys are made, so two
    starts on a fresh home do not race to make them): another writer raises
    :class:`~terminal.owner.LedgerInUseError`; closing the terminal's ledger lets it go.

    A broken ledger does not stop the terminal from starting: it starts refusing every
    payment with the reason, so the screen can say what is wrong (and the log, for the
    service's journal). With ``strict`` (a command that would only report it) the
    :class:`LedgerError` is raised instead, and logged by no one but the caller. A missing
    key does stop it (:class:`KeyFileError`), since nothing could be signed.
    """
    path = ledger_path or home.ledger_path
    hold = home.own(path)
    try:
        key = home.terminal_key(config, create=create_keys)
        tokens = token_key if token_key is not None else home.token_key(config,
                                                                         create=create_keys)
    except BaseException:
        hold.release()
        raise
    try:
        ledger = _owned(hold, path, key, config.terminal.id)  # released on failure
    except KeyFileError:
        raise
    except LedgerError as err:
        if strict:
            raise
        log.error("ledger %s refused: %s", path, err)
        return Terminal(config, None, tokens, ledger_fault=err)
    return Terminal(config, ledger, tokens)


class _OwnedLedger(Ledger):
    """A writable ledger that lets go of this process's hold on it when it is closed."""

    hold: owner.LedgerOwner

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.hold.release()


def _owned(hold: owner.LedgerOwner, path: Path, key: Ed25519PrivateKey,
           terminal_id: str) -> Ledger:
    try:
        ledger = _OwnedLedger(path, key=key, terminal_id=terminal_id)
    except BaseException:
        hold.release()
        raise
    ledger.hold = hold
    return ledger
