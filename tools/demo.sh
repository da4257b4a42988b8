#!/usr/bin/env bash
# The main job: installs what is missing, builds, starts llorch-worker on the
# default real model (SmolLM2-135M-Instruct Q4_1) and streams a generation
# from it over gRPC with `llorch generate`. (The scheduler joins when its
# issue lands.) Usage: tools/demo.sh [PROMPT]  (sent as the user's chat message,
# rendered by the model's own chat template)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
"$ROOT/tools/setup.sh"
source "$ROOT/tools/env.sh"
PROMPT="What is the capital of France? Tell me one fact about it."
PORT="${LLORCH_DEMO_PORT:-50061}"
METRICS_PORT="${LLORCH_DEMO_METRICS_PORT:-9464}"
LOG="$(mktemp -t llorch-worker-demo.XXXXXX.log)"
"$ROOT/build/bin/llorch-worker" --model "$LLORCH_DEFAULT_MODEL" --listen "127.0.0.1:$PORT" \
  --metrics_host 127.0.0.1 --metrics_port "$METRICS_PORT" 2>"$LOG" &
WORKER=$!
trap 'kill -TERM $WORKER 2>/dev/null; wait $WORKER 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  grep -q "llorch-worker: serving" "$LOG" && break
  if ! kill -0 "$WORKER" 2>/dev/null; then cat "$LOG" >&2; exit 1; fi
  sleep 0.1
done
grep -q "llorch-worker: serving" "$LOG" || { cat "$LOG" >&2; exit 1; }
echo "[llorch-worker on 127.0.0.1:$PORT, metrics on http://127.0.0.1:$METRICS_PORT/metrics]" >&2
"$ROOT/build/bin/llorch" generate --worker "127.0.0.1:$PORT" --chat "user:${1:-$PROMPT}" \
  --max-tokens "${MAX_TOKENS:-128}" --temperature 0.2 --seed 42
