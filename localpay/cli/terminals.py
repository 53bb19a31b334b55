"""``localpay central terminals`` (every terminal, its state) and ``localpay central terminal
revoke`` (stop one at its next request).

Registered under ``localpay central`` by the central command group; ``revoke`` joins the
``central terminal`` group beside ``add``. Both take ``--db`` / ``--data`` as the other
central commands do.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from localpay.cli.central import open_central, service_options
from localpay.cli.central import terminal as terminal_group
from localpay.cli.common import UserError


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms / 1000))


@click.command("terminals")
@service_options
@click.option("--municipality", default=None, metavar="ID",
              help="Only the terminals of this municipality (default: every one).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of "
              "a table.")
def terminals(db: str | None, data: Path | None, municipality: str | None,
              as_json: bool) -> None:
    """List every registered terminal: municipality, role and place (from its newest
    config bundle, else the place of its last entry), the merchant it is assigned to, when
    it was registered, last seen (its last authenticated request), its last entry (seq,
    effective time), sync lag (at its last batch, how long the oldest new entry had
    waited), the clock state its last entry stated, the config version published for it,
    the software version and faults it last reported, and REVOKED with when and why."""
    from central import municipalities
    from central.terminal_status import row_text
    from central.terminal_status import terminals as rows_of

    service = open_central(db, data)
    try:
        if municipality is not None:
            municipalities.require(service.store, municipality)
        rows = rows_of(service.store, municipality)
    finally:
        service.store.close()
    if as_json:
        for r in rows:
            click.echo(json.dumps(r.as_dict(), ensure_ascii=False))
        return
    click.echo(f"{len(rows)} terminal(s)"
               + (f" of municipality {municipality}" if municipality else ""))
    for r in rows:
        t = row_text(r, _when)
        state = (f"REVOKED {_when(r.revoked_ms)}"
                 + (f" ({r.revoked_reason})" if r.revoked_reason else "")
                 if r.revoked_ms is not None else "active")
        click.echo(f"  {t['terminal']}  {t['municipality']}  {t['role']} {t['place']}  "
                   f"merchant {t['merchant']}  enrolled {t['enrolled']}  "
                   f"seen {t['last_seen']}  last entry {r.last_seq} at {t['last_entry']}  "
                   f"sync lag {t['sync_lag']}  clock {t['clock']}  config {t['config']}  "
                   f"software {t['software']}  faults {t['faults']}  {state}")


@terminal_group.command("revoke")
@service_options
@click.argument("terminal_id")
@click.option("--reason", default="", help="Why (kept with the time, shown by `central "
              "terminals`).")
def revoke(db: str | None, data: Path | None, terminal_id: str, reason: str) -> None:
    """Revoke TERMINAL_ID: from its next request on, its signature authenticates nothing
    (401), on every API worker. Its entries stay in the central chain; it cannot be undone
    (enrol the device again under a new id)."""
    from central.terminal_status import revoke as do_revoke
    from localpay.errors import ConfigError, SyncProtocolError

    service = open_central(db, data)
    try:
        when = do_revoke(service.store, terminal_id, reason)
    except (ConfigError, SyncProtocolError) as err:
        raise UserError(str(err)) from err
    finally:
        service.store.close()
    click.echo(f"terminal {terminal_id} revoked at {_when(when)}"
               + (f": {reason}" if reason else ""))
