"""The central service's HTTP front end against clients that misbehave (central/http_limits.py,
central/app.py): slow or silent clients, too many connections, bodies too large, malformed
numbers and JSON, and answers that tell nothing about how the service is built. Every test
runs a real ``localpay central serve`` and talks to it over real sockets."""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import not_initialised
from central.http_limits import KIND_CODES, check_entry_ranges, json_too_deep
from localpay.cli import cli
from localpay.encoding import EntryFields, encode
from localpay.errors import SyncProtocolError
from sync.protocol import b64, batch_body, new_nonce, request_message
from tests.pg_fixtures import CentralProcess, pg_cluster, start_central, store_url  # noqa: F401
from tests.signed_requests import signed

# one worker: the connection cap and the timers are each worker's own (central.workers)
SERVE = ("-m", "localpay", "central", "serve", "--init", "--workers", "1")
INT64_MAX = 9_223_372_036_854_775_807   # written out: the store's BIGINT / INTEGER bound
MARGIN_S = 2.0                            # scheduling slack on a shared 2-core machine
CLASS_NAME = re.compile(r"[A-Z][a-z]+[A-Z]\w*|Error\b")


@contextlib.contextmanager
def serve(tmp_path: Path, *extra: str, db: str | None = None,
          key: Ed25519PrivateKey | None = None) -> Iterator[CentralProcess]:
    db = db or f"sqlite:///{tmp_path / 'central.sqlite'}"
    data = tmp_path / "data"
    if key is not None:
        if not_initialised(db, data):  # `terminal add` makes no store: init first
            made = CliRunner().invoke(cli, ["central", "init", "--db", db, "--data", str(data)])
            assert made.exit_code == 0, made.output
        pub = key.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw).hex()
        added = CliRunner().invoke(cli, ["central", "terminal", "add", "--db", db, "--data",
                                         str(data), "T1", pub])
        assert added.exit_code == 0, added.output
    server = start_central(db, data, command=SERVE, extra=extra, timeout=60)
    try:
        yield server
    finally:
        server.stop()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def connect(server: CentralProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def readable(sock: socket.socket) -> bool:
    # poll, not select: select cannot watch descriptors past 1023, and a test here opens 2,000
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def closed_now(sock: socket.socket, got: bytearray) -> bool:
    """Whether the server has closed ``sock``; what it sent is added to ``got``."""
    while readable(sock):
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return True
        if not chunk:
            return True
        got += chunk
    return False


def drip(socks: dict[str, tuple[socket.socket, bytes]], seconds: float) -> dict[str, Any]:
    """Send each socket's bytes one a second; when each is closed by the server, and what
    it answered (None: still open after ``seconds``)."""
    start = time.monotonic()
    closed: dict[str, Any] = {name: None for name in socks}
    sent = dict.fromkeys(socks, 0)
    got = {name: bytearray() for name in socks}
    while (elapsed := time.monotonic() - start) < seconds and None in closed.values():
        for name, (sock, data) in socks.items():
            if closed[name] is not None:
                continue
            if closed_now(sock, got[name]):
                closed[name] = (elapsed, bytes(got[name]))
            elif sent[name] < min(len(data), int(elapsed) + 1):
                with contextlib.suppress(OSError):
                    sock.send(data[sent[name]:sent[name] + 1])
                sent[name] += 1
        time.sleep(0.05)
    return closed


def refusal(raw: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def test_slow_and_silent_clients_are_closed_within_the_configured_limits(
        tmp_path: Path) -> None:
    with serve(tmp_path, "--header-timeout", "2", "--body-timeout", "3",
               "--keep-alive", "1") as server:
        silent, slow_head, slow_body, idle = (connect(server) for _ in range(4))
        idle.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        slow_body.sendall(b"POST /v1/enroll HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n")
        closed = drip({"silent": (silent, b""),
                       "headers": (slow_head, b"POST /v1/enroll HTTP/1.1\r\nhost: x\r\n"),
                       "body": (slow_body, b"{" * 100),
                       "keep-alive": (idle, b"")}, 20)
    for name, limit in (("silent", 2), ("headers", 2), ("body", 3), ("keep-alive", 1)):
        assert closed[name] is not None, f"{name}: still open after 20 s"
        at = closed[name][0]
        assert limit - 0.2 <= at <= limit + MARGIN_S, f"{name}: closed after {at:.1f} s"
    status, headers, doc = refusal(closed["headers"][1])
    assert (status, doc["error"], doc["kind"]) == (408, "timeout", "headers_timeout")
    assert "x-lp-signature" not in headers
    status, headers, doc = refusal(closed["body"][1])
    assert (status, doc["error"], doc["kind"]) == (408, "timeout", "body_timeout")
    assert doc["message"] == "the request body did not arrive within 3 s"
    assert closed["keep-alive"][1].startswith(b"HTTP/1.1 200 ")     # its request was answered
    assert closed["silent"][1].startswith(b"HTTP/1.1 408 ")


def test_by_default_2000_half_open_requests_are_refused_or_closed_within_10_s(
        tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        socks = []
        t0 = time.monotonic()
        for _ in range(2000):
            sock = connect(server)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            socks.append(sock)
        connecting = time.monotonic() - t0
        time.sleep(1.0)
        got = [bytearray() for _ in socks]
        refused = sum(closed_now(s, g) for s, g in zip(socks, got, strict=True))
        closed_at: dict[int, float] = {}
        while time.monotonic() - t0 < connecting + 10 + MARGIN_S and len(closed_at) < 2000:
            for i, sock in enumerate(socks):
                if i not in closed_at and closed_now(sock, got[i]):
                    closed_at[i] = time.monotonic() - t0
            time.sleep(0.1)
        # the service still answers once they are gone
        assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
        for sock in socks:
            sock.close()
    # 400 connections at most are held (the default); the rest are refused at once
    assert refused >= 2000 - 400, refused
    assert len(closed_at) == 2000, f"{2000 - len(closed_at)} still open after 10 s"
    timed_out = [i for i, raw in enumerate(got) if refusal(bytes(raw))[0] == 408]
    assert 2000 - refused <= len(timed_out) <= 400, (refused, len(timed_out))
    for i in timed_out:    # each held from its connect (within the first `connecting` s)
        assert 10 - 0.2 <= closed_at[i] <= connecting + 10 + MARGIN_S, closed_at[i]
        assert refusal(bytes(got[i]))[2]["kind"] == "headers_timeout"
    assert all(refusal(bytes(got[i]))[2]["kind"] == "too_many_connections"
               for i in range(2000) if i not in timed_out)


def test_connections_beyond_the_limit_are_refused_at_once(tmp_path: Path) -> None:
    with serve(tmp_path, "--max-connections", "20", "--header-timeout", "30") as server:
        held = [connect(server) for _ in range(20)]
        time.sleep(0.5)
        extra = connect(server)
        deadline = time.monotonic() + 3
        answer = bytearray()
        while not (refused := closed_now(extra, answer)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(closed_now(s, bytearray()) for s in held)
        for sock in held:
            sock.close()
        time.sleep(0.5)
        assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
    assert refused, "the 21st connection was held"
    status, _headers, doc = refusal(answer)
    assert (status, doc["error"], doc["kind"]) == (503, "busy", "too_many_connections")


def _send_until_answered(sock: socket.socket, head: bytes, chunks: Iterator[bytes]) -> bytes:
    sock.settimeout(120)
    sock.sendall(head)
    for chunk in chunks:
        if readable(sock):
            break
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            break
    got = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            got += chunk
    return got


def test_a_50_mb_body_is_refused_with_413_before_it_is_read(tmp_path: Path) -> None:
    size = 50 * 1024 * 1024
    piece = b"x" * 65536
    with serve(tmp_path) as server:
        before = rss_kib(server.proc.pid)
        with connect(server) as sock:
            head = (f"POST /v1/batches HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\n"
                    f"\r\n").encode()
            answer = _send_until_answered(sock, head, (piece for _ in range(size // 65536)))
        declared = rss_kib(server.proc.pid)
        streamed, after = [], []
        for _ in range(3):
            with connect(server) as sock:   # no Content-Length: counted while it streams
                head = (b"POST /v1/enroll HTTP/1.1\r\nhost: x\r\n"
                        b"transfer-encoding: chunked\r\n\r\n")
                chunk = b"10000\r\n" + piece + b"\r\n"
                streamed.append(_send_until_answered(
                    sock, head, (chunk for _ in range(size // 65536))))
            after.append(rss_kib(server.proc.pid))
    for raw in (answer, *streamed):
        status, headers, doc = refusal(raw)
        assert (status, doc["error"], doc["kind"], doc["seq"]) == (
            413, "too_large", "body_too_large", None)
        assert doc["message"] == ("the request body is larger than 8388608 bytes, the most "
                                  "this service reads")
        assert "x-lp-signature" not in headers
    assert declared - before < 3 * 1024, (before, declared)
    # streamed: read up to the 8 MiB limit (the allocator may keep that much), never 50 MB,
    # and no more after three such requests than after one
    assert max(after) - before < 8 * 1024 + 3 * 1024, (before, after)


def _signed(server: CentralProcess, key: Ed25519PrivateKey, method: str, path: str,
            body: bytes = b"", terminal: str = "T1") -> httpx.Response:
    return signed(server.url, key, terminal, method, path, body, timeout=30)


def test_numbers_beyond_64_bits_and_backward_ranges_are_400(
        tmp_path: Path, store_url: str) -> None:  # noqa: F811
    key = Ed25519PrivateKey.generate()
    big = INT64_MAX + 1
    with serve(tmp_path, db=store_url, key=key) as server:
        answers = {path: _signed(server, key, "GET", path) for path in (
            f"/v1/deny?since={big}", f"/v1/balances?since={big}", f"/v1/pockets?since={big}",
            f"/v1/checkpoint?size={big}", f"/v1/points?since=0&riders_since={big}",
            f"/v1/consistency?from={big}&to={big}", "/v1/consistency?from=2&to=0")}
        entry = encode(EntryFields(1, "tap", "T1", "a" * 64, 1500, big, "85",
                                   1_790_000_000_000, 1_790_000_000_000, "{}", bytes(32)))
        answers["ref_seq"] = _signed(server, key, "POST", "/v1/batches",
                                     batch_body("T1", [(entry, key.sign(entry))]))
        # one below the bound is a number the store holds: refused for what it means, not 500
        ok = _signed(server, key, "GET", f"/v1/deny?since={INT64_MAX}")
        log = server.log_path.read_text()
    for what, resp in answers.items():
        doc = resp.json()
        assert (resp.status_code, doc["error"], doc["kind"]) == (
            400, "malformed", "malformed_request"), (what, resp.text)
        assert "x-lp-signature" in resp.headers
    assert answers[f"/v1/deny?since={big}"].json()["message"] == (
        f"query parameter 'since' is out of range: at most {INT64_MAX}")
    assert answers["/v1/consistency?from=2&to=0"].json()["message"] == (
        "no consistency proof from size 2 to size 0: from is after to")
    assert answers["ref_seq"].json()["message"] == (
        f"entry ref_seq is out of range: at most {INT64_MAX}")
    assert ok.status_code == 200, ok.text
    assert "Traceback" not in log


def test_deeply_nested_json_is_400_on_every_route(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    deep = b"[" * 100_000 + b"]" * 100_000
    with serve(tmp_path, key=key) as server:
        answers = {path: _signed(server, key, "POST", path, deep) for path in (
            "/v1/batches", "/v1/totals", "/v1/config/rejected", "/v1/mpm-open")}
        answers["enroll"] = httpx.post(server.url + "/v1/enroll", content=deep, timeout=30)
        answers["topups"] = httpx.post(server.url + "/v1/topups", content=deep, timeout=30,
                                       headers={"Authorization": "Bearer k"})
        # 32 levels is a body the routes still parse (and refuse for what it says)
        shallow = httpx.post(server.url + "/v1/enroll", content=b"[" * 32 + b"]" * 32,
                             timeout=30)
        log = server.log_path.read_text()
    for what, resp in answers.items():
        assert resp.status_code == 400, (what, resp.text)
        assert resp.json() == {"error": "malformed", "kind": "malformed_request", "seq": None,
                               "message": "the body nests deeper than 32 levels"}, what
    assert shallow.status_code == 400
    assert shallow.json()["message"] != "the body nests deeper than 32 levels"
    assert "Traceback" not in log


def test_json_depth_is_counted_outside_strings() -> None:
    assert not json_too_deep(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', 2)
    assert not json_too_deep(b'{"a": [1, {"b": "\\"]["}]}', 3)
    assert json_too_deep(b'{"a": [1, {"b": "\\"]["}]}', 2)
    assert json_too_deep(b"[" * 33 + b"]" * 33, 32)
    assert not json_too_deep(b"[" * 32 + b"]" * 32, 32)
    assert not json_too_deep(b"[[]," * 1000 + b"[]" + b"]" * 1000, 1001)


def test_no_api_description_and_no_class_names_in_answers(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    with serve(tmp_path, key=key) as server:
        described = {p: httpx.get(server.url + p, timeout=10).status_code
                     for p in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect")}
        refused = [
            httpx.post(server.url + "/v1/topups", content=b"{}", timeout=10),
            httpx.post(server.url + "/v1/topups", content=b"{}", timeout=10,
                       headers={"Authorization": "Bearer nobody"}),
            httpx.post(server.url + "/v1/mpm-payments", content=b"{}", timeout=10),
            httpx.post(server.url + "/v1/enroll", content=b"{}", timeout=10),
            _signed(server, key, "GET", "/v1/deny?since=-1"),
            _signed(server, key, "GET", "/v1/consistency?from=0&to=5"),
        ]
    assert described == {"/openapi.json": 404, "/docs": 404, "/redoc": 404,
                         "/docs/oauth2-redirect": 404}
    kinds = [r.json()["kind"] for r in refused]
    assert kinds == ["partner_refused", "partner_refused", "partner_refused",
                     "malformed_request", "malformed_request", "malformed_request"], kinds
    for resp in refused:
        assert resp.json()["kind"] in KIND_CODES
        assert not CLASS_NAME.search(resp.text), resp.text


def test_unknown_terminal_and_bad_signature_get_one_answer(
        tmp_path: Path, store_url: str) -> None:  # noqa: F811
    key = Ed25519PrivateKey.generate()
    with serve(tmp_path, db=store_url, key=key) as server:
        unknown = _signed(server, key, "GET", "/v1/deny", terminal="T9")
        forged = _signed(server, Ed25519PrivateKey.generate(), "GET", "/v1/deny")
        # a stale request keeps its own words: the terminal's clock recovery reads them
        now, nonce = int(time.time() * 1000) - 3_600_000, new_nonce()
        sig = key.sign(request_message("GET", "/v1/deny", now, nonce, b""))
        stale = httpx.get(server.url + "/v1/deny", timeout=10, headers={
            "X-LP-Terminal": "T1", "X-LP-Time": str(now), "X-LP-Nonce": nonce,
            "X-LP-Signature": b64(sig)})

    def without_time(resp: httpx.Response) -> tuple[int, dict[str, Any]]:
        doc = resp.json()
        doc.pop("time_ms")
        return resp.status_code, doc

    assert without_time(unknown) == without_time(forged) == (401, {
        "error": "refused", "kind": "not_authenticated", "seq": None,
        "message": "request refused: unknown terminal or bad signature"})
    assert stale.status_code == 401
    assert stale.json()["message"].startswith("request is stale")


def test_every_error_class_answers_a_snake_case_code() -> None:
    from central import enroll, mpm_payments, topups
    from central.http_limits import kind_of
    from localpay import errors

    classes = [c for m in (errors, topups, mpm_payments, enroll) for c in vars(m).values()
               if isinstance(c, type) and issubclass(c, errors.LocalpayError)]
    assert len(classes) > 30
    for cls in classes:
        code = kind_of(cls.__new__(cls))
        assert code in KIND_CODES and re.fullmatch(r"[a-z]+(_[a-z]+)*", code), (cls, code)
        assert kind_of(cls.__name__) in KIND_CODES
    # the nearest class decides: a subclass the table does not name takes its parent's code
    assert kind_of(errors.KeyFileError("x")) == "config_invalid"
    assert kind_of(errors.SyncStaleError("x")) == "stale_request"
    assert kind_of(mpm_payments.MpmExpiredError("x")) == "sale_expired"
    assert kind_of("NoSuchError") == "error"


@pytest.mark.parametrize("name", ["seq", "ref_seq", "mono", "wall_ms", "amount"])
def test_each_entry_number_is_held_to_the_stores_range(name: str) -> None:
    """The store's columns are signed 64-bit: each of an entry's numbers at either bound is
    taken, one past either is refused by name, whichever entry of the batch holds it."""
    def entry(value: int) -> SimpleNamespace:
        fields = dict.fromkeys(("seq", "ref_seq", "mono", "wall_ms", "amount"), 1)
        return SimpleNamespace(**{**fields, name: value})

    check_entry_ranges([entry(INT64_MAX), entry(-INT64_MAX - 1), entry(0)])
    for bad in (INT64_MAX + 1, -INT64_MAX - 2):
        with pytest.raises(SyncProtocolError) as err:
            check_entry_ranges([entry(0), entry(bad)])
        assert str(err.value) == f"entry {name} is out of range: at most {INT64_MAX}"
