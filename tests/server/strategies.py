"""Hypothesis strategies generating instances of the JSON Schema subset the server's schemas use
(hypothesis-jsonschema does not work with the installed Hypothesis). Valid by construction for
objects, arrays, strings and numbers as the subset defines them; `test_units` checks the generated
values against the `jsonschema` library, so this generator is itself tested."""
from __future__ import annotations

from hypothesis import strategies as st

# Pieces a hostile client likes: an unpaired surrogate, NUL, Gemma turn/control markers.
HOSTILE_PIECES = ["\ud800", "\x00", "<start_of_turn>", "<end_of_turn>", "<|turn>", "<|channel>", '<|"|>',
                  "<|tool_call>", "<bos>", "<start_of_image>"]


def texts(min_size: int = 0, max_size: int = 20) -> st.SearchStrategy:
    """Any Unicode (surrogates included) mixed with HOSTILE_PIECES."""
    piece = st.characters(exclude_categories=()) | st.sampled_from(HOSTILE_PIECES)
    return st.lists(piece, max_size=max_size).map("".join).filter(lambda s: min_size <= len(s) <= max_size) \
        | st.text(min_size=min_size, max_size=max_size)


ANY_JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | texts(max_size=6),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts(max_size=6), inner,
                                                                                     max_size=3), max_leaves=6)


def from_schema(node: dict) -> st.SearchStrategy:
    if "anyOf" in node:
        return st.one_of([from_schema(option) for option in node["anyOf"]])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if kind is None:
        return ANY_JSON
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(node.get("minimum"), node.get("maximum"))
    if kind == "number":
        low = node.get("minimum", node.get("exclusiveMinimum"))
        return st.floats(low, node.get("maximum"), exclude_min="exclusiveMinimum" in node, allow_nan=False,
                         allow_infinity=False) | st.integers(node.get("minimum", 1 if "exclusiveMinimum" in node else None),
                                                             node.get("maximum"))
    if kind == "string":
        if "pattern" in node:
            return st.from_regex(node["pattern"], fullmatch=True)
        return texts(node.get("minLength", 0), min(node.get("maxLength", 20), 20))
    if kind == "array":
        items = from_schema(node.get("items", {}))
        return st.lists(items, min_size=node.get("minItems", 0), max_size=min(node.get("maxItems", 3), 3))
    if kind == "object":
        props = node.get("properties", {})
        required = {k: from_schema(props.get(k, {})) for k in node.get("required", ())}
        optional = {k: from_schema(v) for k, v in props.items() if k not in required}
        fixed = st.fixed_dictionaries(required, optional=optional)
        if not props and node.get("additionalProperties", True) is not False:
            return st.dictionaries(texts(max_size=6), ANY_JSON, max_size=3)
        return fixed
    raise ValueError(f"schema type {kind!r} has no strategy")
