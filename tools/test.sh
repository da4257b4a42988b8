#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (unit, conformance
# against llama.cpp and Hugging Face vectors, processes, reliability) through
# CTest.
#
# Usage: tools/test.sh [--sanitize] [CTEST_ARG...]
#   --sanitize  then also tools/sanitize.sh all: AddressSanitizer + UBSan over
#               the unit and process tests and ThreadSanitizer over the
#               concurrency tests, each in its own build (build-asan/,
#               build-tsan/; about 80 minutes more on 2 cores).
#   CTEST_ARG   passed on to ctest (e.g. -R tokenizer).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SANITIZE=0
CTEST_ARGS=()
for arg in "$@"; do
  case "$arg" in
    --sanitize) SANITIZE=1 ;;
    *) CTEST_ARGS+=("$arg") ;;
  esac
done
"$ROOT/tools/setup.sh"
source "$ROOT/tools/env.sh"
rc=0
ctest --test-dir "$ROOT/build" --output-on-failure -j "$(nproc)" \
      "${CTEST_ARGS[@]+"${CTEST_ARGS[@]}"}" || rc=$?
if ((SANITIZE)); then
  "$ROOT/tools/sanitize.sh" all || rc=1
fi
exit "$rc"
