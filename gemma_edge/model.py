"""What a GGUF is: Gemma generation, turn format, size, quantization, context, special tokens.

Facts come from the GGUF header first; `models.yaml` only adds what a file cannot say. How each
generation shows itself in GGUF metadata is the runtime generation table's (`gemma_edge.generations`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gemma_edge.errors import InvalidModelError
from gemma_edge.generations import ARCHITECTURES, generation_of
from gemma_edge.gguf_file import GGUFFile
from gemma_edge.gguf_keys import check_vocabulary

@dataclass(frozen=True)
class ModelFacts:
    path: Path
    name: str
    architecture: str
    generation: str
    format: str
    size_label: str
    parameters: int
    file_size: int
    weights_bytes: int
    quantization: str
    context_length: int
    n_layers: int
    kv_bytes_per_token: int
    bos_token: str
    eos_token: str
    # what generation stops at besides EOS, from the generation table: the end of a model turn first
    stop_markers: tuple[str, ...]
    has_chat_template: bool
    instruct: bool
    # tokenizer.ggml.suppress_tokens (Gemma 4 Unified): ids the sampler must never pick
    suppress_tokens: tuple[int, ...] = ()
    embeds: bool = False  # an embedding model: Model.embed works, generate/chat do not

    @property
    def end_of_turn(self) -> str:
        """The token that ends a model turn ("" for an embedding model)."""
        return self.stop_markers[0] if self.stop_markers else ""

    def describe(self) -> dict:
        return {
            "path": str(self.path), "name": self.name, "generation": self.generation, "format": self.format,
            "architecture": self.architecture, "size": self.size_label, "parameters": self.parameters,
            "quantization": self.quantization, "file_size": self.file_size, "context_length": self.context_length,
            "layers": self.n_layers, "instruct": self.instruct,
            "special_tokens": {"bos": self.bos_token, "eos": self.eos_token, "end_of_turn": self.end_of_turn},
            "chat_template": "embedded" if self.has_chat_template else "none", "embeds": self.embeds,
        }


def read_model_facts(path: str | Path) -> ModelFacts:
    """Read and check a GGUF: it must be well-formed, complete and of a Gemma architecture."""
    gguf = GGUFFile(path)
    try:
        generation = generation_of(gguf.architecture)
        if generation is None:
            supported = ", ".join(sorted(ARCHITECTURES))
            raise InvalidModelError(
                f"{gguf.path}: architecture {gguf.architecture or '?'!r} is not a Gemma model "
                f"(gemma-edge runs: {supported})")
        if not gguf.array_length("tokenizer.ggml.tokens"):
            raise InvalidModelError(f"{gguf.path}: GGUF has no tokenizer vocabulary")
        check_vocabulary(gguf)

        def token(key: str) -> str:
            idx = gguf.get(key)
            return (gguf.string_at("tokenizer.ggml.tokens", idx) or "") if isinstance(idx, int) else ""

        template = gguf.get("tokenizer.chat_template")
        name = str(gguf.get("general.name") or gguf.path.stem)
        tags = " ".join(str(gguf.get(k) or "") for k in ("general.name", "general.finetune", "general.basename"))
        variant = generation.variant_of(gguf)
        instruct = not generation.embeds and (
            bool(template) or any(t in tags.lower() for t in ("-it", " it", "instruct", "_it")))
        return ModelFacts(
            path=gguf.path,
            name=name,
            architecture=gguf.architecture,
            generation=generation.name,
            format=variant.format,
            size_label=str(gguf.get("general.size_label") or ""),
            parameters=gguf.parameter_count,
            file_size=gguf.file_size,
            weights_bytes=gguf.weights_bytes,
            quantization=_file_type_name(gguf.get("general.file_type")),
            context_length=int(gguf.arch_get("context_length") or 8192),
            n_layers=int(gguf.arch_get("block_count") or 0),
            kv_bytes_per_token=_kv_bytes_per_token(gguf),
            bos_token=token("tokenizer.ggml.bos_token_id"),
            eos_token=token("tokenizer.ggml.eos_token_id"),
            stop_markers=variant.stop_markers,
            has_chat_template=bool(template),
            instruct=instruct,
            suppress_tokens=_suppress_tokens(gguf),
            embeds=generation.embeds,
        )
    finally:
        gguf.close()


def _suppress_tokens(gguf: GGUFFile) -> tuple[int, ...]:
    """The ids llama.cpp's loader keeps of tokenizer.ggml.suppress_tokens (those inside the vocabulary)."""
    n_tokens = gguf.array_length("tokenizer.ggml.tokens")
    return tuple(sorted({int(i) for i in gguf.array("tokenizer.ggml.suppress_tokens") if 0 <= int(i) < n_tokens}))


def _per_layer(gguf: GGUFFile, key: str, n_layers: int) -> list[int]:
    value = gguf.arch_get(key)
    if value is None:
        values = gguf.array(f"{gguf.architecture}.{key}")
        return [int(v) for v in values] or [0] * n_layers
    return [int(value)] * n_layers


def _kv_bytes_per_token(gguf: GGUFFile) -> int:
    """Upper bound of the F16 KV cache per context token (all layers at the largest head size)."""
    n_layers = int(gguf.arch_get("block_count") or 0)
    heads_kv = _per_layer(gguf, "attention.head_count_kv", n_layers)
    head_dim = max(int(gguf.arch_get("attention.key_length") or 0), int(gguf.arch_get("attention.value_length") or 0))
    return sum(2 * h * head_dim * 2 for h in heads_kv)


def _file_type_name(file_type) -> str:
    if file_type is None:
        return "unknown"
    from gguf import LlamaFileType

    try:
        return LlamaFileType(int(file_type)).name.replace("MOSTLY_", "").replace("ALL_", "")
    except ValueError:
        return f"type {file_type}"
