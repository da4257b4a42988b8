#!/usr/bin/env bash
# KV memory under load (issue 15's proofs 2 and 3), llorch-scheduler + one
# llorch-worker through the OpenAI API (tools/bench/kv_bench.py, the `openai`
# client), one server at a time on the same cores:
#   1. paging: at a fixed KV budget (BUDGET), REQUESTS chat requests that stop
#      early (max_tokens MAX_TOKENS, far above what they use), CONCURRENCY in
#      flight: jobs running at once and aggregate tok/s with
#      --kv_admission=reserve (prompt + max_tokens reserved up front, as
#      before paging) and =paged; the ratio paged / reserve.
#   2. chat: CONVERSATIONS conversations x TURNS turns sharing a system prompt,
#      each turn the whole history: time to first token per turn with the
#      prefix cache on (with and without --cache_answers) and off, and
#      llama.cpp's llama-server (cache_prompt, one
#      slot per conversation; PEER=0 skips it).
#   3. placement: the same chats through one scheduler and two workers (each
#      with half the threads), --placement least_loaded and cache_aware: the
#      prompt tokens found in the workers' prefix caches, as a share of what
#      one worker holding every conversation reuses (the reusable tokens,
#      measured in the same run), and time to first token.
# Usage: tools/bench-kv.sh [MODEL.gguf]   (default SmolLM2)
# Env: THREADS (all cores), BUDGET (4096tokens), REQUESTS (48),
# CONCURRENCY (32), MAX_TOKENS (512), CONVERSATIONS (8), TURNS (6), THINK_S (0: seconds
# between a chat's turns, as a person reading and typing),
# MODES (paging,chat,placement). Run on an idle machine.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/tools/env.sh"
MODEL="${1:-$LLORCH_DEFAULT_MODEL}"
THREADS="${THREADS:-$(nproc)}"
BUDGET="${BUDGET:-4096tokens}"
REQUESTS="${REQUESTS:-48}"
CONCURRENCY="${CONCURRENCY:-32}"
MAX_TOKENS="${MAX_TOKENS:-512}"
CONVERSATIONS="${CONVERSATIONS:-8}"
TURNS="${TURNS:-6}"
MODES="${MODES:-paging,chat,placement}"
OUT="$(mktemp -d -t llorch-bench-kv.XXXXXX)"
MODEL_NAME="$(basename "$MODEL" .gguf)"
PY="$ROOT/tools/venv-python"
for bin in llorch-scheduler llorch-worker; do
  [[ -x "$ROOT/build/bin/$bin" ]] || { echo "bench-kv: build/bin/$bin missing" >&2; exit 1; }
done

source "$ROOT/tools/bench/serve-lib.sh"

