# Shared paths for the project's scripts (sourced, not run).
export LLORCH_CACHE="${LLORCH_CACHE:-$HOME/.cache/llorch}"
export LLORCH_MODELS="${LLORCH_MODELS:-$LLORCH_CACHE/models}"
export LLORCH_DEFAULT_MODEL="${LLORCH_DEFAULT_MODEL:-$LLORCH_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf}"
export LLORCH_VENV="${LLORCH_VENV:-$LLORCH_CACHE/venv}"
export CCACHE_DIR="${CCACHE_DIR:-$LLORCH_CACHE/ccache}"
export LLORCH_HF_VENV="${LLORCH_HF_VENV:-$LLORCH_CACHE/venv-hf}"
export LLORCH_GRPCURL="${LLORCH_GRPCURL:-$LLORCH_CACHE/bin/grpcurl}"  # test-only gRPC client (tools/setup.sh)
