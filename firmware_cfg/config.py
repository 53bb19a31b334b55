"""The terminal's configuration: one TOML file, validated field by field.

Every section is a frozen dataclass whose defaults are the embedded defaults the demo runs
on. Unknown keys are errors (a typo must not silently fall back to a default), and every
error names the field, what was expected and what was found.

``[merchant]`` carries the facts of the merchant a terminal belongs to, as the central
merchant registry (:mod:`central.merchants`) holds them. A config without it runs on the
defaults of ``[terminal]``; with it, ``terminal.merchant_name`` is the merchant's name and a
till's ``terminal.place`` its merchant id (filled in when the file leaves them out, an error
when it says otherwise). The checks of the merchant's fields live here, below the registry,
so that the registry and the terminal refuse the same values.

A provisioned terminal runs the config of the last operator-signed bundle it installed
(:mod:`firmware_cfg.bundle` keeps that bundle beside the file as ``config.bundle``). The
file may differ from it only in :data:`LOCAL_FIELDS`, the settings of the hardware on site;
:func:`load` refuses a file that differs anywhere else, naming the fields. A home with no
kept bundle (the demo, an unprovisioned terminal) runs on its file or the embedded defaults.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from firmware_cfg.pins import pin_hash_ok
from localpay.errors import ConfigError

log = logging.getLogger(__name__)

Role = Literal["till", "validator"]


@dataclass(frozen=True)
class TerminalSection:
    id: str = "DEMO-TERMINAL-01"
    role: Role = "validator"
    #: route number (validator) or merchant id (till)
    place: str = "85"
    #: validator: "city", "village", "express", "airport"
    bus_type: str = "city"
    #: till: "local_food" or "general"
    merchant_category: str = "general"
    merchant_name: str = "Demo Shop"
    city: str = "Goyang"
    language: Literal["ko", "en"] = "ko"


#: the rider categories every config has; ``[fares.extra]`` adds others
BASE_CATEGORIES = ("adult", "youth", "child")
_CATEGORY_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class FaresSection:
    """A validator's fare per rider category, in won.

    A tap is charged the fare of the card's category: the card's own where a card application
    reads one, else the card's central profile (synced with the points snapshot), else
    ``default``. A category this config has no fare for is charged as ``default``.
    """

    adult: int = 1500
    youth: int = 900
    child: int = 550
    #: the category of a card whose category is not known, or has no fare here
    default: str = "adult"
    #: other categories (``[fares.extra]``, e.g. ``senior = 0``). A table of its own so
    #: that a misspelt key in ``[fares]`` stays an error instead of becoming a category.
    #: Left out of the hash: a dict has none, and a config is equal by value anyway.
    extra: dict[str, int] = field(default_factory=dict, hash=False)

    def categories(self) -> dict[str, int]:
        """Every category this config charges, with its fare."""
        return {**{name: getattr(self, name) for name in BASE_CATEGORIES}, **self.extra}

    @property
    def default_fare(self) -> int:
        """What a card of unknown category pays (shown before a card is read)."""
        return self.fare(None)[1]

    def fare(self, category: str | None) -> tuple[str, int]:
        """``(category charged, fare)``: ``category`` when it has a fare here, else the
        default's. Cheap enough for the tap path: two dictionary lookups at most."""
        for name in (category, self.default):
            if name is None:
                continue
            if name in BASE_CATEGORIES:
                return name, int(getattr(self, name))
            fare = self.extra.get(name)
            if fare is not None:
                return name, fare
        raise ConfigError(f"fares.default: expected one of {sorted(self.categories())}, "
                          f"found {self.default!r}")


