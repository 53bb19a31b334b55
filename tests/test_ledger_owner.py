"""One process owns a home's ledger (issue #16): real processes on one home, the second
writer refused with the holder's PID, a ``kill -9`` never leaving the lock stuck, readers
beside the writer, and test traffic kept out of a provisioned terminal's real ledger."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_cfg import bundle as bundles
from firmware_cfg.config import DEFAULT, Config, dumps
from firmware_cfg.keys import public_hex
from localpay.cli import cli
from localpay.cli.bench.stacks import ROOT
from offline_ledger import Ledger
from sync.checkpoint import NoteVerifier
from terminal.config_update import install
from terminal.home import Home, open_terminal
from terminal.owner import LedgerInUseError
from tests.enroll_fixtures import issue_code, localpay_central, provision

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYGAME_HIDE_SUPPORT_PROMPT": "1",
       "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy", "PYTHONPATH": str(ROOT)}


def localpay(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "localpay", "--home", str(home), *args],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)


def start(home: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "localpay", "--home", str(home), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, cwd=ROOT)


def holding(home: Path, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    """Wait until ``proc`` has written its PID in the home's lock file."""
    deadline = time.monotonic() + timeout
    lock = home / "ledger.lock"
    while time.monotonic() < deadline:
        if lock.exists() and lock.read_text().startswith(f"{proc.pid} "):
            return
        if proc.poll() is not None:
            raise AssertionError(f"holder exited {proc.returncode}: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("the holder never took the lock")


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started; whatever is still running is killed by its PID."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def refused(result: subprocess.CompletedProcess[str], home: Path, pid: int,
            holder: str) -> None:
    assert result.returncode == 2, result
    assert result.stderr == (f"Error: the ledger in {home} is in use by process {pid} "
                             f"({holder}); stop it first\n")
    assert result.stdout == ""


def count(path: Path) -> tuple[int, str]:
    with Ledger(path) as led:
        return led.count(), led.head.entry_hash.hex()


def test_three_simulations_at_once_one_writes_the_others_are_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    runs = [start(home, "simulate", "--taps", "300") for _ in range(3)]
    results = [(p.wait(120), *p.communicate()) for p in runs]
    done = [json.loads(out) for code, out, _ in results if code == 0]
    assert len(done) >= 1
    # whoever wrote, wrote every tap: none declined as ledger_broken. On a loaded machine
    # the runs may not overlap at all; a later one then meets the same simulated riders
    # on the same ledger, whose taps are already paid
    assert max(doc["approved"] for doc in done) == 300, done
    for doc in done:
        assert doc["declined"] == 0 and doc["approved"] + doc["already_paid"] == 300, doc
    for code, out, err in results:
        if code != 0:
            assert code == 2 and out == "" and "Traceback" not in err
            assert err.startswith(f"Error: the ledger in {home} is in use by process ")
            assert err.endswith(" (localpay simulate); stop it first\n")
    assert count(home / "ledger.sqlite")[0] == sum(doc["approved"] for doc in done)
    assert localpay(home, "ledger", "verify").returncode == 0


