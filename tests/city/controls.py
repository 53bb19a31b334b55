"""Negative controls: after the week's checks pass, four planted faults that the same
checks must catch, in the same run (a check that cannot fail proves nothing):

- an approval reported that no ledger holds (a trace line past the ledger's head);
- a card's points credited short (one ``incentive_credits`` row deleted at the central);
- a day's totals reported wrong (one ``terminal_totals`` row off by 100 won);
- a terminal process's memory grown by 11 MB (a planted sample).
"""

from __future__ import annotations

import json

from central import open_service
from tests.city.check import check
from tests.city.world import CityWorld, ledger_progress

#: control -> the words of the difference that must catch it
EXPECTED = {
    "approval never recorded": "reported approvals lost from their ledger",
    "points credited short": "cards whose points differ",
    "totals reported wrong": "totals the terminals reported that differ",
    "memory grown": "memory grew more than 10 MB",
}


def run_controls(world: CityWorld) -> dict[str, bool]:
    """Plant the four faults, check again; which of them the checks caught."""
    node = world.nodes[0]
    head, _ = ledger_progress(node.home.ledger_path)
    with open(node.trace, "a", encoding="utf-8") as f:
        f.write(json.dumps({"t": 0, "seq": head + 1, "entry_hash": "00" * 32, "kind": "tap",
                            "amount": 1500, "boot": 0}) + "\n")
    svc = open_service(world.db, world.data)
    try:
        with svc.store.tx() as tx:
            row = tx.one("SELECT terminal_id, seq FROM incentive_credits WHERE points > 0 "
                         "ORDER BY terminal_id, seq LIMIT 1")
            if row is not None:
                tx.run("DELETE FROM incentive_credits WHERE terminal_id = ? AND seq = ?",
                       (row[0], row[1]))
            told = tx.one("SELECT terminal_id, day, kind FROM terminal_totals "
                          "ORDER BY terminal_id, day, kind LIMIT 1")
            if told is not None:
                tx.run("UPDATE terminal_totals SET amount = amount + 100 WHERE terminal_id = ? "
                       "AND day = ? AND kind = ?", (told[0], told[1], told[2]))
    finally:
        svc.store.close()
    sampled = next((n for n in world.nodes if n.rss), None)
    if sampled is not None:
        pid, kb = sampled.rss[min(sampled.rss)]
        sampled.rss[max(sampled.rss) + 1] = (pid, kb + 11 * 1024)
    found = check(world, proofs=False).differences
    return {name: any(words in d for d in found) for name, words in EXPECTED.items()}
