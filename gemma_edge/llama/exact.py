"""Which llama.cpp evaluations compute a token's logits bit for bit alike (what lossless speculative
decoding rests on: a token verified in a batch must get the logits it gets when decoded on its own).

llama.cpp's CPU backend (ggml-cpu, in llama-cpp-python 0.3.36) chooses a matrix kernel per evaluation from
its row count, and the kernels sum in different orders, so a token's logits depend on how many rows were
evaluated with it:
- 1 row: ggml's vec_dot for every matrix product, attention included (KQ and KQV on the F16 KV cache);
  with flash attention on, a split over the KV cache once it holds 512 cells;
- 2 rows or more: llamafile's tinyBLAS wherever it takes the type (F16/BF16/F32 products, attention
  included; Q8_0, Q5_0, Q4_0, IQ4_NL weights), ggml's vec_dot otherwise (the K-quants);
- 8 rows or more: the K-quants (Q2_K..Q6_K, IQ*) go through ggml's tiled kernel (`rows >= 8`);
- 64 rows or more: tiled flash attention;
- the CPU REPACK weight layouts (Q4_0, Q4_K, IQ4_NL, Q8_0 repacked at load) have their own gemv (1 column)
  and gemm (blocks of 4 columns) and mix them within one evaluation.
tinyBLAS and vec_dot compute each output element in one accumulator over the inner dimension in the same
order whatever the tile, so within 2..7 rows, weights not repacked, a row's logits do not depend on the row
count or on the other rows: measured bitwise on the embedded 270M (positions 40-700, KV cache crossing the
256-cell padding, flash attention off and on; bench/README.md). ARM is different and untested here: tinyBLAS
needs 4+ rows for some types there and the i8mm vec_dot works on 2x2 blocks when the row count is even.

An exact evaluation therefore has 2..7 rows. A single token gets a throwaway row after it (its KV entry is
removed again). The throwaway row needs no logits when the model's weights are all of types whose one-row
kernel sums like the batch kernel on x86-64 (the last layer and the output matrix then see one row);
otherwise it gets logits too, so that every product sees two rows or more.
"""
from __future__ import annotations

import platform
from pathlib import Path

from gemma_edge.gguf_file import GGUFFile

EXACT_ROWS = range(2, 8)  # the row counts whose evaluations agree bit for bit
MAX_DRAFT = EXACT_ROWS.stop - 2  # a verification evaluates the fed token and at most this many drafts

# GGML types whose one-row product (ggml_vec_dot_*, AVX2 path) sums exactly as their 2..7-row product on
# x86-64 (tinyBLAS_Q0_AVX: one __m256 accumulator, d_x*d_y fused-multiply-added per block, the same
# horizontal sum; the K-quants stay on vec_dot below 8 rows). Not F16/BF16/F32 (tinyBLAS and vec_dot_f16
# accumulate differently) nor IQ4_NL (its vec_dot unrolls two blocks into two accumulators).
ONE_ROW_AS_BATCH_X86 = {"Q4_0": 2, "Q5_0": 6, "Q8_0": 8, "Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14}


def throwaway_row_needs_logits(path: str | Path) -> bool:
    """Does the padding row of a single-token evaluation need logits for this GGUF's weights to see the
    same kernels as a verification batch? False only on x86-64 with every matrix in ONE_ROW_AS_BATCH_X86."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return True
    safe = set(ONE_ROW_AS_BATCH_X86.values())
    return any(len(t.shape) >= 2 and t.ggml_type not in safe for t in GGUFFile(path).tensors)
