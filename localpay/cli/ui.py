"""``localpay run`` and ``localpay screenshots``: the kiosk screens from the command line.

The readers are opened here (terminal code may use drivers; the screens may not) and
handed to :mod:`kiosk_ui` as sources of presentations. ``run --demo`` needs no hardware and
no set-up: a validator or till over a scratch ledger, the virtual reader, and function keys
that present test cards.

``run`` never refuses to start for what a technician must fix on site: a reader or scanner
that does not open is named on the screen and tried again (:class:`kiosk_ui.service.Device`),
and a missing key, a read-only home or a broken ledger put up the out-of-service screen with
the cause. Started under systemd, the screen says what is wrong instead of staying black
while the unit restarts. With ``--seconds``, a run that was out of service throughout exits 1
(a verdict, as a failed self-test), naming the causes on stderr.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from firmware_cfg.config import Config
from localpay.errors import ConfigError, KeyFileError, LedgerError, SyncUnavailableError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from drivers.virtual import VirtualReader
    from sync.client import SyncClient
    from terminal.core import Terminal

Keys = dict[str, Callable[[], None]]

log = logging.getLogger(__name__)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT such as 800x480, got {text!r}") \
            from None
    if not (320 <= w <= 7680 and 240 <= h <= 4320):
        raise click.BadParameter(f"{text} is not a screen size this kiosk draws")
    return w, h


def _ui() -> Any:
    try:
        import kiosk_ui.app as app_mod
    except ImportError as err:
        raise click.ClickException(
            f"the kiosk screens need pygame ({err}): pip install 'localpay[ui]'") from err
    return app_mod


@contextlib.contextmanager
def _demo_terminal(role: str, folder: Path) -> Iterator[tuple[Terminal, VirtualReader, Keys]]:
    """A terminal over a scratch ledger, a virtual reader, and the keys that present cards."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from drivers.emulators.emv_card import EmvCard
    from drivers.virtual import VirtualCard
    from drivers.virtual import VirtualReader as Virtual
    from firmware_cfg.config import DEFAULT
    from firmware_cfg.keys import DEMO_TOKEN_KEY
    from localpay.cli.demo import RIDERS
    from offline_ledger import Ledger
    from terminal.cards import card_token
    from terminal.core import Terminal

    if role == "validator":
        config = DEFAULT.replace("terminal", id="DEMO-BUS-85", role="validator", place="85")
    else:
        config = DEFAULT.replace("terminal", id="DEMO-SHOP-01", role="till", place="M0427",
                                 merchant_category="local_food",
                                 merchant_name="Ilsan Farm Store")
    ledger = Ledger(folder / "ledger.sqlite", key=Ed25519PrivateKey.generate(),
                    terminal_id=config.terminal.id)
    reader = Virtual("demo reader")
    try:
        hot = card_token(DEMO_TOKEN_KEY, "uid", RIDERS["hot-listed card"])
        ledger.apply_deny_delta(1, {hot: "reported stolen"})
        ledger.set_balances({card_token(DEMO_TOKEN_KEY, "uid", RIDERS["Dohyun"]): 4_000}, 0)
        terminal = Terminal(config, ledger, DEMO_TOKEN_KEY)
        names = ["Minji", "Junho", "Seoyeon", "Dohyun", "hot-listed card"]
        def tap(uid: bytes) -> Callable[[], None]:
            return lambda: reader.present_uid(uid)

        keys: Keys = {f"f{n}": tap(RIDERS[name]) for n, name in enumerate(names, start=1)}
        keys["f6"] = lambda: reader.present_code("NOT-A-PAYMENT-CODE")
        keys["f7"] = lambda: reader.present_card(
            VirtualCard(uid=bytes.fromhex("08e70001"), handler=EmvCard().handle))
        yield terminal, reader, keys
    finally:
        reader.close()
        ledger.close()


@click.command("run")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Terminal config file (TOML); keys and ledger come from "
              "the home folder.")
@click.option("--demo", is_flag=True,
              help="A scratch terminal with the virtual reader; F1-F7 present test cards.")
@click.option("--role", type=click.Choice(["validator", "till"]), default="validator",
              show_default=True, help="With --demo: which terminal to show.")
