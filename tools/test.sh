#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (unit, conformance
# against llama.cpp and Hugging Face vectors) through CTest.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
"$ROOT/tools/setup.sh"
source "$ROOT/tools/env.sh"
ctest --test-dir "$ROOT/build" --output-on-failure -j "$(nproc)" "$@"
