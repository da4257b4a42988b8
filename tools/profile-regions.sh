#!/usr/bin/env bash
# Where a CPU program's time goes between and inside its OpenMP regions
# (tools/bench/omp_regions.c, preloaded): per region body (named from the
# binary's symbols), its calls, the serial time before it on the calling
# thread, its wall time, and of that the fork/join cost (wall - slowest
# thread) and the imbalance (slowest - mean thread); shares of the counted
# time, in time-stamp-counter cycles (steady on a noisy machine, unlike tok/s).
# Usage: tools/profile-regions.sh [--skip N] -- COMMAND [ARGS...]
#   --skip N   regions not counted at the start (loading, warm-up)
# Example (8 jobs decoding SmolLM2, the prompt and the first steps skipped):
#   tools/profile-regions.sh --skip 5000 -- build/bin/llorch bench \
#     --model "$LLORCH_DEFAULT_MODEL" --batch 8 --prompt-tokens 8 --gen-tokens 128 --reps 1
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SKIP=0
while [[ $# -gt 0 && "$1" != "--" ]]; do
  case "$1" in
    --skip) SKIP="$2"; shift 2 ;;
    *) echo "usage: $0 [--skip N] -- COMMAND [ARGS...]" >&2; exit 2 ;;
  esac
done
[[ "${1:-}" == "--" ]] && shift
[[ $# -gt 0 ]] || { echo "usage: $0 [--skip N] -- COMMAND [ARGS...]" >&2; exit 2; }

SHIM="$ROOT/build/omp_regions.so"
SOURCE="$ROOT/tools/bench/omp_regions.c"
if [[ ! -f "$SHIM" || "$SOURCE" -nt "$SHIM" ]]; then
  mkdir -p "$(dirname "$SHIM")"
  gcc -O2 -Wall -Wextra -shared -fPIC -fopenmp -o "$SHIM" "$SOURCE" -ldl -lpthread
fi
REPORT="$(mktemp -t omp-regions.XXXXXX)"
trap 'rm -f "$REPORT"' EXIT
OMP_REGIONS_SKIP="$SKIP" OMP_REGIONS_OUT="$REPORT" LD_PRELOAD="$SHIM" "$@"
[[ -s "$REPORT" ]] || { echo "profile-regions: no region was counted (--skip too large?)" >&2; exit 1; }

# Names the bodies (addr2line) and prints the table.
python3 - "$REPORT" <<'EOF'
import re, subprocess, sys
header, regions = {}, []
for line in open(sys.argv[1]):
    parts = line.split()
    if parts[0] == "region":
        obj, offset = parts[1], parts[2]
        calls, gap, wall, busy_sum, busy_max = map(int, parts[3:])
        regions.append(dict(obj=obj, offset=offset, calls=calls, gap=gap, wall=wall,
                            busy_sum=busy_sum, busy_max=busy_max))
    else:
        header[parts[0]] = float(parts[1])

def name(obj, offset):
    try:
        out = subprocess.run(["addr2line", "-f", "-C", "-e", obj, offset],
                             capture_output=True, text=True, check=True).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return f"{obj}+{offset}"
    # at::internal::invoke_parallel<F>: name F's enclosing function.
    inner = re.sub(r"^void at::internal::invoke_parallel<", "", out)
    match = re.match(r"(?:[\w:]*::)?((?:\(anonymous namespace\)::)?[\w]+(?:::[\w~]+)*)\(", inner)
    short = match.group(1) if match else inner
    return short.replace("(anonymous namespace)::", "")[:60]

threads = int(header.get("threads", 1))
total = sum(r["gap"] + r["wall"] for r in regions)
hz = header.get("tsc_hz", 0)
print(f"{int(header.get('counted', 0))} regions counted, {threads} threads, "
      f"{total / hz:.3f} s of counted time" + (f" (+{header.get('idle', 0) / hz:.3f} s idle)" if hz else ""))
print()
print("| region body | calls | serial before % | wall % | fork/join % | imbalance % | us per call |")
print("|---|--:|--:|--:|--:|--:|--:|")
pct = lambda x: f"{100.0 * x / total:.1f}" if total else "-"
sums = dict(gap=0, wall=0, fork=0, imbalance=0)
for r in sorted(regions, key=lambda r: -(r["gap"] + r["wall"])):
    fork = r["wall"] - r["busy_max"]
    imbalance = r["busy_max"] - r["busy_sum"] / threads
    for k, v in (("gap", r["gap"]), ("wall", r["wall"]), ("fork", fork), ("imbalance", imbalance)):
        sums[k] += v
    per_call = r["wall"] / r["calls"] / hz * 1e6 if hz and r["calls"] else 0
    print(f"| {name(r['obj'], r['offset'])} | {r['calls']} | {pct(r['gap'])} | {pct(r['wall'])} | "
          f"{pct(fork)} | {pct(imbalance)} | {per_call:.1f} |")
print(f"| all | {sum(r['calls'] for r in regions)} | {pct(sums['gap'])} | {pct(sums['wall'])} | "
      f"{pct(sums['fork'])} | {pct(sums['imbalance'])} | |")
EOF
