"""Installing a signed config bundle on a running terminal, recorded in its ledger."""

from __future__ import annotations

import logging
from collections.abc import Callable

from firmware_cfg import bundle as bundles
from firmware_cfg.config import Config
from firmware_cfg.keys import public_from_hex
from localpay.errors import ConfigError, LedgerError
from terminal.core import Terminal
from terminal.home import Home

log = logging.getLogger(__name__)


def can_start(home: Home) -> Callable[[Config], None]:
    """The default start check: the keys the new config names load, and so does the ledger."""

    def check(config: Config) -> None:
        from offline_ledger import Ledger

        key = home.terminal_key(config)
        home.token_key(config)
        Ledger(home.ledger_path, key=key, terminal_id=config.terminal.id).close()

    return check


def install(terminal: Terminal, home: Home, data: bytes,
            start_check: Callable[[Config], None] | None = None) -> bundles.Bundle:
    """Verify ``data`` against the operator key, apply it, and record a ``config_change``.

    Refusals (bad signature, older version, another terminal's bundle, a config the
    terminal cannot start with) raise :class:`ConfigError` and change nothing.
    """
    running = terminal.config
    if not running.keys.operator_public_key:
        raise ConfigError("keys.operator_public_key is not set: this terminal accepts no "
                          "config bundles until it is provisioned")
    operator = public_from_hex(running.keys.operator_public_key, "keys.operator_public_key")
    bundle = bundles.verify(data, operator, running.terminal.id,
                            bundles.current_version(home.path))
    if bundle.config.keys.operator_public_key != running.keys.operator_public_key:
        log.warning("config version %d changes the operator key", bundle.version)
    bundles.apply(home.path, bundle, start_check or can_start(home))
    if terminal.ledger is not None:
        try:
            terminal.ledger.append("config_change", place=running.terminal.place,
                                   detail={"version": bundle.version, "sha256": bundle.sha256})
        except LedgerError as err:
            # The file is in place and valid; the record is what failed. Say so loudly.
            log.error("config version %d applied but not recorded: %s", bundle.version, err)
            raise
    terminal.reconfigure(bundle.config)
    return bundle


PENDING = "config.pending"


def save_pending(home: Home, version: int, body: str) -> bool:
    """Keep a bundle the sync client fetched until the terminal's own writer applies it.

    Only the process that appends to the ledger may record the change, so the sync side
    never applies: it leaves the bundle here. Returns False when ``version`` is not newer
    than the running config (nothing to do).
    """
    if not body or version <= bundles.current_version(home.path):
        return False
    path = home.path / PENDING
    tmp = path.with_name(PENDING + ".new")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(path)
    log.info("config version %d fetched; waiting to be applied", version)
    return True


def apply_pending(terminal: Terminal, home: Home,
                  start_check: Callable[[Config], None] | None = None) -> bundles.Bundle | None:
    """Apply a fetched bundle, if one waits, between transactions; ``None`` if none did.

    A refused bundle (bad signature, not newer, cannot start) is set aside as
    ``config.rejected`` with the reason logged, and the running config stays.
    """
    path = home.path / PENDING
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        applied = install(terminal, home, data, start_check)
    except ConfigError as err:
        log.error("fetched config refused: %s", err)
        path.replace(home.path / "config.rejected")
        raise
    path.unlink(missing_ok=True)
    return applied
