"""gemma_edge/llama/ is the one door to llama.cpp (issue 15): read from the source with `ast`, nothing
outside it imports llama-cpp-python, and the private parts of its `Llama` are named in one module."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOOR = ROOT / "gemma_edge" / "llama"
# llama-cpp-python's private Llama/LlamaContext attributes the runtime relies on (gemma_edge/llama/internals.py)
PRIVATE = {"_ctx", "_batch", "_input_ids", "_init_sampler", "_model", "_internals", "_n_vocab", "_stack",
           "_candidates", "_logits_all"}
# rpc.py's private uses move into gemma_edge/llama/internals.py with the rpc/ split (issue 15, point 3)
NOT_YET_MOVED = {ROOT / "gemma_edge" / "rpc.py"}


def sources(*folders: str):
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def llama_cpp_imports(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            lines += [node.lineno for alias in node.names if alias.name.split(".")[0] == "llama_cpp"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "llama_cpp":
            lines.append(node.lineno)
    return lines


def private_uses(tree: ast.AST) -> list[int]:
    """Lines reading a private llama-cpp-python attribute of something other than `self`."""
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in PRIVATE
            and not (isinstance(node.value, ast.Name) and node.value.id == "self")]


def test_only_the_llama_package_imports_llama_cpp():
    found = {str(path.relative_to(ROOT)): lines for path, tree in sources("gemma_edge", "convert")
             if DOOR not in path.parents and (lines := llama_cpp_imports(tree))}
    assert found == {}


def test_inside_the_package_llama_cpp_is_imported_once_with_the_version_check():
    imports = {path.name for path, tree in sources("gemma_edge/llama") if llama_cpp_imports(tree)}
    assert imports == {"__init__.py"}  # llama_cpp(): the one import, with the version check


def test_private_llama_attributes_are_named_in_internals_only():
    found = {str(path.relative_to(ROOT)): lines for path, tree in sources("gemma_edge", "convert")
             if path != DOOR / "internals.py" and path not in NOT_YET_MOVED and (lines := private_uses(tree))}
    assert found == {}
    internals = ast.parse((DOOR / "internals.py").read_text(encoding="utf-8"))
    assert private_uses(internals)  # the check sees them where they are
