"""``localpay replay``: drive a home's terminal through a scenario written as JSON Lines.

For a technician checking a newly configured terminal and for an operator checking a rules
change. Each line is a moment of true time and one thing that happens at the terminal: a tap,
a payment, a scanned code, a refund, a void, a sync, or at a till a clerk signing in, a
cash-receipt request (:mod:`terminal.cash_receipt`) and the closing of the day (its Z report,
:mod:`terminal.zreport`). It is played through the virtual
reader, the real core and the home's ledger (or a scratch one), with the terminal's clock
reading what the scenario says, clock faults included. The whole file is checked before
anything is played, so a bad line records nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar
from zoneinfo import ZoneInfo

import click

from drivers import wait
from drivers.virtual import VirtualReader
from firmware_cfg.config import Config
from localpay.cli.common import Context, pass_ctx, scratch_only
from localpay.errors import ConfigError
from terminal import cash_receipt, zreport
from terminal.clock import ClockTrust
from terminal.core import Decision, Terminal
from terminal.home import Home
from terminal.receipt import ZONE as RECEIPT_ZONE

Action = Literal["tap", "pay", "code", "refund", "void", "sync", "clerk", "close",
                 "cash-receipt"]
ACTIONS: tuple[Action, ...] = ("tap", "pay", "code", "refund", "void", "sync", "clerk",
                               "close", "cash-receipt")
#: the role that does each action; a sync is either's. A till plays a scanned code only
#: with an amount keyed (the kiosk ignores one without), so a bare ``code`` is a validator's.
ROLE_OF: dict[Action, str] = {"tap": "validator", "code": "validator", "pay": "till",
                              "refund": "till", "void": "till", "clerk": "till",
                              "close": "till", "cash-receipt": "till"}
#: the keys of a decision's line, in order (a contract: scripts read them)
DECISION_KEYS = ("outcome", "amount", "reason", "seq", "token", "category", "points",
                 "points_week")
#: SQLite's integers: a larger seq or amount would overflow the ledger's queries
MAX_INT = 2**63 - 1
#: ISO 14443 UIDs are 4, 7 or 10 bytes; FeliCa's IDm is 8
MAX_UID_BYTES = 10
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)
_T = TypeVar("_T")


# -- the scenario ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One checked line of a scenario. Times are milliseconds since the Unix epoch."""

    line: int
    at_ms: int
    #: what the terminal's clock reads from this line on; None: it keeps its offset
    clock_ms: int | None
    action: Action
    uid: bytes | None = None
    code: str | None = None
    amount: int | None = None
    seq: int | None = None
    #: a ``clerk`` line's clerk id ("": signed out)
    clerk: str | None = None
    #: a ``cash-receipt`` line's identity (its number never in a repr) and purpose
    cash: tuple[cash_receipt.Identity, cash_receipt.Purpose] | None = None


def load_scenario(path: Path, role: str, *, central: bool,
                  clerks: frozenset[str] = frozenset()) -> list[Step]:
    """Every line of ``path`` checked, for a terminal of ``role``.

    ``central`` says whether the config names a central service, which ``sync`` lines
    need; ``clerks`` are the ids of the config's ``[[clerk]]`` tables, which ``clerk``
    lines name. Blank lines are skipped. The first bad line raises :class:`ConfigError` naming
    the file and the line's number; an empty scenario is refused too.
    """
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read scenario {path}: {err.strerror or err}") from err
    steps: list[Step] = []
    previous: tuple[int, str] | None = None  # (line, "at" as written) of the last step
    for number, chunk in enumerate(raw.split(b"\n"), 1):
        where = f"{path} line {number}"
        try:
            text = chunk.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"{where}: not UTF-8 text ({err.reason} at byte "
                              f"{err.start + 1})") from None
        if not text.strip():
            continue
        try:
            step, at_text = parse_line(text, number, role, central=central, clerks=clerks)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
        if previous is not None and step.at_ms < steps[-1].at_ms:
            raise ConfigError(f'{where}: "at" {at_text} is before line {previous[0]}\'s '
                              f"{previous[1]}: lines must move forward in time")
        steps.append(step)
        previous = (number, at_text)
    if not steps:
        raise ConfigError(f"{path}: no lines to play")
    return steps


