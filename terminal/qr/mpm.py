"""EMVCo QR Merchant-Presented Mode (EMV QRCPS MPM v1.1): parse any payload, build the till's.

A payload is a run of data objects ``ID LL VALUE``: a two-digit ID, a two-digit length that
counts *characters* (not bytes), and the value (MPM §3.2). Templates (IDs 26-51, 62, 64,
80-99, and 50-99 inside 62) hold data objects of their own and are parsed into nested
dicts. Every rule of the data-object tables (MPM §4.5-4.8) is checked; each violation raises
:class:`~localpay.errors.QRFormatError` with a message naming the rule, for example
``CRC mismatch``, ``duplicate ID``, ``bad length``, ``missing mandatory``. White space
around a scanned payload is dropped first, as for every format.

``parse(encode(objects)) == objects`` for every valid object tree (round trip).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Union

from localpay.errors import QRFormatError
from terminal.qr.crc import crc16_hex

#: a value: text, or a template's own data objects
Value = Union[str, "Objects"]
Objects = dict[str, Value]

MAX_PAYLOAD = 512  # MPM §3.1.1: at most 512 characters

_ANS = re.compile(r"[\x20-\x7e]*")  # Alphanumeric Special: the common character set
_N = re.compile(r"[0-9]*")
_AMOUNT = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_PERCENT = re.compile(r"[0-9]{1,2}(?:\.[0-9]{0,2})?")
_LETTERS2 = re.compile(r"[A-Za-z]{2}")
_UPPER2 = re.compile(r"[A-Z]{2}")
# Hangul conjoining jamo (Jamo, Jamo Extended-A and -B): decomposed syllables, which the
# Language Template may not carry (MPM §4.5.3.1: Hangul is precomposed, U+AC00-U+D7A3)
_JAMO = re.compile("[\u1100-\u11ff\ua960-\ua97f\ud7b0-\ud7ff]")


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of a data-object table: name, format, length range, presence."""

    name: str
    fmt: str  # "N" numeric, "ans" alphanumeric special, "S" any string, "T" template
    min_len: int = 1
    max_len: int = 99
    mandatory: bool = False


RuleOf = Callable[[str], "Rule"]


def _root_rule(id_: str) -> Rule:
    n = int(id_)
    fixed = {
        0: Rule("Payload Format Indicator", "N", 2, 2, True),
        1: Rule("Point of Initiation Method", "N", 2, 2),
        52: Rule("Merchant Category Code", "N", 4, 4, True),
        53: Rule("Transaction Currency", "N", 3, 3, True),
        54: Rule("Transaction Amount", "ans", 1, 13),
        55: Rule("Tip or Convenience Indicator", "N", 2, 2),
        56: Rule("Value of Convenience Fee Fixed", "ans", 1, 13),
        57: Rule("Value of Convenience Fee Percentage", "ans", 1, 5),
        58: Rule("Country Code", "ans", 2, 2, True),
        59: Rule("Merchant Name", "ans", 1, 25, True),
        60: Rule("Merchant City", "ans", 1, 15, True),
        61: Rule("Postal Code", "ans", 1, 10),
        62: Rule("Additional Data Field Template", "T"),
        63: Rule("CRC", "ans", 4, 4, True),
        64: Rule("Merchant Information - Language Template", "T"),
    }
    if n in fixed:
        return fixed[n]
    if 2 <= n <= 25:
        return Rule("Merchant Account Information", "ans")
    if 26 <= n <= 51:
        return Rule("Merchant Account Information template", "T")
    if 65 <= n <= 79:
        return Rule("RFU for EMVCo", "S")
    return Rule("Unreserved Template", "T")  # 80-99


def _account_rule(id_: str) -> Rule:
    """Inside 26-51 and 80-99 (MPM §4.6, §4.9): 00 is the Globally Unique Identifier."""
    if id_ == "00":
        return Rule("Globally Unique Identifier", "ans", 1, 32, True)
    return Rule("context specific data", "S")


