"""Hypothesis strategies for the sync protocol's codecs."""

from __future__ import annotations

from hypothesis import strategies as st

from offline_ledger.encoding import KINDS, EntryFields

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
_u64 = st.integers(0, 2**64 - 1)
_i64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def entry_fields(draw: st.DrawFn) -> EntryFields:
    """Any entry the canonical encoding can hold."""
    return EntryFields(
        seq=draw(_u64), kind=draw(st.sampled_from(KINDS)), terminal_id=draw(_text),
        card_token=draw(_text), amount=draw(_i64), ref_seq=draw(_u64), place=draw(_text),
        wall_ms=draw(_i64), mono=draw(_u64), detail=draw(_text),
        prev_hash=draw(st.binary(min_size=32, max_size=32)),
    )


leaf_lists = st.lists(st.binary(max_size=16), min_size=1, max_size=70)
