"""Effective times (central.clock): properties over any stated times a terminal can send."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from central.clock import (
    AFTER_ARRIVAL,
    BACK_TOLERANCE_MS,
    BEFORE_EARLIEST,
    BEHIND_PREVIOUS,
    EARLIEST_MS,
    FUTURE_SKEW_MS,
    effective_times,
)

ARRIVAL = 1_795_000_000_000  # 2026-11-18
DAY = 86_400_000
walls = st.lists(st.one_of(st.integers(0, 2**41), st.integers(ARRIVAL - 30 * DAY, ARRIVAL)),
                 min_size=1, max_size=30)
previous = st.one_of(st.just(0), st.integers(ARRIVAL - 60 * DAY, ARRIVAL))


@given(walls, previous)
def test_effective_times_move_forward_and_stay_within_bounds(ws: list[int], prev: int) -> None:
    out = effective_times(ws, prev, ARRIVAL)
    assert len(out) == len(ws)
    last = prev
    for wall, t in zip(ws, out, strict=True):
        assert t.effective_ms >= last                      # never before its predecessor
        assert t.effective_ms >= EARLIEST_MS
        assert t.effective_ms <= max(ARRIVAL + FUTURE_SKEW_MS, prev)
        if t.problem is None:
            assert t.effective_ms == max(wall, last) and wall >= last - BACK_TOLERANCE_MS
        else:
            assert t.problem in (BEFORE_EARLIEST, AFTER_ARRIVAL, BEHIND_PREVIOUS)
        last = t.effective_ms


def test_plausible_late_batches_keep_their_times() -> None:
    week_ago = ARRIVAL - 7 * DAY
    ws = [week_ago + i * 60_000 for i in range(5)]
    assert [t.effective_ms for t in effective_times(ws, week_ago - DAY, ARRIVAL)] == ws
    assert all(t.problem is None for t in effective_times(ws, week_ago - DAY, ARRIVAL))


def test_an_implausible_time_takes_the_next_plausible_one_or_arrival() -> None:
    good = ARRIVAL - DAY
    out = effective_times([5_000, good, 10_000], good - DAY, ARRIVAL)
    assert [(t.effective_ms, t.problem) for t in out] == [
        (good, BEFORE_EARLIEST), (good, None), (ARRIVAL, BEFORE_EARLIEST)]
    # a small step back (NTP) keeps the order without a flag
    out = effective_times([good - 30_000], good, ARRIVAL)
    assert [(t.effective_ms, t.problem) for t in out] == [(good, None)]
