"""``localpay central audit``: check every stored entry's own signature and hash link again,
from where the last audit stopped (:mod:`central.audit`)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from localpay.cli.central import open_central, service_options

#: seconds between two progress lines on stderr
PROGRESS_EVERY_S = 2.0


@click.command("audit")
@service_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
@click.option("--from", "start", type=click.IntRange(min=0), default=None, metavar="INDEX",
              help="Check again from this log index (default: where the last audit stopped).")
def audit(db: str | None, data: Path | None, as_json: bool, start: int | None) -> None:
    """Check each entry's own Ed25519 signature (by its terminal's registered key) and its
    hash link to the terminal's previous entry, from where the last audit stopped.

    Lists every failing entry the store records (log index, terminal, entry, reason) and
    exits 1 when there is one. Ingest under --verify anchor checks each batch's links and
    last signature only; this (and `central serve --audit-every`) checks the rest.
    """
    from central.audit import recorded, run_audit

    service = open_central(db, data)
    last = [time.monotonic()]
    said = [False]

    def progress(done: int, total: int) -> None:
        # a run shorter than PROGRESS_EVERY_S says nothing; a longer one says its end too
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or (said[0] and done == total):
            click.echo(f"audit: {done}/{total} entries checked", err=True)
            last[0], said[0] = now, True

    try:
        run = run_audit(service.store, start=start, progress=progress)
        held = recorded(service.store)
    finally:
        service.store.close()
    new = {f.log_index for f in run.failures}
    rate = round(run.checked / run.seconds) if run.seconds > 0 else 0
    if as_json:
        click.echo(json.dumps({
            "from": run.start, "to": run.end, "checked": run.checked,
            "seconds": round(run.seconds, 3), "entries_per_s": rate,
            "new_failures": len(new),
            "failures": [{"log_index": f.log_index, "terminal": f.terminal_id, "seq": f.seq,
                          "reason": f.reason, "found_ms": ms, "new": f.log_index in new}
                         for f, ms in held]}, sort_keys=True))
    else:
        click.echo(f"checked {run.checked} entries (log index {run.start} to {run.end}) in "
                   f"{run.seconds:.2f} s ({rate} entries/s): {len(new)} new failing, "
                   f"{len(held)} failing in all")
        for f, _ in held:
            click.echo(f"log index {f.log_index}: terminal {f.terminal_id} entry {f.seq}: "
                       f"{f.reason}" + (" (new)" if f.log_index in new else ""))
    if held:
        sys.exit(1)

