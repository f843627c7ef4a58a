#!/usr/bin/env bash
# Build (once) and print the path of a llama-cpp-python wheel compiled from source with
# the RPC backend on plus the user's CMAKE_ARGS. pip's own wheel cache ignores CMAKE_ARGS,
# so wheels are kept in our own cache, keyed by version + build flags.
set -euo pipefail
version="${LLAMA_CPP_PYTHON_VERSION:?set LLAMA_CPP_PYTHON_VERSION}"
python="${PYTHON:-python3}"
flags="-DGGML_RPC=on ${CMAKE_ARGS:-}"
key=$(printf '%s|%s|%s' "$version" "$flags" "$(uname -m)" | sha256sum | cut -c1-16)
cache="${GEMMA_EDGE_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gemma-edge/wheels}/$key"
wheel=$(ls "$cache"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  echo "building llama-cpp-python $version from source (CMAKE_ARGS='$flags'); this takes 6-15 minutes once" >&2
  tmp=$(mktemp -d "${cache%/*}/.build.XXXXXX" 2>/dev/null || { mkdir -p "${cache%/*}"; mktemp -d "${cache%/*}/.build.XXXXXX"; })
  trap 'rm -rf "$tmp"' EXIT
  CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}" \
    "$python" -m pip wheel --no-deps --no-binary llama-cpp-python --no-cache-dir \
    -w "$tmp" "llama-cpp-python==$version" >&2
  mkdir -p "$cache"
  mv "$tmp"/llama_cpp_python-*.whl "$cache"/
  printf '%s\n' "$flags" > "$cache/FLAGS"
  wheel=$(ls "$cache"/llama_cpp_python-"$version"-*.whl | head -n1)
fi
printf '%s\n' "$wheel"
