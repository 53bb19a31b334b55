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
from localpay.cli import (
    central,
    clerk,
    console_screenshots,
    demo,
    ledger,
    provision,
    qr,
    readers,
    receipt,
    replay,
    simulate,
    sync,
    ui,
)
from localpay.cli.bench import bench
from localpay.cli.common import Context, LocalpayGroup
from terminal.home import default_home
from terminal.owner import set_process_name


@click.group(cls=LocalpayGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


for _module in (demo, ledger, simulate, replay, provision, qr, readers, central, sync, ui,
                clerk, receipt, console_screenshots):
    for _command in _module.COMMANDS:
        cli.add_command(_command)
cli.add_command(bench)


def main() -> None:
    cli(prog_name="localpay")
