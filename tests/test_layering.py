"""The joins between packages: lower layers never import higher ones, and no module imports itself back.

Imports are read from the source (inside functions too: a deferred import still ties two modules).
"""

import ast
import pathlib

import pytest

import cotune

SRC = pathlib.Path(cotune.__file__).parent
# Lowest first; packages on one layer may use each other, never one above.
LAYERS = [
    {"files", "events", "errors", "hardware", "params"},
    {"data", "retrieve"},
    {"lm"},
    {"program"},
    {"serve"},
    {"evaluate", "training", "tasks"},
    {"optimize"},
    {"experiment"},
    {"report"},
    {"cli"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in SRC.rglob("*.py")}


def _imports(module: str) -> set[str]:
    """The cotune modules ``module`` imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    deps = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & MODULES.keys()
            deps |= subs
            if node.module in MODULES and len(subs) < len(node.names):
                deps.add(node.module)
        elif isinstance(node, ast.Import):
            deps |= {a.name for a in node.names} & MODULES.keys()
    return deps


GRAPH = {m: _imports(m) for m in MODULES}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYER.get(parts[1]) if len(parts) > 1 else None


def test_every_package_has_a_layer():
    """A package left out of LAYERS would escape the check below (its layer is None)."""
    packages = {m.split(".")[1] for m in MODULES if m.count(".") >= 1}
    assert packages - set(LAYER) == set()


def test_no_module_imports_from_a_layer_above_its_own():
    upward = {
        f"{m} -> {d}"
        for m, deps in GRAPH.items()
        for d in deps
        if _layer(m) is not None and _layer(d) is not None and _layer(d) > _layer(m)
    }
    assert upward == set()


def _circles(package: str) -> list[list[str]]:
    """Strongly connected groups of more than one module among ``package``'s modules (Tarjan)."""
    nodes = [m for m in GRAPH if m == package or m.startswith(package + ".")]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v] & set(nodes):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = stack[stack.index(v) :]
            del stack[stack.index(v) :]
            if len(group) > 1:
                found.append(sorted(group))

    for v in nodes:
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize("package", sorted(set(LAYER) - LAYERS[0]))
def test_no_import_circles_inside_a_package(package):
    assert _circles(f"cotune.{package}") == []


def _private_imports(module: str) -> set[str]:
    """``_name``s ``module`` takes from another cotune module (aliasing a public name to ``_x`` is fine)."""
    return {
        f"{node.module}.{a.name}"
        for node in ast.walk(ast.parse(MODULES[module].read_text()))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cotune")
        for a in node.names
        if a.name.startswith("_") and not a.name.startswith("__")
    }


@pytest.mark.parametrize("package", sorted(set(LAYER) - LAYERS[0]))
def test_no_private_name_is_imported_from_another_module(package):
    found = {f"{m}: {name}" for m in GRAPH if m.startswith(f"cotune.{package}.") for name in _private_imports(m)}
    assert found == set()


def _package_of(module: str) -> str:
    """``cotune.lm``'s part a module belongs to: its engine, its remote client, or the core."""
    for part in ("cotune.lm.engine", "cotune.lm.remote"):
        if module == part or module.startswith(part + "."):
            return part
    return "cotune.lm" if module == "cotune.lm" or module.startswith("cotune.lm.") else module


def test_the_local_engine_and_the_remote_client_never_import_each_other():
    crossing = {
        f"{m} -> {d}"
        for m, deps in GRAPH.items()
        for d in deps
        if {_package_of(m), _package_of(d)} == {"cotune.lm.engine", "cotune.lm.remote"}
    }
    assert crossing == set()


def _top_level_imports(module: str) -> set[str]:
    """The cotune modules ``module`` imports when it is imported (not inside a function)."""
    tree = ast.parse(MODULES[module].read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names & MODULES.keys()


def test_the_lm_core_reaches_the_engine_and_the_remote_client_only_when_a_model_is_loaded():
    """The core (protocol, cache, registry) loads a backend's module inside the function that builds it, so
    ``import cotune.lm`` stays light and neither backend's code is needed to use the other."""
    eager = {
        f"{m} -> {d}"
        for m in GRAPH
        if _package_of(m) == "cotune.lm"
        for d in _top_level_imports(m)
        if _package_of(d) in ("cotune.lm.engine", "cotune.lm.remote")
    }
    assert eager == set()