@click.option("--reader", "readers", multiple=True, metavar="KIND[:ARGS]",
              help="A reader to take cards and codes from (repeatable), in the syntax of "
              "`localpay read --reader`: pcsc[:NAME-PATTERN], nfc:usb:072f:2200, "
              "nfc:tty:AMA0:pn532, serial:/dev/ttyACM0[:BAUD], camera[:INDEX]. "
              "Default: readers.card and readers.scanner of the config.")
@click.option("--windowed", is_flag=True, help="A window of --size instead of full screen.")
@click.option("--size", default="800x480", show_default=True, help="Window size, WxH.")
@click.option("--language", type=click.Choice(["ko", "en"]), default=None,
              help="Screen language at start (default: terminal.language of the config).")
@click.option("--no-sound", is_flag=True, help="No tones.")
@click.option("--seconds", type=click.FloatRange(min=0), default=None,
              help="Quit after this many seconds (smoke tests, burn-in); exit 1 if the "
              "terminal was out of service the whole time.")
@click.option("--screenshot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Save the last frame as a PNG when quitting.")
@click.option("--trace", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --config: append one JSON line per approval to this file, written "
              "only once its ledger entry is durable (crash and kill tests).")
@click.pass_context
def run(ctx: click.Context, config_path: Path | None, demo: bool, role: str,
        readers: tuple[str, ...], windowed: bool, size: str, language: str | None,
        no_sound: bool, seconds: float | None, screenshot: Path | None,
        trace: Path | None) -> None:
    """Start the terminal's screens: full screen, with the readers given.

    Exactly one of --config FILE or --demo. Ctrl+Q quits. A missing reader is shown and
    tried again; a terminal that cannot approve shows the out-of-service screen, and exits 1
    when it was out of service for the whole run.
    """
    if demo == (config_path is not None):
        raise click.UsageError("give either --config FILE or --demo")
    if demo and trace is not None:
        raise click.UsageError("--trace traces a configured terminal's ledger, not --demo")
    dims = _size(size)
    ui = _ui()
    options = {"size": dims, "fullscreen": not windowed, "language": language,
               "sound": not no_sound}
    blocked = None
    if demo:
        with tempfile.TemporaryDirectory(prefix="localpay-kiosk-") as tmp, \
                _demo_terminal(role, Path(tmp)) as (terminal, reader, keys):
            app = ui.KioskApp(terminal, reader.poll, demo=True, shortcuts=keys, **options)
            blocked = _run_app(app, seconds, screenshot)
    elif config_path is not None:
        blocked = _run_configured(ctx, config_path, readers, ui, options, seconds, screenshot,
                                  trace)
    if blocked is not None:
        click.echo("localpay run: out of service for the whole run: "
                   + "; ".join(b.line() for b in blocked), err=True)
        ctx.exit(1)


def _open_terminal(home: Any, config: Config) -> tuple[Terminal, list[Any]]:
    """The home's terminal, and the causes found on the way that stop it approving.

    A missing or unusable key, or a ledger whose lock file cannot be made (a read-only
    home), stops nothing from starting: the terminal is made with no ledger (every payment
    declined as the ledger's fault, nothing signed) so the screen can say what is wrong.
    Another process writing the ledger still refuses the start: that is a second kiosk on
    the same home, which must not run at all (:mod:`terminal.owner`).
    """
    from kiosk_ui.service import Blocker, Cause
    from terminal.core import Terminal
    from terminal.home import open_terminal
    from terminal.owner import LedgerInUseError

    try:
        return open_terminal(home, config), []
    except KeyFileError as err:
        log.error("cannot open the terminal: %s", err)
        fault = LedgerError(f"no ledger opened: {err}")
        return Terminal(config, None, b"", ledger_fault=fault), [Blocker(Cause.KEY_MISSING,
                                                                         str(err))]
    except LedgerInUseError:
        raise
    except LedgerError as err:
        log.error("cannot open the ledger: %s", err)
        return Terminal(config, None, b"", ledger_fault=err), []


