"""Every private part of llama-cpp-python's `Llama` the runtime relies on, each named once here.

llama-cpp-python (0.3.36) has no public API for some of what the runtime needs, so these functions
reach into `Llama._ctx`. A newer llama-cpp-python is followed here, not across the runtime.
"""
from __future__ import annotations


def context_pointer(llm):
    """The raw `llama_context *` of a loaded model (for mtmd, raw samplers and C calls)."""
    return llm._ctx.ctx


def flash_attention_type(llm) -> int:
    """The `llama_flash_attn_type` the model's context was made with."""
    return llm.context_params.flash_attn_type


def llama_library():
    """The ctypes handle of the libllama llama-cpp-python loaded (for symbols its bindings lack). Not a
    second dlopen: the wheel ships libllama under several file names, each its own copy."""
    from gemma_edge.llama import llama_cpp

    return llama_cpp().llama_cpp._lib
