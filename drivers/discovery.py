"""What ``localpay readers`` finds: readers, scanners and cameras, and what stops them.

Like ``python -m nfc``, it says exactly what to do on a problem: the udev rule file from
``deploy/`` and the group to join on a permission error, how to start ``pcscd`` when it is
not running, the kernel modules to blacklist when they hold an NFC reader, and the
ACR122U conflict (pcscd and nfcpy both want it; only one can have it).

Where it looks:

- PC/SC readers: pcscd through pyscard (the service must run);
- nfcpy devices: USB devices in sysfs (``/sys/bus/usb/devices``) with a known
  vendor:product, and the Raspberry Pi UARTs ``/dev/ttyAMA0`` and ``/dev/ttyS0`` (where a
  PN532 may sit; a UART is not probed, since the console may be on it);
- serial ports: pyserial's ``serial.tools.list_ports`` (``/dev/ttyS*``, ``ttyUSB*``,
  ``ttyACM*``, ``ttyAMA*`` and links to them), plus the configured scanner's port wherever
  it is (a pty or a udev symlink such as ``/dev/localpay-scanner`` is not listed by pyserial);
- cameras: ``/dev/video*`` (names from ``/sys/class/video4linux``).

Permissions are checked with :func:`os.access` for the user running the command, which is
the question that matters: can *this* user open it.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from drivers.spec import parse_reader_spec
from localpay.errors import ConfigError

log = logging.getLogger(__name__)

RULES = "deploy/99-localpay-readers.rules"
BLACKLIST = "deploy/blacklist-pn533.conf"
INSTALL_RULES = (f"sudo cp {RULES} /etc/udev/rules.d/ && sudo udevadm control --reload && "
                 "sudo udevadm trigger, then replug the reader")
ACR122U = "072f:2200"

#: vendor:product -> (name, the spec to use it by). ACR1252U speaks CCID: pcscd only.
KNOWN_USB: dict[str, tuple[str, str]] = {
    ACR122U: ("ACS ACR122U", f"nfc:usb:{ACR122U}"),
    "072f:223b": ("ACS ACR1252U", "pcsc:ACR1252"),
    "04e6:5591": ("SCM SCL3711", "nfc:usb:04e6:5591"),
    "054c:06c1": ("Sony RC-S380", "nfc:usb:054c:06c1"),
    "054c:06c3": ("Sony RC-S380", "nfc:usb:054c:06c3"),
    "054c:02e1": ("Sony RC-S360", "nfc:usb:054c:02e1"),
    "04cc:2533": ("NXP PN533", "nfc:usb:04cc:2533"),
}
#: kernel drivers that claim a PN533-family reader before nfcpy can
KERNEL_NFC_DRIVERS = ("pn533_usb", "pn533", "port100")


@dataclass(frozen=True)
class Finding:
    """One device found (or one problem). ``spec`` is what the config would say."""

    section: str  # "pcsc", "nfc", "serial", "camera"
    spec: str
    name: str
    used: str = ""  # which config field names it ("readers.card"), or ""
    problem: str = ""
    fix: str = ""


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    #: problems that are not about one device (pcscd down, a configured reader missing)
    problems: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not any(f.problem for f in self.findings)


# -- helpers -------------------------------------------------------------------------------------


def _user() -> str:
    """Who runs this process (not $USER, which sudo and su may leave pointing elsewhere)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _group_of(path: Path) -> str:
    try:
        return grp.getgrgid(path.stat().st_gid).gr_name
    except (KeyError, OSError):
        return "the device's group"


def access_problem(path: Path, what: str, group_hint: str, *,
                   rules: bool = True) -> tuple[str, str]:
    """(problem, fix) when the current user cannot read and write ``path``; ("", "") if ok."""
    if not path.exists():
        return f"{path} does not exist", f"check that the {what} is plugged in"
    if os.access(path, os.R_OK | os.W_OK):
        return "", ""
    group = _group_of(path)
    if group in ("root", "the device's group"):
        group = group_hint
    mode = stat.filemode(path.stat().st_mode)
    fix = f"sudo usermod -aG {group} {_user()} (then log in again)"
    if rules:
        fix = f"install the udev rules: {INSTALL_RULES}; and {fix}"
    return f"no permission to open {path} ({mode}, group {_group_of(path)})", fix


# -- PC/SC ---------------------------------------------------------------------------------------


def pcsc_readers() -> tuple[list[str], Finding | None]:
    """Reader names pcscd knows, or the problem that keeps us from asking it."""
    try:
        from smartcard import scard
    except ImportError:
        return [], Finding("pcsc", "", "pyscard", problem="pyscard is not installed",
                           fix="pip install 'localpay[pcsc]' (needs libpcsclite-dev)")
    hresult, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        if shutil.which("pcscd") is None and not Path("/usr/sbin/pcscd").exists():
            fix = "sudo apt-get install pcscd, then sudo systemctl enable --now pcscd.socket"
        else:
            fix = ("sudo systemctl enable --now pcscd.socket (or start it once: "
                   "sudo systemctl start pcscd)")
        return [], Finding("pcsc", "", "pcscd", problem="pcscd is not running "
                           f"({scard.SCardGetErrorMessage(hresult)})", fix=fix)
    try:
        hresult, names = scard.SCardListReaders(ctx, [])
        return (sorted(names) if hresult == scard.SCARD_S_SUCCESS else []), None
    finally:
        scard.SCardReleaseContext(ctx)