def _additional_rule(id_: str) -> Rule:
    """Inside 62 (MPM §4.8, v1.1 Table 4.5)."""
    n = int(id_)
    names = {1: "Bill Number", 2: "Mobile Number", 3: "Store Label", 4: "Loyalty Number",
             5: "Reference Label", 6: "Customer Label", 7: "Terminal Label",
             8: "Purpose of Transaction"}
    if n in names:
        return Rule(names[n], "ans", 1, 25)
    if n == 9:
        return Rule("Additional Consumer Data Request", "ans", 1, 3)
    # IDs 10 and 11 are MPM v1.1 additions (v1.0 had 10-49 RFU). The same IDs and names are
    # in independent v1.1 implementations: LaoitdevOpen/dart-emv-code,
    # lib/src/constants/additional_id.dart (merchantTaxId "10", merchantChannel "11", RFU
    # from "12") and KUPIEACEH/go-qris, internal/config/additional_information_tags.go.
    # Neither states lengths: "up to 20" and "exactly 3" are from the v1.1 table as we read it.
    if n == 10:
        return Rule("Merchant Tax ID", "ans", 1, 20)
    if n == 11:
        return Rule("Merchant Channel", "ans", 3, 3)
    if 50 <= n <= 99:
        return Rule("Payment System specific template", "T")
    return Rule("RFU for EMVCo", "S")  # 00, 12-49


def _language_rule(id_: str) -> Rule:
    """Inside 64 (MPM §4.7): names in the merchant's own language, any character set."""
    if id_ == "00":
        return Rule("Language Preference", "ans", 2, 2, True)
    if id_ == "01":
        return Rule("Merchant Name - Alternate Language", "S", 1, 25, True)
    if id_ == "02":
        return Rule("Merchant City - Alternate Language", "S", 1, 15)
    return Rule("RFU for EMVCo", "S")


