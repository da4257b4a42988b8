#!/usr/bin/env python3
"""Bit-exactness against llama.cpp on SmolLM2 Q4_1 ($LLORCH_DEFAULT_MODEL).

llorch's CPU path computes every float operation in the order of one of ggml's
x86 CPU libraries (worker/model/ggml_ops.h: the AVX2 one, haswell/alderlake, or
the AVX-512 ones, skylakex/icelake/zen4/...), chosen at run time as ggml chooses
its library. Where llama.cpp runs a library whose order llorch follows, llorch's
logits must be llama.cpp's, bit for bit:
  - batch order: `llorch score` against llama.cpp scoring the ids in one
    llama_batch (micro-batches of 512), on short prompts (every logit) and on
    the >1000-token prompt (argmax and log-prob of the next id at every position);
  - one-token order: `llorch score --one-token` against one llama_decode per id
    (llama.cpp's generation path).
Passes: "native" (the library ggml picks here, and llorch's own choice, which
must name the same variant), and on a machine with AVX-512 also "forced
haswell" (llama.cpp's AVX2 library loaded by name, llorch --ggml-variant avx2),
and "forced haswell, AVX2 kernels" (the same library against llorch under
LLORCH_MAX_CPU_ISA=avx2: the kernels and order an AVX2-only machine runs), so
that one AVX-512 machine checks both orders and both sets of kernels. Where ggml's library has AMX
(AMX_INT8=1: Sapphire Rapids and later), llama.cpp moves quantised weights into
its AMX buffer and multiplies Q4_0/Q4_1/Q8_0 in the AMX kernels' order, which
llorch follows there (variant amx, worker/model/amx_matmul.h): the native pass
compares those, an "amx" pass small random Q4_K/Q5_K/Q6_K models (quantised
by llama.cpp's own quantiser; every logit at 40 positions, batch and
one-token), and an "AMX off" pass loads the same library with
use_extra_bufts off (ggml's AVX-512 kernels) against llorch --ggml-variant
avx512. BF16 weights: where ggml's library has AVX512-BF16, a small
random BF16 model (untied, sizes with 64- and 32-element tails) scored by
llama.cpp (vec_dot_bf16 one token at a time, tinyBLAS for a batch) must give
llorch's logits bit for bit, with llorch's vdpbf16ps kernels and with its
AVX2 code (LLORCH_BF16_AVX512=0), which computes the same steps. --cpu-variant NAME runs one
forced pass instead. The reference is tools/bench/llamacpp_score.cc, built here
against the prebuilt libllama that node-llama-cpp ships (the same library the
other conformance tests use through node). Exits 77 (skipped) only where
llama.cpp's library has neither AVX2+FMA nor AVX-512 (llorch needs AVX2+FMA).
Usage: llamacpp_bitexact.py PATH/TO/llorch [--model M] [--work-dir DIR]
                            [--cpu-variant haswell|skylakex|zen4|...]
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


def run(cmd, timeout=900, env=None):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                          env=env)
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
    ap.add_argument("--cpu-variant", default=None,
                    help="one pass with llama.cpp's libggml-cpu-NAME.so and llorch in its order")
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

    def peer(ids, batch, logits, library=None, extra_bufts=True):
        rows = run([score_tool, "--model", args.model, "--ids", ",".join(map(str, ids)),
                    "--threads", args.threads] + (["--batch"] if batch else [])
                   + (["--logits"] if logits else [])
                   + (["--cpu-variant", library] if library else [])
                   + ([] if extra_bufts else ["--no-extra-bufts"]))
        return rows[0], rows[1:]

    def ours(ids, one_token, logits, variant=None, env=None):
        return run([args.llorch, "score", "--model", args.model, "--prompt-ids",
                    ",".join(map(str, ids)), "--threads", args.threads, "--logprobs", "1"]
                   + (["--one-token"] if one_token else []) + (["--logits"] if logits else [])
                   + (["--ggml-variant", variant] if variant else []),
                   env={**os.environ, **(env or {})})

    def inspect(env=None):
        return json.loads(subprocess.run([args.llorch, "inspect", "--model", args.model],
                                         stdout=subprocess.PIPE, check=True,
                                         env={**os.environ, **(env or {})}).stdout)

    def random_model(name, hidden, ffn, wtype, seed):
        """A small untied random model in the work dir (written once)."""
        path = os.path.join(args.work_dir, name)
        if not os.path.exists(path):
            subprocess.run([os.path.join(ROOT, "tools", "venv-python"),
                            os.path.join(ROOT, "tools", "make-test-model.py"), "--out",
                            path + ".tmp", "--layers", "2", "--hidden", str(hidden), "--heads",
                            "4", "--kv-heads", "2", "--ffn", str(ffn), "--ctx", "256", "--type",
                            wtype, "--untied", "--seed", str(seed), "--quiet"], check=True)
            os.replace(path + ".tmp", path)
        return path

    def compare_model_logits(label, model, ids, order, ref, env=None):
        """llorch's logits for `ids` against llama.cpp's rows `ref`: all identical."""
        mine = run([args.llorch, "score", "--model", model, "--prompt-ids",
                    ",".join(map(str, ids)), "--threads", args.threads, "--logprobs", "1",
                    "--logits"] + (["--one-token"] if order == "one-token" else []),
                   env={**os.environ, **(env or {})})
        pairs = [(np.array(r["logits"], dtype=np.float32), np.array(m["logits"], dtype=np.float32))
                 for r, m in zip(ref, mine)]
        same = sum(int(np.array_equal(a, b)) for a, b in pairs)
        worst = max(float(np.max(np.abs(a - b))) for a, b in pairs)
        print(f"{label}: logits identical at {same}/{len(ids)} positions, max |Δlogit| {worst:.3g}")
        if same != len(ids) or len(ref) != len(ids) or len(mine) != len(ids):
            failures.append(f"{label.strip()}: logits differ at {len(ids) - same} positions")

    def bf16_pass(features):
        """llorch's BF16 products against llama.cpp's AVX512-BF16 kernels."""
        if "AVX512_BF16=1" not in features:
            print("[bf16] llama.cpp's library has no AVX512-BF16 here: its BF16 order is not "
                  "the one llorch follows; skipped")
            return
        model = random_model("bitexact-bf16.gguf", 96, 224, "bf16", 15)
        ids = [(i * 7919 + 13) % 30000 + 100 for i in range(40)]
        for order in ("batch", "one-token"):
            header, ref = peer_model(model, ids, order == "batch")
            for label, env in (("vdpbf16ps or AVX2", {}), ("AVX2", {"LLORCH_BF16_AVX512": "0"})):
                compare_model_logits(f"[bf16] {order:9s} llorch {label:17s}", model, ids,
                                     order, ref, env)

    def amx_kquant_pass():
        """llorch's K-quant products against llama.cpp's AMX buffer (native amx)."""
        base = random_model("bitexact-f32-256.gguf", 256, 512, "f32", 16)
        quantize = os.path.join(args.work_dir, "llamacpp_quantize")
        subprocess.run(["bash", os.path.join(ROOT, "tools", "bench", "build-llamacpp-tool.sh"),
                        "quantize", quantize], check=True, stdout=subprocess.DEVNULL)
        ids = [(i * 7919 + 13) % 30000 + 100 for i in range(40)]
        for qtype in ("q4_k", "q5_k", "q6_k"):
            model = os.path.join(args.work_dir, f"bitexact-{qtype}.gguf")
            if not os.path.exists(model):
                subprocess.run([quantize, base, model + ".tmp", qtype], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                os.replace(model + ".tmp", model)
            for order in ("batch", "one-token"):
                _, ref = peer_model(model, ids, order == "batch")
                compare_model_logits(f"[amx {qtype}] {order:9s}", model, ids, order, ref)

    def peer_model(model, ids, batch):
        rows = run([score_tool, "--model", model, "--ids", ",".join(map(str, ids)),
                    "--threads", args.threads, "--logits"] + (["--batch"] if batch else []))
        return rows[0], rows[1:]

    def library_variant(header, extra_bufts=True):
        """amx | avx512 | avx2 | None: the order of the library llama.cpp loaded
        (amx: its AMX buffer holds the quantised weights)."""
        features = {f for b in header["backends"] for f in b["features"]}
        if "AMX_INT8=1" in features and "AVX512=1" in features and extra_bufts:
            return "amx"
        if "AVX512=1" in features:
            return "avx512"
        if {"AVX2=1", "FMA=1"} <= features:
            return "avx2"
        return None

    failures = []
    # (prompt, order, ids limit, compare every logit)
    cases = [("english_prose", "batch", None, True), ("chinese", "batch", None, True),
             ("c_code", "one-token", 64, True), ("chat_template", "one-token", None, True),
             ("long_essay", "batch", None, False)]

    def run_pass(label, library, llorch_variant, extra_bufts=True, llorch_env=None):
        """Every case with llama.cpp on `library` (None: ggml's pick) and llorch
        following `llorch_variant` (None: its own pick, under `llorch_env`).
        Returns the library's variant."""
        own_variant = inspect(llorch_env)["ggml_variant"] if llorch_env else our_variant
        header_variant = None
        for name, order, limit, full in cases:
            ids = prompt_ids(name)[:limit]
            header, ref = peer(ids, order == "batch", full, library, extra_bufts)
            if header_variant is None:
                header_variant = library_variant(header, extra_bufts)
                files = [os.path.basename(f) for f in header["cpu_variant_files"]]
                print(f"[{label}] llama.cpp CPU library {files}: {header_variant or 'no AVX2+FMA'} "
                      f"order; llorch follows {llorch_variant or own_variant}")
                if header_variant is None:
                    return None
                if llorch_variant is None and header_variant != own_variant:
                    failures.append(f"[{label}] ggml picked its {header_variant} library, llorch "
                                    f"chose {own_variant}")
            mine = ours(ids, order == "one-token", full, llorch_variant, llorch_env)
            if len(ref) != len(ids) or len(mine) != len(ids):
                # zip() would compare the shorter prefix and hide a missing row.
                failures.append(f"[{label}] {name} ({order}): {len(ids)} ids but llama.cpp printed "
                                f"{len(ref)} rows and llorch {len(mine)}")
                continue
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
            print(f"[{label}] {name:14s} {order:9s} {len(ids):5d} ids: {what} at "
                  f"{count}/{len(ref)} positions, {measure} {worst_lp:.3g}")
            if full and identical != len(ref):
                failures.append(f"[{label}] {name} ({order}): logits differ at "
                                f"{len(ref) - identical} positions")
            if not full and (argmax_diff or worst_lp > 1e-5):
                failures.append(f"[{label}] {name} ({order}): {argmax_diff} argmax differences, "
                                f"max |Δlogprob| {worst_lp:.3g}")
        return header_variant

    our_variant = json.loads(subprocess.run(
        [args.llorch, "inspect", "--model", args.model], stdout=subprocess.PIPE,
        check=True).stdout)["ggml_variant"]
    if args.cpu_variant:
        forced = library_variant(peer(prompt_ids("english_prose")[:2], True, False,
                                      args.cpu_variant)[0])
        if forced is None:
            print(f"llama.cpp's {args.cpu_variant} library has neither AVX2+FMA nor AVX-512")
            return SKIP
        run_pass(f"forced {args.cpu_variant}", args.cpu_variant, forced)
    else:
        probe = peer(prompt_ids("english_prose")[:2], True, False)
        features = {f for b in probe[0]["backends"] for f in b["features"]}
        native = run_pass("native", None, None)
        if native is None:
            print("llama.cpp runs a library without AVX2+FMA here: no order llorch follows; skipped")
            return SKIP
        if native == "amx":
            amx_kquant_pass()
            # The same library with its extra buffer types off runs ggml's
            # AVX-512 kernels: llorch's avx512 order is checked here too.
            run_pass("AMX off", None, "avx512", extra_bufts=False)
        if native in ("amx", "avx512"):
            run_pass("forced haswell", "haswell", "avx2")
            # What an AVX2-only machine runs: llorch's AVX2 kernels, not its
            # AVX-512 ones computing the AVX2 order (and its own pick of order).
            capped = {"LLORCH_MAX_CPU_ISA": "avx2"}
            kernels = inspect(capped)["cpu_kernels"]
            if kernels != "avx2":
                failures.append(f"LLORCH_MAX_CPU_ISA=avx2: llorch inspect says cpu_kernels {kernels}")
            run_pass("forced haswell, AVX2 kernels", "haswell", None, llorch_env=capped)
        bf16_pass(features)
    for f in failures:
        print("FAIL", f)
    print("PASS" if not failures else f"{len(failures)} case(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
