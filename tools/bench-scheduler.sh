#!/usr/bin/env bash
# Benchmark of the scheduler hop (a report, not a pass/fail test): what
# llorch-scheduler adds per token over calling a worker directly, and how
# many tokens/s one scheduler relays with many streams. The workers are two
# llorch-stub-worker processes (no model: tokens as fast as they are read),
# so that the transport and the relay are what is measured; the client is
# llorch-relay-bench. Builds nothing: needs build/bin/{llorch-scheduler,
# llorch-stub-worker,llorch-relay-bench}
#   (cmake --build build --target llorch-scheduler llorch-stub-worker llorch-relay-bench).
# Client, scheduler and workers share this machine's cores: run it idle.
# Takes about a minute.
#
# Usage: tools/bench-scheduler.sh            (KEEP_LOGS=1 keeps the processes' logs)
#
# One scheduler (default flags but --max_jobs_per_worker 64) fronts both.
# Steps:
#   1. one stream, 2000-token requests, direct to a worker vs through the
#      scheduler: mean µs per token; added = through - direct.
#   2. one stream paced at 1 token/ms with the stub's clock in each token:
#      per-token transit time (stub -> client), direct vs through.
#   3. one stream of 2000-token requests through the scheduler from a worker
#      faster than the relay: every request must complete (the scheduler
#      reads a worker only as fast as its client takes the tokens).
#   4. 1, 4, 16, 64 streams of 1000-token requests (64 requests, 128 with 64
#      streams) through the default scheduler vs the same direct to one
#      worker: aggregate tokens/s.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BIN:-$ROOT/build/bin}"
for tool in llorch-scheduler llorch-stub-worker llorch-relay-bench; do
  [[ -x "$BIN/$tool" ]] || { echo "missing $BIN/$tool: build it first" >&2; exit 1; }
done

TMP="$(mktemp -d -t llorch-bench-scheduler.XXXXXX)"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ "${KEEP_LOGS:-0}" == 1 ]]; then echo "logs: $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for LOG PATTERN COUNT PID: until PATTERN occurs COUNT times in LOG (20 s).
wait_for() {
  local log="$1" pattern="$2" count="$3" pid="$4"
  for _ in $(seq 1 200); do
    (( $(grep -c -- "$pattern" "$log" || true) >= count )) && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "process $pid exited" >&2; exit 1; }
    sleep 0.1
  done
  cat "$log" >&2
  echo "timed out waiting for '$pattern' in $log" >&2
  exit 1
}
port_of() { sed -n 's/.*grpc listening on port \([0-9]*\).*/\1/p' "$1" | head -1; }

WORKER_PORTS=()
for i in 1 2; do
  "$BIN/llorch-stub-worker" --listen 127.0.0.1:0 --model_name stub --max_batch 64 \
    2>"$TMP/worker$i.log" &
  PIDS+=($!)
  wait_for "$TMP/worker$i.log" "grpc listening on port" 1 $!
  WORKER_PORTS+=("$(port_of "$TMP/worker$i.log")")
done
WORKERS="127.0.0.1:${WORKER_PORTS[0]},127.0.0.1:${WORKER_PORTS[1]}"
declare -A SCHED
for name in default; do
  extra=()
  "$BIN/llorch-scheduler" --listen 127.0.0.1:0 --workers "$WORKERS" --metrics_port -1 \
    --max_jobs_per_worker 64 "${extra[@]}" 2>"$TMP/scheduler-$name.log" &
  PIDS+=($!)
  wait_for "$TMP/scheduler-$name.log" "llorch-scheduler: serving" 1 $!
  wait_for "$TMP/scheduler-$name.log" "llorch-scheduler: worker .* up" 2 $!
  SCHED[$name]="127.0.0.1:$(port_of "$TMP/scheduler-$name.log")"
done
DIRECT="127.0.0.1:${WORKER_PORTS[0]}"

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores;" \
  "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "workers: 2 llorch-stub-worker ($WORKERS); scheduler ${SCHED[default]}" \
  "(--max_jobs_per_worker 64, --metrics_port -1)"

# bench NAME ARGS...: one llorch-relay-bench run, its JSON line kept in $TMP/NAME.json.
bench() {
  local name="$1"; shift
  "$BIN/llorch-relay-bench" --model stub "$@" >"$TMP/$name.json" || true
  [[ -s "$TMP/$name.json" ]] || { echo "llorch-relay-bench $* printed nothing" >&2; exit 1; }
}
field() { jq -r ".$2" "$TMP/$1.json"; }
median3() { printf '%s\n' "$@" | sort -g | sed -n 2p; }