# start_llorch NAME WORKER_FLAGS...: scheduler (HTTP) + NUM_WORKERS workers
# (default 1) of WORKER_THREADS threads each (default THREADS); the scheduler
# gets SCHED_FLAGS. Sets HTTP_URL, METRICS_URL (the first worker's) and
# SCHED_METRICS_URL.
start_llorch() {
  local name="$1"; shift
  local sched_log="$OUT/$name-scheduler.log"
  local sched_metrics_port; sched_metrics_port="$(free_port)"
  # shellcheck disable=SC2086
  "$ROOT/build/bin/llorch-scheduler" --listen 127.0.0.1:0 --metrics_port "$sched_metrics_port" \
    --metrics_host 127.0.0.1 --http_listen 127.0.0.1:0 ${SCHED_FLAGS:-} 2>"$sched_log" &
  PIDS+=($!)
  wait_for "$sched_log" "grpc listening on port" "${PIDS[@]}"
  wait_for "$sched_log" "http listening on port" "${PIDS[@]}"
  local sched_port http_port i metrics_port pid
  sched_port="$(sed -n 's/.*grpc listening on port \([0-9]*\).*/\1/p' "$sched_log")"
  http_port="$(sed -n 's/.*http listening on port \([0-9]*\).*/\1/p' "$sched_log")"
  METRICS_URL=""
  for ((i = 1; i <= ${NUM_WORKERS:-1}; i++)); do
    metrics_port="$(free_port)"
    "$ROOT/build/bin/llorch-worker" --model "$MODEL" --listen 127.0.0.1:0 \
      --metrics_port "$metrics_port" --metrics_host 127.0.0.1 \
      --threads "${WORKER_THREADS:-$THREADS}" --scheduler "127.0.0.1:$sched_port" "$@" \
      2>"$OUT/$name-worker$i.log" &
    PIDS+=($!)
    [[ -n "$METRICS_URL" ]] || METRICS_URL="http://127.0.0.1:$metrics_port/metrics"
  done
  for _ in $(seq 1 1200); do
    (( $(grep -c "up (model $MODEL_NAME)" "$sched_log") >= ${NUM_WORKERS:-1} )) && break
    for pid in "${PIDS[@]}"; do
      kill -0 "$pid" 2>/dev/null || { tail -n 30 "$OUT/$name"-*.log >&2; exit 1; }
    done
    sleep 0.1
  done
  HTTP_URL="http://127.0.0.1:$http_port/v1"
  SCHED_METRICS_URL="http://127.0.0.1:$sched_metrics_port/metrics"
}

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -u +%FT%TZ)"
echo "model: $MODEL; threads $THREADS; logs in $OUT"

if [[ ",$MODES," == *",paging,"* ]]; then
  echo
  echo "## paging: --kv_budget $BUDGET, $REQUESTS chat requests, $CONCURRENCY in flight," \
    "max_tokens $MAX_TOKENS (they stop at EOS)"
  for admission in reserve paged; do
    start_llorch "paging-$admission" --kv_budget "$BUDGET" --kv_admission "$admission" \
      --max_batch "$CONCURRENCY" --prefix_cache=false
    result="$("$PY" "$ROOT/tools/bench/kv_bench.py" paging "$HTTP_URL" "$MODEL_NAME" "$METRICS_URL" \
      --requests "$REQUESTS" --concurrency "$CONCURRENCY" --max-tokens "$MAX_TOKENS")"
    echo "$admission: $result"
    echo "$result" >"$OUT/paging-$admission.json"
    cleanup
  done
  python3 - "$OUT/paging-reserve.json" "$OUT/paging-paged.json" <<'EOF'
import json, sys
r, p = (json.load(open(f)) for f in sys.argv[1:3])
ratio = lambda a, b: f"{a / b:.2f}x" if b else "n/a"
print(f"paged / reserve: mean running {ratio(p['mean_running'], r['mean_running'])}, "
      f"peak running {ratio(p['peak_running'], r['peak_running'])}, "
      f"tok/s {ratio(p['tokens_per_s'], r['tokens_per_s'])}")
EOF
fi

if [[ ",$MODES," == *",chat,"* ]]; then
  echo
  echo "## chat: $CONVERSATIONS conversations x $TURNS turns (shared system prompt, whole history" \
    "each turn), time to first token"
  chat() { "$PY" "$ROOT/tools/bench/kv_bench.py" chat "$@" --conversations "$CONVERSATIONS" \
    --turns "$TURNS" --think-s "${THINK_S:-0}"; }
  for prefix in answers true false; do
    if [[ "$prefix" == answers ]]; then flags=(--prefix_cache=true --cache_answers=true)
    else flags=(--prefix_cache="$prefix"); fi
    start_llorch "chat-prefix-$prefix" "${flags[@]}" --max_batch "$CONVERSATIONS"
    result="$(chat "$HTTP_URL" "$MODEL_NAME" "$METRICS_URL")"
    echo "llorch ${flags[*]}: $result"
    echo "$result" >"$OUT/chat-llorch-$prefix.json"
    cleanup
  done
  if [[ "${PEER:-1}" != 0 ]]; then
    start_llama_server "$MODEL" "$THREADS" "$CONVERSATIONS" "$((CONVERSATIONS * 2048))" \
      "$OUT/llama-server.log"
    result="$(chat "http://127.0.0.1:$PORT/v1" "$MODEL_NAME")"
    echo "llama.cpp llama-server (cache_prompt): $result"
    echo "$result" >"$OUT/chat-llamacpp.json"
    cleanup
  fi
  python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
