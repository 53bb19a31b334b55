"""The mutation run's own judgment (tools/mutation.py): what it counts as killed, which
survivors an equivalence entry excuses, and the areas file naming things that exist. The
run itself is `make mutation`, outside the suite."""

from __future__ import annotations

import tomllib
from collections import Counter
from pathlib import Path

import pytest

from tools import mutation
from tools.mutation import Equivalent, Mutant

ROOT = Path(__file__).resolve().parents[1]


def test_function_names_read_from_mutant_names() -> None:
    method = Mutant("offline_ledger.ledger.xǁLedgerǁverify__mutmut_12", "m.py", "survived")
    private = Mutant("offline_ledger.ledger.x__wrap__mutmut_3", "m.py", "survived")
    plain = Mutant("sync.merkle.x_verify_consistency__mutmut_71", "m.py", "survived")
    assert (method.function, private.function, plain.function) == (
        "Ledger.verify", "_wrap", "verify_consistency")


def _survivor(before: str, after: str, module: str = "terminal/risk.py",
              name: str = "terminal.risk.xǁRiskǁcheck__mutmut_1") -> Mutant:
    return Mutant(name, module, "survived", [before], [after])


def test_an_equivalent_excuses_only_the_mutant_it_describes() -> None:
    eq = Equivalent("terminal/risk.py", "Risk.check", "if  a > b:", "if a >= b:", "why")
    assert eq.matches(_survivor("    if a > b:", "    if a >= b:"))  # whitespace aside
    assert not eq.matches(_survivor("    if a > b:", "    if a < b:"))
    assert not eq.matches(_survivor("    if a > b:", "    if a >= b:", module="terminal/core.py"))
    assert not eq.matches(_survivor("    if a > b:", "    if a >= b:",
                                    name="terminal.risk.xǁRiskǁother__mutmut_1"))


def test_judgment_counts_and_scores() -> None:
    mutants = [
        Mutant("terminal.risk.x_f__mutmut_1", "terminal/risk.py", "killed"),
        Mutant("terminal.risk.x_f__mutmut_2", "terminal/risk.py", "timeout"),
        Mutant("terminal.risk.x_f__mutmut_3", "terminal/risk.py", "survived", ["a = 1"], ["a = 2"]),
        Mutant("terminal.risk.x_f__mutmut_4", "terminal/risk.py", "no tests", ["b = 1"], ["b = 2"]),
        Mutant("terminal.risk.x_f__mutmut_5", "terminal/risk.py", "survived", ["c = 1"], ["c = 2"]),
    ]
    eq = Equivalent("terminal/risk.py", "f", "c = 1", "c = 2", "c is never read")
    counts = mutation.judge(mutants, [eq])
    assert counts["terminal/risk.py"] == Counter(
        {"killed": 2, "survived": 1, "no tests": 1, "equivalent": 1})
    # killed over everything but the equivalent: 2 of 4
    assert mutation.score(counts["terminal/risk.py"]) == pytest.approx(100 * 2 / 4)
    assert eq.used == 1 and mutants[4].equivalent == "c is never read"


def test_killed_mutants_are_never_excused() -> None:
    killed = Mutant("terminal.risk.x_f__mutmut_1", "terminal/risk.py", "killed", ["a"], ["b"])
    eq = Equivalent("terminal/risk.py", "f", "a", "b", "reason")
    assert mutation.judge([killed], [eq])["terminal/risk.py"] == Counter({"killed": 1})
    assert eq.used == 0


def test_the_areas_name_modules_and_tests_that_exist() -> None:
    with open(ROOT / "mutation" / "areas.toml", "rb") as f:
        areas = tomllib.load(f)["areas"]
    for name, spec in areas.items():
        for pattern in spec["mutate"]:
            assert list(ROOT.glob(pattern)), (name, pattern)
        for test in spec["tests"]:
            assert (ROOT / test).is_file(), (name, test)
        for test in spec.get("deselect", []):
            path, _, function = test.partition("::")
            assert f"def {function}(" in (ROOT / path).read_text(), (name, test)


def test_every_recorded_equivalent_gives_its_reason() -> None:
    # the loader refuses an entry without one; the file as committed must load
    for eq in mutation.load_equivalents():
        assert eq.reason.strip() and eq.module and eq.function


def test_an_equivalent_may_span_lines() -> None:
    two = Mutant("offline_ledger.ledger.xǁLedgerǁverify__mutmut_99", "offline_ledger/ledger.py",
                 "survived", ["    except sqlite3.Error as err:", "        raise X from err"],
                 ["    except sqlite3.Error as err:", "        raise None from err"])
    eq = Equivalent("offline_ledger/ledger.py", "Ledger.verify",
                    "except sqlite3.Error as err:\n    raise X from err",
                    "except sqlite3.Error as err:\n    raise None from err", "unreachable")
    assert eq.matches(two)
    assert not eq.matches(Mutant(two.name, two.module, "survived", two.removed[:1], two.added[:1]))
