"""``localpay readers`` on this machine: pcscd's vpcd readers, pyserial's ports, a pty as the
configured scanner, pcscd unreachable, a permission problem seen by an unprivileged user;
and the USB cases (ACR122U held by pcscd, kernel pn533 driver) on a sysfs tree written by
the test, since no USB reader can exist on this machine."""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
import tty
from pathlib import Path

from click.testing import CliRunner

from drivers.discovery import (
    RULES,
    Finding,
    Report,
    access_problem,
    discover,
    format_report,
    usb_devices,
    usb_findings,
)
from firmware_cfg.config import DEFAULT, dumps
from localpay.cli import cli
from localpay.cli.bench.stacks import ROOT
from tests.hw_fixtures import PcscStack, pcsc, pcsc_stack  # noqa: F401


def test_pcsc_readers_found_and_the_configured_one_marked(pcsc: PcscStack) -> None:  # noqa: F811
    names = [name for name, _ in pcsc.readers]
    config = DEFAULT.replace("readers", card=f"pcsc:{names[1]}")
    report = discover(config.readers.specs())
    found = {f.name: f for f in report.findings if f.section == "pcsc"}
    assert set(names) <= set(found)
    assert found[names[1]].used == "readers.card" and found[names[0]].used == ""
    assert not any(p.name == "pcscd" for p in report.problems)
    text = "\n".join(format_report(report))
    assert f"pcsc:{names[1]}" in text and "<- readers.card" in text


def test_pcscd_unreachable_says_how_to_start_it(tmp_path: Path) -> None:
    # libpcsclite's client honours PCSCLITE_CSOCK_NAME: a socket nobody serves is, for this
    # process, exactly a machine where pcscd is not running
    env = dict(os.environ, PCSCLITE_CSOCK_NAME=str(tmp_path / "none.comm"),
               PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "localpay", "--home", str(tmp_path), "readers",
                          "--json"], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    [problem] = [p for p in doc["problems"] if p["name"] == "pcscd"]
    assert problem["problem"].startswith("pcscd is not running")
    assert "systemctl enable --now pcscd.socket" in problem["fix"]
    assert not [f for f in doc["findings"] if f["section"] == "pcsc"]


def _serial_specs() -> dict[str, Finding]:
    return {f.spec: f for f in discover().findings if f.section == "serial"}


def test_a_new_usb_serial_port_is_listed_and_a_removed_one_is_not() -> None:
    """The port is the test's own: a pty behind a ``/dev/ttyUSB…`` name, where a USB-serial
    adapter's node appears. Only root can add one to /dev: without root, sudo does it, as
    ``make test`` uses sudo for what needs root."""
    as_root = [] if os.geteuid() == 0 else ["sudo", "-n"]
    master, slave = os.openpty()
    tty.setraw(slave)
    link = Path(f"/dev/ttyUSB-localpay-test-{os.getpid()}")
    subprocess.run([*as_root, "ln", "-s", os.ttyname(slave), str(link)], check=True)
    try:
        found = _serial_specs()
        mine = found.get(f"serial:{link}")
        assert mine is not None, sorted(found)
        assert (mine.name, mine.problem, mine.used) == (f"{link}: serial port", "", "")
        # everything listed is a character device that is there now
        for spec in found:
            assert stat.S_ISCHR(os.stat(spec[len("serial:"):]).st_mode), spec
    finally:
        subprocess.run([*as_root, "rm", "-f", str(link)], check=True)
        os.close(master)
        os.close(slave)
    assert f"serial:{link}" not in _serial_specs()


def test_configured_pty_scanner_and_a_missing_port(tmp_path: Path) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        port = os.ttyname(slave)
        config = DEFAULT.replace("readers", scanner=f"serial:{port}")
        report = discover(config.readers.specs())
        [mine] = [f for f in report.findings if f.used == "readers.scanner"]
        assert mine.spec == f"serial:{port}" and mine.problem == ""
    finally:
        os.close(master)
        os.close(slave)
    gone = DEFAULT.replace("readers", scanner=f"serial:{tmp_path / 'ttyACM9'}")
    report = discover(gone.readers.specs())
    [mine] = [f for f in report.findings if f.used == "readers.scanner"]
    assert mine.problem == f"{tmp_path / 'ttyACM9'} does not exist"
    assert "plugged in" in mine.fix and not report.ok


def _as_nobody(path: Path) -> tuple[str, str]:
    """``access_problem`` answered by a child process running as ``nobody``."""
    nobody = pwd.getpwnam("nobody")
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child drops root, with the code already imported
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            os.write(wr, json.dumps(access_problem(path, "scanner", "dialout")).encode())
        finally:
            os._exit(0)
    os.close(wr)
    with os.fdopen(rd) as fh:
        problem, fix = json.loads(fh.read())
    os.waitpid(pid, 0)
    return problem, fix


