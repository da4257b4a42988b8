#!/usr/bin/env python3
"""The `llorch run/tokenize/inspect` contract, end to end on real processes.

Checks the JSONL event shapes, seed reproducibility, stop strings (never
emitted, reason "stop"), max tokens (reason "length"), one-line exit-2
errors for bad flags, and the command lines of llorch and llorch-worker:
`--help` per subcommand (its flags only), flags of other subcommands
refused, numbers range-checked, --a-b and --a_b spellings, --flag=value and
--flag value. The server clients (generate, models, workers, cancel,
health): flag errors, unreachable servers, and against a real llorch-worker
health, generate's started line, cancel and Ctrl-C (through a scheduler:
tested with the scheduler); bench-serve: its flags, a short run against the
worker (table, CSV, progress lines, --compare, --plot when gnuplot is
installed) and its --openai client against a fake streaming server in this
process. Argv: path to llorch [, GGUF model; default
$LLORCH_DEFAULT_MODEL]; llorch-worker is looked for beside llorch.
"""
import csv
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

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
             "--ggml-variant", "--prefill-chunk"],
            ["--worker", "--scheduler", "--tls-ca", "--text", "--out", "--timeout"]),
    "score": (["--model", "--prompt-ids", "--logprobs", "--logits", "--one-token", "--threads"],
              ["--max-tokens", "--prompt ", "--worker", "--format"]),
    "bench": (["--model", "--prompt-tokens", "--gen-tokens", "--reps", "--threads"],
              ["--max-tokens", "--worker", "--streams"]),
    "generate": (["--worker", "--scheduler", "--model", "--tls-ca", "--tls-cert", "--tls-key",
                  "--token-file", "--prompt", "--chat", "--max-tokens", "--seed", "--timeout",
                  "--job-id", "--format"], ["--threads", "--device", "--prefill-chunk", "--service"]),
    "bench-serve": (["--worker", "--scheduler", "--openai", "--model", "--concurrency", "--requests",
                     "--prompt-tokens", "--max-tokens", "--csv", "--plot", "--label", "--compare"],
                    ["--streams", "--gen-tokens", "--reps", "--threads", "--prompt "]),
    "convert": (["--model", "--out", "--type"], ["--threads", "--prompt", "--text"]),
    "inspect": (["--model"], ["--threads", "--text", "--prompt"]),
    "tokenize": (["--model", "--text", "--no-bos"], ["--max-tokens", "--threads", "--prompt"]),
    "models": (["--scheduler", "--tls-ca", "--tls-cert", "--tls-key", "--token-file", "--format",
                "--timeout"], ["--worker", "--model", "--prompt", "--job-id"]),
    "workers": (["--scheduler", "--tls-ca", "--tls-cert", "--tls-key", "--token-file", "--format",
                 "--timeout"], ["--worker", "--model", "--prompt"]),
    "cancel": (["--scheduler", "--worker", "--job-id", "--tls-ca", "--token-file", "--format",
                "--timeout"], ["--model", "--prompt", "--service"]),
    "health": (["--scheduler", "--worker", "--service", "--tls-ca", "--tls-cert", "--tls-key",
                "--token-file", "--format", "--timeout"], ["--model", "--prompt", "--job-id"]),
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
      "(default: 128;" in run("bench", "--help").stdout, "bench-serve's --max-tokens 64, bench's --gen-tokens 128")
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
usage_error(["run", "--model", MODEL, "--prompt", "x", "--kv-type", "q4"], "--kv-type", "f16")
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
                                "--chat_template", "--drain_timeout", "--served_model_name",
                                "--tls_cert", "--tls_key", "--tls_ca", "--scheduler",
                                "--heartbeat_interval", "--advertise_address")),
      "`llorch-worker --help` lists --kv_budget, --metrics_port, --max_batch, --scheduler, ...")
check(not any(f in listed for f in ("--flagfile", "--fromenv", "--helpfull", "--version")) and
      "-" not in "".join(f[2:] for f in listed), "`llorch-worker --help`: its own flags only, underscores")
for args, needle in ((["--max_batch", "0"], "--max_batch"), (["--metrics-port", "70000"], "--metrics_port"),
                     (["--max-tokens", "5"], "unknown flag --max-tokens"),
                     (["--tls_cert", MODEL], "--tls_key"), (["--tls-ca", MODEL], "--tls_ca"),
                     (["--tls_cert", "/nonexistent.pem", "--tls_key", MODEL], "--tls_cert"),
                     (["--scheduler", "127.0.0.1:1", "--heartbeat_interval", "0s"],
                      "--heartbeat_interval")):
    p = worker("--model", MODEL, *args)
    check(p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and needle in p.stderr,
          f"llorch-worker {' '.join(args)}: exit 2, one line naming {needle}")
