"""The sync state beside the ledger, and two syncs of one ledger at once.

Found by a review of the terminal under faults (no entry was lost or sent twice in any):
- a second `localpay sync` beside the terminal's own stopped with `LedgerStateError: cannot
  mark 400 synced (head 3000, synced 600)`: the other had marked past its batch;
- a state file cut short, empty or not JSON stopped every sync with a message that did not
  say what to do; `[]` or `null` were taken for an empty state (dropping the kept
  checkpoint, and with it the append-only check, without a word); a value of the wrong
  type gave a bare `TypeError`; a checkpoint kept from another log gave "note is not signed
  by ..." without naming the file;
- a full disk while writing the state gave a bare `OSError`.
"""

from __future__ import annotations

import errno
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.keys import load_signer
from localpay.errors import LedgerWriteError, ProofError, SyncProtocolError
from offline_ledger import Ledger
from sync import sync_state
from sync.checkpoint import Checkpoint
from sync.client import SyncClient
from tests.pg_fixtures import CentralProcess, central_with_terminal, fill_ledger

TID = "BUS-STATE"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[CentralProcess, Ed25519PrivateKey, str, Path]]:
    with central_with_terminal(tmp_path / "central", TID) as stack:
        yield stack


class SyncsBetween(httpx.BaseTransport):
    """After the first batch's answer has come, another sync of the same ledger runs whole
    before this client sees it (as `localpay sync` by hand beside the terminal's loop)."""

    def __init__(self, other: Any) -> None:
        self.inner = httpx.HTTPTransport()
        self.other = other
        self.ran = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = self.inner.handle_request(request)
        if request.url.path == "/v1/batches" and not self.ran:
            self.ran = True
            resp.read()
            self.other()
        return resp


def test_a_sync_beside_another_of_the_same_ledger_goes_on(
        stack: tuple[CentralProcess, Ed25519PrivateKey, str, Path], tmp_path: Path) -> None:
    server, key, _, _ = stack
    path = tmp_path / "ledger.sqlite"
    fill_ledger(path, key, TID, 300).close()
    whole: list[int] = []

    def other() -> None:
        with SyncClient(path, key, server.url, server.verifier) as by_hand:
            whole.append(by_hand.sync_once().sent)

    with SyncClient(path, key, server.url, server.verifier, batch_size=100,
                    transport=SyncsBetween(other)) as loop:
        summary = loop.sync_once()
    # the loop's first batch held 1..100; the other sync sent the other 200 and marked all
    assert whole == [200]
    assert summary.sent == 100 and summary.duplicates == 2
    assert summary.tree_size == summary.synced_upto == 300
    with Ledger(path, key=key) as led:
        assert led.synced_upto() == 300


ADVICE = (r"restore it from a backup, or move it aside and sync again \(sync then starts from "
          r"central's next checkpoint, without the append-only check against the one it held\)$")


@pytest.mark.parametrize(("text", "why"), [
    ("", "Expecting value: line 1 column 1 (char 0)"),
    ('{"checkpoint": "localpay', "Unterminated string starting at: line 1 column 16 (char 15)"),
    ("\0\0\0", "Expecting value: line 1 column 1 (char 0)"),
    ("[]", "a JSON list, not an object"),
    ("null", "a JSON NoneType, not an object"),
    ('{"checkpoint": 5}', "checkpoint is 5, not a str"),
    ('{"days_unreported": 5}', "days_unreported is 5, not a list"),
    ('{"days_unreported": [20261127]}', "days_unreported holds a day that is not text"),
    ('{"balances_version": "x"}', "balances_version is 'x', not a int"),
    ('{"config_version": true}', "config_version is True, not a int"),
    ('{"status_sent": 1}', "status_sent is 1, not a str"),
])
def test_a_state_that_cannot_be_read_is_refused_with_what_to_do(tmp_path: Path, text: str,
                                                                why: str) -> None:
    path = tmp_path / "ledger.sqlite.sync.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SyncProtocolError) as err:
        sync_state.load(path)
    message = str(err.value)
    assert message.startswith(f"sync state {path} unreadable: {why}. It holds the last "
                              "checkpoint central proved and the days whose totals are still "
                              "owed: ")
    assert re.search(ADVICE, message)


def test_a_state_of_the_kinds_written_is_read_back(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite.sync.json"
    assert sync_state.load(path) == {}
    state = {"checkpoint": "note", "days_unreported": ["2026-11-27"], "balances_version": 3,
             "config_version": 2, "status_sent": "ab", "other": [1]}
    sync_state.save(path, state)
    assert sync_state.load(path) == state
    assert json.loads(path.read_text()) == state


def test_a_full_disk_while_writing_the_state_is_a_typed_error_and_keeps_the_last(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk is made full by the write failing as the kernel fails it (a full disk
    cannot be made here without mounting a file system)."""
    path = tmp_path / "ledger.sqlite.sync.json"
    sync_state.save(path, {"checkpoint": "kept"})

    def full(*_: Any, **__: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sync_state, "write_durably", full)
    with pytest.raises(LedgerWriteError, match=rf"^sync state {path} not written: \[Errno 28\] "
                                               r"No space left on device$"):
        sync_state.save(path, {"checkpoint": "newer"})
    assert sync_state.load(path) == {"checkpoint": "kept"}


def test_a_checkpoint_kept_from_another_log_names_the_file(
        stack: tuple[CentralProcess, Ed25519PrivateKey, str, Path], tmp_path: Path) -> None:
    server, key, _, data = stack
    path = tmp_path / "ledger.sqlite"
    fill_ledger(path, key, TID, 5).close()
    # another central's log, of the same name, with a key of its own
    stranger = load_signer(tmp_path / "other", load_signer(data, create=False).name)
    state_path = tmp_path / "ledger.sqlite.sync.json"
    state_path.write_text(json.dumps(
        {"checkpoint": Checkpoint(stranger.name, 3, bytes(32)).sign(stranger)}))
    with SyncClient(path, key, server.url, server.verifier) as client:
        with pytest.raises(ProofError) as err:
            client.sync_once()
    assert str(err.value).startswith(f"the checkpoint kept in {state_path} is not this log's (")
    assert str(err.value).endswith("the file was written for another central service, or the "
                                   "log's key changed. Restore the right file, or move it "
                                   "aside and sync again (sync then starts from central's "
                                   "next checkpoint)")
