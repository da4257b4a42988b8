#!/usr/bin/env bash
# Fills .devcarry/ (git-ignored) with what tools/device-check.sh needs on a
# CUDA machine that reaches no registry: Debian .debs, the gguf wheel and a
# small vocabulary. Pass .devcarry as `carry` to the device run.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/tools/env.sh"
CARRY="$ROOT/.devcarry"
grep -qx '/.devcarry/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.devcarry/' >> "$ROOT/.git/info/exclude"
mkdir -p "$CARRY/debs" "$CARRY/wheels"
(cd "$CARRY/debs" && apt-get download libabsl-dev libabsl20220623 nlohmann-json3-dev libpcre2-dev \
  libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libgtest-dev 2>/dev/null)
"$LLORCH_VENV/bin/pip" download --quiet --no-deps gguf==0.17.1 -d "$CARRY/wheels"
cp "$ROOT/../shared/testdata/vocab/ggml-vocab-llama-spm.gguf" "$CARRY/"
du -sh "$CARRY"