def test_second_writer_refused_and_kill_9_frees_the_home(
        tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    home = tmp_path / "home"
    holder = start(home, "simulate", "--taps", "10000000", "--trace")
    procs.append(holder)
    assert holder.stdout is not None and holder.stdout.readline()  # approving: it holds it
    refused(localpay(home, "simulate", "--taps", "5"), home, holder.pid, "localpay simulate")
    assert (home / "ledger.lock").read_text() == f"{holder.pid} localpay simulate\n"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(30)
    after = localpay(home, "simulate", "--taps", "5", "--first-card", "20000000")
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["approved"] == 5
    assert localpay(home, "ledger", "verify").returncode == 0
    # a clean exit empties the lock file: nobody holds it
    assert (home / "ledger.lock").read_text() == ""


def test_two_runs_on_one_home_and_readers_beside_the_writer(
        tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    home = tmp_path / "home"
    made = localpay(home, "simulate", "--taps", "3")  # keys and a few entries
    assert made.returncode == 0, made.stderr
    config = home / "terminal.toml"
    config.write_text(dumps(DEFAULT), encoding="utf-8")
    run = ["run", "--config", str(config), "--windowed", "--no-sound"]
    first = start(home, *run, "--seconds", "120")
    procs.append(first)
    holding(home, first)
    refused(localpay(home, *run, "--seconds", "5"), home, first.pid, "localpay run")
    refused(localpay(home, "simulate", "--taps", "1"), home, first.pid, "localpay run")
    refused(localpay(home, "ledger", "prune"), home, first.pid, "localpay run")
    # readers work beside it
    shown = localpay(home, "ledger", "show")
    assert shown.returncode == 0 and len(shown.stdout.splitlines()) == 3, shown
    verified = localpay(home, "ledger", "verify")
    assert verified.returncode == 0 and "3 entries" in verified.stdout, verified
    # a scratch ledger is another ledger: allowed beside the running terminal
    scratch = localpay(home, "simulate", "--taps", "2", "--db", str(tmp_path / "s.sqlite"))
    assert scratch.returncode == 0, scratch.stderr
    os.kill(first.pid, signal.SIGKILL)
    first.wait(30)
    second = localpay(home, *run, "--seconds", "0.5")
    assert second.returncode == 0, second.stderr
    assert count(home / "ledger.sqlite")[0] == 3


def test_one_process_one_writer_and_closing_lets_go(tmp_path: Path) -> None:
    home = Home(tmp_path)
    terminal = open_terminal(home, DEFAULT, create_keys=True)
    assert terminal.ledger is not None
    try:
        with pytest.raises(LedgerInUseError) as caught:
            open_terminal(home, DEFAULT)
        assert caught.value.pid == os.getpid()
        assert str(caught.value) == (f"the ledger in {tmp_path} is in use by process "
                                     f"{os.getpid()} ({caught.value.holder}); stop it first")
    finally:
        terminal.ledger.close()
    again = open_terminal(home, DEFAULT)
    assert again.ledger is not None
    again.ledger.close()


# -- a provisioned home ------------------------------------------------------------------------

OPERATOR = Ed25519PrivateKey.generate()
CENTRAL = NoteVerifier("central.example", Ed25519PrivateKey.generate().public_key()).text()


def provisioned(path: Path, role: str) -> tuple[Home, Config]:
    """A home whose config came as a signed bundle (version 1), as enrolment leaves it."""
    home = Home(path)
    path.mkdir(parents=True)
    config = DEFAULT.replace("terminal", id="BUS-85-0016", role=role).replace(
        "keys", operator_public_key=public_hex(OPERATOR), central_public_key=CENTRAL).replace(
        "central", url="http://127.0.0.1:9")
    home.config_path.write_text(dumps(config), encoding="utf-8")
    terminal = open_terminal(home, config, create_keys=True)
    assert terminal.ledger is not None
    try:
        install(terminal, home, bundles.make(OPERATOR, config.terminal.id, 1, dumps(config)))
    finally:
        terminal.ledger.close()
    assert home.provisioned
    return home, config


def cli_run(home: Home, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--home", str(home.path), *args])
    return result.exit_code, result.stdout, result.stderr


def test_simulate_refuses_a_provisioned_home_without_db(tmp_path: Path) -> None:
    home, _ = provisioned(tmp_path / "home", "validator")
    before = count(home.ledger_path)
    code, out, err = cli_run(home, "simulate", "--taps", "5")
    assert (code, out) == (2, "")
    assert err == (f"Error: {home.path} is a provisioned terminal: simulate would write test "
                   f"entries into its real ledger; give --db FILE for a scratch one\n")
    scratch = tmp_path / "scratch.sqlite"
    code, out, err = cli_run(home, "simulate", "--taps", "5", "--db", str(scratch))
    assert code == 0, err
    assert json.loads(out)["approved"] == 5 and count(scratch)[0] == 5
    assert count(home.ledger_path) == before == (1, before[1])  # the config_change only


def test_replay_refuses_a_provisioned_home_without_db(tmp_path: Path) -> None:
    home, _ = provisioned(tmp_path / "home", "validator")
    before = count(home.ledger_path)
    scenario = tmp_path / "taps.jsonl"
    scenario.write_text('{"at": "2026-11-24T07:00:00+09:00", "tap": {"uid": "08a10001"}}\n'
                        '{"at": "2026-11-24T07:05:00+09:00", "tap": {"uid": "08a10002"}}\n')
    code, out, err = cli_run(home, "replay", str(scenario))
    assert (code, out) == (2, "")
    assert err == (f"Error: {home.path} is a provisioned terminal: replay would write test "
                   f"entries into its real ledger; give --db FILE for a scratch one\n")
    scratch = tmp_path / "scratch.sqlite"
    code, out, err = cli_run(home, "replay", str(scenario), "--db", str(scratch))
    assert code == 0, err
    assert [json.loads(line)["outcome"] for line in out.splitlines()] == ["approved"] * 2
    # a sync would carry the scratch entries to the real central service as revenue
    with scenario.open("a") as f:
        f.write('{"at": "2026-11-24T07:06:00+09:00", "sync": true}\n')
    code, out, err = cli_run(home, "replay", str(scenario), "--db", str(scratch))
    assert (code, out) == (2, "")
    assert err.startswith(f"Error: ConfigError: {scenario} line 3: a sync would send the "
                          "scratch ledger's test entries to this terminal's real central "
                          "service (http://127.0.0.1:9) as revenue")
    assert count(scratch)[0] == 2 and count(home.ledger_path) == before


def test_the_sync_process_works_beside_the_running_terminal(
        tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    """A separate ``localpay sync`` takes no lock: it appends nothing, and its short writes
    queue on SQLite's lock behind the writer's (the decision in ``localpay/cli/sync.py``)."""
    home = tmp_path / "home"
    with localpay_central(f"sqlite:///{tmp_path / 'central.sqlite'}",
                          tmp_path / "central") as srv:
        enrolled = provision(home, srv, issue_code(srv, "--role", "validator", "--place", "85"),
                             "--role", "validator", "--route", "85", "--no-selftest")
        assert enrolled.exit_code == 0, enrolled.output
        first = start(home, "run", "--config", str(home / "terminal.toml"), "--windowed",
                      "--no-sound", "--seconds", "120")
        procs.append(first)
        holding(home, first)
        synced = localpay(home, "sync", "--once")
        assert synced.returncode == 0, synced.stderr
        assert "synced up to 1 of 1" in synced.stdout  # the enrolment's config_change
        assert first.poll() is None  # the terminal runs on
        refused(localpay(home, "run", "--config", str(home / "terminal.toml"), "--seconds",
                         "1"), home, first.pid, "localpay run")
        # naming the real ledger as the scratch one does not get test taps in either
        real = localpay(home, "simulate", "--taps", "1", "--db", str(home / "ledger.sqlite"))
        assert real.returncode == 2 and real.stderr.startswith(
            f"Error: {home} is a provisioned terminal: simulate would write test entries")


def test_a_holder_that_wrote_no_pid_is_still_refused(
        tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    """Another program's lock on the file, with nothing written in it (or a holder killed
    between locking and writing): the ledger is still taken, and the refusal says so."""
    lock = tmp_path / "ledger.lock"
    other = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; "
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); "
         "print('locked', flush=True); time.sleep(60)", str(lock)],
        stdout=subprocess.PIPE, text=True)
    procs.append(other)
    assert other.stdout is not None and other.stdout.readline() == "locked\n"
    with pytest.raises(LedgerInUseError) as caught:
        open_terminal(Home(tmp_path), DEFAULT, create_keys=True)
    assert str(caught.value) == (f"the ledger in {tmp_path} is in use by another process; "
                                 "stop it first")
    assert not (tmp_path / "ledger.sqlite").exists() and not (tmp_path / "keys").exists()
