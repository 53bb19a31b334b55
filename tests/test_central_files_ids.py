"""The central service's files and the terminal ids it takes (issue #18).

Files: the data folder holds the enrolment codes' hashes (whoever reads them enrols a terminal
and is sealed the scheme's token key) and the keys, so it is 0700 and every file in it 0600,
whatever existed before: a folder made 0755 beforehand, a store left 0644 by an older release,
SQLite's -wal and -shm included. Checked on the real ``localpay central`` commands and a real
``central serve`` in child processes.

Terminal ids: an id is letters, digits and hyphens (at most 64), at ``central enroll``,
``central terminal add``, an enrolment's place and ``localpay provision``; a store holding an
older, odd id keeps taking that terminal's batches.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from localpay.cli.bench.stacks import ROOT, free_port
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def localpay(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "localpay", *args], capture_output=True,
                          text=True, env=ENV, cwd=cwd, timeout=120)


def modes(folder: Path) -> dict[str, str]:
    """Every folder and file under ``folder`` (itself as ``.``) -> its permission bits."""
    found = {".": oct(stat.S_IMODE(folder.stat().st_mode))}
    for path in folder.rglob("*"):
        found[str(path.relative_to(folder))] = oct(stat.S_IMODE(path.lstat().st_mode))
    return found


def private(found: dict[str, str], folder: Path) -> dict[str, str]:
    """What ``found`` should be: folders 0700, files 0600 (written independently of the
    code: from the file types alone)."""
    return {name: oct(0o700 if (folder / name).is_dir() else 0o600) for name in found}


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The usual umask (022), under which a file made without a mode is 0644."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def serve(data: Path, logs: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """A real ``localpay central serve`` on the default SQLite store of ``data``, its log
    outside ``data``; returns once it answers."""
    port = free_port()
    out = open(logs / f"serve-{port}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "localpay", "central", "serve", "--data",
                             str(data), "--port", str(port), *extra], stdout=out,
                            stderr=subprocess.STDOUT, env=ENV, cwd=logs)
    out.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, (logs / f"serve-{port}.log").read_text()
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "central serve did not start"
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# -- file modes -----------------------------------------------------------------------------------


def test_a_new_store_in_an_existing_open_folder_is_private(tmp_path: Path,
                                                           loose_umask: None) -> None:
    """Reproduced on the old code: central.sqlite 0644 (and log.origin) in a 0755 folder."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    done = localpay(tmp_path, "central", "init", "--data", str(data))
    assert done.returncode == 0, done.stderr
    found = modes(data)
    assert {"central.sqlite", "log.key", "log.origin"} <= set(found)
    assert found == private(found, data)


