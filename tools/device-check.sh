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
# Stage `worker` (where .devcarry/worker exists): builds llorch-worker and the
# llorch CLI in full (gRPC, Protobuf, ... from the carried .debs, the
# chat-template library cargo built at home) and drives a worker on the
# device with `llorch bench-serve` at 1, 16 and 64 streams.
# Env: OUT (default /tmp/out), DEVICES ("cpu cuda"; "cpu" for a dry run
# without a GPU), PYTHON (python3: the image's, with torch and numpy),
# TORCH_PREFIX (default: $PYTHON's torch), JOBS (16), QUICK (1: the tests, the
# CUDA-graph figures and the peer only), STAGES ("model worker"; "worker":
# the worker alone).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CARRY="$ROOT/.devcarry"
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
DEVICES="${DEVICES:-cpu cuda}"
JOBS="${JOBS:-16}"
QUICK="${QUICK:-0}"
STAGES="${STAGES:-model worker}"
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
configure_and_build() {  # $1, $2: ON|OFF for LLORCH_CUDA_GRAPHS, LLORCH_CUDA_KERNELS
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLORCH_MODEL_ONLY=ON \
    -DLLORCH_CUDA_GRAPHS="$1" -DLLORCH_CUDA_KERNELS="$2" -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$PREFIX/usr" \
    -DCMAKE_CXX_COMPILER_LAUNCHER= > "$OUT/configure.log" 2>&1 || { tail -40 "$OUT/configure.log"; return 1; }
  grep "llorch:" "$OUT/configure.log"
  cmake --build "$BUILD" -j "$JOBS" --target llama_model_test model_bench device_kernels_test \
    > "$OUT/build.log" 2>&1 || { grep -m 20 -B 2 -A 8 "error" "$OUT/build.log"; return 1; }
}
worker_stage() {  # the full build, a worker on $1, bench-serve against it
  local dev=$1 model=$2 kv_budget=$3 wprefix=/tmp/deb-worker wbuild=/tmp/build-worker
  echo "== the worker's build (gRPC, Protobuf ... from .devcarry/worker)"
  mkdir -p "$wprefix"
  for f in "$CARRY"/debs/*.deb "$CARRY"/worker/debs/*.deb; do dpkg -x "$f" "$wprefix"; done
  # Debian's pkgconf, looking only at the prefix's .pc files, its paths
  # moved under the prefix; protoc and gRPC's plugin from the prefix.
  local pc=(PKG_CONFIG_LIBDIR="$wprefix/usr/lib/x86_64-linux-gnu/pkgconfig:$wprefix/usr/share/pkgconfig"
            PKG_CONFIG_SYSROOT_DIR="$wprefix"
            LD_LIBRARY_PATH="$wprefix/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
            PATH="$wprefix/usr/bin:$PATH")
  local t0=$SECONDS
  env "${pc[@]}" cmake -S "$ROOT" -B "$wbuild" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DLLORCH_CUDA_GRAPHS=ON -DLLORCH_CUDA_KERNELS="${KERNELS:-ON}" \
    -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$wprefix/usr" \
    -DPKG_CONFIG_EXECUTABLE="$wprefix/usr/bin/pkgconf" -DCMAKE_CXX_COMPILER_LAUNCHER= \
    -DLLORCH_CHAT_TEMPLATE_FFI_LIB="$CARRY/worker/libllorch_chat_template_ffi.a" \
    > "$OUT/worker-configure.log" 2>&1 || { tail -40 "$OUT/worker-configure.log"; return 1; }
  env "${pc[@]}" cmake --build "$wbuild" -j "$JOBS" --target llorch-worker llorch \
    > "$OUT/worker-build.log" 2>&1 || { grep -m 20 -B 2 -A 8 "error" "$OUT/worker-build.log"; return 1; }
  echo "worker build: $((SECONDS - t0))s"
  local port=50161 log="$OUT/worker.log"
  env LD_LIBRARY_PATH="$wprefix/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}" \
    "$wbuild/bin/llorch-worker" --model "$model" --device "$dev" --dtype bf16 \
    --listen "127.0.0.1:$port" --metrics_port -1 --max_batch 64 --kv_budget "$kv_budget" > "$log" 2>&1 &
  local pid=$!
  for _ in $(seq 600); do
    grep -q "serving (kv budget" "$log" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  grep -E "listening|loaded|serving|rror" "$log" | head -8
  echo "== llorch bench-serve --worker: streams through the worker on $dev (16-token prompts, 64 tokens each)"
  env LD_LIBRARY_PATH="$wprefix/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}" \
    timeout 240 "$wbuild/bin/llorch" bench-serve --worker "127.0.0.1:$port" \
    --concurrency "${WORKER_LEVELS:-1,16,64}" --requests "${WORKER_REQUESTS:-128}" \
    --prompt-tokens 16 --max-tokens 64
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  tail -3 "$log"
}

if [[ " $STAGES " == *" model "* ]]; then
SECONDS=0
# Without llorch's CUDA kernels, then without CUDA graphs, if a build fails
# (the figures still come).
KERNELS="${KERNELS:-ON}"
configure_and_build ON "$KERNELS" \
  || { echo "== build with CUDA kernels failed; without them"; KERNELS=OFF; rm -rf "$BUILD"
       configure_and_build ON OFF; } \
  || { echo "== build with CUDA graphs failed; without them"; rm -rf "$BUILD"
       configure_and_build OFF OFF; } \
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
echo "== device_kernels_test (llorch's CUDA kernels against F32 products on the device)"
timeout 120 "$BUILD/bin/device_kernels_test" --gtest_brief=1 > "$OUT/kernels_test.log" 2>&1
grep -E "FAILED|Failure|max \|got|SKIPPED" "$OUT/kernels_test.log" | head -20
tail -3 "$OUT/kernels_test.log"
echo "== llama_model_test on $TEST_DEVICE"
LLORCH_TEST_DEVICE=$TEST_DEVICE timeout 240 "$BUILD/bin/llama_model_test" --gtest_brief=1 \
  > "$OUT/model_test.log" 2>&1
grep -E "FAILED|Failure|Expected|actual|Which is|CUDA graphs|max \|" "$OUT/model_test.log"
tail -4 "$OUT/model_test.log"
for dev in $DEVICES; do
  [[ "$dev" == cpu ]] && continue
  BENCH=("$BUILD/bin/model_bench" /tmp/tinyllama-f16.gguf --device "$dev" --prompt-tokens 16 --gen-tokens 64)
  echo "== model_bench on $dev, TinyLlama-shaped F16 file held in BF16 (BF16 KV cache), CUDA graphs"
  echo "   (and llorch's CUDA kernels where built: norms, SiLU, products of up to 8 jobs)"
  timeout 120 "${BENCH[@]}" --dtype bf16 --batch 1,8,16,64 --profile-steps 3 | tee "$OUT/llorch.jsonl"
  echo "== the same with libtorch's ops and cuBLAS's products (--cuda-kernels off)"
  timeout 120 "${BENCH[@]}" --dtype bf16 --batch 1,8,16,64 --cuda-kernels off \
    | tee "$OUT/llorch-cublas.jsonl"
  if [[ "$QUICK" != 1 ]]; then
    echo "== the same without CUDA graphs (every kernel launched by the host)"
    timeout 120 "${BENCH[@]}" --dtype bf16 --batch 1,16,64 --cuda-graphs off --profile-steps 3 \
      | tee -a "$OUT/llorch.jsonl"
    echo "== long context, CUDA graphs: 960-token prompts, 64 steps (positions up to 1023: one padded shape)"
    timeout 90 "$BUILD/bin/model_bench" /tmp/tinyllama-f16.gguf --device "$dev" --prompt-tokens 960 \
      --gen-tokens 64 --dtype bf16 --batch 1,16
    echo "== the same, libtorch's ops (--cuda-kernels off: the attention kernel's one block per job"
    echo "   and KV head against libtorch's batched products at long contexts)"
    timeout 90 "$BUILD/bin/model_bench" /tmp/tinyllama-f16.gguf --device "$dev" --prompt-tokens 960 \
      --gen-tokens 64 --dtype bf16 --batch 1,16 --cuda-kernels off
    echo "== the same file held in F32 (the path before BF16), batch 1"
    timeout 90 "${BENCH[@]}" --dtype f32 --batch 1
  fi
  echo "== transformers generate on $dev, the same shape in BF16"
  PYTHONUNBUFFERED=1 timeout 240 "$PYTHON" "$ROOT/tools/bench/hf_generate_bench.py" \
    --device "$dev" --batch 1,16,64 --prompt-tokens 16 --gen-tokens 64 \
    | tee "$OUT/transformers.jsonl"
  echo "== ratios (llorch BF16 / transformers BF16; llorch's weight reads / copy bandwidth)"
  "$PYTHON" "$ROOT/tools/bench/gpu_ratios.py" "$OUT/llorch.jsonl" "$OUT/llorch-cublas.jsonl" \
    "$OUT/transformers.jsonl"
  echo "== greedy tokens of job 0: graphs on vs off, llorch's kernels vs cuBLAS (same weights, prompts)"
  "$PYTHON" - "$OUT/llorch.jsonl" "$OUT/llorch-cublas.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for path in sys.argv[1:] for l in open(path)]
def first(b, graphs, kernels=None):  # kernels None: either
    return next((r["job0_tokens"] for r in rows if r["batch"] == b and r["cuda_graphs"] == graphs
                 and kernels in (None, r.get("cuda_kernels", False))), None)
for b in sorted({r["batch"] for r in rows}):
    base = first(b, True, True) or first(b, True, False)
    for what, other in (("graphs off", first(b, False)), ("cuBLAS", first(b, True, False))):
        if base and other and other is not base:
            same = next((i for i, (x, y) in enumerate(zip(base, other)) if x != y), len(base))
            print(f"batch {b}, against {what}: first {same} of {len(base)} tokens equal")
PY
done
fi
if [[ " $STAGES " == *" worker "* && -d "$CARRY/worker" ]]; then
  if [[ " $DEVICES " == *" cuda "* ]]; then
    [[ -f /tmp/tinyllama-f16.gguf ]] || "$PYTHON" "$ROOT/tools/make-test-model.py" --quiet \
      --vocab-from "$CARRY/ggml-vocab-llama-spm.gguf" --shape tinyllama --type f16 --untied \
      --seed 1 --out /tmp/tinyllama-f16.gguf
    worker_stage cuda /tmp/tinyllama-f16.gguf 8GiB
  else  # a dry run: a small model on the CPU
    "$PYTHON" "$ROOT/tools/make-test-model.py" --quiet --vocab-from "$CARRY/ggml-vocab-llama-spm.gguf" \
      --layers 2 --hidden 64 --heads 4 --kv-heads 2 --ffn 128 --ctx 256 --type f32 --tied --seed 1 \
      --out /tmp/worker-dry.gguf
    worker_stage cpu /tmp/worker-dry.gguf 256MiB
  fi
fi
echo "device-check: done $(date -u)"
