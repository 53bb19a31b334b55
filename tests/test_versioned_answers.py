"""Answers a terminal pages through by version (``GET /v1/balances``, ``GET /v1/points``): a
version larger than one answer's limit must still reach the terminal whole. It did not: the
first answer carried ``limit`` cards and the version, and the terminal, asking again from that
version, never heard of the rest (found by a mutation survivor of ``balances_delta``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from central.service import CentralLog
from tests.incentives_data import open_service
from tests.pg_fixtures import pg_cluster, store_url  # noqa: F401

A, B, C = "a1" * 32, "b2" * 32, "c3" * 32


@pytest.fixture
def svc(store_url: str) -> Iterator[CentralLog]:  # noqa: F811
    log = open_service(store_url, followers=[])
    yield log
    log.store.close()


def test_every_card_of_a_version_larger_than_the_limit_reaches_the_terminal(
        svc: CentralLog) -> None:
    """One balance snapshot of more cards than an answer holds (a city's 100,000 cards
    against the default limit of 50,000): a terminal that keeps asking from the version it
    was told must in the end hold every card of the snapshot."""
    snapshot = {A: 1, B: 2, C: 3}
    version = svc.set_balances(snapshot)
    held: dict[str, int] = {}
    since = 0
    for _ in range(len(snapshot) + 1):  # each answer carries at least one card
        answer = svc.balances_delta(since, limit=2)
        held.update(answer["balances"])
        if not answer["balances"]:
            break
        since = answer["version"]
    assert since == version
    assert held == snapshot


def test_every_card_of_a_points_version_larger_than_the_limit_reaches_the_terminal(
        store_url: str) -> None:  # noqa: F811
    """The same for this week's bus points (``GET /v1/points``): one batch credits two
    cards in one version; with answers of one card, both must reach the terminal."""
    from central.incentives import points_delta
    from tests.incentives_data import chain, seoul_ms

    svc = open_service(store_url)  # crediting after every batch
    try:
        bus = chain(svc, "BUS-1")
        now = seoul_ms(2025, 3, 12, 9)
        svc.ingest("BUS-1", [bus.tap(A, seoul_ms(2025, 3, 10, 8), fare=1_000),
                             bus.tap(B, seoul_ms(2025, 3, 10, 8), fare=1_100)])  # one version
        held: dict[str, list[Any]] = {}
        since = 0
        for _ in range(3):
            answer = points_delta(svc.store, since, now, limit=1)
            held.update(answer["points"])
            if not answer["points"]:
                break
            since = answer["version"]
    finally:
        svc.store.close()
    # each adult's first weekday ride earns its fare (the default rules)
    assert held == {A: [1_000, 1, ""], B: [1_100, 1, ""]}
