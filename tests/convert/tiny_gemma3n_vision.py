"""A tiny seeded random Gemma 3n checkpoint WITH its MobileNetV5 vision tower, and transformers' image
features for it (the oracle of ``test_mmproj_gemma3n_vision.py``).

transformers builds Gemma 3n's vision tower through timm (``TimmWrapperModel`` → ``timm.create_model(
"mobilenetv5_300m_enc", **vision_config.model_args)``). timm imports torchvision at module level (data
transforms, ``FrozenBatchNorm2d``), and PyPI's torchvision for the pinned torch is a CUDA build whose
compiled ops cannot load beside the CPU torch. MobileNetV5 uses none of torchvision, so the build and
the oracle run in a **subprocess** (``python -m tests.convert.tiny_gemma3n_vision``) where:

* ``torchvision`` is an inert placeholder: every name in it is a class that raises when instantiated
  (so anything that really used torchvision would fail loudly, not compute something else);
* transformers' timm wrapper gets the imported ``timm`` (its ``is_timm_available()`` also asks for
  torchvision's package metadata) — the model, its forward and ``get_image_features`` are transformers'
  and timm's own code.

The pytest process never sees the placeholder. Tower size: ``model_args`` overrides timm's block table
(what ``_gen_mobilenet_v5`` allows): 4 stages like the real tower (edge-residual stage, inverted-residual
stage, then two stages with multi-query attention — one with stride-2 K/V down-sampling, one without),
8-24 channels, stem 8. Fixed by timm/transformers/llama.cpp: the MSFA output width (2048 = vision
``hidden_size``), its 16×16 output grid (256 tokens), so the native image is 256×256 (4 stride-2 steps
to the first fused stage, 16×16), and — because mtmd's projection needs text ``hidden_size`` = vision
``hidden_size`` — a 2048-wide text model (tiny_gemma3n's recipe otherwise, FFN 64 wide). The audio tower
is tiny_gemma3n_audio's, so the file is a complete Gemma3nForConditionalGeneration like Google's.
"""
from __future__ import annotations

import copy
import importlib.abc
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

from tests.convert.tiny import cached_dir, cached_file, write_tiny_tokenizer
from tests.convert.tiny_gemma3n import RECIPE as TEXT_RECIPE
from tests.convert.tiny_gemma3n_audio import AUDIO_CONFIG
from tests.convert.tiny_gemma4 import perturb_, save_checkpoint

BUILDER_VERSION = 1
IMAGE_SIZE = 256
IMAGE_TOKENS = 256  # Gemma3nConfig.vision_soft_tokens_per_image; MSFA's 16×16 grid
VISION_HIDDEN = 2048  # timm's MobileNetV5Encoder.num_features (fixed)
TEXT = {**copy.deepcopy(TEXT_RECIPE), "hidden_size": VISION_HIDDEN, "intermediate_size": 64,
        "max_position_embeddings": 1024}  # room for an image (256 tokens) and a question
BLOCKS = [  # timm's block notation (_efficientnet_builder); the real table has 3 / 5 / 37 / 39 blocks
    ["er_r1_k3_s2_e4_c8", "er_r1_k3_s1_e4_c8"],
    ["uir_r1_a3_k5_s2_e2_c16", "uir_r1_a5_k0_s1_e2_c16"],
    ["uir_r1_a5_k5_s2_e2_c16", "mqa_r1_k3_h2_v2_s1_d8_c16", "uir_r1_a0_k0_s1_e2_c16"],
    ["uir_r1_a5_k5_s2_e2_c24", "mqa_r1_k3_h2_s1_d8_c24", "uir_r1_a0_k0_s1_e2_c24"],
]
STEM = 8
PREPROCESSOR = {  # Google's Gemma 3n preprocessor_config.json, at the tiny tower's native size
    "image_processor_type": "SiglipImageProcessor", "processor_class": "Gemma3nProcessor",
    "do_resize": True, "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}, "resample": 2,
    "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": False,
    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": None,
    "image_seq_length": IMAGE_TOKENS,
}
REPO = Path(__file__).resolve().parents[2]


TIMM_PIN = "timm==1.0.31"  # MobileNetV5 is in timm >= 1.0.16; transformers 5.23 asks for >= 1.0.23


def require_timm() -> None:
    """Skip (user machine) or fail (CI, where a skipped oracle proves nothing) without timm. It must be
    installed with ``--no-deps``: its torchvision dependency would break transformers' image processors."""
    import importlib.util

    import pytest

    from tests.conftest import IN_CI

    if importlib.util.find_spec("timm") is None:
        message = f"timm is not installed (pip install --no-deps {TIMM_PIN}): no Gemma 3n vision oracle"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def gemma3n_vision_checkpoint(dtype: str = "bfloat16", seed: int = 0) -> Path:
    """The cached checkpoint directory (config.json, model.safetensors, preprocessor config, tokenizer)."""
    require_timm()
    recipe = _recipe(dtype, seed)
    return cached_dir("gemma3n-vision", recipe, lambda out: _run("build", out, recipe))


def without_audio_tower(model_dir: Path) -> Path:
    """``model_dir`` without its audio tower's tensors (config unchanged), cached: what llama.cpp's reference
    converter reads (it cannot map transformers 5's ``subsample_conv_projection.conv_0.norm``)."""
    def build(out: Path) -> None:
        from safetensors.torch import load_file, save_file

        for item in model_dir.iterdir():
            if item.is_file() and item.name not in ("model.safetensors", ".complete"):
                shutil.copy2(item, out / item.name)
        tensors = load_file(model_dir / "model.safetensors")
        save_file({name: value for name, value in tensors.items()
                   if not name.startswith(("model.audio_tower.", "model.embed_audio."))},
                  out / "model.safetensors", metadata={"format": "pt"})

    return cached_dir("gemma3n-vision-no-audio", {"from": model_dir.name}, build)


