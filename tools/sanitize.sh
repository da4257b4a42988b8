#!/usr/bin/env bash
# Builds the C++ tests with sanitizers beside build/ and runs them (issue 13).
#
# Usage: tools/sanitize.sh [asan|tsan|all] [--quick] [--real-model] [--no-build]
#                          [-R REGEX] [-E REGEX] [CTEST_ARG...]
#   asan          AddressSanitizer + UndefinedBehaviorSanitizer (+ LeakSanitizer)
#                 in build-asan/: every gtest executable, unit tests and the
#                 tests over real llorch-worker / llorch-scheduler processes.
#   tsan          ThreadSanitizer in build-tsan/: the concurrency tests of the
#                 scheduler core, metrics, engine, worker registration, HTTP
#                 front end, and the process tests (their servers instrumented).
#   all           asan, then tsan (the default).
#   --quick       only the torch-free unit tests (scheduler core, parsers,
#                 tokenizers, kernels, gRPC helpers, HTTP front end); it
#                 builds no libtorch code and no servers.
#   --ci          what .ci/run runs, a part of --quick: ASan + UBSan over the
#                 hand-vectorised kernels, the sampler and stop strings, TSan
#                 over the scheduler core's threads (the parsers run under
#                 ASan + UBSan in tools/test.sh already, as fuzz_smoke).
#   --real-model  also the tests on the real SmolLM2 model (names with
#                 "smollm2"): the same code as the random tiny models, 20-90x
#                 slower instrumented; under TSan past their timeouts.
#   --no-build    run what the build directory already has.
#   -R / -E       keep only / drop the selected tests whose name matches REGEX
#                 (Python regular expressions, searched as ctest -R does).
#   CTEST_ARG     passed on to ctest (e.g. --repeat until-fail:3).
#
# build-asan/ and build-tsan/ are configured as tools/setup.sh configures
# build/ (Ninja, Release, the same cargo, ccache) plus -DLLORCH_SANITIZE=...,
# which adds -fsanitize=... -O1 -g -fno-omit-frame-pointer to every target.
# Only the selected test executables and the binaries they spawn are built.
# Debian's libtorch, gRPC, protobuf, absl and c-ares are not instrumented.
#
# Every process (the test, and the servers it spawns, whose own logs the tests
# delete) writes its reports to BUILD/sanitizer-logs/KIND.EXE.PID: any report
# fails the run, even from a test that passed. Tests that assert latency or
# memory bounds which a sanitizer changes by design (BOUNDS_TESTS) run too:
# their reports count, their own verdict is only printed. Suppressions, each
# with its reason: tools/sanitizers/*.supp. Needs tools/setup.sh to have run.
# SANITIZE_KEEP_GOING=1: every report of a process, not only its first (the
# process goes on; for surveys).
# Exit status: 0 when every selected test passed and nothing was reported.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/tools/env.sh"
SUPP="$ROOT/tools/sanitizers"

usage() { sed -n '2,38p' "$0" | sed 's/^# \{0,1\}//'; }

