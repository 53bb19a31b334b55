"""The real PC/SC stack for the tests: ``pcscd`` with the ``vpcd`` virtual reader driver.

Only one ``pcscd`` can run on a machine (its socket is ``/run/pcscd/pcscd.comm`` whatever the
environment says). So:

- when none runs, the tests start their own, ``pcscd -f -c DIR/reader.conf`` with two vpcd
  readers named ``Localpay Test PCD 00 00`` / ``00 01`` on two free TCP ports, and stop it
  (only it, by its pid) at the end of the session;
- when one runs, it is reused with Debian's readers from ``/etc/reader.conf.d/vpcd``
  (``Virtual PCD 00 00`` / ``00 01`` on ports 35963 / 35964), or with the readers of a
  test session that started it, as recorded in a state file next to its lock.

Tests that stop or restart the service (recovery tests) need a ``pcscd`` of their own; with
a foreign one they fail, saying so, rather than disturb a service they did not start.
Two test sessions on one machine take turns on the stack (a file lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from smartcard import scard

from drivers.emulators.vpcd_card import VpcdCard
from drivers.pcsc import list_readers, service_up

LIBVPCD = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"
DEBIAN_READERS = [("Virtual PCD 00 00", 0x8C7B), ("Virtual PCD 00 01", 0x8C7C)]
FRIENDLY = "Localpay Test PCD"
_TMP = Path(tempfile.gettempdir())
LOCK_PATH = _TMP / "localpay-test-pcscd.lock"
STATE_PATH = _TMP / "localpay-test-pcscd.json"
START_TIMEOUT = 20.0


def card_present(reader: str) -> bool | None:
    """What pcscd believes about ``reader`` now (None: no such reader / no service)."""
    hresult, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        return None
    try:
        hresult, states = scard.SCardGetStatusChange(
            ctx, 0, [(reader, scard.SCARD_STATE_UNAWARE)])
        if hresult != scard.SCARD_S_SUCCESS:
            return None
        return bool(states[0][1] & scard.SCARD_STATE_PRESENT)
    finally:
        scard.SCardReleaseContext(ctx)


def wait_until(check: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def wait_card_state(reader: str, present: bool, timeout: float = 15.0) -> None:
    """Wait until pcscd has noticed the card arriving or leaving (vpcd polls for it)."""
    wait_until(lambda: card_present(reader) is present, timeout,
               f"pcscd to see the card {'in' if present else 'out of'} {reader!r}")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _free_port_pair() -> int:
    for _ in range(200):
        base = random.randrange(36100, 44000, 2)
        if _port_free(base) and _port_free(base + 1):
            return base
    raise RuntimeError("no two free consecutive TCP ports for the vpcd readers")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class PcscStack:
    """pcscd with vpcd readers: ``readers`` are (PC/SC name, vpcd TCP port) pairs."""

    owned: bool
    readers: list[tuple[str, int]]
    folder: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    #: pid of a pcscd a killed test session left behind, adopted by this one
    adopted: int | None = None
    base_port: int = 0
    cards: list[VpcdCard] = field(default_factory=list)

    # -- the service -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        if not self.owned:
            return True
        if self.adopted is not None:
            return _pid_alive(self.adopted)
        return self.proc is not None and self.proc.poll() is None

    def _need_owned(self, what: str) -> None:
        if not self.owned:
            pytest.fail(f"{what} needs a pcscd started by the tests, but one was already "
                        "running; stop it (systemctl stop pcscd.socket pcscd) and run again")

    def start(self, *, with_readers: bool = True) -> None:
        """Start our pcscd (with no reader at all when ``with_readers`` is false)."""
        self._need_owned("starting pcscd")
        if self.running:
            return
        assert self.folder is not None
        conf = self.folder / "reader.conf"
        conf.write_text(
            f'FRIENDLYNAME "{FRIENDLY}"\nDEVICENAME /dev/null:{self.base_port}\n'
            f"LIBPATH {LIBVPCD}\nCHANNELID {self.base_port}\n" if with_readers else "")
        log = (self.folder / "pcscd.log").open("ab")
        self.proc = subprocess.Popen(["pcscd", "-f", "-c", str(conf)], stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        STATE_PATH.write_text(json.dumps({"pid": self.proc.pid, "readers": self.readers}))
        wanted = {name for name, _ in self.readers} if with_readers else set()
        wait_until(lambda: service_up() and wanted <= set(list_readers()), START_TIMEOUT,
                   "pcscd to start with its readers")

    def stop(self) -> None:
        """Stop our pcscd (by its pid) and wait until the service is gone."""
        self._need_owned("stopping pcscd")
        proc, self.proc = self.proc, None
        adopted, self.adopted = self.adopted, None
        if adopted is not None and _pid_alive(adopted):
            os.kill(adopted, signal.SIGTERM)
            wait_until(lambda: not _pid_alive(adopted), 10.0, "the left-over pcscd to stop")
        if proc is None:
            wait_until(lambda: not service_up(), 10.0, "pcscd to stop")
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        with contextlib.suppress(FileNotFoundError):
            STATE_PATH.unlink()
        wait_until(lambda: not service_up(), 10.0, "pcscd to stop")

    def restart(self, *, with_readers: bool = True) -> None:
        self.stop()
        self.start(with_readers=with_readers)

    def ensure_healthy(self) -> None:
        """Bring the stack back to its normal state after a test that broke it."""
        self.remove_cards()
        if self.owned and (not self.running
                           or not {n for n, _ in self.readers} <= set(list_readers())):
            self.restart()

    def remove_cards(self) -> None:
        """Remove every card of the test and wait until pcscd sees every reader empty."""
        for card in self.cards:
            card.remove()
        self.cards.clear()
        if self.running and service_up():
            for name, _ in self.readers:
                if card_present(name) is not None:
                    wait_card_state(name, False)

    # -- cards -----------------------------------------------------------------------------

    def card(self, index: int = 0, handler: Callable[[bytes], bytes] | None = None,
             **options: object) -> VpcdCard:
        """A card for reader ``index`` (not inserted yet); removed at the end of the test."""
        _, port = self.readers[index]
        card = VpcdCard(port, handler, **options)  # type: ignore[arg-type]
        self.cards.append(card)
        return card

    def insert(self, card: VpcdCard, index: int = 0) -> None:
        """Insert ``card`` and wait until pcscd has seen it."""
        name = self.readers[index][0]
        wait_card_state(name, False)
        card.insert()
        wait_card_state(name, True)

    def pull(self, card: VpcdCard, index: int = 0) -> None:
        """Remove ``card`` and wait until pcscd has seen it go."""
        card.remove()
        wait_card_state(self.readers[index][0], False)


def _lock(timeout: float = 900.0) -> int:
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o666)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise RuntimeError(f"another test session holds {LOCK_PATH}") from None
            time.sleep(0.5)


def _left_over() -> tuple[int, list[tuple[str, int]]] | None:
    """(pid, readers) of a live pcscd recorded in the state file by a test session."""
    try:
        state = json.loads(STATE_PATH.read_text())
        pid = int(state["pid"])
        readers = [(str(name), int(port)) for name, port in state["readers"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not readers or not _pid_alive(pid):
        return None
    return pid, readers


#: one stack per process, shared by every test module that imports the fixtures (each
#: import makes its own "session" fixture, and a second flock on the file would deadlock)
_SHARED: list[PcscStack] = []
_USERS = [0]


@contextlib.contextmanager
def pcsc_session() -> Iterator[PcscStack]:
    if _SHARED:
        _USERS[0] += 1
        try:
            yield _SHARED[0]
        finally:
            _USERS[0] -= 1
        return
    with _pcsc_session() as stack:
        _SHARED.append(stack)
        _USERS[0] += 1
        try:
            yield stack
        finally:
            _USERS[0] -= 1
            _SHARED.clear()


@contextlib.contextmanager
def _pcsc_session() -> Iterator[PcscStack]:
    fd = _lock()
    stack: PcscStack | None = None
    try:
        left = _left_over()
        if service_up() and left is not None:
            # A pcscd a test session started and could not stop (it was killed): we hold
            # the lock, so no session uses it; it is the tests' own, take it over.
            pid, readers = left
            stack = PcscStack(owned=True, folder=Path(tempfile.mkdtemp(prefix="localpay-pcscd-")),
                              adopted=pid, base_port=readers[0][1], readers=readers)
        elif service_up():
            readers = DEBIAN_READERS
            missing = {n for n, _ in readers} - set(list_readers())
            if missing:
                pytest.fail(f"a pcscd is running without the vpcd readers {sorted(missing)}: "
                            "install vsmartcard-vpcd and restart pcscd, or stop it so the "
                            "tests start their own")
            stack = PcscStack(owned=False, readers=readers)
        else:
            folder = Path(tempfile.mkdtemp(prefix="localpay-pcscd-"))
            base = _free_port_pair()
            stack = PcscStack(owned=True, folder=folder, base_port=base,
                              readers=[(f"{FRIENDLY} 00 00", base),
                                       (f"{FRIENDLY} 00 01", base + 1)])
            stack.start()
        yield stack
    finally:
        if stack is not None:
            for card in stack.cards:
                card.remove()
            if stack.owned:
                stack.stop()
                if stack.folder is not None:
                    shutil.rmtree(stack.folder, ignore_errors=True)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@pytest.fixture(scope="session")
def pcsc_stack() -> Iterator[PcscStack]:
    """pcscd + vpcd for the whole session (started here when none runs)."""
    with pcsc_session() as stack:
        yield stack


@pytest.fixture()
def pcsc(pcsc_stack: PcscStack) -> Iterator[PcscStack]:
    """The stack, healthy at the start of the test and with its cards removed after it."""
    pcsc_stack.ensure_healthy()
    yield pcsc_stack
    pcsc_stack.remove_cards()


def socat_ptys(folder: Path) -> subprocess.Popen[bytes]:
    """A scanner plugged in: a pty pair, ``ttySCANNER`` its side and ``ttyAPP`` ours."""
    proc = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={folder}/ttySCANNER",
         f"pty,raw,echo=0,link={folder}/ttyAPP"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not ((folder / "ttySCANNER").exists() and (folder / "ttyAPP").exists()):
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("socat did not make its ptys")
        time.sleep(0.02)
    return proc
