#!/usr/bin/env bash
# Local throughput report: llorch vs llama.cpp on the same GGUF files, same
# threads, same run. Prints prompt and decode tok/s and their ratios, then a
# second table of peak resident memory: each engine's whole bench process, and
# llorch's above its baseline (what `llorch bench` holds before it reads a
# model: libtorch's registry and what is left of its libraries' pages),
# and a third of decode's weight reads per second against the machine's read
# bandwidth (tools/bench/read_bandwidth.cc, measured before and after each
# model with the same threads): memory-bound decode (F32, F16, BF16) is judged by its share.
#   tools/bench-local.sh [--threads N] [--prompt P (512)] [--gen G] [--reps R] [--skip-tinyllama]
#                        [--tinyllama-types f32,f16,bf16,q8_0,q4_0,q4_1,q4_k,q5_k,q6_k]
#                        [--kv-type f32|f16|bf16|q8_0] [--avx2]
# --avx2 (on an AVX-512 machine): both engines run their AVX2 code, llorch under
# LLORCH_MAX_CPU_ISA=avx2, llama.cpp on its haswell library loaded by name; what
# an AVX2-only machine of the same cores would run (not its memory or clocks).
# Both engines hold their KV cache in --kv-type (default f16, llama.cpp's
# default and its fast path: with f32 its decode takes another attention path,
# 40-45% slower on SmolLM2 here; llorch's own default is f32), so the memory
# table compares the same cache.
# The TinyLlama-shaped random models (default: f32) are written once into the
# models cache (~4.7 GB in F32, half in F16/BF16; quantised ones by llama.cpp's
# quantiser from the F32 one).
# A report, not a test: figures go into docs/performance.md with the machine.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/tools/env.sh"
THREADS=2 PROMPT=512 GEN=64 REPS=3 TINYLLAMA=1 TINYLLAMA_TYPES=f32 KV_TYPE=f16 AVX2=0
while (($#)); do
  case "$1" in
    --threads) THREADS="$2"; shift 2 ;;
    --prompt) PROMPT="$2"; shift 2 ;;
    --gen) GEN="$2"; shift 2 ;;
    --reps) REPS="$2"; shift 2 ;;
    --skip-tinyllama) TINYLLAMA=0; shift ;;
    --tinyllama-types) TINYLLAMA_TYPES="$2"; shift 2 ;;
    --kv-type) KV_TYPE="$2"; shift 2 ;;
    --avx2) AVX2=1; shift ;;
    *) echo "bench-local: unknown flag $1" >&2; exit 2 ;;
  esac
done
"$ROOT/tools/setup.sh" >/dev/null
"$ROOT/tools/bench/build-llamacpp-tool.sh" bench >/dev/null
[[ -x "$ROOT/build/bin/read_bandwidth" ]] || cmake --build "$ROOT/build" --target read_bandwidth >/dev/null

ours_env=() peer_flags=() code="each engine's pick for this CPU"
if ((AVX2)); then
  ours_env=(LLORCH_MAX_CPU_ISA=avx2)
  peer_flags=(--cpu-variant haswell)
  code="AVX2 code only (llorch LLORCH_MAX_CPU_ISA=avx2, llama.cpp libggml-cpu-haswell.so)"
fi

models=("$LLORCH_DEFAULT_MODEL")
if ((TINYLLAMA)); then
  for type in ${TINYLLAMA_TYPES//,/ }; do
    TINY="$LLORCH_MODELS/random-tinyllama-$type.gguf"
    if [[ ! -s "$TINY" ]]; then
      echo "bench-local: writing a random TinyLlama-shaped $type model (once)" >&2
      case "$type" in
        f32|f16|bf16)
          "$ROOT/tools/venv-python" "$ROOT/tools/make-test-model.py" --shape tinyllama --type "$type" \
            --seed 1 --out "$TINY.tmp" --quiet ;;
        *)  # quantised by llama.cpp's own quantiser from the F32 model
          F32="$LLORCH_MODELS/random-tinyllama-f32.gguf"
          [[ -s "$F32" ]] || "$ROOT/tools/venv-python" "$ROOT/tools/make-test-model.py" --shape tinyllama \
            --type f32 --seed 1 --out "$F32" --quiet
          "$ROOT/tools/bench/build-llamacpp-tool.sh" quantize >/dev/null
          "$ROOT/build/bin/llamacpp_quantize" "$F32" "$TINY.tmp" "$type" >/dev/null 2>&1 ;;
      esac
      mv "$TINY.tmp" "$TINY"
    fi
    models+=("$TINY")
  done