def parse_line(text: str, number: int, role: str, *, central: bool,
               clerks: frozenset[str] = frozenset()) -> tuple[Step, str]:
    """One line as a :class:`Step` and its ``at`` as written; :class:`ConfigError` when it
    is not a line this terminal can play (the message does not name the line)."""
    try:
        obj = json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
    except json.JSONDecodeError as err:
        raise ConfigError(f"not JSON: {err.msg} at column {err.colno}") from None
    if not isinstance(obj, dict):
        _bad(f"expected a JSON object, found {_kind(obj)}")
    unknown = sorted(set(obj) - {"at", "clock", *ACTIONS})
    if unknown:
        _bad(f"unknown key {unknown[0]!r}: a line has \"at\", optionally \"clock\", and one "
             f"of {', '.join(ACTIONS)}")
    if "at" not in obj:
        _bad('no "at": every line needs the true time it happens')
    at_ms = _time(obj["at"], "at")
    clock_ms = _time(obj["clock"], "clock") if "clock" in obj else None
    actions = [a for a in ACTIONS if a in obj]
    if len(actions) != 1:
        found = " and ".join(f'"{a}"' for a in actions) if actions else "none"
        _bad(f"expected exactly one action ({', '.join(ACTIONS)}), found {found}")
    action = actions[0]
    value = obj[action]
    wanted = ROLE_OF.get(action)
    if wanted is not None and wanted != role:
        if action == "code":
            _bad('a scanned code with nothing keyed is for a validator: at a till give '
                 '"pay": {"code": ..., "amount": N}')
        _bad(f"a {action} is for a {wanted}, and this home's terminal is a {role} "
             f"(terminal.role)")
    step = Step(number, at_ms, clock_ms, action)
    if action == "sync":
        if value is not True:
            _bad(f'"sync" must be true, found {json.dumps(value)}')
        if not central:
            _bad("a sync needs central.url and keys.central_public_key in the home's config")
        return step, obj["at"]
    if action == "close":
        if value is not True:
            _bad(f'"close" must be true, found {json.dumps(value)}')
        return step, obj["at"]
    if action == "clerk":
        if not isinstance(value, str):
            _bad(f'"clerk" must be a clerk\'s id as a string ("" signs out), found '
                 f"{_kind(value)}")
        if value and value not in clerks:
            known = ", ".join(sorted(clerks)) or "none: the config has no [[clerk]]"
            _bad(f'"clerk" {value!r} is not a [[clerk]] of this till (its clerks: {known})')
        return replace(step, clerk=value), obj["at"]
    if action == "code":
        return replace(step, code=_code(value, "code")), obj["at"]
    if action == "cash-receipt":
        return replace(step, **_cash(value)), obj["at"]
    if action == "tap":
        fields = _fields(value, "tap", required=("uid",))
        return replace(step, uid=_uid(fields["uid"], "tap.uid")), obj["at"]
    if action == "pay":
        fields = _fields(value, "pay", required=("amount",), optional=("uid", "code"))
        if ("uid" in fields) == ("code" in fields):
            _bad('"pay" needs exactly one of "uid" (a card) and "code" (a QR code)')
        amount = _count(fields["amount"], "pay.amount", least=0)
        if "uid" in fields:
            return replace(step, uid=_uid(fields["uid"], "pay.uid"), amount=amount), obj["at"]
        return replace(step, code=_code(fields["code"], "pay.code"), amount=amount), obj["at"]
    if action == "refund":
        fields = _fields(value, "refund", required=("seq", "amount"))
        return replace(step, seq=_count(fields["seq"], "refund.seq", least=1),
                        amount=_count(fields["amount"], "refund.amount", least=0)), obj["at"]
    fields = _fields(value, "void", required=("seq",))
    return replace(step, seq=_count(fields["seq"], "void.seq", least=1)), obj["at"]


