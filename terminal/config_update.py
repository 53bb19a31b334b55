"""Installing a signed config bundle on a running terminal, recorded in its ledger."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable

from firmware_cfg import bundle as bundles
from firmware_cfg.config import SIGNED_FILE, Config, loads
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
    installed = bundles.apply(home.path, bundle, start_check or can_start(home))
    _record(terminal, running.terminal.place, bundle)
    terminal.reconfigure(installed)
    return bundle


def _record(terminal: Terminal, place: str, bundle: bundles.Bundle) -> None:
    """The ``config_change`` entry: the central service holds every later entry to this
    version's config (``central.config_audit``)."""
    if terminal.ledger is None:
        return
    try:
        terminal.ledger.append("config_change", place=place,
                               detail={"version": bundle.version, "sha256": bundle.sha256})
    except LedgerError as err:
        # The file is in place and valid; the record is what failed. Say so loudly.
        log.error("config version %d applied but not recorded: %s", bundle.version, err)
        raise


def _finish_interrupted(terminal: Terminal, home: Home, data: bytes) -> bundles.Bundle | None:
    """Record a pending bundle that is already installed as the running version: an install
    cut short (a power cut) after the files were in place, before the pending file went.
    Without this it would be refused as not newer and the ledger would never name the config
    it runs. When the cut came after the record, the entry is there twice: harmless, the
    second says the same. None when the pending bundle is not the installed one."""
    try:
        if (home.path / SIGNED_FILE).read_bytes() != data:
            return None
    except FileNotFoundError:
        return None
    terminal_id, version = bundles.peek(data)
    if version != bundles.current_version(home.path):
        return None
    running = home.config()  # as installed (refused, naming the fields, if edited since)
    text = bundles.peek_config(data)
    bundle = bundles.Bundle(terminal_id, version, 0, text, loads(text), data)
    log.warning("config version %d was installed but its install was cut short; recording "
                "it now", version)
    _record(terminal, terminal.config.terminal.place, bundle)
    terminal.reconfigure(running)
    return bundle


PENDING = "config.pending"
#: a refused bundle's report for the central service, sent by the sync client at its next
#: round (``sync.client.REJECTED_REPORT``, restated: terminal imports nothing of sync's)
REJECTED_REPORT = "config.rejected.json"


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
    ``config.rejected`` with the reason logged, and the running config stays; the sync
    client tells the central service at its next round (``config.rejected.json``).
    """
    path = home.path / PENDING
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        applied = (_finish_interrupted(terminal, home, data)
                   or install(terminal, home, data, start_check))
    except ConfigError as err:
        log.error("fetched config refused: %s", err)
        path.replace(home.path / "config.rejected")
        _report_rejected(home, data, err)
        raise
    path.unlink(missing_ok=True)
    return applied


def _report_rejected(home: Home, data: bytes, err: ConfigError) -> None:
    """Leave what central is told of a refused bundle: its version as it names it (0 when
    it cannot be read), the SHA-256 of its bytes and the reason, one line."""
    try:
        version = bundles.peek(data)[1]
    except ConfigError:
        version = 0
    report = {"version": version, "sha256": hashlib.sha256(data).hexdigest(),
              "reason": str(err)[:500], "at_ms": int(time.time() * 1000)}
    path = home.path / REJECTED_REPORT
    tmp = path.with_name(REJECTED_REPORT + ".new")
    tmp.write_text(json.dumps(report, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
