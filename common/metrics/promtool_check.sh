#!/usr/bin/env bash
# Pipes the test exporter's exposition into `promtool check metrics`
# (Prometheus' own parser and linter); fails on any complaint.
# Usage: promtool_check.sh path/to/llorch_metrics_test_exporter
set -euo pipefail
exporter="$1"
if ! command -v promtool >/dev/null; then
  echo "FAIL: promtool not found; install the Debian package 'prometheus'" \
       "(tools/setup.sh does)" >&2
  exit 1
fi
exposition="$("$exporter")"
if [[ -z "$exposition" ]]; then
  echo "FAIL: $exporter wrote nothing" >&2
  exit 1
fi
# promtool exits non-zero on parse errors and lint problems; also fail on any
# output, so that a warning cannot slip through.
if ! complaints="$(printf '%s\n' "$exposition" | promtool check metrics 2>&1)" \
   || [[ -n "$complaints" ]]; then
  echo "FAIL: promtool check metrics complained:" >&2
  echo "$complaints" >&2
  echo "--- exposition ---" >&2
  echo "$exposition" >&2
  exit 1
fi
echo "promtool check metrics: OK ($(grep -vc '^#' <<<"$exposition") samples)"
