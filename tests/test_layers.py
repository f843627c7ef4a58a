"""The package's layering, read from the source with `ast` (issue 15): no import cycles, llama.cpp
behind one door, pure modules free of side effects."""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gemma_edge", "convert")
LLAMA_DOOR = "gemma_edge.llama"  # the only package that may import llama_cpp
# Modules whose import and use have no side effects (no native library, process, socket, thread,
# file write at import); they may import only each other and side-effect-free standard modules.
PURE = ("gemma_edge.formats", "gemma_edge.parsing", "gemma_edge.server.mapping")
# Modules the pure ones may use besides themselves (checked the same way): error types, the
# per-generation tables, tool-schema derivation.
PURE_SUPPORT = ("gemma_edge.errors", "gemma_edge.generations", "gemma_edge.tools", "gemma_edge.server.errors")
PURE_THIRD_PARTY = {"jinja2", "numpy"}  # computation only: a sandboxed template engine, arrays
SIDE_EFFECT_STDLIB = {"ctypes", "subprocess", "socket", "multiprocessing", "threading", "signal", "shutil",
                      "tempfile", "sqlite3", "http", "urllib", "asyncio", "concurrent", "selectors", "mmap"}


@dataclass
class Module:
    name: str
    path: Path
    top: set[str] = field(default_factory=set)      # imported when the module is imported
    local: set[str] = field(default_factory=set)    # imported inside functions (lazily)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@lru_cache(maxsize=None)
def modules() -> dict[str, Module]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = Module(_module_name(path), path)
    for module in found.values():
        _read_imports(module, found)
    return found


def _read_imports(module: Module, known: dict) -> None:
    tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
    package = module.name if module.path.name == "__init__.py" else module.name.rpartition(".")[0]

    def targets(node) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[:len(anchor) - node.level + 1]
            base = ".".join(anchor + ([base] if base else []))
        # `from pkg import sub` imports the submodule when there is one
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]

    def visit(node, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit_one(other, nested)
                continue
            visit_one(child, nested)

    def visit_one(child, nested: bool) -> None:
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            (module.local if nested else module.top).update(targets(child))
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            visit(child, True)
        else:
            visit(child, nested)

    visit(tree, False)


def _internal(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _is_cli_lazy_loading(module: Module) -> bool:
    return module.name == "gemma_edge.cli" or module.name.startswith("gemma_edge.cli.")


def _graph(include_local: bool) -> dict[str, set[str]]:
    known = modules()
    graph = {}
    for module in known.values():
        edges = set(module.top)
        if include_local and not _is_cli_lazy_loading(module):
            edges |= module.local
        graph[module.name] = {target for target in edges if target in known and target != module.name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
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
            connect(node)
    return found


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_graph_is_read_from_every_module():
    found = modules()
    assert "gemma_edge.api" in found and "convert.cli" in found
    assert found["gemma_edge.api"].top, "api imports something at module level"


def test_no_import_cycles_at_module_level():
    assert _cycles(_graph(include_local=False)) == []


def test_no_import_cycles_hidden_behind_function_local_imports():
    assert _cycles(_graph(include_local=True)) == []


def test_only_the_llama_package_imports_llama_cpp():
    offenders = sorted(
        f"{m.name} imports {target}" for m in modules().values() if not _within(m.name, [LLAMA_DOOR])
        for target in m.top | m.local if target == "llama_cpp" or target.startswith("llama_cpp."))
    assert offenders == []


@pytest.mark.parametrize("pure", PURE)
def test_pure_modules_import_nothing_with_side_effects(pure):
    known, reached, todo, offenders = modules(), set(), [m for m in modules() if _within(m, [pure])], []
    assert todo, f"{pure} exists"
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        module = known[name]
        for target in sorted(module.top | module.local):
            if _internal(target):
                if not _within(target, PURE + PURE_SUPPORT):
                    offenders.append(f"{name} imports {target}")
                elif target in known:
                    todo.append(target)
                continue
            top = target.split(".")[0]
            if top in PURE_THIRD_PARTY:
                continue
            if top not in sys.stdlib_module_names or top in SIDE_EFFECT_STDLIB:
                offenders.append(f"{name} imports {target}")
    assert offenders == []


def test_the_checker_sees_cycles_and_lazy_imports(tmp_path):
    """The cycle finder on a known graph, and a function-local import counted as local."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    source = tmp_path / "m.py"
    source.write_text("import json\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import numpy\n"
                      "def f():\n    import gemma_edge.api\n", encoding="utf-8")
    module = Module("m", source)
    _read_imports(module, {})
    assert module.top == {"json", "typing"} and module.local == {"gemma_edge.api"}
