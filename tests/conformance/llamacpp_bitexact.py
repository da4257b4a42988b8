#!/usr/bin/env python3
"""Bit-exactness against llama.cpp on SmolLM2 Q4_1 ($LLORCH_DEFAULT_MODEL).

llorch's CPU path computes every float operation in ggml's AVX-512 order
(worker/model/ggml_ops.h), so on a machine where llama.cpp picks an AVX-512 CPU
variant its logits must be llama.cpp's, bit for bit:
  - batch order: `llorch score` against llama.cpp scoring the ids in one
    llama_batch (micro-batches of 512), on short prompts (every logit) and on
    the >1000-token prompt (argmax and log-prob of the next id at every position);
  - one-token order: `llorch score --one-token` against one llama_decode per id
    (llama.cpp's generation path).
The reference is tools/bench/llamacpp_score.cc, built here against the prebuilt
libllama that node-llama-cpp ships (the same library the other conformance tests
use through node). On a CPU without AVX-512 ggml uses another exp and summation
width: the test then reports the differences and exits 77 (skipped).
Usage: llamacpp_bitexact.py PATH/TO/llorch [--model M] [--work-dir DIR]
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SKIP = 77


def run(cmd, timeout=900):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if proc.returncode != 0:
        sys.exit(f"`{' '.join(cmd[:3])} ...` exited {proc.returncode}: "
                 f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return [json.loads(line) for line in proc.stdout.decode().splitlines() if line.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("llorch")
    ap.add_argument("--model", default=os.environ.get("LLORCH_DEFAULT_MODEL"))
    ap.add_argument("--prompts-dir", default=os.path.join(HERE, "prompts"))
    ap.add_argument("--work-dir", default=os.path.join(ROOT, "build", "llamacpp_bitexact"))
    ap.add_argument("--threads", default="2")
    args = ap.parse_args()
    if not args.model or not os.path.exists(args.model):
        sys.exit(f"llamacpp_bitexact: model not found: {args.model!r} (source tools/env.sh)")
    os.makedirs(args.work_dir, exist_ok=True)
    score_tool = os.path.join(args.work_dir, "llamacpp_score")
    subprocess.run(["bash", os.path.join(ROOT, "tools", "bench", "build-llamacpp-tool.sh"),
                    "score", score_tool], check=True, stdout=subprocess.DEVNULL)

    def prompt_ids(name):
        with open(os.path.join(args.prompts_dir, name + ".txt"), encoding="utf-8") as f:
            text = f.read()
        return run([args.llorch, "tokenize", "--model", args.model, "--text", text])[0]

    def peer(ids, batch, logits):
        rows = run([score_tool, "--model", args.model, "--ids", ",".join(map(str, ids)),
                    "--threads", args.threads] + (["--batch"] if batch else [])
                   + (["--logits"] if logits else []))
        return rows[0], rows[1:]

    def ours(ids, one_token, logits):
        return run([args.llorch, "score", "--model", args.model, "--prompt-ids",
                    ",".join(map(str, ids)), "--threads", args.threads, "--logprobs", "1"]
                   + (["--one-token"] if one_token else []) + (["--logits"] if logits else []))

    failures = []
    avx512 = None
    # (prompt, order, ids limit, compare every logit)
    cases = [("english_prose", "batch", None, True), ("chinese", "batch", None, True),
             ("c_code", "one-token", 64, True), ("chat_template", "one-token", None, True),
             ("long_essay", "batch", None, False)]
    for name, order, limit, full in cases:
        ids = prompt_ids(name)[:limit]
        header, ref = peer(ids, order == "batch", full)
        if avx512 is None:
            features = [f for b in header["backends"] for f in b["features"]]
            avx512 = "AVX512=1" in features
            print(f"llama.cpp CPU variant: {header['cpu_variant_files']} "
                  f"({'AVX-512' if avx512 else 'no AVX-512'})")
        mine = ours(ids, order == "one-token", full)
        identical, worst_lp, argmax_diff = 0, 0.0, 0
        for r, m in zip(ref, mine):
            if full:
                a = np.array(r["logits"], dtype=np.float32)
                b = np.array(m["logits"], dtype=np.float32)
                identical += int(np.array_equal(a, b))
                worst_lp = max(worst_lp, float(np.max(np.abs(a - b))))
            else:
                if r["next_logprob"] is not None:
                    worst_lp = max(worst_lp, abs(r["next_logprob"] - m["next_logprob"]))
            argmax_diff += int(r["argmax"] != m["top_logprobs"][0][0])
        what = "logits identical" if full else "argmax equal"
        count = identical if full else len(ref) - argmax_diff
        measure = "max |Δlogit|" if full else "max |Δlogprob| (ours printed as float)"
        print(f"{name:14s} {order:9s} {len(ids):5d} ids: {what} at {count}/{len(ref)} positions, "
              f"{measure} {worst_lp:.3g}")
        if full and identical != len(ref):
            failures.append(f"{name} ({order}): logits differ at {len(ref) - identical} positions")
        if not full and (argmax_diff or worst_lp > 1e-5):
            failures.append(f"{name} ({order}): {argmax_diff} argmax differences, "
                            f"max |Δlogprob| {worst_lp:.3g}")
    if not avx512:
        print("no AVX-512 variant: ggml's exp and sums differ here; reported, not judged")
        return SKIP
    for f in failures:
        print("FAIL", f)
    print("PASS" if not failures else f"{len(failures)} case(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
