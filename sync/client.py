"""The terminal's side of sync: batches up, deny lists and balances down, proofs checked.

:class:`SyncClient` runs in a background thread (or its own process, ``localpay sync``) with
its own connection to the ledger, so a tap never waits for the network: the only writes it
makes (``mark_synced``, the deny list, balances) are single short transactions that queue
behind the terminal's appends on SQLite's lock.

For every batch it verifies the checkpoint signature (c2sp.org/signed-note), the inclusion
proof of the batch's last entry (RFC 9162 §2.1.3.2; the hash chain makes that entry commit
to all before it) and the consistency of the new checkpoint with the one it kept (RFC 9162
§2.1.4.2), and only then marks the entries synced, which is what allows pruning. A central
log that rewrites its history fails the consistency check and is reported as
:class:`~localpay.errors.ProofError`. Progress is in the ledger (``synced_upto``) and in a
small state file beside it, both written after each batch, so a crash or a power cut resumes
exactly where it stopped: a batch the service already took is answered again, not doubled.

Answers are signed by the service's answer key, never by the log key (``sync.protocol``):
the client learns it from the log key's statement (``GET /v1/answer-key``, checked with the
log key it was given), keeps that statement beside the ledger (``<ledger>.answer-key``) and
checks every answer with the key it names. An answer naming another key (the service made
a new one) has the statement fetched again, once; an answer signed by the log key, or by
any key the log key did not name, is refused as :class:`~localpay.errors.ProofError`.

Time: every answer carries the service's clock (``time_ms``, inside the signed body). The
client keeps the last one as the ledger's clock anchor (central time + half the round trip,
with the local wall and boot clocks when it arrived; ``offline_ledger.anchor``), which
``terminal.clock`` judges the wall clock by. Requests are signed with the client's best time:
the system time when ``synchronised()`` says NTP keeps it, else the system time corrected by
the kept offset (central − local). A request the service refuses as stale (a terminal that
booted at 1970) is signed again once with the offset that refusal's own ``time_ms`` gives.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from localpay.errors import (
    ChainMismatchError,
    LedgerError,
    LedgerStateError,
    ProofError,
    RouteMissingError,
    SyncAuthError,
    SyncError,
    SyncProtocolError,
    SyncStaleError,
    SyncUnavailableError,
)
from offline_ledger import ClockAnchor, Ledger, boot_now, pockets
from offline_ledger.ledger import QUARTER_MS, Entry
from sync import merkle, status_report, sync_state
from sync.answer_keys import AnswerKeys
from sync.checkpoint import Checkpoint, NoteVerifier
from sync.protocol import (
    H_ANSWER_KEY,
    H_NONCE,
    H_SIGNATURE,
    H_TERMINAL,
    H_TIME,
    UNAVAILABLE,
    BatchReceipt,
    answer_key_name,
    b64,
    batch_body,
    get_int,
    new_nonce,
    request_message,
    response_message,
    unb64,
)

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
#: what the terminal leaves beside its ledger when it refused a config bundle
#: (``terminal.config_update.REJECTED_REPORT``); sent to ``POST /v1/config/rejected``
REJECTED_REPORT = "config.rejected.json"
#: the parts of a ``GET /v1/round`` answer, each its own route's answer
ROUND_PARTS = ("deny", "balances", "points", "pockets", "config")


@dataclass
class Backoff:
    """Exponential backoff with full jitter: a random wait up to ``base * 2**attempt``."""

    base: float = 0.5
    cap: float = 300.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        return self.rng.uniform(0, min(self.cap, self.base * (2 ** min(attempt, 30))))


@dataclass
class SyncSummary:
    sent: int = 0
    batches: int = 0
    duplicates: int = 0
    synced_upto: int = 0
    head: int = 0
    tree_size: int = 0
    deny_version: int = 0
    deny_added: int = 0
    balances: int = 0
    points: int = 0
    riders: int = 0
    pockets: int = 0
    config_version: int = 0
    retries: int = 0
    days_reported: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)



#: The most a batch's body holds: half the service's default request limit (8 MiB,
#: ``central serve --max-body``). 500 bus taps are about 170 KB.
MAX_BATCH_BYTES = 4 * 1024 * 1024
_ENTRY_JSON = 32  # quotes, brackets and commas around one entry's two base64 strings


def _b64_len(n: int) -> int:
    return 4 * ((n + 2) // 3)



@functools.cache
def _tls_context() -> Any:
    """The system's certificates, loaded once a process: each client made its own (10 to
    20 ms of CPU, most of a client's start), and a process syncing many ledgers, or a
    terminal's hourly `localpay sync`, made one a round. A context is safe to share."""
    return httpx.create_ssl_context()

