"""llama.cpp's and mtmd's logs kept quiet unless GEMMA_EDGE_DEBUG is set (they write to stderr even
with verbose=False). The callbacks are process-wide, and other code in the process (llama-cpp-python's
own logger, a test capturing logs) may install a printing one: set them again before every load."""
from __future__ import annotations

import ctypes
import os

from gemma_edge.llama import llama_cpp

_LOG_CALLBACK = None  # one null callback, kept alive for as long as llama.cpp may call it


def _null_callback():
    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:
        _LOG_CALLBACK = llama_cpp().llama_log_callback(lambda level, text, user_data: None)
    return _LOG_CALLBACK


def silence_llama_logs() -> None:
    """llama.cpp's own log (loading, decoding)."""
    if not os.environ.get("GEMMA_EDGE_DEBUG"):
        llama_cpp().llama_log_set(_null_callback(), ctypes.c_void_p(0))


def silence_mtmd_logs(mtmd) -> None:
    """mtmd's, clip's and the mtmd helpers' log (`mtmd`: llama-cpp-python's mtmd bindings)."""
    if not os.environ.get("GEMMA_EDGE_DEBUG"):
        mtmd.mtmd_helper_log_set(_null_callback(), ctypes.c_void_p(0))
