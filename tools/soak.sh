#!/usr/bin/env bash
# A soak through llorch-scheduler: `llorch soak` keeps --concurrency mixed
# requests in flight (prompt kinds and lengths, sampling settings, cancels,
# dropped streams, deadlines) until --requests have ended or --duration has
# passed, samples every process's resident memory, and checks at the end that
# no request was lost, none failed, every worker's KV cache is empty and no
# process's memory grew by more than --max-heap-slope KiB per request after the
# warm-up. Its last line is the summary; the exit status is non-zero on any of
# those, or when a process did not exit cleanly on SIGTERM.
#
#   tools/soak.sh --requests 5000 --concurrency 8 [--duration S] [llorch soak flags...]
#   tools/soak.sh --scheduler HOST:PORT --model NAME ...   (a running deployment)
#
# With no --scheduler it starts one llorch-scheduler and two llorch-workers
# (registering) on $LLORCH_DEFAULT_MODEL, or on --model-path PATH, on loopback.
# LLORCH_TEST_FAULT, if set, goes to the workers only (tests use it). Logs
# stay in $LLORCH_SOAK_DIR (a temporary directory by default).
#
# The servers it starts run with glibc's per-thread malloc caches off
# (GLIBC_TUNABLES=glibc.malloc.tcache_count=0): chunks parked in those caches
# count as in use, and as threads fill them the idle heap creeps up by about
# 0.3 KiB per request for thousands of requests, which would hide a small
# leak. Without the caches the idle heap of a healthy run stays flat.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/tools/env.sh"
BIN="${LLORCH_BIN:-$ROOT/build/bin}"

SCHEDULER_ADDRESS="" MODEL_NAME="" MODEL_PATH="$LLORCH_DEFAULT_MODEL"
ARGS=()
while (($#)); do
  case "$1" in
    --scheduler) SCHEDULER_ADDRESS="$2"; shift 2 ;;
    --model) MODEL_NAME="$2"; shift 2 ;;
    --model-path) MODEL_PATH="$2"; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

if [[ -n "$SCHEDULER_ADDRESS" ]]; then
  [[ -n "$MODEL_NAME" ]] || { echo "soak.sh: --model NAME is required with --scheduler" >&2; exit 2; }
  exec "$BIN/llorch" soak --scheduler "$SCHEDULER_ADDRESS" --model "$MODEL_NAME" "${ARGS[@]}"
fi

[[ -e "$MODEL_PATH" ]] || { echo "soak.sh: no model at $MODEL_PATH (run tools/setup.sh)" >&2; exit 2; }
MODEL_NAME="$(basename "${MODEL_PATH%/}")"
MODEL_NAME="${MODEL_NAME%.gguf}"
DIR="${LLORCH_SOAK_DIR:-$(mktemp -d -t llorch-soak.XXXXXX)}"
mkdir -p "$DIR"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

# port_of LOG KIND: the port of "KIND listening on port N" once it is logged.
port_of() {
  local log="$1" kind="$2" pid="$3"
  for _ in $(seq 1 1200); do
    if grep -q "$kind listening on port" "$log"; then
      grep -o "$kind listening on port [0-9]*" "$log" | head -1 | grep -o '[0-9]*$'
      return
    fi
    kill -0 "$pid" 2>/dev/null || { echo "soak.sh: process died:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  echo "soak.sh: no port in $log" >&2; exit 1
}

WORKER_FAULT="${LLORCH_TEST_FAULT:-}"
unset LLORCH_TEST_FAULT
export GLIBC_TUNABLES="${GLIBC_TUNABLES:-glibc.malloc.tcache_count=0}"
"$BIN/llorch-scheduler" --listen 127.0.0.1:0 --metrics_host 127.0.0.1 --metrics_port 0 \
  --max_queue 1024 2>"$DIR/scheduler.log" &
SCHEDULER=$!; PIDS+=("$SCHEDULER")
SCHEDULER_PORT="$(port_of "$DIR/scheduler.log" grpc "$SCHEDULER")"
WATCH=(--watch "scheduler=http://127.0.0.1:$(port_of "$DIR/scheduler.log" metrics "$SCHEDULER")/metrics")
for name in worker-a worker-b; do
  LLORCH_TEST_FAULT="$WORKER_FAULT" "$BIN/llorch-worker" --model "$MODEL_PATH" \
    --listen 127.0.0.1:0 --metrics_host 127.0.0.1 --metrics_port 0 --worker_id "$name" \
    --scheduler "127.0.0.1:$SCHEDULER_PORT" 2>"$DIR/$name.log" &
  PIDS+=("$!")
  WATCH+=(--watch "$name=http://127.0.0.1:$(port_of "$DIR/$name.log" metrics "$!")/metrics")
done
for _ in $(seq 1 1200); do
  (( $(grep -c " up (model " "$DIR/scheduler.log" || true) >= 2 )) && break
  for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "soak.sh: a process died:" >&2; tail -n 20 "$DIR"/*.log >&2; exit 1; }
  done
  sleep 0.1
done
(( $(grep -c " up (model " "$DIR/scheduler.log" || true) >= 2 )) ||
  { echo "soak.sh: workers did not come up" >&2; tail -n 20 "$DIR"/*.log >&2; exit 1; }
echo "soak.sh: scheduler 127.0.0.1:$SCHEDULER_PORT, 2 workers on $MODEL_NAME; logs in $DIR" >&2

status=0
"$BIN/llorch" soak --scheduler "127.0.0.1:$SCHEDULER_PORT" --model "$MODEL_NAME" "${WATCH[@]}" \
  "${ARGS[@]}" >"$DIR/soak.out" || status=$?
# Every process must still be alive and exit 0 on SIGTERM (workers first:
# the scheduler then sees them go as an operator's restart would).
exits=()
for pid in "${PIDS[@]:1}" "$SCHEDULER"; do
  if kill -TERM "$pid" 2>/dev/null; then
    code=0; wait "$pid" || code=$?
  else
    code="gone"
  fi
  exits+=("$code")
done
PIDS=()
summary="$(tail -n 1 "$DIR/soak.out")"
head -n -1 "$DIR/soak.out"
if [[ "${exits[*]}" != "0 0 0" ]]; then
  echo "process exits (worker-a worker-b scheduler): ${exits[*]}; logs in $DIR"
  tail -n 20 "$DIR"/*.log
  echo "$summary; process exits ${exits[*]} FAIL"
  exit 1
fi
echo "$summary"
exit "$status"
