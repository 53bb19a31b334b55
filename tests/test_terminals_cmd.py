"""``localpay central terminals`` and ``central terminal revoke`` against a real
``localpay central serve``, on SQLite and PostgreSQL: what the list shows is what the test
sent (worked out here), and a revoked terminal is refused (401) at its next request by the
running service, while the others go on."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import municipalities
from central import open_service as open_central
from central.service import CentralLog
from firmware_cfg import bundle as bundles
from firmware_cfg.keys import public_hex
from localpay.cli import cli
from localpay.cli.bench.stacks import CentralProcess, fill_ledger, start_central
from localpay.encoding import EntryFields, canonical_detail, encode, entry_hash
from sync.client import SyncClient
from sync.protocol import batch_body
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401
from tests.signed_requests import signed

SERVE = ("-m", "localpay", "central", "serve", "--init")


def entries_with_clock(key: Ed25519PrivateKey, terminal: str, walls: list[int],
                       clocks: list[str], place: str) -> list[tuple[bytes, bytes]]:
    out, prev = [], bytes(32)
    for seq, (wall, clock) in enumerate(zip(walls, clocks, strict=True), start=1):
        data = encode(EntryFields(seq, "tap", terminal, f"{seq:064x}", 1500, 0, place, wall,
                                  wall, canonical_detail({"clock": clock}), prev))
        out.append((data, key.sign(data)))
        prev = entry_hash(data)
    return out


@dataclass
class Stack:
    svc: CentralLog
    srv: CentralProcess
    db: str
    data: Path
    keys: dict[str, Ed25519PrivateKey]
    added: tuple[float, float]


@pytest.fixture
def stack(store_url: str, tmp_path: Path) -> Iterator[Stack]:  # noqa: F811
    data = tmp_path / "data"
    svc = open_central(store_url, data)
    municipalities.add(svc.store, "gimpo", "Gimpo", "Gimpo Pay")
    keys = {t: Ed25519PrivateKey.generate() for t in ("T-A", "T-B", "T-G")}
    before = time.time()
    for t, k in keys.items():
        svc.add_terminal(t, bytes.fromhex(public_hex(k)),
                         municipality="gimpo" if t == "T-G" else "default")
    after = time.time()
    srv = start_central(store_url, data, command=SERVE)
    try:
        yield Stack(svc, srv, store_url, data, keys, (before, after))
    finally:
        srv.stop()
        svc.store.close()


def run(s: Stack, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, ["central", *args, "--db", s.db, "--data", str(s.data)])
    assert result.exit_code == code, result.output
    return result.output


def listed(s: Stack, *args: str) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in run(s, "terminals", "--json", *args).splitlines()]
    return {r["terminal_id"]: r for r in rows}


def test_terminals_list_and_revoke(stack: Stack, tmp_path: Path) -> None:
    s = stack
    url = s.srv.url
    # T-A: a real ledger of 12 entries synced by the real client, batches of 5
    n_a = 12
    start_ms = int(time.time() * 1000) - 300_000
    fill_ledger(tmp_path / "a.sqlite", s.keys["T-A"], "T-A", n_a, start_ms=start_ms).close()
    client = SyncClient(tmp_path / "a.sqlite", s.keys["T-A"], url, s.srv.verifier,
                        batch_size=5)
    before_a = time.time()
    try:
        client.sync_once()
    finally:
        client.close()
    after_a = time.time()
    # its config: version 2, a till at merchant M-77 (the service files any signed bundle)
    text = '[terminal]\nid = "T-A"\nrole = "till"\nplace = "M-77"\n'
    s.svc.publish_config(bundles.make(Ed25519PrivateKey.generate(), "T-A", 2, text).decode())
    # T-B by hand: 3 entries at route 720, the last made with its clock anchored
    walls = [int(time.time() * 1000) - 30_000 + i * 1000 for i in range(3)]
    body = batch_body("T-B", entries_with_clock(s.keys["T-B"], "T-B", walls,
                                                ["synchronised", "unknown", "anchored"], "720"))
    assert signed(url, s.keys["T-B"], "T-B", "POST", "/v1/batches", body).status_code == 200

    rows = listed(s)
    assert sorted(rows) == ["T-A", "T-B", "T-G"]
    a, b, g = rows["T-A"], rows["T-B"], rows["T-G"]
    assert (a["municipality"], a["role"], a["place"], a["config_version"]) == (
        "default", "till", "M-77", 2)
    assert (a["last_seq"], a["last_entry_ms"], a["clock"]) == (n_a, start_ms + n_a * 1000, "")
    assert before_a * 1000 - 10 <= a["last_seen_ms"] <= after_a * 1000 + 10
    assert s.added[0] * 1000 - 10 <= a["enrolled_ms"] <= s.added[1] * 1000 + 10
    # its last batch held entries 11..12: entry 11 waited from start + 11 s until it arrived
    waited_from = start_ms + 11 * 1000
    assert before_a * 1000 - waited_from - 10 <= a["sync_lag_ms"] <= (
        after_a * 1000 - waited_from + 10)
    assert (a["revoked_ms"], a["revoked_reason"]) == (None, "")
    assert (b["role"], b["place"], b["config_version"], b["last_seq"], b["clock"]) == (
        "", "720", 0, 3, "anchored")
    assert (g["municipality"], g["last_seq"], g["last_seen_ms"], g["sync_lag_ms"]) == (
        "gimpo", 0, 0, None)
    assert sorted(listed(s, "--municipality", "gimpo")) == ["T-G"]
    assert sorted(listed(s, "--municipality", "default")) == ["T-A", "T-B"]
    assert "no municipality 'nowhere'" in run(s, "terminals", "--municipality", "nowhere",
                                              code=2)

    # revoke T-A: its very next request is refused by the running service
    assert signed(url, s.keys["T-A"], "T-A", "GET", "/v1/deny?since=0").status_code == 200
    before = time.time()
    out = run(s, "terminal", "revoke", "T-A", "--reason", "stolen from bus 7")
    after = time.time()
    assert "terminal T-A revoked at" in out
    refused = signed(url, s.keys["T-A"], "T-A", "GET", "/v1/deny?since=0")
    assert refused.status_code == 401
    assert refused.json()["message"] == "terminal 'T-A' is revoked"
    batch = signed(url, s.keys["T-A"], "T-A", "POST", "/v1/batches", body)
    assert batch.status_code == 401
    # the others go on
    assert signed(url, s.keys["T-B"], "T-B", "GET", "/v1/deny?since=0").status_code == 200
    a = listed(s)["T-A"]
    assert before * 1000 - 10 <= a["revoked_ms"] <= after * 1000 + 10
    assert a["revoked_reason"] == "stolen from bus 7"
    table = run(s, "terminals")
    assert "3 terminal(s)" in table
    line = next(x for x in table.splitlines() if "T-A" in x)
    assert "REVOKED" in line and "(stolen from bus 7)" in line
    assert "REVOKED" not in next(x for x in table.splitlines() if "T-B" in x)
    assert "revoked already" in run(s, "terminal", "revoke", "T-A", code=2)
    assert "no terminal 'T-Z'" in run(s, "terminal", "revoke", "T-Z", code=2)
    metrics = httpx.get(url + "/metrics", timeout=10).text
    assert 'localpay_terminals{state="revoked"} 1.0' in metrics
    assert 'localpay_terminals{state="active"} 2.0' in metrics
