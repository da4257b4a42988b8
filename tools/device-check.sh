#!/usr/bin/env bash
# GPU check, run on the lent CUDA machine (docs/gpu.md): builds the model
# alone (-DLLORCH_MODEL_ONLY=ON: the image has no gRPC, Protobuf or cargo)
# against that machine's libtorch (its PyTorch's), with the Debian packages
# tools/device-prepare.sh carried in .devcarry/; runs the model's tests on
# CUDA (CacheCorrectnessTest.DeviceMatchesCpu compares it with the CPU;
# Bf16TracksF32 checks the BF16 path; PaddedDecodeStepsAndCudaGraphsMatchPlainSteps
# the graphs), and on CUDA model_bench's decode speed on a TinyLlama-shaped
# model (BF16, the default there, with CUDA graphs and without, and where a
# step's device time goes by kernel: --profile-steps; F32 for reference)
# against transformers' generate on the same shape (tools/bench/
# hf_generate_bench.py, the image's transformers) and the device's copy
# bandwidth. Everything it prints also goes to $OUT/device-check.txt, to be
# committed under docs/gpu-runs/.
# Env: OUT (default /tmp/out), DEVICES ("cpu cuda"; "cpu" for a dry run
# without a GPU), PYTHON (python3: the image's, with torch and numpy),
# TORCH_PREFIX (default: $PYTHON's torch), JOBS (16), QUICK (1: the tests, the
# CUDA-graph figures and the peer only).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CARRY="$ROOT/.devcarry"
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
DEVICES="${DEVICES:-cpu cuda}"
JOBS="${JOBS:-16}"
QUICK="${QUICK:-0}"
PYTHON="${PYTHON:-python3}"
exec > >(tee "$OUT/device-check.txt") 2>&1
# The tree built (the device copy's HEAD may be older than its files):
# `git rev-parse COMMIT^{tree}` where it was sent from names the commit.
TREE=$(cd "$ROOT" && export GIT_INDEX_FILE=/tmp/device-check-index \
       && git read-tree HEAD 2>/dev/null && git add -A 2>/dev/null && git write-tree 2>/dev/null)