p = worker("--model", MODEL, "--metrics_port", "-1", "--kv_type", "q4")
check(p.returncode == 2 and p.stderr.strip().splitlines() == [
    "llorch-worker: --kv_type: KV cache type must be auto, f32, f16, bf16 or q8_0, got 'q4'"],
      "llorch-worker --kv_type q4: exit 2, one line naming --kv_type and its values")
for spelling in ("--metrics-port", "--metrics_port"):
    log = worker("--model", MODEL, "--listen", "127.0.0.1:0", "--metrics_host", "127.0.0.1",
                 spelling, "0", wait_for="grpc listening")
    check("metrics listening on port" in log and "grpc listening" in log,
          f"llorch-worker {spelling} 0: metrics on a free port")
log = worker("--model", MODEL, "--listen=127.0.0.1:0", "--metrics-port=-1", wait_for="grpc listening")
check("grpc listening" in log and "metrics listening" not in log, "llorch-worker --metrics-port=-1: no metrics")
check("(tls off)" in log, "llorch-worker without --tls_cert: the listening line says tls off")
# The served model name: the file name without its extension (not the GGUF's
# general.name), or --served_model_name.
stem = os.path.splitext(os.path.basename(MODEL))[0]
log = worker("--model", MODEL, "--listen=127.0.0.1:0", "--metrics-port=-1", wait_for="llorch-worker: serving")
check(f"loaded {stem} (" in log, f"llorch-worker logs the model as {stem}")
log = worker("--model", MODEL, "--listen=127.0.0.1:0", "--metrics-port=-1",
             "--served-model-name", "my-model", wait_for="llorch-worker: serving")
check("loaded my-model (" in log, "llorch-worker --served-model-name my-model: logged as my-model")

# Server clients: flag errors before any call, then unreachable servers.
EMPTY = tempfile.NamedTemporaryFile("w", suffix=".token", delete=False)
EMPTY.write("  \n")
EMPTY.close()
usage_error(["generate", "--worker", "127.0.0.1:1", "--scheduler", "127.0.0.1:1", "--prompt", "x"],
            "exactly one of --worker and --scheduler")
usage_error(["generate", "--prompt", "x"], "exactly one of --worker and --scheduler")
usage_error(["generate", "--scheduler", "127.0.0.1:1", "--prompt", "x"], "--model is required")
usage_error(["generate", "--worker", "127.0.0.1:1", "--model", "m", "--prompt", "x"],
            "--model is for --scheduler")
usage_error(["generate", "--scheduler", "127.0.0.1:1", "--model", "m"], "exactly one of --prompt")
usage_error(["generate", "--scheduler", "127.0.0.1:1", "--model", "m", "--prompt", "x",
             "--timeout", "0"], "--timeout")
usage_error(["models"], "--scheduler is required")
usage_error(["workers", "--scheduler", "127.0.0.1:1", "--format", "jsonl"], "--format must be text or json")
usage_error(["health"], "exactly one of --worker and --scheduler")
usage_error(["cancel", "--scheduler", "127.0.0.1:1"], "give the job id")
usage_error(["cancel", "--scheduler", "127.0.0.1:1", "job-1", "job-2"], "unexpected argument 'job-2'")
usage_error(["health", "--scheduler", "127.0.0.1:1", "--tls-cert", EMPTY.name], "need --tls-ca")
usage_error(["health", "--scheduler", "127.0.0.1:1", "--tls-ca", "/nonexistent.pem"], "/nonexistent.pem")
usage_error(["models", "--scheduler", "127.0.0.1:1", "--token-file", EMPTY.name], "--token-file", "empty")
usage_error(["models", "--scheduler", "127.0.0.1:1", "--token-file", "/nonexistent"], "--token-file")
usage_error(["bench-serve", "--worker", "127.0.0.1:1", "--openai", "http://127.0.0.1:1"],
            "exactly one of --worker, --scheduler and --openai")
usage_error(["bench-serve", "--openai", "http://127.0.0.1:1"], "--model is required")
usage_error(["bench-serve", "--openai", "ftp://h", "--model", "m"], "--openai", "ftp://h")
usage_error(["bench-serve", "--worker", "127.0.0.1:1", "--concurrency", "1,32"], "above --requests 16")
usage_error(["bench-serve", "--openai", "http://127.0.0.1:1", "--model", "m"], "HTTP_CONNECTION")
for args in (["models", "--scheduler", "127.0.0.1:1"], ["workers", "--scheduler", "127.0.0.1:1"],
             ["cancel", "--scheduler", "127.0.0.1:1", "job-1"], ["health", "--scheduler", "127.0.0.1:1"],
             ["generate", "--scheduler", "127.0.0.1:1", "--model", "m", "--prompt", "x"]):
    usage_error(args, "127.0.0.1:1: UNAVAILABLE")
