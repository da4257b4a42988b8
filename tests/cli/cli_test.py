#!/usr/bin/env python3
"""The `llorch run/tokenize/inspect` contract, end to end on real processes.

Checks the JSONL event shapes, seed reproducibility, stop strings (never
emitted, reason "stop"), max tokens (reason "length"), one-line exit-2
errors for bad flags, and the command lines of llorch and llorch-worker:
`--help` per subcommand (its flags only), flags of other subcommands
refused, numbers range-checked, --a-b and --a_b spellings, --flag=value and
--flag value. Argv: path to llorch [, GGUF model; default
$LLORCH_DEFAULT_MODEL]; llorch-worker is looked for beside llorch.
"""
import json
import os
import re
import subprocess
import sys

LLORCH = sys.argv[1]
WORKER = os.path.join(os.path.dirname(os.path.abspath(LLORCH)), "llorch-worker")
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

# Help: each subcommand lists its own flags, not the others'.
HELP = {  # subcommand: (flags it lists, flags of other subcommands it must not list)
    "run": (["--model", "--prompt", "--prompt-ids", "--chat", "--max-tokens", "--temperature",
             "--seed", "--stop", "--ignore-eos", "--logprobs", "--format", "--threads",
             "--ggml-variant", "--prefill-chunk"], ["--worker", "--text", "--out", "--timeout"]),
    "score": (["--model", "--prompt-ids", "--logprobs", "--logits", "--one-token", "--threads"],
              ["--max-tokens", "--prompt ", "--worker", "--format"]),
    "bench": (["--model", "--prompt-tokens", "--gen-tokens", "--reps", "--threads"],
              ["--max-tokens", "--worker", "--streams"]),
    "generate": (["--worker", "--prompt", "--chat", "--max-tokens", "--seed", "--timeout",
                  "--job-id", "--format"], ["--model", "--threads", "--device", "--prefill-chunk"]),
    "bench-serve": (["--worker", "--streams", "--gen-tokens", "--requests"],
                    ["--model", "--max-tokens", "--reps"]),
    "convert": (["--model", "--out", "--type"], ["--threads", "--prompt", "--text"]),
    "inspect": (["--model"], ["--threads", "--text", "--prompt"]),
    "tokenize": (["--model", "--text", "--no-bos"], ["--max-tokens", "--threads", "--prompt"]),
}
for command, (present, absent) in HELP.items():
    p = run(command, "--help")
    listed = re.findall(r"^  (--[a-z-]+)", p.stdout, re.M)
    check(p.stdout.startswith(f"usage: llorch {command} ") and not p.stderr,
          f"`llorch {command} --help`: usage on stdout, exit 0")
    check(all(f in listed for f in present) and not any(f.strip() in listed for f in absent),
          f"`llorch {command} --help` lists {len(listed)} flags, its own only")
    check("_" not in "".join(listed), f"`llorch {command} --help` spells flags with dashes")
score_help = run("score", "--help").stdout
check(re.search(r"--logprobs N .*default: 5", score_help) is not None and
      re.search(r"--logprobs N .*default: 0", run("run", "--help").stdout) is not None,
      "score's --logprobs defaults to 5, run's to 0")
check("(default: 64;" in run("bench-serve", "--help").stdout and
      "(default: 128;" in run("bench", "--help").stdout, "bench-serve's --gen-tokens 64, bench's 128")
for args in (["--help"], ["help"], ["-h"]):
    out = run(*args).stdout
    check(all(re.search(rf"^  {c} +\S", out, re.M) for c in HELP), f"`llorch {args[0]}` lists every subcommand")
check(run("help", "tokenize").stdout == run("tokenize", "--help").stdout,
      "`llorch help tokenize` is `llorch tokenize --help`")


def usage_error(args, *needles):
    p = run(*args, expect_rc=2)
    lines = p.stderr.strip().splitlines()
    ok = len(lines) == 1 and all(n in lines[0] for n in needles) and not p.stdout
    check(ok, f"`llorch {' '.join(a for a in args if a != MODEL)}`: exit 2, names {', '.join(needles)}"
          + ("" if ok else f" -- got {p.stderr.strip()!r}"))


# Flags of another subcommand, unknown flags, out-of-range numbers.
usage_error(["tokenize", "--model", MODEL, "--text", "x", "--max-tokens", "5"],
            "unknown flag --max-tokens", "llorch tokenize --help")
usage_error(["generate", "--worker", "127.0.0.1:1", "--prompt", "x", "--threads", "2"],
            "unknown flag --threads", "llorch generate --help")