@dataclass(frozen=True)
class RiskSection:
    #: most one transaction may be, in won
    max_amount: int = 50_000
    #: offline won per card since the last sync
    card_offline_amount: int = 100_000
    #: offline transactions per card since the last sync
    card_offline_count: int = 30
    #: offline won for the whole terminal since the last sync
    terminal_exposure: int = 5_000_000
    #: of those, the won it may approve while its clock is ``unknown`` (terminal.clock):
    #: counted since the last sync, net of refunds of those payments. The default lets a
    #: validator rebooted with no network work a busy shift (666 adult fares); 0 approves
    #: nothing but free fares with an unknown clock. terminal_exposure still caps it.
    unknown_clock_amount: int = 1_000_000
    #: UID-only cards are weaker: lower limits
    uid_max_amount: int = 10_000
    uid_card_offline_amount: int = 30_000
    #: validator: the same card again within this many seconds is "already paid"
    duplicate_window_s: int = 30
    #: how far a wallet QR's clock may be from ours
    qr_clock_skew_s: int = 30
    #: how long a CPM code's one-time data is remembered against replay
    cpm_nonce_ttl_s: int = 86_400
    #: after a campaign code is scanned, the seconds within which the citizen's card must
    #: be tapped to collect the points; without a card the claim lapses, nothing recorded
    campaign_claim_window_s: int = 30
    #: EMV terminal risk management (Book 3 §10.6): floor limit, and random transaction
    #: selection's threshold and target percentages (0 disables random selection)
    emv_floor_limit: int = 30_000
    emv_threshold: int = 10_000
    emv_target_percent: int = 0
    emv_max_target_percent: int = 0


@dataclass(frozen=True)
class ReadersSection:
    """Which readers the terminal opens, in the syntax of ``localpay read --reader``."""

    #: card reader: "virtual", "pcsc[:NAME-PATTERN]", "nfc:usb:072f:2200",
    #: "nfc:tty:AMA0:pn532", "nfc:tty:S0:pn532"
    card: str = "virtual"
    #: code scanner: "" (none), "serial:/dev/ttyACM0[:BAUD]", "camera[:INDEX]"
    scanner: str = ""
    #: what ends one code on a serial scanner line (most USB-CDC scanners send CR)
    serial_terminator: Literal["cr", "lf", "crlf", "tab", "etx"] = "cr"
    #: ACR122U-style readers: beep and blink on a decision
    buzzer: bool = True
    led: bool = True
    #: receipt printer (ESC/POS): "" (none), "virtual", "serial:/dev/ttyUSB0[:BAUD]",
    #: "usb:VID:PID" (hex, e.g. "usb:0419:3c00"); see drivers.printer
    printer: str = ""

    def specs(self) -> dict[str, str]:
        """The configured devices by config field, as reader discovery marks them."""
        return {"readers.card": self.card, "readers.scanner": self.scanner}


_READER_KINDS = ("virtual", "pcsc", "nfc")
_SCANNER_KINDS = ("serial", "camera", "virtual")


#: The EMV applications a terminal accepts by default, in order of preference: the order it
#: tries them in on a card without a directory (Book 1 §12.3.3); with a PPSE / PSE the card's
#: own priorities choose among the accepted ones (§12.4). An entry is the AID in hex; a
#: trailing ``*`` lets it match a card AID that is longer and starts with it (partial
#: selection, EMV 4.3 Book 1 §12.3.1); without it only the same AID matches.
#:
#: Sources. International RIDs as the Proxmark3 AID list gives them, with their registrants
#: (github.com/RfidResearchGroup/proxmark3, client/resources/aidlist.json): Visa A000000003,
#: Mastercard A000000004, American Express A000000025, JCB A000000065, UnionPay A000000333.
#: Korean domestic D410000001 (D: a national RID, ISO/IEC 7816-5; 410: Korea): that list has
#: D4100000011010 as "Republic of Korea" with no registrant named, and Korean domestic-only
#: cards read in morgan.kr/blog/analyzing-various-emv-smartcards carry D4100000011010,
#: D4100000012010 and D4100000013010 labelled KOREACREDIT. Who registered D410000001 (KFTC,
#: the Credit Finance Association's KLSC, or a card network) is confirmed by no source found:
#: these three are accepted because cards carry them, not on a registrant's word.
DEFAULT_EMV_AIDS: tuple[str, ...] = (
    "D4100000030001",  # the local-currency scheme's own application, always first
    "D4100000011010*",  # Korean domestic credit / check (KOREACREDIT), see above
    "D4100000012010*",
    "D4100000013010*",
    "A0000000031010*",  # Visa credit/debit (A000000003101001 credit, ...1002 debit)
    "A0000000032010*",  # Visa Electron
    "A0000000041010*",  # Mastercard credit/debit
    "A0000000043060*",  # Maestro
    "A0000000651010*",  # JCB
    "A000000333010101",  # UnionPay debit; exact, so its electronic cash (...0106) stays out
    "A000000333010102",  # UnionPay credit
    "A000000333010103",  # UnionPay quasi-credit
    "A00000002501*",  # American Express (AEIPS, ExpressPay: A000000025010xxx)
)
_AID_ENTRY = re.compile(r"((?:[0-9A-Fa-f]{2}){5,16})(\*?)")


