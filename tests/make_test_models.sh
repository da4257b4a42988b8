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
# The other families llama.cpp runs, laid out as its converter writes them.
make_model tiny-qwen2-f32      "${SMALL[@]}" --arch qwen2 --kv-heads 2 --type f32 --tied --seed 7
# llama.cpp reads phi3 vocabularies as SentencePiece: use Phi-3's own.
PHI3_VOCAB="$ROOT/../shared/testdata/vocab/ggml-vocab-phi-3.gguf"
make_model tiny-phi3-f32       "${SMALL[@]}" --arch phi3 --kv-heads 2 --type f32 --untied --seed 8 \
  --vocab-from "$PHI3_VOCAB"
# Other vocabularies, for the streamed-text test (tests/conformance/streamed_text_test.py).
VOCABS="$ROOT/../shared/testdata/vocab"
make_model tiny-spm-vocab-f32   "${SMALL[@]}" --kv-heads 2 --type f32 --tied --seed 12 \
  --vocab-from "$VOCABS/ggml-vocab-llama-spm.gguf"
make_model tiny-qwen2-vocab-f32 "${SMALL[@]}" --arch qwen2 --kv-heads 2 --type f32 --tied --seed 13 \
  --vocab-from "$VOCABS/ggml-vocab-qwen2.gguf"
make_model tiny-gpt2-vocab-f32  "${SMALL[@]}" --kv-heads 2 --type f32 --tied --seed 14 \
  --vocab-from "$VOCABS/ggml-vocab-gpt-2.gguf"
make_model tiny-phi2-f32       "${SMALL[@]}" --arch phi2 --kv-heads 4 --type f32 --untied --seed 9
make_model tiny-qwen2-q8_0     "${SMALL[@]}" --arch qwen2 --kv-heads 2 --type q8_0 --untied --seed 10
make_model tiny-phi2-q4_0      "${SMALL[@]}" --arch phi2 --kv-heads 4 --type q4_0 --untied --seed 11
# K-quants, written by llama.cpp's own quantiser (gguf-py cannot write them)
# from an F32 model whose rows are multiples of 256.
KSHAPE=(--layers 2 --hidden 256 --heads 4 --kv-heads 2 --ffn 512 --ctx 512)
make_model kquant-source-f32   "${KSHAPE[@]}" --type f32 --untied --seed 21
QUANTIZE="$ROOT/build/bin/llamacpp_quantize"
for type in q4_k q5_k q6_k; do
  [[ -s "$OUT/tiny-$type.gguf" ]] && continue
  [[ -x "$QUANTIZE" ]] || bash "$ROOT/tools/bench/build-llamacpp-tool.sh" quantize "$QUANTIZE"
  "$QUANTIZE" "$OUT/kquant-source-f32.gguf" "$OUT/tiny-$type.gguf.tmp" "$type" >/dev/null 2>&1
  mv "$OUT/tiny-$type.gguf.tmp" "$OUT/tiny-$type.gguf"
done
