"""``localpay central pockets ...`` and ``localpay central spend``: the pocket rules the books
split payments by, and posting the log's payments and refunds to the books by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from localpay.cli.accounts import municipality_scope
from localpay.cli.central import open_central, service_options
from localpay.errors import ConfigError

_MUNICIPALITY = municipality_scope("Whose rules and books.")


@click.group()
def pockets() -> None:
    """Pocket rules at central: which pockets (cash, points, allowances) pay where, kept as
    versions; payments are split by the newest when they reach the books."""


@pockets.group("rules")
def rules() -> None:
    """The pocket rules file (TOML, one [[pocket]] table per pocket), versioned."""


@rules.command("load")
@service_options
@_MUNICIPALITY
@click.argument("toml_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def rules_load(db: str | None, data: Path | None, municipality: str, toml_file: Path) -> None:
    """Check TOML_FILE and keep it as the next version; payments reaching the books from now
    on are split by it. The same text as the newest version changes nothing."""
    from central.spending import load_rules

    try:
        text = toml_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{toml_file}: {err}") from err
    held, stored = load_rules(open_central(db, data).store, text, str(toml_file),
                              municipality=municipality)
    click.echo(f"pocket rules version {held.version} "
               + ("in force" if stored else "already in force; nothing changed"))


@rules.command("show")
@service_options
@_MUNICIPALITY
@click.option("--default", "default", is_flag=True, help="The shipped defaults instead.")
def rules_show(db: str | None, data: Path | None, municipality: str, default: bool) -> None:
    """Print the pocket rules in force (the shipped defaults while none was loaded)."""
    from central.spending import rules_text
    from localpay.pockets import DEFAULT_RULES

    text = DEFAULT_RULES if default else rules_text(open_central(db, data).store, municipality)
    click.echo(text, nl=False)


@rules.command("versions")
@service_options
@_MUNICIPALITY
def rules_versions(db: str | None, data: Path | None, municipality: str) -> None:
    """Every version loaded, with its SHA-256 and when."""
    from central.spending import rules_versions as versions

    held = versions(open_central(db, data).store, municipality)
    if not held:
        click.echo("no version loaded: the shipped defaults are in force")
    for v in held:
        click.echo(f"version {v.version}  sha256 {v.sha256[:16]}…  loaded {v.loaded_ms}")


@click.command("spend")
@service_options
@_MUNICIPALITY
@click.option("--chunk", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Log entries posted per transaction.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a line.")
def spend(db: str | None, data: Path | None, municipality: str, chunk: int,
          as_json: bool) -> None:
    """Post the log's payments and refunds not yet in the books, split by pocket (the
    service does this after every batch; run it to catch up, e.g. after a failure)."""
    from central.spending import post_log

    store = open_central(db, data).store
    with click.progressbar(length=1, label="posting", show_pos=True,
                           file=sys.stderr) as bar:
        def progress(done: int, size: int) -> None:
            bar.length = size
            bar.update(done - bar.pos)

        result = post_log(store, chunk=chunk, municipality=municipality, progress=progress)
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    click.echo(f"posted {result.payments:,} payments ({result.paid:,} won from pockets, "
               f"{result.owed:,} won owed beyond them) and {result.refunds:,} refunds "
               f"({result.refunded:,} won); {result.flagged:,} entries flagged")