usage_error(["inspect", "--model", MODEL, "--no-bos"], "unknown flag --no-bos")
usage_error(["run", "--model", MODEL, "--prompt", "x", "--max-tokens=4294967297"],
            "--max-tokens", "[1, 2147483647]", "4294967297")
usage_error(["run", "--model", MODEL, "--prompt", "x", "--max_tokens", "0"], "--max-tokens", "0")
usage_error(["run", "--model", MODEL, "--prompt", "x", "--threads", "-1"], "--threads")
usage_error(["run", "--model", MODEL, "--prompt", "x", "--temperature", "-0.5"], "--temperature", ">= 0")
usage_error(["run", "--model", MODEL, "--prompt", "x", "--logprobs", "21"], "--logprobs", "[0, 20]")
usage_error(["run", "--model", MODEL, "--prompt", "x", "--seed", "-1"], "--seed")
usage_error(["run", "--model", MODEL, "--prompt", "x", "--top-k", "ten"], "--top-k", "ten")
usage_error(["bench", "--model", MODEL, "--gen-tokens", "1"], "--gen-tokens", "[2, ")
usage_error(["run", "--model", MODEL, "--prompt"], "--prompt needs a value")
usage_error(["run", "--model", MODEL, "stray"], "unexpected argument 'stray'")

# Both spellings, both value forms; booleans with and without a value.
greedy = ["--prompt", "Once upon a time", "--temperature", "0"]
five_a, done_a = generate(*greedy, "--max_tokens", "5", "--ignore_eos")
five_b, done_b = generate(*greedy, "--max-tokens=5", "--ignore-eos=true")
check(len(five_a) == 5 and done_a["reason"] == "length", "--max_tokens 5 --ignore_eos: 5 tokens")
check([t["id"] for t in five_a] == [t["id"] for t in five_b],
      "--max-tokens=5 --ignore-eos=true: the same 5 tokens")
check(generate(*greedy, "--max-tokens", "5", "--ignore-eos=false", "--top_k=1")[1]["completion_tokens"] <= 5,
      "--ignore-eos=false and --top_k=1 accepted")
stop_tokens, _ = generate("--prompt", "x", "--max-tokens", "2", "--stop", "a,b", "--stop", "c")
check(len(stop_tokens) <= 2, "--stop given twice, a comma in one")

# llorch-worker: its own flags in --help, both spellings, range checks.
check(os.access(WORKER, os.X_OK), f"llorch-worker beside llorch: {WORKER}")


def worker(*args, wait_for=None):
    """Runs llorch-worker; with wait_for, until that stderr line, then SIGTERM."""
    if wait_for is None:
        return subprocess.run([WORKER, *args], capture_output=True, text=True, timeout=60)
    proc = subprocess.Popen([WORKER, *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if wait_for in line:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return "".join(seen)


p = worker("--help")
listed = re.findall(r"^  (--[a-z_]+)", p.stdout, re.M)
check(p.returncode == 0 and p.stdout.startswith("usage: llorch-worker"), "`llorch-worker --help`: exit 0")
check(all(f in listed for f in ("--model", "--listen", "--kv_budget", "--metrics_port", "--max_batch",
                                "--chat_template", "--drain_timeout")),
      "`llorch-worker --help` lists --kv_budget, --metrics_port, --max_batch, ...")
check(not any(f in listed for f in ("--flagfile", "--fromenv", "--helpfull", "--version")) and
      "-" not in "".join(f[2:] for f in listed), "`llorch-worker --help`: its own flags only, underscores")
for args, needle in ((["--max_batch", "0"], "--max_batch"), (["--metrics-port", "70000"], "--metrics_port"),
                     (["--max-tokens", "5"], "unknown flag --max-tokens")):
    p = worker("--model", MODEL, *args)
    check(p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and needle in p.stderr,
          f"llorch-worker {' '.join(args)}: exit 2, one line naming {needle}")
for spelling in ("--metrics-port", "--metrics_port"):
    log = worker("--model", MODEL, "--listen", "127.0.0.1:0", "--metrics_host", "127.0.0.1",
                 spelling, "0", wait_for="grpc listening")
    check("metrics listening on port" in log and "grpc listening" in log,
          f"llorch-worker {spelling} 0: metrics on a free port")
log = worker("--model", MODEL, "--listen=127.0.0.1:0", "--metrics-port=-1", wait_for="grpc listening")
check("grpc listening" in log and "metrics listening" not in log, "llorch-worker --metrics-port=-1: no metrics")

sys.exit(1 if failures else 0)
