"""Real GGUF files to fuzz from: our converter's output for a tiny checkpoint of every generation (one
K-quantized through llama.cpp's quantizer) and a Gemma 3 mmproj, converted once and cached by recipe."""
from __future__ import annotations

from pathlib import Path

from tests.convert.tiny import cached_dir

# file name -> (checkpoint builder, its arguments, output type)
CONVERSIONS = {
    "gemma1-f16.gguf": ("gemma", "f16"),
    "gemma2-q8_0.gguf": ("gemma2", "q8_0"),
    "gemma3-q4_k_m.gguf": ("gemma3-k", "q4_k_m"),
    "gemma3-mm-f16.gguf": ("gemma3-mm", "f16"),  # + mmproj-gemma3-mm-f16.gguf
    "gemma3n-f32.gguf": ("gemma3n", "f32"),
    "gemma4-e2b-f32.gguf": ("gemma4-e2b", "f32"),
}
MMPROJ = "mmproj-gemma3-mm-f16.gguf"


def checkpoint(case: str) -> Path:
    if case == "gemma3n":
        from tests.convert.tiny_gemma3n import gemma3n_checkpoint

        return gemma3n_checkpoint()
    if case == "gemma4-e2b":
        from tests.convert.tiny_gemma4 import gemma4_checkpoint

        return gemma4_checkpoint("e2b")
    from tests.convert.tiny_gemma import tiny_checkpoint

    return tiny_checkpoint(case)


def seed_files() -> list[Path]:
    """The converted seeds (text models of every generation, then the mmproj)."""
    sources = {name: checkpoint(case) for name, (case, _) in CONVERSIONS.items()}
    recipe = {name: [sources[name].name, type_name] for name, (_, type_name) in CONVERSIONS.items()}

    def build(directory: Path) -> None:
        from convert.api import convert_checkpoint

        for name, (_, type_name) in CONVERSIONS.items():
            convert_checkpoint(sources[name], directory / name, type_name, force=True)

    directory = cached_dir("fuzz-seeds", recipe, build)
    return [directory / name for name in CONVERSIONS] + [directory / MMPROJ]
