"""The week's report: figures (``report.json``, ``report.txt``) and a plot of throughput and
sync lag over the week (``week.png``, drawn with Pillow).

Sync lag of an approval: from the moment the terminal reported it (its trace line, real
time) to the moment the central received the batch that holds its entry (``batches``,
stamped on the simulated clock and turned back into real time). It includes the time a
terminal spent without power or network, which is what it is there to show.
"""

from __future__ import annotations

import bisect
import json
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from tests.city.check import Findings, read_trace
from tests.city.world import CityWorld

BUCKET_S = 10.0
FAULT_COLOURS = {"net_cut": (220, 60, 60), "net_delay": (240, 160, 40),
                 "power_cut": (120, 60, 200), "epoch_boot": (40, 150, 200),
                 "central_restart": (30, 30, 30), "pg_restart": (40, 160, 90)}


@dataclass
class Series:
    """Per bucket of real time since day 0 opened: approvals, worst and median lag."""

    approvals: Counter[int] = field(default_factory=Counter)
    lags: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    all_lags: list[float] = field(default_factory=list)


def lag_series(world: CityWorld, batches: list[tuple[str, int, int, int]]) -> Series:
    assert world.clock is not None
    clock = world.clock
    by_terminal: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for tid, _first, last, received_ms in batches:
        by_terminal[tid].append((last, clock.real_of(received_ms / 1000)))
    for rows in by_terminal.values():
        rows.sort()
    out = Series()
    for node in world.nodes:
        tid = node.home.config().terminal.id
        rows = by_terminal.get(tid, [])
        lasts = [r[0] for r in rows]
        for line in read_trace(node.trace):
            t = float(line["t"])
            bucket = math.floor((t - clock.t0) / BUCKET_S)
            out.approvals[bucket] += 1
            k = bisect.bisect_left(lasts, int(line["seq"]))
            if k < len(rows):
                lag = max(0.0, rows[k][1] - t)
                out.lags[bucket].append(lag)
                out.all_lags.append(lag)
    return out


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct * len(ordered) / 100) - 1)]


