#!/usr/bin/env python3
"""The `llorch run/tokenize/inspect` contract, end to end on real processes.

Checks the JSONL event shapes, seed reproducibility, stop strings (never
emitted, reason "stop"), max tokens (reason "length"), and one-line exit-2
errors for bad flags. Argv: path to llorch [, GGUF model; default
$LLORCH_DEFAULT_MODEL].
"""
import json
import os
import subprocess
import sys

LLORCH = sys.argv[1]
MODEL = sys.argv[2] if len(sys.argv) > 2 else os.environ["LLORCH_DEFAULT_MODEL"]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def run(*args, expect_rc=0):
    p = subprocess.run([LLORCH, *args], capture_output=True, text=True, timeout=300)
    if p.returncode != expect_rc:
        raise SystemExit(f"llorch {' '.join(args)} exited {p.returncode}: {p.stderr}")
    return p


def generate(*extra):
    p = run("run", "--model", MODEL, "--format", "jsonl", "--threads", "2", *extra)
    events = [json.loads(line) for line in p.stdout.splitlines()]
    return [e for e in events if e["event"] == "token"], events[-1]


PROMPT = "<|im_start|>user\nWrite a short story about a cat.<|im_end|>\n<|im_start|>assistant\n"

# Shapes and greedy length limit.
tokens, done = generate("--prompt", PROMPT, "--max-tokens", "12", "--temperature", "0",
                        "--logprobs", "3", "--ignore-eos")
check(len(tokens) == 12 and done["reason"] == "length", "12 greedy tokens end with reason length")
check(all(set(t) >= {"index", "id", "text", "logprob", "top_logprobs"} for t in tokens),
      "token events carry index, id, text, logprob, top_logprobs")
check([t["index"] for t in tokens] == list(range(12)), "indices count from 0")
check(all(t["top_logprobs"][0][0] == t["id"] for t in tokens), "greedy token is the top-1")
check(all(abs(t["top_logprobs"][0][1] - t["logprob"]) < 1e-6 for t in tokens),
      "logprob equals the top-1 log-prob under greedy")
check(done["prompt_tokens"] == len(json.loads(run("tokenize", "--model", MODEL, "--text", PROMPT).stdout)),
      "prompt_tokens equals the tokenizer's count")
check(done["completion_tokens"] == 12 and done["ttft_ms"] > 0, "finished event has counts and ttft")

# Seeds.
a, _ = generate("--prompt", "Once upon a time", "--max-tokens", "16", "--temperature", "1.0",
                "--seed", "7", "--ignore-eos")
b, _ = generate("--prompt", "Once upon a time", "--max-tokens", "16", "--temperature", "1.0",
                "--seed", "7", "--ignore-eos")
c, _ = generate("--prompt", "Once upon a time", "--max-tokens", "16", "--temperature", "1.0",
                "--seed", "8", "--ignore-eos")
check([t["id"] for t in a] == [t["id"] for t in b], "same seed, same tokens")
check([t["id"] for t in a] != [t["id"] for t in c], "another seed, other tokens")

# Stop strings: pick a string that spans a token boundary of the greedy text.
free, _ = generate("--prompt", PROMPT, "--max-tokens", "24", "--temperature", "0", "--ignore-eos")
text = "".join(t["text"] for t in free)
pieces = [t["text"] for t in free]
boundary = len(pieces[0]) + len(pieces[1]) + len(pieces[2])
stop = text[boundary - 2: boundary + 2] if boundary >= 2 else text[:4]
stopped, done = generate("--prompt", PROMPT, "--max-tokens", "24", "--temperature", "0",
                         "--ignore-eos", "--stop", stop)
out = "".join(t["text"] for t in stopped)
check(done["reason"] == "stop", f"stop string {stop!r} across tokens ends with reason stop")
check(out == text[: text.find(stop)], "text before the stop string is emitted, the stop string is not")

# Errors: exit 2, one line on stderr.
for args in (["run", "--model", MODEL, "--prompt", "x", "--top-p", "2"],
             ["run", "--model", MODEL, "--prompt", "x", "--bogus", "1"],
             ["run", "--model", MODEL],
             ["run", "--model", "/nonexistent.gguf", "--prompt", "x"],
             ["run", "--model", MODEL, "--prompt-ids", "1,999999999"],
             ["frobnicate"]):
    p = run(*args, expect_rc=2)
    check(len(p.stderr.strip().splitlines()) == 1, f"`llorch {' '.join(args[:1] + args[3:])}`: exit 2, one line")

sys.exit(1 if failures else 0)
