"""The world of the points payout tests: a service on the store under test, crediting and
posting as batches arrive, with the local-food shop and the mart of the spending tests
registered (:func:`tests.books_world.balanced_world`)."""

from __future__ import annotations

from collections.abc import Iterator

from central.incentives import IncentiveCrediter
from central.service import CentralLog
from central.spending import SpendingPoster
from tests.books_world import LOCAL, MART, balanced_world
from tests.incentives_data import open_service, seoul_ms

A_CARD, B_CARD, LOOSE = "a1" * 32, "b2" * 32, "c3" * 32
BUDGET = "programme:incentives:points"
#: a time in November 2026: October has ended in Seoul
NOV_2 = seoul_ms(2026, 11, 2, 9)


def payout_world(store_url: str) -> Iterator[CentralLog]:
    """The service (a fixture's body: ``yield from payout_world(store_url)``)."""
    service = open_service(store_url, followers=[IncentiveCrediter(), SpendingPoster()])
    yield from balanced_world(service, (LOCAL, MART))
