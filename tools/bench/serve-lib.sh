# Shared by tools/bench-serve.sh and tools/bench-kv.sh (sourced): the
# servers they start (PIDS), a free port, and waiting for a log line.
PIDS=()
# Stops every server started so far and waits for them.
cleanup() {
  local pid
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# wait_for LOG PATTERN PID...: until PATTERN is in LOG; fails when a PID dies.
wait_for() {
  local log="$1" pattern="$2" pid; shift 2
  for _ in $(seq 1 1200); do
    grep -q "$pattern" "$log" && return 0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null || { tail -n 30 "$log" >&2; return 1; }; done
    sleep 0.1
  done
  echo "$(basename "$0"): timed out waiting for '$pattern' in $log" >&2; return 1
}
# start_llama_server MODEL THREADS SLOTS CONTEXT LOG: llama.cpp's llama-server
# (built once by build-llamacpp-server.sh) on a free port, CPU only; returns
# once /health answers. Sets SERVER (the binary) and PORT.
start_llama_server() {
  local model="$1" threads="$2" slots="$3" context="$4" log="$5"
  SERVER="$("$ROOT/tools/bench/build-llamacpp-server.sh" | tail -n 1)"
  PORT="$(free_port)"
  "$SERVER" -m "$model" --host 127.0.0.1 --port "$PORT" -t "$threads" -tb "$threads" \
    -np "$slots" -c "$context" --no-webui >"$log" 2>&1 &
  PIDS+=($!)
  local pid=$!
  for _ in $(seq 1 1200); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$log" >&2; return 1; }
    sleep 0.1
  done
  echo "$(basename "$0"): llama-server did not answer /health" >&2; return 1
}
