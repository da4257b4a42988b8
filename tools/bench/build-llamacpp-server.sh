#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` (the peer of tools/bench-serve.sh) from
# the llama.cpp source that node-llama-cpp ships (tests/peer/node_modules/
# node-llama-cpp/llama/gitRelease.bundle, the same release as the prebuilt
# libllama of the conformance tests): CPU only, Release, tuned for this CPU
# (GGML_NATIVE, as a local llama.cpp build does by default), no curl, no
# OpenSSL, no web UI, static libraries. Only the llama-server target.
# Idempotent: skips the build when the binary was built from the same commit
# with the same options. Prints the binary's path on stdout (the last line).
#   tools/bench/build-llamacpp-server.sh        (JOBS=N for parallel jobs, default: all cores)
# Output: $LLORCH_CACHE/llama-server-build/bin/llama-server (-build-clang on
# CPUs with AMX, below); source cloned to
# $LLORCH_CACHE/llama.cpp-src (shared with build-llamacpp-tool.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$ROOT/tools/env.sh"
BUNDLE="$ROOT/tests/peer/node_modules/node-llama-cpp/llama/gitRelease.bundle"
SRC="${LLAMACPP_SRC:-$LLORCH_CACHE/llama.cpp-src}"
BUILD="${LLAMACPP_SERVER_BUILD:-$LLORCH_CACHE/llama-server-build}"
BIN="$BUILD/bin/llama-server"
JOBS="${JOBS:-$(nproc)}"

die() { echo "build-llamacpp-server: $*" >&2; exit 1; }
[[ -f "$BUNDLE" ]] || die "no source bundle $BUNDLE (run npm ci --ignore-scripts in tests/peer, or tools/setup.sh)"
command -v cmake >/dev/null || die "cmake is not installed"

# The source: a clone of the bundle, refreshed when the bundle's commit changes
# (as build-llamacpp-tool.sh does).
bundle_head="$(git bundle list-heads "$BUNDLE" | awk '$2 == "HEAD" {print $1}')"
[[ -n "$bundle_head" ]] || die "no HEAD in $BUNDLE"
if [[ ! -d "$SRC/.git" ]] || [[ "$(git -C "$SRC" rev-parse HEAD)" != "$bundle_head" ]]; then
  rm -rf "$SRC.tmp"
  git clone --quiet "$BUNDLE" "$SRC.tmp"
  rm -rf "$SRC"
  mv "$SRC.tmp" "$SRC"
fi

OPTIONS=(
  -DCMAKE_BUILD_TYPE=Release
  -DBUILD_SHARED_LIBS=OFF
  -DGGML_NATIVE=ON
  -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
)
# On CPUs with AMX, GCC 12 (Debian 12's) miscompiles ggml's tile setup: its
# _tile_loadconfig says it reads 8 bytes of the config, the stores of the
# rest are dropped as dead, and the first AMX product faults (llama-server
# segfaults while warming up; worker/model/amx_kernels.cc has the same
# workaround for llorch's kernels). clang (tools/setup.sh installs it)
# builds it right.
if grep -qw amx_tile /proc/cpuinfo 2>/dev/null && command -v clang++ >/dev/null &&
   [[ "$(gcc -dumpversion 2>/dev/null || echo 0)" -lt 13 ]]; then
  OPTIONS+=(-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++)
  BUILD="$BUILD-clang"  # a build tree is configured for one compiler
  BIN="$BUILD/bin/llama-server"
fi
# What the binary was built from: the commit, the options and this CPU's
# flags (GGML_NATIVE compiles for the CPU it builds on).
stamp="$bundle_head ${OPTIONS[*]} $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | md5sum | cut -c1-12)"
if [[ -x "$BIN" && -f "$BUILD/.llorch-stamp" && "$(cat "$BUILD/.llorch-stamp")" == "$stamp" ]]; then
  echo "build-llamacpp-server: up to date (llama.cpp ${bundle_head:0:12})" >&2
  echo "$BIN"
  exit 0
fi

mkdir -p "$(dirname "$BUILD")"
GENERATOR=()
command -v ninja >/dev/null && GENERATOR=(-G Ninja)
[[ -f "$BUILD/CMakeCache.txt" ]] && GENERATOR=()  # keep the generator it was configured with
echo "build-llamacpp-server: building llama-server from llama.cpp ${bundle_head:0:12} with $JOBS jobs (minutes)" >&2
rm -f "$BUILD/.llorch-stamp"
cmake -S "$SRC" -B "$BUILD" "${GENERATOR[@]}" "${OPTIONS[@]}" >"$BUILD.configure.log" 2>&1 \
  || { tail -n 30 "$BUILD.configure.log" >&2; die "cmake configure failed (log: $BUILD.configure.log)"; }
cmake --build "$BUILD" --target llama-server -j "$JOBS" >&2
[[ -x "$BIN" ]] || die "no $BIN after the build"
echo "$stamp" >"$BUILD/.llorch-stamp"
echo "build-llamacpp-server: built $BIN (llama.cpp ${bundle_head:0:12})" >&2
echo "$BIN"