def parse_aid(text: str, where: str = "aid") -> tuple[bytes, bool]:
    """``(AID, partial selection allowed)`` of one ``[emv] aids`` entry; ConfigError unless
    it is 5 to 16 bytes of hex, optionally followed by ``*``."""
    match = _AID_ENTRY.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(f"{where}: expected an AID of 5 to 16 bytes in hex (10 to 32 hex "
                          f"digits), with * after it to allow partial selection, found {text!r}")
    return bytes.fromhex(match.group(1)), bool(match.group(2))


@dataclass(frozen=True)
class EmvSection:
    """Which EMV card applications the terminal accepts (``[emv]``)."""

    #: AIDs in order of preference, as :func:`parse_aid` reads them; [] accepts no EMV card
    aids: tuple[str, ...] = DEFAULT_EMV_AIDS

    def __post_init__(self) -> None:
        seen: dict[bytes, int] = {}
        for i, text in enumerate(self.aids):
            aid, _ = parse_aid(text, f"emv.aids[{i}]")
            if aid in seen:
                raise ConfigError(f"emv.aids[{i}]: {aid.hex().upper()} is already "
                                  f"emv.aids[{seen[aid]}]; list each AID once")
            seen[aid] = i

    def entries(self) -> tuple[tuple[bytes, bool], ...]:
        """Each AID with whether partial selection is allowed for it, in order."""
        return tuple(parse_aid(text) for text in self.aids)
_PRINTER_KINDS = ("virtual", "serial", "usb")


@dataclass(frozen=True)
class CentralSection:
    url: str = ""
    sync_interval_s: int = 30
    batch_size: int = 500


@dataclass(frozen=True)
class KeysSection:
    #: paths relative to the home folder; the files hold the secrets, never this TOML
    terminal_key: str = "keys/terminal.key"
    token_key: str = "keys/token.key"
    #: hex Ed25519 public keys: wallet-QR issuer, operator (signed config bundles); the
    #: central log's verifier key (checkpoints and answers) as `localpay central key` prints it
    issuer_public_key: str = ""
    central_public_key: str = ""
    operator_public_key: str = ""


@dataclass(frozen=True)
class MerchantSection:
    """The registry's facts of the terminal's merchant; all empty: none given."""

    id: str = ""
    name: str = ""
    #: Korean business registration number (사업자등록번호), 10 digits with a check digit
    brn: str = ""
    #: with its scheme: "ksic:47121" (Korean Standard Industrial Classification) or
    #: "mcc:5411" (card merchant category code)
    category: str = ""
    region: str = ""
    #: programme memberships, such as "large-mart" (where bus points are not spent)
    memberships: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClerkSection:
    """One ``[[clerk]]`` of a till: who may sign in, by a PIN kept only as a salted hash
    (:func:`firmware_cfg.pins.hash_pin`). A till with no clerks opens on its keypad
    without sign-in."""

    #: what the ledger's payment and refund entries record as ``clerk``
    id: str = ""
    name: str = ""
    #: a supervisor also approves refunds
    role: Literal["clerk", "supervisor"] = "clerk"
    #: ``scrypt$LOG2N$R$P$SALT$HASH`` (hex), the line ``localpay clerk hash-pin`` prints
    pin_hash: str = ""


CLERK_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
MAX_CLERKS = 8


