#!/usr/bin/env bash
# Fills .devcarry/ (git-ignored) with what tools/device-check.sh needs on a
# CUDA machine that reaches no registry: the Debian .debs of the model-only
# build (-DLLORCH_MODEL_ONLY=ON: absl, GoogleTest; the image has libtorch,
# CMake, ninja, a compiler and numpy), the gguf wheel for the test-model
# maker and two small vocabularies; and for the worker's build (the stage
# `worker`: llorch-worker and the llorch CLI) the .debs of gRPC, Protobuf
# (protoc and gRPC's plugin), sentencepiece, utf8proc, PCRE2, cpp-httplib,
# OpenSSL, nlohmann-json and pkgconf (Debian 12's, unpacked there into a
# prefix; their own dependencies are glibc, libstdc++ and zlib alone), and
# the chat-template library that cargo built here (the image has no cargo).
# Pass .devcarry as `carry` to the device run (about 43 MiB of its 64).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/tools/env.sh"
CARRY="$ROOT/.devcarry"
BUILD="${BUILD:-$ROOT/build}"
grep -qx '/.devcarry/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.devcarry/' >> "$ROOT/.git/info/exclude"
rm -rf "$CARRY"
mkdir -p "$CARRY/debs" "$CARRY/wheels" "$CARRY/worker/debs"
(cd "$CARRY/debs" && apt-get download libabsl-dev libabsl20220623 libgtest-dev libgmock-dev)
WORKER_DEBS=(
  libgrpc++-dev libgrpc-dev libgrpc++1.51 libgrpc29 protobuf-compiler-grpc
  libprotobuf-dev libprotobuf32 libprotobuf-lite32 libprotoc32 protobuf-compiler
  libre2-dev libre2-9 libc-ares-dev libc-ares2 libssl-dev libssl3 zlib1g-dev
  libsentencepiece-dev libsentencepiece0 libutf8proc-dev libutf8proc2
  libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3
  libcpp-httplib-dev libcpp-httplib0.11 libbrotli-dev libbrotli1 nlohmann-json3-dev
  pkgconf pkgconf-bin libpkgconf3)
(cd "$CARRY/worker/debs" && apt-get download "${WORKER_DEBS[@]}")
# The chat-template staticlib as the main build made it, debug sections
# dropped (28 -> 20 MB).
lib="$BUILD/worker/chat/cargo-target/release/libllorch_chat_template_ffi.a"
[[ -f "$lib" ]] || cmake --build "$BUILD" --target llorch_chat_template_ffi_build
strip --strip-debug -o "$CARRY/worker/libllorch_chat_template_ffi.a" "$lib"
"$LLORCH_VENV/bin/pip" download --quiet --no-deps gguf==0.17.1 -d "$CARRY/wheels"
cp "$ROOT/../shared/testdata/vocab/ggml-vocab-llama-spm.gguf" \
  "$ROOT/../shared/testdata/vocab/ggml-vocab-phi-3.gguf" "$CARRY/"
du -sh "$CARRY"
