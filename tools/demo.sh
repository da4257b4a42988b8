#!/usr/bin/env bash
# The main job: installs what is missing, builds, and streams a generation
# from the default real model (SmolLM2-135M-Instruct Q4_1).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
"$ROOT/tools/setup.sh"
source "$ROOT/tools/env.sh"
PROMPT=$'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France? Tell me one fact about it.<|im_end|>\n<|im_start|>assistant\n'
exec "$ROOT/build/bin/llorch" run --model "$LLORCH_DEFAULT_MODEL" --prompt "${1:-$PROMPT}" \
  --max-tokens "${MAX_TOKENS:-128}" --temperature 0.2 --seed 42