MERCHANT_ID = re.compile(r"[A-Za-z0-9-]{1,40}")
MEMBERSHIP = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
#: KSIC subclasses have 5 digits, card MCCs 4 (ISO 18245)
CATEGORY = re.compile(r"(ksic:[0-9]{5}|mcc:[0-9]{4})")
_BRN_FORM = re.compile(r"[0-9]{3}-[0-9]{2}-[0-9]{5}|[0-9]{10}")
#: National Tax Service weights for the first nine digits of a business registration number
BRN_WEIGHTS = (1, 3, 7, 1, 3, 7, 1, 3, 5)


def brn_check_digit(first9: str) -> int:
    """The check digit of a business registration number's first nine digits.

    The National Tax Service's published rule, as python-stdnum implements it
    (``stdnum/kr/brn.py``, which cites the OECD's "Korea - Information on Tax Identification
    Numbers", oecd.org/tax/automatic-exchange/crs-implementation-and-assistance/
    tax-identification-numbers/Korea-TIN.pdf): the sum of the digits weighted by
    :data:`BRN_WEIGHTS`, plus the tens of the ninth digit times 5 (the rule counts that
    product's tens twice), and the check digit is what brings the sum to a multiple of 10.
    """
    digits = [int(c) for c in first9]
    total = sum(d * w for d, w in zip(digits, BRN_WEIGHTS, strict=True)) + digits[8] * 5 // 10
    return (10 - total % 10) % 10


def parse_brn(text: str, where: str = "brn") -> str:
    """``123-45-67890`` or ``1234567890`` as its 10 digits; ConfigError unless well formed
    with a right check digit."""
    if not isinstance(text, str) or not _BRN_FORM.fullmatch(text):
        raise ConfigError(f"{where}: expected a business registration number of 10 digits "
                          f"(123-45-67890 or 1234567890), found {text!r}")
    digits = text.replace("-", "")
    if int(digits[9]) != brn_check_digit(digits[:9]):
        raise ConfigError(f"{where}: {text!r} fails its check digit (a digit mistyped?)")
    return digits


def check_text(value: str, where: str, *, limit: int, required: bool = False) -> str:
    """Display text: no control characters (a name goes to screens, receipts and QR codes),
    at most ``limit`` characters, surrounding blanks dropped."""
    text = value.strip()
    if required and not text:
        raise ConfigError(f"{where}: expected a non-empty text, found {value!r}")
    if len(text) > limit:
        raise ConfigError(f"{where}: expected at most {limit} characters, found {len(text)}")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text):
        raise ConfigError(f"{where}: control characters are not allowed, found {value!r}")
    return text


def check_merchant_id(value: str, where: str = "merchant id") -> str:
    if not MERCHANT_ID.fullmatch(value):
        raise ConfigError(f"{where}: expected 1 to 40 of A-Z, a-z, 0-9 and -, found {value!r}")
    return value


def check_category(value: str, where: str = "category") -> str:
    text = value.strip()
    scheme, sep, code = text.partition(":")
    text = f"{scheme.lower()}{sep}{code}"
    if not CATEGORY.fullmatch(text):
        raise ConfigError(f"{where}: expected ksic: and 5 digits (ksic:47121) or mcc: and "
                          f"4 digits (mcc:5411), found {value!r}")
    return text


def check_memberships(values: typing.Iterable[str], where: str = "memberships"
                      ) -> tuple[str, ...]:
    """Sorted and without repeats, so equal sets compare and store equal."""
    out: set[str] = set()
    for value in values:
        name = value.strip() if isinstance(value, str) else value
        if not isinstance(name, str) or not MEMBERSHIP.fullmatch(name):
            raise ConfigError(f"{where}: expected names of a-z, 0-9 and - (up to 32, such as "
                              f"large-mart), found {value!r}")
        out.add(name)
    return tuple(sorted(out))