def test_serve_tightens_what_an_older_release_left(tmp_path: Path, loose_umask: None) -> None:
    """A store, its -wal and -shm, the log name and a settlements folder left open (0644,
    0755) are 0600 and 0700 once ``central serve`` has started, and stay so while it runs
    and after the operator's commands (the keys it made, settlement and bank files)."""
    data = tmp_path / "data"
    done = localpay(tmp_path, "central", "init", "--data", str(data))
    assert done.returncode == 0, done.stderr
    (data / "central.sqlite-wal").write_bytes(b"")
    (data / "central.sqlite-shm").write_bytes(b"")
    (data / "settlements").mkdir()
    (data / "settlements" / "merchants-2026-01-05.csv").write_text("merchant,amount\r\n")
    for path in [data, *data.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    proc, url = serve(data, tmp_path)
    try:
        # the store is open and written (a nonce-less request still reaches the service)
        assert httpx.get(url + "/v1/checkpoint", timeout=10).status_code == 401
        running = modes(data)
        assert {"central.sqlite-wal", "central.sqlite-shm"} <= set(running)
        assert running == private(running, data)
    finally:
        stop(proc)
    after = modes(data)
    assert after == private(after, data)
    # the other commands keep it so: a terminal registered, the key shown
    added = localpay(tmp_path, "central", "terminal", "add", "--data", str(data), "BUS-85-0001",
                     "11" * 32)
    assert added.returncode == 0, added.stderr
    shown = localpay(tmp_path, "central", "key", "--data", str(data))
    assert shown.returncode == 0, shown.stderr
    # the settlement and bank files (written 0600 since they were first written)
    paid = localpay(tmp_path, "central", "payout", "--data", str(data), "--month", "2026-01")
    assert paid.returncode == 0, paid.stderr
    settled = localpay(tmp_path, "central", "settlement", "run", "--data", str(data),
                       "--date", "2026-01-05")
    assert settled.returncode == 0, settled.stderr
    last = modes(data)
    assert {"settlements/points-2026-01.csv", "settlements/merchants-2026-01-05.csv",
            "operator.key", "token.key"} <= set(last)
    assert last == private(last, data)


# -- terminal ids ---------------------------------------------------------------------------------

ODD = "85'OR'1'='1--"


def one_line(result: subprocess.CompletedProcess[str], line: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr == line + "\n"
    assert result.returncode != 0


def test_the_commands_refuse_an_id_or_place_no_terminal_may_have(tmp_path: Path) -> None:
    """Reproduced on the old code: ``central enroll --place`` and ``central terminal add``
    took ``85'OR'1'='1--``, and ``provision --route`` sent it."""
    data = tmp_path / "data"
    assert localpay(tmp_path, "central", "init", "--data", str(data)).returncode == 0
    one_line(localpay(tmp_path, "central", "enroll", "--data", str(data), "--place", ODD),
             f"Error: ConfigError: place {ODD!r} holds \"'\": a route or merchant id is "
             "letters, digits and hyphens")
    one_line(localpay(tmp_path, "central", "enroll", "--data", str(data), "--place", "8" * 33),
             f"Error: ConfigError: place {'8' * 33!r}: a route or merchant id is 1 to 32 "
             "letters, digits and hyphens")
    one_line(localpay(tmp_path, "central", "terminal", "add", "--data", str(data), ODD,
                      "11" * 32),
             f"Error: ConfigError: terminal id {ODD!r} holds \"'\": a terminal id is letters, "
             "digits and hyphens")
    one_line(localpay(tmp_path, "central", "terminal", "add", "--data", str(data), "T" * 65,
                      "11" * 32),
             f"Error: ConfigError: terminal id {'T' * 20 + '…'!r} is 65 characters long; a "
             "terminal id is at most 64")
    # refused before anything is made or sent: port 9 of loopback answers nothing
    home = tmp_path / "home"
    code = tmp_path / "code.txt"
    code.write_text("0" * 16 + "\n")
    result = localpay(tmp_path, "--home", str(home), "provision", "--central",
                      "http://127.0.0.1:9", "--code-file", str(code), "--role", "validator",
                      "--route", "85 OR 1=1")
    one_line(result, "Error: ConfigError: place '85 OR 1=1' holds ' ': a route or merchant id "
                     "is letters, digits and hyphens")
    assert not (home / "terminal.toml").exists()
    # what is refused left nothing in the store; a plain id and place are taken
    ok = localpay(tmp_path, "central", "enroll", "--data", str(data), "--place", "85-A",
                  "--role", "validator")
    assert ok.returncode == 0, ok.stderr
    added = localpay(tmp_path, "central", "terminal", "add", "--data", str(data), "T" * 64,
                     "11" * 32)
    assert added.returncode == 0, added.stderr
    from central import open_service

    svc = open_service(None, data)
    try:
        with svc.store.tx(write=False) as tx:
            assert tx.all("SELECT terminal_id FROM terminals") == [("T" * 64,)]
            assert tx.all("SELECT place FROM enroll_codes") == [("85-A",)]
    finally:
        svc.store.close()


def test_the_service_refuses_an_enrolment_at_an_odd_place(tmp_path: Path) -> None:
    """Reproduced on the old code: a request naming place ``85'OR'1'='1--`` enrolled
    ``BUS-85'OR'1'='1---0001``. Sent by hand (``provision`` refuses it before sending)."""
    import base64
    import json
    import secrets

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from firmware_cfg import provision as proto
    from firmware_cfg.keys import public_hex

    data = tmp_path / "data"
    assert localpay(tmp_path, "central", "init", "--data", str(data)).returncode == 0
    issued = localpay(tmp_path, "central", "enroll", "--data", str(data))
    assert issued.returncode == 0, issued.stderr
    code = issued.stdout.strip().splitlines()[-1]
    proc, url = serve(data, tmp_path)
    try:
        def ask(place: str) -> httpx.Response:
            key = Ed25519PrivateKey.generate()
            box = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw,
                                                                        PublicFormat.Raw)
            body = json.dumps({"format": proto.FORMAT, "code_id": proto.code_id(code),
                               "public_key": public_hex(key), "box_key": box.hex(),
                               "role": "validator", "place": place, "central_url": url
                               }).encode()
            nonce, now = secrets.token_hex(16), int(time.time() * 1000)
            message = proto.request_message(now, nonce, body)
            return httpx.post(url + proto.PATH, content=body, timeout=10, headers={
                proto.H_NONCE: nonce, proto.H_TIME: str(now),
                proto.H_ENROLL: proto.mac(proto.code_key(code), message),
                proto.H_SIGNATURE: base64.b64encode(key.sign(message)).decode()})

        odd = ask(ODD)
        assert odd.status_code == 400, odd.text
        assert odd.json()["message"] == (f"enrolment request: place {ODD!r} holds \"'\": a "
                                         "route or merchant id is letters, digits and hyphens")
        fine = ask("85")
        assert fine.status_code == 200, fine.text
        assert fine.json()["terminal_id"] == "BUS-85-0001"
    finally:
        stop(proc)


def test_a_terminal_with_an_odd_id_from_an_older_release_keeps_syncing(
        store_url: str) -> None:  # noqa: F811
    """What an older release registered stays usable: the id is checked where ids are made,
    never where a registered terminal's batches arrive."""
    from central.service import CentralLog
    from tests.incentives_data import chain, open_service, seoul_ms

    svc: CentralLog = open_service(store_url, followers=[])
    try:
        c = chain(svc, ODD)   # registered as an older release did, without the check
        first = svc.ingest(ODD, [c.tap("a" * 32, seoul_ms(2026, 9, 7, 8)),
                                 c.tap("a" * 32, seoul_ms(2026, 9, 7, 9))])
        assert (first.first_seq, first.last_seq, first.accepted) == (1, 2, 2)
        second = svc.ingest(ODD, [c.tap("a" * 32, seoul_ms(2026, 9, 7, 10))])
        assert (second.first_seq, second.last_seq, second.accepted) == (3, 3, 1)
        with svc.store.tx(write=False) as tx:
            assert tx.all("SELECT seq FROM entries WHERE terminal_id = ? ORDER BY seq",
                          (ODD,)) == [(1,), (2,), (3,)]
    finally:
        svc.store.close()


# -- what a terminal reports ----------------------------------------------------------------------


def test_totals_take_a_real_day_and_known_kinds_only(tmp_path: Path) -> None:
    """Reproduced on the old code: ``2026-02-30`` and kind ``x' OR 1=1`` were stored (and
    printed by ``central report``)."""
    import json
    import secrets

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from central import open_service
    from firmware_cfg.keys import public_hex
    from sync.protocol import H_NONCE, H_SIGNATURE, H_TERMINAL, H_TIME, b64, request_message

    data = tmp_path / "data"
    key = Ed25519PrivateKey.generate()
    assert localpay(tmp_path, "central", "init", "--data", str(data)).returncode == 0
    added = localpay(tmp_path, "central", "terminal", "add", "--data", str(data), "TILL-M1-0001",
                     public_hex(key))
    assert added.returncode == 0, added.stderr

    def send(url: str, doc: object) -> httpx.Response:
        body = json.dumps(doc).encode()
        when, nonce = int(time.time() * 1000), secrets.token_hex(16)
        sig = key.sign(request_message("POST", "/v1/totals", when, nonce, body))
        return httpx.post(url + "/v1/totals", content=body, timeout=10, headers={
            H_TERMINAL: "TILL-M1-0001", H_TIME: str(when), H_NONCE: nonce,
            H_SIGNATURE: b64(sig)})

    known = ("payment, refund, void, tap, incentive, deny_update, config_change, "
             "sync_receipt, z_report, cash_receipt")
    refused = [
        ({"day": "2026-02-30", "totals": {"payment": [1, 100]}},
         'totals day "2026-02-30" is not a real date written YYYY-MM-DD'),
        ({"day": "20260203xx", "totals": {}},
         'totals day "20260203xx" is not a real date written YYYY-MM-DD'),
        ({"day": "2026-W05-2", "totals": {}},
         'totals day "2026-W05-2" is not a real date written YYYY-MM-DD'),
        ({"day": 20260203, "totals": {}},
         "totals day 20260203 is not a real date written YYYY-MM-DD"),
        ({"day": "2026-02-03", "totals": {"payment": [1, 100], "x' OR 1=1": [1, 1]}},
         f"totals kind \"x' OR 1=1\" is not a kind of entry (known: {known})"),
        ({"day": "2026-02-03", "totals": {"Payment": [1, 100]}},
         f'totals kind "Payment" is not a kind of entry (known: {known})'),
    ]
    proc, url = serve(data, tmp_path)
    try:
        for doc, message in refused:
            resp = send(url, doc)
            assert resp.status_code == 400, (doc, resp.text)
            assert (resp.json()["error"], resp.json()["message"]) == ("malformed", message)
        good = send(url, {"day": "2026-02-28", "totals": {"payment": [3, 27_000],
                                                          "refund": [1, 9_000]}})
        assert good.status_code == 200, good.text
    finally:
        stop(proc)
    svc = open_service(None, data)
    try:
        with svc.store.tx(write=False) as tx:
            stored = sorted(tx.all("SELECT day, kind, count, amount FROM terminal_totals"))
    finally:
        svc.store.close()
    assert stored == [("2026-02-28", "payment", 3, 27_000), ("2026-02-28", "refund", 1, 9_000)]
