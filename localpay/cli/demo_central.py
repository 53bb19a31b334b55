"""``localpay demo``, after the morning: connectivity returns, the terminals reconcile with
the central chain and the city credits points.

The reference central service runs embedded: SQLite in the demo's folder, the real HTTP API
(FastAPI on uvicorn) in a thread of this process on a free port of 127.0.0.1. Each terminal
syncs with the real :class:`sync.client.SyncClient`, which verifies every checkpoint,
inclusion proof and consistency proof before it marks entries synced.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import CentralLog, open_service
from central.incentive_rules import Rules
from central.incentives import credit_log
from central.payouts import statement
from firmware_cfg.keys import public_hex
from localpay.errors import ConfigError, SyncUnavailableError
from offline_ledger import Ledger
from sync.checkpoint import Checkpoint
from sync.client import SyncClient, SyncSummary

log = logging.getLogger(__name__)

#: Entries per batch. Small on purpose: with several batches per terminal the client checks
#: a consistency proof between each new checkpoint and the one it kept, as it would after a
#: long day offline, instead of only the first checkpoint it ever sees.
BATCH_SIZE = 2
START_TIMEOUT_S = 15.0


def demo_day(today: dt.date | None = None) -> dt.date:
    """The most recent day before ``today`` (default: today in the rules' time zone) on which
    a bus ride earns points under the default incentive rules: a weekday, not a holiday."""
    rules = Rules.default()
    day = (today or dt.datetime.now(ZoneInfo(rules.timezone)).date()) - dt.timedelta(days=1)
    while not rules.bus.earns_on(day):
        day -= dt.timedelta(days=1)
    return day


@contextlib.contextmanager
def _quiet_new_keys() -> Iterator[None]:
    """A new service makes its keys on first use, and says so as a warning: for an operator
    a new key is news, for a demo in a fresh folder it is the plan."""
    loggers = [logging.getLogger(name) for name in ("firmware_cfg.keys", "central.enroll")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


# -- the service, embedded ----------------------------------------------------------------


class EmbeddedCentral:
    """The central service's HTTP API on a free loopback port, in a thread of this process.

    A thread, not a child process: it starts in a fraction of a second and stops with the
    demo, and the demo reads the same store afterwards.
    """

    def __init__(self, service: CentralLog) -> None:
        self.service = service
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Bound here and handed to uvicorn: no window in which another process could take
        # a port we only probed.
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            import uvicorn

            from central.app import create_app
        except ImportError as err:
            raise ConfigError(f"the demo's central service needs the central extra "
                              f"(pip install 'localpay[central]'): {err}") from err
        # log_config=None: the service must not reconfigure the logging of the process
        # it is embedded in.
        config = uvicorn.Config(create_app(self.service), log_level="warning",
                                access_log=False, log_config=None, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._sock]},
                                        name="demo-central", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise SyncUnavailableError(f"the demo's central service did not start on "
                                           f"{self.url}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving and free the port; a second call does nothing."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self._sock.close()


class _ConsistencyCounter(httpx.HTTPTransport):
    """Counts the consistency proofs the sync client was given. It raises ``ProofError`` on
    any that does not verify, so once a round returns, every one counted was verified: the
    client keeps no such counter itself."""

    def __init__(self) -> None:
        super().__init__()
        self.proofs = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path == "/v1/consistency" and response.status_code == 200:
            self.proofs += 1
        return response


# -- the reconciliation -------------------------------------------------------------------


@dataclass(frozen=True)
class DemoTerminal:
    role: str
    terminal_id: str
    ledger_path: Path
    key: Ed25519PrivateKey


@dataclass
class TerminalSync:
    role: str
    terminal_id: str
    summary: SyncSummary
    #: consistency proofs the client fetched and verified
    consistency_proofs: int
    synced_upto: int
    head: int
    #: the checkpoint, as the ledger keeps it, that proved the entries up to synced_upto
    checkpoint: str
    checkpoint_size: int
    state_file: Path


@dataclass
class CentralResult:
    url: str
    data_dir: Path
    verifier: str
    log_size: int
    syncs: list[TerminalSync] = field(default_factory=list)
    #: (rule, credits, points) over the whole log
    credited: list[tuple[str, int, int]] = field(default_factory=list)
    rider: str = ""
    card_token: str = ""
    statement: dict[str, Any] = field(default_factory=dict)

    @property
    def checkpoint(self) -> str:
        """The largest checkpoint a terminal verified: it covers every entry of the day."""
        return max(self.syncs, key=lambda s: s.checkpoint_size).checkpoint


def reconcile(data_dir: Path, terminals: list[DemoTerminal], *, deny: dict[str, str],
              balances: dict[str, int], rider: tuple[str, str]) -> CentralResult:
    """Start the central service in ``data_dir``, register and sync ``terminals`` in order,
    credit points, and read ``rider`` (name, card token)'s statement.

    ``deny`` and ``balances`` are what the service already held, and what the terminals
    were given at their last sync.
    """
    with _quiet_new_keys():
        service = open_service(None, data_dir)
    server = EmbeddedCentral(service)
    try:
        for t in terminals:
            service.add_terminal(t.terminal_id, bytes.fromhex(public_hex(t.key)))
        for token, reason in deny.items():
            service.deny(token, reason)
        if balances:
            service.set_balances(balances)
        with _quiet_new_keys():
            server.start()
        result = CentralResult(server.url, data_dir, service.signer.verifier.text(), 0)
        for t in terminals:
            result.syncs.append(_sync(server.url, result.verifier, t))
        server.stop()
        # The service credits after each batch; this catches up on anything a failed
        # follower left, and credits nothing twice (the cursor moves with the credits).
        credit_log(service.store)
        result.log_size = service.size()
        result.credited = _credited(service)
        result.rider, result.card_token = rider
        result.statement = statement(service.store, result.card_token)
    finally:
        server.stop()
        service.store.close()
    return result


def _sync(url: str, verifier: str, t: DemoTerminal) -> TerminalSync:
    counter = _ConsistencyCounter()
    client = SyncClient(t.ledger_path, t.key, url, verifier, batch_size=BATCH_SIZE,
                        max_retries=2, transport=counter)
    try:
        summary = client.sync_once()
    finally:
        client.close()
    ledger = Ledger(t.ledger_path)
    try:
        upto, head, note = ledger.synced_upto(), ledger.head.seq, ledger.sync_checkpoint()
    finally:
        ledger.close()
    size = Checkpoint.verify(note, client.verifier).size
    return TerminalSync(t.role, t.terminal_id, summary, counter.proofs, upto, head, note, size,
                        client.state_path)


def _credited(service: CentralLog) -> list[tuple[str, int, int]]:
    with service.store.tx(write=False) as tx:
        rows = tx.all("SELECT rule, COUNT(*), SUM(points) FROM incentive_credits "
                      "GROUP BY rule ORDER BY rule")
    return [(str(r), int(n), int(p)) for r, n, p in rows]