@dataclass(frozen=True)
class Config:
    terminal: TerminalSection = field(default_factory=TerminalSection)
    fares: FaresSection = field(default_factory=FaresSection)
    risk: RiskSection = field(default_factory=RiskSection)
    readers: ReadersSection = field(default_factory=ReadersSection)
    central: CentralSection = field(default_factory=CentralSection)
    keys: KeysSection = field(default_factory=KeysSection)
    merchant: MerchantSection = field(default_factory=MerchantSection)
    emv: EmvSection = field(default_factory=EmvSection)
    #: ``[[clerk]]``, an array of tables: money settings, never in LOCAL_FIELDS
    clerk: tuple[ClerkSection, ...] = ()

    def with_merchant(self, *, id: str, name: str, brn: str, category: str, region: str = "",
                      memberships: typing.Iterable[str] = ()) -> Config:
        """A copy carrying a merchant's facts, its name shown at the till and, on a till,
        its id as the place; validated."""
        section = MerchantSection(id=id, name=name, brn=brn, category=category, region=region,
                                  memberships=tuple(memberships))
        terminal = dataclasses.replace(self.terminal, merchant_name=name)
        if terminal.role == "till":
            terminal = dataclasses.replace(terminal, place=id)
        config = dataclasses.replace(self, merchant=section, terminal=terminal)
        validate(config)
        return config

    def replace(self, section: str, **changes: Any) -> Config:
        """A copy with some fields of one section changed (validated like a file)."""
        current = dataclasses.asdict(getattr(self, section))
        current.update(changes)
        return dataclasses.replace(self, **{section: _build(type(getattr(self, section)),
                                                            current, section)})


