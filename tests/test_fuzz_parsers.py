"""Every parser under atheris for a bounded time: a result or the typed error, nothing else.
The typed error is for random bytes only: fed valid codes (the published examples and
generated ones), a harness whose parser refuses one fails.

Each harness runs in a subprocess (``atheris.Fuzz()`` never returns); a crash, an uncaught
exception or a hang fails the test, and the harness must have actually executed runs.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, TypeVar

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from firmware_cfg.keys import demo_issuer_key
from localpay.errors import ParseError
from terminal import tlv
from terminal.cards import display_pan
from terminal.qr import cpm, mpm, wallet
from terminal.tlv import Tlv
from tests.strategies_cards import cpm_objects, mpm_objects, tlv_lists, wallet_ids

T = TypeVar("T")

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


def _harness(name: str) -> ModuleType:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "tools"))


def _must_accept(parse: Callable[..., T]) -> Callable[..., T]:
    """``parse`` for a harness fed only valid inputs: the typed error the harness swallows
    for random bytes becomes a failure here."""

    def strict(*args: Any, **kwargs: Any) -> T:
        try:
            return parse(*args, **kwargs)
        except ParseError as err:
            raise AssertionError(f"a valid input was refused: {err!r}") from err

    return strict


def strict_harnesses(monkeypatch: pytest.MonkeyPatch) -> dict[str, Callable[[bytes], None]]:
    """Each harness's ``test_one_input`` with its parser required to accept."""
    mpm_h, cpm_h, tlv_h, wallet_h = (_harness(f"fuzz_{n}") for n in ("mpm", "cpm", "tlv",
                                                                     "wallet"))
    monkeypatch.setattr(mpm_h, "mpm", SimpleNamespace(parse=_must_accept(mpm.parse)))
    monkeypatch.setattr(cpm_h, "cpm", SimpleNamespace(parse=_must_accept(cpm.parse)))
    monkeypatch.setattr(tlv_h, "tlv", SimpleNamespace(decode=_must_accept(tlv.decode),
                                                      encode=tlv.encode))
    monkeypatch.setattr(wallet_h, "wallet", SimpleNamespace(
        verify=_must_accept(wallet.verify), time_problem=wallet.time_problem,
        PREFIX=wallet.PREFIX, DOMAIN=wallet.DOMAIN))
    return {"mpm": mpm_h.test_one_input, "cpm": cpm_h.test_one_input,
            "tlv": tlv_h.test_one_input, "wallet": wallet_h.test_one_input}


# The first byte steers a harness; 0 hands it the rest unchanged.
AS_IS = b"\x00"


def test_harnesses_accept_the_published_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    strict = strict_harnesses(monkeypatch)
    mpm_cases = json.loads((DATA / "mpm_examples.json").read_text("utf-8"))["valid"]
    cpm_cases = json.loads((DATA / "cpm_examples.json").read_text())["valid"]
    assert mpm_cases and cpm_cases
    for case in mpm_cases:
        strict["mpm"](AS_IS + case["payload"].encode("utf-8"))
    for case in cpm_cases:
        strict["cpm"](AS_IS + case["payload"].encode())
        assert display_pan(cpm.parse(case["payload"]).pan()) == case["pan_display"]
    # an FCI as a PPSE SELECT answers it (EMV Book 1 §11.3.4): the harness reads it unpadded
    strict["tlv"](bytes.fromhex("6F1A840E325041592E5359532E4444463031A508BF0C0561034F0101"))
    code = wallet.make(demo_issuer_key(), "wallet-01", now=1_790_000_000, ttl_s=60)
    strict["wallet"](AS_IS + code.encode("ascii"))


def test_a_refused_valid_input_fails_the_strict_harness(
        monkeypatch: pytest.MonkeyPatch) -> None:
    strict = strict_harnesses(monkeypatch)
    # the check above must be able to fail: a corrupted CRC is refused, and seen
    spec = json.loads((DATA / "mpm_examples.json").read_text("utf-8"))["valid"][0]["payload"]
    with pytest.raises(AssertionError, match="a valid input was refused"):
        strict["mpm"](AS_IS + (spec[:-4] + "0000").encode("utf-8"))


@settings(max_examples=100, deadline=None)
@given(mpm_objects(), cpm_objects(), tlv_lists(), wallet_ids,
       st.binary(min_size=wallet.NONCE_BYTES, max_size=wallet.NONCE_BYTES))
def test_harnesses_accept_generated_valid_codes(
        objs: dict[str, object], cpm_objs: list[Tlv], tlvs: list[Tlv], wallet_id: str,
        nonce: bytes) -> None:
    with pytest.MonkeyPatch.context() as mp:
        run = strict_harnesses(mp)
        if len(mpm._encode_objects(objs)) + 8 <= mpm.MAX_PAYLOAD:
            run["mpm"](AS_IS + mpm.encode(objs).encode("utf-8"))  # type: ignore[arg-type]
        run["cpm"](AS_IS + cpm.encode(cpm_objs).encode())
        data = tlv.encode(tlvs)
        assume(data[:1] != b"\x00")  # a leading zero byte steers the harness to padding mode
        run["tlv"](data)
        code = wallet.make(demo_issuer_key(), wallet_id, now=1_790_000_000, nonce=nonce)
        run["wallet"](AS_IS + code.encode("ascii"))
