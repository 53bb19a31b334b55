"""A service for the tests of money at central: its merchants registered, and the books
checked to balance when the test is done with it; the shops of the spending tests; the one
shop and two citizens of the waiting-refund tests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from central import accounts, books
from central.merchants import Merchant, Registry
from central.service import CentralLog
from firmware_cfg.config import brn_check_digit
from tests.incentives_data import Chain, chain
from tests.test_settlement import brn


def shop_brn(first9: str) -> str:
    """A business registration number ``XXX-XX-XXXXX`` with its check digit."""
    return f"{first9[:3]}-{first9[3:5]}-{first9[5:]}{brn_check_digit(first9)}"


#: the shops of the spending tests: a local-food store, a large mart, a cafe
LOCAL = Merchant("M-LOCAL", "Ilsan Farm Store", shop_brn("134867268"), "ksic:47121",
                 region="ilsan-dong")
MART = Merchant("M-MART", "Goyang Big Mart", shop_brn("220811234"), "ksic:47111",
                region="ilsan-dong", memberships=("large-mart",))
CAFE = Merchant("M-CAFE", "Hwajeong Cafe", shop_brn("105871111"), "ksic:56221",
                region="hwajeong-dong")


def balanced_world(service: CentralLog, merchants: Iterable[Merchant]) -> Iterator[CentralLog]:
    """``service`` with ``merchants`` registered, for a fixture to ``yield from``; after the
    test the books must balance, and the store is closed either way."""
    for merchant in merchants:
        Registry(service.store).add(merchant)
    yield service
    try:
        assert books.check(service.store).balanced
    finally:
        service.store.close()


def shop_lf01(svc: CentralLog) -> Chain:
    """Shop LF01 (bank account and all) with its till T-LF01, whose chain is returned;
    citizens A (``card-a``) and B (``card-b``) linked; the outside bank's account open for
    the test to fund their pockets from."""
    registry = Registry(svc.store)
    registry.add(Merchant("LF01", "Shop LF01", brn(1), "ksic:47211", bank_code="011",
                          account_no="301-0000-0001-11", account_holder="Owner LF01"))
    till = chain(svc, "T-LF01")
    registry.assign_terminal("T-LF01", "LF01")
    with svc.store.tx() as tx:
        accounts.link(tx, "A", "card-a")
        accounts.link(tx, "B", "card-b")
        books.open_account(tx, books.BANK_OUTSIDE)
    return till