def _check(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{where}: expected one of {list(choices)}, found {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {hint}, found {value!r}")
    if origin is tuple:
        # a TOML array of one type (merchant.memberships); a tuple keeps the config hashable
        item_hint = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected an array, found {value!r}")
        return tuple(_check(v, item_hint, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        # a table of name = value whose names are not known in advance (fares.extra)
        _, value_hint = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, found {value!r}")
        return {k: _check(v, value_hint, f"{where}.{k}") for k, v in value.items()}
    if hint is int:
        # bool is an int subclass; true/false where a number is meant is a typo
        if type(value) is not int:
            raise ConfigError(f"{where}: expected a whole number, found {value!r}")
        if value < 0:
            raise ConfigError(f"{where}: expected a number of 0 or more, found {value}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, found {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, found {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint}")  # pragma: no cover - schema bug


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"[{where}]: expected a table, found {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"[{where}]: unknown key {unknown[0]!r}; expected one of {sorted(names)}"
        )
    values = {k: _check(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**values)


def _build_clerks(data: Any) -> tuple[ClerkSection, ...]:
    if not isinstance(data, list):
        raise ConfigError(f"clerk: expected an array of tables ([[clerk]]), found {data!r}")
    return tuple(_build(ClerkSection, item, f"clerk[{i}]") for i, item in enumerate(data))


def from_dict(data: dict[str, Any]) -> Config:
    """Validate a parsed TOML document into a :class:`Config`."""
    sections = {f.name: f for f in dataclasses.fields(Config)}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}]; expected one of {sorted(sections)}")
    hints = typing.get_type_hints(Config)
    built: dict[str, Any] = {
        name: _build_clerks(value) if name == "clerk" else _build(hints[name], value, name)
        for name, value in data.items()}
    merchant = built.get("merchant")
    if merchant is not None and merchant.id:
        # the registry's facts speak for the terminal where the file is silent
        given = data.get("terminal", {})
        terminal = built.get("terminal", TerminalSection())
        if "merchant_name" not in given:
            terminal = dataclasses.replace(terminal, merchant_name=merchant.name)
        if terminal.role == "till" and "place" not in given:
            terminal = dataclasses.replace(terminal, place=merchant.id)
        built["terminal"] = terminal
    config = Config(**built)
    validate(config)
    return config


def validate(config: Config) -> None:
    """Cross-field rules that a single field's type cannot express."""
    t, r = config.terminal, config.risk
    if not t.id or len(t.id) > 64:
        raise ConfigError(f"terminal.id: expected 1 to 64 characters, found {t.id!r}")
    if r.uid_max_amount > r.max_amount:
        raise ConfigError(
            f"risk.uid_max_amount: expected at most risk.max_amount ({r.max_amount}), "
            f"found {r.uid_max_amount}"
        )
    if r.emv_threshold > r.emv_floor_limit:
        raise ConfigError(f"risk.emv_threshold: expected at most risk.emv_floor_limit "
                          f"({r.emv_floor_limit}), found {r.emv_threshold}")
    for name in ("emv_target_percent", "emv_max_target_percent"):
        if getattr(r, name) > 99:
            raise ConfigError(f"risk.{name}: expected 0 to 99, found {getattr(r, name)}")
    if r.emv_target_percent > r.emv_max_target_percent:
        raise ConfigError("risk.emv_target_percent: expected at most "
                          "risk.emv_max_target_percent")
    if not 1 <= r.campaign_claim_window_s <= 600:
        raise ConfigError("risk.campaign_claim_window_s: expected 1 to 600, found "
                          f"{r.campaign_claim_window_s}")
    if t.role == "validator" and config.fares.adult <= 0:
        raise ConfigError("fares.adult: a validator needs a fare above 0")
    _validate_fares(config.fares)
    card_kind = config.readers.card.split(":", 1)[0]
    if card_kind not in _READER_KINDS:
        raise ConfigError(
            f"readers.card: expected a reader such as 'pcsc', 'nfc:usb:072f:2200' or "
            f"'virtual', found {config.readers.card!r}"
        )
    scanner = config.readers.scanner
    if scanner and scanner.split(":", 1)[0] not in _SCANNER_KINDS:
        raise ConfigError(
            f"readers.scanner: expected '', 'serial:/dev/ttyACM0[:BAUD]' or 'camera[:INDEX]', "
            f"found {scanner!r}"
        )
    printer = config.readers.printer
    if printer and printer.split(":", 1)[0] not in _PRINTER_KINDS:
        raise ConfigError(f"readers.printer: expected '', 'virtual', 'serial:/dev/ttyUSB0[:BAUD]' "
                          f"or 'usb:VID:PID', found {printer!r}")
    for name in ("issuer_public_key", "operator_public_key"):
        value = getattr(config.keys, name)
        if value and (len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value)):
            raise ConfigError(f"keys.{name}: expected 64 hex digits, found {value!r}")
    # The sync client checks checkpoints against the log's name as well as its key, so this
    # one is the c2sp.org/signed-note verifier key that `localpay central key` prints.
    central = config.keys.central_public_key
    if central and not _is_note_verifier_key(central):
        raise ConfigError("keys.central_public_key: expected the central log's verifier key "
                          "(name+keyid+base64, as `localpay central key` prints), found "
                          f"{central!r}")
    if config.central.url and not config.central.url.startswith(("http://", "https://")):
        raise ConfigError(f"central.url: expected http:// or https://, found "
                          f"{config.central.url!r}")
    _validate_merchant(config)
    _validate_clerks(config)


def _validate_clerks(config: Config) -> None:
    clerks = config.clerk
    if clerks and config.terminal.role != "till":
        raise ConfigError("clerk: a validator has no clerks; [[clerk]] is for a till")
    seen: set[str] = set()
    for i, c in enumerate(clerks):
        where = f"clerk[{i}]"
        if not CLERK_ID.fullmatch(c.id):
            raise ConfigError(f"{where}.id: expected 1 to 32 of A-Z, a-z, 0-9, _ and -, "
                              f"found {c.id!r}")
        if c.id in seen:
            raise ConfigError(f"{where}.id: {c.id!r} appears twice")
        seen.add(c.id)
        check_text(c.name, f"{where}.name", limit=40, required=True)
        if not pin_hash_ok(c.pin_hash):
            # never echo the value: it is a hash of a PIN, short enough to search
            raise ConfigError(f"{where}.pin_hash: expected scrypt$LOG2N$R$P$SALT$HASH as "
                              "`localpay clerk hash-pin` prints it")
    if len(clerks) > MAX_CLERKS:
        raise ConfigError(f"clerk: expected at most {MAX_CLERKS} clerks (the names the "
                          f"till's sign-in screen shows), found {len(clerks)}")
    if clerks and not any(c.role == "supervisor" for c in clerks):
        raise ConfigError(f"clerk: refunds need a supervisor; none of the {len(clerks)} "
                          "clerks has role = \"supervisor\"")


def _validate_merchant(config: Config) -> None:
    m, t = config.merchant, config.terminal
    if m == MerchantSection():
        return
    if not m.id:
        raise ConfigError("merchant.id: a [merchant] section needs the merchant's id")
    check_merchant_id(m.id, "merchant.id")
    # the values must already be in their stored form: a signed config is not rewritten
    if check_text(m.name, "merchant.name", limit=100, required=True) != m.name:
        raise ConfigError(f"merchant.name: expected no surrounding blanks, found {m.name!r}")
    parse_brn(m.brn, "merchant.brn")
    if check_category(m.category, "merchant.category") != m.category:
        raise ConfigError(f"merchant.category: expected a lower-case scheme, found "
                          f"{m.category!r}")
    if check_text(m.region, "merchant.region", limit=64) != m.region:
        raise ConfigError(f"merchant.region: expected no surrounding blanks, found "
                          f"{m.region!r}")
    if check_memberships(m.memberships, "merchant.memberships") != m.memberships:
        raise ConfigError("merchant.memberships: expected sorted names without repeats, "
                          f"found {list(m.memberships)}")
    if t.merchant_name != m.name:
        raise ConfigError(f"terminal.merchant_name: the terminal shows its merchant's name "
                          f"{m.name!r} ([merchant] name), found {t.merchant_name!r}")
    if t.role == "till" and t.place != m.id:
        raise ConfigError(f"terminal.place: a till's place is its merchant's id {m.id!r} "
                          f"([merchant] id), found {t.place!r}")


def _validate_fares(fares: FaresSection) -> None:
    for name in fares.extra:
        if name in BASE_CATEGORIES:
            raise ConfigError(f"fares.extra.{name}: {name} is set in [fares] itself, not in "
                              f"[fares.extra]")
        if not _CATEGORY_NAME.fullmatch(name):
            raise ConfigError(f"fares.extra: expected category names of a-z, 0-9 and _ (up to "
                              f"32, starting with a letter), found {name!r}")
    if fares.default not in fares.categories():
        raise ConfigError(f"fares.default: expected a category with a fare, one of "
                          f"{sorted(fares.categories())}, found {fares.default!r}")


def _is_note_verifier_key(text: str) -> bool:
    """``name+8 hex digits+base64(0x01 || 32-byte Ed25519 key)`` (c2sp.org/signed-note)."""
    parts = text.split("+", 2)  # base64 may hold '+' too
    if len(parts) != 3 or not parts[0] or any(c.isspace() for c in parts[0]):
        return False
    if len(parts[1]) != 8 or any(c not in "0123456789abcdef" for c in parts[1]):
        return False
    try:
        raw = base64.b64decode(parts[2], validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) == 33 and raw[0] == 0x01


def loads(text: str) -> Config:
    """Validate a config given as TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"not valid TOML: {err}") from err
    return from_dict(data)


def dumps(config: Config) -> str:
    """The config as TOML text that :func:`loads` reads back to the same config."""
    lines: list[str] = []
    for section in dataclasses.fields(config):
        if section.name == "merchant" and config.merchant == MerchantSection():
            continue  # a config without a merchant reads as it did before the section
        if section.name == "emv" and config.emv == EmvSection():
            continue  # the default list: a bundle older terminals still read
        if section.name == "clerk":
            for clerk in config.clerk:  # each [[clerk]] header opens a table of its own
                lines.append("[[clerk]]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in dataclasses.asdict(clerk).items()]
                lines.append("")
            continue
        lines.append(f"[{section.name}]")
        for name, value in dataclasses.asdict(getattr(config, section.name)).items():
            lines.append(f"{name} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        # an inline table; its keys are category names, which are bare keys
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    # JSON string escapes are a subset of TOML basic-string escapes
    return json.dumps(str(value), ensure_ascii=False)


def load(path: str | Path) -> Config:
    """Read and validate a terminal config file; refuse it when it differs from the signed
    bundle kept beside it outside :data:`LOCAL_FIELDS`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} cannot be read: {err}") from err
    try:
        config = loads(text)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
    kept = kept_signed(path.parent)
    if kept is not None:
        version, signed = kept
        changed = signed_differences(signed, config)
        if changed and installed_version(path.parent) < version:
            # A power cut between the kept bundle and the file of one install: the file is
            # the previous install's, and the pending bundle completes this one at start.
            log.warning("%s is not yet the signed config version %d (an install was cut "
                        "short); running it until the install completes", path, version)
        elif changed:
            raise ConfigError(
                f"{path} differs from the signed config version {version} in "
                f"{', '.join(changed)}; only {', '.join(sorted(LOCAL_FIELDS))} may be changed "
                "on the terminal: put the rest back, or publish a new version from central")
    return config


