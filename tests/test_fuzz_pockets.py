"""The pocket rules parser under atheris for a bounded time (``tools/fuzz_pocket_rules.py``):
PocketRules or ConfigError, nothing else, run the same way as ``test_fuzz_parsers.py``.

The harness swallows ConfigError for random text; fed valid rules files (the default and
generated ones) a harness whose parser refuses one fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
from hypothesis import given, settings

from localpay import pockets
from localpay.errors import ConfigError
from tests.test_pockets import programmes, toml_of

ROOT = Path(__file__).resolve().parent.parent

# The first byte steers the harness: 0 hands it the rest unchanged, 3 puts a cash pocket
# first and opens a [[pocket]] table for the rest.
AS_IS = b"\x00"
IN_A_POCKET = b"\x03"


def test_harness_runs_clean(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "fuzz_pocket_rules.py"), "-runs=20000",
         "-max_total_time=7", "-seed=1", f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    done = re.search(r"Done (\d+) runs", output)
    assert done is not None, output[-3000:]
    assert int(done.group(1)) >= 1000, done.group(0)
    assert not list(tmp_path.iterdir()), "the fuzzer left a crash artifact"


def _harness() -> ModuleType:
    from tools import fuzz_pocket_rules  # atheris is a dev extra: only the fuzz tests need it

    return fuzz_pocket_rules


def _must_accept(text: str, source: str = "<rules>") -> pockets.PocketRules:
    try:
        return pockets.parse_rules(text, source)
    except ConfigError as err:
        raise AssertionError(f"a valid rules file was refused: {err}") from err


def strict_harness(monkeypatch: pytest.MonkeyPatch) -> Callable[[bytes], None]:
    """The harness's ``test_one_input`` with its parser required to accept."""
    harness = _harness()
    monkeypatch.setattr(harness, "pockets",
                        SimpleNamespace(**{**vars(pockets), "parse_rules": _must_accept}))
    run: Callable[[bytes], None] = harness.test_one_input
    return run


def test_harness_accepts_the_default_and_a_pocket_body(monkeypatch: pytest.MonkeyPatch) -> None:
    run = strict_harness(monkeypatch)
    run(AS_IS + pockets.DEFAULT_RULES.encode())
    run(IN_A_POCKET + b'id = "allowance:youth-dividend"\nkind = "allowance"\n'
        b'allow_categories = ["ksic:47", "mcc:5411"]\nexclude_categories = ["ksic:4711"]\n'
        b'regions = ["goyang"]\nexpires = 2026-12-31\nper_payment = 50000\nper_day = 100000\n')


def test_a_refused_valid_input_fails_the_strict_harness(monkeypatch: pytest.MonkeyPatch) -> None:
    run = strict_harness(monkeypatch)
    # the check above must be able to fail: a file with a contradiction is refused, and seen
    with pytest.raises(AssertionError, match="a valid rules file was refused"):
        run(IN_A_POCKET + b'id = "points"\nkind = "points"\nper_payment = 2\nper_day = 1\n')


@settings(max_examples=50, deadline=None)
@given(programmes())
def test_harness_accepts_generated_rules(rule_set: pockets.PocketRules) -> None:
    with pytest.MonkeyPatch.context() as mp:
        strict_harness(mp)(AS_IS + toml_of(rule_set).encode())