def _device(text: str, config: Config) -> Any:
    """A reader or scanner spec as a :class:`kiosk_ui.service.Device`, opened on demand."""
    from drivers.spec import parse_reader_spec
    from kiosk_ui.service import Device

    spec = parse_reader_spec(text)  # a malformed spec is the user's error, now
    if spec.kind == "serial":
        spec.options.setdefault("terminator", config.readers.serial_terminator)
    return Device(text, "scanner" if spec.kind in ("serial", "camera") else "card", spec.open)


def _run_configured(ctx: click.Context, config_path: Path, specs: tuple[str, ...], ui: Any,
                    options: dict[str, Any], seconds: float | None,
                    screenshot: Path | None, trace: Path | None = None) -> Any:
    from firmware_cfg.config import load
    from terminal.home import Home, default_home

    config: Config = load(config_path)
    if not specs:
        specs = tuple(s for s in (config.readers.card, config.readers.scanner) if s)
    obj = ctx.find_root().obj
    home = getattr(obj, "home", None) or Home(default_home())
    devices = [_device(text, config) for text in specs]
    terminal, blockers = _open_terminal(home, config)
    traced = _trace_approvals(terminal, trace) if trace is not None else None
    client = None
    printer: _Printer | None = None
    mpm = None
    try:
        link = None
        idle_task = None
        if config.central.url and config.keys.central_public_key and terminal.ledger:
            from sync.client import SyncClient
            from terminal.clock import kernel_ntp_synchronised
            from terminal.config_update import apply_pending, save_pending

            def keep_fetched(version: int, body: str) -> None:
                save_pending(home, version, body)

            def apply_fetched() -> None:
                # the engine's worker owns the terminal: bundles are applied there, between
                # transactions, and recorded in the ledger by the one writer
                apply_pending(terminal, home)

            with contextlib.suppress(ConfigError):  # logged and set aside; keep running
                apply_pending(terminal, home)
            client = SyncClient(home.ledger_path, home.terminal_key(config), config.central.url,
                                config.keys.central_public_key,
                                batch_size=config.central.batch_size,
                                interval_s=config.central.sync_interval_s,
                                on_config=keep_fetched,
                                synchronised=kernel_ntp_synchronised)
            client.start()
            link = sync_link(client)
            idle_task = apply_fetched
            if config.terminal.role == "till":
                from sync.mpm import MpmLink

                # the sale's QR code paid from the citizen's app, through central (#17)
                mpm = MpmLink(client, config.terminal.id)
        printer = _Printer(config.readers.printer) if config.readers.printer else None
        receipts = None
        if printer is not None and config.terminal.role == "till":
            from terminal.receipt import ReceiptDesk, ReceiptJournal, journal_path

            receipts = ReceiptDesk(config, printer,
                                   ReceiptJournal(journal_path(home.ledger_path)))
        app = ui.KioskApp(terminal, devices, link=link, idle_task=idle_task, home=home.path,
                          blockers=blockers, receipts=receipts, mpm=mpm, **options)
        if client is not None:
            from sync.status_report import faults_of

            # what the screen shows as out of service is what the operators' Fleet shows
            client.faults = lambda: faults_of(app.model.sync.blocked)
        return _run_app(app, seconds, screenshot)
    finally:
        if printer is not None:
            printer.close()
        if mpm is not None:
            mpm.shut()  # before its client: no online sale's call outlives it
        if client is not None:
            client.close()
        for device in devices:
            device.close()
        if terminal.ledger is not None:
            terminal.ledger.close()
        if traced is not None:
            os.close(traced)


def _trace_approvals(terminal: Terminal, path: Path) -> int:
    """Append a JSON line to ``path`` for each approval, the way ``simulate --trace`` prints
    one: the terminal's listeners hear SHOW only after the entry's commit, so a line in the
    file is an approval the rider saw and the ledger holds. One ``write`` per line on an
    O_APPEND descriptor: a kill leaves whole lines and at most no last one."""
    import json

    from terminal.core import State

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as err:
        raise click.ClickException(f"cannot open the trace file {path}: {err}") from err

    def on_state(state: State, decision: Any) -> None:
        if state is State.SHOW and decision is not None and decision.approved \
                and decision.entry is not None:
            line = json.dumps({"seq": decision.entry.seq,
                               "entry_hash": decision.entry.entry_hash.hex(),
                               "amount": decision.amount, "kind": decision.entry.kind})
            os.write(fd, (line + "\n").encode())

    terminal.listeners.append(on_state)
    return fd