# -- the signed config and what may differ from it on site ----------------------------------------

#: the settings a technician may change in ``terminal.toml`` without a signed bundle: which
#: readers are plugged in and how they behave, and the screens' language. None of them
#: changes what is charged, the limits, the place, the keys or where the ledger goes.
LOCAL_FIELDS = frozenset({
    "terminal.language", "readers.card", "readers.scanner", "readers.serial_terminator",
    "readers.buzzer", "readers.led", "readers.printer"})

#: the last signed bundle installed, kept beside ``terminal.toml`` (firmware_cfg.bundle)
SIGNED_FILE = "config.bundle"
#: the version of the bundle whose install completed, written last (firmware_cfg.bundle)
VERSION_FILE = "config-version"


def installed_version(folder: Path) -> int:
    """The version of the last bundle whose install completed in ``folder`` (0: none)."""
    try:
        return int((folder / VERSION_FILE).read_text().strip() or 0)
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as err:
        raise ConfigError(f"{folder / VERSION_FILE} is unreadable: {err}") from err


def signed_differences(signed: Config, running: Config) -> list[str]:
    """The fields (``section.field``) where ``running`` differs from ``signed`` outside
    :data:`LOCAL_FIELDS`."""
    out: list[str] = []
    for section in dataclasses.fields(Config):
        a, b = getattr(signed, section.name), getattr(running, section.name)
        if a == b:
            continue
        if section.name == "clerk":
            out.append("clerk")  # who may sign in is a money setting, never local
            continue
        for f in dataclasses.fields(a):
            name = f"{section.name}.{f.name}"
            if name not in LOCAL_FIELDS and getattr(a, f.name) != getattr(b, f.name):
                out.append(name)
    return out


