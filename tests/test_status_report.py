"""A terminal tells central its software version and the faults it shows (``POST
/v1/status``, issue #19's Fleet: "software version, faults it reported"), once and again
when they change; malformed reports are refused with a typed error and nothing kept."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from central import open_service
from central.terminal_reports import reports
from firmware_cfg.keys import public_hex
from localpay import __version__
from localpay.errors import SyncProtocolError
from sync.client import SyncClient
from sync.protocol import H_NONCE, H_SIGNATURE, H_TERMINAL, H_TIME, b64, new_nonce, request_message
from sync.status_report import parse_status, status_body
from tests.pg_fixtures import (  # noqa: F401 - fixtures
    CentralProcess,
    fill_ledger,
    new_terminal_key,
    pg_cluster,
    start_central,
)

causes = st.from_regex(r"[a-z][a-z_]{0,39}", fullmatch=True)
details = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")),
                  max_size=200).filter(str.isprintable)


@given(st.lists(st.tuples(causes, details), max_size=16))
def test_a_report_reads_back_as_it_was_written(faults: list[tuple[str, str]]) -> None:
    software, read = parse_status(status_body(faults))
    assert software == f"localpay {__version__}"
    assert [(f["cause"], f["detail"]) for f in read] == faults


@pytest.mark.parametrize("body", [
    b"", b"[]", b'{"software": "x"}', b'{"software": "x", "faults": [], "more": 1}',
    b'{"software": "", "faults": []}', b'{"software": "\\u00e9", "faults": []}',
    b'{"software": 5, "faults": []}', b'{"software": "x", "faults": {}}',
    b'{"software": "x", "faults": [{"cause": "A", "detail": ""}]}',
    b'{"software": "x", "faults": [{"cause": "no_reader"}]}',
    b'{"software": "x", "faults": [{"cause": "no_reader", "detail": "a\\nb"}]}',
    b'{"software": "x", "faults": [{"cause": "no_reader", "detail": 3}]}',
    json.dumps({"software": "x", "faults": [{"cause": "a", "detail": ""}] * 17}).encode(),
    json.dumps({"software": "x" * 65, "faults": []}).encode(),
    json.dumps({"software": "x", "faults": [{"cause": "a", "detail": "d" * 201}]}).encode(),
])
def test_malformed_reports_are_refused(body: bytes) -> None:
    with pytest.raises(SyncProtocolError):
        parse_status(body)


def _post(server: CentralProcess, key, terminal: str, body: bytes) -> httpx.Response:
    nonce, now = new_nonce(), int(time.time() * 1000)
    sig = key.sign(request_message("POST", "/v1/status", now, nonce, body))
    return httpx.post(server.url + "/v1/status", content=body, timeout=30, headers={
        H_TERMINAL: terminal, H_TIME: str(now), H_NONCE: nonce, H_SIGNATURE: b64(sig)})


def test_the_fleet_learns_a_terminals_software_and_faults(pg_cluster,  # noqa: F811
                                                          tmp_path: Path) -> None:
    db, data = pg_cluster.new_database(), tmp_path / "data"
    svc = open_service(db, data)
    key = new_terminal_key()
    svc.add_terminal("BUS-7", bytes.fromhex(public_hex(key)))
    svc.store.close()
    fill_ledger(tmp_path / "bus.sqlite", key, "BUS-7", 3).close()
    server = start_central(db, data, command=("-m", "localpay", "central", "serve"),
                           extra=("--workers", "1"))
    try:
        client = SyncClient(tmp_path / "bus.sqlite", key, server.url, server.verifier)
        shown: list[tuple[str, str]] = [("no_reader", "pcsc: no reader")]
        client.faults = lambda: list(shown)
        try:
            client.sync_once()
            svc = open_service(db, data)
            try:
                first = reports(svc.store)["BUS-7"]
                assert first.software == f"localpay {__version__}"
                assert first.faults == (("no_reader", "pcsc: no reader"),)
                # unchanged: not sent again
                client.sync_once()
                assert reports(svc.store)["BUS-7"].reported_ms == first.reported_ms
                # the reader is back: told at the next round
                shown.clear()
                client.sync_once()
                again = reports(svc.store)["BUS-7"]
                assert again.faults == () and again.reported_ms >= first.reported_ms
                # a malformed report, signed by the terminal: 400, typed, nothing kept
                bad = _post(server, key, "BUS-7", b'{"software": "x", "faults": 3}')
                assert bad.status_code == 400 and bad.json()["kind"] == "malformed_request"
                assert "faults" in bad.json()["message"]
                assert reports(svc.store)["BUS-7"] == again
                # and no unsigned caller reports for a terminal
                forged = httpx.post(server.url + "/v1/status", content=status_body([]),
                                    headers={H_TERMINAL: "BUS-7"}, timeout=30)
                assert forged.status_code == 401
            finally:
                svc.store.close()
        finally:
            client.close()
    finally:
        server.stop()


def test_the_parser_under_atheris(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, str(root / "tools" / "fuzz_status.py"), "-runs=20000",
         "-max_total_time=7", "-seed=1", f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=60, cwd=root, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    done = re.search(r"Done (\d+) runs", output)
    assert done is not None and int(done.group(1)) >= 1000, output[-3000:]
    assert not list(tmp_path.iterdir()), "the fuzzer left a crash artifact"
