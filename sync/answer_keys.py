"""The terminal's knowledge of the key that signs the central service's answers.

The service signs answers with its answer key, never with its log key (``sync.protocol``).
The terminal trusts the log key only (its config's ``keys.central_public_key``), so it takes
the answer key from the log key's statement naming it (``GET /v1/answer-key``, a signed note
checked with the log key), keeps that statement in a file beside its ledger, reads it again
on the next start (checked again with the log key), and fetches it when it has none or an
answer names another key ID (the service was given a new answer key): once per answer, so a
forged answer costs one fetch and is refused.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import httpx

from localpay.durable import write_durably
from localpay.errors import ProofError, SyncProtocolError, SyncUnavailableError
from sync.checkpoint import NoteVerifier
from sync.protocol import ANSWER_KEY_PATH, UNAVAILABLE, open_answer_key

log = logging.getLogger(__name__)


class AnswerKeys:
    """The answer key the log key ``log_key`` names, kept in ``path`` and fetched over
    ``http`` (a client whose base URL is the service's)."""

    def __init__(self, http: httpx.Client, log_key: NoteVerifier, path: Path) -> None:
        self.http = http
        self.log_key = log_key
        self.path = path
        #: the key answers are checked with, once known (None: not yet read or fetched)
        self.current: NoteVerifier | None = None
        # the sync thread and an online QR call may both ask at once
        self._lock = threading.Lock()
        #: until when (monotonic s) the service is taken for one that publishes no answer key
        self._none_until = 0.0

    def service_has_none(self) -> bool:
        """Whether the service publishes no answer key (404 at ``GET /v1/answer-key``: a
        release from before answer keys, which signs its answers with its log key) and this
        terminal has never learned one. Terminals are updated before their service; such a
        service's answers are checked with the log key, which a service that has an answer
        key never signs an answer with. Asked again every ten minutes, and never again once a
        key was learned."""
        with self._lock:
            if self.current is None:
                self.current = self._kept()
            if self.current is not None:
                return False
            now = time.monotonic()
            if now < self._none_until:
                return True
            try:
                resp = self.http.get(ANSWER_KEY_PATH)
            except httpx.HTTPError as err:
                raise SyncUnavailableError(f"GET {ANSWER_KEY_PATH}: {type(err).__name__}: "
                                           f"{err}") from err
            if resp.status_code != 404:
                return False
            log.warning("central publishes no answer key (a release from before them): its "
                        "answers are checked with its log key until it does")
            self._none_until = now + 600.0
            return True

    def key_for(self, method: str, path: str, key_id: str) -> NoteVerifier:
        """The key that signed an answer naming ``key_id`` (hex): the one kept, or the one
        the service's statement names now; :class:`ProofError` when that is not it."""
        with self._lock:
            if self.current is None:
                self.current = self._kept()
            known = self.current
            if known is not None and known.id.hex() == key_id:
                return known
            fetched = self._fetch()
            if known is not None and fetched.text() != known.text():
                log.warning("central's answer key is now %s (was %s)", fetched.text(),
                            known.text())
            self.current = fetched
            if fetched.id.hex() != key_id:
                raise ProofError(
                    f"{method} {path}: the answer names answer key {key_id[:16]!r}, not "
                    f"{fetched.name}+{fetched.id.hex()}, the one {self.log_key.name} names")
            return fetched

    def _kept(self) -> NoteVerifier | None:
        try:
            note = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as err:
            raise SyncProtocolError(f"answer key {self.path} unreadable: {err}") from err
        try:
            return open_answer_key(note, self.log_key)
        except (ProofError, SyncProtocolError) as err:
            # not this log's statement (its key changed with a new config): ask again
            log.warning("kept answer key %s not taken: %s", self.path, err)
            return None

    def _fetch(self) -> NoteVerifier:
        """The statement, fetched (it needs no authentication), checked with the log key
        and kept."""
        try:
            resp = self.http.get(ANSWER_KEY_PATH)
        except httpx.HTTPError as err:
            raise SyncUnavailableError(f"GET {ANSWER_KEY_PATH}: {type(err).__name__}: "
                                       f"{err}") from err
        if resp.status_code in UNAVAILABLE:
            raise SyncUnavailableError(f"GET {ANSWER_KEY_PATH}: HTTP {resp.status_code}")
        try:
            note = resp.json()["note"] if resp.status_code == 200 else None
        except (ValueError, KeyError, TypeError):
            note = None
        if not isinstance(note, str):
            raise ProofError(f"GET {ANSWER_KEY_PATH}: central names no answer key (HTTP "
                             f"{resp.status_code}): no answer of it can be checked")
        try:
            named = open_answer_key(note, self.log_key)
        except (ProofError, SyncProtocolError) as err:
            raise ProofError(f"GET {ANSWER_KEY_PATH}: {err}") from None
        write_durably(self.path, note)
        return named
