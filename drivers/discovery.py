"""What ``localpay readers`` finds: readers, scanners and cameras, and what stops them.

Like ``python -m nfc``, it says exactly what to do on a problem: the udev rule file from
``deploy/`` and the group to join on a permission error, how to start ``pcscd`` when it is
not running, the kernel modules to blacklist when they hold an NFC reader, and the
ACR122U conflict (pcscd and nfcpy both want it; only one can have it).

Where it looks:

- PC/SC readers: pcscd through pyscard (the service must run);
- nfcpy devices: USB devices in sysfs (``/sys/bus/usb/devices``) with a known
  vendor:product, and serial ports that answered the PN532 probe;
- serial ports: pyserial's ``serial.tools.list_ports`` (``/dev/ttyS*``, ``ttyUSB*``,
  ``ttyACM*``, ``ttyAMA*`` and links to them) and the Raspberry Pi UARTs ``/dev/ttyAMA0``
  and ``/dev/ttyS0``, plus the configured scanner's port wherever it is (a pty or a udev
  symlink such as ``/dev/localpay-scanner`` is not listed by pyserial).
- cameras: ``/dev/video*`` (names from ``/sys/class/video4linux``).

A serial port is called a PN532 only when it answered a PN532's GetFirmwareVersion
(:func:`probe_port`); one that did not is a plain serial port, never called a scanner: a
line scanner says nothing until it reads a code, so no probe can tell one. The kernel
console's tty is never probed (the probe's bytes would land on it), nor a port another
process holds exclusively.

Permissions are checked with :func:`os.access` for the user running the command, which is
the question that matters: can *this* user open it.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import re
import shutil
import stat
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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
    #: what a serial port said to the probe ("PN532 firmware 1.6", "no PN532 answered ...")
    probe: str = ""


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


# -- serial ports: probed before they are called anything -----------------------------------------

#: PN532 HSU (NXP UM0701-02 §6.2.1, §7.2.2): a wake-up (0x55 0x55 and idle bytes, as nfcpy
#: sends it), then GetFirmwareVersion in a normal information frame
PN532_WAKEUP = b"\x55\x55" + b"\x00" * 14
PN532_GET_FIRMWARE = bytes.fromhex("0000ff02fed4022a00")
#: the Raspberry Pi UARTs where a PN532 is wired, listed even where pyserial misses them
PI_UARTS = ("ttyAMA0", "ttyS0")
PROBE_S = 0.4


@dataclass(frozen=True)
class PortProbe:
    """What a serial port said to the probe. ``kind``: ``pn532`` (it answered as one),
    ``silent`` (nothing, or not a PN532: a line scanner says nothing until it reads a
    code), or ``skipped`` (not probed, ``detail`` says why)."""

    kind: str
    detail: str


def pn532_firmware(data: bytes) -> tuple[int, int, int] | None:
    """(IC, version, revision) from the first GetFirmwareVersion answer in ``data``: a
    normal frame ``00 FF LEN LCS D5 03 IC VER REV SUPPORT DCS`` with both checksums right."""
    i = data.find(b"\x00\xff")
    while i >= 0:
        if i + 4 <= len(data):
            length, lcs = data[i + 2], data[i + 3]
            body = data[i + 4:i + 4 + length]
            if (length + lcs) & 0xFF == 0 and len(body) == length and length >= 6 \
                    and i + 4 + length < len(data) \
                    and (sum(body) + data[i + 4 + length]) & 0xFF == 0 \
                    and body[:2] == b"\xd5\x03":
                return body[2], body[3], body[4]
        i = data.find(b"\x00\xff", i + 1)
    return None


def console_ttys(sysfs: Path = Path("/sys/class/tty/console/active"),
                 cmdline: Path = Path("/proc/cmdline")) -> set[str]:
    """The ttys the kernel console writes to (``ttyS0``): probing one would write to it."""
    names: set[str] = set()
    try:
        names.update(sysfs.read_text().split())
    except OSError:
        pass
    try:
        for word in cmdline.read_text().split():
            if word.startswith("console="):
                names.add(word[len("console="):].split(",")[0])
    except OSError:
        pass
    return {n.replace("serial0", "ttyAMA0") for n in names}


def port_users(devices: Sequence[str], proc: Path = Path("/proc")) -> dict[str, list[int]]:
    """The other processes (those this user may see) that have each device open, by real
    path: a running terminal reading its scanner would lose codes to a probe."""
    wanted = {os.path.realpath(d) for d in devices}
    users: dict[str, list[int]] = {}
    me = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            fds = os.listdir(entry / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(entry / "fd" / fd)
            except OSError:
                continue
            if target in wanted:
                users.setdefault(target, []).append(int(entry.name))
                break
    return users


def _process(pid: int) -> str:
    try:
        return f"process {pid} ({Path(f'/proc/{pid}/comm').read_text().strip()})"
    except OSError:
        return f"process {pid}"


def probe_port(device: str, *, consoles: set[str] | None = None,
               users: Sequence[int] | None = None, timeout_s: float = PROBE_S) -> PortProbe:
    """Ask ``device`` for a PN532's firmware version, at the PN532's 115200 baud.

    Not probed: the kernel console (the bytes would land on it), a port another process
    has open (``users``; found in /proc when not given) or holds exclusively, one this user
    cannot open.
    """
    import serial

    name = os.path.basename(os.path.realpath(device))
    if name in (console_ttys() if consoles is None else consoles):
        return PortProbe("skipped", "not probed: the kernel console is on it")
    if users is None:
        users = port_users([device]).get(os.path.realpath(device), [])
    if users:
        return PortProbe("skipped", f"not probed: {_process(users[0])} has it open")
    if not os.access(device, os.R_OK | os.W_OK):
        return PortProbe("skipped", "not probed: no permission to open it")
    try:
        port = serial.Serial(device, 115200, timeout=0.05, write_timeout=timeout_s,
                             exclusive=True)
    except (serial.SerialException, OSError, ValueError) as err:
        busy = "lock" in str(err)
        return PortProbe("skipped", "not probed: in use by another process" if busy
                         else f"not probed: cannot open it ({err})")
    try:
        port.reset_input_buffer()
        port.write(PN532_WAKEUP + PN532_GET_FIRMWARE)
        answer = b""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            answer += port.read(64)
            firmware = pn532_firmware(answer)
            if firmware is not None:
                ic, ver, rev = firmware
                if ic != 0x32:
                    return PortProbe("silent", f"answered as PN5{ic:02x}, not a PN532")
                return PortProbe("pn532", f"PN532 firmware {ver}.{rev}")
    except (serial.SerialException, OSError) as err:
        return PortProbe("silent", f"probe failed: {err}")
    finally:
        port.close()
    if answer:
        return PortProbe("silent", "answered, but not as a PN532")
    return PortProbe("silent", "no PN532 answered; a line scanner says nothing until it "
                     "reads a code")


def nfc_tty_spec(device: str) -> str:
    """The reader spec nfcpy opens ``device`` by: ``tty:USB0`` for /dev/ttyUSB0, ``tty:NAME``
    for another /dev/NAME; "" where nfcpy cannot name it (not directly in /dev)."""
    path = Path(device)
    if path.parent != Path("/dev"):
        return ""
    name = path.name
    short = name[3:] if re.fullmatch(r"tty(S|ACM|AMA|USB)\d+", name) else name
    return f"nfc:tty:{short}:pn532"


def serial_ports(dev: Path = Path("/dev")) -> list[tuple[str, str]] | None:
    """(device, description) of every serial port pyserial lists, and of the Raspberry Pi
    UARTs; None without pyserial."""
    try:
        from serial.tools import list_ports
    except ImportError:
        return None
    ports: dict[str, tuple[str, str]] = {}
    for port in sorted(list_ports.comports(include_links=True), key=lambda p: p.device):
        desc = port.description if port.description not in ("", "n/a") else "serial port"
        if port.vid is not None and port.pid is not None:
            desc += f" ({port.vid:04x}:{port.pid:04x})"
        ports.setdefault(port.device, (port.device, desc))
    listed = {os.path.realpath(d) for d, _ in ports.values()}
    for uart in PI_UARTS:
        path = dev / uart
        if path.exists() and os.path.realpath(path) not in listed:
            ports[str(path)] = (str(path), "UART")
    return sorted(ports.values())


def port_finding(device: str, desc: str, probe: PortProbe, used: str = "") -> Finding:
    """A PN532 under NFC devices when it answered as one; otherwise a plain serial port,
    never called a reader of any kind."""
    if probe.kind == "pn532":
        spec = nfc_tty_spec(device)
        problem = fix = ""
        if not spec:
            problem = f"nfcpy opens only devices directly in /dev, not {device}"
            fix = "add a udev rule giving it a name in /dev (SYMLINK+=\"localpay-nfc\")"
        return Finding("nfc", spec, f"{device}: {probe.detail}", used=used, problem=problem,
                       fix=fix, probe=probe.detail)
    problem, fix = access_problem(Path(device), "scanner", "dialout")
    return Finding("serial", f"serial:{device}", f"{device}: {desc}", used=used,
                   problem=problem, fix=fix, probe=probe.detail)


def serial_findings(dev: Path = Path("/dev"),
                    probes: dict[str, PortProbe] | None = None) -> list[Finding]:
    """Every serial port, probed; ``probes`` collects the answers by real device path."""
    ports = serial_ports(dev)
    if ports is None:
        return [Finding("serial", "", "pyserial", problem="pyserial is not installed",
                        fix="pip install 'localpay[serial]'")]
    answers = probe_all([device for device, _ in ports])
    if probes is not None:
        probes.update(answers)
    return [port_finding(device, desc, answers[os.path.realpath(device)])
            for device, desc in ports]


def probe_all(devices: Sequence[str]) -> dict[str, PortProbe]:
    """Each real device probed once (a link and its target are one port, and the second
    open would find it locked), all at once so the waits overlap."""
    real = sorted({os.path.realpath(d) for d in devices})
    if not real:
        return {}
    consoles = console_ttys()
    users = port_users(real)
    with ThreadPoolExecutor(max_workers=min(8, len(real))) as pool:
        answers = list(pool.map(
            lambda d: probe_port(d, consoles=consoles, users=users.get(d, [])), real))
    return dict(zip(real, answers, strict=True))


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


def mark_configured(report: Report, used: Mapping[str, str], pcsc_names: Sequence[str],
                    probes: dict[str, PortProbe] | None = None) -> None:
    """Mark the findings that ``used`` names (config field -> reader spec); a configured
    device not found is a problem. ``probes``: the serial ports' answers so far (by real
    path); a configured port not among them is probed here."""
    probes = {} if probes is None else probes
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
            _configured_port(report, field_name, spec_text, probes)
            continue
        if not hits:
            problem = f"{field_name} = {spec_text!r} names a device that was not found"
            device = _pn532_device(spec_text)
            probe = probes.get(os.path.realpath(device)) if device else None
            if probe is not None:
                problem = f"{field_name} = {spec_text!r}: {device}: {probe.detail}"
            report.problems.append(Finding(
                spec_text.split(":", 1)[0], spec_text, spec_text, used=field_name,
                problem=problem, fix="plug it in, or set it to one of the devices found above"))
            continue
        i = hits[0]
        f = report.findings[i]
        report.findings[i] = Finding(f.section, f.spec, f.name, field_name, f.problem, f.fix,
                                     f.probe)


def _configured_port(report: Report, field_name: str, spec_text: str,
                     probes: dict[str, PortProbe]) -> None:
    """A configured serial port that no serial finding is: a pty or a udev symlink, which
    pyserial does not list, or a port that answered as a PN532."""
    port = str(parse_reader_spec(spec_text).options["port"])
    real = os.path.realpath(port)
    listed = real in probes
    if not listed and Path(port).exists():
        probes[real] = probe_port(port)
    probe = probes.get(real)
    if probe is not None and probe.kind == "pn532":
        spec = nfc_tty_spec(port)
        report.problems.append(Finding(
            "serial", spec_text, port, used=field_name,
            problem=f"{field_name} = {spec_text!r} is a PN532 NFC reader ({probe.detail}), "
                    f"not a code scanner",
            fix=(f'set readers.card = "{spec}" and ' if spec else "")
            + f"{field_name} to the scanner's port"))
        if not listed:
            report.findings.append(port_finding(port, "configured port", probe))
        return
    problem, fix = access_problem(Path(port), "scanner", "dialout")
    report.findings.append(Finding("serial", spec_text, f"{port}: configured port",
                                   used=field_name, problem=problem, fix=fix,
                                   probe=probe.detail if probe is not None else ""))


def _pn532_device(spec_text: str) -> str:
    """/dev/ttyAMA0 for ``nfc:tty:AMA0:pn532`` (nfcpy's naming); "" for other specs."""
    parts = spec_text.split(":")
    if len(parts) < 3 or parts[:2] != ["nfc", "tty"]:
        return ""
    short = parts[2]
    return f"/dev/tty{short}" if re.fullmatch(r"(S|ACM|AMA|USB)\d+", short) \
        else f"/dev/{short}"


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
    probes: dict[str, PortProbe] = {}
    report.findings += serial_findings(dev, probes)
    report.findings += camera_findings(dev)
    if used is not None:
        mark_configured(report, used, names, probes)
    return report


SECTIONS = (("pcsc", "PC/SC readers (pcscd)"), ("nfc", "NFC devices (nfcpy)"),
            ("serial", "Serial ports (not a reader by the probe; a line scanner says "
                        "nothing until it reads a code)"), ("camera", "Cameras (QR)"))


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
            if f.probe and f.probe not in f.name:
                lines.append(f"{'':<47}probe: {f.probe}")
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
