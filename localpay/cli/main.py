"""The ``localpay`` command line (also ``python -m localpay``): the root group.

Each command group lives in a module of its own and is added here; nothing in the library
imports this package.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from localpay import __version__
from localpay.cli.common import Context, LazyGroup
from terminal.home import default_home
from terminal.owner import set_process_name

#: command name -> the module whose ``COMMANDS`` holds it. A command's module is imported when
#: the command is run (or listed in help): every cut and kill of the soak, and every boot of
#: a terminal, starts ``localpay run``, which had imported all of them (0.56 s).
LAZY = {
    "demo": "demo", "ledger": "ledger", "simulate": "simulate", "replay": "replay",
    "provision": "provision", "readers": "provision", "selftest": "provision", "qr": "qr",
    "read": "readers", "central": "central_all", "sync": "sync", "run": "ui",
    "screenshots": "ui", "clerk": "clerk", "receipt": "receipt",
    "console-screenshots": "console_screenshots", "bench": "bench",
}


@click.group(cls=LazyGroup, lazy={name: f"localpay.cli.{module}" for name, module in LAZY.items()},
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="localpay")
@click.option(
    "--home", type=click.Path(file_okay=False, path_type=Path), envvar="LOCALPAY_HOME",
    default=None, show_envvar=True,
    help="Folder holding config, keys and ledger (default: ~/.local/share/localpay for a "
    "user, /var/lib/localpay for the service).",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, verbose: int, debug: bool) -> None:
    """Offline payment terminal for a city's local currency: till and bus validator."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    ctx.obj = Context(home or default_home(), debug)
    if ctx.invoked_subcommand:
        # what a refused second writer of this home is told holds it ("localpay run")
        set_process_name(f"localpay {ctx.invoked_subcommand}")


def main() -> None:
    cli(prog_name="localpay")
