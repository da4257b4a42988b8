#!/usr/bin/env bash
# Builds the libFuzzer fuzzers of tests/fuzz in build-fuzz/ (clang, ASan,
# UBSan) and runs each for a while on a copy of its seed corpus.
#
# Usage: tools/fuzz.sh [--seconds S] [--jobs N] [--keep-corpus] [TARGET...]
#   --seconds S     fuzz each target S seconds (default 600)
#   --jobs N        run N fuzzers at once (default 1)
#   --keep-corpus   start from the corpus the last run grew, not a fresh copy
#   TARGET          gguf, safetensors, hf_tokenizer, bpe_encode, spm_encode,
#                   chat_template, generate_request, execute_request,
#                   openai_request (default: all)
#
# Per target it prints executions, exec/s and coverage (libFuzzer's cov: and
# ft:), or the crash: a crash, sanitizer report, broken invariant, timeout
# (-timeout, 30 s per input), leak or allocation beyond -malloc_limit_mb
# (1024) / -rss_limit_mb (2048) fails the target, and the input is kept under
# build-fuzz/fuzz-runs/TARGET/ (reproduce: build-fuzz/bin/TARGET_fuzzer INPUT).
# The committed corpus (tests/fuzz/corpus/TARGET) is never written.
# Exit status: 0 if every target ran clean, 1 if any failed, 77 if clang or
# libFuzzer's runtime is missing (tools/setup.sh installs them).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/tools/env.sh"

ALL_TARGETS=(gguf safetensors hf_tokenizer bpe_encode spm_encode chat_template
             generate_request execute_request openai_request)
SECONDS_EACH=600
JOBS=1
KEEP_CORPUS=0
TARGETS=()
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while (($#)); do
  case "$1" in
    --seconds) SECONDS_EACH="${2:?--seconds needs a value}"; shift 2 ;;
    --seconds=*) SECONDS_EACH="${1#*=}"; shift ;;
    --jobs) JOBS="${2:?--jobs needs a value}"; shift 2 ;;
    --jobs=*) JOBS="${1#*=}"; shift ;;
    --keep-corpus) KEEP_CORPUS=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "fuzz: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) TARGETS+=("${1%_fuzzer}"); shift ;;
  esac
