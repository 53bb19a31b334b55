"""``anchor`` by default, and ``central audit``: every stored entry's own signature and hash
link re-checked after ingest, from a cursor kept in the store, on real SQLite and
PostgreSQL; the same audit run by a real ``central serve`` in the background.

Every list of failing entries a test expects is worked out here, from the entries as the
test made them and the rows as the store holds them, with ``cryptography`` and ``hashlib``
directly (never through :mod:`central.audit`)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import open_service
from central.audit import run_audit
from central.service import CentralLog
from firmware_cfg.keys import public_hex
from localpay.cli import central_audit
from localpay.cli.main import cli
from localpay.errors import ChainMismatchError
from offline_ledger.encoding import EntryFields, encode
from sync.protocol import (
    H_NONCE,
    H_SIGNATURE,
    H_TERMINAL,
    H_TIME,
    WireEntry,
    b64,
    batch_body,
    decode_entry,
    new_nonce,
    request_message,
)
from tests.pg_fixtures import pg_cluster, signed_entries, start_central, store_url  # noqa: F401

WALL = int(time.time() * 1000) - 3_600_000
SERVE = ("-m", "localpay", "central", "serve")


@dataclass
class Stack:
    svc: CentralLog
    db: str
    data: Path
    keys: dict[str, Ed25519PrivateKey]


@pytest.fixture
def stack(store_url: str, tmp_path: Path) -> Iterator[Stack]:  # noqa: F811
    data = tmp_path / "data"
    svc = open_service(store_url, data)
    keys = {t: Ed25519PrivateKey.generate() for t in ("T-1", "T-2", "T-3")}
    for t, k in keys.items():
        svc.add_terminal(t, bytes.fromhex(public_hex(k)))
    try:
        yield Stack(svc, store_url, data, keys)
    finally:
        svc.store.close()


def audit(s: Stack, *args: str, code: int) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["central", "audit", "--json", *args, "--db", s.db,
                                      "--data", str(s.data)])
    assert result.exit_code == code, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def named(doc: dict[str, Any]) -> list[tuple[int, str, int, str]]:
    return [(f["log_index"], f["terminal"], f["seq"], f["reason"]) for f in doc["failures"]]


def with_signature(e: WireEntry, signature: bytes) -> WireEntry:
    return decode_entry(e.data, signature)


def own_signature_ok(key: Ed25519PrivateKey, data: bytes, signature: bytes) -> bool:
    try:
        key.public_key().verify(signature, data)
    except InvalidSignature:
        return False
    return True


def stored(s: Stack) -> list[tuple[int, str, int, bytes, bytes]]:
    with s.svc.store.tx(write=False) as tx:
        return [(int(i), str(t), int(q), bytes(d), bytes(g)) for i, t, q, d, g in tx.all(
            "SELECT log_index, terminal_id, seq, data, signature FROM entries "
            "ORDER BY log_index")]


def expected_failures(s: Stack) -> list[tuple[int, str, int, str]]:
    """What the audit must name, worked out from the stored rows: each entry's signature
    by its terminal's key, and its ``prev_hash`` (bytes 32 from the end of the LPE1
    encoding) against the SHA-256 of its terminal's previous stored entry."""
    rows = stored(s)
    by_seq = {(t, q): d for _, t, q, d, _ in rows}
    out = []
    for index, tid, seq, data, sig in rows:
        reasons = []
        if not own_signature_ok(s.keys[tid], data, sig):
            reasons.append("bad signature")
        prev = bytes(32) if seq == 1 else hashlib.sha256(by_seq[(tid, seq - 1)]).digest()
        if data[-32:] != prev:
            reasons.append(f"does not link to entry {seq - 1}")
        if reasons:
            out.append((index, tid, seq, "; ".join(reasons)))
    return out


