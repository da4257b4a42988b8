#!/usr/bin/env bash
# Every family in every format llorch reads, through the whole stack: each
# model is served by llorch-worker and generated from over gRPC (llorch
# generate), and the stream must equal `llorch run` on the same model
# (greedy, 16 tokens, EOS ignored). Prints family / format / dtype / result,
# with the served stream's decode tokens/s (the worker's Finished, one
# request, its default threads) and the worker's peak resident memory
# (VmHWM), and exits non-zero on any failure.
#   Random-weight checkpoints of llama, mistral, qwen2, phi3 and phi (Phi-2)
#   are built with transformers (tests/conformance/hf_test_models.py; their
#   tokenizer.json from HF tokenizers, or a SentencePiece tokenizer.model),
#   served as SafeTensors directories and as the GGUF `llorch convert` writes
#   (f16, q8_0); K-quants come from llama.cpp's quantiser (tests/make_test_models.sh);
#   the real model is SmolLM2-135M-Instruct Q4_1.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/tools/env.sh"
BIN="$ROOT/build/bin"
WORK="$(mktemp -d -t llorch-multi-model.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
PROMPT="Once upon a time"

"$ROOT/tools/hf-python" "$ROOT/tests/conformance/hf_test_models.py" "$WORK/hf" \
  --only llama-gqa --only llama3-rope-tied --only mistral-window --only qwen2-tied --only phi3 \
  --only phi2 --only llama-bf16 --only llama-spm --only phi3-spm >/dev/null || { echo "test-multi-model: building checkpoints failed" >&2; exit 1; }
TESTDATA="$ROOT/build/testdata"
bash "$ROOT/tests/make_test_models.sh" "$TESTDATA" >/dev/null 2>&1 \
  || { echo "test-multi-model: tests/make_test_models.sh failed" >&2; exit 1; }

ROWS=()   # family|format|dtype|path
for case in llama-gqa:llama llama3-rope-tied:llama3 mistral-window:mistral qwen2-tied:qwen2 phi3:phi3 phi2:phi2 llama-bf16:llama llama-spm:llama phi3-spm:phi3; do
  dir="$WORK/hf/${case%%:*}"; family="${case##*:}"
  dtype=f32; [[ "$dir" == *bf16 ]] && dtype=bf16
  format=safetensors; [[ "$dir" == *-spm ]] && format="safetensors+tokenizer.model"
  ROWS+=("$family|$format|$dtype|$dir")
  [[ "$dtype" == bf16 ]] && continue
  for type in f16 q8_0; do
    out="$WORK/${case%%:*}-$type.gguf"
    if "$BIN/llorch" convert --model "$dir" --out "$out" --type "$type" 2>"$WORK/convert.log"; then
      ROWS+=("$family|gguf (converted)|$type|$out")
    else
      ROWS+=("$family|gguf (converted)|$type|CONVERT-FAILED:$(tail -1 "$WORK/convert.log")")
    fi
  done
done
for type in q4_k q5_k q6_k; do ROWS+=("llama|gguf (llama.cpp quantiser)|$type|$TESTDATA/tiny-$type.gguf"); done
ROWS+=("llama|gguf (llama.cpp converter)|q4_1|$LLORCH_DEFAULT_MODEL")

ids_of() {  # jsonl on stdin -> comma-separated token ids
  python3 -c 'import json,sys; print(",".join(str(json.loads(l)["id"]) for l in sys.stdin if "\"token\"" in l))'
}

# The last run_one's worker: decode tok/s of its stream and peak RSS (MiB).
SPEED="-"; RSS="-"
run_one() {  # path -> "ok" or a reason
  local model="$1" log="$WORK/worker.log" port pid reference served code
  SPEED="-"; RSS="-"
  [[ "$model" == CONVERT-FAILED:* ]] && { echo "convert failed: ${model#CONVERT-FAILED:}"; return; }
  reference="$("$BIN/llorch" run --model "$model" --prompt "$PROMPT" --temperature 0 --max-tokens 16 \
    --ignore-eos --format jsonl 2>"$WORK/run.log" | ids_of)"
  [[ -n "$reference" ]] || { echo "llorch run failed: $(tail -1 "$WORK/run.log")"; return; }
  "$BIN/llorch-worker" --model "$model" --listen 127.0.0.1:0 --metrics_port -1 2>"$log" &
  pid=$!
  # A start takes about a second; the generous limit is for a machine busy
  # with other work, and a failure says whether the worker exited or hung.
  for _ in $(seq 1 1800); do
    grep -q "llorch-worker: serving" "$log" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  port="$(sed -n 's/.*grpc listening on port \([0-9]*\).*/\1/p' "$log")"
  if ! grep -q "llorch-worker: serving" "$log"; then
    local how="still starting after 180 s"
    if ! kill -0 "$pid" 2>/dev/null; then wait "$pid"; how="exited with status $?"; fi
    kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    echo "worker did not start ($how): $(tail -c 300 "$log" | tr '\n' ' ')"; return
  fi
  "$BIN/llorch" generate --worker "127.0.0.1:$port" --prompt "$PROMPT" --temperature 0 \
    --max-tokens 16 --ignore-eos --format jsonl >"$WORK/generate.jsonl" 2>"$WORK/generate.log"
  served="$(ids_of <"$WORK/generate.jsonl")"
  SPEED="$(python3 -c 'import json,sys
for l in sys.stdin:
    e = json.loads(l)
    if e.get("event") == "finished" and e.get("decode_tokens_per_s"): print(round(e["decode_tokens_per_s"]))' \
    <"$WORK/generate.jsonl")"
  SPEED="${SPEED:--}"
  RSS="$(awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status" 2>/dev/null)"
  RSS="${RSS:--}"
  kill -TERM "$pid"; wait "$pid"; code=$?
  if [[ -z "$served" ]]; then echo "generate failed: $(tail -1 "$WORK/generate.log")"
  elif [[ "$served" != "$reference" ]]; then echo "stream differs from llorch run"
  elif [[ $code -ne 0 ]]; then echo "worker exited $code on SIGTERM"
  else echo ok; fi
}

failures=0
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -u +%FT%TZ)"
printf '%-8s | %-28s | %-5s | %-7s | %-13s | %s\n' family format dtype "tok/s" "worker RSS MiB" result
printf '%s\n' "---------|------------------------------|-------|---------|----------------|-------"
for row in "${ROWS[@]}"; do
  IFS='|' read -r family format dtype path <<<"$row"
  run_one "$path" >"$WORK/result"
  result="$(cat "$WORK/result")"
  [[ "$result" == ok ]] || failures=$((failures + 1))
  printf '%-8s | %-28s | %-5s | %-7s | %-14s | %s\n' "$family" "$format" "$dtype" "$SPEED" "$RSS" \
    "$result"
done
echo "$(( ${#ROWS[@]} - failures ))/${#ROWS[@]} models generated through llorch-worker"
exit $(( failures > 0 ))
