#!/usr/bin/env bash
# Local throughput report: llorch vs llama.cpp on the same GGUF files, same
# threads, same run. Prints prompt and decode tok/s and their ratios.
#   tools/bench-local.sh [--threads N] [--prompt P] [--gen G] [--reps R] [--skip-tinyllama]
# A report, not a test: figures go into docs/performance.md with the machine.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/tools/env.sh"
THREADS=2 PROMPT=256 GEN=64 REPS=3 TINYLLAMA=1
while (($#)); do
  case "$1" in
    --threads) THREADS="$2"; shift 2 ;;
    --prompt) PROMPT="$2"; shift 2 ;;
    --gen) GEN="$2"; shift 2 ;;
    --reps) REPS="$2"; shift 2 ;;
    --skip-tinyllama) TINYLLAMA=0; shift ;;
    *) echo "bench-local: unknown flag $1" >&2; exit 2 ;;
  esac
done
"$ROOT/tools/setup.sh" >/dev/null
"$ROOT/tools/bench/build-llamacpp-tool.sh" bench >/dev/null

models=("$LLORCH_DEFAULT_MODEL")
if ((TINYLLAMA)); then
  TINY="$LLORCH_MODELS/random-tinyllama-f32.gguf"
  if [[ ! -s "$TINY" ]]; then
    echo "bench-local: writing a random TinyLlama-shaped F32 model (once, ~4.7 GB)" >&2
    "$ROOT/tools/venv-python" "$ROOT/tools/make-test-model.py" --shape tinyllama --type f32 \
      --seed 1 --out "$TINY.tmp" --quiet
    mv "$TINY.tmp" "$TINY"
  fi
  models+=("$TINY")
fi

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; threads $THREADS; prompt $PROMPT, gen $GEN, median of $REPS"
printf '%-40s %12s %12s %8s %12s %12s %8s\n' model "llorch pp" "llama.cpp pp" ratio "llorch tg" "llama.cpp tg" ratio
for m in "${models[@]}"; do
  ours="$("$ROOT/build/bin/llorch" bench --model "$m" --threads "$THREADS" --prompt-tokens "$PROMPT" \
          --gen-tokens "$GEN" --reps "$REPS")"
  peer="$("$ROOT/build/bin/llamacpp_bench" --model "$m" --threads "$THREADS" --prompt "$PROMPT" \
          --gen "$GEN" --reps "$REPS" 2>/dev/null)"
  python3 - "$m" "$ours" "$peer" <<'PY'
import json, os, sys
name, ours, peer = os.path.basename(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
pp, ppp = ours["prompt_tok_s"], peer["prompt_tok_s"]
tg, ptg = ours["decode_tok_s"], peer["decode_tok_s"]
print(f"{name:<40} {pp:12.1f} {ppp:12.1f} {pp/ppp:8.2f} {tg:12.1f} {ptg:12.1f} {tg/ptg:8.2f}")
PY
done