# -- USB (sysfs) ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsbDevice:
    usb_id: str  # "072f:2200"
    bus: int
    dev: int
    product: str
    drivers: tuple[str, ...]  # kernel drivers bound to its interfaces

    @property
    def node(self) -> Path:
        return Path(f"/dev/bus/usb/{self.bus:03d}/{self.dev:03d}")


def usb_devices(sysfs: Path = Path("/sys/bus/usb/devices")) -> list[UsbDevice]:
    """Every USB device sysfs lists (empty where there is no USB, as in containers)."""
    found: list[UsbDevice] = []
    if not sysfs.is_dir():
        return found
    for dev in sorted(sysfs.iterdir()):
        try:
            vid = (dev / "idVendor").read_text().strip()
            pid = (dev / "idProduct").read_text().strip()
            bus = int((dev / "busnum").read_text())
            num = int((dev / "devnum").read_text())
        except (OSError, ValueError):
            continue  # interfaces and hubs' ports have no ids of their own
        try:
            product = (dev / "product").read_text().strip()
        except OSError:
            product = ""
        drivers = []
        for iface in sorted(sysfs.glob(f"{dev.name}:*")):
            link = iface / "driver"
            if link.exists():
                drivers.append(os.path.basename(os.path.realpath(link)))
        found.append(UsbDevice(f"{vid}:{pid}".lower(), bus, num, product, tuple(drivers)))
    return found


def usb_findings(devices: Sequence[UsbDevice], pcsc_names: Sequence[str],
                 pcscd_up: bool) -> list[Finding]:
    """Known NFC readers among ``devices``, with their problems (and the ACR122U conflict)."""
    out = []
    for d in devices:
        known = KNOWN_USB.get(d.usb_id)
        if known is None:
            continue
        name, spec = known
        label = f"{name} ({d.usb_id}, bus {d.bus:03d} device {d.dev:03d})"
        problem, fix = "", ""
        kernel = [drv for drv in d.drivers if drv in KERNEL_NFC_DRIVERS]
        in_pcsc = [n for n in pcsc_names if name.split()[-1].upper() in n.upper()]
        if spec.startswith("pcsc:"):
            if not in_pcsc:
                problem = f"{name} is plugged in but pcscd does not list it"
                fix = ("sudo apt-get install libccid pcscd, then sudo systemctl restart "
                       "pcscd" if pcscd_up else "start pcscd: sudo systemctl enable --now "
                       "pcscd.socket")
        elif d.usb_id == ACR122U and pcscd_up and in_pcsc:
            problem = (f"the ACR122U is visible both to pcscd (as {in_pcsc[0]!r}) and as a USB "
                       "device for nfcpy; pcscd holds it, so nfcpy cannot open it: only one "
                       "of them can own it")
            fix = (f"either use it through pcscd: readers.card = \"pcsc:ACR122\" (LED and "
                   "buzzer work there too); or give it to nfcpy: sudo systemctl disable --now "
                   f"pcscd.socket pcscd, install {BLACKLIST} in /etc/modprobe.d/, and set "
                   f"readers.card = \"{spec}\"")
        elif kernel:
            problem = f"the kernel's {kernel[0]} driver holds the {name}, nfcpy cannot open it"
            fix = (f"sudo cp {BLACKLIST} /etc/modprobe.d/ && sudo modprobe -r "
                   f"{' '.join(kernel)}, then replug the reader")
        else:
            problem, fix = access_problem(d.node, name, "plugdev")
        out.append(Finding("nfc", spec, label, problem=problem, fix=fix))
    return out


def uart_findings(dev: Path = Path("/dev")) -> list[Finding]:
    """The Raspberry Pi UARTs where a PN532 may be wired (not probed)."""
    out = []
    for tty in ("ttyAMA0", "ttyS0"):
        path = dev / tty
        if not path.exists():
            continue
        problem, fix = access_problem(path, "UART", "dialout")
        out.append(Finding("nfc", f"nfc:tty:{tty[3:]}:pn532",
                           f"UART {path}: a PN532 wired here (not probed)",
                           problem=problem, fix=fix))
    return out


# -- serial ports and cameras --------------------------------------------------------------------


def serial_findings() -> list[Finding]:
    try:
        from serial.tools import list_ports
    except ImportError:
        return [Finding("serial", "", "pyserial", problem="pyserial is not installed",
                        fix="pip install 'localpay[serial]'")]
    out = []
    for port in sorted(list_ports.comports(include_links=True), key=lambda p: p.device):
        desc = port.description if port.description not in ("", "n/a") else "serial port"
        if port.vid is not None and port.pid is not None:
            desc += f" ({port.vid:04x}:{port.pid:04x})"
        problem, fix = access_problem(Path(port.device), "scanner", "dialout")
        out.append(Finding("serial", f"serial:{port.device}", f"{port.device}: {desc}",
                           problem=problem, fix=fix))
    return out


