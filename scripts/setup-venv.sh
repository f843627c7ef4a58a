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

# llama-cpp-python: our own wheel cache, keyed by version + build flags.
wheel=$(LLAMA_CPP_PYTHON_VERSION="$llama_version" PYTHON="$py" scripts/build-llama-wheel.sh)
if [ "$(cat "$venv/.llama-wheel" 2>/dev/null)" != "$wheel" ]; then
  pip_install --force-reinstall --no-deps "$wheel"
  pip_install "$wheel"   # its own dependencies (numpy, jinja2, diskcache, typing-extensions)
  printf '%s\n' "$wheel" > "$venv/.llama-wheel"
fi

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
