#!/usr/bin/env bash
# The main job: installs what is missing, builds, starts llorch-scheduler and
# one llorch-worker on the default real model (SmolLM2-135M-Instruct Q4_1),
# the worker registering itself with the scheduler, and streams a chat answer
# through the scheduler's public Generate API with `llorch generate`.
# Usage: tools/demo.sh [PROMPT]  (sent as the user's chat message, rendered
# by the model's own chat template)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
"$ROOT/tools/setup.sh"
source "$ROOT/tools/env.sh"
PROMPT="What is the capital of France? Tell me one fact about it."
SCHEDULER_PORT="${LLORCH_DEMO_SCHEDULER_PORT:-50051}"
WORKER_PORT="${LLORCH_DEMO_PORT:-50061}"
SCHEDULER_METRICS="${LLORCH_DEMO_SCHEDULER_METRICS_PORT:-9465}"
WORKER_METRICS="${LLORCH_DEMO_METRICS_PORT:-9464}"
HTTP_PORT="${LLORCH_DEMO_HTTP_PORT:-8080}"  # OpenAI-compatible API and the chat page at /
MODEL_NAME="$(basename "$LLORCH_DEFAULT_MODEL" .gguf)"  # the worker's default served name
SCHEDULER_LOG="$(mktemp -t llorch-scheduler-demo.XXXXXX.log)"
WORKER_LOG="$(mktemp -t llorch-worker-demo.XXXXXX.log)"

"$ROOT/build/bin/llorch-scheduler" --listen "127.0.0.1:$SCHEDULER_PORT" \
  --metrics_host 127.0.0.1 --metrics_port "$SCHEDULER_METRICS" \
  --http_listen "127.0.0.1:$HTTP_PORT" 2>"$SCHEDULER_LOG" &
SCHEDULER=$!
"$ROOT/build/bin/llorch-worker" --model "$LLORCH_DEFAULT_MODEL" --listen "127.0.0.1:$WORKER_PORT" \
  --metrics_host 127.0.0.1 --metrics_port "$WORKER_METRICS" \
  --scheduler "127.0.0.1:$SCHEDULER_PORT" 2>"$WORKER_LOG" &
WORKER=$!
trap 'kill -TERM $WORKER $SCHEDULER 2>/dev/null; wait $WORKER $SCHEDULER 2>/dev/null || true' EXIT

# Ready when the scheduler has probed the registered worker and found it up.
for _ in $(seq 1 600); do
  grep -q "up (model $MODEL_NAME)" "$SCHEDULER_LOG" && break
  for pid in $SCHEDULER $WORKER; do
    if ! kill -0 "$pid" 2>/dev/null; then cat "$SCHEDULER_LOG" "$WORKER_LOG" >&2; exit 1; fi
  done
  sleep 0.1
done
grep -q "up (model $MODEL_NAME)" "$SCHEDULER_LOG" || { cat "$SCHEDULER_LOG" "$WORKER_LOG" >&2; exit 1; }
echo "[llorch-scheduler on 127.0.0.1:$SCHEDULER_PORT (metrics http://127.0.0.1:$SCHEDULER_METRICS/metrics)," \
  "llorch-worker on 127.0.0.1:$WORKER_PORT (metrics http://127.0.0.1:$WORKER_METRICS/metrics)," \
  "model $MODEL_NAME]" >&2
echo "[chat page: http://127.0.0.1:$HTTP_PORT/ (OpenAI API: http://127.0.0.1:$HTTP_PORT/v1)]" >&2
"$ROOT/build/bin/llorch" generate --scheduler "127.0.0.1:$SCHEDULER_PORT" --model "$MODEL_NAME" \
  --chat "user:${1:-$PROMPT}" --max-tokens "${MAX_TOKENS:-128}" --temperature 0.2 --seed 42
