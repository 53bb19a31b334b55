"""Which store a ``localpay central`` command acts on, and that none makes one by itself
(issue #18).

A deny-list added with only ``LOCALPAY_CENTRAL_DB`` set used to land in a fresh SQLite file
that no terminal reads while the service ran on PostgreSQL; ``central.toml``'s ``db`` and the
global ``--home`` were not looked at; a command pointed at an empty store or folder made one;
``central key`` made a key; ``provision`` took the enrolment code on its command line, where
``ps`` shows it to every user of the machine.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from central import open_service
from central.rules import deny_list
from localpay.cli import cli
from tests.enroll_fixtures import issue_code, localpay_central
from tests.pg_fixtures import (  # noqa: F401
    ROOT,
    CentralProcess,
    ExternalPg,
    PgCluster,
    free_port,
    pg_cluster,
)

CARD = "00112233445566778899aabbccddeeff"
OTHER = "ffeeddccbbaa99887766554433221100"


@pytest.fixture
def xdg(tmp_path: Path) -> Path:
    """The user's default data folders, kept inside the test's own folder."""
    return tmp_path / "xdg"


def run(xdg: Path, *args: str, env: Mapping[str, str] | None = None,
        stdin: str | None = None) -> Result:
    """``localpay ARGS`` with nothing named by the environment but what ``env`` gives."""
    base: dict[str, str | None] = {"XDG_DATA_HOME": str(xdg), "LOCALPAY_HOME": None,
                                   "LOCALPAY_CENTRAL_DB": None, "LOCALPAY_CENTRAL_DATA": None}
    return CliRunner().invoke(cli, list(args), env={**base, **(env or {})}, input=stdin)


def denied(db: str | None, data: Path) -> list[str]:
    """The default municipality's deny list, read through the library from one store."""
    svc = open_service(db, data)
    try:
        with svc.store.tx(write=False) as tx:
            return [c["card_token"] for c in deny_list(tx, "default")[1]]
    finally:
        svc.store.close()


def tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            "current_schema()").fetchall()]


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) \
        if folder.exists() else []


# -- the store a command acts on --------------------------------------------------------------


def test_a_deny_with_only_the_environment_naming_postgresql_lands_there(
        tmp_path: Path, xdg: Path, pg_cluster: PgCluster | ExternalPg) -> None:  # noqa: F811
    url = pg_cluster.new_schema()
    default = xdg / "localpay" / "central"
    open_service(url, default).store.close()  # the service's store and key, as it runs
    got = run(xdg, "central", "deny", CARD, "--reason", "stolen",
              env={"LOCALPAY_CENTRAL_DB": url})
    assert got.exit_code == 0, got.output
    assert denied(url, default) == [CARD]
    # and no SQLite file beside the key that a terminal would never read
    assert not (default / "central.sqlite").exists()
    listed = run(xdg, "central", "deny", "--list", env={"LOCALPAY_CENTRAL_DB": url})
    assert listed.exit_code == 0, listed.output
    assert CARD in listed.output and "1 card" in listed.output


def test_central_toml_names_the_store(tmp_path: Path, xdg: Path) -> None:
    data, other = tmp_path / "data", tmp_path / "elsewhere" / "store.sqlite"
    open_service(f"sqlite:///{other}", data).store.close()
    (data / "central.toml").write_text(f'db = "sqlite:///{other}"\n')
    got = run(xdg, "central", "deny", "--data", str(data), CARD)
    assert got.exit_code == 0, got.output
    assert denied(f"sqlite:///{other}", data) == [CARD]
    assert not (data / "central.sqlite").exists()
    # --db still comes first, then the environment
    third = tmp_path / "third.sqlite"
    open_service(f"sqlite:///{third}", data).store.close()
    got = run(xdg, "central", "deny", "--data", str(data), OTHER,
              env={"LOCALPAY_CENTRAL_DB": f"sqlite:///{third}"})
    assert got.exit_code == 0, got.output
    assert denied(f"sqlite:///{third}", data) == [OTHER]
    assert denied(f"sqlite:///{other}", data) == [CARD]


def test_a_misspelt_central_toml_is_refused(tmp_path: Path, xdg: Path) -> None:
    data = tmp_path / "data"
    open_service(None, data).store.close()
    (data / "central.toml").write_text('database = "postgresql://db.example/localpay"\n')
    got = run(xdg, "central", "deny", "--data", str(data), CARD)
    assert got.exit_code == 2
    assert got.output.strip().splitlines() == [
        f"Error: ConfigError: {data / 'central.toml'}: unknown key 'database' (the one key "
        "is db)"]
    assert denied(None, data) == []


