"""``/metrics`` in the Prometheus text exposition format, ``/healthz`` and ``/readyz``.

Two kinds of figures, and they are kept apart on purpose:

- **Read from the store at each scrape**, so every API worker over one store answers the
  same: the log's size, the crediting lag (log size less the incentive cursor), each
  terminal's last-seen time and sync lag, revoked terminals, fraud flags by rule.
- **Counted by this process** since it started (Prometheus counters and a histogram): batches
  and entries accepted and refused by reason, and the ingest latency. The workers of one
  ``central serve --workers N`` write their counts to files in one folder
  (prometheus-client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``, set by the serve
  command) and any of them answers ``/metrics`` with their sum. Separate services (hosts)
  count their own: scrape each as its own target and sum in the query
  (``sum without (instance) (...)``).

Per-terminal series carry ``terminal`` and ``municipality`` labels: two series a terminal.

``/metrics`` names terminals and shows their activity, so it is not for the internet: with
a metrics token (``central serve --metrics-token`` or ``LOCALPAY_METRICS_TOKEN``) it asks
for ``Authorization: Bearer <token>`` (401 otherwise); without one, keep the service bound
to loopback or a private address and deny ``/metrics`` at the reverse proxy (see
``deploy/nginx-central.conf``).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from central import audit, terminal_status
from central.service import CentralLog
from localpay.errors import LocalpayError

log = logging.getLogger(__name__)

TOKEN_ENV = "LOCALPAY_METRICS_TOKEN"
#: set by ``central serve --workers N`` (N > 1): the folder of every worker's counters
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: seconds: a batch of a few entries takes milliseconds, a day offline a few seconds
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_token: list[str] = []


def set_token(token: str | None) -> None:
    """The bearer token ``/metrics`` asks for in this process (None or empty: none)."""
    _token[:] = [token] if token else []


def configured_token() -> str | None:
    """The token set by :func:`set_token`, else ``LOCALPAY_METRICS_TOKEN``, else None."""
    if _token:
        return _token[0]
    return os.environ.get(TOKEN_ENV) or None


def token_ok(expected: str | None, authorization: str) -> bool:
    if expected is None:
        return True
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                               expected.encode())


@dataclass
class BatchSeen:
    """What one ``POST /v1/batches`` got as far as: entries parsed, entries new."""

    entries: int = 0
    new: int = 0


class StoreCollector:
    """The figures that live in the store, read at scrape time."""

    def __init__(self, service: CentralLog) -> None:
        self.service = service

    def describe(self) -> list[Metric]:
        return []  # registering must not read the store

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("localpay_store_up", "1 when the store answered this scrape")
        try:
            families = self._read()
        except LocalpayError as err:
            log.warning("metrics: the store did not answer: %s", err)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list[Metric]:
        store = self.service.store
        terminal_status.ensure_schema(store)
        audit.ensure_schema(store)
        with store.tx(write=False) as tx:
            state = tx.one("SELECT s.size, c.next_index FROM log_state s, incentive_cursor c "
                           "WHERE s.id = 1 AND c.id = 1")
            rows = tx.all("SELECT t.terminal_id, t.municipality_id, s.last_seen_ms, "
                          "s.revoked_ms FROM terminals t LEFT JOIN terminal_status s "
                          "ON s.terminal_id = t.terminal_id ORDER BY t.terminal_id")
            lags = terminal_status.sync_lags(tx)
            flags = tx.all("SELECT rule, COUNT(*) FROM flags GROUP BY rule ORDER BY rule")
            audited, failing = audit.figures(tx)
        size, cursor = (int(state[0]), int(state[1])) if state else (0, 0)
        log_size = GaugeMetricFamily("localpay_log_size_entries",
                                     "Entries in the central chain (from the store)")
        log_size.add_metric([], size)
        lag = GaugeMetricFamily("localpay_crediting_lag_entries",
                                "Entries of the log not yet credited: log size less the "
                                "incentive cursor (from the store)")
        lag.add_metric([], max(0, size - cursor))
        labels = ["terminal", "municipality"]
        seen = GaugeMetricFamily("localpay_terminal_last_seen_timestamp_seconds",
                                 "Unix time of the terminal's last authenticated request "
                                 "(0: never; from the store)", labels=labels)
        sync = GaugeMetricFamily("localpay_terminal_sync_lag_seconds",
                                 "At the terminal's last batch: arrival less the effective "
                                 "time of its oldest new entry (from the store)", labels=labels)
        states = GaugeMetricFamily("localpay_terminals", "Registered terminals by state "
                                   "(from the store)", labels=["state"])
        counts = {"active": 0, "revoked": 0}
        for tid, muni, seen_ms, revoked in rows:
            key = [str(tid), str(muni)]
            seen.add_metric(key, int(seen_ms or 0) / 1000)
            if str(tid) in lags:
                sync.add_metric(key, lags[str(tid)] / 1000)
            counts["revoked" if revoked is not None else "active"] += 1
        for state_name, n in counts.items():
            states.add_metric([state_name], n)
        flagged = GaugeMetricFamily("localpay_fraud_flags", "Entries flagged, by rule "
                                    "(from the store)", labels=["rule"])
        for rule, n in flags:
            flagged.add_metric([str(rule)], int(n))
        failures = GaugeMetricFamily("localpay_audit_failures", "Entries whose own signature "
                                     "or hash link failed the audit (from the store)")
        failures.add_metric([], failing)
        audit_lag = GaugeMetricFamily("localpay_audit_lag_entries", "Entries of the log not "
                                      "yet audited: log size less the audit cursor (from the "
                                      "store)")
        audit_lag.add_metric([], max(0, size - audited))
        return [log_size, lag, seen, sync, states, flagged, failures, audit_lag]


class Metrics:
    """One app's registry: its own counters and the store's figures."""

    def __init__(self, service: CentralLog) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        r = self.registry
        self.batches_accepted = Counter(
            "localpay_batches_accepted", "Batches accepted by this process", registry=r)
        self.batches_refused = Counter(
            "localpay_batches_refused", "Batches refused by this process, by reason (the "
            "kind code of the error answer)", ["reason"], registry=r)
        self.entries_accepted = Counter(
            "localpay_entries_accepted", "Entries appended to the log by this process",
            registry=r)
        self.entries_held = Counter(
            "localpay_entries_already_held", "Entries of accepted batches the log held "
            "already (sent again), by this process", registry=r)
        self.entries_refused = Counter(
            "localpay_entries_refused", "Entries of refused batches, by reason, counted by "
            "this process (0 for a batch refused before its body was read)", ["reason"],
            registry=r)
        self.ingest_seconds = Histogram(
            "localpay_ingest_seconds", "Time to answer POST /v1/batches in this process "
            "(authentication, checks, append, crediting)", buckets=LATENCY_BUCKETS,
            registry=r)
        r.register(StoreCollector(service))

    def batch_done(self, status: int, body: bytes, seen: BatchSeen, seconds: float,
                   claimed_terminal: str) -> None:
        """Count one answered ``POST /v1/batches``; log a refusal with its terminal and
        reason."""
        self.ingest_seconds.observe(seconds)
        if status == 200:
            self.batches_accepted.inc()
            self.entries_accepted.inc(seen.new)
            self.entries_held.inc(seen.entries - seen.new)
            return
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        reason = str(doc.get("kind") or f"http_{status}")
        self.batches_refused.labels(reason).inc()
        self.entries_refused.labels(reason).inc(seen.entries)
        log.warning("batch refused: %s", doc.get("message", ""), extra={
            "event": "batch_refused", "terminal": _printable(claimed_terminal),
            "reason": reason, "status": status, "seq": doc.get("seq")})

    def render(self) -> bytes:
        folder = os.environ.get(MULTIPROC_ENV)
        if not folder:
            return generate_latest(self.registry)
        # several workers (central.workers): every worker's counters, summed from their
        # files, and the store's figures once
        combined = CollectorRegistry()
        MultiProcessCollector(combined, path=folder)
        combined.register(StoreCollector(self.service))
        return generate_latest(combined)


def store_check(service: CentralLog) -> tuple[bool, dict[str, Any]]:
    """Whether the store answers a read now, and what to say about it."""
    started = time.perf_counter()
    try:
        with service.store.tx(write=False, reconnect=False) as tx:
            row = tx.one("SELECT size FROM log_state WHERE id = 1")
    except LocalpayError as err:
        # the reason goes to the log only: it may name hosts and ports
        log.warning("health: store %s does not answer: %s", service.store.kind, err)
        return False, {"kind": service.store.kind, "ok": False}
    return True, {"kind": service.store.kind, "ok": True, "log_size": int(row[0]) if row
                  else 0, "ms": round((time.perf_counter() - started) * 1000, 1)}


class Readiness:
    """Started: the app's lifespan has begun and not ended (a stopping worker is not
    ready, so a load balancer drains it)."""

    def __init__(self) -> None:
        self.started = False

    def wrap(self, inner: Any) -> Any:
        @contextlib.asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[Any]:
            async with inner(app) as state:
                from central.observe import adopt_uvicorn_loggers

                adopt_uvicorn_loggers()
                self.started = True
                try:
                    yield state
                finally:
                    self.started = False

        return lifespan


def _printable(text: str) -> str:
    """A claimed terminal id as it may go into a log line: short, printable."""
    return "".join(c for c in text[:64] if c.isprintable())
