"""Hypothesis strategies for the campaign QR code (``terminal.qr.campaign``)."""

from __future__ import annotations

from hypothesis import strategies as st

from terminal.qr.campaign import MAX_LIFETIME_S, CampaignCode

ids = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-",
              min_size=1, max_size=32)


@st.composite
def campaign_codes(draw: st.DrawFn) -> CampaignCode:
    start = draw(st.integers(0, 2**32 - 2 - MAX_LIFETIME_S))
    life = draw(st.integers(1, MAX_LIFETIME_S))
    return CampaignCode(draw(ids), draw(ids), draw(st.integers(1, 2**32 - 1)), start,
                        start + life)