def with_local(signed: Config, previous_signed: Config | None, running: Config | None
               ) -> Config:
    """``signed`` keeping each local field the technician changed on site: where the
    running file differs from the signed config it was installed from. Without both, the
    signed config whole (nothing says what was changed on site)."""
    if previous_signed is None or running is None:
        return signed
    config = signed
    for name in sorted(LOCAL_FIELDS):
        section, field_name = name.split(".")
        here = getattr(getattr(running, section), field_name)
        if here != getattr(getattr(previous_signed, section), field_name):
            config = config.replace(section, **{field_name: here})
    return config


def kept_signed(folder: Path) -> tuple[int, Config] | None:
    """The version and config of the signed bundle kept in ``folder``; None when there is
    none. Its signature was checked when it was installed: this reads, it does not verify
    (whoever can rewrite this folder can rewrite the program too; the central service
    checks every entry against the configs it signed, :mod:`central.config_audit`)."""
    path = folder / SIGNED_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ConfigError(f"{path} cannot be read: {err}") from err
    try:
        outer = json.loads(data)
        inner = json.loads(base64.b64decode(outer["payload"], validate=True))
        version, text = inner["version"], inner["config"]
        if type(version) is not int or not isinstance(text, str):
            raise TypeError("version or config of the wrong type")
    except (ValueError, TypeError, KeyError, binascii.Error) as err:
        raise ConfigError(f"{path} is not a config bundle: {err}") from err
    try:
        return version, loads(text)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


DEFAULT = Config()
