#!/usr/bin/env bash
# Build llama-cpp-python's wheel once, into a gitignored wheelhouse, and print its path.
#   .ci/llama-wheel.sh            the wheel for the version .ci/requirements.lock pins
# PyPI has only the sdist (a C++ build of 4-6 minutes on 2 cores). Making the wheel explicit
# means `make install` pays for the build once per machine (not once per virtualenv, and not
# again when pip's cache is cleared), and the engine image (inference/images/llm-llamacpp)
# installs the very same wheel. The sdist is downloaded with --require-hashes against the hash
# in the lock, so the wheel is built from the bytes the lock names.
# Environment:
#   LLAMA_WHEELHOUSE            where the wheel goes; default var/wheels/llama-cpp-python
#   CMAKE_BUILD_PARALLEL_LEVEL  compile jobs; default 2
# Needs g++ and CMake >= 3.21 (.ci/system-deps.sh installs them).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lock=$root/.ci/requirements.lock
dir=${LLAMA_WHEELHOUSE:-$root/var/wheels/llama-cpp-python}
# Portable build (docs/notes/MODELS.md §2): no -march=native, so the wheel runs on any AVX2
# x86-64 CPU (another machine, the engine image); no multimodal library, no C++ tools or tests
# (the Python server uses none of them), no OpenMP or BLAS (fewer shared libraries to ship).
cmake_args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
cmake_args+=" -DLLAVA_BUILD=OFF -DGGML_BLAS=OFF -DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF"
cmake_args+=" -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"

say() { printf '\033[1;32m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'llama-wheel.sh: %s\n' "$*" >&2; exit 1; }

# The lock's entry for llama-cpp-python: its pin and hash lines, up to the last continued line.
entry=$(awk '/^llama-cpp-python==/ { on = 1 } on { print } on && !/\\$/ { exit }' "$lock")
[ -n "$entry" ] || die "no llama-cpp-python pin in ${lock#"$root"/}"
version=$(printf '%s\n' "$entry" | sed -n '1s/^llama-cpp-python==\([^ ]*\).*/\1/p')
# A wheel is reused only when it was built from the same locked sdist with the same flags.
key=$(printf '%s\n' "$entry" "$cmake_args" "$(uname -m)" | sha256sum | cut -c1-64)
if [ "$(cat "$dir/.complete" 2>/dev/null)" = "$key" ]; then
  wheel=$(find "$dir" -maxdepth 1 -name "llama_cpp_python-$version-*.whl" | head -n1)
  [ -n "$wheel" ] && { printf '%s\n' "$wheel"; exit 0; }
fi

command -v g++ >/dev/null && command -v cmake >/dev/null ||
  die "building llama-cpp-python needs g++ and cmake: run .ci/system-deps.sh run"
if [ -x "$root/.venv/bin/python" ]; then
  pip=("$root/.venv/bin/python" -m pip)
else
  pip=(python3 -m pip)
fi
started=$(date +%s)
say "Building llama-cpp-python $version from its sdist into ${dir#"$root"/} (once; 4-6 min on 2 cores)"
mkdir -p "$(dirname "$dir")"
rm -rf "$dir.tmp"
mkdir -p "$dir.tmp/sdist"
"${pip[@]}" download --quiet --disable-pip-version-check --no-deps --no-binary=:all: \
  --require-hashes -r <(printf '%s\n' "$entry") --dest "$dir.tmp/sdist"
CMAKE_ARGS=$cmake_args CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
  "${pip[@]}" wheel --quiet --disable-pip-version-check --no-deps --no-cache-dir \
  --wheel-dir "$dir.tmp" "$dir.tmp/sdist/llama_cpp_python-$version.tar.gz" >&2
rm -rf "$dir.tmp/sdist"
echo "$key" >"$dir.tmp/.complete"
rm -rf "$dir"
mv "$dir.tmp" "$dir"
wheel=$(find "$dir" -maxdepth 1 -name "llama_cpp_python-$version-*.whl" | head -n1)
[ -n "$wheel" ] || die "pip wheel made no llama_cpp_python-$version wheel"
say "Built $(basename "$wheel") ($(du -h "$wheel" | cut -f1), $(($(date +%s) - started)) s)"
printf '%s\n' "$wheel"
