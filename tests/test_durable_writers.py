"""Two processes saving one file at once: a running terminal's own sync and a `localpay sync`
beside it both save the sync state kept beside the ledger (seen on CI: the second save's
rename found its temporary file gone, renamed by the first, and `localpay sync` failed).

The two writers' steps are interleaved here on purpose: the second writer's whole save runs
between the first's write and its rename, by wrapping the rename (``replace_durably``). That
order is the one the race needs, and two real processes meet in it only now and then.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from localpay import durable
from sync.checkpoint import NoteSigner
from sync.client import SyncClient

_LOG = NoteSigner("central.example", Ed25519PrivateKey.generate())


def _client(home: Path) -> SyncClient:
    # the address is never called: only the state kept beside the ledger is used
    return SyncClient(home / "ledger.sqlite", Ed25519PrivateKey.generate(), "http://127.0.0.1:9",
                      _LOG.verifier, max_retries=0)


def test_a_save_beside_another_save_keeps_one_whole_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    running, beside = _client(tmp_path), _client(tmp_path)
    real_replace = durable.replace_durably
    interleaved: list[str] = []

    def replace_after_the_other_saves(src: Any, dst: Any) -> None:
        if not interleaved:
            interleaved.append(str(src))
            beside._save_state({"balances_version": 2, "by": "beside"})
        real_replace(src, dst)

    monkeypatch.setattr(durable, "replace_durably", replace_after_the_other_saves)
    running._save_state({"balances_version": 1, "by": "running"})
    assert interleaved, "the second save did not run between the first's write and rename"
    # the last rename wins, and what it put there is one writer's whole state
    assert json.loads(running.state_path.read_text()) == {"balances_version": 1,
                                                          "by": "running"}
    assert not list(tmp_path.glob("*.tmp")), "no temporary file is left behind"


def test_a_failed_save_leaves_the_old_state_and_no_temporary_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = _client(tmp_path)
    client._save_state({"balances_version": 1})

    def no_rename(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(durable, "replace_durably", no_rename)
    with pytest.raises(OSError, match="No space left"):
        client._save_state({"balances_version": 2})
    assert json.loads(client.state_path.read_text()) == {"balances_version": 1}
    assert not list(tmp_path.glob("*.tmp"))