def image_features(rgb: np.ndarray, dtype: str = "bfloat16", seed: int = 0) -> np.ndarray:
    """transformers' projected image features (``get_image_features(...).pooler_output[0]``, float32
    (256, 2048)) of the checkpoint for an RGB uint8 image, pixels from its own image processor; cached."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    model_dir = gemma3n_vision_checkpoint(dtype, seed)
    recipe = {"checkpoint": model_dir.name, "image": _digest(rgb), "builder": BUILDER_VERSION}

    def build(path: Path) -> None:
        image = path.with_name(path.name + ".image.npy")
        np.save(image, rgb)
        try:
            _run("features", model_dir, {"image": str(image), "out": str(path)})
        finally:
            image.unlink(missing_ok=True)

    return np.load(cached_file("gemma3n-vision-features", recipe, ".npy", build))


def _recipe(dtype: str, seed: int) -> dict:
    return {"builder": BUILDER_VERSION, "dtype": dtype, "seed": seed, "text": TEXT, "audio": AUDIO_CONFIG,
            "blocks": BLOCKS, "stem": STEM, "preprocessor": PREPROCESSOR}


def _digest(array: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(array.tobytes() + str(array.shape).encode()).hexdigest()[:16]


def _run(command: str, directory: Path, args: dict) -> None:
    """Run ``command`` of this module in a fresh interpreter (see the module docstring for why)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "tests.convert.tiny_gemma3n_vision", command, str(directory),
                           json.dumps(args)], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"tiny_gemma3n_vision {command} failed:\n{done.stderr[-4000:]}")


# ---------------------------------------------------------------- inside the subprocess


class _AbsentMeta(type):
    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _AbsentMeta(f"{cls.__name__}.{name}", (_Absent,), {})


class _Absent(metaclass=_AbsentMeta):
    """A torchvision name: importable, usable as a dict key or base class, never instantiable."""

    def __new__(cls, *args, **kwargs):
        raise RuntimeError(f"{cls.__name__} is torchvision's, which is not available here")


class _TorchvisionPlaceholder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def absent(name: str, _module: str = spec.name):
            if name.startswith("__"):
                raise AttributeError(name)
            return _AbsentMeta(f"{_module}.{name}", (_Absent,), {})

        module.__getattr__ = absent
        return module

    def exec_module(self, module) -> None:
        pass


def _import_timm_into_transformers():
    try:
        import torchvision  # noqa: F401  (a working one: nothing to stand in for)
    except Exception:  # noqa: BLE001  (absent, or PyPI's CUDA build failing to load its ops)
        placeholder = _TorchvisionPlaceholder()
        sys.meta_path.insert(0, placeholder)
        try:
            import timm
        finally:  # only timm's import sees it; transformers still finds no torchvision afterwards
            sys.meta_path.remove(placeholder)
            for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
                del sys.modules[name]
    import timm
    from transformers.models.timm_wrapper import modeling_timm_wrapper

    modeling_timm_wrapper.timm = timm
    modeling_timm_wrapper.requires_backends = lambda *args, **kwargs: None


def _build(out: Path, recipe: dict) -> None:
    import torch
    from timm.models._efficientnet_builder import decode_arch_def
    from transformers import (
        Gemma3nAudioConfig, Gemma3nConfig, Gemma3nForConditionalGeneration, Gemma3nTextConfig, Gemma3nVisionConfig,
    )

    def model_args() -> dict:  # fresh each time: timm's builder fills the block dicts in place
        return {"block_args": decode_arch_def(recipe["blocks"]), "stem_size": recipe["stem"]}

    vision = Gemma3nVisionConfig(hidden_size=VISION_HIDDEN, model_args=model_args())
    text = Gemma3nTextConfig(pad_token_id=0, eos_token_id=1, bos_token_id=2, **recipe["text"])
    config = Gemma3nConfig(text_config=text, vision_config=vision, audio_config=Gemma3nAudioConfig(**recipe["audio"]),
                           vision_soft_tokens_per_image=IMAGE_TOKENS)
    torch.manual_seed(recipe["seed"])
    model = Gemma3nForConditionalGeneration(config).eval()
    perturb_(model, recipe["seed"])
    model.config.vision_config.model_args = model_args()
    save_checkpoint(model, out, recipe["dtype"])
    (out / "preprocessor_config.json").write_text(json.dumps(recipe["preprocessor"], indent=2, sort_keys=True))
    write_tiny_tokenizer(out)


def _features(model_dir: Path, args: dict) -> None:
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, Gemma3nForConditionalGeneration

    processor = AutoImageProcessor.from_pretrained(model_dir)
    rgb = np.load(args["image"])
    pixels = processor(images=Image.fromarray(rgb), return_tensors="pt")["pixel_values"]
    model = Gemma3nForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        features = model.get_image_features(pixels.float()).pooler_output[0].numpy()
    with open(args["out"], "wb") as handle:
        np.save(handle, features.astype(np.float32))


if __name__ == "__main__":
    _import_timm_into_transformers()
    command, directory, arguments = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    {"build": _build, "features": _features}[command](directory, arguments)