rows = [("llorch, prefix cache", "chat-llorch-true.json"),
        ("llorch, prefix cache + --cache_answers", "chat-llorch-answers.json"),
        ("llorch, no prefix cache", "chat-llorch-false.json"),
        ("llama.cpp, cache_prompt", "chat-llamacpp.json")]
base = None
print("| server | TTFT turn 1 (ms) | TTFT turns 2+ (ms) | ratio to llorch with cache | "
      "prompt tokens reused, turns 2+ |")
print("|---|---|---|---|---|")
for label, name in rows:
    path = os.path.join(out, name)
    if not os.path.exists(path):
        continue
    r = json.load(open(path))
    t1, later = r["ttft_s_per_turn"][0], r["ttft_s_turns_2_on"]
    if base is None:
        base = later
    cached, prompt = r["cached_tokens_per_turn"][1:], r["prompt_tokens_per_turn"][1:]
    reused = (f"{100 * sum(cached) / sum(prompt):.0f}%"
              if cached and None not in cached and None not in prompt else "-")
    print(f"| {label} | {t1 * 1000:.0f} | {later * 1000:.0f} | {later / base:.2f} | {reused} |")
EOF
fi

if [[ ",$MODES," == *",placement,"* ]]; then
  half=$(( THREADS / 2 > 0 ? THREADS / 2 : 1 ))
  echo
  echo "## placement: $CONVERSATIONS conversations x $TURNS turns through one scheduler and two" \
    "workers ($half threads each); reusable = cached tokens with one worker holding every" \
    "conversation ($THREADS threads)"
  chat() { "$PY" "$ROOT/tools/bench/kv_bench.py" chat "$@" --conversations "$CONVERSATIONS" \
    --turns "$TURNS"; }
  start_llorch "placement-one-worker" --max_batch "$CONVERSATIONS"
  result="$(chat "$HTTP_URL" "$MODEL_NAME" "$METRICS_URL" --scheduler-metrics "$SCHED_METRICS_URL")"
  echo "one worker: $result"
  echo "$result" >"$OUT/placement-one.json"
  cleanup
  for placement in least_loaded cache_aware; do
    SCHED_FLAGS="--placement $placement" NUM_WORKERS=2 WORKER_THREADS="$half" \
      start_llorch "placement-$placement" --max_batch "$CONVERSATIONS"
    result="$(chat "$HTTP_URL" "$MODEL_NAME" "$METRICS_URL" \
      --scheduler-metrics "$SCHED_METRICS_URL")"
    echo "two workers, --placement $placement: $result"
    echo "$result" >"$OUT/placement-$placement.json"
    cleanup
  done
  python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
one = json.load(open(os.path.join(out, "placement-one.json")))
reusable = one["cached_tokens_total"]
print(f"reusable prompt tokens (one worker): {reusable} of {one['prompt_tokens_total']}")
print("| placement | cached tokens | of reusable | prompt tokens computed | TTFT turns 2+ (ms) | "
      "placed by prefix | prefix probes, mean (ms) |")
print("|---|---|---|---|---|---|---|")
for placement in ("least_loaded", "cache_aware"):
    r = json.load(open(os.path.join(out, f"placement-{placement}.json")))
    share = f"{100 * r['cached_tokens_total'] / reusable:.1f}%" if reusable else "n/a"
    probe = r.get("prefix_probe_mean_s")
    print(f"| {placement} | {r['cached_tokens_total']} | {share} | "
          f"{r['prompt_tokens_total'] - r['cached_tokens_total']} | "
          f"{r['ttft_s_turns_2_on'] * 1000:.0f} | {r.get('prefix_placements') or 0:.0f} | "
          f"{'-' if probe is None else f'{probe * 1000:.1f}'} |")
EOF
fi
