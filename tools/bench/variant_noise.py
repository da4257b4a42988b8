"""llama.cpp's own numerical noise floor across its CPU backend variants.

With quantised weights llama.cpp quantises every activation row to 8 bits
inside its dot products, so float differences in the last bits (another SIMD
width, another summation order) can flip roundings that then cascade through
the layers. This script measures how much llama.cpp's own prebuilt CPU
variants (libggml-cpu-haswell.so = AVX2, -zen4/-skylakex/-icelake = AVX-512,
-x64/-sse42 = no AVX) disagree with each other on the teacher-forced log-probs
of llama.cpp's greedy continuations of the conformance prompts: the floor
below which no other engine can be held against any one llama.cpp build.

  tools/bench/build-llamacpp-tool.sh score
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


def peer_continuations(args, model, model_sha):
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
        out = run([args.node, PEER_SCRIPT, "batch", "--model", model, "--jobs", jobs_file,
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


def score(args, model_sha, variant, mode, ids):
    """llamacpp_score's next-token log-probs over ids under one variant and mode."""
    key = hashlib.sha256(json.dumps({"model": model_sha, "bin": file_sha256(args.score_bin),
                                     "variant": variant, "mode": mode, "ids": ids,
                                     "threads": args.threads}).encode()).hexdigest()[:20]

    def compute():
        cmd = [args.score_bin, "--model", args.model, "--lib-dir", args.lib_dir, "--threads",
               str(args.threads), "--ids", ",".join(map(str, ids))]
        if variant != "best":
            cmd += ["--cpu-variant", variant]
        if mode == "batch":
            cmd.append("--batch")
        start = time.time()
        lines = run(cmd, timeout=3600).splitlines()
        header = json.loads(lines[0])
        rows = [json.loads(line) for line in lines[1:]]
        log(f"  {variant:>9} {mode:>5}: {len(ids)} tokens in {time.time() - start:.1f} s "
            f"({os.path.basename(header['cpu_variant_files'][0])})")
        return {"header": header, "next_logprob": [r["next_logprob"] for r in rows],
                "argmax": [r["argmax"] for r in rows]}

    return cached_json(os.path.join(args.work_dir, f"score-{key}.json"), compute)


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def fmt(x, digits=4):
    """Fixed point, or scientific where fixed point would print 0 for a nonzero value."""
    return f"{x:.{digits}f}" if x == 0 or abs(x) >= 10 ** -(digits - 1) else f"{x:.1e}"


def print_pair_table(title, names, pairs, series):
    """series[label][name] = list of continuation log-probs; pairs = [(label_a, label_b)]."""
    print(f"\n{title}")
    print("mean |Δlogprob| over the continuation tokens per prompt (max in parentheses)")
    width = max(12, *(len(n) for n in names))
    head = f"{'pair':<34}" + "".join(f"{n[:width]:>{width + 9}}" for n in names) + \
        f"{'MEAN':>10}{'MAX':>9}"
    print(head)
    summary = {}
    for a, b in pairs:
        cells, means, maxes = [], [], []
        for n in names:
            d = [abs(x - y) for x, y in zip(series[a][n], series[b][n])
                 if x is not None and y is not None]
            m, mx = mean(d), max(d) if d else float("nan")
            means.append(m)
            maxes.append(mx)
            cells.append(f"{fmt(m)} ({fmt(mx, 3)})")
        summary[(a, b)] = (mean(means), max(maxes))
        print(f"{a + ' vs ' + b:<34}" + "".join(f"{c:>{width + 9}}" for c in cells) +
              f"{fmt(mean(means)):>10}{fmt(max(maxes), 3):>9}")
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("LLORCH_DEFAULT_MODEL"))
    parser.add_argument("--peer-model", default=None,
                        help="model whose greedy continuations are scored (default: --model); "
                             "e.g. the Q4_1 file when --model is its F32 dequantisation")
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
    peer_model = args.peer_model or args.model
    peer = peer_continuations(args, peer_model,
                              model_sha if peer_model == args.model else file_sha256(peer_model))
    if args.peer_only:
        return
    names = sorted(peer)
    variants = [v for v in args.variants.split(",") if v]
    modes = [m for m in args.modes.split(",") if m]
    series = {}  # "variant/mode" -> {prompt: [log-prob of continuation token k]}
    for variant in variants:
        for mode in modes:
            label = f"{variant}/{mode}"
            try:
                series[label] = {}
                for name in names:
                    r = peer[name]
                    p = len(r["prompt_ids"])
                    scored = score(args, model_sha, variant, mode,
                                   r["prompt_ids"] + r["generated_ids"])
                    series[label][name] = [scored["next_logprob"][p + k - 1]
                                           for k in range(len(r["generated_ids"]))]
            except RuntimeError as e:
                log(f"skipping {label}: {e}")
                del series[label]
    if peer_model == args.model:
        series["peer/gen"] = {n: peer[n]["gen_logprobs"] for n in names}
        series["peer/tf"] = {n: peer[n]["tf_logprobs"] for n in names}

    print(f"model {args.model}; {len(names)} prompts; continuation {args.n} tokens "
          f"(llama.cpp's own greedy, from {os.path.basename(peer_model)}); threads {args.threads}")
    print("prompt tokens: " + ", ".join(f"{n} {len(peer[n]['prompt_ids'])}" for n in names))
    labels = [l for l in series if not l.startswith("peer/")]
    # Sanity: the harness in the peer's setup (best variant, one batch) should
    # reproduce the peer's teacher-forced numbers.
    sanity = [(l, "peer/tf") for l in labels if l.endswith("/batch")] + \
        [(l, "peer/gen") for l in labels if l.endswith("/seq")]
    for mode in modes:
        mode_labels = [l for l in labels if l.endswith("/" + mode)]
        print_pair_table(f"== across CPU variants, mode {mode}", names,
                         list(itertools.combinations(mode_labels, 2)), series)
    if len(modes) > 1:
        print_pair_table("== same variant, batch vs one token per decode", names,
                         [(f"{v}/{modes[0]}", f"{v}/{m}") for v in variants for m in modes[1:]
                          if f"{v}/{modes[0]}" in series and f"{v}/{m}" in series], series)
    if peer_model == args.model:
        print_pair_table("== harness vs the peer (node-llama-cpp, default variant)", names,
                         sanity, series)


if __name__ == "__main__":
    main()