def test_the_global_home_moves_the_data_folder(tmp_path: Path, xdg: Path) -> None:
    home = tmp_path / "home"
    open_service(None, home / "central").store.close()
    got = run(xdg, "--home", str(home), "central", "deny", CARD)
    assert got.exit_code == 0, got.output
    assert denied(None, home / "central") == [CARD]
    assert files(xdg) == []
    # LOCALPAY_HOME as well; LOCALPAY_CENTRAL_DATA comes before either
    got = run(xdg, "central", "deny", OTHER, env={"LOCALPAY_HOME": str(home)})
    assert got.exit_code == 0, got.output
    assert denied(None, home / "central") == [CARD, OTHER]
    data = tmp_path / "data"
    open_service(None, data).store.close()
    got = run(xdg, "--home", str(home), "central", "deny", OTHER,
              env={"LOCALPAY_CENTRAL_DATA": str(data)})
    assert got.exit_code == 0, got.output
    assert denied(None, data) == [OTHER]


# -- nothing made by a command but init -------------------------------------------------------


def test_a_command_on_an_empty_folder_refuses_and_makes_nothing(tmp_path: Path,
                                                                xdg: Path) -> None:
    data = tmp_path / "data"
    for args in (["deny", CARD], ["deny", "--list"], ["municipality", "list"],
                 ["books", "check"], ["account", "show", "alice"]):
        got = run(xdg, "central", *args, "--data", str(data))
        assert got.exit_code == 2, (args, got.output)
        assert got.output.strip().splitlines() == [
            f"Error: central store sqlite:///{data / 'central.sqlite'}, data folder {data}: "
            "not initialised (no log key, no schema in the store); run `localpay central "
            "init` first"], args
        assert not data.exists(), args
    assert files(xdg) == []


