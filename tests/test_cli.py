"""The localpay command line: demo, ledger verify/show, simulate, error handling."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from firmware_cfg.config import DEFAULT
from localpay.cli import cli
from localpay.errors import KeyFileError
from terminal.home import Home, open_terminal


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, home: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(cli, ["--home", str(home), *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_demo_runs_offline_and_summarises(runner: CliRunner, tmp_path: Path) -> None:
    code, out, _ = invoke(runner, tmp_path, "demo", "--keep", str(tmp_path / "demo"))
    assert code == 0, out
    assert "ALREADY PAID" in out and "deny_listed" in out and "refund" in out
    assert "Summary" in out and "ledger intact" in out
    summary = out.split("Summary")[1].split("Ledgers")[0]
    rows = {line.split()[0]: line.split() for line in summary.splitlines()
            if line.startswith(("validator ", "till "))}
    assert rows["validator"][1:4] == ["5", "1", "1"]  # approved, declined, duplicate
    assert rows["till"][1:3] == ["4", "4"]
    assert "bank card (EMV) taps" in out and "qr_replay" in out
    for role in ("validator", "till"):
        code, line, _ = invoke(runner, tmp_path, "ledger", "verify", "--db",
                               str(tmp_path / "demo" / role / "ledger.sqlite"))
        assert code == 0 and line.startswith("ledger intact")


def test_simulate_then_verify_and_show(runner: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "sim.sqlite"
    code, out, _ = invoke(runner, tmp_path, "simulate", "--taps", "50", "--db", str(db),
                          "--trace")
    assert code == 0
    lines = [json.loads(x) for x in out.splitlines()]
    traces, figures = lines[:-1], lines[-1]
    assert len(traces) == figures["approved"] == 50
    assert [t["seq"] for t in traces] == list(range(1, 51))
    assert figures["head_seq"] == 50 and figures["head_hash"] == traces[-1]["entry_hash"]
    for key in ("p50_ms", "p99_ms", "max_ms", "taps_per_s"):
        assert figures[key] > 0

    code, out, _ = invoke(runner, tmp_path, "ledger", "verify", "--db", str(db))
    assert code == 0 and out.strip().startswith("ledger intact: 50 entries")
    code, out, _ = invoke(runner, tmp_path, "ledger", "show", "--db", str(db), "--json",
                          "--from", "49")
    shown = [json.loads(x) for x in out.splitlines()]
    assert [e["seq"] for e in shown] == [49, 50]
    assert shown[-1]["entry_hash"] == traces[-1]["entry_hash"]
    code, out, _ = invoke(runner, tmp_path, "ledger", "show", "--db", str(db), "--limit", "3")
    assert len(out.splitlines()) == 3

    code, out, _ = invoke(runner, tmp_path, "simulate", "--role", "till", "--taps", "20",
                          "--db", str(tmp_path / "till.sqlite"))
    assert code == 0 and json.loads(out)["approved"] == 20


def test_verify_names_first_bad_entry(runner: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "sim.sqlite"
    assert invoke(runner, tmp_path, "simulate", "--taps", "30", "--db", str(db))[0] == 0
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET card_token = 'someone-else' WHERE seq = 17")
    conn.commit()
    conn.close()
    code, _, err = invoke(runner, tmp_path, "ledger", "verify", "--db", str(db))
    assert code == 1
    assert "seq 17" in err


def test_user_errors_are_one_line_not_tracebacks(runner: CliRunner, tmp_path: Path) -> None:
    code, _, err = invoke(runner, tmp_path, "ledger", "verify", "--db",
                          str(tmp_path / "missing.sqlite"))
    assert code == 1 and "no ledger at" in err
    db = tmp_path / "junk.sqlite"
    db.write_bytes(b"junk" * 1000)
    code, _, err = invoke(runner, tmp_path, "ledger", "show", "--db", str(db))
    # our errors exit 2 (1 is for verdicts, as verify's above)
    assert code == 2 and "LedgerCorruptError" in err and "Traceback" not in err
    code, _, err = invoke(runner, tmp_path, "ledger", "verify", "--db", str(db), "--pubkey", "xy")
    assert code == 2 and "--pubkey" in err
    code, _, err = invoke(runner, tmp_path, "bench", "--sizes", "many")
    assert code == 2 and "--sizes" in err


def test_missing_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"terminal key file .* does not exist"):
        open_terminal(Home(tmp_path), DEFAULT)


def test_help_and_version(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and "localpay" in result.output
    for args in (["-h"], ["ledger", "-h"], ["simulate", "--help"], ["bench", "-h"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0 and "Usage" in result.output


def test_prune_only_what_the_central_chain_proved(runner: CliRunner, tmp_path: Path) -> None:
    from offline_ledger import Ledger

    db = tmp_path / "sim.sqlite"
    assert invoke(runner, tmp_path, "simulate", "--taps", "40", "--db", str(db))[0] == 0
    code, out, _ = invoke(runner, tmp_path, "ledger", "prune", "--db", str(db), "--keep", "0")
    assert code == 0 and "nothing to prune" in out
    key = Home(tmp_path).terminal_key(DEFAULT)
    with Ledger(db, key=key) as led:
        led.mark_synced(30, "checkpoint proving 30")
    code, out, _ = invoke(runner, tmp_path, "ledger", "prune", "--db", str(db), "--keep", "5")
    assert code == 0 and "pruned 25 entries up to seq 25; 15 kept" in out
    code, out, _ = invoke(runner, tmp_path, "ledger", "verify", "--db", str(db))
    assert code == 0 and "15 entries, seq 26..40" in out