done
[[ "$SECONDS_EACH" =~ ^[0-9]+$ && "$SECONDS_EACH" -ge 1 ]] || { echo "fuzz: bad --seconds" >&2; exit 2; }
[[ "$JOBS" =~ ^[0-9]+$ && "$JOBS" -ge 1 ]] || { echo "fuzz: bad --jobs" >&2; exit 2; }
((${#TARGETS[@]})) || TARGETS=("${ALL_TARGETS[@]}")
for t in "${TARGETS[@]}"; do
  [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || { echo "fuzz: unknown target $t (known: ${ALL_TARGETS[*]})" >&2; exit 2; }
done

# clang and libFuzzer's runtime (Debian: clang, libclang-rt-14-dev).
CLANG="$(command -v clang || true)"
CLANGXX="$(command -v clang++ || true)"
if [[ -z "$CLANG" || -z "$CLANGXX" ]]; then
  echo "fuzz: SKIPPED: clang/clang++ not found (tools/setup.sh installs clang and libclang-rt-14-dev)"
  exit 77
fi
probe="$(mktemp -d)"
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
  > "$probe/probe.cc"
if ! "$CLANGXX" -fsanitize=fuzzer,address,undefined "$probe/probe.cc" -o "$probe/probe" 2> "$probe/err"; then
  echo "fuzz: SKIPPED: $CLANGXX cannot link -fsanitize=fuzzer,address,undefined" \
       "(Debian: install libclang-rt-14-dev):"
  sed 's/^/  /' "$probe/err" | head -5
  exit 77
fi

BUILD="${LLORCH_FUZZ_BUILD:-$ROOT/build-fuzz}"
start=$(date +%s)
if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
  echo "fuzz: configuring $BUILD (clang, -DLLORCH_FUZZ=ON)"
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  if ! CC="$CLANG" CXX="$CLANGXX" cmake -S "$ROOT" -B "$BUILD" "${generator[@]}" \
        -DLLORCH_FUZZ=ON -DCMAKE_BUILD_TYPE=Release > "$probe/configure.log" 2>&1; then
    cat "$probe/configure.log"
    echo "fuzz: FAILED: cannot configure $BUILD"
    exit 1
  fi
fi
echo "fuzz: building ${TARGETS[*]/%/_fuzzer}"
if ! cmake --build "$BUILD" --target "${TARGETS[@]/%/_fuzzer}" > "$probe/build.log" 2>&1; then
  tail -n 60 "$probe/build.log"
  echo "fuzz: FAILED: the build of $BUILD failed"
  exit 1
fi
echo "fuzz: build took $(( $(date +%s) - start )) s"

RUNS="$BUILD/fuzz-runs"
mkdir -p "$RUNS"
export ASAN_OPTIONS="${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}abort_on_error=0:detect_leaks=1"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-}${UBSAN_OPTIONS:+:}print_stacktrace=1"

# Runs one fuzzer; its summary line goes to $RUNS/NAME/result.
run_one() {
  local name="$1" dir="$RUNS/$1" bin="$BUILD/bin/$1_fuzzer"
  if ((KEEP_CORPUS == 0)) || [[ ! -d "$dir/corpus" ]]; then
    rm -rf "$dir"
    mkdir -p "$dir/corpus"
  fi
  # The committed seeds (never written: the fuzzer adds to the copy).
  if [[ -d "$ROOT/tests/fuzz/corpus/$name" ]]; then
    cp -r "$ROOT/tests/fuzz/corpus/$name/." "$dir/corpus/"
    chmod -R u+w "$dir/corpus"
  fi
  local args=(-max_total_time="$SECONDS_EACH" -print_final_stats=1 -timeout=30
              -rss_limit_mb=2048 -malloc_limit_mb=1024 -error_exitcode=99 -timeout_exitcode=98
              -artifact_prefix="$dir/")
  [[ -f "$ROOT/tests/fuzz/dict/$name.dict" ]] && args+=(-dict="$ROOT/tests/fuzz/dict/$name.dict")
  local t0=$SECONDS rc
  (cd "$dir" && exec "$bin" "${args[@]}" corpus) > "$dir/log" 2>&1
  rc=$?
  local execs rate cov ft artifact
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$dir/log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$dir/log" | tail -1 | cut -d' ' -f2)
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$dir/log" | tail -1)
  local corpus_size
  corpus_size=$(find "$dir/corpus" -type f | wc -l)
  if ((rc == 0)); then
    printf '%-17s ok: %s executions, %s exec/s, cov: %s ft: %s, corpus %s inputs (%d s)\n' \
      "$name" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$corpus_size" $((SECONDS - t0)) \
      > "$dir/result"
  else
    local what
    what=$(grep -m1 -oE 'ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer): [^ ]+( [^ ]+)?|runtime error: .*|invariant broken: .*|out-of-memory \([^)]*\)|timeout after [0-9]+ seconds' "$dir/log" | head -c 300)
    printf '%-17s FAILED (exit %d): %s; after %s executions, cov: %s ft: %s\n%-17s input: %s\n%-17s log:   %s\n' \
      "$name" "$rc" "${what:-see the log}" "${execs:-?}" "${cov:-?}" "${ft:-?}" \
      "" "${artifact:-(none written)}" "" "$dir/log" > "$dir/result"
  fi
  return "$rc"
}

echo "fuzz: running ${#TARGETS[@]} fuzzer(s) for $SECONDS_EACH s each, $JOBS at a time" \
     "(logs and inputs under $RUNS)"
declare -A PID_OF=()
failed=()
total_execs=0
report() {  # prints a finished target's result and notes a failure
  local name="$1" rc="$2"
  cat "$RUNS/$name/result" 2>/dev/null || echo "$name: no result"
  ((rc == 0)) || failed+=("$name")
  local e
  e=$(sed -n 's/^stat::number_of_executed_units: *//p' "$RUNS/$name/log" 2>/dev/null | tail -1)
  total_execs=$((total_execs + ${e:-0}))
}
for name in "${TARGETS[@]}"; do
  while ((${#PID_OF[@]} >= JOBS)); do
    wait -n -p done_pid; rc=$?
    for n in "${!PID_OF[@]}"; do
      if [[ "${PID_OF[$n]}" == "$done_pid" ]]; then unset "PID_OF[$n]"; report "$n" "$rc"; fi
    done
  done
  run_one "$name" &
  PID_OF[$name]=$!
done
for n in "${TARGETS[@]}"; do
  [[ -n "${PID_OF[$n]:-}" ]] || continue
  wait "${PID_OF[$n]}"; rc=$?
  report "$n" "$rc"
done

elapsed=$(( $(date +%s) - start ))
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${#failed[@]} of ${#TARGETS[@]} fuzzers found a problem (${failed[*]}); inputs under $RUNS; $total_execs executions, $elapsed s in all"
  exit 1
fi
echo "fuzz: OK: ${#TARGETS[@]} fuzzers ran ${SECONDS_EACH} s each, $total_execs executions, no crash; $elapsed s in all"