def camera_findings(dev: Path = Path("/dev"),
                    sysfs: Path = Path("/sys/class/video4linux")) -> list[Finding]:
    out = []
    for node in sorted(dev.glob("video[0-9]*"), key=lambda p: int(p.name[5:] or 0)):
        try:
            name = (sysfs / node.name / "name").read_text().strip()
        except OSError:
            name = "camera"
        problem, fix = access_problem(node, "camera", "video", rules=False)
        out.append(Finding("camera", f"camera:{node}", f"{node}: {name}", problem=problem,
                           fix=fix))
    return out


# -- what the config uses ------------------------------------------------------------------------


def _matches(spec_text: str, f: Finding, pcsc_names: Sequence[str]) -> bool:
    try:
        spec = parse_reader_spec(spec_text)
    except ConfigError:
        return False
    if spec.kind != f.section or not f.spec:
        return False
    if spec.kind == "pcsc":
        from drivers.pcsc import match_reader

        name = f.spec.partition(":")[2]
        return match_reader([name], spec.options.get("reader", "")) == name
    if spec.kind == "nfc":
        path = spec.options["path"]
        mine = f.spec.partition(":")[2]
        return path == mine or (path == "usb" and mine.startswith("usb:"))
    if spec.kind == "serial":
        return os.path.realpath(spec.options["port"]) == os.path.realpath(f.spec[7:])
    if spec.kind == "camera":
        device = spec.options.get("device") or f"/dev/video{spec.options.get('index', 0)}"
        return os.path.realpath(device) == os.path.realpath(f.spec[7:])
    return False


def mark_configured(report: Report, used: Mapping[str, str], pcsc_names: Sequence[str]) -> None:
    """Mark the findings that ``used`` names (config field -> reader spec); a configured
    device not found is a problem."""
    for field_name, spec_text in used.items():
        if not spec_text:
            continue
        if spec_text.split(":", 1)[0] == "virtual":
            report.problems.append(Finding("virtual", "virtual", "the virtual reader",
                                           used=field_name, problem="no hardware is "
                                           "configured: fine for a demo, not for service",
                                           fix=f"set {field_name} to one of the devices above"))
            continue
        hits = [i for i, f in enumerate(report.findings) if _matches(spec_text, f, pcsc_names)]
        if spec_text.startswith("serial:") and not hits:
            # a pty or a udev symlink: pyserial does not list it, but it may be there
            port = str(parse_reader_spec(spec_text).options["port"])
            problem, fix = access_problem(Path(port), "scanner", "dialout")
            report.findings.append(Finding("serial", spec_text, f"{port}: configured port",
                                           used=field_name, problem=problem, fix=fix))
            continue
        if not hits:
            report.problems.append(Finding(
                spec_text.split(":", 1)[0], spec_text, spec_text, used=field_name,
                problem=f"{field_name} = {spec_text!r} names a device that was not found",
                fix="plug it in, or set it to one of the devices found above"))
            continue
        i = hits[0]
        f = report.findings[i]
        report.findings[i] = Finding(f.section, f.spec, f.name, field_name, f.problem, f.fix)


def discover(used: Mapping[str, str] | None = None, *,
             sysfs_usb: Path = Path("/sys/bus/usb/devices"), dev: Path = Path("/dev")) -> Report:
    """Everything found on this machine, marked with the devices ``used`` names (config field
    -> reader spec, as ``ReadersSection.specs()`` gives them)."""
    report = Report()
    names, pcsc_problem = pcsc_readers()
    if pcsc_problem is not None:
        report.problems.append(pcsc_problem)
    report.findings += [Finding("pcsc", f"pcsc:{n}", n) for n in names]
    report.findings += usb_findings(usb_devices(sysfs_usb), names, pcsc_problem is None)
    report.findings += uart_findings(dev)
    report.findings += serial_findings()
    report.findings += camera_findings(dev)
    if used is not None:
        mark_configured(report, used, names)
    return report


SECTIONS = (("pcsc", "PC/SC readers (pcscd)"), ("nfc", "NFC devices (nfcpy)"),
            ("serial", "Serial ports (line scanners)"), ("camera", "Cameras (QR)"))


def format_report(report: Report) -> list[str]:
    """The report as text: a section per kind, configured devices marked, then what to do."""
    lines: list[str] = []
    for section, title in SECTIONS:
        lines.append(title)
        items = [f for f in report.findings if f.section == section]
        if not items:
            lines.append("  none found")
        for f in items:
            mark = "*" if f.used else " "
            status = "PROBLEM" if f.problem else "ok"
            used = f"  <- {f.used}" if f.used else ""
            lines.append(f" {mark} {status:<7} {f.spec:<36} {f.name}{used}")
        lines.append("")
    problems = report.problems + [f for f in report.findings if f.problem]
    if problems:
        lines.append("What to do")
        for f in problems:
            lines.append(f"  - {f.problem}")
            if f.fix:
                lines.append(f"    fix: {f.fix}")
    else:
        lines.append("No problems found.")
    return lines