echo "device-check: $(date -u) tree ${TREE:-unknown}"
PREFIX=/tmp/deb
mkdir -p "$PREFIX"; for f in "$CARRY"/debs/*.deb; do dpkg -x "$f" "$PREFIX"; done
"$PYTHON" -m pip install -q --no-index --no-deps --target /tmp/site "$CARRY"/wheels/*.whl \
  && export PYTHONPATH=/tmp/site
TORCH_PREFIX="${TORCH_PREFIX:-$("$PYTHON" -c 'import torch;print(torch.utils.cmake_prefix_path)')}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
"$PYTHON" -c 'import torch;print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>/dev/null
export LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
BUILD=/tmp/build-device
configure_and_build() {  # $1: ON|OFF for LLORCH_CUDA_GRAPHS
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLORCH_MODEL_ONLY=ON \
    -DLLORCH_CUDA_GRAPHS="$1" -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$PREFIX/usr" \
    -DCMAKE_CXX_COMPILER_LAUNCHER= > "$OUT/configure.log" 2>&1 || { tail -40 "$OUT/configure.log"; return 1; }
  grep "llorch:" "$OUT/configure.log"
  cmake --build "$BUILD" -j "$JOBS" --target llama_model_test model_bench > "$OUT/build.log" 2>&1 \
    || { grep -m 20 -B 2 -A 8 "error" "$OUT/build.log"; return 1; }
}
SECONDS=0
# Without CUDA graphs if the build with them fails (the figures still come).
configure_and_build ON || { echo "== build with CUDA graphs failed; without them"; configure_and_build OFF; } \
  || exit 1
echo "build: ${SECONDS}s"
echo "built: $(ls "$BUILD/bin")"

# Random-weight models: the ones llama_model_test reads (as
# tests/make_test_models.sh writes them, with the Llama-2 and Phi-3
# SentencePiece vocabularies instead of SmolLM2's), and a TinyLlama-shaped F16
# one for the speed figures.
MODELS="$BUILD/testdata"; mkdir -p "$MODELS"
MK=("$PYTHON" "$ROOT/tools/make-test-model.py" --quiet --layers 2 --hidden 64 --heads 4 --ffn 128
    --ctx 256)
SPM=(--vocab-from "$CARRY/ggml-vocab-llama-spm.gguf")
"${MK[@]}" "${SPM[@]}" --kv-heads 2 --type f32 --tied --seed 1 --out "$MODELS/tiny-f32-gqa.gguf"
"${MK[@]}" "${SPM[@]}" --kv-heads 4 --type f32 --untied --seed 2 --out "$MODELS/tiny-f32-mha-untied.gguf"
"${MK[@]}" "${SPM[@]}" --kv-heads 2 --type q8_0 --tied --seed 4 --out "$MODELS/tiny-q8_0.gguf"
"${MK[@]}" "${SPM[@]}" --arch qwen2 --kv-heads 2 --type f32 --tied --seed 7 --out "$MODELS/tiny-qwen2-f32.gguf"
"${MK[@]}" --vocab-from "$CARRY/ggml-vocab-phi-3.gguf" --arch phi3 --kv-heads 2 --type f32 --untied \
  --seed 8 --out "$MODELS/tiny-phi3-f32.gguf"
"${MK[@]}" "${SPM[@]}" --arch phi2 --kv-heads 4 --type f32 --untied --seed 9 --out "$MODELS/tiny-phi2-f32.gguf"
"${MK[@]}" "${SPM[@]}" --arch phi2 --kv-heads 4 --type q4_0 --untied --seed 11 \
  --out "$MODELS/tiny-phi2-q4_0.gguf"
if [[ " $DEVICES " == *" cuda "* ]]; then
  "$PYTHON" "$ROOT/tools/make-test-model.py" --quiet "${SPM[@]}" --shape tinyllama --type f16 \
    --untied --seed 1 --out /tmp/tinyllama-f16.gguf
fi

# The tests on the accelerator (the CPU's pass in CI; DeviceMatchesCpu
# compares the two), or on the CPU in a dry run.
TEST_DEVICE="${DEVICES##* }"
echo "== llama_model_test on $TEST_DEVICE"
LLORCH_TEST_DEVICE=$TEST_DEVICE timeout 240 "$BUILD/bin/llama_model_test" --gtest_brief=1 \
  > "$OUT/model_test.log" 2>&1
grep -E "FAILED|Failure|Expected|actual|Which is|CUDA graphs|max \|" "$OUT/model_test.log"
tail -4 "$OUT/model_test.log"
for dev in $DEVICES; do
  [[ "$dev" == cpu ]] && continue
  BENCH=("$BUILD/bin/model_bench" /tmp/tinyllama-f16.gguf --device "$dev" --prompt-tokens 16 --gen-tokens 64)
  echo "== model_bench on $dev, TinyLlama-shaped F16 file held in BF16 (BF16 KV cache), CUDA graphs"
  timeout 120 "${BENCH[@]}" --dtype bf16 --batch 1,16,64 --profile-steps 3 | tee "$OUT/llorch.jsonl"
  if [[ "$QUICK" != 1 ]]; then
    echo "== the same without CUDA graphs (every kernel launched by the host)"
    timeout 120 "${BENCH[@]}" --dtype bf16 --batch 1,16,64 --cuda-graphs off --profile-steps 3 \
      | tee -a "$OUT/llorch.jsonl"
    echo "== long context, CUDA graphs: 960-token prompts, 64 steps (positions up to 1023: one padded shape)"
    timeout 90 "$BUILD/bin/model_bench" /tmp/tinyllama-f16.gguf --device "$dev" --prompt-tokens 960 \
      --gen-tokens 64 --dtype bf16 --batch 1,16
    echo "== the same file held in F32 (the path before BF16), batch 1"
    timeout 90 "${BENCH[@]}" --dtype f32 --batch 1
  fi
  echo "== transformers generate on $dev, the same shape in BF16"
  PYTHONUNBUFFERED=1 timeout 240 "$PYTHON" "$ROOT/tools/bench/hf_generate_bench.py" \
    --device "$dev" --batch 1,16,64 --prompt-tokens 16 --gen-tokens 64 \
    | tee "$OUT/transformers.jsonl"
  echo "== ratios (llorch BF16 / transformers BF16; llorch's weight reads / copy bandwidth)"
  "$PYTHON" "$ROOT/tools/bench/gpu_ratios.py" "$OUT/llorch.jsonl" "$OUT/transformers.jsonl"
  echo "== greedy tokens of job 0, graphs on vs off (same weights, same prompts)"
  "$PYTHON" - "$OUT/llorch.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for b in sorted({r["batch"] for r in rows}):
    on = [r["job0_tokens"] for r in rows if r["batch"] == b and r["cuda_graphs"]]
    off = [r["job0_tokens"] for r in rows if r["batch"] == b and not r["cuda_graphs"]]
    if on and off:
        same = next((i for i, (x, y) in enumerate(zip(on[0], off[0])) if x != y), len(on[0]))
        print(f"batch {b}: first {same} of {len(on[0])} tokens equal")
PY
done
echo "device-check: done $(date -u)"
