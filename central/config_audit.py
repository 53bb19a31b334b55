"""Entries against the config the terminal was signed: the central side of issue #16.

A terminal runs the config of the last operator-signed bundle it installed, and records each
installation in its ledger (a ``config_change`` entry: ``{"version", "sha256"}`` of the
config text). The service published every such bundle (``configs``), so for each terminal it
knows, from the terminal's own chain, which signed config was in force at each entry.

:class:`ConfigAudit` is an ingest hook (:class:`central.service.IngestHook`): it follows each
batch in chain order, keeps each terminal's signed version (``config_audit_terminals``) and
checks every tap and payment against that config:

- a tap from a validator: the fare of the rider category the entry names
  (``fares.<category>``, the ``default``'s for a category with no fare), the place (route)
  and bus type;
- a payment from a till: at most ``risk.max_amount`` (``risk.uid_max_amount`` for a
  UID-only card), the place (merchant) and merchant category;
- a tap from a till or a payment from a validator contradicts ``terminal.role``;
- a ``config_change`` naming a version the service never published for the terminal, or
  another config text than the one it signed, is itself a violation (the terminal runs a
  config nobody signed); the entries after it are checked against the last signed one.

A contradicting entry is **not refused**: it is signed into the terminal's ledger, its money
moved at the terminal, and refusing the batch would stop every later entry of that terminal
too (nothing approved may be lost). It is accepted into the log and recorded as a config
violation, a ``flags`` row of rule ``config`` naming the fields, what the signed config says
and what the entry says; ``localpay central report`` lists it and the day does not reconcile.

Entries of a terminal before its first ``config_change`` (a terminal registered by hand that
never ran a signed config) are not checked: there is no signed config to hold them to.

Also here: :func:`check_publish` (a bundle must keep the terminal's role) and the refused
bundles terminals report (``POST /v1/config/rejected``, :func:`record_rejection`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from central.store import Store, Tx
from firmware_cfg import bundle as bundles
from firmware_cfg.config import Config, loads
from localpay.errors import ConfigError, SyncProtocolError

if TYPE_CHECKING:
    from central.service import CentralLog, HookContext, Ingested

log = logging.getLogger(__name__)

RULE = "config"

TABLES = """
CREATE TABLE IF NOT EXISTS config_audit_terminals (
    terminal_id TEXT PRIMARY KEY, version BIGINT NOT NULL, sha256 TEXT NOT NULL,
    seq BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS config_rejections (
    terminal_id TEXT NOT NULL, version BIGINT NOT NULL, sha256 TEXT NOT NULL,
    reason TEXT NOT NULL, at_ms BIGINT NOT NULL, reported_ms BIGINT NOT NULL,
    day TEXT NOT NULL, PRIMARY KEY (terminal_id, sha256, at_ms));
CREATE INDEX IF NOT EXISTS config_rejections_day ON config_rejections (day, terminal_id)
"""

# Several workers starting at once would race on CREATE TABLE (PostgreSQL's catalogue).
_SCHEMA_LOCK = 0x6C70636667617564  # "lpcfgaud"
_READY: weakref.WeakSet[Store] = weakref.WeakSet()
#: parsed configs by the SHA-256 of their text (a published config never changes)
_PARSED: dict[str, Config | None] = {}


def _statements(tx: Tx) -> None:
    if tx.store.kind == "postgresql":
        tx.one("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
    for statement in TABLES.split(";"):
        if statement.strip():
            tx.run(statement)


def ensure_schema(store: Store) -> None:
    """Make this module's tables where missing (once per store in a process)."""
    if store in _READY:
        return
    with store.tx() as tx:
        _statements(tx)
    _READY.add(store)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _parsed(text: str) -> tuple[str, Config | None]:
    """``(sha256 of text, config)``; None for a text this release cannot read."""
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if sha in _PARSED:
        return sha, _PARSED[sha]
    config: Config | None
    try:
        config = loads(text)
    except ConfigError as err:
        log.error("a published config (sha256 %s) does not load: %s", sha[:16], err)
        config = None
    if len(_PARSED) >= 4096:  # many terminals, each its own text: bound the memory
        _PARSED.clear()
    _PARSED[sha] = config
    return sha, config


@dataclass(frozen=True)
class Signed:
    """A config the service signed for a terminal."""

    version: int
    sha256: str
    config: Config


def published(tx: Tx, terminal_id: str, version: int) -> Signed | None:
    """The config of ``terminal_id``'s published bundle ``version``; None when there is none
    (or it does not load)."""
    row = tx.one("SELECT body FROM configs WHERE terminal_id = ? AND version = ?",
                 (terminal_id, version))
    if row is None:
        return None
    try:
        text = bundles.peek_config(str(row[0]).encode("utf-8"))
    except ConfigError:
        return None
    sha, config = _parsed(text)
    return Signed(version, sha, config) if config is not None else None


def _detail(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text) if text else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def contradictions(config: Config, kind: str, amount: int, place: str,
                   detail: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{field: (what the signed config says, what the entry says)}`` for a tap or payment;
    empty when the entry agrees with ``config``."""
    t = config.terminal
    out: dict[str, tuple[Any, Any]] = {}
    if kind == "tap":
        if t.role != "validator":
            out["terminal.role"] = (t.role, "validator")
        rider = detail.get("rider")
        charged, fare = config.fares.fare(rider if isinstance(rider, str) else None)
        if amount != fare:
            out[f"fares.{charged}"] = (fare, amount)
        if "bus_type" in detail and detail["bus_type"] != t.bus_type:
            out["terminal.bus_type"] = (t.bus_type, detail["bus_type"])
    elif kind == "payment":
        if t.role != "till":
            out["terminal.role"] = (t.role, "till")
        r = config.risk
        weak = detail.get("scheme") == "uid"
        limit, name = ((r.uid_max_amount, "risk.uid_max_amount") if weak
                       else (r.max_amount, "risk.max_amount"))
        if amount > limit:
            out[name] = (limit, amount)
        if "merchant_category" in detail and detail["merchant_category"] != t.merchant_category:
            out["terminal.merchant_category"] = (t.merchant_category,
                                                 detail["merchant_category"])
    else:
        return out
    if place != t.place:
        out["terminal.place"] = (t.place, place)
    return out


class ConfigAudit:
    """The ingest hook of this module (see the module docstring). Never raises on what a
    terminal sent: a violation is recorded, the batch goes on."""

    name = "config audit"

    def __call__(self, tx: Tx, batch: Sequence[Ingested], ctx: HookContext) -> None:
        if not batch:
            return
        if tx.store not in _READY:
            _statements(tx)  # a service opened without open_service: idempotent here
        terminal_id = ctx.terminal_id
        row = tx.one("SELECT version, sha256, seq FROM config_audit_terminals "
                     "WHERE terminal_id = ?", (terminal_id,))
        current = published(tx, terminal_id, int(row[0])) if row is not None else None
        state = (int(row[0]), str(row[1]), int(row[2])) if row is not None else None
        flags: list[tuple[Any, ...]] = []
        for item in batch:
            e = item.entry
            if e.kind == "config_change":
                found = self._change(tx, item)
                if isinstance(found, Signed):
                    current = found
                    state = (found.version, found.sha256, e.seq)
                else:
                    flags.append(_flag(item, found))
                continue
            if current is None or e.kind not in ("tap", "payment"):
                continue
            wrong = contradictions(current.config, e.kind, e.amount, e.place, _detail(e.detail))
            if wrong:
                flags.append(_flag(item, {
                    "problem": "contradicts the signed config", "version": current.version,
                    "fields": sorted(wrong), "signed": {k: v[0] for k, v in wrong.items()},
                    "entry": {k: v[1] for k, v in wrong.items()}}))
        if state is not None and (row is None or state != (int(row[0]), str(row[1]),
                                                           int(row[2]))):
            tx.run("INSERT INTO config_audit_terminals VALUES (?, ?, ?, ?) ON CONFLICT "
                   "(terminal_id) DO UPDATE SET version = excluded.version, "
                   "sha256 = excluded.sha256, seq = excluded.seq", (terminal_id, *state))
        if flags:
            tx.many("INSERT INTO flags VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    flags)
            log.warning("%d entries of %s contradict its signed config", len(flags),
                        terminal_id)

    @staticmethod
    def _change(tx: Tx, item: Ingested) -> Signed | dict[str, Any]:
        """The signed config a ``config_change`` entry installs, or why it is no such."""
        doc = _detail(item.entry.detail)
        version, sha = doc.get("version"), doc.get("sha256")
        if type(version) is not int or not isinstance(sha, str):
            return {"problem": "config_change names no version and sha256"}
        signed = published(tx, item.entry.terminal_id, version)
        if signed is None:
            return {"problem": "config_change names a version never published for this "
                               "terminal", "version": version, "sha256": sha}
        if signed.sha256 != sha:
            return {"problem": "config_change names another config than the one signed",
                    "version": version, "sha256": sha, "signed_sha256": signed.sha256}
        return signed


def _flag(item: Ingested, detail: dict[str, Any]) -> tuple[Any, ...]:
    e = item.entry
    return (item.log_index, RULE, e.card_token, e.terminal_id, e.seq, item.day,
            json.dumps(detail, sort_keys=True, separators=(",", ":")))


# -- publishing -----------------------------------------------------------------------------


def check_publish(store: Store, body: str) -> None:
    """Refuse a bundle whose config names another terminal than the bundle, or another role
    than the terminal's newest published config: a validator's bundle would turn a till into
    a fare box (and the reverse), which no operator means."""
    terminal_id, version = bundles.peek(body.encode("utf-8"))
    try:
        config = loads(bundles.peek_config(body.encode("utf-8")))
    except ConfigError as err:
        raise ConfigError(f"config bundle version {version} for {terminal_id}: {err}") from err
    if config.terminal.id != terminal_id:
        raise ConfigError(f"config bundle for {terminal_id} holds the config of terminal "
                          f"{config.terminal.id!r}")
    with store.tx(write=False) as tx:
        row = tx.one("SELECT version, body FROM configs WHERE terminal_id = ? "
                     "ORDER BY version DESC LIMIT 1", (terminal_id,))
    if row is None:
        return  # registered by hand, never configured: nothing says what it is
    _, was = _parsed(bundles.peek_config(str(row[1]).encode("utf-8")))
    if was is not None and was.terminal.role != config.terminal.role:
        raise ConfigError(f"{terminal_id} is a {was.terminal.role} (config version {row[0]}); "
                          f"this config is a {config.terminal.role}'s: not published")


# -- bundles the terminals refused ----------------------------------------------------------


def record_rejection(service: CentralLog, terminal_id: str, body: bytes) -> dict[str, Any]:
    """Keep a terminal's report of a bundle it refused (``POST /v1/config/rejected``):
    ``{"version", "sha256", "reason", "at_ms"}``; the same report again is kept once."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise SyncProtocolError(f"config rejection is not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise SyncProtocolError("config rejection must be an object")
    version, sha, reason, at_ms = (doc.get(k) for k in ("version", "sha256", "reason", "at_ms"))
    if type(version) is not int or type(at_ms) is not int or version < 0:
        raise SyncProtocolError("config rejection: version and at_ms must be whole numbers")
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef"
                                                         for c in sha):
        raise SyncProtocolError("config rejection: sha256 must be 64 lower-case hex digits")
    if not isinstance(reason, str) or not reason or len(reason) > 500:
        raise SyncProtocolError("config rejection: reason must be text of 1 to 500 characters")
    now = _now_ms()
    ensure_schema(service.store)
    with service.store.tx() as tx:
        tx.run("INSERT INTO config_rejections VALUES (?, ?, ?, ?, ?, ?, ?) "
               "ON CONFLICT DO NOTHING",
               (terminal_id, version, sha, " ".join(reason.split()), at_ms, now,
                service.day_of(now)))
    log.warning("terminal %s refused config version %d: %s", terminal_id, version, reason)
    return {"ok": True}


def rejections(tx: Tx, day: str, where: str = "", params: Sequence[Any] = ()
               ) -> list[dict[str, Any]]:
    """The refused bundles terminals reported on ``day`` (the service's day of the report),
    of the terminals an SQL condition ``where`` on ``terminal_id`` keeps (with ``params``)."""
    if not tx.store.columns(tx, "config_rejections"):
        return []
    return [{"terminal_id": str(t), "version": int(v), "sha256": str(s), "reason": str(r)}
            for t, v, s, r in tx.all(
                "SELECT terminal_id, version, sha256, reason FROM config_rejections "
                f"WHERE day = ? {'AND ' + where if where else ''} "
                "ORDER BY reported_ms, terminal_id", (day, *params))]