usage_error(["bench-serve", "--worker", "127.0.0.1:1"], "127.0.0.1:1", "warm-up request failed: UNAVAILABLE")


class ServingWorker:
    """llorch-worker on a free loopback port, until the with-block ends."""

    def __enter__(self):
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log")
        self.proc = subprocess.Popen([WORKER, "--model", MODEL, "--listen", "127.0.0.1:0",
                                      "--metrics-port", "-1", "--threads", "2"],
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 120
        while "serving (" not in open(self.log.name).read():
            if self.proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"llorch-worker did not start: {open(self.log.name).read()}")
            time.sleep(0.1)
        port = re.search(r"grpc listening on port (\d+)", open(self.log.name).read()).group(1)
        self.address = f"127.0.0.1:{port}"
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


def interrupted_generate(address):
    """`llorch generate` interrupted by SIGINT after its second token."""
    proc = subprocess.Popen([LLORCH, "generate", "--worker", address, "--prompt", "Once upon a time",
                             "--max-tokens", "2000", "--ignore-eos", "--format", "jsonl"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tokens = 0
    for line in proc.stdout:
        tokens += json.loads(line)["event"] == "token"
        if tokens == 2:
            proc.send_signal(signal.SIGINT)
            break
    rest, err = proc.communicate(timeout=30)
    return proc.returncode, [json.loads(line) for line in rest.splitlines()], err


with ServingWorker() as w:
    p = run("health", "--worker", w.address)
    check(p.stdout == "SERVING\n" and not p.stderr, "`llorch health --worker`: SERVING, exit 0")
    p = run("health", "--worker", w.address, "--service", "llorch.worker.v1.Worker", "--format", "json")
    check(json.loads(p.stdout) == {"service": "llorch.worker.v1.Worker", "status": "SERVING"},
          "`llorch health --service llorch.worker.v1.Worker --format json`")
    usage_error(["health", "--worker", w.address, "--service", "nope"], "NOT_FOUND")

    # The started line; a bearer token is sent (and ignored by the worker).
    TOKEN = tempfile.NamedTemporaryFile("w", suffix=".token", delete=False)
    TOKEN.write("secret\n")
    TOKEN.close()
    greedy = ["--prompt", PROMPT, "--max-tokens", "6", "--temperature", "0", "--ignore-eos",
              "--seed", "11"]
    p = run("generate", "--worker", w.address, "--format", "jsonl", "--job-id", "cli-test-1",
            "--token-file", TOKEN.name, *greedy)
    events = [json.loads(line) for line in p.stdout.splitlines()]
    started, done = events[0], events[-1]
    check(started == {"event": "started", "job_id": "cli-test-1", "seed": 11,
                      "prompt_tokens": done["prompt_tokens"]},
          "generate --worker jsonl: started line with job_id, prompt_tokens, seed")
    local, _ = generate(*greedy)
    check([e["id"] for e in events[1:-1]] == [t["id"] for t in local] and done["reason"] == "length",
          "generate --worker: the tokens of `llorch run`")
    text = run("generate", "--worker", w.address, *greedy).stdout
    check(text == "".join(e["text"] for e in events[1:-1]) + "\n", "generate --worker text: the tokens' text")
    usage_error(["generate", "--worker", w.address, "--prompt", "x", "--timeout", "0.000001"],
                "DEADLINE_EXCEEDED")

    p = run("cancel", "no-such-job", "--worker", w.address)
    check(p.stdout == "cancel requested: no-such-job\n", "`llorch cancel JOB_ID --worker`: the id as argument")

    rc, rest, err = interrupted_generate(w.address)
    # Tokens already in the pipe when the signal lands may follow; no
    # `finished` line does, and the generation stops far short of its 2000.
    check(rc == -signal.SIGINT and "interrupted" in err
          and all(e["event"] == "token" for e in rest) and len(rest) < 100,
          f"Ctrl-C during generate: the call cancelled, then died of SIGINT (rc {rc}, "
          f"{err.strip()!r}, {len(rest)} lines after the second token)")
    check(run("health", "--worker", w.address).stdout == "SERVING\n", "the worker serves on after the cancel")

    # bench-serve: a row per level in the table and the CSV, progress on
    # stderr; its own CSV back through --compare, and the plot.
    bench_dir = tempfile.mkdtemp()
    bench_csv = os.path.join(bench_dir, "worker.csv")
    p = run("bench-serve", "--worker", w.address, "--concurrency", "1,2", "--requests", "2",
            "--prompt-tokens", "8", "--max-tokens", "4", "--label", "w,1", "--csv", bench_csv)
    rows = list(csv.DictReader(open(bench_csv)))
    check([r["concurrency"] for r in rows] == ["1", "2"] and
          all(r["label"] == "w,1" and r["ok"] == "2" and r["errors"] == "" and
              r["completion_tokens"] == "8" and 8 <= float(r["prompt_tokens"]) <= 10 and
              float(r["output_tok_s"]) > 0 and float(r["ttft_p50_ms"]) > 0 for r in rows),
          "bench-serve --worker --csv: one row per level, 2 requests x 4 tokens each, no errors")
    check(re.search(r"^\| 2 \| 2 \| 0 \| \d+ \|", p.stdout, re.M) is not None,
          "bench-serve: a table row per level on stdout")
    check("concurrency 2: 2/2 requests, 0 errors" in p.stderr,
          "bench-serve: progress as plain lines on stderr when it is not a terminal")
    plot = ["--plot", os.path.join(bench_dir, "plot.png")] if shutil.which("gnuplot") else []
    p = run("bench-serve", "--worker", w.address, "--concurrency", "2", "--requests", "2",
            "--max-tokens", "2", "--warmup", "0", "--compare", bench_csv, *plot)
    check("/ w,1:" in p.stdout and re.search(r"^\| 2 \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", p.stdout, re.M),
          "bench-serve --compare: a ratio table against the earlier CSV")
    if plot:
        check(open(plot[1], "rb").read(8) == b"\x89PNG\r\n\x1a\n", "bench-serve --plot: a PNG")
    shutil.rmtree(bench_dir)
    os.unlink(TOKEN.name)
os.unlink(EMPTY.name)


class FakeOpenAi(http.server.BaseHTTPRequestHandler):
    """Streams max_tokens one-token chunks, a final chunk with usage, [DONE]
    (with bad_usage, a usage whose completion_tokens is a string)."""
    bodies = []
    bad_usage = False

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAi.bodies.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        chunk = json.dumps({"choices": [{"text": "x", "index": 0, "finish_reason": None}]})
        for _ in range(body["max_tokens"]):
            event = f"data: {chunk}\r\n\r\n".encode()
            self.wfile.write(event[:7])  # an event split across reads
            self.wfile.flush()
            self.wfile.write(event[7:])
            self.wfile.flush()
        final = {"choices": [{"text": "", "index": 0, "finish_reason": "length"}],
                 "usage": {"prompt_tokens": 6, "completion_tokens":
                           "many" if FakeOpenAi.bad_usage else body["max_tokens"]}}
        self.wfile.write(f": comment\ndata: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())

    def log_message(self, *args):
        pass


fake = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAi)
threading.Thread(target=fake.serve_forever, daemon=True).start()
fake_csv = tempfile.NamedTemporaryFile(suffix=".csv", delete=False).name
p = run("bench-serve", "--openai", f"http://127.0.0.1:{fake.server_address[1]}/v1", "--model", "fake",
        "--concurrency", "1,2", "--requests", "2", "--prompt-tokens", "5", "--max-tokens", "3",
        "--csv", fake_csv)
rows = list(csv.DictReader(open(fake_csv)))
path, body = FakeOpenAi.bodies[-1]
check(path == "/v1/completions" and body["stream"] is True and body["ignore_eos"] is True and
      body["temperature"] == 0 and body["max_tokens"] == 3 and body["model"] == "fake" and
      len(body["prompt"].split()) == 5 and len(FakeOpenAi.bodies) == 5,
      "bench-serve --openai: streamed /v1/completions, greedy, ignore_eos, a 5-word prompt; warm-up + 2 x 2")
check(len(rows) == 2 and all(r["ok"] == "2" and r["completion_tokens"] == "6" and r["prompt_tokens"] == "6.0"
                             for r in rows),
      "bench-serve --openai: SSE chunks parsed, usage read, no errors")
# A field of an unexpected type fails that request (here the warm-up), not the bench.
FakeOpenAi.bad_usage = True
usage_error(["bench-serve", "--openai", f"http://127.0.0.1:{fake.server_address[1]}/v1", "--model", "fake",
             "--concurrency", "1", "--requests", "1", "--max-tokens", "2"],
            "warm-up request failed: BAD_EVENT")
fake.shutdown()
os.unlink(fake_csv)

sys.exit(1 if failures else 0)
