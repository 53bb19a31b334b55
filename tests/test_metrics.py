"""Observability of the central service against a real ``localpay central serve``, on SQLite
and PostgreSQL: ``/metrics`` after real batches (a real terminal's sync client and
hand-signed batches) equals the counts worked out here; one JSON access line per request
with its request id and nothing secret; ``/healthz`` and ``/readyz`` answer 503 while the
PostgreSQL server is stopped and 200 again once it is back."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families

from central import open_service as open_central
from central.clock import EARLIEST_MS
from central.service import CentralLog
from firmware_cfg.keys import public_hex
from localpay.cli.bench.stacks import CentralProcess, fill_ledger, signed_entries, start_central
from localpay.pgserver import PgCluster
from sync.client import SyncClient
from sync.protocol import H_SIGNATURE, batch_body
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401
from tests.signed_requests import signed

SERVE = ("-m", "localpay", "central", "serve", "--init")
TOKEN = "metrics-secret-7f3a"


def batch_of(terminal: str, entries: list) -> bytes:
    return batch_body(terminal, [(e.data, e.signature) for e in entries])


def scrape(url: str, token: str | None = TOKEN) -> dict[tuple[str, tuple], float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = httpx.get(url + "/metrics", headers=headers, timeout=20)
    assert resp.status_code == 200, resp.text
    out: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def access_lines(srv: CentralProcess) -> list[dict]:
    lines = srv.log_path.read_text(encoding="utf-8").splitlines()
    docs = [json.loads(line) for line in lines]  # every line is one JSON object
    return [d for d in docs if d.get("event") == "access"]


@dataclass
class Stack:
    svc: CentralLog
    srv: CentralProcess
    key_a: Ed25519PrivateKey
    key_b: Ed25519PrivateKey
    tmp: Path


@pytest.fixture
def stack(store_url: str, tmp_path: Path) -> Iterator[Stack]:  # noqa: F811
    svc = open_central(store_url, tmp_path / "data")
    key_a, key_b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    svc.add_terminal("T-A", bytes.fromhex(public_hex(key_a)))
    svc.add_terminal("T-B", bytes.fromhex(public_hex(key_b)))
    srv = start_central(store_url, tmp_path / "data", command=SERVE,
                        extra=("--metrics-token", TOKEN))
    try:
        yield Stack(svc, srv, key_a, key_b, tmp_path)
    finally:
        srv.stop()
        svc.store.close()


def test_metrics_count_what_was_sent(stack: Stack) -> None:
    s = stack
    url = s.srv.url
    # Terminal A: a real ledger of 30 entries synced by the real client in batches of 10.
    n_a, per_batch = 30, 10
    start_ms = int(time.time() * 1000) - 600_000
    fill_ledger(s.tmp / "a.sqlite", s.key_a, "T-A", n_a, start_ms=start_ms).close()
    client = SyncClient(s.tmp / "a.sqlite", s.key_a, url, s.srv.verifier, batch_size=per_batch)
    before_a = time.time()
    try:
        summary = client.sync_once()
    finally:
        client.close()
    after_a = time.time()
    assert (summary.sent, summary.batches) == (n_a, n_a // per_batch)

    # Terminal B, by hand: a batch with a gap (refused, 3 entries), then 4 entries whose
    # stated time is before any programme (accepted, each flagged `clock`), then the same
    # 4 again (accepted, all held already).
    old = EARLIEST_MS - 86_400_000
    b_entries = signed_entries(s.key_b, "T-B", 7, wall0=old, cards=["c1" * 32, "c2" * 32])
    gap = signed(url, s.key_b, "T-B", "POST", "/v1/batches", batch_of("T-B", b_entries[4:]))
    assert gap.status_code == 409, gap.text
    before_b = time.time()
    first = signed(url, s.key_b, "T-B", "POST", "/v1/batches", batch_of("T-B", b_entries[:4]))
    assert first.status_code == 200, first.text
    again = signed(url, s.key_b, "T-B", "POST", "/v1/batches", batch_of("T-B", b_entries[:4]))
    assert again.status_code == 200, again.text
    after_b = time.time()
    # an unknown terminal: refused before its body is read (no entries counted)
    stranger = signed(url, Ed25519PrivateKey.generate(), "T-X", "POST", "/v1/batches",
                      batch_of("T-X", signed_entries(s.key_b, "T-X", 2)))
    assert stranger.status_code == 401

    m = scrape(url)
    # counted by this process, worked out from what was sent above
    assert value(m, "localpay_batches_accepted_total") == n_a // per_batch + 2
    assert value(m, "localpay_entries_accepted_total") == n_a + 4
    assert value(m, "localpay_entries_already_held_total") == 4
    assert value(m, "localpay_batches_refused_total", reason="chain_mismatch") == 1
    assert value(m, "localpay_entries_refused_total", reason="chain_mismatch") == 3
    assert value(m, "localpay_batches_refused_total", reason="not_authenticated") == 1
    assert value(m, "localpay_entries_refused_total", reason="not_authenticated") == 0
    assert value(m, "localpay_ingest_seconds_count") == n_a // per_batch + 2 + 2
    # read from the store
    assert value(m, "localpay_store_up") == 1
    assert value(m, "localpay_log_size_entries") == n_a + 4
    assert value(m, "localpay_crediting_lag_entries") == 0
    flags = {dict(k[1])["rule"]: v for k, v in m.items() if k[0] == "localpay_fraud_flags"}
    assert flags == {"clock": 4}
    assert value(m, "localpay_terminals", state="active") == 2
    seen_a = value(m, "localpay_terminal_last_seen_timestamp_seconds", terminal="T-A",
                   municipality="default")
    seen_b = value(m, "localpay_terminal_last_seen_timestamp_seconds", terminal="T-B",
                   municipality="default")
    assert before_a - 0.01 <= seen_a <= after_a + 0.01
    assert before_b - 0.01 <= seen_b <= after_b + 0.01
    # A's last batch held entries 21..30; entry 21 was stated (and is taken) at start + 21 s
    oldest_ms = start_ms + (n_a - per_batch + 1) * 1000
    lag_a = value(m, "localpay_terminal_sync_lag_seconds", terminal="T-A",
                  municipality="default")
    assert before_a - oldest_ms / 1000 - 0.01 <= lag_a <= after_a - oldest_ms / 1000 + 0.01
    # B's entries stated impossible times: each took its batch's arrival, so the wait is
    # only the batch's own time in the service (the batch is recorded as its work ends)
    lag_b = value(m, "localpay_terminal_sync_lag_seconds", terminal="T-B",
                  municipality="default")
    assert 0 <= lag_b <= after_b - before_b
    assert not any(dict(k[1]).get("terminal") == "T-X" for k in m)

    # The crediting lag is the store's: put the incentive cursor back and scrape again.
    with s.svc.store.tx() as tx:
        tx.run("UPDATE incentive_cursor SET next_index = 10 WHERE id = 1")
    assert value(scrape(url), "localpay_crediting_lag_entries") == n_a + 4 - 10


def test_metrics_token(stack: Stack) -> None:
    url = stack.srv.url
    assert httpx.get(url + "/metrics", timeout=10).status_code == 401
    wrong = httpx.get(url + "/metrics", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401
    assert "localpay_log_size_entries" in httpx.get(
        url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).text
    # never written to the log
    assert TOKEN not in stack.srv.log_path.read_text()


def test_one_json_access_line_per_request(stack: Stack) -> None:
    s = stack
    url = s.srv.url
    entries = signed_entries(s.key_a, "T-A", 3, wall0=int(time.time() * 1000) - 60_000,
                             cards=["ab" * 32])
    body = batch_of("T-A", entries)
    sig_values: list[str] = []
    sent = [
        ("rid-batch-1", "POST", "/v1/batches", 200, "T-A"),
        ("rid-deny-2", "GET", "/v1/deny?since=0", 200, "T-A"),
        ("rid-health-3", "GET", "/healthz", 200, None),
        ("rid-forged-4", "GET", "/v1/deny?since=0", 401, None),
    ]
    for rid, method, path, status, _ in sent:
        if rid == "rid-health-3":
            resp = httpx.get(url + path, headers={"X-Request-ID": rid}, timeout=10)
        elif rid == "rid-forged-4":  # signed with another key: not authenticated
            resp = signed(url, s.key_b, "T-A", method, path, request_id=rid)
        else:
            resp = signed(url, s.key_a, "T-A", method, path,
                          body if method == "POST" else b"", request_id=rid)
            sig_values.append(resp.request.headers[H_SIGNATURE])
        assert resp.status_code == status, resp.text
        assert resp.headers["X-Request-ID"] == rid
    # a request id that is not a short token is replaced by one of the service's
    odd_id = "a b\"}{" * 20  # spaces, quotes, braces, too long
    odd = httpx.get(url + "/readyz", headers={"X-Request-ID": odd_id}, timeout=10)
    new_id = odd.headers["X-Request-ID"]
    assert new_id != odd_id and re.fullmatch(r"[0-9a-f]{16}", new_id)
    time.sleep(0.2)
    lines = access_lines(s.srv)
    ids = [d["request_id"] for d in lines]
    assert len(ids) == len(set(ids))  # one line a request, each its own id
    by_id = {d["request_id"]: d for d in lines}
    for rid, method, path, status, terminal in sent:
        line = by_id[rid]
        assert (line["method"], line["path"], line["status"]) == (method, path.split("?")[0],
                                                                  status)
        assert line.get("terminal") == terminal
        assert isinstance(line["ms"], int | float) and line["ms"] >= 0
    assert by_id[new_id]["path"] == "/readyz"
    text = s.srv.log_path.read_text()
    # never bodies, card tokens, signatures or query strings
    assert "ab" * 32 not in text and "since=0" not in text
    for sig in sig_values:
        assert sig not in text
    refused = [json.loads(x) for x in text.splitlines()
               if json.loads(x).get("event") == "batch_refused"]
    assert refused == []  # the batch above was accepted
    gap = signed(url, s.key_a, "T-A", "POST", "/v1/batches",
                 batch_of("T-A", signed_entries(s.key_a, "T-A", 2, seq0=9)),
                 request_id="rid-gap-5")
    assert gap.status_code == 409
    time.sleep(0.2)
    refused = [json.loads(x) for x in s.srv.log_path.read_text().splitlines()
               if json.loads(x).get("event") == "batch_refused"]
    assert [(r["terminal"], r["reason"], r["request_id"], r["seq"]) for r in refused] == [
        ("T-A", "chain_mismatch", "rid-gap-5", 4)]


def test_health_follows_the_postgresql_server(tmp_path: Path) -> None:
    # a cluster of this test's own: stopping the shared one would fail other tests
    cluster = PgCluster()
    srv: CentralProcess | None = None
    try:
        url = cluster.new_schema()
        srv = start_central(url, tmp_path / "data", command=SERVE)
        health = httpx.get(srv.url + "/healthz", timeout=20)
        assert health.status_code == 200 and health.json()["store"]["ok"] is True
        assert httpx.get(srv.url + "/readyz", timeout=20).status_code == 200
        cluster.stop()
        down = httpx.get(srv.url + "/healthz", timeout=30)
        assert down.status_code == 503, down.text
        assert down.json()["ok"] is False and down.json()["store"] == {
            "kind": "postgresql", "ok": False}
        assert httpx.get(srv.url + "/readyz", timeout=30).status_code == 503
        assert value(scrape(srv.url, None), "localpay_store_up") == 0
        cluster.start()
        back = httpx.get(srv.url + "/healthz", timeout=30)
        assert back.status_code == 200, back.text
        assert httpx.get(srv.url + "/readyz", timeout=30).status_code == 200
    finally:
        if srv is not None:
            srv.stop()
        cluster.destroy()
