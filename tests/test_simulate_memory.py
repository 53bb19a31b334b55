"""``localpay simulate`` keeps its memory flat however many taps it drives (issue #20: a
100-million-tap run grew from 44 MB to 99 MB within minutes, every tap's latency kept in a
list for the percentiles)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from localpay.cli.simulate import Latencies, run, simulation_config
from terminal.home import Home, open_terminal


def _nearest_rank(values: list[int], pct: float) -> int:
    """The nearest-rank percentile, written here from its definition."""
    ordered = sorted(values)
    for k, value in enumerate(ordered):
        if (k + 1) * 100 >= pct * len(ordered):  # at least pct % at or below it
            return value
    raise AssertionError("unreachable for pct <= 100")


@given(st.lists(st.integers(0, 250_000), min_size=1, max_size=400))
def test_percentiles_counted_per_microsecond_are_the_sorted_lists(us: list[int]) -> None:
    lat = Latencies()
    for v in us:
        lat.add(v / 1000)
    assert lat.n == len(us)
    for pct in (1, 50, 90, 99, 100):
        assert lat.percentile(pct) == _nearest_rank(us, pct) / 1000
    assert lat.max_us == max(us)
    assert abs(lat.mean - sum(us) / len(us) / 1000) < 1e-9


def test_no_percentile_of_nothing() -> None:
    assert Latencies().percentile(99) == 0.0 and Latencies().mean == 0.0


def test_a_long_run_does_not_grow_per_tap(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    config = simulation_config(home.config(), "validator")
    terminal = open_terminal(home, config, ledger_path=tmp_path / "sim.sqlite",
                             create_keys=True, strict=True)
    snapshots: list[tracemalloc.Snapshot] = []
    taps = 0

    def at(decision: object) -> None:
        # inside one run: after 300 taps (caches, statements, the ledger's first pages and
        # the run's own figures made), and after 3,000 more
        nonlocal taps
        taps += 1
        if taps in (300, 3300):
            snapshots.append(tracemalloc.take_snapshot())

    tracemalloc.start()
    try:
        figures = run(terminal, 3300, on_decision=at)
    finally:
        tracemalloc.stop()
        assert terminal.ledger is not None
        terminal.ledger.close()
    before, after = snapshots
    assert figures.outcomes["approved"] == 3300
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    # a list of every latency alone grew 32 bytes a tap (96 KB here)
    assert grown < 3000 * 2, after.compare_to(before, "lineno")[:10]
