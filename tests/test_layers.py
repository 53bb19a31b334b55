"""Who may import whom (DESIGN.md), checked on every import in the tree, lazy ones included.

An AST walk of every module of the library, the CLI and tools: ``import x``, ``from x import
y`` (relative ones resolved), ``importlib.import_module("x")`` with a literal name, at any
depth of any function. Also: no import circle between the library's modules, and a terminal
installed without the ``central`` extra imports what it needs to sync and provision.
"""

from __future__ import annotations

import ast
import configparser
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("localpay", "drivers", "offline_ledger", "firmware_cfg", "terminal", "sync",
            "central", "kiosk_ui", "tools")
OURS = {*PACKAGES, "tests"}

#: layer -> the layers it may import (besides itself). "cli" is ``localpay.cli`` and
#: ``localpay.__main__``; "emulators" is ``drivers.emulators``.
ALLOWED: dict[str, set[str]] = {
    "localpay": set(),
    "drivers": {"localpay"},
    "emulators": {"localpay", "drivers"},
    "offline_ledger": {"localpay"},
    "firmware_cfg": {"localpay"},
    "sync": {"localpay", "offline_ledger"},
    "terminal": {"localpay", "firmware_cfg", "offline_ledger"},
    "kiosk_ui": {"localpay", "terminal", "firmware_cfg", "offline_ledger"},
    "central": {"localpay", "sync", "firmware_cfg"},
    "cli": {"localpay", "drivers", "emulators", "offline_ledger", "firmware_cfg", "terminal",
            "sync", "central", "kiosk_ui"},
    "tools": {"localpay", "drivers", "emulators", "offline_ledger", "firmware_cfg",
              "terminal", "sync", "central", "kiosk_ui"},
}


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "localpay" and len(parts) > 1 and parts[1] in ("cli", "__main__"):
        return "cli"
    if parts[:2] == ["drivers", "emulators"]:
        return "emulators"
    return parts[0]


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (or a name in it)
    line: int
    lazy: bool  # inside a function or class body
    type_only: bool  # under ``if TYPE_CHECKING:``


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> Iterator[Import]:
    """Every import in one file, with where it stands."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))

    def walk(node: ast.AST, lazy: bool, type_only: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            child_lazy = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef
                                            | ast.ClassDef | ast.Lambda)
            child_type_only = type_only or (
                isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(name, alias.name, child.lineno, lazy, type_only)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for alias in child.names:
                    # ``from a import b`` imports module a.b when b is one
                    yield Import(name, f"{target}.{alias.name}", child.lineno, lazy, type_only)
            elif (isinstance(child, ast.Call) and ast.unparse(child.func).endswith("import_module")
                  and child.args and isinstance(child.args[0], ast.Constant)
                  and isinstance(child.args[0].value, str)):
                yield Import(name, child.args[0].value, child.lineno, True, type_only)
            yield from walk(child, child_lazy, child_type_only)

    yield from walk(tree, False, False)


def all_imports(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[Import]:
    out: list[Import] = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            out += imports_of(path, root)
    return out


def violations(found: list[Import]) -> list[str]:
    bad = []
    for imp in found:
        top = imp.target.split(".")[0]
        if top not in OURS:
            continue
        src, dst = layer(imp.source), layer(imp.target)
        if src == dst:
            continue
        if dst in ("cli", "tools", "tests") or dst not in ALLOWED[src]:
            where = "lazily " if imp.lazy else ""
            bad.append(f"{imp.source}:{imp.line} {where}imports {imp.target} "
                       f"({src} may import {sorted(ALLOWED[src]) or 'nothing of ours'})")
    return bad


# -- the rules hold ------------------------------------------------------------------------------


def test_every_import_follows_the_layers() -> None:
    found = all_imports(ROOT)
    # the walk sees what it must, or the check below proves nothing
    targets = {(i.source, i.target) for i in found}
    assert ("terminal.core", "offline_ledger.Ledger") in targets
    assert any(i.lazy and i.source.startswith("localpay.cli") for i in found)
    assert violations(found) == []


def test_the_check_catches_each_kind_of_violation(tmp_path: Path) -> None:
    """A tree that breaks each rule once: every break is reported, lazy and relative too."""
    files = {
        "terminal/__init__.py": "",
        "terminal/core.py": "from drivers.virtual import VirtualReader\n",
        "terminal/late.py": "def f():\n    import central.store\n",
        "drivers/__init__.py": "",
        "drivers/pcsc.py": "from .emulators import emv_card\n",
        "drivers/emulators/__init__.py": "",
        "drivers/emulators/emv_card.py": "",
        "central/__init__.py": "",
        "central/store.py": "import importlib\nimportlib.import_module('terminal.core')\n",
        "kiosk_ui/__init__.py": "",
        "kiosk_ui/app.py": "from localpay.cli import main\n",
        "sync/__init__.py": "",
        "sync/client.py": "from offline_ledger import Ledger\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    found = all_imports(tmp_path, ("terminal", "drivers", "central", "kiosk_ui", "sync"))
    bad = violations(found)
    assert [b.split(" ")[0] for b in bad] == [
        "terminal.core:1", "terminal.late:2", "drivers.pcsc:1", "central.store:2",
        "kiosk_ui.app:1"]
    assert "lazily" in bad[1] and "drivers.emulators.emv_card" in bad[2]


def _library_graph() -> dict[str, set[str]]:
    modules = {module_name(p, ROOT) for pkg in PACKAGES if pkg != "tools"
               for p in (ROOT / pkg).rglob("*.py")}
    modules = {m for m in modules if layer(m) != "cli"}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in all_imports(ROOT):
        if imp.source not in graph or imp.type_only:
            continue
        target = imp.target if imp.target in modules else imp.target.rpartition(".")[0]
        # a package's own __init__ importing its submodules is not a circle of design
        if target in modules and target != imp.source and not imp.source.startswith(target + "."):
            graph[imp.source].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_in_the_library() -> None:
    graph = _library_graph()
    assert "offline_ledger" in graph["terminal.core"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
    # and the detector finds one when there is one
    graph["offline_ledger.ledger"] = graph["offline_ledger.ledger"] | {"terminal.core"}
    graph["offline_ledger"] = graph["offline_ledger"] | {"offline_ledger.ledger"}
    assert _cycle(graph) is not None


def test_nothing_in_the_package_edits_sys_path() -> None:
    offenders = [f"{p.relative_to(ROOT)}:{n}" for pkg in PACKAGES if pkg != "tools"
                 for p in (ROOT / pkg).rglob("*.py")
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if re.search(r"sys\.path\.(insert|append)", line)]
    assert offenders == []


# -- what each install brings ---------------------------------------------------------------------

#: import name -> distribution name, for the third-party packages we import
DISTRIBUTIONS = {"click": "click", "cryptography": "cryptography", "httpx": "httpx",
                 "segno": "segno", "rich": "rich", "smartcard": "pyscard", "nfc": "nfcpy",
                 "serial": "pyserial", "pygame": "pygame", "pyzbar": "pyzbar",
                 "fastapi": "fastapi", "starlette": "fastapi", "uvicorn": "uvicorn",
                 "psycopg": "psycopg", "prometheus_client": "prometheus-client"}

#: modules whose own dependencies are an extra: registry backends are imported by name only
#: when constructed, the screens only by ``run``, the central service only on its host
EXTRA_OF = {"drivers.pcsc": "pcsc", "drivers.nfc": "nfc", "drivers.emulators.nfc_emulator": "nfc",
            "drivers.serial_scanner": "serial", "drivers.camera": "camera", "kiosk_ui": "ui",
            "central": "central"}


def _requirements() -> tuple[set[str], dict[str, set[str]]]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")

    def names(text: str) -> set[str]:
        return {re.split(r"[<>=\[ ]", line.strip())[0].lower()
                for line in text.splitlines() if line.strip() and not line.startswith("#")}

    base = names(cfg["options"]["install_requires"])
    extras = {k: names(v) for k, v in cfg["options.extras_require"].items()}
    return base, extras


def test_each_module_needs_only_what_its_install_brings() -> None:
    base, extras = _requirements()
    assert {"httpx", "cryptography", "click"} <= base
    missing = []
    for imp in all_imports(ROOT, tuple(p for p in PACKAGES if p != "tools")):
        top = imp.target.split(".")[0]
        if imp.lazy or top not in DISTRIBUTIONS:
            continue  # lazy imports of an extra's package are the registry's way
        dist = DISTRIBUTIONS[top]
        extra = next((e for m, e in EXTRA_OF.items()
                      if imp.source == m or imp.source.startswith(m + ".")), None)
        if layer(imp.source) == "cli":
            extra = "cli"  # the CLI imports extras lazily, per command
        allowed = base | (extras.get(extra, set()) if extra else set())
        if dist not in allowed:
            missing.append(f"{imp.source}:{imp.line} imports {top} ({dist}), which "
                           f"{'the ' + extra + ' extra' if extra else 'the base install'} "
                           f"does not bring")
    assert missing == []


def test_a_terminal_without_the_central_extra_syncs_and_provisions(tmp_path: Path) -> None:
    """The central host's packages made unimportable: the terminal's side still loads."""
    script = textwrap.dedent("""
        import importlib.abc, sys

        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in {"fastapi", "starlette", "uvicorn", "psycopg",
                                          "prometheus_client"}:
                    raise ImportError(f"{name} is not installed on a terminal")
                return None

        sys.meta_path.insert(0, Refuse())
        import sync.client, firmware_cfg.provision, terminal.core, kiosk_ui  # noqa
        from click.testing import CliRunner
        from localpay.cli import cli
        for args in (["sync", "--help"], ["provision", "--help"], ["--help"]):
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 0, (args, result.output)
        try:
            import central.app  # noqa
        except ImportError:
            print("central refused")
        print("terminal ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["central", "refused", "terminal", "ok"]


@pytest.mark.parametrize("module", ["localpay", "drivers", "offline_ledger", "firmware_cfg",
                                    "terminal", "sync", "central", "kiosk_ui"])
def test_each_package_imports_on_its_own(module: str) -> None:
    """No package leans on another having been imported first (a hidden circle would)."""
    out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_every_module_driving_pcscd_runs_on_one_worker() -> None:
    """Only one pcscd runs on a machine, and a worker keeps its stack (and the lock beside
    it) to the end of its session: a PC/SC module missed by the grouping waits on another
    worker for the whole suite and fails (it did, on CI, after 900 s)."""
    import importlib

    from tests.conftest import drives_pcsc

    tests_dir = Path(__file__).parent
    users = sorted(p.stem for p in tests_dir.glob("test_*.py")
                   if "hw_fixtures import" in p.read_text() and p.stem != "test_layers")
    assert len(users) >= 8, users
    missed = [name for name in users
              if not drives_pcsc(importlib.import_module(f"tests.{name}"))]
    assert missed == [], f"PC/SC modules the grouping misses: {missed}"
    assert not drives_pcsc(importlib.import_module("tests.test_ledger"))


def test_the_installed_pytest_xdist_keeps_a_group_on_one_worker(tmp_path: Path) -> None:
    """The grouping above is only as good as pytest-xdist's ``--dist loadgroup`` with the
    pytest installed: pytest 9.2 made it a silent no-op (tests spread over every worker), and
    the PC/SC tests then failed after waiting 900 s for each other. A small suite of two
    modules, grouped by a conftest as ours is, run on three workers: one worker runs them."""
    (tmp_path / "conftest.py").write_text(textwrap.dedent('''
        import pytest

        @pytest.hookimpl(tryfirst=True)
        def pytest_collection_modifyitems(items):
            for item in items:
                item.add_marker(pytest.mark.xdist_group("one"))
    '''))
    for name in ("a", "b"):
        (tmp_path / f"test_{name}.py").write_text(textwrap.dedent('''
            import pytest

            @pytest.mark.parametrize("i", range(6))
            def test_it(i):
                pass
        '''))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "3", "--dist",
         "loadgroup", "-v", "-o", "addopts=", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    workers = re.findall(r"^\[(gw\d+)\] .*PASSED", run.stdout, re.MULTILINE)
    assert len(workers) == 12, run.stdout
    assert len(set(workers)) == 1, f"one group ran on {sorted(set(workers))}:\n{run.stdout}"
