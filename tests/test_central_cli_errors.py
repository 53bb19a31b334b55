"""One-line errors at the central commands (issue #16): each mistake below printed a
traceback, loaded what it should have refused, or took what is not there. Each runs the real
``localpay`` in a child process, as an operator would, on a real store (SQLite and
PostgreSQL), and checks the exact line on stderr, the exit code and that no traceback is
printed. And ``bench central`` stops its PostgreSQL when interrupted."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import open_service
from central.payouts import statement
from central.rules import CARD_TOKEN, MAX_BALANCE
from firmware_cfg.keys import DEMO_TOKEN_KEY, public_hex
from localpay.cli.bench.stacks import ROOT, signed_entries
from terminal.cards import card_token
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
A, B = "a" * 32, "b" * 32


def central(store: str, data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "localpay", "central", *args, "--db", store,
                           "--data", str(data)], capture_output=True, text=True, env=ENV,
                          cwd=ROOT, timeout=120)


def one_line(result: subprocess.CompletedProcess[str], line: str, code: int = 2) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr == line + "\n"
    assert result.returncode == code


def made(store: str, tmp_path: Path) -> Path:
    """The data folder of a service made before the commands run (making its key logs a
    warning on the first command otherwise)."""
    open_service(store, tmp_path / "data").store.close()
    return tmp_path / "data"


def balances_of(store: str, data: Path) -> dict[str, int]:
    svc = open_service(store, data)
    try:
        return dict(svc.balances_delta(0)["balances"])
    finally:
        svc.store.close()


def test_the_card_token_format_is_the_terminals() -> None:
    for namespace in ("uid", "pan", "wallet"):
        assert CARD_TOKEN.fullmatch(card_token(DEMO_TOKEN_KEY, namespace, "04a1b2c3"))


def test_binary_files_and_huge_balances(store_url: str, tmp_path: Path) -> None:  # noqa: F811
    data = made(store_url, tmp_path)
    binary = tmp_path / "photo.csv"
    binary.write_bytes(bytes(range(256)) * 4)  # 0x80 first fails to decode, on line 2
    one_line(central(store_url, data, "balances", str(binary)),
             f"Error: ConfigError: {binary}:2: not UTF-8 text (save the file as CSV UTF-8); "
             "nothing was loaded")
    one_line(central(store_url, data, "profile", "load", str(binary)),
             f"Error: ConfigError: {binary}:2: not UTF-8 text (save the file as CSV UTF-8); "
             "nothing was loaded")
    nul = tmp_path / "nul.csv"
    nul.write_bytes(f"{A},1\n{B},\x00\x00\n".encode())
    one_line(central(store_url, data, "balances", str(nul)),
             f"Error: ConfigError: {nul}:2: holds a NUL byte: not a text file; "
             "nothing was loaded")
    one_line(central(store_url, data, "profile", "load", str(nul)),
             f"Error: ConfigError: {nul}:2: holds a NUL byte: not a text file; "
             "nothing was loaded")
    huge = tmp_path / "huge.csv"
    huge.write_text(f"card_token,balance\n{A},5\n{B},{10**23}\n", encoding="utf-8")
    one_line(central(store_url, data, "balances", str(huge)),
             f"Error: ConfigError: {huge}:3: balance {10**23} is more than "
             f"{MAX_BALANCE:,} won; nothing was loaded")
    edge = tmp_path / "edge.csv"
    edge.write_text(f"{A},{MAX_BALANCE}\n{B},0\n", encoding="utf-8")
    done = central(store_url, data, "balances", str(edge))
    assert done.returncode == 0, done.stderr
    assert balances_of(store_url, data) == {A: MAX_BALANCE, B: 0}


def test_a_spreadsheet_csv_loads(store_url: str, tmp_path: Path) -> None:  # noqa: F811
    data = made(store_url, tmp_path)
    sheet = tmp_path / "sheet.csv"
    sheet.write_bytes(f"\ufeffcard_token,balance\r\n{A},12000\r\n\r\n{B.upper()}, 7 \r\n"
                      .encode())
    done = central(store_url, data, "balances", str(sheet))
    assert (done.returncode, done.stdout, done.stderr) == (0, "2 balances loaded (version 1)\n",
                                                           "")
    assert balances_of(store_url, data) == {A: 12_000, B: 7}
    riders = tmp_path / "riders.csv"
    riders.write_bytes(f"\ufeffcard_token,rider\r\n{A},youth\r\n".encode())
    done = central(store_url, data, "profile", "load", str(riders))
    assert (done.returncode, done.stdout) == (0, "1 profiles loaded\n"), done.stderr


@pytest.mark.parametrize(("lines", "why"), [
    ([f"{A},5", f"{B},-500"], "3: balance -500 is negative (a snapshot is 0 to "
                              f"{MAX_BALANCE:,} won)"),
    ([f"{A},5", ",20"], "3: empty card token"),
    ([f"{A},5", f"{B},20,note"], "3: expected card_token,balance, found 3 columns"),
    ([f"{A},5", f"{B},20", f"{A},9"], f"4: card {A[:12]}… is also on line 2"),
    ([f"{A},5", "hello,20"], "3: 'hello' is not a card token (32 hex digits)"),
    ([f"{A},12,000"], "2: expected card_token,balance, found 3 columns"),
    ([f"{A}," + "9" * 5000], f"2: balance {'9' * 40}… is more than {MAX_BALANCE:,} won"),
    ([f"{A},1e3", f"{B},-1"], "2: expected card_token,balance: '1e3' is not a whole number of "
                              "won (and 1 more bad line)"),
])
def test_bad_balance_lines_refuse_the_whole_file(store_url: str, tmp_path: Path,  # noqa: F811
                                                 lines: list[str], why: str) -> None:
    data = made(store_url, tmp_path)
    path = tmp_path / "b.csv"
    path.write_text("card_token,balance\n" + "\n".join(lines) + "\n", encoding="utf-8")
    one_line(central(store_url, data, "balances", str(path)),
             f"Error: ConfigError: {path}:{why}; nothing was loaded")
    assert balances_of(store_url, data) == {}


def test_bad_profile_lines_refuse_the_whole_file(store_url: str, tmp_path: Path  # noqa: F811
                                                 ) -> None:
    data = made(store_url, tmp_path)
    path = tmp_path / "r.csv"
    for body, why in ((f"{A},youth\n{B},teen\n", "2: rider 'teen' is not one of adult, youth, "
                                                 "child"),
                      (f"{A},youth\n{A},child\n", f"2: card {A[:12]}… is also on line 1"),
                      (f"{A},youth,x\n", "1: expected card_token,rider, found 3 columns")):
        path.write_text(body, encoding="utf-8")
        one_line(central(store_url, data, "profile", "load", str(path)),
                 f"Error: ConfigError: {path}:{why}; nothing was loaded")
    svc = open_service(store_url, data)
    try:
        assert statement(svc.store, A)["rider"] is None
    finally:
        svc.store.close()


# The refusals here happen before the store is touched (a terminal id, a card token's
# format), and listing the deny list is the same query the PostgreSQL tests of the deny list
# run: SQLite alone keeps the suite's time for the tests whose store matters.
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_enroll_refuses_a_terminal_id_no_terminal_may_have(store_url: str,  # noqa: F811
                                                           tmp_path: Path) -> None:
    data = made(store_url, tmp_path)
    one_line(central(store_url, data, "enroll", "--terminal-id", "B" * 65),
             f"Error: ConfigError: terminal id {'B' * 20 + '…'!r} is 65 characters long; "
             "a terminal id is at most 64")
    one_line(central(store_url, data, "enroll", "--terminal-id", "BUS 85/1"),
             "Error: ConfigError: terminal id 'BUS 85/1' holds ' ': a terminal id is letters, "
             "digits and hyphens")
    done = central(store_url, data, "enroll", "--terminal-id", "B" * 64)
    assert done.returncode == 0, done.stderr


# The refusals here happen before the store is touched (a terminal id, a card token's
# format), and listing the deny list is the same query the PostgreSQL tests of the deny list
# run: SQLite alone keeps the suite's time for the tests whose store matters.
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_deny_takes_card_tokens_and_lists_them(store_url: str, tmp_path: Path  # noqa: F811
                                               ) -> None:
    data = made(store_url, tmp_path)
    one_line(central(store_url, data, "deny", "hello"),
             "Error: ConfigError: 'hello' is not a card token (32 hex digits)")
    one_line(central(store_url, data, "deny"), "Error: give a CARD_TOKEN to deny, or --list")
    one_line(central(store_url, data, "deny", A, "--list"),
             "Error: --list takes no CARD_TOKEN")
    empty = central(store_url, data, "deny", "--list")
    assert (empty.returncode, empty.stdout) == (0, "deny list version 0: no cards\n")
    assert central(store_url, data, "deny", A, "--reason", "lost").returncode == 0
    assert central(store_url, data, "deny", B.upper(), "--reason", "stolen").returncode == 0
    assert central(store_url, data, "deny", A, "--remove").returncode == 0
    assert central(store_url, data, "deny", A, "--reason", "found again").returncode == 0
    listed = central(store_url, data, "deny", "--list")
    assert listed.returncode == 0, listed.stderr
    head, *rows = listed.stdout.splitlines()
    assert head == "deny list version 4: 2 cards"
    assert [r.split()[:2] for r in rows] == [[A, "found"], [B, "stolen"]]
    doc = json.loads(central(store_url, data, "deny", "--list", "--json").stdout)
    assert doc["municipality"] == "default" and doc["version"] == 4
    assert [(c["card_token"], c["reason"]) for c in doc["cards"]] == [(A, "found again"),
                                                                      (B, "stolen")]
    assert all(c["at_ms"] > 0 and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d",
                                               c["at"]) for c in doc["cards"])
    assert rows[0].endswith(doc["cards"][0]["at"])


def test_report_dates_and_terminals_that_never_synced(store_url: str,  # noqa: F811
                                                      tmp_path: Path) -> None:
    data = made(store_url, tmp_path)
    one_line(central(store_url, data, "report", "--date", "2026-02-30"),
             "Error: --date: '2026-02-30' is not a real date written YYYY-MM-DD")
    one_line(central(store_url, data, "report", "--date", "20260228"),
             "Error: --date: '20260228' is not a real date written YYYY-MM-DD")
    synced, silent = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    svc = open_service(store_url, data)
    try:
        svc.add_terminal("BUS-85-0001", bytes.fromhex(public_hex(synced)))
        svc.ingest("BUS-85-0001", signed_entries(synced, "BUS-85-0001", 3))
        day = svc.day_of(int(time.time() * 1000))
    finally:
        svc.store.close()
    assert central(store_url, data, "terminal", "add", "TILL-7-0001",
                   public_hex(silent)).returncode == 0
    text = central(store_url, data, "report", "--date", day)
    assert "NEVER SYNCED TILL-7-0001: registered " + day + ", nothing from it has reached " \
        "the central log" in text.stdout.splitlines()
    assert "BUS-85-0001" not in "".join(x for x in text.stdout.splitlines() if "NEVER" in x)
    doc = json.loads(central(store_url, data, "report", "--date", day, "--json").stdout)
    assert doc["never_synced"] == [{"terminal_id": "TILL-7-0001", "registered": day}]
    assert {"day", "municipality", "clean", "overdrafts", "flags", "pocket_overdrafts",
            "pocket_flags", "config_rejections", "lines"} < set(doc)
    # a day before it was registered: not yet a terminal that should have synced
    before = json.loads(central(store_url, data, "report", "--date", "2000-01-03",
                                "--json").stdout)
    assert before["never_synced"] == []


def localpay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "localpay", *args], capture_output=True,
                          text=True, env=ENV, cwd=ROOT, timeout=120)


def test_bench_central_names_only_stores_it_measures() -> None:
    one_line(localpay("bench", "central", "--stores", "sqlite,mysql"),
             "Error: --stores: 'mysql' is not a store this benchmark measures (sqlite, "
             "postgresql)")
    one_line(localpay("bench", "central", "--stores", "sqlite,sqlite"),
             "Error: --stores: 'sqlite' is named twice")
    one_line(localpay("bench", "central", "--stores", ","),
             "Error: --stores: give at least one store (sqlite, postgresql)")


def _processes_in(folder: Path) -> list[int]:
    """Processes whose working directory is in ``folder`` (PostgreSQL's work in its data
    directory, the server and every backend alike)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd.startswith(str(folder)):
            found.append(int(pid))
    return found


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary folder the ``postgres`` user can reach (pytest's own is root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="localpay-test-bench-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_bench_central_stops_its_postgresql_when_interrupted(open_tmp: Path,
                                                             sig: signal.Signals) -> None:
    # TMPDIR: the cluster's folder is made in open_tmp, so its processes are told apart from
    # every other PostgreSQL on the machine
    tmp_path = open_tmp
    proc = subprocess.Popen([sys.executable, "-m", "localpay", "bench", "central", "--stores",
                             "postgresql", "--backlog", "200000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**ENV, "TMPDIR": str(tmp_path)})
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("postgresql: started a throwaway cluster"):
                break
        assert _processes_in(tmp_path), "".join(lines)
        time.sleep(0.5)
        proc.send_signal(sig)
        rest = proc.stderr.read()
        assert proc.wait(60) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in rest, rest
    assert rest.splitlines()[-1] == "Aborted!"
    assert _processes_in(tmp_path) == []
    assert not list(tmp_path.glob("localpay-pg-*"))