class _Printer:
    """The configured receipt printer, opened when a receipt is due: one missing or off at
    start must not stop the till (the payment stands either way), and one plugged in later is
    used from the next receipt. A failed open is the fault the clerk sees ("missing")."""

    def __init__(self, spec: str) -> None:
        from drivers.printer import parse_printer_spec

        parse_printer_spec(spec)  # a bad spec is a config error at start, not a fault later
        self.spec = spec
        self._open: Any = None

    def print_lines(self, lines: Sequence[str]) -> None:
        from drivers.printer import open_printer
        from localpay.errors import PrinterError

        if self._open is None:
            self._open = open_printer(self.spec)
        try:
            self._open.print_lines(lines)
        except PrinterError:
            self.close()  # a printer unplugged is opened afresh next time
            raise

    def close(self) -> None:
        if self._open is not None:
            with contextlib.suppress(Exception):
                self._open.close()
            self._open = None


def sync_link(client: SyncClient) -> Callable[[], bool | None]:
    """Online: the last sync round finished; offline: it failed; None: none finished yet."""

    def link() -> bool | None:
        if client.last_error is not None:
            return False
        summary = client.last_summary
        return None if summary is None else summary.synced_upto is not None

    return link


@contextlib.contextmanager
def central_in_background(folder: Path, ledger_path: Path, terminal_key: Ed25519PrivateKey,
                          terminal_id: str, *, interval_s: float = 1.0,
                          batch_size: int = 500) -> Iterator[SyncClient]:
    """The reference central service in a child process and a real sync client on it.

    For benchmarks: the terminal process runs its sync client in a background thread while
    the service runs apart (``nice`` 10, as it would run on another machine), on a free port
    of 127.0.0.1 with its data in ``folder``.
    """
    import socket
    import subprocess
    import sys
    import time

    import httpx
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from sync.client import SyncClient

    data = folder / "central"
    base = [sys.executable, "-m", "localpay", "central"]
    env = {**os.environ, "PYGAME_HIDE_SUPPORT_PROMPT": "1"}
    public = terminal_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    try:
        if not (data / "log.key").exists():  # a central command makes nothing by itself
            subprocess.run([*base, "init", "--data", str(data)], check=True, env=env,
                           capture_output=True, text=True)
        verifier = subprocess.run([*base, "key", "--data", str(data)], check=True, env=env,
                                  capture_output=True, text=True).stdout.strip()
        subprocess.run([*base, "terminal", "add", "--data", str(data), terminal_id, public],
                       check=True, env=env, capture_output=True, text=True)
    except subprocess.CalledProcessError as err:
        raise SyncUnavailableError(f"central service set-up failed: {err.stderr.strip()}") from err
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        ["nice", "-n", "10", *base, "serve", "--data", str(data), "--port", str(port)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    client = None
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SyncUnavailableError("the central service did not start")
            time.sleep(0.1)
        client = SyncClient(ledger_path, terminal_key, url, verifier, batch_size=batch_size,
                            interval_s=interval_s)
        client.start()
        yield client
    finally:
        if client is not None:
            client.close()
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _run_app(app: Any, seconds: float | None, screenshot: Path | None) -> Any:
    """Run the kiosk; the causes when it was out of service throughout, else None."""
    try:
        app.run(seconds=seconds)
        if screenshot is not None:
            app.save_frame(screenshot)
        return app.model.sync.blocked if app.out_of_service_throughout else None
    finally:
        app.close()


@click.command("screenshots")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--size", "sizes", multiple=True, help="Screen size WxH (repeatable; "
              "default 800x480 and 1280x720).")
def screenshots(folder: Path, sizes: tuple[str, ...]) -> None:
    """Save a PNG of every screen state of the validator and the till, in both languages."""
    _ui()
    from kiosk_ui import save_screenshots

    dims = [_size(s) for s in sizes] or [(800, 480), (1280, 720)]
    try:
        saved = save_screenshots(folder, dims)
    except OSError as err:
        raise click.ClickException(f"cannot write screenshots to {folder}: {err}") from err
    click.echo(f"{len(saved)} screenshots in {folder}")


COMMANDS = [run, screenshots]