echo
echo "1. one stream, 2000-token requests x 20, as fast as read (median of 3 alternating runs)"
for rep in 1 2 3; do
  bench "a-direct-$rep" --target "$DIRECT" --api worker --streams 1 --requests 20 --tokens 2000
  bench "a-sched-$rep" --target "${SCHED[default]}" --api scheduler --streams 1 --requests 20 \
    --tokens 2000
done
for api in direct sched; do
  us=(); tps=(); errs=0
  for rep in 1 2 3; do
    us+=("$(field "a-$api-$rep" us_per_token)"); tps+=("$(field "a-$api-$rep" tokens_per_s)")
    errs=$((errs + $(field "a-$api-$rep" errors)))
  done
  declare "US_$api=$(median3 "${us[@]}")"
  printf '   %-16s %8.2f µs/token  %9.0f tokens/s  (errors %d)\n' \
    "$([[ $api == direct ]] && echo direct || echo "via scheduler")" \
    "$(median3 "${us[@]}")" "$(median3 "${tps[@]}")" "$errs"
done
printf '   added by the scheduler: %.2f µs/token\n' "$(echo "$US_sched - $US_direct" | bc -l)"

echo
echo "2. one stream paced at 1 token/ms, 500-token requests x 2: transit stub -> client"
bench b-direct --target "$DIRECT" --api worker --streams 1 --requests 2 --tokens 500 \
  --interval_us 1000 --stamp
bench b-sched --target "${SCHED[default]}" --api scheduler --streams 1 --requests 2 --tokens 500 \
  --interval_us 1000 --stamp
for api in direct sched; do
  printf '   %-16s transit p50 %7.1f µs  p99 %7.1f µs  mean %7.1f µs  (errors %s)\n' \
    "$([[ $api == direct ]] && echo direct || echo "via scheduler")" \
    "$(field "b-$api" transit_us_p50)" "$(field "b-$api" transit_us_p99)" \
    "$(field "b-$api" transit_us_mean)" "$(field "b-$api" errors)"
done
printf '   added by the scheduler: p50 %.1f µs, mean %.1f µs per token\n' \
  "$(echo "$(field b-sched transit_us_p50) - $(field b-direct transit_us_p50)" | bc -l)" \
  "$(echo "$(field b-sched transit_us_mean) - $(field b-direct transit_us_mean)" | bc -l)"

echo
echo "3. one stream, 2000-token requests x 10 through the default scheduler "
bench c-sched --target "${SCHED[default]}" --api scheduler --streams 1 --requests 10 --tokens 2000
printf '   %s of %s requests failed; tokens relayed %s of %s; first error: %s\n' \
  "$(field c-sched errors)" "$(field c-sched requests)" "$(field c-sched tokens_total)" \
  "$((10 * 2000))" "$(jq -r '.first_error // "none"' "$TMP/c-sched.json")"

echo
echo "4. S streams, 1000-token requests (2 per stream, at least 64), default scheduler vs direct"
echo
printf '%s\n' "| streams | via scheduler tok/s | direct (1 worker) tok/s | ratio |" \
  " scheduler µs/token/stream | scheduler gap p99 µs | errors |" | paste -sd ''  -
echo "|--:|--:|--:|--:|--:|--:|--:|"
for s in 1 4 16 64; do
  r=$((2 * s)); (( r < 64 )) && r=64
  bench "d-sched-$s" --target "${SCHED[default]}" --api scheduler --streams "$s" --requests "$r" \
    --tokens 1000
  bench "d-direct-$s" --target "$DIRECT" --api worker --streams "$s" --requests "$r" --tokens 1000
  printf '| %d | %.0f | %.0f | %.2f | %.1f | %.0f | %d |\n' "$s" \
    "$(field "d-sched-$s" tokens_per_s)" "$(field "d-direct-$s" tokens_per_s)" \
    "$(echo "$(field "d-sched-$s" tokens_per_s) / $(field "d-direct-$s" tokens_per_s)" | bc -l)" \
    "$(field "d-sched-$s" us_per_token)" "$(field "d-sched-$s" gap_us_p99)" \
    "$(( $(field "d-sched-$s" errors) + $(field "d-direct-$s" errors) ))"
done
for f in "$TMP"/d-*.json; do
  jq -r 'select(.errors > 0)
         | "   \(.api) \(.streams) streams: \(.errors) errors, first: \(.first_error)"' "$f"
done
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "goals: < 100 µs added per token (steps 1, 2), >= 20000 relayed tokens/s (step 4)"
