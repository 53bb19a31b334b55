"""``localpay central points | credit | payout | profile | rules | campaign``: incentive points.

These join the ``central`` group of :mod:`terminal.cli_sync` when this module is imported
(``terminal.cli`` imports it through ``_EXTENSIONS``), so ``COMMANDS`` is empty.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import click

from localpay.errors import ConfigError
from terminal.cli_sync import central, open_central, service_options


@central.command("points")
@service_options
@click.option("--card", "card_token", required=True, metavar="TOKEN", help="Card token.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
def points(db: str | None, data: Path | None, card_token: str, as_json: bool) -> None:
    """A card's points statement: every credit with its entry and rule version, payouts."""
    from sync.server.incentives import statement

    svc = open_central(db, data)
    st = statement(svc.store, card_token)
    if as_json:
        click.echo(json.dumps(st))
        return
    click.echo(f"Points of card {card_token[:12]}… (rider: {st['rider'] or 'from the taps'})")
    head = f"{'day':<10} {'entry':<22} {'rule':<10} {'points':>7} {'rules v':>7} {'payable':<7}"
    click.echo(head)
    click.echo("-" * len(head))
    for e in st["entries"]:
        where = f"{e['terminal_id']}/{e['seq']}"
        click.echo(f"{e['day']:<10} {where:<22} {e['rule']:<10} {e['points']:>7,} "
                   f"{e['rule_version']:>7} {e['payable_month']:<7}")
    for w in st["weeks"]:
        click.echo(f"week of {w['week_start']}: {w['points']:,} bus points")
    for p in st["payouts"]:
        click.echo(f"payout {p['month']}: {p['status']} {p['paid']:,} points"
                   + (f" (carried {p['carry']:+,})" if p["carry"] else ""))
    click.echo(f"earned {st['earned']:,}; paid {st['paid']:,}; not yet paid out "
               f"{st['pending']:,}")


