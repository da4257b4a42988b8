#!/usr/bin/env bash
# Serving under load: llorch against llama.cpp's llama-server on the same
# GGUF (default SmolLM2), the same threads, the same load from the same
# client (`llorch bench-serve`): for each concurrency level, --requests
# streaming requests of PROMPT_TOKENS prompt tokens and exactly MAX_TOKENS
# generated tokens (greedy, EOS ignored). One server at a time, so they never
# share the cores:
#   1. llama-server (tools/bench/build-llamacpp-server.sh builds it once),
#      -np = the highest level, through its OpenAI API;
#   2. llorch-scheduler + one llorch-worker, through the scheduler's OpenAI
#      HTTP port (--http_listen) and then its gRPC Generate.
# Prints each run's table and the ratios llorch / llama.cpp per level.
# Usage: tools/bench-serve.sh [MODEL.gguf] [extra llorch bench-serve flags]
# Env: THREADS (default: all cores), CONCURRENCY (1,2,4,8,16), REQUESTS (16
# per level), PROMPT_TOKENS (128), MAX_TOKENS (64), OUT (directory for the
# CSVs; default a new temporary one), PLOT=docs/bench-serve.png (one plot of
# all runs; needs gnuplot), PEER=0 (skip llama.cpp), HTTP=0 (skip llorch's
# HTTP port). Run on an idle machine: client and servers share its cores.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/tools/env.sh"
MODEL="${1:-$LLORCH_DEFAULT_MODEL}"; shift || true
THREADS="${THREADS:-$(nproc)}"
CONCURRENCY="${CONCURRENCY:-1,2,4,8,16}"
REQUESTS="${REQUESTS:-16}"
PROMPT_TOKENS="${PROMPT_TOKENS:-128}"
MAX_TOKENS="${MAX_TOKENS:-64}"
PLOT="${PLOT:-}"
OUT="${OUT:-$(mktemp -d -t llorch-bench-serve.XXXXXX)}"
mkdir -p "$OUT"
LLORCH="$ROOT/build/bin/llorch"
MODEL_NAME="$(basename "$MODEL" .gguf)"  # the worker's served name
MAX_LEVEL="$(tr ',' '\n' <<<"$CONCURRENCY" | sort -n | tail -n 1)"
for bin in llorch llorch-scheduler llorch-worker; do
  [[ -x "$ROOT/build/bin/$bin" ]] || { echo "bench-serve: build/bin/$bin missing (cmake --build build)" >&2; exit 1; }
done
[[ -f "$MODEL" ]] || { echo "bench-serve: no model $MODEL (tools/setup.sh fetches SmolLM2)" >&2; exit 1; }

source "$ROOT/tools/bench/serve-lib.sh"
bench() { "$LLORCH" bench-serve --concurrency "$CONCURRENCY" --requests "$REQUESTS" \
  --prompt-tokens "$PROMPT_TOKENS" --max-tokens "$MAX_TOKENS" "$@"; }

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "model: $MODEL; threads $THREADS; levels $CONCURRENCY; $REQUESTS requests per level;" \
  "$PROMPT_TOKENS-token prompts, $MAX_TOKENS generated tokens; CSVs in $OUT"

COMPARE=()
if [[ "${PEER:-1}" != 0 ]]; then
  # One slot per request in flight, each with room for its prompt and output.
  start_llama_server "$MODEL" "$THREADS" "$MAX_LEVEL" \
    "$((MAX_LEVEL * (PROMPT_TOKENS + MAX_TOKENS + 64)))" "$OUT/llama-server.log"
  echo
  echo "## llama.cpp llama-server ($("$SERVER" --version 2>&1 | grep -m1 -i version || true)), OpenAI API"
  bench --openai "http://127.0.0.1:$PORT" --model "$MODEL_NAME" --label "llama.cpp" \
    --csv "$OUT/llamacpp.csv" "$@"
  COMPARE+=("$OUT/llamacpp.csv")
  cleanup
fi

SCHED_LOG="$OUT/llorch-scheduler.log"
WORKER_LOG="$OUT/llorch-worker.log"
"$ROOT/build/bin/llorch-scheduler" --listen 127.0.0.1:0 --metrics_port -1 \
  --http_listen 127.0.0.1:0 2>"$SCHED_LOG" &
PIDS+=($!)
wait_for "$SCHED_LOG" "http listening on port" "${PIDS[0]}"
wait_for "$SCHED_LOG" "grpc listening on port" "${PIDS[0]}"
SCHED_PORT="$(sed -n 's/.*grpc listening on port \([0-9]*\).*/\1/p' "$SCHED_LOG")"
HTTP_PORT="$(sed -n 's/.*http listening on port \([0-9]*\).*/\1/p' "$SCHED_LOG")"
"$ROOT/build/bin/llorch-worker" --model "$MODEL" --listen 127.0.0.1:0 --metrics_port -1 \
  --threads "$THREADS" --max_batch "$MAX_LEVEL" --scheduler "127.0.0.1:$SCHED_PORT" 2>"$WORKER_LOG" &
PIDS+=($!)
wait_for "$SCHED_LOG" "up (model $MODEL_NAME)" "${PIDS[@]}"

join() { local IFS=,; echo "$*"; }
if [[ "${HTTP:-1}" != 0 ]]; then
  echo
  echo "## llorch (llorch-scheduler + 1 llorch-worker), OpenAI API (--http_listen)"
  bench --openai "http://127.0.0.1:$HTTP_PORT" --model "$MODEL_NAME" --label "llorch HTTP" \
    --csv "$OUT/llorch-http.csv" ${COMPARE[@]+--compare "$(join "${COMPARE[@]}")"} "$@"
  COMPARE+=("$OUT/llorch-http.csv")
fi
echo
echo "## llorch (llorch-scheduler + 1 llorch-worker), gRPC Generate"
# Prompts the HTTP run did not send: the worker's prefix cache would answer
# those from its blocks (TTFT 33 ms instead of 200 at 128 words).
bench --scheduler "127.0.0.1:$SCHED_PORT" --model "$MODEL_NAME" --label "llorch gRPC" \
  --first-prompt 1000000 \
  --csv "$OUT/llorch-grpc.csv" ${COMPARE[@]+--compare "$(join "${COMPARE[@]}")"} \
  ${PLOT:+--plot "$PLOT"} "$@"
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg); CSVs and server logs in $OUT${PLOT:+; plot $PLOT}"
