"""The checks at the end of the week: each compares what the terminals hold with what the
central holds, and every difference is listed (``Findings.differences``).

- **ledgers**: each terminal's chain verifies (``Ledger.verify``);
- **approvals**: every approval a terminal reported (its trace) is in its ledger with the
  hash reported, and on the central chain exactly once with that hash, with an inclusion
  proof verified by the product's verifier (``sync.merkle.verify_inclusion``) against the
  final signed checkpoint. The proofs are made from the tree nodes the central stores
  (``nodes``); a sample is also asked of the service's own ``inclusion_proof`` and must be
  the same. The checkpoint's root is recomputed here from every entry's bytes;
- **entries**: every ledger entry is on the central chain exactly once (seqs 1..head, the
  ledger's hashes), and nothing else is;
- **totals per terminal and day**: the central's count and won per terminal, day and kind
  equal the ledger's, for the entries stated with a trusted clock (their day is the day
  they state); the entries stated with an unknown clock are flagged ``clock`` at the
  central and put on a day between their trusted neighbours'; the totals each terminal
  reported (``terminal_totals``) equal its ledger's for every day it states; and the
  product's reconciliation (``central.reconcile.report``) differs only by those entries;
- **points**: each card's points at the central (credits plus adjustments) equal
  :func:`tests.city.points.owed`, computed from the ledgers;
- **checkpoints**: every checkpoint a terminal kept (sampled each day from its sync state,
  and its ledger's at the end) verifies and is consistent with the final log
  (``sync.merkle.verify_consistency`` on a proof from the central's nodes);
- **memory**: no terminal's resident memory grew more than 10 MB from the first day's
  sample to the last.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from central import open_service
from central.reconcile import report
from localpay.errors import ProofError
from offline_ledger import Ledger
from sync import merkle
from sync.checkpoint import Checkpoint, NoteVerifier
from tests.city.points import Item, day_of, detail_of, owed
from tests.city.world import CityWorld

RSS_LIMIT_KB = 10 * 1024
UNKNOWN = '"clock":"unknown"'


@dataclass
class Findings:
    differences: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    #: the central's batches (terminal, first seq, last seq, received ms), for the report
    batches: list[tuple[str, int, int, int]] = field(default_factory=list)

    def differ(self, what: str, items: list[Any], limit: int = 10) -> None:
        if items:
            more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
            self.differences.append(f"{what}: {items[:limit]}{more}")


@dataclass
class Central:
    """What the checks read of the central store, in a few queries."""

    rows: list[tuple[Any, ...]]
    size: int
    root: bytes
    note: str
    nodes: dict[tuple[int, int], bytes]
    reported: dict[tuple[str, str, str], tuple[int, int]]
    clock_flags: set[tuple[str, int]]
    points: dict[str, int]
    points_by_rule: dict[str, int]
    batches: list[tuple[str, int, int, int]]


def read_central(world: CityWorld, verifier: NoteVerifier, *, proofs: bool = True) -> Central:
    svc = open_service(world.db, world.data)
    try:
        note = svc.checkpoint()
        cp = Checkpoint.verify(note, verifier)
        with svc.store.tx(write=False) as tx:
            rows = tx.all("SELECT log_index, terminal_id, seq, kind, amount, day, entry_hash, "
                          "data, detail, effective_ms FROM entries ORDER BY log_index")
            nodes = {(int(lv), int(i)): bytes(h)
                     for lv, i, h in tx.all("SELECT level, idx, hash FROM nodes")}
            # the leaves, which the store does not keep as nodes: hashed here from the bytes
            nodes.update({(0, int(r[0])): merkle.leaf_hash(bytes(r[7])) for r in rows})
            reported = {(str(t), str(d), str(k)): (int(c), int(a)) for t, d, k, c, a in tx.all(
                "SELECT terminal_id, day, kind, count, amount FROM terminal_totals")}
            flags = {(str(t), int(s)) for t, s in tx.all(
                "SELECT terminal_id, seq FROM flags WHERE rule = 'clock'")}
            points: dict[str, int] = defaultdict(int)
            by_rule: dict[str, int] = defaultdict(int)
            for table in ("incentive_credits", "incentive_adjustments"):
                for card, rule, p in tx.all(f"SELECT card_token, rule, SUM(points) FROM {table} "
                                            "GROUP BY card_token, rule"):
                    points[str(card)] += int(p)
                    by_rule[str(rule)] += int(p)
            batches = [(str(t), int(f), int(la), int(r)) for t, f, la, r in tx.all(
                "SELECT terminal_id, first_seq, last_seq, received_ms FROM batches")]
        sample = random.Random(world.plan.seed).sample(range(cp.size), min(40, cp.size)) \
            if proofs else []
        served = {i: svc.inclusion_proof(i, cp.size) for i in sample}
    finally:
        svc.store.close()
    central = Central([tuple(r) for r in rows], cp.size, cp.root, note, nodes, reported, flags,
                      {k: v for k, v in points.items() if v}, dict(by_rule), batches)
    for i, proof in served.items():
        if proof != merkle.inclusion_proof(i, cp.size, _source(nodes)):
            raise ProofError(f"the service's inclusion proof of {i} is not the stored one")
    return central


def _source(nodes: dict[tuple[int, int], bytes]) -> merkle.NodeSource:
    def source(wanted: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return {n: nodes[n] for n in wanted if n in nodes}

    return source


def read_trace(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    data = path.read_bytes()
    return [json.loads(line) for line in data[:data.rfind(b"\n") + 1].splitlines()]


def check(world: CityWorld, *, proofs: bool = True) -> Findings:
    """Every check of the module docstring; without ``proofs``, those that need no Merkle
    proof (the negative controls plant nothing a proof would catch first)."""
    f = Findings()
    verifier = NoteVerifier.parse(world.verifier)
    c = read_central(world, verifier, proofs=proofs)
    f.batches = c.batches
    ledgers: dict[str, list[Any]] = {}
    kept: dict[str, set[str]] = {}
    for node in world.nodes:
        tid = node.home.config().terminal.id
        with Ledger(node.home.ledger_path) as led:
            rep = led.verify()
            entries = list(led.entries())
            kept[tid] = {*node.checkpoints, led.sync_checkpoint()} - {""}
        if rep.entries != len(entries) or [e.seq for e in entries] != list(
                range(1, len(entries) + 1)):
            f.differences.append(f"{tid}: the ledger's chain does not verify whole")
        ledgers[tid] = entries
    names = {node.home.config().terminal.id: node for node in world.nodes}
    _check_log(f, c)
    at = _check_entries(f, c, ledgers)
    _check_approvals(f, c, ledgers, names, at, proofs)
    _check_totals(f, c, ledgers, world)
    _check_points(f, c, ledgers, world)
    if proofs:
        _check_checkpoints(f, c, verifier, kept)
    _check_memory(f, world)
    return f


def _check_log(f: Findings, c: Central) -> None:
    indexes = [int(r[0]) for r in c.rows]
    if indexes != list(range(c.size)):
        f.differences.append(f"the log's indexes are not 0..{c.size - 1} "
                             f"({len(indexes)} entries)")
    leaves = [merkle.leaf_hash(bytes(r[7])) for r in c.rows]
    if merkle.root(leaves) != c.root:
        f.differences.append("the root recomputed from the entries is not the checkpoint's")
    twice = [h.hex()[:16] for h, n in Counter(leaves).items() if n > 1]
    f.differ("entries in the log more than once", twice)
    f.figures["log_size"] = c.size


def _check_entries(f: Findings, c: Central, ledgers: dict[str, list[Any]]
                   ) -> dict[tuple[str, int], tuple[int, bytes]]:
    """Every ledger entry once on the chain; (terminal, seq) -> (log index, hash)."""
    at: dict[tuple[str, int], tuple[int, bytes]] = {}
    twice = []
    for r in c.rows:
        key = (str(r[1]), int(r[2]))
        if key in at:
            twice.append(key)
        at[key] = (int(r[0]), bytes(r[6]))
    f.differ("(terminal, seq) on the central chain more than once", twice)
    missing, wrong = [], []
    for tid, entries in ledgers.items():
        for e in entries:
            held = at.get((tid, e.seq))
            if held is None:
                missing.append((tid, e.seq))
            elif held[1] != e.entry_hash:
                wrong.append((tid, e.seq))
    f.differ("ledger entries the central does not hold", missing)
    f.differ("ledger entries the central holds with another hash", wrong)
    known = {(tid, e.seq) for tid, entries in ledgers.items() for e in entries}
    f.differ("entries on the central chain that no ledger holds",
             [k for k in at if k not in known])
    f.figures["entries_reconciled"] = sum(len(v) for v in ledgers.values()) - len(missing)
    return at


def _check_approvals(f: Findings, c: Central, ledgers: dict[str, list[Any]],
                     names: dict[str, Any], at: dict[tuple[str, int], tuple[int, bytes]],
                     proofs: bool) -> None:
    source = _source(c.nodes)
    lost, changed, bad_proof = [], [], []
    approvals = 0
    for tid, node in names.items():
        stored = {e.seq: e.entry_hash.hex() for e in ledgers[tid]}
        for line in read_trace(node.trace):
            approvals += 1
            seq, digest = int(line["seq"]), str(line["entry_hash"])
            if stored.get(seq) != digest:
                lost.append((tid, seq))
                continue
            held = at.get((tid, seq))
            if held is None or held[1].hex() != digest:
                changed.append((tid, seq))
                continue
            index = held[0]
            if not proofs:
                continue
            leaf = merkle.leaf_hash(bytes(c.rows[index][7]))
            try:
                proof = merkle.inclusion_proof(index, c.size, source)
                merkle.verify_inclusion(leaf, index, c.size, proof, c.root)
            except ProofError as err:
                bad_proof.append((tid, seq, str(err)))
    f.differ("reported approvals lost from their ledger or changed", lost)
    f.differ("reported approvals not on the central chain with their hash", changed)
    f.differ("reported approvals without a valid inclusion proof", bad_proof)
    f.figures["approvals_reported"] = approvals
    f.figures["approvals_proved"] = approvals - len(lost) - len(changed) - len(bad_proof)


def _check_totals(f: Findings, c: Central, ledgers: dict[str, list[Any]],
                  world: CityWorld) -> None:
    mine: Counter[tuple[str, str, str, str]] = Counter()
    stated: Counter[tuple[str, str, str, str]] = Counter()
    stated_unknown: Counter[tuple[str, str, str, str]] = Counter()
    unknown_at: dict[tuple[str, int], str] = {}
    for tid, entries in ledgers.items():
        for e in entries:
            day = day_of(e.fields.wall_ms).isoformat()
            stated[(tid, day, e.kind, "n")] += 1
            stated[(tid, day, e.kind, "won")] += e.amount
            if UNKNOWN in e.fields.detail:
                unknown_at[(tid, e.seq)] = ""
                stated_unknown[(tid, day, e.kind, "n")] += 1
                stated_unknown[(tid, day, e.kind, "won")] += e.amount
                continue
            mine[(tid, day, e.kind, "n")] += 1
            mine[(tid, day, e.kind, "won")] += e.amount
    theirs: Counter[tuple[str, str, str, str]] = Counter()
    placed: Counter[tuple[str, str, str, str]] = Counter()
    for r in c.rows:
        tid, seq, kind, amount, day = str(r[1]), int(r[2]), str(r[3]), int(r[4]), str(r[5])
        if (tid, seq) in unknown_at:
            unknown_at[(tid, seq)] = day
            placed[(tid, day, kind, "n")] += 1
            placed[(tid, day, kind, "won")] += amount
            continue
        theirs[(tid, day, kind, "n")] += 1
        theirs[(tid, day, kind, "won")] += amount
    f.differ("central totals per terminal, day and kind that differ from the ledgers "
             "(terminal, day, kind, count|won, ledger, central)",
             [(*k, mine[k], theirs[k]) for k in sorted(set(mine) | set(theirs))
              if mine[k] != theirs[k]])
    told = Counter[tuple[str, str, str, str]]()
    for (tid, day, kind), (n, won) in c.reported.items():
        told[(tid, day, kind, "n")] += n
        told[(tid, day, kind, "won")] += won
    f.differ("totals the terminals reported that differ from their ledgers",
             [(*k, stated[k], told[k]) for k in sorted(set(stated) | set(told))
              if stated[k] != told[k]])
    unflagged = sorted(k for k in unknown_at if k not in c.clock_flags)
    f.differ("entries stated with an unknown clock and not flagged", unflagged)
    f.differ("entries stated with an unknown clock put outside their neighbours' days",
             _misplaced(ledgers, unknown_at))
    unexplained = []
    sim_days = {world.plan.day_date(d).isoformat() for d in range(world.plan.days)}
    svc = open_service(world.db, world.data)
    try:
        for day in sorted(sim_days | {k[1] for k in placed}):
            for line in report(svc, day).lines:
                for what, central, terminal in (("n", line.central_count, line.terminal_count),
                                                ("won", line.central_amount,
                                                 line.terminal_amount)):
                    k = (line.terminal_id, day, line.kind, what)
                    if central - (terminal or 0) != placed[k] - stated_unknown[k]:
                        unexplained.append((*k, terminal, central))
    finally:
        svc.store.close()
    f.differ("reconciliation differences not explained by entries of unknown clocks",
             unexplained)
    f.figures["clock_unknown_entries"] = len(unknown_at)
    f.figures["days_reconciled"] = len({k[1] for k in mine})


def _misplaced(ledgers: dict[str, list[Any]], placed: dict[tuple[str, int], str]) -> list[Any]:
    out = []
    for tid, entries in ledgers.items():
        trusted = [(e.seq, day_of(e.fields.wall_ms).isoformat()) for e in entries
                   if UNKNOWN not in e.fields.detail]
        for e in entries:
            day = placed.get((tid, e.seq))
            if not day:
                continue
            before = [d for s, d in trusted if s < e.seq]
            after = [d for s, d in trusted if s > e.seq]
            low = before[-1] if before else "0000"
            high = after[0] if after else "9999"
            if not low <= day <= high:
                out.append((tid, e.seq, low, day, high))
    return out


def _check_points(f: Findings, c: Central, ledgers: dict[str, list[Any]],
                  world: CityWorld) -> None:
    effective = {(str(r[1]), int(r[2])): int(r[9]) for r in c.rows}
    items = []
    for tid, entries in ledgers.items():
        for e in entries:
            fields = e.fields
            when = fields.wall_ms if UNKNOWN not in fields.detail else effective.get(
                (tid, e.seq), fields.wall_ms)
            items.append(Item(tid, e.seq, e.kind, fields.card_token, e.amount, fields.ref_seq,
                              detail_of(fields.detail), when))
    want = owed(items, world.plan, world.youth)
    f.differ("weeks the points model cannot judge", want.unjudged)
    got = c.points
    f.differ("cards whose points differ (card, computed here, credited)",
             [(k[:12], want.by_card.get(k, 0), got.get(k, 0))
              for k in sorted(set(want.by_card) | set(got))
              if want.by_card.get(k, 0) != got.get(k, 0)])
    f.figures["points_reconciled"] = sum(want.by_card.values())
    f.figures["points_by_rule"] = dict(want.by_rule)
    f.figures["points_credited"] = sum(got.values())
    f.figures["cards_with_points"] = len(want.by_card)


def _check_checkpoints(f: Findings, c: Central, verifier: NoteVerifier,
                       kept: dict[str, set[str]]) -> None:
    source = _source(c.nodes)
    bad = []
    sizes: set[int] = set()
    notes = 0
    for tid, found in kept.items():
        for note in found:
            notes += 1
            try:
                cp = Checkpoint.verify(note, verifier)
                proof = merkle.consistency_proof(cp.size, c.size, source)
                merkle.verify_consistency(cp.size, c.size, cp.root, c.root, proof)
                sizes.add(cp.size)
            except (ProofError, ValueError) as err:
                bad.append((tid, str(err)[:120]))
    f.differ("kept checkpoints not consistent with the final log", bad)
    f.figures["checkpoints_verified"] = notes - len(bad)
    f.figures["checkpoint_sizes"] = len(sizes)


def _check_memory(f: Findings, world: CityWorld) -> None:
    grew = []
    per_day: dict[int, list[int]] = defaultdict(list)
    worst = compared = 0
    for node in world.nodes:
        for day, (_pid, kb) in node.rss.items():
            per_day[day].append(kb)
        if len(node.rss) < 2:
            continue
        compared += 1
        first, last = min(node.rss), max(node.rss)
        growth = node.rss[last][1] - node.rss[first][1]
        worst = max(worst, growth)
        if growth > RSS_LIMIT_KB:
            grew.append((node.plan.name, node.rss[first][1], node.rss[last][1]))
    f.differ("terminal processes whose memory grew more than 10 MB (kB first day, last day)",
             grew)
    f.figures["rss_kb_by_day"] = {d: {"min": min(v), "max": max(v), "samples": len(v)}
                                  for d, v in sorted(per_day.items())}
    f.figures["rss_worst_growth_kb"] = worst
    #: terminals with samples on two days or more (a process younger than WARM_S is not
    #: sampled: one restarted late in the first day may have no first-day sample)
    f.figures["rss_terminals_compared"] = compared
