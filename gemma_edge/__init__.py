"""gemma-edge: run Google's Gemma models offline on a laptop CPU or an ARM board.

    import gemma_edge
    model = gemma_edge.load()                  # the embedded Gemma 3 270M, or a registry name / GGUF path
    print(model.generate("Why is the sky blue?", temperature=0))
    chat = gemma_edge.Chat(model, system="Answer in one sentence.")
    print(chat.send("Hello!"))

Prompts: `render_prompt` / `render_segments` (every Gemma turn format, byte-exact with the official
templates). Output: `parse_response` / `StreamParser` (thinking, content, tool calls).
"""
from __future__ import annotations

__version__ = "0.1.0"

_EXPORTS = {
    "load": "gemma_edge.api", "Model": "gemma_edge.api", "ResponseStream": "gemma_edge.api",
    "Chat": "gemma_edge.chat",
    "Response": "gemma_edge.response",
    "Sampling": "gemma_edge.sampling",
    "render_prompt": "gemma_edge.formats", "render_segments": "gemma_edge.formats",
    "Segment": "gemma_edge.formats", "TemplateError": "gemma_edge.formats",
    "parse_response": "gemma_edge.parsing", "StreamParser": "gemma_edge.parsing",
    "GemmaEdgeError": "gemma_edge.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    # Lazy: `import gemma_edge` stays fast and does not load llama.cpp until a model is used.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gemma_edge' has no attribute '{name}'")
    import importlib

    return getattr(importlib.import_module(module), name)
