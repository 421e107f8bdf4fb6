"""Which way imports flow, from the bottom up: ``bankcore`` is the kernel (env, settings, db,
money, errors, router, logging, metrics, the API door's machinery) and imports no app; ``audit`` is
called by the apps and imports only ``bankcore``; ``backoffice`` (the back office's shared pages,
forms, review and template tags) imports only ``bankcore`` and ``audit``; ``accounts`` may import
those three, never ``transfers``; ``transfers`` may import them all. A module may import any
layer below its own, none above. A name two apps need lives where both may import it. And no two
modules import each other, however far round.

Every module of the five packages outside tests and migrations is read with ``ast``: an import
counts wherever it is, at module level or inside a function. A URL included by its dotted name
(``include("accounts.api_urls")``) is not an import.

Tests import what they share from bankcore.testing (fixtures come from its plugin), never from a
conftest or another test module.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from bankcore.testing.paths import ROOT

PACKAGES = ("bankcore", "audit", "backoffice", "accounts", "transfers")
SKIPPED_DIRS = {"tests", "migrations", "__pycache__"}

# The apps a module of each package must not import.
FORBIDDEN = {
    "bankcore": {"audit", "backoffice", "accounts", "transfers"},
    "audit": {"backoffice", "accounts", "transfers"},
    "backoffice": {"accounts", "transfers"},
    "accounts": {"transfers"},
}
# Test support, not part of the running application: it may set up any app's data.
EXEMPT = ("bankcore.testing",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if SKIPPED_DIRS.isdisjoint(path.relative_to(ROOT).parts):
                found[_module_name(path)] = path
    return found


def _resolve(name: str, known: set[str]) -> str | None:
    """The known module that ``name`` (a module, or a name in one) is found in; None outside."""
    if name.split(".")[0] not in PACKAGES:
        return None
    while name and name not in known:  # "from x.y import z" where z is a name, not a module
        name = name.rpartition(".")[0]
    return name or None


def imported_names(source: str, module: str, *, is_package: bool) -> set[str]:
    """The dotted names ``module``'s source imports anywhere in its body, relative ones resolved:
    ``from x import y`` gives ``x.y`` (y may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def imports_of(source: str, module: str, *, is_package: bool, known: set[str]) -> set[str]:
    """The known modules that ``module``'s source imports, anywhere in its body."""
    names = imported_names(source, module, is_package=is_package)
    found = {target for name in names if (target := _resolve(name, known))}
    found.discard(module)
    return found


@cache
def import_graph() -> dict[str, frozenset[str]]:
    known = modules()
    return {
        module: frozenset(imports_of(path.read_text(), module, is_package=path.name == "__init__.py", known=set(known)))
        for module, path in known.items()
    }


def circles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def against_the_layers(graph: dict[str, frozenset[str]]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for module, targets in graph.items():
        if any(module == exempt or module.startswith(exempt + ".") for exempt in EXEMPT):
            continue
        forbidden = FORBIDDEN.get(module.split(".")[0], set())
        found.update((module, target) for target in targets if target.split(".")[0] in forbidden)
    return found


def test_every_import_counts_wherever_it_is() -> None:
    known = {"bankcore", "bankcore.money", "bankcore.errors", "accounts", "accounts.models", "transfers.api"}
    source = (
        "import os\n"
        "from bankcore.errors import ApplicationError\n"
        "from . import money\n"
        "def view():\n"
        "    from accounts.models import Account\n"
        "    import transfers.api\n"
    )
    assert imports_of(source, "bankcore.router", is_package=False, known=known) == {
        "bankcore.errors",
        "bankcore.money",
        "accounts.models",
        "transfers.api",
    }
    graph = {"a.x": frozenset({"a.y"}), "a.y": frozenset({"a.z"}), "a.z": frozenset({"a.x"}), "a.w": frozenset()}
    assert circles(graph) == [["a.x", "a.y", "a.z"]]
    assert against_the_layers({"bankcore.db": frozenset({"audit.models", "bankcore.env"})}) == {
        ("bankcore.db", "audit.models")
    }


def test_the_whole_project_is_read() -> None:
    graph = import_graph()
    assert {"bankcore.errors", "accounts.services", "transfers.services", "audit.services"} <= set(graph)
    assert not [module for module in graph if ".tests" in module or ".migrations" in module]
    assert "accounts.services" in graph["transfers.services"]


def test_no_import_circle() -> None:
    assert circles(import_graph()) == []


def test_imports_flow_down_the_layers() -> None:
    assert sorted(against_the_layers(import_graph())) == []


# --- tests import what they share from bankcore.testing ------------------------------------------


def modules_of_tests() -> dict[str, Path]:
    """Every module of the four packages' tests directories, by dotted name."""
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "tests" in path.relative_to(ROOT).parts
    }


def conftests_and_test_modules(names: set[str]) -> set[str]:
    """The names among ``names`` that are a conftest or a test module (or a name in one)."""
    return {name for name in names if any(part == "conftest" or part.startswith("test_") for part in name.split("."))}


def test_a_conftest_or_a_test_module_imported_is_seen() -> None:
    source = (
        "from conftest import balances\n"
        "from bankcore.testing.books import balances\n"
        "from .test_money import cents\n"
        "def later():\n"
        "    from transfers.tests import test_concurrency\n"
        "    import accounts.tests.conftest\n"
    )
    names = imported_names(source, "bankcore.tests.test_x", is_package=False)
    assert conftests_and_test_modules(names) == {
        "conftest.balances",
        "bankcore.tests.test_money.cents",
        "transfers.tests.test_concurrency",
        "accounts.tests.conftest",
    }


def test_no_test_module_imports_a_conftest_or_another_test_module() -> None:
    # What tests share is a fixture (bankcore.testing.fixtures, a plugin) or a function in a module
    # of bankcore.testing: a test module run on its own must not depend on another's collection.
    modules = modules_of_tests()
    assert "transfers.tests.engine.test_concurrency" in modules
    found = {
        (module, name)
        for module, path in modules.items()
        for name in conftests_and_test_modules(
            imported_names(path.read_text(), module, is_package=path.name == "__init__.py")
        )
    }
    assert sorted(found) == []
