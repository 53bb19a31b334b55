"""Mutation testing of the money paths: ``make mutation`` (or ``python tools/mutation.py``).

mutmut makes one-line changes (mutants) in the modules listed in ``mutation/areas.toml`` and
runs, for each, the area's tests that executed the changed function. A mutant the tests do
not notice is a behaviour nothing holds down. This script runs each area in its own copy of
the tree, then judges the results:

- a surviving mutant that is equivalent (no test could ever tell it from the original) is
  written down in ``mutation/equivalents/<area>.toml`` with the reason (the module, the
  function, the line before and after the change), and not counted or reported again;
- the score of a module is killed / (all - equivalent), timeouts counting as killed;
- ``mutation/scores.toml`` holds the recorded score of each module: a run that falls below
  it fails (a ratchet), and ``--record`` writes the new scores after a better run.

Every survivor, with its diff, is listed in ``build/mutation/report.md``.

The run tests one snapshot of the tree, taken when it starts (``build/mutation/tree``), so
edits made beside an hour-long run do not reach it half way: every package, not only the
mutated ones, is copied into each area, and the snapshot is the ``PYTHONPATH`` of the run
(the processes that tests start import its unmutated code).

An area may name the stores its tests run on (``stores = ["sqlite"]``): the tests of the
``store_url`` fixture then run on those only. PostgreSQL costs five times what SQLite does
per test (a schema each), and only code with a branch of its own for PostgreSQL
(``central/store.py``, ``central/books.py``) needs both.

A mutant written down as equivalent is not run again: mutmut is started in-process here, and
the mutants it would test are filtered through the equivalents first (the same match as the
judgment: module, function, the line before and after). Equivalents survive by definition,
so each would otherwise cost a full run of every test of its function, every time.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "mutation"
# Two runs at once (two engineers, two areas) each need their own work folder: the snapshot
# of the tree is replaced when a run starts.
WORK = Path(os.environ.get("LOCALPAY_MUTATION_WORK", ROOT / "build" / "mutation")).resolve()
TARGET = 90.0
# mutmut's statuses that count as the tests noticing the mutant.
DETECTED = {"killed", "timeout", "segfault", "caught by type check"}
# A mutant that loops is caught by a limit on its CPU time: (its tests' clean time +
# CPU_CONSTANT) * CPU_MULTIPLIER seconds (mutmut's own is twice its wall limit). A loop costs
# all of it, so it is tight: mutmut's default wall limit (15 times the clean time) and the
# earlier (t + 10 s) * 5 spent most of the sync area's run on 19 loops, 53 s each. CPU time,
# unlike wall time, does not grow when other work shares the machine, so a slow survivor is
# not mistaken for a loop; the clean time counts each test's setup and teardown too (mutmut's
# counts only the test's body, which leaves out the PostgreSQL schema a store test makes),
# and the constant covers pytest's collection in each mutant's process. The wall limit stays
# wide, for a mutant that hangs without using CPU.
CPU_MULTIPLIER = 2.0
CPU_CONSTANT = 2.0
WALL_MULTIPLIER = 6.0
WALL_CONSTANT = 10.0
# What the run copies into its snapshot: the packages and the files the tests read.
TREE_FILES = ("setup.cfg", "pyproject.toml")


@dataclass
class Mutant:
    name: str
    module: str
    status: str
    removed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    equivalent: str = ""

    @property
    def function(self) -> str:
        """``Ledger.verify`` for ``offline_ledger.ledger.xǁLedgerǁverify__mutmut_12``."""
        mangled = self.name.rsplit("__mutmut_", 1)[0].rsplit(".", 1)[-1]
        if mangled.startswith("xǁ"):
            return ".".join(mangled[2:].split("ǁ"))
        return mangled[2:]


@dataclass
class Equivalent:
    module: str
    function: str
    before: str
    after: str
    reason: str
    used: int = 0

    def matches(self, m: Mutant) -> bool:
        return (m.module == self.module and m.function == self.function
                and _norm(m.removed) == _norm([self.before])
                and _norm(m.added) == _norm([self.after]))


def _norm(lines: list[str]) -> str:
    """Whitespace aside; an entry may hold several lines (a multi-line TOML string)."""
    split = [part for line in lines for part in line.split("\n")]
    return "\n".join(" ".join(part.split()) for part in split if part.strip())


def load_areas() -> dict[str, dict[str, list[str]]]:
    with open(CONFIG / "areas.toml", "rb") as f:
        areas: dict[str, dict[str, list[str]]] = tomllib.load(f)["areas"]
    return areas


def packages(root: Path) -> list[str]:
    """The top-level folders of ``root`` that are Python packages (tests and tools too)."""
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and (p / "__init__.py").is_file())


def load_equivalents() -> list[Equivalent]:
    """Every ``[[equivalent]]`` of ``mutation/equivalents/*.toml`` (a file per area)."""
    out = []
    for path in sorted((CONFIG / "equivalents").glob("*.toml")):
        with open(path, "rb") as f:
            rows = tomllib.load(f).get("equivalent", [])
        for i, row in enumerate(rows, 1):
            missing = {"module", "function", "before", "after", "reason"} - set(row)
            if missing or not str(row.get("reason", "")).strip():
                lacks = sorted(missing) or ["a reason"]
                raise SystemExit(f"{path}: equivalent #{i} lacks {', '.join(lacks)}")
            out.append(Equivalent(str(row["module"]), str(row["function"]),
                                  str(row["before"]), str(row["after"]), str(row["reason"])))
    return out


def load_scores() -> dict[str, float]:
    path = CONFIG / "scores.toml"
    if not path.exists():
        return {}
    with open(path, "rb") as f:
        return {k: float(v) for k, v in tomllib.load(f).get("scores", {}).items()}


def write_scores(scores: dict[str, float]) -> None:
    lines = ["# The mutation score of each money-path module (per cent of non-equivalent mutants",
             "# killed), written by `tools/mutation.py --record`. A run below these fails.",
             "[scores]"]
    lines += [f'"{k}" = {v:.1f}' for k, v in sorted(scores.items())]
    (CONFIG / "scores.toml").write_text("\n".join(lines) + "\n")


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def snapshot() -> Path:
    """The tree as it is now, which every area of this run copies (``build/mutation/tree``)."""
    tree = WORK / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".mypy_cache")
    for top in packages(ROOT):
        shutil.copytree(ROOT / top, tree / top, ignore=ignore)
    for name in TREE_FILES:
        shutil.copy2(ROOT / name, tree / name)
    return tree


def prepare(area: str, spec: dict[str, Any], tree: Path) -> Path:
    """A fresh copy of the snapshot for the area, with mutmut's settings for it."""
    work = WORK / area
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(tree, work)
    tops = sorted({pattern.split("/", 1)[0] for pattern in spec["mutate"]})
    # the other packages go into mutmut's copy too (mutants/ comes first on sys.path), so the
    # tests import the snapshot, not the tree others are editing; tools/: the fuzz harnesses
    # the parser tests run. All but localpay/, which comes from the snapshot itself (on
    # PYTHONPATH, see main): the test stacks start `python -m central` with localpay's
    # checkout as PYTHONPATH, and that process must import the snapshot's unmutated code, not
    # mutmut's copy (whose trampolines need mutmut's state, which only this process has)
    others = [top + "/" for top in packages(tree)
              if top not in tops and top not in ("tests", "localpay")]
    pytest_args = ["-p", "no:cacheprovider", "-q"]
    mypy = ["mypy", "--output", "json", "--no-warn-unused-ignores", *tops]
    for test in spec.get("deselect", []):
        pytest_args += ["--deselect", test]
    pyproject = (tree / "pyproject.toml").read_text()
    pyproject += (
        "\n[tool.mutmut]\n"
        f"source_paths = {_toml_list([t + '/' for t in tops])}\n"
        f"only_mutate = {_toml_list(spec['mutate'])}\n"
        f"pytest_add_cli_args = {_toml_list(pytest_args)}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(spec['tests'])}\n"
        f"also_copy = {_toml_list(others)}\n"
        # workers forked from mutmut's process (its default), whose CPU limit _mutmut_here sets;
        # the wall limit:
        'process_isolation = "fork"\n'
        f"timeout_multiplier = {WALL_MULTIPLIER}\ntimeout_constant = {WALL_CONSTANT}\n"
        # a mutant mypy rejects cannot land (make test runs mypy first): counted as caught
        # without running its tests; the trampolines' own ignores are not ours to warn about
        f"type_check_command = {_toml_list(mypy)}\n"
    )
    (work / "pyproject.toml").write_text(pyproject)
    return work


def run_mutmut(work: Path, jobs: int, names: list[str], env: dict[str, str],
               stores: list[str]) -> None:
    log = work / "mutmut.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "_mutmut", ",".join(stores), "run",
           "--max-children", str(jobs), *names]
    started = time.monotonic()
    last_print = 0.0
    status = ""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        buf = b""
        while chunk := proc.stdout.read1(4096):  # type: ignore[attr-defined]
            out.write(chunk)
            buf = (buf + chunk)[-4096:]
            found = re.findall(rb"(\d+/\d+ [^\r\n\x1b]*)", buf)
            if found:
                status = found[-1].decode("utf-8", "replace").strip()
            if time.monotonic() - last_print > 30 and status:
                last_print = time.monotonic()
                print(f"  {work.name}: {status}  ({time.monotonic() - started:.0f} s)", flush=True)
        rc = proc.wait()
    if rc != 0:
        tail = log.read_bytes()[-3000:].decode("utf-8", "replace")
        raise SystemExit(f"mutmut failed in {work} (exit {rc}); its log ends:\n{tail}")
    print(f"  {work.name}: {status}  done in {time.monotonic() - started:.0f} s", flush=True)


def _diff(name: str, path: Path | str) -> tuple[list[str], list[str]]:
    """The lines a mutant removes and adds (mutmut's own diff, inside an area's copy)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(name, path=path).splitlines()[2:]  # after ---/+++
    return ([d[1:] for d in diff if d.startswith("-")],
            [d[1:] for d in diff if d.startswith("+")])


def cpu_limit(clean_seconds: float) -> int:
    """The CPU seconds a mutant whose tests take ``clean_seconds`` may use."""
    return math.ceil((clean_seconds + CPU_CONSTANT) * CPU_MULTIPLIER)


def _area_plugin(stores: list[str]) -> Any:
    """The pytest plugin of every test session mutmut starts in an area."""
    import pytest

    class AreaPlugin:
        @pytest.hookimpl(tryfirst=True)
        def pytest_collection_modifyitems(self, config: Any, items: list[Any]) -> None:
            """Only the area's stores: ``store_url``'s other parameters are deselected."""
            if not stores:
                return
            keep: list[Any] = []
            drop: list[Any] = []
            for item in items:
                params = getattr(getattr(item, "callspec", None), "params", {})
                on = params.get("store_url")
                (drop if on is not None and on not in stores else keep).append(item)
            if drop:
                config.hook.pytest_deselected(items=drop)
                items[:] = keep

        def pytest_runtest_logreport(self, report: Any) -> None:
            """In mutmut's statistics run, a test's setup and teardown count in its time."""
            if report.when != "call" and os.environ.get("MUTANT_UNDER_TEST") == "stats":
                from mutmut.state import state

                durations = state().duration_by_test
                durations[report.nodeid] = durations.get(report.nodeid, 0.0) + report.duration

    return AreaPlugin()


def _mutmut_here(stores: list[str], args: list[str]) -> int:
    """Inside an area's copy: ``mutmut <args>``, leaving the written-down equivalents unrun.

    They stay "not checked" in mutmut's results; the judgment then matches them as equivalent.
    """
    import mutmut.__main__ as mm
    from mutmut.runners.harness import PytestRunner
    from mutmut.workers.isolation import ForkRunner

    plugin = _area_plugin(stores)
    execute = PytestRunner.execute_pytest

    def with_plugin(self: PytestRunner, params: list[str], **kwargs: Any) -> int:
        kwargs["plugins"] = [*kwargs.get("plugins", []), plugin]
        return execute(self, params, **kwargs)

    PytestRunner.execute_pytest = with_plugin  # type: ignore[method-assign]
    submit = ForkRunner.submit

    def cpu_limited(self: ForkRunner, mutant_name: str, tests: list[str], cpu_time_limit: int,
                    estimated_time: float) -> None:
        limit = cpu_limit(estimated_time)
        submit(self, mutant_name, tests, limit, estimated_time)

    ForkRunner.submit = cpu_limited  # type: ignore[method-assign]
    equivalents = load_equivalents()
    # a diff costs a parse of the function: only where something is written down
    written = {(eq.module, eq.function) for eq in equivalents}
    collect_all = mm.collect_source_file_mutation_data

    def without_equivalents(*, mutant_names: Any) -> Any:
        mutants, by_path = collect_all(mutant_names=mutant_names)
        kept = []
        for data, name, result in mutants:
            m = Mutant(name, str(data.path), "not checked")
            if result is None and (m.module, m.function) in written:
                m.removed, m.added = _diff(name, data.path)
                if any(eq.matches(m) for eq in equivalents):
                    continue
            kept.append((data, name, result))
        print(f"    {len(mutants) - len(kept)} written-down equivalents left unrun", flush=True)
        return kept, by_path

    mm.collect_source_file_mutation_data = without_equivalents
    try:
        mm.cli(args)
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def collect(work: Path, env: dict[str, str]) -> list[Mutant]:
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "_collect"], cwd=work,
                         env=env, check=True, capture_output=True, text=True).stdout
    return [Mutant(**row) for row in json.loads(out)]


def _collect_here() -> None:
    """Inside an area's copy: every mutant, its status and (if not killed) its diff, as JSON."""
    from mutmut.__main__ import walk_mutatable_files
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.stats import status_by_exit_code

    rows = []
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        for name, code in data.exit_code_by_key.items():
            row = {"name": name, "module": str(path), "status": status_by_exit_code[code],
                   "removed": [], "added": []}
            if row["status"] not in DETECTED:
                row["removed"], row["added"] = _diff(name, path)
            rows.append(row)
    json.dump(rows, sys.stdout)


def judge(mutants: list[Mutant], equivalents: list[Equivalent]) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for m in mutants:
        if m.status not in DETECTED:
            for eq in equivalents:
                if eq.matches(m):
                    m.equivalent = eq.reason
                    eq.used += 1
                    break
        key = "equivalent" if m.equivalent else ("killed" if m.status in DETECTED else m.status)
        counts[m.module][key] += 1
    return counts


def ratchet(recorded: dict[str, float], measured: dict[str, float]) -> dict[str, float]:
    """The scores to record: a module's score only ever rises (a lower one is for a person to
    write, in review, with the reason)."""
    out = dict(recorded)
    for module, now in measured.items():
        out[module] = max(now, recorded.get(module, now))
    return out


def score(c: Counter[str]) -> float:
    total = sum(c.values()) - c["equivalent"]
    return 100.0 * c["killed"] / total if total else 100.0


def write_report(mutants: list[Mutant], counts: dict[str, Counter[str]], name: str) -> Path:
    lines = ["# Mutants the tests did not notice", ""]
    for module in sorted(counts):
        lines.append(f"## {module}: {score(counts[module]):.1f} %")
        for m in mutants:
            if m.module == module and m.status not in DETECTED and not m.equivalent:
                lines.append(f"\n### {m.function} ({m.status}) `{m.name}`\n```diff")
                lines += [f"-{r}" for r in m.removed] + [f"+{a}" for a in m.added] + ["```"]
        lines.append("")
    path = WORK / name
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_mutmut"]:
        # started by run_mutmut with this file's folder first on sys.path, where the console
        # script would have its bin folder; nothing of the tree may shadow the mutants
        sys.path[0] = str(Path(sys.executable).parent)
        return _mutmut_here([s for s in argv[1].split(",") if s], argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", nargs="?", default="run", choices=["run", "report", "_collect"],
                    help="run (default), or report: judge the last run's results again "
                         "(after editing mutation/equivalents/) without running anything")
    ap.add_argument("--area", action="append", default=[],
                    help="run only this area of mutation/areas.toml (repeatable)")
    ap.add_argument("--mutants", metavar="GLOB", default="",
                    help="run only the mutants whose names match (a quick check; no ratchet)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2,
                    help="mutants tested at once (default: one per core)")
    ap.add_argument("--record", action="store_true",
                    help="write this run's scores to mutation/scores.toml")
    args = ap.parse_args(argv)
    if args.command == "_collect":
        _collect_here()
        return 0

    areas = load_areas()
    unknown = set(args.area) - set(areas)
    if unknown:
        ap.error(f"no such area: {', '.join(sorted(unknown))} (known: {', '.join(areas)})")
    chosen = args.area or list(areas)
    equivalents = load_equivalents()
    bin_dir = str(Path(sys.executable).parent)  # mutmut calls "mypy" by name
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", LOCALPAY_HYPOTHESIS_PROFILE="mutation",
               PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))

    sys.path.insert(0, str(ROOT))
    from localpay.pgserver import PgCluster

    mutants: list[Mutant] = []
    started = time.monotonic()
    if args.command == "report":
        for area in chosen:
            if not (WORK / area / "mutants").is_dir():
                raise SystemExit(f"no results for {area} in {WORK / area}: run it first")
            mutants += collect(WORK / area, env)
        return judge_and_print(args, chosen, mutants, equivalents, started)
    cluster = PgCluster()
    env["LOCALPAY_TEST_PG_URL"] = cluster.url()
    times: dict[str, float] = {}
    broken: list[str] = []
    try:
        tree = snapshot()
        # localpay (and, for the processes tests start, everything) from the snapshot, never
        # from the checkout the editable install points at
        area_env = dict(env, PYTHONPATH=str(tree))
        for area in chosen:
            area_started = time.monotonic()
            print(f"{area}: mutating {', '.join(areas[area]['mutate'])}", flush=True)
            work = prepare(area, areas[area], tree)
            names = [args.mutants] if args.mutants else []
            try:
                run_mutmut(work, args.jobs, names, area_env,
                           list(areas[area].get("stores", [])))
            except SystemExit as failed:
                # one area that cannot run (its tests fail on the tree as it is) does not
                # stop the others; the run fails at the end
                print(f"{area}: {failed}", flush=True)
                broken.append(area)
                continue
            found = collect(work, area_env)
            if args.mutants:
                found = [m for m in found if fnmatch.fnmatch(m.name, args.mutants)]
            mutants += found
            times[area] = time.monotonic() - area_started
            print(f"{area}: {len(found)} mutants, {times[area] / 60:.1f} min", flush=True)
    finally:
        cluster.destroy()
    if len(times) > 1:
        print("time per area: " + ", ".join(f"{a} {t / 60:.1f} min" for a, t in times.items()))
    done = judge_and_print(args, chosen, mutants, equivalents, started)
    if broken:
        print(f"FAILED: mutmut could not run {', '.join(broken)} (see above)")
        return 1
    return done


def judge_and_print(args: argparse.Namespace, chosen: list[str], mutants: list[Mutant],
                    equivalents: list[Equivalent], started: float) -> int:
    counts = judge(mutants, equivalents)
    report = write_report(mutants, counts, "report.md" if not args.area else
                          f"report-{'-'.join(chosen)}.md")
    if args.mutants:
        for m in mutants:
            print(f"{m.status if not m.equivalent else 'equivalent':>10}  {m.name}")
        return 0
    recorded = load_scores()
    failed = []
    print(f"\n{'module':34} {'mutants':>7} {'killed':>6} {'equiv':>5} {'surv':>5} "
          f"{'no test':>7} {'score':>6} {'recorded':>8}")
    for module in sorted(counts):
        c = counts[module]
        now = score(c)
        before = recorded.get(module)
        flag = ""
        if c["not checked"]:
            flag = f"  INCOMPLETE: {c['not checked']} not checked (not recorded)"
        elif before is not None and round(now, 1) < before:
            flag = "  BELOW RECORDED"
            failed.append(module)
        elif now < TARGET:
            flag = f"  below the {TARGET:.0f} % target"
        print(f"{module:34} {sum(c.values()):7} {c['killed']:6} {c['equivalent']:5} "
              f"{c['survived'] + c['suspicious']:5} {c['no tests']:7} {now:5.1f}% "
              f"{'' if before is None else f'{before:5.1f}%':>8}{flag}")
    stale = [e for e in equivalents if not e.used and e.module in counts]
    for e in stale:
        print(f"note: equivalent no longer produced ({e.module} {e.function}: {e.before!r})")
    print(f"\n{len(mutants)} mutants in {time.monotonic() - started:.0f} s; survivors: {report}")
    if args.record:
        # a run cut short scores its unchecked mutants as survivors: nothing to record
        write_scores(ratchet(recorded, {m: round(score(c), 1) for m, c in counts.items()
                                        if not c["not checked"]}))
        print("scores recorded in mutation/scores.toml")
    if failed:
        print(f"FAILED: below the recorded score: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
