"""Fuzz the pocket rules parser: any text gives PocketRules or ConfigError.

Whatever parses must be usable: one cash pocket, unique ids, and a split over every pocket
that approves with parts summing to the amount or declines with a reason.

The first byte steers the input: with bit 0 set, a valid cash pocket comes first, so the
fuzzer gets past the "no cash pocket" refusal; with bit 1 set the rest starts inside a
``[[pocket]]`` table, so it reaches the per-pocket checks sooner.

Run: ``python tools/fuzz_pocket_rules.py -max_total_time=60`` (libFuzzer options, via atheris).
"""

from __future__ import annotations

import sys
from datetime import date

import atheris

with atheris.instrument_imports():
    from localpay import pockets
    from localpay.errors import ConfigError

CASH = '[[pocket]]\nid = "cash"\nkind = "cash"\n'
DAY = date(2026, 5, 20)
MERCHANTS = [pockets.MerchantFacts("m1", "ksic:47121", "goyang"),
             pockets.MerchantFacts("m2", "mcc:5411", "gimpo", frozenset({"large-mart"}))]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    steer, rest = data[0], data[1:]
    text = rest.decode("utf-8", errors="replace")
    if steer & 2:
        text = "[[pocket]]\n" + text
    if steer & 1:
        text = CASH + text
    try:
        rules = pockets.parse_rules(text, "fuzz")
    except ConfigError:
        return
    if not isinstance(rules, pockets.PocketRules):
        raise TypeError("parse_rules must return PocketRules")
    ids = [rule.pocket for rule in rules]
    if len(set(ids)) != len(ids) or [r.kind for r in rules].count("cash") != 1:
        raise AssertionError(f"inconsistent rules were accepted: {rules!r}")
    balances = [pockets.PocketBalance(pocket, 1000 + i) for i, pocket in enumerate(ids)]
    for merchant in MERCHANTS:
        result = pockets.split(1500, balances, rules, merchant, DAY)
        if result.approved:
            if sum(won for _, won in result.parts) != 1500:
                raise AssertionError(f"parts do not sum to the amount: {result!r}")
        elif result.parts or result.reason is None:
            raise AssertionError(f"a decline must have a reason and no parts: {result!r}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
