"""Every command is documented in the README and has help (sqlite-utils' test_docs idea)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from localpay.cli import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


CTX = click.Context(cli)


def walk(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name in group.list_commands(CTX):  # the root group imports its commands on use
        command = group.get_command(CTX, name)
        assert command is not None, name
        path = (*prefix, name)
        yield path
        if isinstance(command, click.Group):
            yield from walk(command, path)


COMMANDS = list(walk(cli))


def test_there_are_commands() -> None:
    assert ("demo",) in COMMANDS and ("ledger", "verify") in COMMANDS


def test_each_lazy_command_is_its_modules_and_every_module_command_is_listed() -> None:
    import importlib

    from localpay.cli.main import LAZY

    modules = {module for module in LAZY.values()}
    held = {c.name: module for module in modules
            for c in importlib.import_module(f"localpay.cli.{module}").COMMANDS}
    assert held == LAZY


def test_the_command_line_imports_a_command_only_when_it_runs() -> None:
    import subprocess
    import sys

    code = ("import sys; from localpay.cli import main; "
            "print(sorted(m for m in ('central', 'localpay.cli.bench', 'localpay.cli.central', "
            "'localpay.cli.ui', 'kiosk_ui') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_command_has_help_and_is_in_readme(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    command = cli
    for name in path:
        assert isinstance(command, click.Group)
        found = command.get_command(CTX, name)
        assert found is not None, name
        command = found
    assert command.help, f"localpay {' '.join(path)} has no help text"
    assert f"localpay {' '.join(path)}" in README, f"README does not show localpay {' '.join(path)}"


def test_readme_opens_with_the_two_commands() -> None:
    setup = README.split("## Using it")[0]
    assert "make demo" in setup and "make test" in setup
    assert "BENCH_" not in README, "README still has an unfilled benchmark figure"
