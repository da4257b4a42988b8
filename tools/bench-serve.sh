#!/usr/bin/env bash
# Concurrency benchmark: starts llorch-worker on a model (default SmolLM2)
# and prints aggregate generated tok/s at 1, 2, 4, 8 and 16 concurrent
# streams, each against one stream in the same run. Run on an idle machine.
# Usage: tools/bench-serve.sh [MODEL.gguf] [extra llorch bench-serve flags]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/tools/env.sh"
MODEL="${1:-$LLORCH_DEFAULT_MODEL}"; shift || true
LOG="$(mktemp -t llorch-bench-serve.XXXXXX.log)"
"$ROOT/build/bin/llorch-worker" --model "$MODEL" --listen 127.0.0.1:0 --metrics_port -1 \
  --max_batch 16 2>"$LOG" &
WORKER=$!
trap 'kill -TERM $WORKER 2>/dev/null; wait $WORKER 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 1 600); do
  grep -q "llorch-worker: serving" "$LOG" && break
  kill -0 "$WORKER" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
PORT="$(sed -n 's/.*grpc listening on port \([0-9]*\).*/\1/p' "$LOG")"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
"$ROOT/build/bin/llorch" bench-serve --worker "127.0.0.1:$PORT" "$@"
