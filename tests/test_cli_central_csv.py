"""`central balances` and `central profile load` read CSV files of card_token,VALUE: good
files load, a bad line is one error naming its line, and nothing of that file is stored."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from central import open_service
from central.payouts import statement
from localpay.cli import cli


def run(tmp_path: Path, *args: str) -> tuple[int, str]:
    where = ["--db", f"sqlite:///{tmp_path / 'c.sqlite'}", "--data", str(tmp_path / "data")]
    if not (tmp_path / "data" / "log.key").exists():  # the commands make nothing themselves
        assert CliRunner().invoke(cli, ["central", "init", *where]).exit_code == 0
    out = CliRunner().invoke(cli, ["central", *args, *where])
    return out.exit_code, out.output


def test_balances_and_profiles_from_csv(tmp_path: Path) -> None:
    a, b = "a" * 32, "b" * 32
    good = tmp_path / "balances.csv"
    good.write_text(f"card_token,balance\n{a},12000\n\n{b},500\n", encoding="utf-8")
    assert run(tmp_path, "balances", str(good))[0] == 0
    bad = tmp_path / "bad.csv"
    bad.write_text(f"{a},7\n{b},twelve\n", encoding="utf-8")
    code, out = run(tmp_path, "balances", str(bad))
    assert code == 2 and f"{bad}:2: expected card_token,balance" in out
    riders = tmp_path / "riders.csv"
    riders.write_text(f"card_token,rider\n{a}, youth\n", encoding="utf-8")
    assert run(tmp_path, "profile", "load", str(riders))[0] == 0
    short = tmp_path / "short.csv"
    short.write_text(f"{b},child\n{a}\n", encoding="utf-8")
    code, out = run(tmp_path, "profile", "load", str(short))
    assert code == 2 and f"{short}:2: expected card_token,rider" in out
    svc = open_service(f"sqlite:///{tmp_path / 'c.sqlite'}", tmp_path / "data")
    try:
        # the good files' figures, and nothing of the bad ones
        assert svc.balances_delta(0)["balances"] == {a: 12_000, b: 500}
        assert statement(svc.store, a)["rider"] == "youth"
        assert statement(svc.store, b)["rider"] is None
    finally:
        svc.store.close()