def test_anchor_is_the_default_and_every_stays_an_option(stack: Stack,
                                                        tmp_path: Path) -> None:
    s = stack
    assert s.svc.policy == "anchor"
    key = s.keys["T-1"]
    batch = signed_entries(key, "T-1", 6, wall0=WALL)
    # the terminal's own key signed other bytes than entry 3's: the chain is intact
    batch[2] = with_signature(batch[2], key.sign(b"not entry 3"))
    strict = open_service(s.db, s.data, policy="every")
    try:
        with pytest.raises(ChainMismatchError, match=r"^entry 3 has a bad signature$"):
            strict.ingest("T-1", batch)
    finally:
        strict.store.close()
    assert s.svc.ingest("T-1", batch).accepted == 6
    helps = {cmd: CliRunner().invoke(cli, [*cmd, "--help"], terminal_width=200).output
             for cmd in (("central", "serve"), ("bench", "central"))}
    for cmd, text in helps.items():
        assert "every|anchor" in text and "[default: anchor]" in text, (cmd, text)


def test_a_bad_signature_inside_a_batch_is_accepted_then_named_by_the_audit(
        stack: Stack) -> None:
    """Under ``anchor`` an entry in the middle of a batch whose own signature is wrong is
    accepted: its bytes are committed by the chain to the batch's last entry, whose
    signature is checked, and the batch came in a request the terminal signed. The audit
    names it, records it in the store, and exits 1."""
    s = stack
    k1, k2 = s.keys["T-1"], s.keys["T-2"]
    one = signed_entries(k1, "T-1", 10, wall0=WALL)
    one[4] = with_signature(one[4], k1.sign(b"something else"))       # entry 5 of T-1
    two = signed_entries(k2, "T-2", 4, wall0=WALL + 50)
    assert s.svc.ingest("T-2", two[:2]).accepted == 2                 # log 0..1
    assert s.svc.ingest("T-1", one).accepted == 10                    # log 2..11
    assert s.svc.ingest("T-2", two[2:]).accepted == 2                 # log 12..13
    sent = [*two[:2], *one, *two[2:]]
    keys = {"T-1": k1, "T-2": k2}
    bad = [(i, e.terminal_id, e.seq, "bad signature") for i, e in enumerate(sent)
           if not own_signature_ok(keys[e.terminal_id], e.data, e.signature)]
    assert bad == [(6, "T-1", 5, "bad signature")]
    assert expected_failures(s) == bad

    doc = audit(s, code=1)
    assert (doc["from"], doc["to"], doc["checked"]) == (0, 14, 14)
    assert named(doc) == bad and [f["new"] for f in doc["failures"]] == [True]
    with s.svc.store.tx(write=False) as tx:
        assert tx.all("SELECT log_index, terminal_id, seq, reason FROM audit_failures") == bad
    # a second run checks nothing new, and still says what the store holds
    again = audit(s, code=1)
    assert (again["from"], again["to"], again["checked"]) == (14, 14, 0)
    assert named(again) == bad and [f["new"] for f in again["failures"]] == [False]
    text = CliRunner().invoke(cli, ["central", "audit", "--db", s.db, "--data", str(s.data)])
    assert text.exit_code == 1
    assert "log index 6: terminal T-1 entry 5: bad signature" in text.stdout


