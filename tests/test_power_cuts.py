"""Power cuts through the real file system calls never lose a reported approval.

The real ``localpay simulate --trace`` runs on a FUSE file system that forgets every write
not yet fsynced (tests/powercut/fs.py); it is cut at a random write, killed, and the
terminal boots on what the disk kept (tests/powercut/harness.py). The same check must
fail for the ledger run with ``synchronous=NORMAL`` and ``OFF``: a check that cannot catch
them proves nothing. A fresh home cut during its first boot (keys, config and ledger being
made) must survive too, and its control, the same code without the directory fsync after a
rename (as the key file was written before these cuts found it lost), must be caught. A
terminal installing signed config bundles, and the sync client saving its state, are cut
the same way: they keep the old or the new, never a mix. ``POWERCUT_SEED=S`` replays a
run; ``make soak`` runs 1,000 cuts.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.powercut import config_apply, sync_state
from tests.powercut.harness import run_cuts

CUTS = 50
CONTROL_CUTS = 4
FIRST_BOOT_CUTS = 4
CONFIG_CUTS = 10
STATE_CUTS = 4
STATE_CONTROL_CUTS = 3
#: a fixed default keeps the suite's cuts the same from run to run; the soak draws its own
DEFAULT_SEED = 20261127


def _seed() -> int:
    return int(os.environ.get("POWERCUT_SEED") or DEFAULT_SEED)


@pytest.mark.slow
def test_power_cuts_keep_every_reported_approval(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    seed = _seed()
    summary = run_cuts(tmp_path, seed=seed, full_cuts=CUTS, control_cuts=CONTROL_CUTS,
                       first_boot_cuts=FIRST_BOOT_CUTS)
    with capsys.disabled():
        print(f"\npower cuts: replay with POWERCUT_SEED={seed}")
        print("\n".join(summary.lines()))

    full = summary.of("FULL")
    assert len(full) == CUTS
    assert {c.mode for c in full} == {"drop", "torn"}
    # the cuts fell while approvals were being made, not all before the first one
    assert sum(c.reported for c in full) >= CUTS
    assert not summary.failures, "\n".join(summary.lines())
    assert summary.survived == CUTS
    # a first boot's cuts: every one survived (failures above counts them), and the cuts
    # fell after approvals had been reported, so a lost key or ledger would have shown
    assert len(summary.first_boot) == FIRST_BOOT_CUTS
    assert all(c.survived for c in summary.first_boot)
    assert sum(c.reported for c in summary.first_boot) > 0
    # the negative controls: the same check catches a ledger that does not sync, and a
    # first boot whose renames are not made durable
    for sync in ("NORMAL", "OFF", "NODIRSYNC"):
        assert len(summary.controls(sync)) == CONTROL_CUTS
        assert summary.caught(sync) >= 1, "\n".join(summary.lines())


@pytest.mark.slow
def test_a_cut_mid_install_leaves_the_old_config_or_the_new(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed = _seed()
    results, seconds = config_apply.run_config_cuts(tmp_path, seed=seed, cuts=CONFIG_CUTS)
    with capsys.disabled():
        print(f"\nconfig cuts: replay with POWERCUT_SEED={seed}")
        print("\n".join(config_apply.summary_lines(results, seconds)))

    assert [r.problems for r in results if not r.survived] == []
    assert len(results) == CONFIG_CUTS
    assert {r.mode for r in results} == {"drop", "torn"}
    # installs went on across the cuts: each round started from what the last one left
    assert results[-1].applied > 0
    assert all(r.outcome in ("old", "new") for r in results)


@pytest.mark.slow
def test_a_cut_while_the_sync_state_is_saved_leaves_the_old_state_or_the_new(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed = _seed()
    results, seconds = sync_state.run_state_cuts(tmp_path, seed=seed, cuts=STATE_CUTS,
                                                 control_cuts=STATE_CONTROL_CUTS)
    with capsys.disabled():
        print(f"\nsync state cuts: replay with POWERCUT_SEED={seed}")
        print("\n".join(sync_state.summary_lines(results, seconds)))

    full = [r for r in results if r.sync == "FULL"]
    assert [r.problems for r in full if not r.survived] == []
    assert len(full) == STATE_CUTS
    assert {r.mode for r in full} == {"drop", "torn"}
    assert all(r.outcome in ("old", "new") for r in full)
    # saves went on across the cuts, so a state going back would have been seen
    assert full[-1].saved > STATE_CUTS
    control = [r for r in results if r.sync == "NODIRSYNC"]
    assert len(control) == STATE_CONTROL_CUTS
    assert any(not r.survived for r in control), sync_state.summary_lines(results, seconds)