# gtest executables (target names) run under each sanitizer: every test of
# theirs that CTest knows (gtest_discover_tests) is selected.
QUICK_ASAN_TESTS=(  # torch-free, no server binaries
  job_queue_test placement_test worker_registry_test scheduler_core_test
  generate_request_test openai_request_test openai_http_server_test
  grpc_status_test grpc_tls_test grpc_bearer_tokens_test llorch_metrics_test llorch_cli_flags_test
  gguf_test safetensors_test tokenizer_test chat_template_test sampler_test stop_matcher_test
  log_sum_exp_test
  ggml_ops_test quant_matmul_test float_matmul_test served_model_name_test scheduler_registration_test
)
CI_ASAN_TESTS=(  # raw pointers and SIMD loads that no fuzzer reaches
  ggml_ops_test quant_matmul_test float_matmul_test log_sum_exp_test sampler_test stop_matcher_test
)
ASAN_TESTS=(
  "${QUICK_ASAN_TESTS[@]}"
  llama_model_test job_test engine_test activation_pool_test  # the model and the engine on libtorch
  # over real llorch-worker / llorch-scheduler / llorch processes
  worker_process_test scheduler_process_test hostile_grpc_test
)
QUICK_TSAN_TESTS=(
  # the scheduler core's probe and dispatch threads against fake workers
  job_queue_test worker_registry_test placement_test scheduler_core_test
  # metrics updated from many threads; the worker's registration thread;
  # the HTTP server's thread pool in front of a fake scheduler
  llorch_metrics_test scheduler_registration_test openai_http_server_test
)
CI_TSAN_TESTS=(  # the scheduler core's probe and dispatch threads
  job_queue_test worker_registry_test placement_test scheduler_core_test
)
TSAN_TESTS=(
  "${QUICK_TSAN_TESTS[@]}"
  job_test engine_test  # the engine's loop thread with concurrent jobs
  # concurrent streams, cancels, drains through llorch-worker / llorch-scheduler
  worker_process_test scheduler_process_test
)
# Tests (CTest names) that run one of the executables above through a wrapper.
EXTRA_TESTS=(engine_concurrency_smollm2)  # engine_test's *Concurrent* on the real model
# Binaries the process tests spawn (also add_dependencies of those tests).
SPAWNED=(llorch-worker llorch-scheduler llorch)
# Tests whose verdict rests on a bound the sanitizer moves (Python regex).
BOUNDS_TESTS=(
  # llorch_process_heap_bytes is glibc's mallinfo2(), blind to ASan's allocator
  'ProcessCollectorTest\.ReadsThisProcess$'
  # RSS growth under 16 MiB / 5%: ASan's quarantine keeps freed memory resident
  'WorkerProcessSlowClientTest\.JobOfAClientThatStopsReadingIsCancelled$'
  'LoadTest\.NoFailuresAndBoundedMemory$'
  # a first token within a 1.5 s deadline; a cancel felt within ~105 ms
  'KvReleaseTest\.Deadline$' 'Within100Ms$' 'DeadlineBoundsTheWorkersCall$'
  # peak RSS within weights + KV budget + 320 MiB: shadow memory is more
  'WorkerProcessMemoryTest\.PeakIsWeightsPlusKvBudgetPlusAConstant$'
  # ~350 SmolLM2 tokens within 120 s fill the buffers of a stalled stream
  'ClientThatStopsReadingIsCutOff$'
)
REAL_MODEL='smollm2'

MODES=()
QUICK=0
WITH_REAL_MODEL=0
NO_BUILD=0
INCLUDE=""
EXCLUDE=""
CTEST_ARGS=()
while (($#)); do
  case "$1" in
    asan|tsan) MODES+=("$1"); shift ;;
    all) MODES+=(asan tsan); shift ;;
    --quick) QUICK=1; shift ;;
    --ci) QUICK=2; shift ;;
    --real-model) WITH_REAL_MODEL=1; shift ;;
    --no-build) NO_BUILD=1; shift ;;
    -R) INCLUDE="${2:?-R needs a regex}"; shift 2 ;;
    -E) EXCLUDE="${2:?-E needs a regex}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) CTEST_ARGS+=("$1"); shift ;;
  esac
