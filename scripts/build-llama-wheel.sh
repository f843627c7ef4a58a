#!/usr/bin/env bash
# Build (once) and print the path of a llama-cpp-python wheel compiled from source for this CPU:
# the RPC backend on, the CPU flags derived from this machine's features (gemma_edge/cpu_build.py:
# GGML_NATIVE=OFF plus each instruction set it has, AMX off), then the user's CMAKE_ARGS (they win).
#
# Every new wheel must pass a smoke run (a subprocess loads the embedded model with it and decodes
# scripts/llama-smoke.json's tokens greedily). If it dies or decodes other tokens, the wheel is
# rebuilt once with the conservative flags (no AVX-512, no AMX); only a wheel that passed is cached,
# with BUILD.json (flags, the CPU features it was compiled for, the smoke result) beside it.
#
# The cache (pip's own ignores CMAKE_ARGS) is keyed by version + flags + arch + CPU feature set.
# Tests replace the two slow steps:
#   GEMMA_EDGE_WHEEL_BUILD  command run with the output directory, CMAKE_ARGS in its environment
#   GEMMA_EDGE_WHEEL_SMOKE  command run with the wheel: exit 0 and one JSON line on stdout = passed,
#                           2 = cannot run here (nothing is rebuilt), anything else = failed
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
version="${LLAMA_CPP_PYTHON_VERSION:?set LLAMA_CPP_PYTHON_VERSION}"
python="${PYTHON:-python3}"
cpu_build() { PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "$python" -m gemma_edge.cpu_build "$@"; }

flags="-DGGML_RPC=on $(cpu_build cmake-args) ${CMAKE_ARGS:-}"
key=$(cpu_build cache-key "$version" "$flags")
root="${GEMMA_EDGE_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gemma-edge/wheels}"
cache="$root/$key"
wheel=$(ls "$cache"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n1 || true)
if [ -n "$wheel" ]; then
  printf '%s\n' "$wheel"
  exit 0
fi

mkdir -p "$root"
tmp=$(mktemp -d "$root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

build() {  # $1: flags. Prints the new wheel's path.
  rm -rf "$tmp/out" && mkdir -p "$tmp/out"
  echo "building llama-cpp-python $version from source (CMAKE_ARGS='$1'); this takes 6-15 minutes once" >&2
  if [ -n "${GEMMA_EDGE_WHEEL_BUILD:-}" ]; then
    CMAKE_ARGS="$1" $GEMMA_EDGE_WHEEL_BUILD "$tmp/out" >&2
  else
    CMAKE_ARGS="$1" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}" \
      "$python" -m pip wheel --no-deps --no-binary llama-cpp-python --no-cache-dir \
      -w "$tmp/out" "llama-cpp-python==$version" >&2
  fi
  ls "$tmp/out"/llama_cpp_python-"$version"-*.whl | head -n1
}

smoke() {  # $1: wheel. Its JSON result goes to $tmp/smoke.json; returns the smoke's status.
  if [ -n "${GEMMA_EDGE_WHEEL_SMOKE:-}" ]; then
    $GEMMA_EDGE_WHEEL_SMOKE "$1" > "$tmp/smoke.json"
  else
    cpu_build smoke "$1" > "$tmp/smoke.json"
  fi
}

why() {  # $1: a failed smoke's status
  if [ "$1" -gt 128 ]; then
    echo "died by SIG$(kill -l $(($1 - 128)))"
  else
    echo "exit $1: $(tail -c 300 "$tmp/smoke.json")"
  fi
}

built=$(build "$flags")
fallback=0
status=0
smoke "$built" || status=$?
if [ "$status" = 2 ]; then
  echo "the smoke run cannot run here (see above); nothing was cached" >&2
  exit 1
fi
if [ "$status" != 0 ]; then
  # The user's CMAKE_ARGS come before the conservative set here: it must win over a requested AMX.
  flags="-DGGML_RPC=on ${CMAKE_ARGS:-} $(cpu_build cmake-args --conservative)"
  echo "the new llama.cpp build failed its smoke run ($(why "$status")):" \
    "rebuilding once with the conservative flags (no AVX-512, no AMX)" >&2
  built=$(build "$flags")
  fallback=1
  status=0
  smoke "$built" || status=$?
  if [ "$status" != 0 ]; then
    echo "the conservative build failed its smoke run too ($(why "$status")); nothing was cached" >&2
    exit 1
  fi
fi

cpu_build record "$tmp/smoke.json" "$flags" "$fallback" > "$tmp/out/BUILD.json"
mv "$tmp/out" "$cache" 2>/dev/null || true  # a concurrent build may have filled it first: keep that one
ls "$cache"/llama_cpp_python-"$version"-*.whl | head -n1