def _split(text: str, where: str) -> list[tuple[str, str]]:
    """``ID LL VALUE`` objects of ``text`` in order; lengths count characters."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        if i + 4 > n:
            raise QRFormatError(f"bad length: {where} ends inside an ID/length at {i}")
        id_, ll = text[i : i + 2], text[i + 2 : i + 4]
        if not (id_.isascii() and id_.isdigit()):
            raise QRFormatError(f"bad ID: {where} has ID {id_!r} at {i}; IDs are two digits")
        if not (ll.isascii() and ll.isdigit()):
            raise QRFormatError(f"bad length: ID {id_} in {where} has length {ll!r}")
        length = int(ll)
        if length == 0:
            raise QRFormatError(f"bad length: ID {id_} in {where} has length 00")
        if i + 4 + length > n:
            raise QRFormatError(
                f"bad length: ID {id_} in {where} says {length} characters, {n - i - 4} remain"
            )
        out.append((id_, text[i + 4 : i + 4 + length]))
        i += 4 + length
    return out


def split_ids(text: str) -> list[str]:
    """The top-level IDs of ``text`` if it is a run of ``ID LL VALUE`` objects, else none:
    how :func:`terminal.qr.detect` knows an MPM code whose indicator is out of place."""
    try:
        return [id_ for id_, _ in _split(text, "payload")]
    except QRFormatError:
        return []


def uses_eci(payload: str) -> bool:
    """Whether the QR symbol of ``payload`` carries ECI 000026 (UTF-8): exactly when it has
    a Language Template 64 (MPM §4.12.1.2). Byte mode always (MPM §4.12.1.1)."""
    return "64" in parse(payload).objects


def _check_value(id_: str, value: str, rule: Rule, where: str) -> None:
    if not rule.min_len <= len(value) <= rule.max_len:
        want = str(rule.min_len) if rule.min_len == rule.max_len else \
            f"{rule.min_len}-{rule.max_len}"
        raise QRFormatError(
            f"bad length: {rule.name} (ID {id_} in {where}) is {len(value)} characters, "
            f"must be {want}"
        )
    if rule.fmt == "N" and not _N.fullmatch(value):
        raise QRFormatError(f"bad format: {rule.name} (ID {id_} in {where}) must be digits")
    if rule.fmt == "ans" and not _ANS.fullmatch(value):
        raise QRFormatError(
            f"bad format: {rule.name} (ID {id_} in {where}) has characters outside the "
            "common character set"
        )


def _parse_objects(text: str, rule_of: RuleOf, where: str, depth: int) -> Objects:
    objs: Objects = {}
    for id_, value in _split(text, where):
        if id_ in objs:
            raise QRFormatError(f"duplicate ID: {id_} appears twice in {where}")
        rule = rule_of(id_)
        if rule.fmt == "T":
            sub = _SUB_RULES.get(id_, _account_rule) if depth == 0 else _account_rule
            inner = _parse_objects(value, sub, f"template {id_}", depth + 1)
            _check_mandatory(inner, sub, f"template {id_}")
            objs[id_] = inner
        else:
            _check_value(id_, value, rule, where)
            objs[id_] = value
    return objs


def _check_mandatory(objs: Mapping[str, Value], rule_of: RuleOf, where: str) -> None:
    for id_ in ("00", "01"):
        rule = rule_of(id_)
        if rule.mandatory and id_ not in objs:
            raise QRFormatError(f"missing mandatory: {rule.name} (ID {id_}) in {where}")


_SUB_RULES: dict[str, RuleOf] = {"62": _additional_rule, "64": _language_rule}


def _check_root(objs: Objects, order: list[str]) -> None:
    for id_ in ("00", "52", "53", "58", "59", "60", "63"):
        if id_ not in objs:
            raise QRFormatError(f"missing mandatory: {_root_rule(id_).name} (ID {id_})")
    if order[0] != "00":
        raise QRFormatError("order: the Payload Format Indicator (ID 00) must come first")
    if order[-1] != "63":
        raise QRFormatError("order: the CRC (ID 63) must be the last data object")
    if objs["00"] != "01":
        raise QRFormatError(f"bad value: Payload Format Indicator is {objs['00']!r}, not '01'")
    if not any(2 <= int(k) <= 51 for k in objs):
        raise QRFormatError("missing mandatory: at least one Merchant Account Information "
                            "(IDs 02-51)")
    poi = objs.get("01")
    if poi is not None and poi not in ("11", "12"):
        raise QRFormatError(f"bad value: Point of Initiation Method {poi!r} is not 11 or 12")
    amount = objs.get("54")
    if isinstance(amount, str) and not _AMOUNT.fullmatch(amount):
        raise QRFormatError(f"bad value: Transaction Amount {amount!r} is not a number")
    if isinstance(amount, str) and not Decimal(amount):
        raise QRFormatError(f"bad value: Transaction Amount {amount!r} is zero; when present "
                            "it is more than zero (MPM §4.7.4.1)")
    _check_tip(objs)
    country = objs["58"]
    if isinstance(country, str) and not _UPPER2.fullmatch(country):
        raise QRFormatError(f"bad value: Country Code {country!r} is not ISO 3166-1 alpha-2 "
                            "in upper case")
    _check_language(objs.get("64"))
    extra = objs.get("62")
    if isinstance(extra, dict):
        request = extra.get("09")
        if isinstance(request, str) and (set(request) - set("AME") or
                                         len(set(request)) != len(request)):
            raise QRFormatError(
                f"bad value: Additional Consumer Data Request {request!r} must use A, M, E "
                "once each at most"
            )


def _check_tip(objs: Objects) -> None:
    tip = objs.get("55")
    if tip is not None and tip not in ("01", "02", "03"):
        raise QRFormatError(f"bad value: Tip or Convenience Indicator {tip!r}")
    fixed, pct = objs.get("56"), objs.get("57")
    if (fixed is not None) != (tip == "02"):
        raise QRFormatError("conditional: Value of Convenience Fee Fixed (ID 56) is present "
                            "exactly when the indicator (ID 55) is 02")
    if (pct is not None) != (tip == "03"):
        raise QRFormatError("conditional: Value of Convenience Fee Percentage (ID 57) is "
                            "present exactly when the indicator (ID 55) is 03")
    if isinstance(fixed, str) and not _AMOUNT.fullmatch(fixed):
        raise QRFormatError(f"bad value: convenience fee {fixed!r} is not a number")
    if isinstance(fixed, str) and not Decimal(fixed):
        raise QRFormatError(f"bad value: convenience fee {fixed!r} is zero; a fixed fee is "
                            "more than zero (MPM §4.7.7.1)")
    if isinstance(pct, str):
        if not _PERCENT.fullmatch(pct) or not 0 < Decimal(pct) < 100:
            raise QRFormatError(f"bad value: convenience fee percentage {pct!r} is not "
                                "00.01-99.99")


def _check_language(lang: Value | None) -> None:
    if not isinstance(lang, dict):
        return
    pref = lang["00"]  # mandatory, checked with the template
    if isinstance(pref, str) and not _LETTERS2.fullmatch(pref):
        raise QRFormatError(f"bad value: Language Preference {pref!r} (ID 00 in template 64) "
                            "is not two letters (ISO 639-1)")
    for id_, value in lang.items():
        if isinstance(value, str) and _JAMO.search(value):
            raise QRFormatError(f"bad value: ID {id_} in template 64 has decomposed Hangul "
                                "(conjoining jamo); Hangul is precomposed (MPM §4.5.3.1)")


@dataclass(frozen=True, slots=True)
class Mpm:
    """A parsed merchant-presented code: ``objects`` keyed by two-digit ID, in order."""

    objects: Objects
    payload: str

    def _text(self, *path: str) -> str | None:
        node: Value = self.objects
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node if isinstance(node, str) else None

    @property
    def dynamic(self) -> bool:
        return self._text("01") == "12"

    @property
    def amount(self) -> str | None:
        return self._text("54")

    @property
    def merchant_name(self) -> str:
        return self._text("59") or ""

    @property
    def merchant_city(self) -> str:
        return self._text("60") or ""

    @property
    def currency(self) -> str:
        return self._text("53") or ""

    @property
    def reference(self) -> str | None:
        return self._text("62", "05")


def parse(payload: str) -> Mpm:
    """Parse and check an MPM payload (any, not only ours)."""
    if not isinstance(payload, str):
        raise QRFormatError(f"an MPM payload is text, not {type(payload).__name__}")
    payload = payload.strip()  # a scanner's line end is not part of the code
    if len(payload) > MAX_PAYLOAD:
        raise QRFormatError(f"bad length: payload of {len(payload)} characters; at most "
                            f"{MAX_PAYLOAD}")
    if len(payload) < 8:
        raise QRFormatError("bad length: payload too short to hold any data object")
    top = _split(payload, "payload")
    if top[-1][0] != "63" or len(top[-1][1]) != 4:
        raise QRFormatError("order: the CRC (ID 63, length 04) must be the last data object")
    # the CRC covers everything up to and including "6304", as UTF-8 bytes (MPM §4.7.3)
    expect = crc16_hex(payload[:-4])
    if top[-1][1].upper() != expect:
        raise QRFormatError(f"CRC mismatch: payload says {top[-1][1]!r}, computed {expect}")
    objs = _parse_objects(payload, _root_rule, "payload", 0)
    _check_root(objs, list(objs))
    return Mpm(objs, payload)


def _encode_objects(objs: Mapping[str, Value]) -> str:
    out = []
    for id_, value in objs.items():
        text = _encode_objects(value) if isinstance(value, Mapping) else value
        if not (len(id_) == 2 and id_.isdigit()):
            raise QRFormatError(f"bad ID: {id_!r} is not two digits")
        if not 1 <= len(text) <= 99:
            raise QRFormatError(f"bad length: ID {id_} would be {len(text)} characters")
        out.append(f"{id_}{len(text):02d}{text}")
    return "".join(out)


def encode(objects: Mapping[str, Value]) -> str:
    """Encode objects (without ID 63) in order and append the CRC; the result is checked."""
    body = _encode_objects({k: v for k, v in objects.items() if k != "63"}) + "6304"
    payload = body + crc16_hex(body)
    parse(payload)
    return payload


def build_dynamic(amount: int, *, merchant_name: str, city: str, reference: str,
                  merchant_id: str, gui: str = "KR.LOCALPAY", mcc: str = "5499",
                  currency: str = "410", country: str = "KR", terminal_label: str = "",
                  name_local: str = "", city_local: str = "", language: str = "KO") -> str:
    """The till's dynamic code for one sale of ``amount`` won (Point of Initiation 12).

    ``merchant_name`` and ``city`` must be in the common character set (MPM §4.7); the
    names in Korean go into the Language Template 64 as ``name_local`` / ``city_local``.
    """
    if type(amount) is not int or amount <= 0:  # a bool is not money
        raise QRFormatError(f"bad value: amount {amount!r} must be positive integer won")
    objs: Objects = {
        "00": "01",
        "01": "12",
        "26": {"00": gui, "01": merchant_id},
        "52": mcc,
        "53": currency,
        "54": str(amount),
        "58": country,
        "59": merchant_name,
        "60": city,
    }
    extra: Objects = {"05": reference}
    if terminal_label:
        extra["07"] = terminal_label
    objs["62"] = extra
    if city_local and not name_local:
        raise QRFormatError("missing mandatory: a city in the local language (ID 02 in "
                            "template 64) needs the merchant name in it (ID 01)")
    if name_local:
        lang: Objects = {"00": language, "01": name_local}
        if city_local:
            lang["02"] = city_local
        objs["64"] = lang
    return encode(objs)