done
((${#MODES[@]})) || MODES=(asan tsan)

# Same cargo as build/ (tools/setup.sh found one >= 1.85); else CMake looks.
CARGO_ARG=()
if [[ -f "$ROOT/build/CMakeCache.txt" ]]; then
  cargo="$(sed -n 's/^CARGO_EXECUTABLE:[A-Z]*=//p' "$ROOT/build/CMakeCache.txt")"
  [[ -n "$cargo" && -x "$cargo" ]] && CARGO_ARG=(-DCARGO_EXECUTABLE="$cargo")
fi

# Runtime options; log_path + log_exe_name: one file per process, read at the end.
set_sanitizer_env() {  # KIND LOGDIR
  local kind="$1" logs="$2" halt=1
  [[ "${SANITIZE_KEEP_GOING:-0}" == 1 ]] && halt=0
  if [[ "$kind" == asan ]]; then
    # halt_on_error: stop at the first report (the process exits non-zero);
    # detect_leaks: LeakSanitizer at exit; check_initialization_order: static
    # initialisation order across translation units.
    export ASAN_OPTIONS="halt_on_error=$halt:detect_leaks=1:check_initialization_order=1:log_path=$logs/asan:log_exe_name=1"
    export LSAN_OPTIONS="suppressions=$SUPP/lsan.supp:print_suppressions=0"
    export UBSAN_OPTIONS="halt_on_error=$halt:print_stacktrace=1:suppressions=$SUPP/ubsan.supp:log_path=$logs/ubsan:log_exe_name=1"
    unset TSAN_OPTIONS
  else
    # second_deadlock_stack: both stacks of a lock-order inversion;
    # ignore_noninstrumented_modules: the memcpy, memcmp, ... that Debian's
    # uninstrumented libraries (gRPC, absl, OpenSSL) call are not checked,
    # as their own loads and stores are not.
    export TSAN_OPTIONS="halt_on_error=$halt:second_deadlock_stack=1:ignore_noninstrumented_modules=1:suppressions=$SUPP/tsan.supp:print_suppressions=0:log_path=$logs/tsan:log_exe_name=1"
    unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS
  fi
}

# The CTest tests of BUILD that run one of the given executables (or are
# EXTRA_TESTS), filtered by -R/-E and the real-model rule, one per line:
# "M NAME" for the main run, "B NAME" for BOUNDS_TESTS.
select_tests() {  # BUILD EXE...
  local build="$1"; shift
  local real=""
  ((WITH_REAL_MODEL)) || real="$REAL_MODEL"
  ctest --test-dir "$build" --show-only=json-v1 | python3 -c '
import json, os, re, sys
exes, extra, inc, exc, real = (set(sys.argv[1].split()), set(sys.argv[2].split()),
                               sys.argv[3], sys.argv[4], sys.argv[5])
bounds = "|".join(sys.argv[6:])
for t in json.load(sys.stdin)["tests"]:
    name, cmd = t["name"], t.get("command") or [""]
    if os.path.basename(cmd[0]) not in exes and name not in extra: continue
    if inc and not re.search(inc, name): continue
    if exc and re.search(exc, name): continue
    if real and re.search(real, name, re.I): continue
    print("B" if bounds and re.search(bounds, name) else "M", name)
' "$*" "${EXTRA_TESTS[*]}" "$INCLUDE" "$EXCLUDE" "$real" "${BOUNDS_TESTS[@]}"
}

# Names (one per line on stdin) as one anchored CTest regular expression.
ctest_regex() { python3 -c '
import re, sys
names = [n for n in sys.stdin.read().split("\n") if n]
print("^(" + "|".join(re.sub(r"([][\\^$.|?*+(){}])", r"\\\1", n) for n in names) + ")$")'; }

FAILED=()
SUMMARY=()
run_kind() {  # asan|tsan
  local kind="$1" build sanitize tests
  if [[ "$kind" == asan ]]; then
    build="$ROOT/build-asan"; sanitize="address,undefined"
    case "$QUICK" in
      1) tests=("${QUICK_ASAN_TESTS[@]}") ;;
      2) tests=("${CI_ASAN_TESTS[@]}") ;;
      *) tests=("${ASAN_TESTS[@]}") ;;
    esac
  else
    build="$ROOT/build-tsan"; sanitize="thread"
    case "$QUICK" in
      1) tests=("${QUICK_TSAN_TESTS[@]}") ;;
      2) tests=("${CI_TSAN_TESTS[@]}") ;;
      *) tests=("${TSAN_TESTS[@]}") ;;
    esac
  fi
  local targets=("${tests[@]}")
  ((QUICK)) || targets+=("${SPAWNED[@]}")
  local logs="$build/sanitizer-logs"
  mkdir -p "$logs"
  rm -f "$logs"/*
  # The build runs the test executables too (gtest_discover_tests lists them).
  set_sanitizer_env "$kind" "$logs"

  local t0 t1 t2
  t0=$(date +%s)
  if ((!NO_BUILD)); then
    if [[ ! -f "$build/CMakeCache.txt" ]] ||
       ! grep -q "^LLORCH_SANITIZE:STRING=$sanitize\$" "$build/CMakeCache.txt"; then
      echo "sanitize: configuring $build (-DLLORCH_SANITIZE=$sanitize)"
      cmake -S "$ROOT" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
            "${CARGO_ARG[@]+"${CARGO_ARG[@]}"}" -DLLORCH_SANITIZE="$sanitize" >/dev/null
    fi
    echo "sanitize: building ${targets[*]} in $build"
    cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"
  fi
  [[ -f "$build/CTestTestfile.cmake" ]] || { echo "sanitize: $build is not built" >&2; exit 1; }
  # The random-weight test models: those of build/ are the same files (fixed
  # seeds); make_test_models (a CTest fixture) writes whatever is missing.
  if [[ -d "$ROOT/build/testdata" ]]; then
    mkdir -p "$build/testdata"
    cp -n "$ROOT/build/testdata/"*.gguf "$build/testdata/" 2>/dev/null || true
  fi
  t1=$(date +%s)

  local selected main bounds rc=0 rc_bounds=0 n_main n_bounds
  selected="$(select_tests "$build" "${tests[@]}")"
  main="$(sed -n 's/^M //p' <<<"$selected")"
  bounds="$(sed -n 's/^B //p' <<<"$selected")"
  n_main=$(grep -c . <<<"$main" || true)
  n_bounds=$(grep -c . <<<"$bounds" || true)
  if ((n_main + n_bounds == 0)); then
    echo "sanitize: $kind: no test selected" >&2
    FAILED+=("$kind: no test selected"); return
  fi
  if [[ "$kind" == tsan ]]; then
    # libgomp's barriers are invisible to TSan: with more than one OpenMP
    # thread, every at::parallel_for region would report races that are not
    # there. OMP_THREAD_LIMIT also caps at::set_num_threads(N) and --threads.
    # The engine's, gRPC's, HTTP's and the servers' own threads stay.
    export OMP_NUM_THREADS=1 OMP_THREAD_LIMIT=1
  fi
  if ((n_main)); then
    echo "sanitize: $kind: running $n_main tests in $build"
    ctest --test-dir "$build" --output-on-failure -j "$(nproc)" -R "$(ctest_regex <<<"$main")" \
          "${CTEST_ARGS[@]+"${CTEST_ARGS[@]}"}" || rc=$?
  fi
  if ((n_bounds)); then
    echo "sanitize: $kind: running $n_bounds bounds tests (their reports count, not their verdict)"
    ctest --test-dir "$build" --output-on-failure -j "$(nproc)" -R "$(ctest_regex <<<"$bounds")" \
          "${CTEST_ARGS[@]+"${CTEST_ARGS[@]}"}" || rc_bounds=$?
  fi
  unset OMP_NUM_THREADS OMP_THREAD_LIMIT
  t2=$(date +%s)

  # Reports of every process, the spawned servers' included.
  local reports=()
  for f in "$logs"/*; do [[ -s "$f" ]] && reports+=("$f"); done
  if ((${#reports[@]})); then
    echo "sanitize: $kind: ${#reports[@]} sanitizer report(s):"
    for f in "${reports[@]}"; do
      echo "===== $f"; head -c 20000 "$f"; echo
    done
    FAILED+=("$kind: ${#reports[@]} sanitizer report(s) in $logs")
  fi
  ((rc == 0)) || FAILED+=("$kind: ctest failed (exit $rc)")
  local bounds_note=""
  ((n_bounds)) && bounds_note=", $n_bounds bounds tests (ctest exit $rc_bounds, not counted)"
  SUMMARY+=("$kind: build $((t1 - t0)) s, tests $((t2 - t1)) s: $n_main tests (ctest exit $rc)$bounds_note, ${#reports[@]} reports")
}

for kind in "${MODES[@]}"; do run_kind "$kind"; done

echo
for s in "${SUMMARY[@]}"; do echo "sanitize: $s"; done
if ((${#FAILED[@]})); then
  for f in "${FAILED[@]}"; do echo "sanitize: FAILED: $f"; done
  exit 1
fi
echo "sanitize: all clean"
