"""The package tree is the map of the product (docs/architecture.md): its folders,
their size, and the direction of their imports. import-linter checks the
contracts between folders (pyproject.toml, run by the test command); these tests
check what a contract cannot say: the core's imports against the standard
library itself, no cycle between any two modules, no module over 600 lines."""

from __future__ import annotations

import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dbha"
MAX_LINES = 600
# The standard library modules that do I/O, read a clock or start threads: the
# core takes what they would give as values instead.
IMPURE = {
    "asyncio",
    "io",
    "os",
    "pathlib",
    "random",
    "select",
    "selectors",
    "shutil",
    "signal",
    "socket",
    "subprocess",
    "tempfile",
    "threading",
    "time",
}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("dbha", include_external_packages=True, cache_dir=None)


def test_the_top_level_shows_the_concerns() -> None:
    entries = {
        p.name
        for p in PACKAGE.iterdir()
        if p.suffix == ".py" or (p.is_dir() and any(p.rglob("*.py")))
    }
    assert entries == {
        "__init__.py",
        "__main__.py",
        "cli.py",
        "errors.py",
        "proc.py",
        "core",
        "config",
        "beat",
        "db",
        "host",
        "node",
        "monitor",
        "sim",
        "lab",
    }


def test_no_module_is_over_600_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_core_imports_only_pure_standard_modules_and_errors(graph: grimp.ImportGraph) -> None:
    allowed_std = set(sys.stdlib_module_names) - IMPURE
    wrong = {}
    for module in sorted(m for m in graph.modules if m.startswith("dbha.core")):
        for imported in graph.find_modules_directly_imported_by(module):
            top = imported.split(".")[0]
            ok = (
                imported.startswith("dbha.core")
                or imported == "dbha.errors"
                or (top != "dbha" and top in allowed_std)
                or imported == "__future__"
            )
            if not ok:
                wrong.setdefault(module, []).append(imported)
    assert wrong == {}


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), type-checking
    imports included."""
    modules = sorted(m for m in graph.modules if m.startswith("dbha"))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.find_modules_directly_imported_by(v)):
            if not w.startswith("dbha"):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for m in modules:
        if m not in index:
            visit(m)
    return found


def test_no_two_modules_import_each_other_in_a_circle(graph: grimp.ImportGraph) -> None:
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a graph with a circle through three modules."""
    g = grimp.ImportGraph()
    for m in ("dbha", "dbha.a", "dbha.b", "dbha.c", "dbha.d"):
        g.add_module(m)
    for importer, imported in (
        ("dbha.a", "dbha.b"),
        ("dbha.b", "dbha.c"),
        ("dbha.c", "dbha.a"),
        ("dbha.d", "dbha.a"),
    ):
        g.add_import(importer=importer, imported=imported)
    assert _cycles(g) == [["dbha.a", "dbha.b", "dbha.c"]]
