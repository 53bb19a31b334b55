"""``localpay central ...``: run the central service and act on its store as its operator."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import click

from localpay.cli.central_store import init, service_options
from localpay.cli.common import UserError
from localpay.errors import ConfigError

log = logging.getLogger(__name__)


def iso_day(text: str, name: str) -> str:
    """A real date written ``YYYY-MM-DD``, nothing else (``date.fromisoformat`` alone would
    also take ``20250301`` and week dates)."""
    import datetime as dt

    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text or ""):
        try:
            return dt.date.fromisoformat(text).isoformat()
        except ValueError:
            pass
    # one line, as every refusal (not click's usage block)
    raise UserError(f"{name}: {text!r} is not a real date written YYYY-MM-DD")


def municipality_flag(func: Any) -> Any:
    """``--municipality ID`` (default ``default``: a single-municipality install needs none)."""
    return click.option("--municipality", default="default", show_default=True, metavar="ID",
                        help="The municipality this acts in (`central municipality list`)."
                        )(func)


def open_central(db: str | None, data: Path | None, *, create: bool = False,
                 **kw: Any) -> Any:
    """The service over the store and data folder :func:`service_options` resolved; made
    only with ``create`` (``central init``, ``central serve --init``)."""
    from central import open_service

    return open_service(db, data, create=create, **kw)


@click.group()
def central() -> None:
    """The central service: receives batches, keeps the central chain, serves deny lists.

    Every command acts on the store --db, LOCALPAY_CENTRAL_DB or central.toml in the data
    folder names (default: SQLite in the data folder: --data, LOCALPAY_CENTRAL_DATA,
    HOME/central for a --home, or ~/.local/share/localpay/central); `central init` makes
    them, and every other command refuses a store or data folder it did not make.
    """


central.add_command(init)


@central.command("key")
@service_options(check="key")
@click.option("--answer-key", "answer", is_flag=True,
              help="Print the verifier key of the key that signs answers instead (the log "
                   "key names it in a signed note at GET /v1/answer-key).")
def show_key(db: str, data: Path, answer: bool) -> None:
    """Print the log's verifier key, for the terminals' config (keys.central_public_key).
    Reads the key only: a data folder without one is refused, never given a new one."""
    from central.keys import load_answer_signer, load_signer

    log_signer = load_signer(data, create=False)
    click.echo(load_answer_signer(data, log_signer, create=False).verifier.text() if answer
               else log_signer.verifier.text())


@central.group()
def terminal() -> None:
    """Register terminals."""


@terminal.command("add")
@service_options
@click.argument("terminal_id")
@click.argument("public_key")
@click.option("--lat", type=float, default=None, help="Where it stands (for the travel rule).")
@click.option("--lon", type=float, default=None)
@municipality_flag
def terminal_add(db: str | None, data: Path | None, terminal_id: str, public_key: str,
                 lat: float | None, lon: float | None, municipality: str) -> None:
    """Register TERMINAL_ID (letters, digits and hyphens) with its Ed25519 PUBLIC_KEY
    (64 hex digits), a terminal of one municipality for good."""
    from firmware_cfg.provision import check_terminal_id

    check_terminal_id(terminal_id)
    try:
        raw = bytes.fromhex(public_key)
    except ValueError:
        raise click.BadParameter("must be 64 hex digits", param_hint="PUBLIC_KEY") from None
    open_central(db, data).add_terminal(terminal_id, raw, lat=lat, lon=lon,
                                        municipality=municipality)
    click.echo(f"terminal {terminal_id} registered"
               + (f" in municipality {municipality}" if municipality != "default" else ""))


@central.command("deny")
@service_options
@click.argument("card_token", required=False)
@click.option("--reason", default="operator", show_default=True)
@click.option("--remove", is_flag=True, help="Take the card off the deny list.")
@click.option("--list", "show", is_flag=True, help="Show the deny list instead: each card "
              "with its reason and when it was put on.")
@click.option("--json", "as_json", is_flag=True, help="With --list: one JSON object.")
@municipality_flag
def deny(db: str | None, data: Path | None, card_token: str | None, reason: str, remove: bool,
         show: bool, as_json: bool, municipality: str) -> None:
    """Put a card token (32 hex digits) on the deny list of one municipality's terminals (or
    take it off), or show that list."""
    from central.rules import check_card_token

    if show:
        if card_token is not None:
            raise UserError("--list takes no CARD_TOKEN")
        deny_show(open_central(db, data), municipality, as_json)
        return
    if card_token is None:
        raise UserError("give a CARD_TOKEN to deny, or --list")
    if as_json:
        raise UserError("--json is for --list")
    version = open_central(db, data).deny(check_card_token(card_token), reason, remove=remove,
                                          municipality=municipality)
    click.echo(f"deny list version {version}")


def deny_show(service: Any, municipality: str, as_json: bool) -> None:
    """``central deny --list``: the version, then a line per card (token, reason, when)."""
    import datetime as dt

    from central import municipalities
    from central.rules import deny_list

    with service.store.tx(write=False) as tx:
        municipalities.require(tx, municipality)
        version, cards = deny_list(tx, municipality)
    for card in cards:
        card["at"] = dt.datetime.fromtimestamp(card["at_ms"] / 1000, service.tz).isoformat(
            sep=" ", timespec="seconds")
    if as_json:
        click.echo(json.dumps({"municipality": municipality, "version": version,
                               "cards": cards}))
        return
    click.echo(f"deny list version {version}: "
               + (f"{len(cards)} card{'s' if len(cards) != 1 else ''}" if cards else "no cards"))
    width = max((len(c["reason"]) for c in cards), default=0)
    for card in cards:
        click.echo(f"{card['card_token']}  {card['reason']:<{width}}  {card['at']}")


@central.command("balances")
@service_options
@click.argument("csv_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@municipality_flag
def balances(db: str | None, data: Path | None, csv_file: Path, municipality: str) -> None:
    """Load balance snapshots from a CSV of card_token,balance (whole won, 0 to 2**53-1) for
    one municipality's terminals; a card whose balance another municipality holds is refused.

    A bad line (too few or many columns, an empty or malformed token, a token twice, a bad
    balance) refuses the whole file, naming its line.
    """
    from central.rules import read_balances

    rows = read_balances(csv_file)
    version = open_central(db, data).set_balances(rows, municipality=municipality)
    click.echo(f"{len(rows)} balances loaded (version {version})")


@central.command("config")
@service_options
@click.argument("source", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--sign-for", "terminal_id", default=None, metavar="TERMINAL_ID",
              help="SOURCE is a terminal.toml: sign it with the operator key as the next "
              "version for TERMINAL_ID, then publish it.")
def publish_config(db: str | None, data: Path | None, source: Path,
                   terminal_id: str | None) -> None:
    """Publish a signed config bundle for the terminal it names to fetch on its next sync.

    SOURCE is a bundle signed elsewhere, or with --sign-for a TOML file that the service
    signs with its operator key.
    """
    from central.config_audit import check_publish
    from central.enroll import load_operator_key
    from central.merchants import Registry
    from firmware_cfg import bundle as bundles

    service = open_central(db, data)
    text = source.read_text(encoding="utf-8")
    if terminal_id is not None:
        if service.data_dir is None:
            raise ConfigError("this service has no data folder holding an operator key")
        current = int(service.latest_config(terminal_id)["version"])
        # the merchant facts of the terminal's own municipality
        text = Registry(service.store, service.terminal_municipality(terminal_id)
                        ).config_for(terminal_id, text)
        text = bundles.make(load_operator_key(service.data_dir), terminal_id, current + 1,
                            text).decode("utf-8")
    # the terminal's own id and role, whoever signed it (central.config_audit)
    check_publish(service.store, text)
    version = service.publish_config(text)
    click.echo(f"config version {version} published")


@central.command()
@service_options
@click.option("--date", "day", required=True, metavar="YYYY-MM-DD", callback=lambda c, p, v:
              iso_day(v, "--date"), help="The day, in the service's time zone.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
@municipality_flag
def report(db: str | None, data: Path | None, day: str, as_json: bool,
           municipality: str) -> None:
    """Reconcile the central totals with each terminal's own totals for one day, for the
    terminals and books of one municipality.

    Exit 1 when anything differs, or when there are overdrafts, fraud flags, overdrafts by
    pocket or pocket flags, or a till's Z report that differs from the log (Z REPORT
    DIFFERS, a line per figure), or a refund still waiting past the bounded wait that the
    refund float could not pay (REFUND WAITING, whatever the day). Terminals registered by
    that day that never sent anything are listed (NEVER SYNCED) without changing the exit
    status.
    """
    from central.reconcile import report as make

    rep = make(open_central(db, data), day, municipality)
    if as_json:
        click.echo(json.dumps(rep.as_json()))
        sys.exit(0 if rep.clean else 1)
    click.echo(f"Reconciliation for {day}"
               + (f", municipality {municipality}" if municipality != "default" else ""))
    head = (f"{'terminal':<18} {'kind':<10} {'central n':>9} {'central won':>13} "
            f"{'terminal n':>10} {'terminal won':>13}  ")
    click.echo(head)
    click.echo("-" * len(head))
    for line in rep.lines:
        tn = "-" if line.terminal_count is None else f"{line.terminal_count}"
        ta = "-" if line.terminal_amount is None else f"{line.terminal_amount:,}"
        mark = "ok" if line.matches else "DIFFERS"
        click.echo(f"{line.terminal_id:<18} {line.kind:<10} {line.central_count:>9} "
                   f"{line.central_amount:>13,} {tn:>10} {ta:>13}  {mark}")
    for line in rep.differences:
        if line.terminal_count is None:
            click.echo(f"DIFFERENCE {line.terminal_id} {line.kind}: the terminal reported no "
                       f"totals; central holds {line.central_count} for {line.central_amount:,}")
        else:
            click.echo(
                f"DIFFERENCE {line.terminal_id} {line.kind}: central "
                f"{line.central_count} / {line.central_amount:,} won, terminal "
                f"{line.terminal_count} / {line.terminal_amount:,} won "
                f"(count {line.central_count - line.terminal_count:+}, amount "
                f"{line.central_amount - (line.terminal_amount or 0):+,})")
    for o in rep.overdrafts:
        click.echo(f"OVERDRAFT card {o['card_token'][:12]}… at {o['terminal_id']} entry "
                   f"{o['seq']}: {o['amount']:,} won left the balance at "
                   f"{o['balance_after']:,}")
    for f in rep.flags:
        click.echo(f"FLAG {f['rule']} card {f['card_token'][:12]}… at {f['terminal_id']} "
                   f"entry {f['seq']}: {f['detail']}")
    for o in rep.pocket_overdrafts:
        click.echo(f"POCKET OVERDRAFT account {o['account']} at {o['terminal_id']} entry "
                   f"{o['seq']}: {o['amount']:,} won beyond pocket {o['pocket']}, owed to the "
                   "books")
    for f in rep.pocket_flags:
        click.echo(f"POCKET FLAG {f['reason']} card {f['card_token'][:12]}… at "
                   f"{f['terminal_id']} entry {f['seq']}: {f['detail']}")
    for r in rep.config_rejections:
        click.echo(f"CONFIG REFUSED by {r['terminal_id']}: version {r['version']} "
                   f"(sha256 {r['sha256'][:16]}…): {r['reason']}")
    for t in rep.never_synced:
        click.echo(f"NEVER SYNCED {t['terminal_id']}: registered {t['registered']}, nothing "
                   "from it has reached the central log")
    for z in rep.z_report_differences:  # a till's Z report the log does not bear out
        click.echo(f"Z REPORT DIFFERS {z['terminal_id']} entry {z['seq']} {z['figure']}: "
                   f"terminal {z['terminal']:,}, central {z['central']:,}")
    for w in rep.waiting_refunds:  # past the bounded wait, the refund float short
        click.echo(f"REFUND WAITING {w['terminal_id']} {w['seq']} {w['amount']:,} since "
                   f"{w['since_ms']}")
    if rep.clean:
        click.echo("all terminals reconcile")
    sys.exit(0 if rep.clean else 1)


# -- incentives -------------------------------------------------------------------------------


@central.command("points")
@service_options
@click.option("--card", "card_token", required=True, metavar="TOKEN", help="Card token.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
@municipality_flag
def points(db: str | None, data: Path | None, card_token: str, as_json: bool,
           municipality: str) -> None:
    """A card's points statement in one municipality's programme: every credit with its
    entry and rule version, payouts."""
    from central import municipalities
    from central.payouts import statement

    svc = open_central(db, data)
    municipalities.known(svc.store, municipality)
    st = statement(svc.store, card_token, municipality=municipality)
    if as_json:
        click.echo(json.dumps(st))
        return
    click.echo(f"Points of card {card_token[:12]}… (rider: {st['rider'] or 'from the taps'})")
    for line in statement_lines(st):
        click.echo(line)


def statement_lines(st: dict[str, Any]) -> list[str]:
    """A card's statement as a table: credits and adjustments (with why), weeks, payouts."""
    head = (f"{'day':<10} {'entry':<22} {'rule':<10} {'points':>7} {'rules v':>7} "
            f"{'payable':<7} {'paid in':<7}")
    lines = [head, "-" * len(head)]
    for e in st["entries"]:
        where = f"{e['terminal_id']}/{e['seq']}"
        why = f"  adjustment: {e['adjustment']}" if e.get("adjustment") else ""
        lines.append(f"{e['day']:<10} {where:<22} {e['rule']:<10} {e['points']:>7,} "
                     f"{e['rule_version']:>7} {e['payable_month']:<7} "
                     f"{e.get('paid_in') or '-':<7}{why}".rstrip())
    lines += [f"week of {w['week_start']}: {w['points']:,} bus points" for w in st["weeks"]]
    lines += [f"payout {p['month']}: {p['status']} {p['paid']:,} points"
              + (f" (carried {p['carry']:+,})" if p["carry"] else "") for p in st["payouts"]]
    lines.append(f"earned {st['earned']:,}; paid {st['paid']:,}; not yet paid out "
                 f"{st['pending']:,}")
    return lines


