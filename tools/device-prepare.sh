#!/usr/bin/env bash
# Fills .devcarry/ (git-ignored) with what tools/device-check.sh needs on a
# CUDA machine that reaches no registry: the Debian .debs of the model-only
# build (-DLLORCH_MODEL_ONLY=ON: absl, GoogleTest; the image has libtorch,
# CMake, ninja, a compiler and numpy), the gguf wheel for the test-model
# maker and two small vocabularies. Pass .devcarry as `carry` to the device run.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/tools/env.sh"
CARRY="$ROOT/.devcarry"
grep -qx '/.devcarry/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.devcarry/' >> "$ROOT/.git/info/exclude"
rm -rf "$CARRY"
mkdir -p "$CARRY/debs" "$CARRY/wheels"
(cd "$CARRY/debs" && apt-get download libabsl-dev libabsl20220623 libgtest-dev libgmock-dev)
"$LLORCH_VENV/bin/pip" download --quiet --no-deps gguf==0.17.1 -d "$CARRY/wheels"
cp "$ROOT/../shared/testdata/vocab/ggml-vocab-llama-spm.gguf" \
  "$ROOT/../shared/testdata/vocab/ggml-vocab-phi-3.gguf" "$CARRY/"
du -sh "$CARRY"
