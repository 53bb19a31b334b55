"""What every command shares: the home folder in the click context, one-line errors, options.

Errors a user can cause become a one-line message and a non-zero exit, never a traceback
(``--debug`` shows it). Exit 1 is kept for verdicts (a broken ledger, a failed self-test).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import click

from localpay.errors import LocalpayError
from terminal.home import Home


class Context:
    def __init__(self, home: Path, debug: bool) -> None:
        self.home = Home(home)
        self.debug = debug


pass_ctx = click.make_pass_decorator(Context)


def home_of(ctx: click.Context) -> Home:
    """The home folder the root group chose (``--home``, ``LOCALPAY_HOME`` or the default)."""
    obj = ctx.find_root().obj
    if not isinstance(obj, Context):  # pragma: no cover - the root group always sets it
        raise click.UsageError("no home folder")
    return obj.home


class UserError(click.ClickException):
    """One of our errors as one line; exit 2, as click gives a usage error (1 is kept for
    verdicts: a broken ledger, a failed self-test, a report with differences)."""

    exit_code = 2


class LocalpayGroup(click.Group):
    """Turns our own errors into a clear message and exit code 2 (1 is for verdicts).

    The message names the error's class, except for an error whose message is a whole
    sentence for a person (``sentence = True``: the ledger in use by another process).
    Printed here once: library code that raises does not also log the same error.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LocalpayError as err:
            obj = ctx.find_object(Context)
            if obj is not None and obj.debug:
                raise
            if getattr(err, "sentence", False):
                raise UserError(str(err)) from err
            raise UserError(f"{type(err).__name__}: {err}") from err


class LazyGroup(LocalpayGroup):
    """A group whose commands are imported when first asked for: ``lazy`` maps a command's
    name to the module whose ``COMMANDS`` list holds it."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            for command in importlib.import_module(self.lazy[cmd_name]).COMMANDS:
                self.add_command(command)
        return self.commands.get(cmd_name)


def scratch_only(ctx: Context, db: Path | None, command: str) -> None:
    """Refuse test traffic into a provisioned terminal's ledger: its entries are revenue
    once synced. A scratch ``--db`` is allowed; the real ledger named by ``--db`` is not."""
    if not ctx.home.provisioned:
        return
    if db is None or db.resolve() == ctx.home.ledger_path.resolve():
        raise UserError(f"{ctx.home.path} is a provisioned terminal: {command} would write "
                        f"test entries into its real ledger; give --db FILE for a scratch one")


def db_option(func: Any) -> Any:
    return click.option(
        "--db", "db", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="Ledger file (default: ledger.sqlite in the home folder).",
    )(func)


def progress(msg: str) -> None:
    """A progress line for long work: on stderr, so stdout stays machine-readable."""
    click.echo(msg, err=True)


def emit(result: dict[str, Any]) -> None:
    click.echo(json.dumps(result, indent=2, ensure_ascii=False))