@central.command("credit")
@service_options
@click.option("--chunk", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Log entries credited per transaction.")
def credit_cmd(db: str | None, data: Path | None, chunk: int) -> None:
    """Credit the log's entries not yet credited (the service does this after every batch;
    run it to catch up, e.g. after the service was stopped mid-way)."""
    from central.incentives import credit_log

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
@click.option("--settlement", "settlement", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Settlement file to write (default: "
              "settlements/points-YYYY-MM.csv in the data folder).")
@click.option("--json", "as_json", is_flag=True)
@municipality_flag
def payout_cmd(db: str | None, data: Path | None, month: str, settlement: Path | None,
               as_json: bool, municipality: str) -> None:
    """Pay one municipality's points of a month as spendable balance and write its
    settlement file (only the credits earned at its terminals, from its points budget).

    A card linked to an account is paid into that account's points pocket, from the points
    budget (localpay central payout-fund); a card without one into its balance, as before.
    Months may be paid in any order; every point is paid once. A second run of a month
    changes nothing and writes the same file again. The file is CSV: card_token, category,
    month, points by rule (bus, local_food, refund, campaign) and total, one row per card
    paid.
    """
    from central import default_data_dir, municipalities
    from central.payouts import payout, write_settlement

    service = open_central(db, data)
    municipalities.known(service.store, municipality)
    result = payout(service.store, month, municipality=municipality)
    # default's file keeps its name: a single-municipality install sees nothing new
    name = (f"points-{result.month}.csv" if municipality == "default"
            else f"points-{municipality}-{result.month}.csv")
    path = settlement or (data or default_data_dir()) / "settlements" / name
    cards = write_settlement(service.store, result.month, path, municipality=municipality)
    if as_json:
        click.echo(json.dumps({**result.as_dict(), "settlement": str(path),
                               "settlement_cards": cards}))
        return
    what = "already paid out" if result.already else "paid out"
    click.echo(f"{result.month} {what}: {result.points:,} points to {result.cards:,} cards"
               + (f", {result.pocket_points:,} of them into {result.pocket_cards:,} accounts' "
                  "points pockets" if result.pocket_cards else "")
               + (f" (balance version {result.balance_version})"
                  if result.balance_version else "")
               + (f"; {result.held_points:,} points held for {result.held_cards:,} cards "
                  "without a balance account" if result.held_cards else ""))
    click.echo(f"settlement file: {path} ({cards:,} cards)")


@central.command("payout-fund")
@service_options
@click.option("--amount", required=True, type=click.IntRange(min=1), help="Won to put in.")
@click.option("--ref", default=None, help="The funding's reference (default: today's date); "
              "the same reference again moves nothing.")
@click.option("--programme", default=None, help="The points programme (default: incentives).")
@click.option("--municipality", default="default", show_default=True)
def payout_fund_cmd(db: str | None, data: Path | None, amount: int, ref: str | None,
                    programme: str | None, municipality: str) -> None:
    """Put the city's money into the points budget that payouts pay points pockets from."""
    import datetime as dt

    from central.payouts import POINTS_PROGRAMME, fund_points

    store = open_central(db, data).store
    got = fund_points(store, amount, ref or dt.date.today().isoformat(),
                      programme=programme or POINTS_PROGRAMME, municipality=municipality)
    click.echo(f"points budget of {got.programme}: {got.budget:,} won"
               + ("" if got.fresh else f" (reference {got.ref} was funded before: "
                  "nothing moved)"))


@central.command("budget")
@service_options
@click.option("--year", type=click.IntRange(2000, 9999), default=None,
              help="Calendar year (default: this year).")
@click.option("--json", "as_json", is_flag=True)
@municipality_flag
def budget_cmd(db: str | None, data: Path | None, year: int | None, as_json: bool,
               municipality: str) -> None:
    """Points spent (paid out) and committed (credited, not yet paid) against one
    municipality's programme's yearly budget."""
    import datetime as dt

    from central import municipalities
    from central.payouts import budget

    store = open_central(db, data).store
    municipalities.known(store, municipality)
    b = budget(store, year or dt.date.today().year, municipality=municipality)
    if as_json:
        click.echo(json.dumps(b.as_dict()))
        return
    click.echo(f"{b.year}: budget {b.budget:,} points; spent {b.spent:,}; committed "
               f"{b.committed:,}; left {b.left:,}")


@central.group("profile")
def profile() -> None:
    """Rider categories of cards (adult, youth, child): the validators' fare and the weekly
    bus cap; terminals fetch every change on their next sync."""


@profile.command("set")
@service_options
@click.argument("card_token")
@click.option("--rider", type=click.Choice(["adult", "youth", "child"]), required=True)
@municipality_flag
def profile_set(db: str | None, data: Path | None, card_token: str, rider: str,
                municipality: str) -> None:
    """Set CARD_TOKEN's rider category in one municipality's programme."""
    from central import municipalities
    from central.profiles import set_profiles

    store = open_central(db, data).store
    municipalities.known(store, municipality)
    set_profiles(store, {card_token: rider}, municipality=municipality)
    click.echo(f"card {card_token[:12]}… is {rider}")


@profile.command("load")
@service_options
@click.argument("csv_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@municipality_flag
def profile_load(db: str | None, data: Path | None, csv_file: Path, municipality: str) -> None:
    """Load rider categories of one municipality's programme from a CSV of card_token,rider."""
    from central import municipalities
    from central.profiles import read_profiles, set_profiles

    rows = read_profiles(csv_file)
    store = open_central(db, data).store
    municipalities.known(store, municipality)
    click.echo(f"{set_profiles(store, rows, municipality=municipality)} profiles loaded")


@profile.command("remove")
@service_options
@click.argument("card_token")
@municipality_flag
def profile_remove(db: str | None, data: Path | None, card_token: str,
                   municipality: str) -> None:
    """Forget CARD_TOKEN's category in one municipality (its validators charge their
    default category again, and crediting takes the taps' own)."""
    from central import municipalities
    from central.profiles import remove_profile

    store = open_central(db, data).store
    municipalities.known(store, municipality)
    gone = remove_profile(store, card_token, municipality=municipality)
    click.echo("removed" if gone else "no profile for that card")


@central.group("rules")
def rules() -> None:
    """Incentive rules: a versioned TOML file, validated and kept by the service."""


@rules.command("load")
@service_options
@click.argument("toml_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--recredit", is_flag=True,
              help="The version takes effect today or earlier: recompute the unpaid months "
              "from its effective_from, each difference an adjustment with its reason (paid "
              "months are never touched).")
@municipality_flag
def rules_load(db: str | None, data: Path | None, toml_file: Path, recredit: bool,
               municipality: str) -> None:
    """Validate TOML_FILE and put it in force as a new version of one municipality's
    programme from its effective_from.

    A version taking effect today or earlier changes points already credited: it is
    refused without --recredit. A municipality's first version (other than default's)
    credits its entries from its effective_from at once.
    """
    from central.versions import load_rules

    try:
        text = toml_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{toml_file}: {err}") from err
    loaded, stored = load_rules(open_central(db, data).store, text, str(toml_file),
                                recredit=recredit, municipality=municipality)
    click.echo(f"incentive rules version {loaded.version} "
               + ("in force" if stored else "already held; nothing changed"))


@rules.command("show")
@service_options
@click.option("--default", "default", is_flag=True, help="The shipped defaults instead.")
@municipality_flag
def rules_show(db: str | None, data: Path | None, default: bool, municipality: str) -> None:
    """Print one municipality's rules in force (a starting point for an edit)."""
    from central import municipalities
    from central.incentive_rules import default_rules_text
    from central.incentives import current_rules

    if default:
        text = default_rules_text()
    else:
        store = open_central(db, data).store
        municipalities.known(store, municipality)
        text = current_rules(store, municipality).text
    click.echo(text, nl=False)


@rules.command("versions")
@service_options
@municipality_flag
def rules_versions_cmd(db: str | None, data: Path | None, municipality: str) -> None:
    """Every version loaded, with its SHA-256."""
    from central import municipalities
    from central.incentives import rules_versions

    store = open_central(db, data).store
    municipalities.known(store, municipality)
    for v in rules_versions(store, municipality):
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

    click.echo(public_hex(generate_terminal_key(key_file, "campaign key")))


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
    key = load_terminal_key(key_file, "campaign key")
    click.echo(campaign.make(key, campaign_id, wallet_id, points,
                             valid_from=now, valid_until=now + days * 86_400))


# -- central enroll ------------------------------------------------------------------------------


@central.command("enroll")
@service_options
@click.option("--terminal-id", default="", help="Bind the code to this terminal id "
              "(default: BUS-<route>-NNNN or TILL-<merchant>-NNNN, given at enrolment).")
@click.option("--role", type=click.Choice(["validator", "till"]), default=None,
              help="Bind the code to a role.")
@click.option("--place", default="", help="Bind the code to a route (validator) or merchant "
              "id (till).")
@click.option("--config", "template", type=click.Path(dir_okay=False, exists=True,
                                                      path_type=Path), default=None,
              help="Config template (TOML) for the terminals enrolled with these codes: "
              "fares, risk limits, readers; id, role, place, URL and keys are filled in.")
@click.option("--ttl-hours", type=click.FloatRange(min=0.02, max=720), default=24.0,
              show_default=True, help="Hours until the code expires.")
@click.option("--count", type=click.IntRange(1, 1000), default=1, show_default=True)
@municipality_flag
def enroll_codes(db: str | None, data: Path | None, terminal_id: str, role: str | None,
                 place: str, template: Path | None, ttl_hours: float, count: int,
                 municipality: str) -> None:
    """Issue single-use enrolment codes for `localpay provision` (which reads one on its
    standard input or from --code-file), each for a terminal of one municipality.

    Each code is shown once, here; the service keeps only hashes of it.
    """
    from central.enroll import issue_codes
    from firmware_cfg.provision import check_place, check_terminal_id

    # refused before the store is opened (or made)
    if terminal_id:
        check_terminal_id(terminal_id)
    if place:
        check_place(place)
    text = template.read_text(encoding="utf-8") if template else ""
    service = open_central(db, data)
    try:
        codes = issue_codes(service, count=count, terminal_id=terminal_id, role=role or "",
                            place=place, template=text, ttl_s=int(ttl_hours * 3600),
                            municipality=municipality)
    finally:
        service.store.close()
    bound = ", ".join(f"{k} {v}" for k, v in (("municipality", municipality),
                                               ("terminal", terminal_id), ("role", role),
                                               ("place", place))
                      if v and (k, v) != ("municipality", "default"))
    click.echo(f"{count} enrolment code(s), single-use, valid {ttl_hours:g} h"
               + (f" ({bound})" if bound else "") + ":", err=True)
    for code in codes:
        click.echo(code)
