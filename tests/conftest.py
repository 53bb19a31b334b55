"""Fixtures shared by the whole suite."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import settings

from drivers.virtual import VirtualReader
from firmware_cfg.config import DEFAULT, Config
from firmware_cfg.keys import DEMO_TOKEN_KEY
from localpay.types import Presentation
from offline_ledger import Ledger
from terminal.core import Terminal

# The mutation run (tools/mutation.py) asks for the same examples every time, so that a
# mutant is killed or not by the tests, not by the draw, and its ratchet cannot flap.
settings.register_profile("mutation", derandomize=True, database=None)
if os.environ.get("LOCALPAY_HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["LOCALPAY_HYPOTHESIS_PROFILE"])

# Every `central serve` a test starts answers with one process unless the test asks for
# more (tests/test_central_workers.py does): the suite runs on several workers of its own,
# and a second uvicorn worker per server costs each start time and a core's share.
os.environ.setdefault("LOCALPAY_CENTRAL_WORKERS", "1")

# Screens and tones render headless everywhere the suite runs.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


def drives_pcsc(module: object) -> bool:
    """Whether a test module uses the PC/SC fixtures, however it imported them: as
    ``tests.hw_fixtures`` (the modules' own imports) or ``hw_fixtures`` (the rootdir's)."""
    return any(getattr(value, "__module__", "").rsplit(".", 1)[-1] == "hw_fixtures"
               for value in vars(module).values())


# tryfirst: pytest-xdist's worker reads the xdist_group marks in its own hook of this name
# (to put the group in the test's id); marks added after it are never seen, so this hook must
# not depend on the order in which plugins and conftests happen to be registered
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test`` runs the suite on several workers), every test of a
    module that drives the real PC/SC stack runs on one worker: only one ``pcscd`` can run on
    a machine, and the recovery tests stop and restart it under the others' feet."""
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and drives_pcsc(module):
            item.add_marker(pytest.mark.xdist_group("pcscd"))
        # chromium under Selenium (a module saying BROWSER = True): one worker runs them all
        if getattr(module, "BROWSER", False) is True and item.config.pluginmanager.hasplugin(
                "xdist"):
            item.add_marker(pytest.mark.xdist_group("browser"))


@pytest.fixture(autouse=True)
def _no_leaked_ledgers() -> Iterator[None]:
    """Fail a test that leaves a ledger open (python-can's leak check, for databases)."""
    before = set(map(id, Ledger.open_instances()))
    yield
    leaked = [led for led in Ledger.open_instances() if id(led) not in before]
    if leaked:  # a collection only when needed: it costs a big heap (a mutation run) dearly
        del leaked
        gc.collect()
        leaked = [led for led in Ledger.open_instances() if id(led) not in before]
    for led in leaked:
        led.close()
    assert not leaked, f"test left {len(leaked)} ledger(s) open: {[str(x.path) for x in leaked]}"


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def ledger(tmp_path: Path, key: Ed25519PrivateKey) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "ledger.sqlite", key=key, terminal_id="T-TEST-01")
    yield led
    led.close()


class FakeClock:
    """A wall clock the test moves by hand (time itself cannot be driven otherwise)."""

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


MakeTerminal = Callable[..., Terminal]


@pytest.fixture
def make_terminal(ledger: Ledger, clock: FakeClock) -> MakeTerminal:
    """A terminal of the given role over the test's ledger; keyword args change config."""

    def make(role: str = "validator", config: Config = DEFAULT, **risk: int) -> Terminal:
        cfg = config.replace("terminal", role=role, id="T-TEST-01",
                             place="85" if role == "validator" else "M0001")
        if risk:
            cfg = cfg.replace("risk", **risk)
        return Terminal(cfg, ledger, DEMO_TOKEN_KEY, clock=clock)

    return make


@pytest.fixture
def reader() -> Iterator[VirtualReader]:
    r = VirtualReader()
    yield r
    r.close()


def present(reader: VirtualReader, uid: bytes) -> Presentation:
    """What the terminal gets when the card of ``uid`` is put on the virtual reader."""
    reader.present_uid(uid)
    p = reader.poll(1.0)
    assert p is not None
    return p
