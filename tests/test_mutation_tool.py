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

pytest_plugins = ["pytester"]

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
        for test in spec["tests"] + spec.get("deselect", []):
            # a file, or one test of it
            path, _, function = test.partition("::")
            assert (ROOT / path).is_file(), (name, test)
            assert not function or f"def {function}(" in (ROOT / path).read_text(), (name, test)
        assert set(spec.get("stores", [])) <= {"sqlite", "postgresql"}, name


def test_a_score_is_recorded_only_upwards() -> None:
    recorded = {"central/store.py": 94.5, "sync/merkle.py": 100.0, "terminal/core.py": 100.0}
    measured = {"central/store.py": 96.1, "terminal/core.py": 97.3, "central/payouts.py": 91.0}
    assert mutation.ratchet(recorded, measured) == {
        "central/store.py": 96.1,        # better: recorded
        "sync/merkle.py": 100.0,         # not run: kept
        "terminal/core.py": 100.0,       # worse: kept (the run fails on it instead)
        "central/payouts.py": 91.0}      # new


_STORE_TESTS = """
import pytest

@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request):
    return request.param

@pytest.fixture(params=["postgresql", "sqlite"])
def other(request):
    return request.param

def test_on_each_store(store_url):
    pass

def test_on_each_store_and_kind(store_url, other):
    pass

def test_postgresql_named_but_not_on_a_store():
    pass

def test_of_another_fixture(other):
    pass
"""


def _run_names(pytester: pytest.Pytester, stores: list[str]) -> set[str]:
    pytester.makepyfile(test_stores=_STORE_TESTS)
    result = pytester.runpytest_inprocess("-v", "-p", "no:cacheprovider",
                                          plugins=[mutation._area_plugin(stores)])
    return {line.split("::", 1)[1].split(" ", 1)[0] for line in result.outlines
            if " PASSED" in line}


def test_an_area_on_sqlite_runs_the_store_tests_on_sqlite_only(pytester: pytest.Pytester) -> None:
    # only store_url's parameter decides; names and other fixtures' parameters do not
    assert _run_names(pytester, ["sqlite"]) == {
        "test_on_each_store[sqlite]",
        "test_on_each_store_and_kind[sqlite-postgresql]",
        "test_on_each_store_and_kind[sqlite-sqlite]",
        "test_postgresql_named_but_not_on_a_store",
        "test_of_another_fixture[postgresql]", "test_of_another_fixture[sqlite]"}


def test_an_area_naming_no_stores_runs_both(pytester: pytest.Pytester) -> None:
    assert len(_run_names(pytester, [])) == 9


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


def test_an_area_copies_the_snapshot_and_imports_all_but_localpay_from_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "tree"
    for package in ("central", "localpay", "sync", "tests", "tools"):
        (tree / package).mkdir(parents=True)
        (tree / package / "__init__.py").write_text("")
    (tree / "setup.cfg").write_text("")
    (tree / "pyproject.toml").write_text("[project]\nname = \"x\"\n")
    monkeypatch.setattr(mutation, "WORK", tmp_path / "work")
    work = mutation.prepare("store", {"mutate": ["central/store.py"],
                                      "tests": ["tests/test_store_edges.py"],
                                      "deselect": ["tests/test_x.py::test_y"]}, tree)
    assert work == tmp_path / "work" / "store"
    assert (work / "localpay" / "__init__.py").is_file()
    settings = tomllib.loads((work / "pyproject.toml").read_text())["tool"]["mutmut"]
    assert settings["source_paths"] == ["central/"]
    assert settings["only_mutate"] == ["central/store.py"]
    # the mutated package is mutmut's own copy; localpay stays the checkout's (the test
    # stacks' `python -m central` is started with it as PYTHONPATH)
    assert settings["also_copy"] == ["sync/", "tools/"]
    assert settings["pytest_add_cli_args_test_selection"] == ["tests/test_store_edges.py"]
    assert settings["pytest_add_cli_args"][-2:] == ["--deselect", "tests/test_x.py::test_y"]
    assert settings["process_isolation"] == "fork"       # the CPU limit is set on ForkRunner


def test_a_loop_gets_a_few_seconds_of_cpu_more_than_its_tests() -> None:
    assert mutation.cpu_limit(0.0) == 4
    assert mutation.cpu_limit(0.78) == 6                  # a Merkle test: was 53 s of wall
    assert mutation.cpu_limit(17.8) == 40
