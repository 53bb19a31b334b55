"""Every parser under atheris for a bounded time: a result or the typed error, nothing else.

Each harness runs in a subprocess (``atheris.Fuzz()`` never returns); a crash, an uncaught
exception or a hang fails the test, and the harness must have actually executed runs.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESSES = ["fuzz_tlv", "fuzz_mpm", "fuzz_cpm", "fuzz_wallet"]
DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("name", HARNESSES)
def test_harness_runs_clean(name: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / f"{name}.py"), "-runs=20000",
         "-max_total_time=7", "-seed=1", f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    done = re.search(r"Done (\d+) runs", output)
    assert done is not None, output[-3000:]
    assert int(done.group(1)) >= 1000, done.group(0)
    assert not list(tmp_path.iterdir()), "the fuzzer left a crash artifact"


def test_harnesses_accept_the_published_examples() -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        mpm_h = importlib.import_module("fuzz_mpm")
        cpm_h = importlib.import_module("fuzz_cpm")
        tlv_h = importlib.import_module("fuzz_tlv")
    finally:
        sys.path.remove(str(ROOT / "tools"))
    for case in json.loads((DATA / "mpm_examples.json").read_text("utf-8"))["valid"]:
        mpm_h.test_one_input(b"\x00" + case["payload"].encode("utf-8"))
    for case in json.loads((DATA / "cpm_examples.json").read_text())["valid"]:
        cpm_h.test_one_input(b"\x00" + case["payload"].encode())
    tlv_h.test_one_input(bytes.fromhex("6F1A840E325041592E5359532E4444463031A508BF0C0561034F0101"))