@central.command("credit")
@service_options
@click.option("--chunk", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Log entries credited per transaction.")
def credit_cmd(db: str | None, data: Path | None, chunk: int) -> None:
    """Credit the log's entries not yet credited (the service does this after every batch;
    run it to catch up, e.g. after the service was stopped mid-way)."""
    from sync.server.incentives import credit_log

    store = open_central(db, data).store
    with click.progressbar(length=1, label="crediting", show_pos=True) as bar:
        def progress(done: int, size: int) -> None:
            bar.length = size
            bar.update(done - bar.pos)

        result = credit_log(store, chunk=chunk, progress=progress)
    click.echo(f"credited {result.credits:,} entries, {result.points:,} points")


@central.command("payout")
@service_options
@click.option("--month", required=True, metavar="YYYY-MM", help="The month to pay out.")
@click.option("--json", "as_json", is_flag=True)
def payout_cmd(db: str | None, data: Path | None, month: str, as_json: bool) -> None:
    """Pay a month's points as spendable balance (idempotent: a second run changes nothing)."""
    from sync.server.incentives import payout

    result = payout(open_central(db, data).store, month)
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    what = "already paid out" if result.already else "paid out"
    click.echo(f"{month} {what}: {result.points:,} points to {result.cards:,} cards"
               + (f" (balance version {result.balance_version})"
                  if result.balance_version else "")
               + (f"; {result.held_points:,} points held for {result.held_cards:,} cards "
                  "without a balance account" if result.held_cards else ""))


@central.group("profile")
def profile() -> None:
    """Rider categories of cards (adult, youth, child), for the weekly bus cap."""


@profile.command("set")
@service_options
@click.argument("card_token")
@click.option("--rider", type=click.Choice(["adult", "youth", "child"]), required=True)
def profile_set(db: str | None, data: Path | None, card_token: str, rider: str) -> None:
    """Set CARD_TOKEN's rider category."""
    from sync.server.incentives import set_profiles

    set_profiles(open_central(db, data).store, {card_token: rider})
    click.echo(f"card {card_token[:12]}… is {rider}")


@profile.command("load")
@service_options
@click.argument("csv_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def profile_load(db: str | None, data: Path | None, csv_file: Path) -> None:
    """Load rider categories from a CSV of card_token,rider."""
    from sync.server.incentives import set_profiles

    rows: dict[str, str] = {}
    with open(csv_file, newline="", encoding="utf-8") as fh:
        for n, row in enumerate(csv.reader(fh), 1):
            if not row or row[0] == "card_token":
                continue
            if len(row) < 2:
                raise ConfigError(f"{csv_file}:{n}: expected card_token,rider")
            rows[row[0]] = row[1].strip()
    click.echo(f"{set_profiles(open_central(db, data).store, rows)} profiles loaded")


@profile.command("remove")
@service_options
@click.argument("card_token")
def profile_remove(db: str | None, data: Path | None, card_token: str) -> None:
    """Forget CARD_TOKEN's category (its taps' own category applies again)."""
    from sync.server.incentives import remove_profile

    gone = remove_profile(open_central(db, data).store, card_token)
    click.echo("removed" if gone else "no profile for that card")


@central.group("rules")
def rules() -> None:
    """Incentive rules: a versioned TOML file, validated and kept by the service."""


@rules.command("load")
@service_options
@click.argument("toml_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def rules_load(db: str | None, data: Path | None, toml_file: Path) -> None:
    """Validate TOML_FILE and put it in force as a new version."""
    from sync.server.incentives import load_rules

    try:
        text = toml_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{toml_file}: {err}") from err
    loaded, stored = load_rules(open_central(db, data).store, text, str(toml_file))
    click.echo(f"incentive rules version {loaded.version} "
               + ("in force" if stored else "already held; nothing changed"))


@rules.command("show")
@service_options
@click.option("--default", "default", is_flag=True, help="The shipped defaults instead.")
def rules_show(db: str | None, data: Path | None, default: bool) -> None:
    """Print the rules in force (a starting point for an edit)."""
    from sync.server.incentive_rules import default_rules_text
    from sync.server.incentives import current_rules

    text = default_rules_text() if default else current_rules(open_central(db, data).store).text
    click.echo(text, nl=False)


@rules.command("versions")
@service_options
def rules_versions_cmd(db: str | None, data: Path | None) -> None:
    """Every version loaded, with its SHA-256."""
    from sync.server.incentives import rules_versions

    for v in rules_versions(open_central(db, data).store):
        click.echo(f"version {v['version']}  sha256 {v['sha256'][:16]}…  loaded {v['loaded_ms']}")


@central.group("campaign")
def campaign_group() -> None:
    """Campaign QR codes (LPC1): a signed claim to points for one wallet."""


@campaign_group.command("keygen")
@click.argument("key_file", type=click.Path(dir_okay=False, path_type=Path))
def campaign_keygen(key_file: Path) -> None:
    """Make a campaign signing key in KEY_FILE (mode 0600); print its public key for the
    rules' [campaigns] keys and the terminals' issuer keys."""
    from firmware_cfg.keys import generate_terminal_key, public_hex

    click.echo(public_hex(generate_terminal_key(key_file)))


@campaign_group.command("code")
@click.argument("campaign_id")
@click.argument("wallet_id")
@click.option("--key", "key_file", required=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--points", type=click.IntRange(1, 2**32 - 1), required=True)
@click.option("--days", type=click.IntRange(1, 400), default=1, show_default=True,
              help="Valid from now for this many days.")
def campaign_code(campaign_id: str, wallet_id: str, key_file: Path, points: int,
                  days: int) -> None:
    """Issue a campaign code for WALLET_ID (what the campaign's system does at the event)."""
    import time

    from firmware_cfg.keys import load_terminal_key
    from terminal.qr import campaign

    now = int(time.time())
    click.echo(campaign.make(load_terminal_key(key_file), campaign_id, wallet_id, points,
                             valid_from=now, valid_until=now + days * 86_400))


COMMANDS: list[click.Command] = []