def _cash(value: Any) -> dict[str, Any]:
    """A ``cash-receipt`` line's ``seq``, identity and purpose, checked as the till's screen
    checks them (:mod:`terminal.cash_receipt`); the number is never repeated in a message."""
    fields = _fields(value, "cash-receipt", required=("seq", "number", "purpose"))
    seq = _count(fields["seq"], "cash-receipt.seq", least=1)
    if not isinstance(fields["purpose"], str) or not isinstance(fields["number"], str):
        _bad('"cash-receipt" takes "number" and "purpose" as strings')
    try:
        purpose = cash_receipt.parse_purpose(fields["purpose"])
        identity = cash_receipt.parse_identity(fields["number"], purpose)
    except cash_receipt.CashReceiptInputError as err:
        _bad(str(err))
    return {"seq": seq, "cash": (identity, purpose)}


def _bad(message: str) -> NoReturn:
    raise ConfigError(message)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of two equal keys without a word: "tap" twice would hide a tap
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            _bad(f"key {key!r} appears twice in one object")
        obj[key] = value
    return obj


def _constant(name: str) -> NoReturn:
    raise ConfigError(f"not JSON: {name} is not a JSON number")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return {str: "a string", int: "a number", float: "a number", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


def _time(value: Any, name: str) -> int:
    """An ISO 8601 time with an offset, in milliseconds since the epoch (finer is cut)."""
    if not isinstance(value, str):
        _bad(f'"{name}" must be an ISO 8601 time as a string, found {_kind(value)}')
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        _bad(f'"{name}" {value!r} is not an ISO 8601 time (e.g. 2025-03-04T07:00:00+09:00)')
    if when.utcoffset() is None:
        _bad(f'"{name}" {value!r} has no offset from UTC (e.g. +09:00 or Z)')
    ms = (when - _EPOCH) // _MS
    if ms < 0:
        _bad(f'"{name}" {value!r} is before 1970')
    return ms


def _fields(value: Any, name: str, *, required: tuple[str, ...],
            optional: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        _bad(f'"{name}" must be an object, found {_kind(value)}')
    allowed = (*required, *optional)
    for key in value:
        if key not in allowed:
            _bad(f'unknown key {key!r} in "{name}": expected {", ".join(allowed)}')
    for key in required:
        if key not in value:
            _bad(f'"{name}" has no "{key}"')
    return value


def _count(value: Any, name: str, *, least: int) -> int:
    if type(value) is not int:
        _bad(f'"{name}" must be a whole number, found {_kind(value)}'
             + (f" {value!r}" if isinstance(value, float | str) else ""))
    if value < least:
        what = "negative" if value < 0 else f"less than {least}"
        _bad(f'"{name}" is {what}: {value}')
    if value > MAX_INT:
        _bad(f'"{name}" is too large: {value}')
    return value


def _uid(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        _bad(f'"{name}" must be the card\'s UID in hex as a string, found {_kind(value)}')
    if not _HEX.fullmatch(value):
        _bad(f'"{name}" {value!r} is not hex bytes (two hex digits a byte, e.g. "08a10001")')
    uid = bytes.fromhex(value)
    if len(uid) > MAX_UID_BYTES:
        _bad(f'"{name}" is {len(uid)} bytes: a card UID is at most {MAX_UID_BYTES}')
    return uid


def _code(value: Any, name: str) -> str:
    if not isinstance(value, str):
        _bad(f'"{name}" must be the code\'s text as a string, found {_kind(value)}')
    if not value:
        _bad(f'"{name}" is empty')
    return value


# -- playing it -----------------------------------------------------------------------------


class ScenarioClock:
    """The terminal's clock during a replay.

    It reads the current line's true time plus the offset the last ``clock`` line set;
    before any, the offset is 0 (a synchronised clock). A fault so lasts until another
    ``clock`` line, as a Raspberry Pi's wrong clock does until something sets it.
    """

    def __init__(self) -> None:
        self.true_ms = 0
        self.offset_ms = 0

    def move(self, at_ms: int, clock_ms: int | None = None) -> None:
        if clock_ms is not None:
            self.offset_ms = clock_ms - at_ms
        self.true_ms = at_ms

    @property
    def reads_ms(self) -> int:
        return self.true_ms + self.offset_ms

    def __call__(self) -> float:
        # A quarter of a millisecond past the reading: the core records int(clock() * 1000),
        # and ms / 1000 * 1000 can land a hair below ms in floating point.
        return (self.reads_ms + 0.25) / 1000


def decision_line(d: Decision) -> dict[str, Any]:
    """What ``localpay replay`` prints for one decision (keys: :data:`DECISION_KEYS`)."""
    entry = d.entry
    token: str | None = None
    if d.card is not None:
        token = d.card.token
    elif entry is not None:  # a refund or void: the payment's card
        token = entry.fields.card_token or None
    return {
        "outcome": d.outcome,
        "amount": d.amount,
        "reason": d.reason.value if d.reason is not None else None,
        "seq": entry.seq if entry is not None else None,
        "token": token,
        "category": _category(d),
        "points": d.points,
        "points_week": d.points_week,
    }


def _category(d: Decision) -> str | None:
    """The rider category the entry records, else the one the card carries."""
    if d.entry is not None:
        try:
            detail = json.loads(d.entry.fields.detail or "{}")
        except ValueError:
            detail = None
        if isinstance(detail, dict) and isinstance(detail.get("rider"), str):
            return str(detail["rider"])
    return d.card.rider if d.card is not None else None


def decide(terminal: Terminal, reader: VirtualReader, step: Step) -> Decision:
    """One presentation or correction through the terminal (not a sync)."""
    if step.action == "refund":
        return terminal.refund(_given(step.seq), _given(step.amount))
    if step.action == "void":
        return terminal.void(_given(step.seq))
    if step.uid is not None:
        reader.present_uid(step.uid)
    else:
        reader.present_code(_given(step.code))
    presented = wait(reader, 1.0)
    if step.action == "pay":
        return terminal.pay(presented, _given(step.amount))
    return terminal.tap(presented)


def _given(value: _T | None) -> _T:
    if value is None:  # pragma: no cover - parse_line fills what each action needs
        raise ConfigError("a scenario step lacks a field its action needs")
    return value


def play(terminal: Terminal, clock: ScenarioClock, steps: list[Step],
         emit: Callable[[dict[str, Any]], None],
         sync_round: Callable[[], dict[str, Any]] | None = None) -> None:
    """Play checked ``steps`` in order; ``emit`` each decision's line and each sync's
    summary (``{"sync": ...}``) as soon as it is known."""
    reader = VirtualReader("replay")
    # the declines a till's kiosk counts for its Z report (they are in no ledger): those
    # shown since it started, or since the last closing
    declines: dict[str, int] = {}
    since_ms: int | None = None
    try:
        for step in steps:
            clock.move(step.at_ms, step.clock_ms)
            if since_ms is None:
                since_ms = int(clock() * 1000)
            if step.action == "sync":
                if sync_round is None:
                    raise ConfigError(f"line {step.line}: no central service to sync with")
                emit({"sync": sync_round()})
            elif step.action == "clerk":
                terminal.clerk = _given(step.clerk)  # as the kiosk's sign-in sets it
                emit({"clerk": terminal.clerk})
            elif step.action == "cash-receipt":
                emit({"cash_receipt": request_line(terminal, _given(step.seq),
                                                   *_given(step.cash))})
            elif step.action == "close":
                now_ms = int(clock() * 1000)
                emit({"z_report": close_day(terminal, now_ms, declines, since_ms)})
                declines.clear()
                since_ms = now_ms
            else:
                decision = decide(terminal, reader, step)
                if (terminal.role == "till" and decision.outcome == "declined"
                        and decision.reason is not None):
                    reason = decision.reason.value
                    declines[reason] = declines.get(reason, 0) + 1
                emit(decision_line(decision))
    finally:
        reader.close()


def request_line(terminal: Terminal, payment_seq: int, identity: cash_receipt.Identity,
                 purpose: cash_receipt.Purpose) -> dict[str, Any]:
    """A ``cash-receipt`` line: the request recorded (the entry's ``seq``, and what it
    holds: never the number), or refused with its ``refused`` code and nothing recorded."""
    try:
        entry = cash_receipt.request(terminal, payment_seq, identity, purpose)
    except cash_receipt.CashReceiptRefused as err:
        return {"seq": None, "payment_seq": payment_seq, "refused": err.code,
                "message": str(err)}
    r = cash_receipt.of_entry(entry)
    return {"seq": r.seq, "payment_seq": r.payment_seq, "payment_hash": r.payment_hash,
            "amount": r.amount, "purpose": r.purpose, "identity": r.identity,
            "token": r.token, "display": r.display}


def close_day(terminal: Terminal, now_ms: int, declines: dict[str, int],
              since_ms: int) -> dict[str, Any]:
    """A ``close`` line: the Z report of the terminal's local day recorded, as the kiosk's
    *Close day* does; its line is the entry's ``seq`` and detail (:func:`zreport.detail`)."""
    ledger = terminal.ledger
    if ledger is None:  # pragma: no cover - replay always opens the ledger
        raise ConfigError("no ledger to close the day in")
    zone = ZoneInfo(str(terminal.read_options.get("timezone", RECEIPT_ZONE)))
    t = terminal.config.terminal
    report, entry = zreport.close(ledger, terminal_id=t.id, place=t.place, wall_ms=now_ms,
                                  zone=zone, declines=declines, declines_since_ms=since_ms)
    return {"seq": entry.seq, **zreport.detail(report)}


@contextlib.contextmanager
def central_link(home: Home, config: Config,
                 ledger_path: Path) -> Iterator[Callable[[], dict[str, Any]]]:
    """One sync round a call, with the config's central service, as ``localpay sync``
    does it; the client is made at the first call and closed on leaving."""
    clients: list[Any] = []

    def sync_round() -> dict[str, Any]:
        if not clients:
            # Imported here, as in `localpay sync`: httpx and the client would add ~0.2 s to
            # the start of every `localpay` command.
            from sync.client import SyncClient
            from terminal.config_update import save_pending

            def keep_config(version: int, body: str) -> None:
                # Only the terminal's own process applies a bundle; it waits in the home.
                save_pending(home, version, body)

            clients.append(SyncClient(
                ledger_path, home.terminal_key(config), config.central.url,
                config.keys.central_public_key, batch_size=config.central.batch_size,
                interval_s=config.central.sync_interval_s, on_config=keep_config))
        summary: dict[str, Any] = clients[0].sync_once().as_dict()
        return summary

    try:
        yield sync_round
    finally:
        for client in clients:
            client.close()


# -- the command ----------------------------------------------------------------------------


@click.command("replay")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Ledger file (default: the home's ledger)")
@pass_ctx
def replay(ctx: Context, file: Path, db: Path | None) -> None:
    """Play a scenario through this home's terminal; print one JSON line per decision.

    For a technician checking a newly configured terminal, or an operator checking a rules
    change. FILE is JSON Lines. Each line has "at", the true time (ISO 8601 with an offset,
    e.g. 2025-03-04T07:00:00+09:00), never before the line above; optionally "clock", what
    the terminal's own clock reads then (a clock fault); and exactly one of:

    \b
      "tap": {"uid": "08a10001"}                validator: a card taps
      "code": "TEXT"                            validator: a scanned code (a campaign code)
      "pay": {"uid": "08a10001", "amount": N}   till: a card pays N won
      "pay": {"code": "TEXT", "amount": N}      till: a QR code pays N won
      "refund": {"seq": S, "amount": N}         till: N won back of payment S
      "void": {"seq": S}                        till: cancel payment S whole
      "clerk": "ID"                             till: clerk ID signs in ("" signs out)
      "close": true                             till: close the day (Z report)
      "cash-receipt": {"seq": S, "number": "01012345678", "purpose": "income_deduction"}
                                                till: a cash receipt for payment S
      "sync": true                              one sync round with central.url

    The role is the home's terminal.role. Until a line gives "clock", the terminal's clock
    is right; from a "clock" line on it keeps that offset from "at" until another "clock"
    (give "clock" equal to "at" to set it right again). Entries record the terminal's
    clock, as a real terminal's do: a scenario set in the past plays as batches that arrive
    late, and central dates each entry itself when it is synced. A sync uses the config's
    central.url and keys.central_public_key and checks every proof, as `localpay sync`.

    Cards and codes go through the virtual reader, the real core and the ledger (the
    home's, or --db for a scratch one); keys are made in the home folder on first use. The
    config is used as it is, limits and all. The whole file is checked first: a bad line
    is one error naming its number (exit 2) and nothing is recorded.

    A "clerk" line names one of the config's [[clerk]] ids (no PIN: the scenario is the
    clerk); the payments, refunds and voids after it record that clerk, as at the kiosk.
    A "close" line records the Z report of the terminal's local day, with the declines
    counted since the start or the last "close", as the kiosk's Close day.
    A "cash-receipt" line records a cash-receipt request (현금영수증) for payment S:
    "purpose" income_deduction (소득공제: a mobile number 010..., 10 or 11 digits, or a
    cash-receipt card, 13 to 19 digits) or expense_proof (지출증빙: a business registration
    number, 10 digits with its check digit, or a card). A malformed number or purpose is a
    bad line; a payment unknown, refunded or voided, or already with one is refused.

    Output, one JSON line per decision: outcome, amount, reason (decline code or null),
    seq (the entry's, or null), token, category (the rider category), points, points_week;
    a sync prints {"sync": {...its summary...}}, a clerk line {"clerk": "ID"}, a close
    {"z_report": {"seq": S, ...the entry's detail...}}, a cash-receipt {"cash_receipt":
    {"seq", "payment_seq", "payment_hash", "amount", "purpose", "identity", "token",
    "display"}} or, refused, {"cash_receipt": {"seq": null, "payment_seq", "refused",
    "message"}}; the number itself is never printed.
    """
    home = ctx.home
    scratch_only(ctx, db, "replay")
    config = home.config()
    central = bool(config.central.url and config.keys.central_public_key)
    # a bad line is a ConfigError: one line, exit 2, before anything is played
    steps = load_scenario(file, config.terminal.role, central=central,
                          clerks=frozenset(c.id for c in config.clerk))
    if db is not None and home.provisioned:
        synced = next((s for s in steps if s.action == "sync"), None)
        if synced is not None:
            raise ConfigError(f"{file} line {synced.line}: a sync would send the scratch "
                              f"ledger's test entries to this terminal's real central "
                              f"service ({config.central.url}) as revenue; replay without "
                              f"sync lines on a provisioned terminal")
    clock = ScenarioClock()
    path = db or home.ledger_path
    hold = home.own(path)
    try:
        key = home.terminal_key(config, create=True)
        token_key = home.token_key(config, create=True)
    except BaseException:
        hold.release()
        raise
    ledger = home.open_ledger(key, config.terminal.id, ledger_path=path, hold=hold)
    try:
        # The terminal judges its clock as on site, except that a scenario's times are the
        # truth: no release date bounds them, and NTP is in sync while the clock reads true.
        trust = ClockTrust(ledger, wall=clock, ntp=lambda: clock.offset_ms == 0, released_ms=0)
        terminal = Terminal(config, ledger, token_key, clock=clock, clock_trust=trust)
        with central_link(home, config, path) as sync_round:
            play(terminal, clock, steps, lambda line: click.echo(json.dumps(line)),
                 sync_round if central else None)
    finally:
        ledger.close()


COMMANDS = [replay]