class SyncClient:
    """Syncs one terminal's ledger with the central service.

    ``central_key`` is the log's verifier key (``name+id+base64``, see
    :class:`sync.checkpoint.NoteVerifier`): it signs checkpoints and the statement naming
    the key that signs every answer.
    """

    def __init__(
        self,
        ledger_path: str | Path,
        terminal_key: Ed25519PrivateKey,
        central_url: str,
        central_key: NoteVerifier | str,
        *,
        batch_size: int = 500,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        interval_s: float = 30.0,
        timeout_s: float = 30.0,
        max_retries: int = 6,
        backoff: Backoff | None = None,
        tz: str = "Asia/Seoul",
        on_config: Callable[[int, str], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        synchronised: Callable[[], bool | None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise SyncProtocolError("batch size must be at least 1")
        self.ledger_path = Path(ledger_path)
        self.key = terminal_key
        self.url = central_url.rstrip("/")
        self.verifier = (central_key if isinstance(central_key, NoteVerifier)
                         else NoteVerifier.parse(central_key))
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.interval_s = interval_s
        self.max_retries = max_retries
        self.backoff = backoff or Backoff()
        self.tz = ZoneInfo(tz)
        self._days: dict[int, str] = {}
        self.on_config = on_config
        self.state_path = self.ledger_path.with_name(self.ledger_path.name + ".sync.json")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, transport=transport,
                                  verify=_tls_context())
        #: the key answers are signed by, as the log key names it; its statement is kept
        #: apart from the round's state (an online QR call may learn it mid-round)
        self.answer_keys = AnswerKeys(self._http, self.verifier, self.ledger_path.with_name(
            self.ledger_path.name + ".answer-key"))
        self._stop = threading.Event()
        #: until when (monotonic s) the service is taken for one without ``/v1/round``
        self._no_round_until = 0.0
        #: the faults the terminal shows now (``kiosk_ui``'s blockers as (cause, detail)),
        #: told to central with the software version when they change (sync.status_report)
        self.faults: Callable[[], list[tuple[str, str]]] = list
        self._no_status_until = 0.0
        self._thread: threading.Thread | None = None
        self.last_error: SyncError | None = None
        self.last_summary: SyncSummary | None = None
        self.terminal_id = ""
        #: the terminal's wall clock, and whether the kernel says NTP keeps it (None: the
        #: client cannot tell, so it applies the kept offset, which is ~0 on a good clock)
        self.clock = clock
        self.synchronised = synchronised
        #: the service's time from its last verified answer (kept in the ledger)
        self.anchor: ClockAnchor | None = None
        self._anchor_stored: ClockAnchor | None = None
        #: once the service refused a request as stale, its time beats the kernel's word
        self._stale_seen = False
        #: the offset (ms) an unsigned stale refusal's time gives: unverified, so used to sign
        #: the one retry and never kept as the anchor; dropped at the next verified answer
        self._stale_hint_ms: int | None = None

    # -- state kept beside the ledger ---------------------------------------------------------

    def _load_state(self) -> dict[str, Any]:
        return sync_state.load(self.state_path)

    def _kept_checkpoint(self, state: dict[str, Any]) -> Checkpoint:
        try:
            return Checkpoint.verify(state["checkpoint"], self.verifier)
        except ProofError as err:
            raise ProofError(
                f"the checkpoint kept in {self.state_path} is not this log's ({err}): the "
                "file was written for another central service, or the log's key changed. "
                "Restore the right file, or move it aside and sync again (sync then starts "
                "from central's next checkpoint)") from err

    def _save_state(self, state: dict[str, Any]) -> None:
        sync_state.save(self.state_path, state)

    # -- requests -----------------------------------------------------------------------------

    def now_ms(self) -> int:
        """The time to sign a request with: the system's when NTP keeps it, else corrected
        by the kept offset."""
        wall = int(self.clock() * 1000)
        if self._stale_hint_ms is not None:
            # the unsigned time of a stale refusal, good for signing the one retry only
            return wall + self._stale_hint_ms
        if self.anchor is None or (not self._stale_seen and self.synchronised is not None
                                   and self.synchronised()):
            return wall
        return wall + self.anchor.offset_ms

    def _request(self, method: str, path: str, body: bytes = b"") -> Any:
        """One signed request, retried with backoff while the service is unreachable, and
        once more when refused as stale (signed then with the refusal's time)."""
        try:
            return self._request_retried(method, path, body)
        finally:
            self._stale_hint_ms = None  # a hint never outlives the request it came for

    def _request_retried(self, method: str, path: str, body: bytes) -> Any:
        attempt = 0
        stale_retried = False
        while True:
            try:
                return self._request_once(method, path, body)
            except SyncStaleError as err:
                if stale_retried:
                    raise
                stale_retried = self._stale_seen = True
                offset = self._stale_hint_ms if self._stale_hint_ms is not None else (
                    self.anchor.offset_ms if self.anchor else 0)
                log.warning("central refused a stale request (%s); signing again with its "
                            "time, offset %+d ms", err, offset)
            except SyncUnavailableError as err:
                if attempt >= self.max_retries or self._stop.is_set():
                    raise
                wait = self.backoff.delay(attempt)
                attempt += 1
                if self.last_summary is not None:
                    self.last_summary.retries += 1
                log.info("central unreachable (%s); retry %d in %.2f s", err, attempt, wait)
                self._stop.wait(wait)

    def _request_once(self, method: str, path: str, body: bytes) -> Any:
        nonce = new_nonce()
        now = self.now_ms()
        sig = self.key.sign(request_message(method, path, now, nonce, body))
        headers = {H_TERMINAL: self.terminal_id, H_TIME: str(now), H_NONCE: nonce,
                   H_SIGNATURE: b64(sig), "Content-Type": "application/json"}
        # the round trip on the monotonic clock: NTP may step the wall clock while the
        # request is out, and half that step would then be taken as central's time
        started = time.monotonic()
        try:
            resp = self._http.request(method, path, content=body, headers=headers)
        except httpx.HTTPError as err:
            raise SyncUnavailableError(f"{method} {path}: {type(err).__name__}: {err}") from err
        rtt = max(0, int((time.monotonic() - started) * 1000))
        received = self.clock()
        if resp.status_code in UNAVAILABLE and H_SIGNATURE not in resp.headers:
            raise SyncUnavailableError(f"{method} {path}: HTTP {resp.status_code}")
        raw = resp.content
        if H_SIGNATURE not in resp.headers and resp.status_code == 404:
            raise RouteMissingError(f"{method} {path}: HTTP 404, the service has no such "
                                    "route (a release from before it)")
        if H_SIGNATURE not in resp.headers and resp.status_code in (400, 401):
            # the service signs no answer to a request it did not authenticate
            raise self._unsigned_refusal(method, path, resp, rtt, received)
        if H_SIGNATURE not in resp.headers:
            raise ProofError(f"{method} {path}: the answer (HTTP {resp.status_code}) is not "
                             f"signed by {answer_key_name(self.verifier.name)}")
        key_id = resp.headers.get(H_ANSWER_KEY)
        if key_id is None and self.answer_keys.service_has_none():
            answers = self.verifier
        else:
            answers = self.answer_keys.key_for(method, path, key_id or "")
        try:
            answers.public_key.verify(unb64(resp.headers[H_SIGNATURE], "answer signature"),
                                      response_message(nonce, resp.status_code, raw))
        except (InvalidSignature, SyncProtocolError):
            raise ProofError(
                f"{method} {path}: the answer (HTTP {resp.status_code}) is not signed by "
                f"{answers.name}") from None
        try:
            doc = json.loads(raw)
        except ValueError as err:
            raise SyncProtocolError(f"{method} {path}: answer is not JSON") from err
        self._take_time(doc, rtt, received)
        if resp.status_code == 200:
            return doc
        message = str(doc.get("message", "")) if isinstance(doc, dict) else ""
        seq = doc.get("seq") if isinstance(doc, dict) else None
        if resp.status_code == 401:
            # central.service.CentralLog.authenticate's words for a time too far from its own
            if message.startswith("request is stale"):
                raise SyncStaleError(f"central refused: {message}")
            raise SyncAuthError(f"central refused: {message}")
        if resp.status_code == 409:
            raise ChainMismatchError(f"central refused the batch: {message}",
                                     seq if isinstance(seq, int) else None)
        if resp.status_code >= 500:
            raise SyncUnavailableError(f"central failed: {message}")
        raise SyncProtocolError(f"central says HTTP {resp.status_code}: {message}")

    def _unsigned_refusal(self, method: str, path: str, resp: httpx.Response, rtt: int,
                          received: float) -> SyncAuthError:
        """The error for an unsigned refusal (HTTP 400 or 401 without a signature): the
        service's words, shown as unverified, since anyone on the way could have written
        them. A stale refusal's time is kept only to sign the one retry."""
        try:
            doc = json.loads(resp.content)
        except ValueError:
            doc = None
        said = doc.get("message") if isinstance(doc, dict) else None
        text = str(said) if said is not None else resp.text
        message = "".join(c if c.isprintable() else "?" for c in text)[:300]
        where = f"{method} {path}: central refused (HTTP {resp.status_code}, unverified: the " \
                f"answer is not signed)"
        central = doc.get("time_ms") if isinstance(doc, dict) else None
        if resp.status_code == 401 and message.startswith("request is stale") and \
                type(central) is int:
            self._stale_hint_ms = central + rtt // 2 - int(received * 1000)
            return SyncStaleError(f"{where}: {message}")
        return SyncAuthError(f"{where}: {message}")

    def _take_time(self, doc: Any, rtt: int, received: float) -> None:
        """Keep the service's time from a verified answer as the anchor (in memory; stored in
        the ledger by :meth:`sync_once`)."""
        central = doc.get("time_ms") if isinstance(doc, dict) else None
        if type(central) is not int:
            return  # a service from before time_ms
        self._stale_hint_ms = None
        boot_id, boot_ms = boot_now()
        self.anchor = ClockAnchor(central + rtt // 2, int(received * 1000), boot_id, boot_ms,
                                  rtt)

    def _store_anchor(self, ledger: Ledger) -> None:
        anchor = self.anchor
        if anchor is None or anchor == self._anchor_stored:
            return
        try:
            ledger.set_clock_anchor(anchor)
            self._anchor_stored = anchor
        except LedgerError as err:  # the round's own outcome matters more than the anchor
            log.warning("clock anchor not kept: %s", err)

    # -- one round ----------------------------------------------------------------------------

    def sync_once(self, progress: Progress | None = None) -> SyncSummary:
        """Send every unsynced entry, then fetch deny list, balances and config."""
        summary = SyncSummary()
        self.last_summary = summary
        ledger = Ledger(self.ledger_path, key=self.key, tail_check=0)
        try:
            self.terminal_id = ledger.terminal_id
            if self.anchor is None:
                # An offset kept on this boot still holds; after a reboot the wall clock
                # restarted from something else, and the first answer tells it again.
                kept = ledger.clock_anchor()
                if kept is not None and kept.carried(*boot_now()) is not None:
                    self.anchor = self._anchor_stored = kept
            state = self._load_state()
            try:
                self._upload(ledger, state, summary, progress)
                self._fetch(ledger, state, summary)
                self._report_rejected()
                self._report_status(state)
            finally:
                self._store_anchor(ledger)
            summary.synced_upto = ledger.synced_upto()
        finally:
            ledger.close()
        self.last_error = None
        return summary

    def _prepare(self, ledger: Ledger, start: int, head: int) -> tuple[list[Entry], bytes]:
        end = min(start + self.batch_size - 1, head)
        entries = list(ledger.entries(start, end))
        if not entries or entries[0].seq != start:
            raise SyncProtocolError(f"ledger has no entry {start} to send")
        # A batch of unusually large entries is cut to the byte cap: the service refuses a
        # body over its limit before reading it, and the same batch sent again would be
        # refused for ever. One entry always goes (none is near the service's limit).
        size, pairs = 0, list[tuple[bytes, bytes]]()
        for e in entries:
            data = e.encoded()
            size += _b64_len(len(data)) + _b64_len(len(e.signature)) + _ENTRY_JSON
            if pairs and size > self.max_batch_bytes:
                break
            pairs.append((data, e.signature))
        return entries[:len(pairs)], batch_body(self.terminal_id, pairs)

    def _upload(self, ledger: Ledger, state: dict[str, Any], summary: SyncSummary,
                progress: Progress | None) -> None:
        head = ledger.head.seq
        start = ledger.synced_upto() + 1
        summary.head = head
        total = max(head - start + 1, 0)
        if progress:
            progress(0, total)
        days: set[str] = set()
        pending = self._prepare(ledger, start, head) if start <= head else None
        # One batch in flight while the next is read and encoded: the service must take
        # batches in order, so this overlaps our work with its work and no more.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-upload") as pool:
            while pending is not None and not self._stop.is_set():
                entries, body = pending
                answer = pool.submit(self._request, "POST", "/v1/batches", body)
                last = entries[-1].seq
                pending = self._prepare(ledger, last + 1, head) if last < head else None
                days.update(self._day(e.fields.wall_ms) for e in entries)
                receipt = BatchReceipt.from_json(answer.result())
                note = self._check_receipt(receipt, entries[-1], state)
                # kept with the checkpoint: a process killed before the round's report
                # leaves its days to the next round, which starts past their entries
                state["days_unreported"] = sorted(set(state.get("days_unreported", ())) | days)
                self._save_state(state)
                # Counters restart from the unsynced entries once the backlog is in; a
                # recount after every batch would rescan the rest of the backlog each time.
                try:
                    ledger.mark_synced(last, note, recount=last >= head)
                except LedgerStateError:
                    # another sync of this ledger (one run by hand beside the terminal's
                    # own) marked past this batch: central holds it all the same
                    if ledger.synced_upto() < last:
                        raise
                summary.sent += receipt.accepted
                summary.batches += 1
                summary.duplicates += receipt.accepted == 0
                if progress:
                    progress(last - (head - total), total)
        days.update(str(d) for d in state.get("days_unreported", ()))
        if days:
            self._report_totals(ledger, days, summary, state)

    def _check_receipt(self, receipt: BatchReceipt, last: Entry, state: dict[str, Any]) -> str:
        if receipt.terminal_id != self.terminal_id or receipt.last_seq != last.seq:
            raise ProofError(f"receipt is for {receipt.terminal_id} entry {receipt.last_seq}, "
                             f"not {self.terminal_id} entry {last.seq}")
        cp = Checkpoint.verify(receipt.checkpoint, self.verifier)
        merkle.verify_inclusion(merkle.leaf_hash(last.encoded()), receipt.log_index, cp.size,
                                receipt.proof, cp.root)
        self.check_consistency(cp, receipt.checkpoint, state)
        return receipt.checkpoint

    def check_consistency(self, cp: Checkpoint, note: str, state: dict[str, Any]) -> None:
        """Prove that ``cp`` and the kept checkpoint are views of one append-only log; keep
        the larger. Raises :class:`ProofError` when the central log rewrote history."""
        kept_note = state.get("checkpoint")
        if not kept_note:
            state["checkpoint"] = note
            return
        kept = self._kept_checkpoint(state)
        old, new = (kept, cp) if kept.size <= cp.size else (cp, kept)
        if old.size != new.size or old.root != new.root:
            doc = self._request("GET", f"/v1/consistency?from={old.size}&to={new.size}")
            proof = [unb64(p, "consistency hash") for p in doc.get("proof", [])]
            try:
                merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
            except ProofError as err:
                raise ProofError(
                    f"central log is not append-only between sizes {old.size} and "
                    f"{new.size}: {err}") from err
        if cp.size > kept.size:
            state["checkpoint"] = note

    def _day(self, wall_ms: int) -> str:
        # Every UTC offset in use is a whole number of quarter hours, so a day never
        # changes inside a quarter hour and one answer serves all of it.
        quarter = wall_ms // QUARTER_MS
        day = self._days.get(quarter)
        if day is None:
            day = datetime.fromtimestamp(quarter * 900, self.tz).strftime("%Y-%m-%d")
            self._days[quarter] = day
        return day

    def day_totals(self, ledger: Ledger, days: set[str]) -> dict[str, dict[str, list[int]]]:
        """The terminal's own totals (kind -> [count, amount]) for each of ``days``: its
        entries and what pruning removed of them."""
        totals: dict[str, dict[str, list[int]]] = defaultdict(dict)
        held = ((wall_ms, kind, 1, amount) for wall_ms, kind, amount in ledger.kind_amounts())
        pruned = ((quarter * QUARTER_MS, kind, count, amount)
                  for quarter, kind, count, amount in ledger.pruned_sums())
        for wall_ms, kind, count, amount in itertools.chain(held, pruned):
            day = self._day(wall_ms)
            if day in days:
                slot = totals[day].setdefault(kind, [0, 0])
                slot[0] += count
                slot[1] += amount
        return totals

    def _report_totals(self, ledger: Ledger, days: set[str], summary: SyncSummary,
                       state: dict[str, Any]) -> None:
        totals = self.day_totals(ledger, days)
        for day in sorted(days):
            kinds = totals.get(day)
            if kinds:
                body = json.dumps({"day": day, "totals": kinds}).encode()
                self._request("POST", "/v1/totals", body)
                summary.days_reported.append(day)
            left = set(state.get("days_unreported", ())) - {day}
            if left != set(state.get("days_unreported", ())):
                state["days_unreported"] = sorted(left)
                self._save_state(state)

    def _round(self, ledger: Ledger, state: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The first answer of each of the round's fetches, in one request
        (``GET /v1/round``): each part is what its own route answers for the same since."""
        points_since, _ = ledger.points_state()
        sinces = {"deny": f"/v1/deny?since={ledger.deny_version()}",
                  "balances": f"/v1/balances?since={int(state.get('balances_version', 0))}",
                  "points": f"/v1/points?since={points_since}"
                            f"&riders_since={ledger.riders_version()}",
                  "pockets": f"/v1/pockets?since={pockets.state(ledger).version}",
                  "config": "/v1/config"}
        doc: Any = None
        if time.monotonic() >= self._no_round_until:
            try:
                doc = self._request(
                    "GET", f"/v1/round?deny_since={ledger.deny_version()}"
                    f"&balances_since={int(state.get('balances_version', 0))}"
                    f"&points_since={points_since}&riders_since={ledger.riders_version()}"
                    f"&pockets_since={pockets.state(ledger).version}")
            except RouteMissingError:
                # a service from before the route (terminals are updated before their
                # service): each part from its own route, asked again in ten minutes
                log.warning("central has no /v1/round: fetching its parts one by one")
                self._no_round_until = time.monotonic() + 600.0
        if doc is None:
            doc = {name: self._request("GET", path) for name, path in sinces.items()}
        parts = {}
        for name in ROUND_PARTS:
            part = doc.get(name) if isinstance(doc, dict) else None
            if not isinstance(part, dict):
                raise SyncProtocolError(f"round answer must have {name!r} {{}}")
            parts[name] = part
        return parts

    def _fetch(self, ledger: Ledger, state: dict[str, Any], summary: SyncSummary) -> None:
        first = self._round(ledger, state)
        since = ledger.deny_version()
        deny = first["deny"]
        version = get_int(deny, "version")
        add, remove = deny.get("add", {}), deny.get("remove", [])
        if not isinstance(add, dict) or not isinstance(remove, list):
            raise SyncProtocolError("deny list answer must have 'add' {} and 'remove' []")
        if version > since:
            ledger.apply_deny_delta(version, {str(k): str(v) for k, v in add.items()},
                                    [str(t) for t in remove])
            summary.deny_added = len(add)
        summary.deny_version = max(version, since)
        while True:
            since_b = int(state.get("balances_version", 0))
            doc = first.pop("balances", None) or self._request("GET",
                                                               f"/v1/balances?since={since_b}")
            version_b = get_int(doc, "version")
            balances = doc.get("balances", {})
            if not isinstance(balances, dict) or version_b <= since_b:
                break
            ledger.set_balances({str(k): int(v) for k, v in balances.items()}, version_b)
            summary.balances += len(balances)
            state["balances_version"] = version_b
            self._save_state(state)
        self._fetch_points(ledger, summary, first["points"])
        self._fetch_pockets(ledger, summary, first["pockets"])
        cfg = first["config"]
        version_c = get_int(cfg, "version")
        if version_c > int(state.get("config_version", 0)):
            if self.on_config is not None:
                self.on_config(version_c, str(cfg.get("body", "")))
            state["config_version"] = version_c
            self._save_state(state)
        summary.config_version = int(state.get("config_version", 0))
        if state.get("checkpoint"):
            summary.tree_size = self._kept_checkpoint(state).size

    def _fetch_points(self, ledger: Ledger, summary: SyncSummary,
                      first: dict[str, Any] | None = None) -> None:
        """This week's bus points per card and the rules' summary, for the validator to show
        points offline, and the riders' profile changes, for it to charge each category's
        fare (``GET /v1/points``); each from the version the ledger holds, so only changes
        travel."""
        while True:
            since, held_rules = ledger.points_state()
            riders_since = ledger.riders_version()
            doc, first = first or self._request(
                "GET", f"/v1/points?since={since}&riders_since={riders_since}"), None
            version = get_int(doc, "version")
            rows, rules, week = doc.get("points"), doc.get("rules"), doc.get("week_start")
            if not isinstance(rows, dict) or not isinstance(rules, dict) or not isinstance(
                    week, str):
                raise SyncProtocolError("points answer must have 'points' {}, 'rules' {} and "
                                        "'week_start'")
            rules_text = json.dumps(rules, sort_keys=True, separators=(",", ":"))
            if version > since or rules_text != held_rules:
                try:
                    parsed = {str(t): (week, int(v[0]), int(v[1]), str(v[2]))
                              for t, v in rows.items()}
                except (TypeError, ValueError, IndexError) as err:
                    raise SyncProtocolError(f"points answer has a bad row: {err}") from err
                ledger.set_points_snapshot(parsed, max(version, since), rules_text)
                summary.points += len(parsed)
            riders_version = self._store_riders(ledger, doc.get("riders"), riders_since,
                                                summary)
            if version <= since and riders_version <= riders_since:
                return

    def _report_rejected(self) -> None:
        """Tell the central service of a config bundle the terminal refused; the report is
        removed once central has it, kept for the next round when it could not take it."""
        path = self.ledger_path.with_name(REJECTED_REPORT)
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            return
        try:
            self._request("POST", "/v1/config/rejected", body)
        except SyncProtocolError as err:  # a service without the route: the round stands
            log.warning("refused config bundle not reported: %s", err)
            return
        path.unlink(missing_ok=True)

    def _report_status(self, state: dict[str, Any]) -> None:
        body = status_report.status_body(self.faults())
        sent = status_report.digest(body)
        if state.get("status_sent") == sent or time.monotonic() < self._no_status_until:
            return
        try:
            self._request("POST", status_report.PATH, body)
        except RouteMissingError:  # a service from before the route: the round stands
            self._no_status_until = time.monotonic() + 600.0
            return
        state["status_sent"] = sent
        self._save_state(state)

    def _fetch_pockets(self, ledger: Ledger, summary: SyncSummary,
                       first: dict[str, Any] | None = None) -> None:
        """Cards' pocket balances and the rules of this terminal's merchant, for splitting
        payments offline (``GET /v1/pockets``, keys in ``central.pocket_snapshot``): changes
        after the version held, until none is left. An answer for another municipality than
        the one held (the till moved, or has no merchant now) replaces everything held."""
        while True:
            held = pockets.state(ledger)
            doc, first = first or self._request("GET", f"/v1/pockets?since={held.version}"), None
            version = get_int(doc, "version")
            snapshot, cards = _pocket_answer(doc, version)
            moved = snapshot.municipality != held.municipality
            if moved and held.version:
                # its versions count another municipality's changes: start from nothing
                pockets.store(ledger, pockets.PocketState(municipality=snapshot.municipality),
                              {}, reset=True)
                continue
            if moved or cards or snapshot != dataclasses.replace(held, version=version):
                pockets.store(ledger, snapshot if version >= held.version else
                              dataclasses.replace(snapshot, version=held.version),
                              cards, reset=moved)
                summary.pockets += len(cards)
            if version <= held.version or not cards:
                return

    @staticmethod
    def _store_riders(ledger: Ledger, riders: Any, since: int, summary: SyncSummary) -> int:
        """Store ``{"version", "changes": {token: category}}`` (``""``: profile removed);
        the version now held. A service from before riders sends none: nothing changes."""
        if riders is None:
            return since
        changes = riders.get("changes") if isinstance(riders, dict) else None
        if not isinstance(changes, dict) or not all(
                isinstance(t, str) and isinstance(r, str) for t, r in changes.items()):
            raise SyncProtocolError("points answer's 'riders' must be {version, changes: "
                                    "{card token: category}}")
        version = get_int(riders, "version")
        if version < since:
            raise SyncProtocolError(f"riders version {version} is older than {since}")
        if version > since or changes:
            ledger.set_riders(changes, version)
            summary.riders += len(changes)
        return version

    # -- background ---------------------------------------------------------------------------

    def start(self) -> None:
        """Sync every ``interval_s`` in a daemon thread until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="localpay-sync", daemon=True)
        self._thread.start()

    def wait(self, timeout: float) -> bool:
        """Wait until stopped or ``timeout`` s; True once stopped."""
        return self._stop.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.sync_once()
                failures = 0
                wait = self.interval_s
            except (SyncUnavailableError, SyncStaleError) as err:
                # a stale refusal after its own retry is a clock still moving (NTP stepping
                # it under the request): the next round's time is better, not a person's job
                self.last_error = err
                wait = self.backoff.delay(failures)
                failures += 1
                log.warning("sync failed, again in %.1f s: %s", wait, err)
            except SyncError as err:
                # Refusals and bad proofs need a person: keep trying, slowly, and say so.
                self.last_error = err
                wait = self.backoff.cap
                log.error("sync refused: %s: %s", type(err).__name__, err)
            except Exception as err:  # the thread must outlive any one bad round
                self.last_error = SyncError(f"{type(err).__name__}: {err}")
                wait = self.backoff.delay(failures)
                failures += 1
                log.exception("sync round failed")
            self._stop.wait(wait)

    def close(self) -> None:
        self.stop()
        self._http.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pocket_answer(doc: Any, version: int) -> tuple[pockets.PocketState,
                                                   dict[str, dict[str, pockets.Wire] | None]]:
    """The snapshot and cards of a ``GET /v1/pockets`` answer, checked."""
    texts = {k: doc.get(k) for k in ("municipality", "merchant", "rules")}
    cards = doc.get("cards")
    if not all(isinstance(v, str) for v in texts.values()) or not isinstance(cards, dict):
        raise SyncProtocolError("pockets answer must have 'municipality', 'merchant', 'rules' "
                                "text and 'cards' {}")
    out: dict[str, dict[str, pockets.Wire] | None] = {}
    try:
        for token, held in cards.items():
            if held is None:
                out[str(token)] = None
                continue
            out[str(token)] = {str(p): (_won(w[0]), [str(d) for d in w[1]],
                                        None if w[2] is None else str(w[2]))
                               for p, w in held.items()}
    except (TypeError, ValueError, IndexError, AttributeError, KeyError) as err:
        raise SyncProtocolError(f"pockets answer has a bad card: {err}") from err
    snapshot = pockets.PocketState(version, str(texts["municipality"]),
                                   str(texts["merchant"]), get_int(doc, "rules_version"),
                                   str(texts["rules"]))
    return snapshot, out


def _won(value: Any) -> int:
    if type(value) is not int:
        raise ValueError(f"a balance must be whole won, not {value!r}")
    return value

