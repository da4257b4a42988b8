#!/usr/bin/env python3
"""Hugging Face checkpoints: llorch against transformers (issue 3, proof 1).

For each architecture, a random-weight model built with transformers
(small config, weights re-drawn so that logits are far from uniform) is
saved with save_pretrained. llorch loads the directory and scores 3 prompts
(`llorch score --logits`); its logits must be within 1e-4 of transformers'
(eager attention, float32), and at each of 32 positions of transformers'
own greedy continuation llorch's argmax must be transformers' next token
(that is: 32 greedy tokens equal).

Cases: llama with grouped attention, llama tied with Llama 3 RoPE scaling,
llama with linear scaling, mistral with a sliding window shorter than the
prompt (the test also checks the window changes transformers' logits),
qwen2 (biases, tied), phi3 (fused projections), phi (Phi-2: LayerNorm,
partial rotary, GELU, parallel residual, biases), a BF16 checkpoint and a
sharded one.

Each case again in BF16 (`--dtype bf16`: the libtorch path a GPU takes, run
here on the CPU) against transformers loaded with torch_dtype=bfloat16 on the
same libtorch: the prompt's logits within BF16_TOLERANCE (they agree to the
bit where both run the same kernels) and 16 tokens of greedy decoding (llorch
one token per step over its cache, transformers' generate) equal.

Usage: transformers_conformance.py path/to/llorch [--keep DIR]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import tokenizers
import torch
import transformers

from hf_test_models import cases, save_case, train_tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOKENIZE_CHECKS = [
    "Hello world", "  leading spaces and\ttabs\n\nnewlines  ", "numbers 1234567 and 3.14159",
    "café naïve résumé 日本語 한국어 Ελληνικά", "emoji 🦙🚀 and ZWJ 👩‍💻", "def f(x):\n    return x**2  # code",
    "<|user|>special<|end|> tokens<|assistant|>", "don't won't I'm we're", "   ", "a" * 50,
]

PROMPT_LENGTHS = [24, 7, 15]
GREEDY_TOKENS = 32
LOGIT_TOLERANCE = 1e-4
BF16_TOLERANCE = 1e-3  # a BF16 ulp of these logits is 2e-3 or more
BF16_GREEDY_TOKENS = 16


def llorch_logits(llorch, model_dir, ids, extra=()):
    out = subprocess.run([llorch, "score", "--model", model_dir, "--prompt-ids",
                          ",".join(map(str, ids)), "--logits", "--logprobs", "0", "--threads", "2",
                          *extra], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"llorch score failed: {out.stderr.strip()}")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    return torch.tensor([row["logits"] for row in rows], dtype=torch.float32)


def run(cmd, timeout=300):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed: {out.stderr.strip()[-2000:]}")
    return out.stdout


def run_case(llorch, tmp, name, config, cls, opts, seed, tokenizer, gguf_dir):
    model_dir, generator = save_case(name, config, cls, opts, seed, tokenizer, tmp)
    # The reference reads the saved checkpoint, as a user's transformers
    # would, computing in float32 like llorch (BF16 weights widened).
    reference = cls.from_pretrained(model_dir, torch_dtype=torch.float32,
                                    attn_implementation="eager").eval()
    transformers.logging.set_verbosity_error()

    worst, failures = 0.0, []
    for i, length in enumerate(PROMPT_LENGTHS):
        prompt = torch.randint(0, config.vocab_size, (length,), generator=generator).tolist()
        with torch.no_grad():
            prompt_ids = torch.tensor([prompt])
            greedy = reference.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids),
                                        max_new_tokens=GREEDY_TOKENS, do_sample=False,
                                        pad_token_id=0, eos_token_id=None)[0].tolist()
            # Logits over the prompt and the greedy continuation but its last token.
            sequence = greedy[:-1]
            ref = reference(torch.tensor([sequence])).logits[0].float()
        ours = llorch_logits(llorch, model_dir, sequence)
        diff = (ours - ref).abs().max().item()
        worst = max(worst, diff)
        if diff > LOGIT_TOLERANCE:
            failures.append(f"prompt {i}: max |Δlogit| {diff:.3g} > {LOGIT_TOLERANCE}")
        # Greedy: our argmax at each continuation step is transformers' next token.
        steps = range(length - 1, len(sequence))
        mismatches = [t for t in steps if ours[t].argmax().item() != greedy[t + 1]]
        if mismatches:
            t = mismatches[0]
            gap = (ref[t, ours[t].argmax()] - ref[t, greedy[t + 1]]).abs().item()
            if gap < 2 * LOGIT_TOLERANCE:
                print(f"    prompt {i}: near-tie at greedy token {t - length + 1} "
                      f"(transformers' logits differ by {gap:.2g}): reported, not failed")
                continue
            failures.append(f"prompt {i}: greedy token {t - length + 1} differs "
                            f"(ours {ours[t].argmax().item()}, transformers {greedy[t + 1]})")
        if opts.get("window") and i == 0:
            # The window must matter here, or the case proves nothing.
            saved = reference.config.sliding_window
            reference.config.sliding_window = None
            with torch.no_grad():
                unwindowed = reference(torch.tensor([sequence])).logits[0].float()
            reference.config.sliding_window = saved
            if (unwindowed - ref).abs().max().item() < 1e-3:
                failures.append("the sliding window does not change transformers' logits")
    # The converter: the GGUF it writes gives the directory's logits.
    gguf = os.path.join(gguf_dir, f"tiny-hf-{name}.gguf")
    run([llorch, "convert", "--model", model_dir, "--out", gguf, "--type", "f32"])
    ids = ",".join(map(str, sequence))
    direct, converted = (
        torch.tensor([json.loads(line)["logits"] for line in run(
            [llorch, "score", "--model", path, "--prompt-ids", ids, "--logits", "--logprobs", "0",
             "--gelu", "exact"]).splitlines()]) for path in (model_dir, gguf))
    gap = (direct - converted).abs().max().item()
    if gap > 1e-5:
        failures.append(f"converted GGUF differs from the directory by {gap:.3g} (> 1e-5)")
    return worst, gap, failures


def check_bf16(llorch, model_dir, cls, config, generator):
    """--dtype bf16 against transformers in bfloat16: prompt logits and greedy decoding."""
    reference = cls.from_pretrained(model_dir, torch_dtype=torch.bfloat16,
                                    attn_implementation="eager").eval()
    prompt = torch.randint(0, config.vocab_size, (20,), generator=generator).tolist()
    failures = []
    with torch.no_grad():
        ref = reference(torch.tensor([prompt])).logits[0].float()
        prompt_ids = torch.tensor([prompt])
        greedy = reference.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids),
                                    max_new_tokens=BF16_GREEDY_TOKENS, do_sample=False,
                                    pad_token_id=0, eos_token_id=None)[0].tolist()[len(prompt):]
    ours = llorch_logits(llorch, model_dir, prompt, ["--dtype", "bf16"])
    diff = (ours - ref).abs().max().item()
    if diff > BF16_TOLERANCE:
        failures.append(f"bf16: max |Δlogit| {diff:.3g} > {BF16_TOLERANCE}")
    events = [json.loads(line) for line in run(
        [llorch, "run", "--model", model_dir, "--prompt-ids", ",".join(map(str, prompt)),
         "--max-tokens", str(BF16_GREEDY_TOKENS), "--temperature", "0", "--ignore-eos",
         "--format", "jsonl", "--threads", "2", "--dtype", "bf16"]).splitlines()]
    decoded = [e["id"] for e in events if e.get("event") == "token"]
    if decoded != greedy:
        failures.append(f"bf16 greedy: ours {decoded}, transformers {greedy}")
    return diff, failures


def check_tokenizer(llorch, model_dir, tokenizer):
    failures = []
    for text in TOKENIZE_CHECKS:
        ours = json.loads(run([llorch, "tokenize", "--model", model_dir, "--text", text, "--no-bos"]))
        theirs = tokenizer(text, add_special_tokens=False)["input_ids"]
        if ours != theirs:
            failures.append(f"tokenize {text!r}: ours {ours}, tokenizers {theirs}")
    return failures


def check_eos_list(llorch, tmp, good_dir, tokenizer):
    """generation_config.json may list several EOS ids: each ends generation."""
    import shutil
    d = os.path.join(tmp, "eos-list")
    shutil.copytree(good_dir, d)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|end|>", "<|user|>")]
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": ids}, f)
    info = json.loads(run([llorch, "inspect", "--model", d]))
    missing = [i for i in ids if i not in info["eog_ids"]]
    return [f"EOS list {ids}: inspect's eog_ids {info['eog_ids']} lack {missing}"] if missing else []


def check_errors(llorch, tmp, good_dir):
    """Bad checkpoints get one clear line and exit code 2."""
    import shutil
    import safetensors.torch
    failures = []

    def expect(name, model_dir, needle):
        out = subprocess.run([llorch, "score", "--model", model_dir, "--prompt-ids", "1,2"],
                             capture_output=True, text=True, timeout=60)
        lines = out.stderr.strip().splitlines()
        if out.returncode != 2 or len(lines) != 1 or needle not in lines[0]:
            failures.append(f"{name}: exit {out.returncode}, stderr {out.stderr.strip()!r} "
                            f"(wanted one line with {needle!r})")

    def copy(name):
        target = os.path.join(tmp, "bad-" + name)
        shutil.copytree(good_dir, target)
        return target

    d = copy("model-type")
    with open(os.path.join(d, "config.json")) as f:
        config = json.load(f)
    config["model_type"] = "gpt_neox"
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f)
    expect("unsupported model_type", d, "supported: llama, mistral, qwen2, phi3, phi")

    d = copy("no-config")
    os.remove(os.path.join(d, "config.json"))
    expect("no config.json", d, "no config.json")

    d = copy("missing-tensor")
    path = os.path.join(d, "model.safetensors")
    tensors = safetensors.torch.load_file(path)
    del tensors["model.layers.1.mlp.down_proj.weight"]
    safetensors.torch.save_file(tensors, path)
    expect("missing tensor", d, "model.layers.1.mlp.down_proj.weight")

    d = copy("truncated")
    with open(os.path.join(d, "model.safetensors"), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(d, "model.safetensors")) // 2)
    expect("truncated weights", d, "model.safetensors")
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("llorch")
    ap.add_argument("--keep", help="write the checkpoints here and keep them")
    ap.add_argument("--only", help="run only cases whose name contains this")
    ap.add_argument("--skip-llamacpp", action="store_true",
                    help="do not run llama.cpp on the converted GGUFs")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="llorch-hf-")
    tmp = args.keep or tmp_ctx.name
    os.makedirs(tmp, exist_ok=True)
    print(f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, "
          f"torch {torch.__version__}")
    tokenizer = train_tokenizer()
    gguf_dir = os.path.join(tmp, "converted")
    os.makedirs(gguf_dir, exist_ok=True)
    print(f"{'case':20} {'max|Δlogit|':>12} {'dir vs gguf':>12} {'bf16':>8}  result")
    failed = 0
    for seed, (name, config, cls, opts) in enumerate(cases()):
        if args.only and args.only not in name:
            continue
        try:
            worst, gap, failures = run_case(args.llorch, tmp, name, config, cls, opts, seed + 1,
                                            tokenizer, gguf_dir)
            bf16, bf16_failures = check_bf16(args.llorch, os.path.join(tmp, name), cls, config,
                                             torch.Generator().manual_seed(seed + 100))
            failures += bf16_failures
            if seed == 0:
                failures += check_tokenizer(args.llorch, os.path.join(tmp, name), tokenizer)
        except Exception as error:  # noqa: BLE001 - reported per case
            worst, gap, bf16 = float("nan"), float("nan"), float("nan")
            failures = [f"{type(error).__name__}: {error}"]
        print(f"{name:20} {worst:12.3g} {gap:12.3g} {bf16:8.3g}  {'ok' if not failures else 'FAIL'}")
        for failure in failures:
            print(f"    {failure}")
        failed += bool(failures)
    print(f"tokenizer: {len(TOKENIZE_CHECKS)} strings through `llorch tokenize` against tokenizers")
    if not args.only:
        error_failures = check_errors(args.llorch, tmp, os.path.join(tmp, "llama-gqa"))
        error_failures += check_eos_list(args.llorch, tmp, os.path.join(tmp, "llama-gqa"), tokenizer)
        for failure in error_failures:
            print(f"    {failure}")
        print(f"bad checkpoints, EOS list: {'ok' if not error_failures else 'FAIL'}")
        failed += bool(error_failures)

    # llama.cpp on the converted GGUFs. Left out: Mistral (llama.cpp has no
    # sliding window for llama-architecture files) and the byte-level-BPE
    # Phi-3 (llama.cpp loads phi3 vocabularies only as SentencePiece: the
    # phi3-spm case, with a tokenizer.model, is compared instead).
    for name in os.listdir(gguf_dir):
        if "mistral" in name or name == "tiny-hf-phi3.gguf":
            os.remove(os.path.join(gguf_dir, name))
    if not args.skip_llamacpp and os.listdir(gguf_dir):
        code = subprocess.call([os.path.join(ROOT, "tools", "venv-python"),
                                os.path.join(HERE, "llamacpp_conformance.py"), args.llorch,
                                "--skip-real", "--random-models-dir", gguf_dir,
                                "--work-dir", os.path.join(tmp, "llamacpp")])
        failed += code != 0
    print("all cases agree" if not failed else f"{failed} check(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
