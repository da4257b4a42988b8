#!/usr/bin/env bash
# GPU check, run on the lent CUDA machine (tools/README: device). Builds the
# engine against that machine's libtorch 2.x (from its PyTorch), with the
# Debian packages carried in .devcarry/, and runs the cache-correctness tests
# on CUDA plus a CPU-vs-CUDA comparison of greedy generation.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CARRY="$ROOT/.devcarry"
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
PREFIX=/tmp/deb
mkdir -p "$PREFIX"; for f in "$CARRY"/debs/*.deb; do dpkg -x "$f" "$PREFIX"; done
python3 -m pip install -q --no-index --no-deps --target /tmp/site "$CARRY"/wheels/*.whl && export PYTHONPATH=/tmp/site
TORCH_PREFIX="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c 'import torch;print("torch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$OUT/gpu.txt"
LIBDIR="$PREFIX/usr/lib/x86_64-linux-gnu"
export LD_LIBRARY_PATH="$LIBDIR:${LD_LIBRARY_PATH:-}"
export PKG_CONFIG_PATH="$LIBDIR/pkgconfig:$PREFIX/usr/share/pkgconfig"
# Debian's .pc files name /usr; point them at the prefix.
sed -i "s|^prefix=.*|prefix=$PREFIX/usr|" "$LIBDIR"/pkgconfig/*.pc 2>/dev/null
set -x
cmake -S "$ROOT" -B /tmp/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$LIBDIR/cmake;$PREFIX/usr/share/cmake;$PREFIX/usr/lib/cmake" \
  -DGTest_DIR="$LIBDIR/cmake/GTest" -DLLORCH_SHARED_DIR=/nonexistent \
  -DCMAKE_CXX_COMPILER_LAUNCHER= 2>&1 | tail -20 | tee "$OUT/configure.log"
cmake --build /tmp/build -j 16 --target llorch llama_model_test job_test 2>&1 | tail -40 | tee "$OUT/build.log"
set +x
# Random-weight models with the Llama-2 SentencePiece vocabulary.
mkdir -p /tmp/testdata
MK="python3 $ROOT/tools/make-test-model.py --vocab-from $CARRY/ggml-vocab-llama-spm.gguf --layers 2 --hidden 64 --heads 4 --ffn 128 --ctx 256 --quiet"
$MK --kv-heads 2 --type f32 --tied --seed 1 --out /tmp/testdata/tiny-f32-gqa.gguf
$MK --kv-heads 4 --type f32 --untied --seed 2 --out /tmp/testdata/tiny-f32-mha-untied.gguf
$MK --kv-heads 2 --type q8_0 --tied --seed 4 --out /tmp/testdata/tiny-q8_0.gguf
python3 "$ROOT/tools/make-test-model.py" --vocab-from "$CARRY/ggml-vocab-llama-spm.gguf" --layers 22 --hidden 2048 \
  --heads 32 --kv-heads 4 --ffn 5632 --ctx 2048 --type f16 --untied --seed 1 --quiet --out /tmp/testdata/tinyllama-f16.gguf
mkdir -p /tmp/build/testdata && cp /tmp/testdata/tiny-*.gguf /tmp/build/testdata/
for dev in cpu cuda; do
  LLORCH_TEST_DEVICE=$dev /tmp/build/bin/llama_model_test 2>&1 | tail -30 | tee "$OUT/model_test_$dev.log"
done
for dev in cpu cuda; do
  /tmp/build/bin/llorch run --model /tmp/testdata/tinyllama-f16.gguf --prompt-ids 1,450,4996,17354 \
    --max-tokens 32 --temperature 0 --format jsonl --device $dev --threads 16 > "$OUT/run_$dev.jsonl" 2> "$OUT/run_$dev.err"
  tail -1 "$OUT/run_$dev.jsonl"; cat "$OUT/run_$dev.err"
done
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
ids = {d: [json.loads(l)["id"] for l in open(f"{out}/run_{d}.jsonl") if '"token"' in l] for d in ("cpu", "cuda")}
n = next((i for i, (a, b) in enumerate(zip(ids["cpu"], ids["cuda"])) if a != b), len(ids["cpu"]))
print(f"greedy tokens equal cpu vs cuda before first divergence: {n}/{len(ids['cpu'])}")
PY