def figures(world: CityWorld, findings: Findings, series: Series,
            wall_s: float) -> dict[str, Any]:
    by_kind = Counter(str(a["kind"]) for a in world.applied)
    failed = Counter(str(a["kind"]) for a in world.applied if "error" in a)
    per_day = Counter[int]()
    assert world.clock is not None
    for bucket, n in series.approvals.items():
        per_day[min(max(int(bucket * BUCKET_S // world.day_s), 0), world.plan.days - 1)] += n
    load = os.getloadavg()
    return {
        "seed": world.plan.seed,
        "validators": world.plan.validators,
        "tills": world.plan.tills,
        "days": world.plan.days,
        "first_day": world.plan.first_day,
        "day_seconds": world.day_s,
        "wall_seconds": round(wall_s, 1),
        "setup_seconds": round(world.timings.setup_s, 1),
        "drain_seconds": round(world.timings.drain_s, 1),
        "final_clean_syncs": world.timings.final_syncs,
        "load_average": [round(x, 2) for x in load],
        "entries_reconciled": findings.figures.get("entries_reconciled", 0),
        "points_reconciled": findings.figures.get("points_reconciled", 0),
        "approvals": sum(series.approvals.values()),
        "approvals_by_day": {world.plan.day_date(d).isoformat(): n
                             for d, n in sorted(per_day.items())},
        "worst_sync_lag_s": round(max(series.all_lags, default=0.0), 2),
        "sync_lag_p50_s": round(_pct(series.all_lags, 50), 2),
        "sync_lag_p99_s": round(_pct(series.all_lags, 99), 2),
        "faults_scheduled": len(world.faults),
        "faults_injected": dict(sorted(by_kind.items())),
        "faults_failed": dict(failed),
        "terminal_boots": sum(n.boots for n in world.nodes),
        "checks": findings.figures,
        "problems": world.problems,
        "differences": findings.differences,
    }


def text(fig: dict[str, Any]) -> str:
    c = fig["checks"]
    lines = [
        f"city week: seed {fig['seed']}, {fig['validators']} validators, {fig['tills']} tills, "
        f"{fig['days']} days from {fig['first_day']} ({fig['day_seconds']:.0f} s each)",
        f"wall time {fig['wall_seconds']:.0f} s (set-up {fig['setup_seconds']:.0f} s, drain "
        f"{fig['drain_seconds']:.0f} s, clean syncs after the week "
        f"{fig['final_clean_syncs']}); load {fig['load_average']}",
        f"entries reconciled: {fig['entries_reconciled']:,} (log of {c.get('log_size', 0):,})",
        f"approvals reported: {c.get('approvals_reported', 0):,}, each on the central chain "
        f"once with a verified inclusion proof: {c.get('approvals_proved', 0):,}",
        f"points reconciled: {fig['points_reconciled']:,} over {c.get('cards_with_points', 0):,} "
        f"cards {c.get('points_by_rule', {})}",
        f"checkpoints kept by terminals, consistent with the final log: "
        f"{c.get('checkpoints_verified', 0)}",
        f"entries with an unknown clock (epoch boots): {c.get('clock_unknown_entries', 0)}",
        f"worst sync lag: {fig['worst_sync_lag_s']} s (p50 {fig['sync_lag_p50_s']} s, p99 "
        f"{fig['sync_lag_p99_s']} s)",
        f"faults injected: {fig['faults_injected']} (failed to inject: "
        f"{fig['faults_failed'] or 'none'}); terminal boots {fig['terminal_boots']}",
        f"terminal RSS by day (kB): {c.get('rss_kb_by_day', {})}; worst growth "
        f"{c.get('rss_worst_growth_kb', 0)} kB",
    ]
    caught = fig.get("controls_caught")
    if caught is not None:
        lines.append(f"negative controls caught: {sum(caught.values())} of {len(caught)} "
                     f"{caught}")
    if fig["problems"]:
        lines.append("problems: " + "; ".join(fig["problems"])[:4000])
    if fig["differences"]:
        lines.append("DIFFERENCES:")
        lines += [f"  {d}" for d in fig["differences"]]
    else:
        lines.append("no difference")
    return "\n".join(lines) + "\n"


def write(folder: Path, world: CityWorld, fig: dict[str, Any], series: Series) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    doc = dict(fig, faults=world.applied, plan=world.plan.as_dict())
    (folder / "report.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    (folder / "report.txt").write_text(text(fig))
    plot(folder / "week.png", world, series)


def plot(path: Path, world: CityWorld, series: Series) -> None:
    """Two panels over the week's real time: approvals per second, and the worst and median
    sync lag of the approvals of each 10 s; days and faults marked."""
    width, height, left, right = 1400, 760, 80, 30
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=13)
    span = world.plan.days * world.day_s
    buckets = max(1, math.ceil(span / BUCKET_S))

    def x_of(bucket: float) -> float:
        return left + (width - left - right) * bucket / buckets

    panels = [(60, 330, "approvals per second"), (400, 700, "sync lag (s): worst, median")]
    rates = [series.approvals.get(b, 0) / BUCKET_S for b in range(buckets)]
    worst = [max(series.lags.get(b, [0.0])) for b in range(buckets)]
    median = [_pct(series.lags.get(b, []), 50) for b in range(buckets)]
    data = [[(rates, (30, 90, 200))], [(worst, (200, 50, 50)), (median, (60, 60, 60))]]
    for (top, bottom, title), lines in zip(panels, data, strict=True):
        peak = max((max(v) for v, _ in lines), default=1.0) or 1.0
        draw.rectangle((left, top, width - right, bottom), outline=(160, 160, 160))
        draw.text((left, top - 18), f"{title} (top of scale {peak:.1f})", fill="black",
                  font=font)
        for frac in (0.0, 0.5, 1.0):
            y = bottom - (bottom - top) * frac
            draw.text((8, y - 7), f"{peak * frac:.1f}", fill=(90, 90, 90), font=font)
        for values, colour in lines:
            points = [(x_of(b + 0.5), bottom - (bottom - top) * v / peak)
                      for b, v in enumerate(values)]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
        for d in range(world.plan.days + 1):
            x = x_of(d * world.day_s / BUCKET_S)
            draw.line((x, top, x, bottom), fill=(200, 200, 200))
            if d < world.plan.days and top == panels[1][0]:
                draw.text((x + 4, bottom + 6), world.plan.day_date(d).strftime("%a %m-%d"),
                          fill="black", font=font)
    for fault in world.faults:
        x = x_of(fault.at / BUCKET_S)
        draw.line((x, 345, x, 380), fill=FAULT_COLOURS[fault.kind], width=2)
    x = left
    for kind, colour in FAULT_COLOURS.items():
        draw.rectangle((x, height - 28, x + 12, height - 16), fill=colour)
        draw.text((x + 16, height - 30), kind, fill="black", font=font)
        x += 150
    draw.text((left, 6), f"city week, seed {world.plan.seed}: {world.plan.validators} "
              f"validators, {world.plan.tills} tills, {world.plan.days} days of "
              f"{world.day_s:.0f} s", fill="black", font=font)
    img.save(path)
