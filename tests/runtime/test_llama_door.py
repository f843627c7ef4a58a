"""gemma_edge/llama/ is the one door to llama.cpp (issue 15), read from the source with `ast`: inside it,
llama-cpp-python is imported once (with the version check), and the private parts of its `Llama` are
named in one module. (That nothing outside the package imports it: tests/test_layers.py.)"""
from __future__ import annotations

import ast

from tests.test_layers import LLAMA_DOOR, ROOT, _within, modules

INTERNALS = ROOT / "gemma_edge" / "llama" / "internals.py"
# llama-cpp-python's private Llama/LlamaContext attributes the runtime relies on (gemma_edge/llama/internals.py)
PRIVATE = {"_ctx", "_batch", "_input_ids", "_init_sampler", "_model", "_internals", "_n_vocab", "_stack",
           "_candidates", "_logits_all"}


def private_uses(tree: ast.AST) -> list[int]:
    """Lines reading a private llama-cpp-python attribute of something other than `self`."""
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in PRIVATE
            and not (isinstance(node.value, ast.Name) and node.value.id == "self")]


def test_inside_the_package_llama_cpp_is_imported_once_with_the_version_check():
    importers = {m.name for m in modules().values() if _within(m.name, [LLAMA_DOOR])
                 and any(t == "llama_cpp" or t.startswith("llama_cpp.") for t in m.top | m.local)}
    assert importers == {LLAMA_DOOR}  # gemma_edge.llama.llama_cpp(): the one import, with the version check


def test_private_llama_attributes_are_named_in_internals_only():
    found = {}
    for module in modules().values():
        if module.path != INTERNALS:
            lines = private_uses(ast.parse(module.path.read_text(encoding="utf-8")))
            if lines:
                found[module.name] = lines
    assert found == {}
    assert private_uses(ast.parse(INTERNALS.read_text(encoding="utf-8")))  # the check sees them where they are
