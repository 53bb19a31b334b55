"""The self-test on a terminal provisioned against a real central service: all-pass on the
virtual devices; on pcscd + vpcd with a serial scanner on a pty; and each failure shown as
FAIL with its reason and a non-zero exit."""

from __future__ import annotations

import json
import os
import shutil
import threading
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from drivers.emulators.emv_card import EmvCard
from firmware_cfg.config import SIGNED_FILE, dumps
from localpay.cli import cli, selftest
from terminal.home import Home
from tests.enroll_fixtures import issue_code, localpay_central, provision
from tests.hw_fixtures import PcscStack, pcsc, pcsc_stack  # noqa: F401
from tests.pg_fixtures import free_port


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A validator provisioned on the virtual reader; the central keeps running."""
    root = tmp_path_factory.mktemp("selftest")
    with localpay_central(f"sqlite:///{root / 'central.sqlite'}", root / "central") as srv:
        home = root / "home"
        result = provision(home, srv, issue_code(srv), "--role", "validator", "--route", "85",
                           "--no-selftest")
        assert result.exit_code == 0, result.output
        yield home


def _copy(home: Path, tmp_path: Path, **sections: dict[str, object]) -> Home:
    """A copy of the provisioned home with some config fields changed."""
    target = tmp_path / "home"
    shutil.copytree(home, target)
    # A provisioned home refuses fields changed outside its signed bundle (issue #16): the
    # faults shown here are those of a home without one.
    (target / SIGNED_FILE).unlink()
    h = Home(target)
    config = h.config()
    for section, changes in sections.items():
        config = config.replace(section, **changes)
    h.config_path.write_text(dumps(config), encoding="utf-8")
    return h


def _run(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--home", str(home), "selftest", *args])
    return result.exit_code, result.output


def test_all_pass_on_the_virtual_devices(provisioned: Path) -> None:
    code, out = _run(provisioned)
    assert code == 0, out
    rows = [line.split()[:2] for line in out.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert [r[0] for r in rows] == ["PASS"] * 7
    assert "emv" in out and "941012******9012" in out  # first 6 / last 4, never more
    assert "9410123456789012" not in out
    assert "the test code of 17 characters read" in out
    assert "knows BUS-85-0001" in out
    assert any(x.startswith("PASS   clock") and x.split()[2].rstrip(":") in
               ("synchronised", "anchored", "unknown") for x in out.splitlines())
    assert out.rstrip().endswith("7 passed, 0 failed")


def test_central_unreachable_fails_with_the_reason(provisioned: Path, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    home = _copy(provisioned, tmp_path, central={"url": f"http://127.0.0.1:{port}"})
    code, out = _run(home.path)
    assert code == 1
    line = next(x for x in out.splitlines() if " central " in f" {x} ")
    assert line.startswith("FAIL") and f"127.0.0.1:{port} unreachable: ConnectError" in line
    assert out.rstrip().endswith("6 passed, 1 failed")


def test_unknown_terminal_is_refused_by_the_central(provisioned: Path, tmp_path: Path) -> None:
    home = _copy(provisioned, tmp_path, terminal={"id": "BUS-85-9999"})
    os.remove(home.ledger_path)  # the ledger belongs to the real id
    code, out = _run(home.path, "--json")
    assert code == 1
    rows = {r["check"]: r for r in json.loads(out)}
    assert rows["central"]["ok"] is False
    # central signs nothing for a caller it did not authenticate, and tells an unknown
    # terminal and a bad signature apart to nobody
    assert ("refused BUS-85-9999 (HTTP 401, unverified: the answer is not signed): "
            "request refused: unknown terminal or bad signature") in rows["central"]["detail"]
    assert all(r["ok"] for name, r in rows.items() if name != "central")


def test_no_config_and_loose_keys(provisioned: Path, tmp_path: Path) -> None:
    code, out = _run(tmp_path / "empty")
    assert code == 1
    assert "FAIL   config" in out and "run `localpay provision` first" in out
    assert out.count("not run: no valid config") == 6
    home = _copy(provisioned, tmp_path)
    os.chmod(home.path / "keys" / "token.key", 0o644)
    code, out = _run(home.path)
    assert code == 1
    assert "FAIL   keys" in out and "chmod 600" in out
    assert out.count("not run: the keys do not load") == 5


def test_pcsc_card_and_serial_scanner(provisioned: Path, tmp_path: Path,
                                      pcsc: PcscStack) -> None:  # noqa: F811
    master, slave = os.openpty()
    tty.setraw(slave)
    port = os.ttyname(slave)
    reader = pcsc.readers[0][0]
    home = _copy(provisioned, tmp_path, readers={"card": f"pcsc:{reader}",
                                                 "scanner": f"serial:{port}",
                                                 "serial_terminator": "cr"})
    card = pcsc.card(handler=EmvCard().handle)
    prompts: list[str] = []

    def technician(message: str) -> None:
        prompts.append(message)
        if "test card" in message:
            threading.Thread(target=pcsc.insert, args=(card,), daemon=True).start()
        else:
            os.write(master, selftest.TEST_QR.encode() + b"\r")

    try:
        rows = selftest.run(home, timeout=15, prompt=technician,
                            only=("card reader", "QR scanner"))
    finally:
        os.close(master)
        os.close(slave)
    assert [(r.check, r.ok) for r in rows] == [("card reader", True), ("QR scanner", True)], rows
    assert f"pcsc:{reader}" in rows[0].detail and "941012******9012" in rows[0].detail
    assert rows[1].detail == f"serial:{port}: the test code of 17 characters read"
    assert len(prompts) == 2


def test_no_card_within_the_timeout(provisioned: Path, tmp_path: Path,
                                    pcsc: PcscStack) -> None:  # noqa: F811
    reader = pcsc.readers[1][0]
    home = _copy(provisioned, tmp_path, readers={"card": f"pcsc:{reader}"})
    code, out = _run(home.path, "--timeout", "0.5", "--only", "card reader", "--only",
                     "QR scanner")
    assert code == 1
    assert f"FAIL   card reader  no card on pcsc:{reader} within 0.5 s" in out
    assert "PASS   QR scanner   none configured (readers.scanner is empty)" in out