fi

RSS_DIR="$(mktemp -d)"
trap 'rm -rf "$RSS_DIR"' EXIT
PEAK="$ROOT/tools/bench/peak_rss.py"
memory_rows=()
bandwidth_rows=()

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; threads $THREADS; prompt $PROMPT, gen $GEN, median of $REPS; KV cache $KV_TYPE; $code"
printf '%-40s %12s %12s %8s %12s %12s %8s\n' model "llorch pp" "llama.cpp pp" ratio "llorch tg" "llama.cpp tg" ratio
for m in "${models[@]}"; do
  machine="$("$ROOT/build/bin/read_bandwidth" --threads "$THREADS" --mib 2048 --reps 3)"
  ours="$(env "${ours_env[@]}" "$PEAK" "$RSS_DIR/ours" "$ROOT/build/bin/llorch" bench --model "$m" --threads "$THREADS" --prompt-tokens "$PROMPT" \
          --gen-tokens "$GEN" --reps "$REPS" --kv-type "$KV_TYPE")"
  peer="$("$PEAK" "$RSS_DIR/peer" "$ROOT/build/bin/llamacpp_bench" --model "$m" --threads "$THREADS" --prompt "$PROMPT" \
          --gen "$GEN" --reps "$REPS" --kv-type "$KV_TYPE" "${peer_flags[@]}" 2>/dev/null)"
  python3 - "$m" "$ours" "$peer" <<'PY'
import json, os, sys
name, ours, peer = os.path.basename(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
pp, ppp = ours["prompt_tok_s"], peer["prompt_tok_s"]
tg, ptg = ours["decode_tok_s"], peer["decode_tok_s"]
print(f"{name:<40} {pp:12.1f} {ppp:12.1f} {pp/ppp:8.2f} {tg:12.1f} {ptg:12.1f} {tg/ptg:8.2f}")
PY
  baseline_kib="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["resident_before_model_bytes"] // 1024)' "$ours")"
  memory_rows+=("$(basename "$m") $(stat -c %s "$m") $(cat "$RSS_DIR/ours") $(cat "$RSS_DIR/peer") $baseline_kib")
  machine_after="$("$ROOT/build/bin/read_bandwidth" --threads "$THREADS" --mib 2048 --reps 3)"
  bandwidth_rows+=("$m"$'\t'"$ours"$'\t'"$peer"$'\t'"$machine"$'\t'"$machine_after")
done

echo
echo "peak resident memory, MiB (llorch-base: llorch's peak less what it held before reading the model)"
printf '%-40s %10s %10s %12s %8s %10s %14s %8s\n' model file llorch "llama.cpp" ratio baseline "llorch-base" ratio
for row in "${memory_rows[@]}"; do
  python3 - $row <<'PY'
import sys
name, size, ours, peer, base = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
mib = lambda kib: kib / 1024
print(f"{name:<40} {size / 2**20:10.0f} {mib(ours):10.0f} {mib(peer):12.0f} {ours / peer:8.2f} "
      f"{mib(base):10.0f} {mib(ours - base):14.0f} {(ours - base) / peer:8.2f}")
PY
done

echo
echo "decode weight reads, GB/s: the weights one token reads (every tensor but an untied token_embd,"
echo "which is looked up) x decode tok/s, against the machine's read bandwidth (the better of one"
echo "measurement before and one after the model's runs; tools/bench/read_bandwidth.cc)"
printf '%-40s %10s %10s %12s %10s %10s %12s\n' model "MiB/token" llorch "llama.cpp" machine "llorch %" "llama.cpp %"
for row in "${bandwidth_rows[@]}"; do
  "$ROOT/tools/venv-python" - "$row" <<'PY'
import json, os, sys
import gguf
path, ours, peer, before, after = sys.argv[1].split("\t")
tensors = {t.name: int(t.n_bytes) for t in gguf.GGUFReader(path).tensors}
read = sum(n for name, n in tensors.items()
           if name != "token_embd.weight" or "output.weight" not in tensors)
ours_gb = read * json.loads(ours)["decode_tok_s"] / 1e9
peer_gb = read * json.loads(peer)["decode_tok_s"] / 1e9
limit = max(json.loads(before)["read_gb_s"], json.loads(after)["read_gb_s"])
print(f"{os.path.basename(path):<40} {read / 2**20:10.0f} {ours_gb:10.1f} {peer_gb:12.1f} {limit:10.1f} "
      f"{100 * ours_gb / limit:10.0f} {100 * peer_gb / limit:12.0f}")
PY
done