def test_a_clean_store_audits_with_exit_0_and_the_cursor_goes_on(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    s = stack
    sent = 0
    for n, (t, k) in enumerate(s.keys.items()):
        entries = signed_entries(k, t, 7 + n, wall0=WALL + n)
        for i in range(0, len(entries), 3):
            sent += s.svc.ingest(t, entries[i:i + 3]).accepted
    assert sent == 7 + 8 + 9 and expected_failures(s) == []
    first = audit(s, code=0)
    assert (first["from"], first["to"], first["checked"], first["failures"]) == \
        (0, sent, sent, [])
    second = audit(s, code=0)
    assert (second["from"], second["to"], second["checked"]) == (sent, sent, 0)
    more = signed_entries(s.keys["T-1"], "T-1", 12, wall0=WALL)[7:]    # entries 8..12
    assert s.svc.ingest("T-1", more).accepted == 5
    third = audit(s, code=0)
    assert (third["from"], third["to"], third["checked"]) == (sent, sent + 5, 5)
    # progress goes to stderr (every chunk here, where a real run says it every 2 s)
    monkeypatch.setattr(central_audit, "PROGRESS_EVERY_S", 0.0)
    again = CliRunner().invoke(cli, ["central", "audit", "--json", "--from", "3", "--db", s.db,
                                     "--data", str(s.data)])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["checked"] == sent + 5 - 3
    assert again.stderr == f"audit: {sent + 5 - 3}/{sent + 5 - 3} entries checked\n"
    result = CliRunner().invoke(cli, ["central", "audit", "--from", str(sent + 6), "--db",
                                      s.db, "--data", str(s.data)])
    assert result.exit_code == 2
    assert f"--from {sent + 6} is past the end of the log ({sent + 5} entries)" in \
        result.output


def test_the_audit_finds_rows_altered_in_the_store_as_worked_out_here(stack: Stack) -> None:
    """Rows changed after ingest: a signature overwritten, an entry's bytes rewritten (its
    own signature no longer verifies and the next entry no longer links to it), and the
    audit's list equals the one computed from the stored rows."""
    s = stack
    k1, k2, k3 = s.keys["T-1"], s.keys["T-2"], s.keys["T-3"]
    chains = {"T-1": signed_entries(k1, "T-1", 9, wall0=WALL),
              "T-2": signed_entries(k2, "T-2", 9, wall0=WALL + 1),
              "T-3": signed_entries(k3, "T-3", 9, wall0=WALL + 2)}
    for start in range(0, 9, 3):
        for t, entries in chains.items():
            s.svc.ingest(t, entries[start:start + 3])
    assert audit(s, code=0)["checked"] == 27
    e = chains["T-2"][3]                                  # entry 4 of T-2: amount changed
    f = EntryFields(e.seq, e.kind, e.terminal_id, e.card_token, e.amount + 1000, e.ref_seq,
                    e.place, e.wall_ms, e.mono, e.detail, e.prev_hash)
    with s.svc.store.tx() as tx:
        tx.run("UPDATE entries SET signature = ? WHERE terminal_id = 'T-3' AND seq = 8",
               (k3.sign(b"not entry 8"),))
        tx.run("UPDATE entries SET data = ? WHERE terminal_id = 'T-2' AND seq = 4",
               (encode(f),))
    expected = expected_failures(s)
    assert [(t, q) for _, t, q, _ in expected] == [("T-2", 4), ("T-2", 5), ("T-3", 8)]
    assert [r for *_, r in expected] == ["bad signature", "does not link to entry 4",
                                         "bad signature"]
    # the cursor is past them: a run from the cursor checks nothing, --from 0 all again
    assert named(audit(s, code=0)) == []
    doc = audit(s, "--from", "0", code=1)
    assert doc["checked"] == 27 and named(doc) == expected
    # put back as ingested: checked again, the records of that range go
    with s.svc.store.tx() as tx:
        tx.run("UPDATE entries SET data = ? WHERE terminal_id = 'T-2' AND seq = 4", (e.data,))
    assert named(audit(s, "--from", "0", code=1)) == expected_failures(s) == [expected[2]]


def test_chunks_a_stopped_run_and_a_deleted_row(stack: Stack) -> None:
    """In chunks of 4 the audit finds what one pass finds; a run stopped after its first
    chunk has moved the cursor by that chunk; a row deleted from the store is named by its
    log index and by the next entry of its terminal."""
    s = stack
    k1, k2 = s.keys["T-1"], s.keys["T-2"]
    one, two = signed_entries(k1, "T-1", 6, wall0=WALL), signed_entries(k2, "T-2", 6, wall0=WALL)
    one[2] = with_signature(one[2], k1.sign(b"not entry 3"))           # T-1 entry 3
    for i in range(0, 6, 2):
        s.svc.ingest("T-1", one[i:i + 2])
        s.svc.ingest("T-2", two[i:i + 2])
    # log order: T-1 1,2; T-2 1,2; T-1 3,4; T-2 3,4; T-1 5,6; T-2 5,6
    calls = []
    stopped = run_audit(s.svc.store, chunk=4, stop=lambda: bool(calls),
                        progress=lambda done, total: calls.append((done, total)))
    assert (stopped.start, stopped.end, stopped.checked, calls) == (0, 4, 4, [(4, 12)])
    rest = run_audit(s.svc.store, chunk=4)
    assert (rest.start, rest.end, rest.checked) == (4, 12, 8)
    assert [(f.log_index, f.terminal_id, f.seq, f.reason) for f in rest.failures] == \
        expected_failures(s) == [(4, "T-1", 3, "bad signature")]
    with s.svc.store.tx() as tx:
        tx.run("DELETE FROM entries WHERE terminal_id = 'T-2' AND seq = 3")      # log 6
    again = run_audit(s.svc.store, start=0, chunk=4)
    assert [(f.log_index, f.terminal_id, f.seq, f.reason) for f in again.failures] == [
        (4, "T-1", 3, "bad signature"), (6, "", 0, "no entry at this log index"),
        (7, "T-2", 4, "entry 3 is missing")]
    assert again.checked == 11


# -- in the background of a real `central serve` -------------------------------------------


def post_batch(url: str, key: Ed25519PrivateKey, terminal: str,
               entries: list[WireEntry]) -> httpx.Response:
    body = batch_body(terminal, [(e.data, e.signature) for e in entries])
    nonce, now = new_nonce(), int(time.time() * 1000)
    sig = key.sign(request_message("POST", "/v1/batches", now, nonce, body))
    headers = {H_TERMINAL: terminal, H_TIME: str(now), H_NONCE: nonce, H_SIGNATURE: b64(sig)}
    return httpx.post(url + "/v1/batches", content=body, headers=headers, timeout=20)


def audit_metrics(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=20).text
    out = {}
    for line in text.splitlines():
        name, _, number = line.partition(" ")
        if name in ("localpay_audit_failures", "localpay_audit_lag_entries",
                    "localpay_log_size_entries"):
            out[name] = float(number)
    return out


def test_central_serve_audits_in_the_background(stack: Stack) -> None:
    s = stack
    key = s.keys["T-1"]
    entries = signed_entries(key, "T-1", 8, wall0=WALL)
    entries[5] = with_signature(entries[5], key.sign(b"not entry 6"))
    srv = start_central(s.db, s.data, command=SERVE, extra=("--audit-every", "0.2"))
    try:
        resp = post_batch(srv.url, key, "T-1", entries)
        assert resp.status_code == 200, resp.text               # anchor: accepted
        deadline = time.monotonic() + 30
        while (m := audit_metrics(srv.url)).get("localpay_audit_lag_entries", 1) > 0:
            assert time.monotonic() < deadline, m
            time.sleep(0.1)
        assert m == {"localpay_log_size_entries": 8, "localpay_audit_failures": 1,
                     "localpay_audit_lag_entries": 0}
    finally:
        srv.stop()
    assert expected_failures(s) == [(5, "T-1", 6, "bad signature")]
    with s.svc.store.tx(write=False) as tx:
        assert tx.all("SELECT log_index, terminal_id, seq, reason FROM audit_failures") == \
            expected_failures(s)
    lines = [json.loads(line) for line in srv.log_path.read_text().splitlines()]
    errors = [d for d in lines if d.get("level") == "error"]
    assert [(d["event"], d["terminal"], d["seq"], d["reason"]) for d in errors] == \
        [("audit_failure", "T-1", 6, "bad signature")]


def test_audit_every_0_leaves_the_audit_to_the_command(stack: Stack) -> None:
    s = stack
    key = s.keys["T-2"]
    srv = start_central(s.db, s.data, command=SERVE, extra=("--audit-every", "0"))
    try:
        assert post_batch(srv.url, key, "T-2", signed_entries(key, "T-2", 3, wall0=WALL)
                          ).status_code == 200
        time.sleep(1.0)
        assert audit_metrics(srv.url) == {"localpay_log_size_entries": 3,
                                          "localpay_audit_failures": 0,
                                          "localpay_audit_lag_entries": 3}
    finally:
        srv.stop()
    assert audit(s, code=0)["checked"] == 3


def test_bench_audit_checks_every_entry_it_ingested() -> None:
    result = CliRunner().invoke(cli, ["bench", "audit", "--stores", "sqlite", "--entries",
                                      "1000", "--terminals", "4"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    f = json.loads(result.stdout)
    assert (f["entries"], f["terminals"]) == (1000, 4)
    figures = f["sqlite"]
    assert (figures["checked"], figures["failures"]) == (1000, 0)
    assert figures["entries_per_s"] > 0 and figures["entries_per_cpu_s"] > 0
    assert f["signatures_alone_per_s"] > 0 and "postgresql" not in f