def test_permission_problem_seen_by_an_unprivileged_user(tmp_path: Path) -> None:
    master, slave = os.openpty()
    port = os.ttyname(slave)
    try:
        if os.geteuid() == 0:
            os.chown(port, 0, 20)  # root:dialout, as udev leaves a serial port
            os.chmod(port, 0o660)
            problem, fix = _as_nobody(Path(port))
            user, want = "nobody", f"no permission to open {port} (crw-rw----, group dialout)"
        else:
            os.chmod(port, 0o000)  # our own pty, closed even to us
            problem, fix = access_problem(Path(port), "scanner", "dialout")
            user = pwd.getpwuid(os.geteuid()).pw_name
            want = f"no permission to open {port} (c---------"
    finally:
        os.close(master)
        os.close(slave)
    assert problem.startswith(want)
    assert "sudo usermod -aG " in fix and fix.split("usermod -aG ")[1].split()[1] == user
    assert f"sudo cp {RULES} /etc/udev/rules.d/" in fix
    assert (ROOT / RULES).exists()


def _usb_device(root: Path, name: str, vid: str, pid: str, bus: int, dev: int,
                driver: str = "") -> None:
    """A device directory as the kernel lays it out in /sys/bus/usb/devices."""
    d = root / name
    d.mkdir(parents=True)
    for f, v in (("idVendor", vid), ("idProduct", pid), ("busnum", str(bus)),
                 ("devnum", str(dev)), ("product", "ACR122U PICC Interface")):
        (d / f).write_text(v + "\n")
    iface = root / f"{name}:1.0"
    iface.mkdir()
    if driver:
        target = root / "drivers" / driver
        target.mkdir(parents=True, exist_ok=True)
        (iface / "driver").symlink_to(target)


def test_acr122u_conflict_and_kernel_driver(tmp_path: Path) -> None:
    """No USB reader can exist here: the sysfs tree is written by the test."""
    sysfs = tmp_path / "usb"
    _usb_device(sysfs, "1-1", "072f", "2200", 1, 4)
    _usb_device(sysfs, "1-2", "04e6", "5591", 1, 5, driver="pn533_usb")
    _usb_device(sysfs, "1-3", "1d6b", "0002", 1, 1)  # a hub: not a reader
    devices = usb_devices(sysfs)
    assert [(d.usb_id, d.bus, d.dev) for d in devices] == [
        ("072f:2200", 1, 4), ("04e6:5591", 1, 5), ("1d6b:0002", 1, 1)]
    assert devices[1].drivers == ("pn533_usb",)
    acr = "ACS ACR122U PICC Interface 00 00"
    found = usb_findings(devices, [acr], pcscd_up=True)
    assert [f.spec for f in found] == ["nfc:usb:072f:2200", "nfc:usb:04e6:5591"]
    assert "visible both to pcscd (as 'ACS ACR122U PICC Interface 00 00')" in found[0].problem
    assert 'readers.card = "pcsc:ACR122"' in found[0].fix
    assert "blacklist-pn533.conf" in found[0].fix
    assert "kernel's pn533_usb driver holds the SCM SCL3711" in found[1].problem
    assert "sudo cp deploy/blacklist-pn533.conf /etc/modprobe.d/" in found[1].fix
    # pcscd down: no conflict; the device node is then what matters (absent here)
    alone = usb_findings(devices[:1], [], pcscd_up=False)
    assert alone[0].problem == "/dev/bus/usb/001/004 does not exist"


def test_report_text_names_every_section_and_problem() -> None:
    report = Report([Finding("serial", "serial:/dev/ttyACM0", "/dev/ttyACM0: scanner",
                             used="readers.scanner")],
                    [Finding("pcsc", "", "pcscd", problem="pcscd is not running",
                             fix="sudo systemctl enable --now pcscd.socket")])
    text = format_report(report)
    assert text[0] == "PC/SC readers (pcscd)" and "  none found" in text
    assert any("serial:/dev/ttyACM0" in line and "<- readers.scanner" in line for line in text)
    assert text[-2:] == ["  - pcscd is not running",
                         "    fix: sudo systemctl enable --now pcscd.socket"]


def test_cli_readers_with_the_virtual_reader_configured(tmp_path: Path) -> None:
    (tmp_path / "terminal.toml").write_text(dumps(DEFAULT), encoding="utf-8")
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "readers"])
    assert result.exit_code == 1
    assert "no hardware is configured" in result.output
    assert "fix: set readers.card to one of the devices above" in result.output
