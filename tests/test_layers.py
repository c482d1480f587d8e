"""The packages' layers, read from every import in the source (module level and inside functions
alike): the shared core at the bottom, the SDK, the server and the controller above it, none of
them importing another's modules (except the core's), no module importing another package's
private module, and no import cycle anywhere (issue 26)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"atomiverse_core": ROOT / "core", "atomiverse": ROOT / "sdk",
            "atomiverse_server": ROOT / "server", "atomiverse_controller": ROOT / "controller"}
# Which of our packages each one may import.
ALLOWED = {"atomiverse_core": {"atomiverse_core"},
           "atomiverse": {"atomiverse", "atomiverse_core"},
           "atomiverse_server": {"atomiverse_server", "atomiverse_core"},
           "atomiverse_controller": {"atomiverse_controller", "atomiverse_core"}}


def _modules() -> dict[str, Path]:
    found = {}
    for base in PACKAGES.values():
        for path in base.rglob("*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every one of our modules ``name`` imports, resolved to the deepest module that exists
    (``from a.b import c`` is ``a.b.c`` if that is a module, else ``a.b``)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _package(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_each_package_imports_only_the_layers_below_it(package):
    wrong = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() if _package(m) == package
                   for t in targets if _package(t) not in ALLOWED[package])
    assert wrong == []


def test_no_module_imports_another_packages_private_module():
    wrong = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets
                   if _package(t) != _package(m)
                   and any(p.startswith("_") for p in t.split(".")[1:]))
    assert wrong == []


def test_there_is_no_import_cycle():
    """Tarjan's strongly connected components: any with two or more modules is a cycle. A
    package's ``__init__`` importing its own submodules is how packages are made, not a cycle:
    those edges are left out (the submodule importing its package is not)."""
    def edges(m: str) -> set[str]:
        return {t for t in GRAPH[m] if not t.startswith(m + ".")}

    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        for t in edges(m):
            if t not in index:
                visit(t)
                low[m] = min(low[m], low[t])
            elif t in stack:
                low[m] = min(low[m], index[t])
        if low[m] == index[m]:
            component = []
            while True:
                t = stack.pop()
                component.append(t)
                if t == m:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for m in sorted(GRAPH):
        if m not in index:
            visit(m)
    assert cycles == []


def test_the_reader_sees_imports_inside_functions():
    """The check would pass vacuously if function-level imports were missed."""
    assert "atomiverse_core.drivers.optimize" in GRAPH["atomiverse_core.jobtypes.optimization"]


def test_no_module_is_over_400_lines():
    long = sorted(f"{name}: {n}" for name, path in MODULES.items()
                  if (n := len(path.read_text().splitlines())) > 400)
    assert long == []
