"""The reference central service: store, ingest, proofs, rules and the HTTP API.

Imports nothing of the terminal's (``offline_ledger`` stays on the terminal's side).
"""

from __future__ import annotations

import os
from pathlib import Path

from central.config_audit import ConfigAudit
from central.config_audit import ensure_schema as ensure_config_audit
from central.incentives import IncentiveCrediter, programme_start_ms
from central.keys import load_signer
from central.rules import FraudConfig, default_hooks
from central.service import CentralLog, VerifyPolicy
from central.spending import SpendingPoster
from central.store import Store, open_store


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/localpay/central`` (``~/.local/share/localpay/central``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "localpay" / "central"


def open_service(
    db: str | None = None,
    data_dir: Path | None = None,
    *,
    origin: str | None = None,
    rules: Path | None = None,
    policy: VerifyPolicy = "every",
    pool_size: int = 8,
) -> CentralLog:
    """A :class:`CentralLog` over ``db`` (default: SQLite in ``data_dir``), with the log key
    from ``data_dir`` (made on first use), the balance and fraud hooks, incentive
    crediting, the posting of payments and refunds to the books, and the audit of entries
    against each terminal's signed config (:mod:`central.config_audit`)."""
    folder = data_dir or default_data_dir()
    signer = load_signer(folder, origin)
    store = open_store(db or f"sqlite:///{folder / 'central.sqlite'}", pool_size)
    config = FraudConfig.load(rules) if rules else FraudConfig()
    ensure_config_audit(store)
    service = CentralLog(store, signer, hooks=[*default_hooks(config), ConfigAudit()],
                         followers=[IncentiveCrediter(), SpendingPoster()], policy=policy,
                         programme_start=programme_start_ms)
    service.data_dir = folder
    return service


__all__ = ["CentralLog", "FraudConfig", "Store", "default_data_dir", "open_service",
           "open_store"]
