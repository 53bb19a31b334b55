"""Every command is documented in the README and has help (sqlite-utils' test_docs idea)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from localpay.cli import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def walk(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        yield path
        if isinstance(command, click.Group):
            yield from walk(command, path)


COMMANDS = list(walk(cli))


def test_there_are_commands() -> None:
    assert ("demo",) in COMMANDS and ("ledger", "verify") in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_command_has_help_and_is_in_readme(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    assert command.help, f"localpay {' '.join(path)} has no help text"
    assert f"localpay {' '.join(path)}" in README, f"README does not show localpay {' '.join(path)}"


def test_readme_opens_with_the_two_commands() -> None:
    setup = README.split("## Using it")[0]
    assert "make demo" in setup and "make test" in setup
    assert "BENCH_" not in README, "README still has an unfilled benchmark figure"
