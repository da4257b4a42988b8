#!/usr/bin/env bash
# Writes the random-weight test models into $1 (default build/testdata),
# skipping those already there. Used as the CTest fixture `test_models`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$ROOT/build/testdata}"
mkdir -p "$OUT"
make_model() {
  local name="$1"; shift
  [[ -s "$OUT/$name.gguf" ]] && return 0
  "$ROOT/tools/venv-python" "$ROOT/tools/make-test-model.py" --out "$OUT/$name.gguf.tmp" "$@"
  mv "$OUT/$name.gguf.tmp" "$OUT/$name.gguf"
}
SMALL=(--layers 2 --hidden 64 --heads 4 --ffn 128 --ctx 256)
make_model tiny-f32-gqa        "${SMALL[@]}" --kv-heads 2 --type f32 --tied --seed 1
make_model tiny-f32-mha-untied "${SMALL[@]}" --kv-heads 4 --type f32 --untied --seed 2
make_model tiny-f16            "${SMALL[@]}" --kv-heads 2 --type f16 --untied --seed 3
make_model tiny-q8_0           "${SMALL[@]}" --kv-heads 2 --type q8_0 --tied --seed 4
make_model tiny-q4_0           "${SMALL[@]}" --kv-heads 1 --type q4_0 --untied --seed 5
make_model tiny-q4_1           "${SMALL[@]}" --kv-heads 4 --type q4_1 --tied --seed 6
