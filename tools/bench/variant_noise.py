"""llama.cpp's own numerical noise floor across its CPU backend variants.

With quantised weights llama.cpp quantises every activation row to 8 bits
inside its dot products, so float differences in the last bits (another SIMD
width, another summation order) can flip roundings that then cascade through
the layers. This script measures how much llama.cpp's own prebuilt CPU
variants (libggml-cpu-haswell.so = AVX2, -zen4/-skylakex/-icelake = AVX-512,
-x64/-sse42 = no AVX) disagree with each other on the teacher-forced log-probs
of llama.cpp's greedy continuations of the conformance prompts: the floor
below which no other engine can be held against any one llama.cpp build.

  tools/bench/build-llamacpp-score.sh
  tools/venv-python tools/bench/variant_noise.py [--model M.gguf]
      [--variants haswell,zen4,skylakex,x64] [--modes batch,seq] [--n 64]
      [--work-dir /tmp/llorch-variant-noise]

1. The peer (tests/peer/llama_peer.mjs batch, node-llama-cpp with its default
   variant) tokenises each prompt and generates N greedy tokens; cached.
2. tools/bench/llamacpp_score scores prompt + continuation under each variant,
   in one teacher-forced batch (`batch`, what the conformance reference does)
   and one token per decode (`seq`, like generation); cached.
3. Prints, per pair of (variant, mode), per prompt the mean and max
   |Δ log-prob| of the continuation tokens, and the mean over prompts.
"""

import argparse
import hashlib
import itertools
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEER_SCRIPT = os.path.join(ROOT, "tests", "peer", "llama_peer.mjs")
PROMPTS_DIR = os.path.join(ROOT, "tests", "conformance", "prompts")
SCORE_BIN = os.path.join(ROOT, "build", "bin", "llamacpp_score")
LIB_DIR = os.path.join(ROOT, "tests", "peer", "node_modules", "@node-llama-cpp", "linux-x64",
                       "bins", "linux-x64")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cached_json(path, compute):
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    value = compute()
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False)
    os.replace(tmp, path)
    return value


def run(cmd, timeout):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return proc.stdout.decode()


def load_prompts():
    prompts = []
    for fname in sorted(os.listdir(PROMPTS_DIR)):
        if fname.endswith(".txt"):
            with open(os.path.join(PROMPTS_DIR, fname), encoding="utf-8") as f:
                prompts.append({"name": fname[:-4], "text": f.read()})
    return prompts


def peer_continuations(args, model_sha):
    """{name: {"prompt_ids", "generated_ids", "gen_logprobs", "tf_logprobs"}} from the peer."""
    jobs = load_prompts()
    key = hashlib.sha256(json.dumps({"model": model_sha, "peer": file_sha256(PEER_SCRIPT),
                                     "n": args.n, "jobs": jobs}, sort_keys=True).encode()
                         ).hexdigest()[:20]
    jobs_file = os.path.join(args.work_dir, f"jobs-{key}.json")

    def compute():
        with open(jobs_file, "w", encoding="utf-8") as f:
            json.dump(jobs, f, ensure_ascii=False)
        log(f"peer: tokenize + {args.n}-token greedy generation of {len(jobs)} prompts ...")
        start = time.time()
        out = run([args.node, PEER_SCRIPT, "batch", "--model", args.model, "--jobs", jobs_file,
                   "--n", str(args.n), "--top", "2", "--sequential", "0"], timeout=3600)
        log(f"peer: done in {time.time() - start:.0f} s")
        result = {}
        for r in json.loads(out)["results"]:
            gen = r["generate"]
            p = len(gen["prompt_ids"])
            tf = {t["pos"]: t["next_logprob"] for t in r["teacher_forced"]}
            result[r["name"]] = {
                "prompt_ids": gen["prompt_ids"],
                "generated_ids": gen["generated_ids"],
                "gen_logprobs": [s["logprob"] for s in gen["steps"]],
                "tf_logprobs": [tf[p + k - 1] for k in range(len(gen["steps"]))],
            }
        return result

    return cached_json(os.path.join(args.work_dir, f"peer-{key}.json"), compute)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("LLORCH_DEFAULT_MODEL"))
    parser.add_argument("--variants", default="haswell,zen4,skylakex,x64")
    parser.add_argument("--modes", default="batch,seq")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work-dir", default="/tmp/llorch-variant-noise")
    parser.add_argument("--score-bin", default=SCORE_BIN)
    parser.add_argument("--lib-dir", default=LIB_DIR)
    parser.add_argument("--node", default="node")
    parser.add_argument("--peer-only", action="store_true")
    args = parser.parse_args()
    if not args.model or not os.path.exists(args.model):
        sys.exit(f"variant_noise: model not found: {args.model!r} (source tools/env.sh)")
    os.makedirs(args.work_dir, exist_ok=True)
    model_sha = file_sha256(args.model)
    peer = peer_continuations(args, model_sha)
    if args.peer_only:
        return


if __name__ == "__main__":
    main()