def test_serve_refuses_an_empty_store_unless_told_to_make_it(tmp_path: Path,
                                                             xdg: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALPAY_")}
    env.update(PYTHONPATH=str(ROOT), XDG_DATA_HOME=str(xdg))
    # a real process: a serve that did not refuse would run until the timeout
    got = subprocess.run([sys.executable, "-m", "localpay", "central", "serve", "--data",
                          str(data), "--port", str(free_port())], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=60)
    assert got.returncode == 2
    assert got.stderr == (
        f"Error: central store sqlite:///{data / 'central.sqlite'}, data folder {data}: "
        "not initialised (no log key, no schema in the store); run `localpay central init` "
        "first\n")
    assert not data.exists()


def test_a_folder_with_its_key_but_an_empty_store_is_refused(
        tmp_path: Path, xdg: Path, pg_cluster: PgCluster | ExternalPg) -> None:  # noqa: F811
    data = tmp_path / "data"
    open_service(None, data).store.close()  # a key, and a SQLite store beside it
    before = files(data)
    url = pg_cluster.new_schema()
    got = run(xdg, "central", "deny", CARD, "--data", str(data),
              env={"LOCALPAY_CENTRAL_DB": url})
    assert got.exit_code == 2
    line, = got.output.strip().splitlines()
    assert "named by LOCALPAY_CENTRAL_DB" in line and "(no schema in the store)" in line
    assert line.endswith("run `localpay central init` first")
    assert tables(url) == []
    assert files(data) == before


def test_central_key_never_makes_a_key(tmp_path: Path, xdg: Path) -> None:
    data = tmp_path / "data"
    got = run(xdg, "central", "key", "--data", str(data))
    assert got.exit_code == 2
    assert got.output.strip().splitlines() == [
        f"Error: central store sqlite:///{data / 'central.sqlite'}, data folder {data}: not "
        "initialised (no log key); run `localpay central init` first"]
    assert not data.exists()
    data.mkdir()
    assert run(xdg, "central", "key", "--data", str(data)).exit_code == 2
    assert files(data) == []


def test_init_makes_the_folder_key_and_schema_and_records_the_store(
        tmp_path: Path, xdg: Path, pg_cluster: PgCluster | ExternalPg) -> None:  # noqa: F811
    data, url = tmp_path / "data", pg_cluster.new_schema()
    made = run(xdg, "central", "init", "--data", str(data), "--db", url, "--origin",
               "city.example/log")
    assert made.exit_code == 0, made.output
    assert oct(data.stat().st_mode & 0o777) == "0o700"
    assert oct((data / "central.toml").stat().st_mode & 0o777) == "0o600"
    assert (data / "central.toml").read_text() == f'db = "{url}"\n'
    assert "log_state" in tables(url)
    assert not (data / "central.sqlite").exists()
    key = run(xdg, "central", "key", "--data", str(data))
    assert key.exit_code == 0 and key.output.startswith("city.example/log+")
    assert made.stdout.strip().splitlines()[-1] == key.stdout.strip()
    # later commands need no --db: central.toml names the store
    got = run(xdg, "central", "deny", "--data", str(data), CARD)
    assert got.exit_code == 0, got.output
    assert denied(url, data) == [CARD]
    # a second init changes nothing and says why
    again = run(xdg, "central", "init", "--data", str(data))
    assert again.exit_code == 2
    assert "already initialised (log key and schema); nothing changed" in again.output
    assert denied(url, data) == [CARD]
    # another store named where central.toml names this one: refused, not rewritten
    elsewhere = run(xdg, "central", "init", "--data", str(data), "--db",
                    f"sqlite:///{tmp_path / 'other.sqlite'}")
    assert elsewhere.exit_code == 2
    assert "central.toml names the store" in elsewhere.output
    assert (data / "central.toml").read_text() == f'db = "{url}"\n'
    assert not (tmp_path / "other.sqlite").exists()


def test_init_on_the_defaults_then_serve_needs_no_flag(tmp_path: Path, xdg: Path) -> None:
    made = run(xdg, "central", "init")
    assert made.exit_code == 0, made.output
    default = xdg / "localpay" / "central"
    assert {"central.sqlite", "log.key", "log.origin"} <= set(files(default))
    assert not (default / "central.toml").exists()  # no store named: the default
    got = run(xdg, "central", "deny", CARD)
    assert got.exit_code == 0, got.output
    assert denied(None, default) == [CARD]


# -- provision: the code never on the command line ----------------------------------------------


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[CentralProcess]:
    with localpay_central(f"sqlite:///{tmp_path / 'central.sqlite'}",
                          tmp_path / "central") as server:
        yield server


def unused(srv: CentralProcess) -> int:
    svc = open_service(srv.db, srv.data)
    try:
        with svc.store.tx(write=False) as tx:
            row = tx.one("SELECT COUNT(*) FROM enroll_codes WHERE used_ms IS NULL")
        return int(row[0]) if row else -1
    finally:
        svc.store.close()


def provision(xdg: Path, home: Path, srv: CentralProcess, *args: str,
              stdin: str | None = None) -> Result:
    return run(xdg, "--home", str(home), "provision", "--central", srv.url, "--role",
               "validator", "--route", "85", "--no-selftest", *args, stdin=stdin)


def test_provision_refuses_a_code_on_its_command_line(tmp_path: Path, xdg: Path,
                                                      srv: CentralProcess) -> None:
    code = issue_code(srv)
    home = tmp_path / "terminal"
    got = provision(xdg, home, srv, "--enroll-code", code)
    assert got.exit_code == 2
    assert got.output.strip().splitlines() == [
        "Error: --enroll-code puts the code on the command line, where every user of this "
        "machine sees it (ps): give it on standard input or with --code-file PATH"]
    assert files(home) == [] and unused(srv) == 1
    # from standard input, piped or with --code-file -
    got = provision(xdg, home, srv, stdin=code + "\n")
    assert got.exit_code == 0, got.output
    assert "enrolled as BUS-85-0001" in got.output and unused(srv) == 0
    second = tmp_path / "second"
    got = provision(xdg, second, srv, "--code-file", "-", stdin=f"  {issue_code(srv)}  \n")
    assert got.exit_code == 0, got.output
    assert "enrolled as BUS-85-0002" in got.output


def test_provision_reads_the_code_from_a_file(tmp_path: Path, xdg: Path,
                                             srv: CentralProcess) -> None:
    path = tmp_path / "code.txt"
    path.write_text(issue_code(srv) + "\n")
    home = tmp_path / "terminal"
    got = provision(xdg, home, srv, "--code-file", str(path))
    assert got.exit_code == 0, got.output
    assert "enrolled as BUS-85-0001" in got.output and unused(srv) == 0
    # nothing, or two codes, is not a code: refused before anything is sent
    for text, said in (("\n", "no enrolment code"), ("A\nB\n", "more than one line")):
        path.write_text(text)
        got = provision(xdg, tmp_path / "other", srv, "--code-file", str(path))
        assert got.exit_code == 2
        assert got.output.strip().splitlines() == [
            f"Error: {path}: {said}; one code expected (XXXX-XXXX-XXXX-XXXX)"]
        assert files(tmp_path / "other") == []
    got = provision(xdg, tmp_path / "other", srv, stdin="")
    assert got.exit_code == 2 and "standard input: no enrolment code" in got.output


def test_provision_asks_for_the_code_on_a_terminal(tmp_path: Path, xdg: Path,
                                                   srv: CentralProcess) -> None:
    """Standard input a terminal (a pseudo-terminal here): the code is asked for, hidden."""
    code = issue_code(srv)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALPAY_")}
    env.update(PYTHONPATH=str(ROOT), XDG_DATA_HOME=str(xdg))
    master, slave = os.openpty()
    # a session of its own: the prompt must not reach the terminal this test runs in
    proc = subprocess.Popen(
        [sys.executable, "-m", "localpay", "--home", str(tmp_path / "terminal"), "provision",
         "--central", srv.url, "--role", "validator", "--route", "85", "--no-selftest"],
        stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
        start_new_session=True)
    os.close(slave)
    assert proc.stderr is not None
    asked = b""
    try:
        # typed only once asked: turning echo off discards what was typed before (TCSAFLUSH)
        deadline = time.monotonic() + 60
        while b"Enrolment code: " not in asked:
            assert time.monotonic() < deadline and proc.poll() is None, asked
            if select.select([proc.stderr], [], [], 1)[0]:
                asked += os.read(proc.stderr.fileno(), 4096)
        os.write(master, (code + "\n").encode())
        raw_out, raw_err = proc.communicate(timeout=120)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    out, err = raw_out.decode(), (asked + raw_err).decode()
    assert proc.returncode == 0, err
    assert "enrolled as BUS-85-0001" in out and unused(srv) == 0
    assert code not in out + err
