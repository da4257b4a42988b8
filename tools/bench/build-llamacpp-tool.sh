#!/usr/bin/env bash
# Builds a llama.cpp harness from tools/bench (llamacpp_bench: throughput;
# llamacpp_score: teacher-forced scoring under a chosen CPU variant;
# llamacpp_quantize: llama.cpp's own quantiser, for the K-quant test models;
# llamacpp_pieces: token_to_piece, the streamed-text reference) against the
# prebuilt CPU libllama that
# node-llama-cpp ships (tests/peer/node_modules), with llama.h/ggml headers
# from the llama.cpp source bundle in the same package. Kept out of the main
# CMake build, which must not depend on npm.
#   tools/bench/build-llamacpp-tool.sh bench|score [OUTPUT]   (default build/bin/llamacpp_NAME)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$ROOT/tools/env.sh"
TOOL="${1:?usage: build-llamacpp-tool.sh bench|score|quantize|pieces [OUTPUT]}"
[[ "$TOOL" == bench || "$TOOL" == score || "$TOOL" == quantize || "$TOOL" == pieces ]] || { echo "build-llamacpp-tool: unknown tool $TOOL" >&2; exit 2; }
OUTPUT="${2:-$ROOT/build/bin/llamacpp_$TOOL}"
PEER="$ROOT/tests/peer/node_modules"
LIB_DIR="$PEER/@node-llama-cpp/linux-x64/bins/linux-x64"
BUNDLE="$PEER/node-llama-cpp/llama/gitRelease.bundle"
SRC="${LLAMACPP_SRC:-$LLORCH_CACHE/llama.cpp-src}"

die() { echo "build-llamacpp-tool: $*" >&2; exit 1; }
[[ -d "$LIB_DIR" ]] || die "no prebuilt llama.cpp in $LIB_DIR (run npm ci --ignore-scripts in tests/peer)"
[[ -f "$BUNDLE" ]] || die "no source bundle $BUNDLE"

# Headers: a clone of the bundle, refreshed when the bundle's commit changes.
bundle_head="$(git bundle list-heads "$BUNDLE" | awk '$2 == "HEAD" {print $1}')"
if [[ ! -d "$SRC/.git" ]] || [[ "$(git -C "$SRC" rev-parse HEAD)" != "$bundle_head" ]]; then
  rm -rf "$SRC.tmp"
  git clone --quiet "$BUNDLE" "$SRC.tmp"
  rm -rf "$SRC"
  mv "$SRC.tmp" "$SRC"
fi

# Version check 1: the library and the source bundle name the same release.
lib_release="$(sed -n 's/.*"release":"\([^"]*\)".*/\1/p' "$LIB_DIR/_nlcBuildMetadata.json")"
src_release="$(sed -n 's/.*"tag": *"\([^"]*\)".*/\1/p' "$PEER/node-llama-cpp/llama/llama.cpp.info.json")"
[[ -n "$lib_release" && "$lib_release" == "$src_release" ]] \
  || die "prebuilt library is release '$lib_release' but the source bundle is '$src_release'"

shopt -s nullglob
llama_libs=("$LIB_DIR"/libllama.v*.so)
ggml_libs=("$LIB_DIR"/libggml.v*.so)
[[ ${#llama_libs[@]} -eq 1 && ${#ggml_libs[@]} -eq 1 ]] || die "expected one libllama.v*.so and one libggml.v*.so in $LIB_DIR"
llama_lib="${llama_libs[0]}"
ggml_lib="${ggml_libs[0]}"

# Version check 2: the header's API and the library's exports are the same
# set of functions (a header from another version adds or drops some).
header_api="$(grep -oE 'LLAMA_API[^;]*' "$SRC/include/llama.h" | grep -v '^ *//' \
  | grep -oE '\bllama_[a-z0-9_]+ *\(' | tr -d '( ' | sort -u)"
lib_api="$(nm -D --defined-only "$llama_lib" | awk '{print $3}' | grep '^llama_' | sort -u)"
missing="$(comm -23 <(echo "$header_api") <(echo "$lib_api") | grep -vx 'llama_decode_with_sampler' || true)"
extra="$(comm -13 <(echo "$header_api") <(echo "$lib_api") || true)"
[[ -z "$missing" ]] || die "llama.h declares functions libllama lacks: $(echo $missing)"
[[ -z "$extra" ]] || die "libllama exports functions llama.h lacks: $(echo $extra)"

mkdir -p "$(dirname "$OUTPUT")"
g++ -std=c++17 -O2 -Wall -Wextra \
  -I"$SRC/include" -I"$SRC/ggml/include" \
  -DLLAMACPP_LIB_DIR="\"$LIB_DIR\"" \
  "$ROOT/tools/bench/llamacpp_$TOOL.cc" \
  "$llama_lib" "$ggml_lib" "$LIB_DIR/libggml-base.so" \
  -Wl,-rpath,"$LIB_DIR" \
  -o "$OUTPUT"
echo "built $OUTPUT (llama.cpp $lib_release, headers from $SRC @ ${bundle_head:0:12})"
