"""Hypothesis strategies for the card and QR codecs: BER-TLV, MPM, CPM, wallet codes."""

from __future__ import annotations

import string

from hypothesis import strategies as st

from terminal.tlv import Tlv

ANS = string.ascii_letters + string.digits + " $%*+-./:@#&!?=_"

# -- BER-TLV -------------------------------------------------------------------------------


@st.composite
def tags(draw: st.DrawFn, constructed: bool) -> int:
    cls = draw(st.sampled_from([0x00, 0x40, 0x80, 0xC0]))
    form = 0x20 if constructed else 0x00
    if draw(st.booleans()):
        low = draw(st.integers(0, 0x1E))
        return cls | form | low
    # multi-byte: first byte xx1F, then 0-2 bytes with b8 set, then one without
    first = cls | form | 0x1F
    middle = draw(st.lists(st.integers(0x80, 0xFF), max_size=2))
    last = draw(st.integers(0x00, 0x7F))
    return int.from_bytes(bytes([first, *middle, last]), "big")


primitive_tlv = st.builds(
    lambda tag, value: Tlv.build(tag, value), tags(False), st.binary(max_size=300))


def tlv_lists(max_leaves: int = 12) -> st.SearchStrategy[list[Tlv]]:
    objs = st.recursive(
        primitive_tlv,
        lambda kids: st.builds(lambda tag, ch: Tlv.build(tag, ch), tags(True),
                               st.lists(kids, max_size=4)),
        max_leaves=max_leaves,
    )
    return st.lists(objs, max_size=5)


# -- MPM ------------------------------------------------------------------------------------


def ans(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.text(ANS, min_size=lo, max_size=hi)


def digits(n: int) -> st.SearchStrategy[str]:
    return st.text(string.digits, min_size=n, max_size=n)


# Hangul conjoining jamo are refused in template 64 (MPM §4.5.3.1: Hangul is precomposed)
_JAMO = "".join(chr(c) for lo, hi in ((0x1100, 0x11FF), (0xA960, 0xA97F), (0xD7B0, 0xD7FF))
                for c in range(lo, hi + 1))
local_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters=_JAMO),
    min_size=1, max_size=15)


@st.composite
def mpm_objects(draw: st.DrawFn) -> dict[str, object]:
    objs: dict[str, object] = {"00": "01"}
    if draw(st.booleans()):
        objs["01"] = draw(st.sampled_from(["11", "12"]))
    account_ids = draw(st.lists(st.integers(2, 51), min_size=1, max_size=2, unique=True))
    for n in sorted(account_ids):
        if n <= 25:
            objs[f"{n:02d}"] = draw(ans(1, 20))
        else:
            sub: dict[str, str] = {"00": draw(ans(1, 32))}
            for k in draw(st.lists(st.integers(1, 99), max_size=2, unique=True)):
                sub[f"{k:02d}"] = draw(ans(1, 12))
            objs[f"{n:02d}"] = sub
    objs["52"] = draw(digits(4))
    objs["53"] = draw(digits(3))
    if draw(st.booleans()):
        objs["54"] = str(draw(st.integers(1, 10**9)))
    objs["58"] = draw(st.text(string.ascii_uppercase, min_size=2, max_size=2))
    objs["59"] = draw(ans(1, 25))
    objs["60"] = draw(ans(1, 15))
    if draw(st.booleans()):
        extra: dict[str, str] = {}
        for k in draw(st.lists(st.integers(1, 8), min_size=1, max_size=3, unique=True)):
            extra[f"{k:02d}"] = draw(ans(1, 20))
        objs["62"] = extra
    if draw(st.booleans()):
        lang = {"00": draw(st.text(string.ascii_uppercase, min_size=2, max_size=2)),
                "01": draw(local_text)}
        if draw(st.booleans()):
            lang["02"] = draw(local_text)
        objs["64"] = lang
    return objs


# -- CPM ------------------------------------------------------------------------------------


def pans() -> st.SearchStrategy[str]:
    return st.text(string.digits, min_size=12, max_size=19)


@st.composite
def cpm_objects(draw: st.DrawFn) -> list[Tlv]:
    objs = [Tlv.build(0x85, b"CPV01")]
    for _ in range(draw(st.integers(1, 2))):
        app = [Tlv.build(0x4F, draw(st.binary(min_size=5, max_size=16)))]
        if draw(st.booleans()):
            app.append(Tlv.build(0x50, draw(ans(1, 16)).encode()))
        pan = draw(pans())
        app.append(Tlv.build(0x5A, bytes.fromhex(pan + ("F" if len(pan) % 2 else ""))))
        objs.append(Tlv.build(0x61, app))
    if draw(st.booleans()):
        transparent = [Tlv.build(0x9F36, draw(st.binary(min_size=2, max_size=2))),
                       Tlv.build(0x9F26, draw(st.binary(min_size=8, max_size=8)))]
        objs.append(Tlv.build(0x62, [Tlv.build(0x64, transparent)]))
    return objs


# -- wallet codes ---------------------------------------------------------------------------

wallet_ids = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=32)
