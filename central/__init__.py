"""The reference central service: store, ingest, proofs, rules and the HTTP API.

Imports nothing of the terminal's (``offline_ledger`` stays on the terminal's side).
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

from central.config_audit import ConfigAudit
from central.config_audit import ensure_schema as ensure_config_audit
from central.incentives import IncentiveCrediter, programme_start_ms
from central.keys import load_signer
from central.rules import FraudConfig, default_hooks
from central.service import CentralLog, VerifyPolicy
from central.spending import SpendingPoster
from central.store import PostgresStore, Store, open_store
from localpay.errors import ConfigError


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/localpay/central`` (``~/.local/share/localpay/central``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "localpay" / "central"


def store_url(db: str | None, data_dir: Path | None) -> str:
    """``db``, or the SQLite file ``central.sqlite`` in the data folder."""
    return db or f"sqlite:///{(data_dir or default_data_dir()) / 'central.sqlite'}"


def shown(url: str) -> str:
    """A store URL fit for a message or a log line: its password replaced by ``***``."""
    url = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)
    return re.sub(r"(password=)[^&]*", r"\1***", url)


def has_schema(url: str) -> bool:
    """Whether the store at ``url`` holds the service's tables. Only looks: a SQLite file
    that does not exist is not made (opening it as :class:`SQLiteStore` would make it)."""
    if url.startswith(("postgresql://", "postgres://")):
        store = PostgresStore(url, 1)
        try:
            with store.tx(write=False) as tx:
                row = tx.one("SELECT to_regclass('log_state') IS NOT NULL")
        finally:
            store.close()
        return bool(row and row[0])
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
    elif "://" in url:
        raise ConfigError(f"unknown store URL {url!r}: use sqlite:///PATH or postgresql://...")
    else:
        path = Path(url)
    if not path.is_file():
        return False
    try:  # mode=rw: a file gone since the check above is an error, not a new empty store
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=30.0)
        try:
            row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                               "AND name = 'log_state'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise ConfigError(f"{path} cannot be read as a central store: {err}") from err
    return row is not None


def not_initialised(db: str | None, data_dir: Path | None) -> str | None:
    """What the service lacks to start without making anything (``None``: nothing): the
    log key in the data folder, the schema in the store. Makes no file, folder or table."""
    folder = data_dir or default_data_dir()
    url = store_url(db, folder)
    gaps = [] if (folder / "log.key").exists() else [f"no log key in {folder}"]
    if not has_schema(url):
        gaps.append(f"no central store at {shown(url)}")
    return "; ".join(gaps) or None


def open_service(
    db: str | None = None,
    data_dir: Path | None = None,
    *,
    origin: str | None = None,
    rules: Path | None = None,
    policy: VerifyPolicy = "anchor",
    pool_size: int = 8,
    create: bool = True,
) -> CentralLog:
    """A :class:`CentralLog` over ``db`` (default: SQLite in ``data_dir``), with the log key
    from ``data_dir``, the balance and fraud hooks, incentive crediting, the posting of
    payments and refunds to the books, and the audit of entries against each terminal's
    signed config (:mod:`central.config_audit`).

    ``create``: make the log key and the store's schema when missing; without it a service
    that was never initialised is refused (a :class:`ConfigError` saying what is missing)
    and nothing is made. An existing store is migrated either way."""
    folder = data_dir or default_data_dir()
    url = store_url(db, folder)
    if not create and (gaps := not_initialised(url, folder)):
        raise ConfigError(f"the central service is not initialised: {gaps}")
    signer = load_signer(folder, origin, create=create)
    store = open_store(url, pool_size)
    config = FraudConfig.load(rules) if rules else FraudConfig()
    ensure_config_audit(store)
    service = CentralLog(store, signer, hooks=[*default_hooks(config), ConfigAudit()],
                         followers=[IncentiveCrediter(), SpendingPoster()], policy=policy,
                         programme_start=programme_start_ms)
    service.data_dir = folder
    return service


__all__ = ["CentralLog", "FraudConfig", "Store", "default_data_dir", "has_schema",
           "not_initialised", "open_service", "open_store", "shown", "store_url"]
