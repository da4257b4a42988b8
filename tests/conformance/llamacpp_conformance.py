#!/usr/bin/env python3
"""Conformance of llorch against llama.cpp (node-llama-cpp, tests/peer/llama_peer.mjs).

For every (model, prompt) case:
  1. tokenisation: the peer's ids for the raw-text prompt == `llorch tokenize`;
  2. the peer's greedy continuation (N tokens) with the full distribution at each step;
  3. teacher-forced: `llorch score` over prompt + continuation, against the peer's
     own teacher-forced (batched) scoring of the same ids: at every generated
     position where the peer's top-1/top-2 log-prob margin exceeds the threshold
     our top-1 must be the peer's top-1, and the mean |our - peer| log-prob of the
     generated token must stay within the tolerance of the weights' type
     (F32 1e-4, F16 1e-3, quantised 0.02);
  4. free-running: `llorch run --temperature 0` against the peer's generation: the
     tokens must match up to the first step where the peer's margin is below the
     threshold (a near tie that rounding may flip), and the mean |Δlogprob| over
     the matched tokens must stay within the same tolerance (under the noise
     rule: 1.5x the peer-noise measured over those same positions, uncapped).
The margin threshold is fixed; the tolerance follows one of three stated rules,
printed per case (TOLERANCE_* and the rule comment below): "float" (F32 1e-4,
F16 1e-3), "exact" (quantised products and float ops that llorch computes as the
CPU library llama.cpp loaded does: 0.02) and "noise" (other quantised cases:
1.5x llama.cpp's own spread between its evaluation paths in the same run, at
least 0.02, at most 0.05). "peer-noise" is that spread: its incremental
generation and one-token-per-batch scoring against its batch scoring; with
quantised weights ggml's kernels differ by batch shape in the last bits and the
8-bit activation rounding amplifies that (SmolLM2 Q4_1: 0.01-0.04 mean). llorch
computes the float operations in the order of ggml's AVX2 or AVX-512 library
(worker/model/ggml_ops.h, chosen as ggml chooses), batch order for prompt rows
and one-token order for generated ones, so it follows each path of llama.cpp
rather than sitting between them.

Models: SmolLM2-135M ($LLORCH_DEFAULT_MODEL) on every prompt in prompts/, and the
random-weight models from tests/make_test_models.sh (tiny-*.gguf) on a few prompts.
The peer's outputs are cached per (model hash, peer script, prompts) in the work dir.

Usage: llamacpp_conformance.py PATH/TO/llorch [--work-dir DIR] [--random-models-dir DIR] ...
Exit status: 0 all cases pass, 1 some case failed, 2 setup error.
"""

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import gguf

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PEER_SCRIPT = os.path.join(ROOT, "tests", "peer", "llama_peer.mjs")
PEER_LOCK = os.path.join(ROOT, "tests", "peer", "package-lock.json")
MAKE_TEST_MODELS = os.path.join(ROOT, "tests", "make_test_models.sh")

# Mean |Δlogprob| tolerance by the least precise matrix type in the file.
TOLERANCE_F32 = 1e-4
TOLERANCE_F16 = 1e-3
TOLERANCE_QUANTIZED = 0.02

# Which rule sets a case's tolerance (printed per case, with the reason):
#   float: F32/F16/BF16 weights. No 8-bit activation rounding amplifies the
#          last-bit differences of libtorch's products: the fixed type tolerance.
#   exact: quantised weights whose products llorch computes as llama.cpp does
#          (ggml's vec_dot order, which tinyBLAS shares for Q8_0; for Q4_0 and
#          Q4_K the order of its repacked q4_0_8x8 / q4_K_8x8 kernels,
#          worker/model/interleaved_matmul.h, kquant_matmul.h), with llorch
#          following the float order of the very CPU library llama.cpp loaded
#          (worker/model/ggml_ops.h): the fixed tolerance TOLERANCE_QUANTIZED.
#   noise: any other quantised case (a product llama.cpp sums in its own order,
#          or a CPU library whose order llorch does not follow): the tolerance
#          is NOISE_FACTOR x llama.cpp's own spread between its evaluation paths
#          measured in the same run ("peer-noise"), never below the fixed
#          tolerance and never above NOISE_CAP unless llama.cpp's own paths are
#          further apart than that (on AMX CPUs its batch products run on int8
#          tiles and its one-token products on VNNI, SmolLM2 russian: 0.053):
#          then that spread, as no bound is meaningful below the distance of
#          the peer's own paths from each other; and argmax and greedy tokens must
#          agree only where the peer's top-1/top-2 margin exceeds both the fixed
#          threshold and the largest |Δlogprob| between its own paths (a closer
#          call flips between llama.cpp's own paths too).
EXACT_QUANT_TYPES = {"Q8_0", "Q4_0", "Q4_1", "Q5_1", "Q4_K", "Q5_K", "Q6_K"}
# On AMX machines llama.cpp multiplies these in its AMX order, which llorch follows
# (its variant amx); Q5_1 stays out of the AMX buffer (ggml's AVX-512 vec_dot).
AMX_EXACT_QUANT_TYPES = {"Q8_0", "Q4_0", "Q4_1", "Q5_1", "Q4_K", "Q5_K", "Q6_K"}
NOT_FOLLOWED_WHY = {}
NOISE_FACTOR = 1.5
NOISE_CAP = 0.05


class SetupError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def peer_features(system_info):
    return set(re.findall(r"(\w+) = 1", system_info or ""))


def peer_variant(system_info):
    """The float order of the CPU library llama.cpp loaded, from its feature list."""
    features = peer_features(system_info)
    if "AVX512" in features and "AMX_INT8" in features:
        return "amx"  # quantised weights in its AMX buffer
    if "AVX512" in features:
        return "avx512"
    if {"AVX2", "FMA"} <= features:
        return "avx2"
    return None


def noise_tolerance(tol, noise):
    """The noise rule's tolerance for a peer-noise (see the rules above)."""
    return min(max(NOISE_CAP, noise), max(tol, NOISE_FACTOR * noise))


def peer_noise_mean(alternatives, ref, count):
    """The largest mean |Δlogprob| of the peer's other paths against its batch
    scoring over the first `count` generated positions."""
    worst = 0.0
    for alt in alternatives:
        noise = [abs(a - r["next_logprob"]) for a, r in zip(alt[:count], ref[:count])
                 if a is not None and r["next_logprob"] is not None]
        if noise:
            worst = max(worst, sum(noise) / len(noise))
    return worst


def tolerance_rule(types, tol, peer_info, our_var, noise):
    """(rule, tolerance, why) for a case; see the rules above."""
    peer_var = peer_variant(peer_info)
    quant = [t for t in types if t not in ("F32", "F16", "BF16")]
    if not quant:
        return "float", tol, f"{'/'.join(types)} weights: fixed tolerance of the type"
    why = [NOT_FOLLOWED_WHY.get(t, f"{t}: products not followed bit for bit")
           for t in quant if t not in EXACT_QUANT_TYPES]
    if peer_var is None:
        why.append("llama.cpp runs a CPU library without AVX2+FMA, whose order llorch does not follow")
    elif peer_var != our_var:
        why.append(f"llama.cpp runs its {peer_var} library, llorch follows {our_var}")
    not_amx = [t for t in quant if t not in AMX_EXACT_QUANT_TYPES]
    if peer_var == "amx" and not_amx:
        why.append(f"llama.cpp multiplies {'/'.join(not_amx)} on AMX tiles in an order llorch "
                   f"does not follow")
    if not why:
        return "exact", tol, (f"{'/'.join(quant)} products and float ops in the order of "
                              f"llama.cpp's {peer_var} library: fixed tolerance")
    return "noise", noise_tolerance(tol, noise), "; ".join(why) + (f": tol = {NOISE_FACTOR} x peer-noise of the "
                                                   f"case, within [{tol:g}, {NOISE_CAP:g}] or the "
                                                   f"peer-noise itself where it exceeds {NOISE_CAP:g}")


def ours_variant(args, model_path):
    info = json.loads(run_cmd([args.llorch, "inspect", "--model", model_path],
                              timeout=args.engine_timeout))
    return info["ggml_variant"]


def weight_tolerance(model_path):
    """Tolerance and the weight types (of tensors with >= 2 dims) found in the GGUF."""
    reader = gguf.GGUFReader(model_path)
    types = sorted({t.tensor_type.name for t in reader.tensors if len(t.shape) >= 2})
    if not types:
        raise SetupError(f"{model_path}: no weight matrices found")
    tol = 0.0
    for name in types:
        if name == "F32":
            tol = max(tol, TOLERANCE_F32)
        elif name in ("F16", "BF16"):
            tol = max(tol, TOLERANCE_F16)
        else:
            tol = max(tol, TOLERANCE_QUANTIZED)
    return tol, types


def run_cmd(cmd, timeout):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if proc.returncode != 0:
        shown = " ".join(a if len(a) < 80 else a[:77] + "..." for a in cmd)
        raise RuntimeError(f"`{shown}` exited {proc.returncode}: "
                           f"{proc.stderr.decode('utf-8', 'replace').strip()[-2000:]}")
    return proc.stdout.decode("utf-8")


# ---------------------------------------------------------------- the peer


def peer_batch(args, model_path, jobs, sequential):
    """Runs the peer's tokenize + greedy generate on every job; cached by content."""
    key_src = json.dumps({
        "sequential": sequential,
        "model": file_sha256(model_path),
        "peer": file_sha256(PEER_SCRIPT),
        "lock": file_sha256(PEER_LOCK) if os.path.exists(PEER_LOCK) else "",
        "n": args.n,
        "jobs": jobs,
        "kv_type": args.peer_kv_type,
    }, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
    cache_dir = os.path.join(args.work_dir, "peer-cache")
    os.makedirs(cache_dir, exist_ok=True)
    cache_file = os.path.join(cache_dir, f"{key}.json")
    if not args.no_cache and os.path.exists(cache_file):
        with open(cache_file, encoding="utf-8") as f:
            return json.load(f), True
    jobs_file = os.path.join(args.work_dir, f"jobs-{key}.json")
    with open(jobs_file, "w", encoding="utf-8") as f:
        json.dump(jobs, f, ensure_ascii=False)
    try:
        out = run_cmd([args.node, PEER_SCRIPT, "batch", "--model", model_path, "--jobs", jobs_file,
                       "--n", str(args.n), "--top", "10", "--sequential", "1" if sequential else "0",
                       "--kv-type", args.peer_kv_type],
                      timeout=args.peer_timeout)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        raise SetupError(f"the llama.cpp peer failed: {e}") from e
    result = json.loads(out)
    tmp = cache_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False)
    os.replace(tmp, cache_file)
    return result, False


# ---------------------------------------------------------------- our engine


def ours_tokenize(args, model_path, text):
    return json.loads(run_cmd([args.llorch, "tokenize", "--model", model_path, "--text", text],
                              timeout=args.engine_timeout))


def ours_score(args, model_path, ids):
    out = run_cmd([args.llorch, "score", "--model", model_path,
                   "--prompt-ids", ",".join(map(str, ids)), "--logprobs", "5",
                   "--threads", str(args.threads), "--kv-type", args.kv_type],
                  timeout=args.engine_timeout)
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    if len(rows) != len(ids):
        raise RuntimeError(f"llorch score printed {len(rows)} positions for {len(ids)} ids")
    for i, row in enumerate(rows):
        if row.get("pos") != i or row.get("id") != ids[i]:
            raise RuntimeError(f"llorch score row {i} is {row.get('pos')}/{row.get('id')}, "
                               f"expected {i}/{ids[i]}")
    return rows


def ours_run(args, model_path, prompt_ids):
    out = run_cmd([args.llorch, "run", "--model", model_path,
                   "--prompt-ids", ",".join(map(str, prompt_ids)),
                   "--temperature", "0", "--max-tokens", str(args.n), "--format", "jsonl",
                   "--logprobs", "2", "--threads", str(args.threads), "--kv-type", args.kv_type],
                  timeout=args.engine_timeout)
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    tokens = [e for e in events if e.get("event") == "token"]
    finished = [e for e in events if e.get("event") == "finished"]
    if len(finished) != 1:
        raise RuntimeError(f"llorch run printed {len(finished)} 'finished' events")
    return tokens, finished[0]


# ---------------------------------------------------------------- comparison


def fmt_tok(text):
    return json.dumps(text, ensure_ascii=False)


def compare_case(args, model_path, tol, types, variants, name, job, peer_result):
    """Returns a row dict for the table; row['failures'] lists what went wrong."""
    gen = peer_result["generate"]
    prompt_ids = gen["prompt_ids"]
    steps = gen["steps"]
    row = {"model": os.path.basename(model_path), "prompt": name, "prompt_tokens": len(prompt_ids),
           "positions": len(steps), "tol": tol, "failures": [], "notes": []}
    fail = row["failures"].append

    if args.min_prompt_tokens.get(name) and len(prompt_ids) < args.min_prompt_tokens[name]:
        fail(f"prompt has {len(prompt_ids)} tokens, the case needs >= {args.min_prompt_tokens[name]}")

    # 1. Tokenisation of the raw text.
    row["tokenize"] = "-"
    if "text" in job:
        try:
            ours = ours_tokenize(args, model_path, job["text"])
            if ours == prompt_ids:
                row["tokenize"] = "ok"
            else:
                row["tokenize"] = "DIFF"
                first = next((i for i, (a, b) in enumerate(zip(ours, prompt_ids)) if a != b),
                             min(len(ours), len(prompt_ids)))
                fail(f"tokenize: ours has {len(ours)} ids, peer {len(prompt_ids)}; first difference "
                     f"at {first}: ours {ours[first:first + 5]} vs peer {prompt_ids[first:first + 5]}")
        except Exception as e:  # noqa: BLE001 - reported as a failure of this case
            row["tokenize"] = "ERR"
            fail(f"tokenize: {e}")

    # The peer scores its continuation in several ways: one token at a time while
    # generating (`gen`), teacher-forced in one batch (`tf`, what `llorch score`
    # does) and, for quantised weights, teacher-forced one token per batch (`seq`).
    # Their spread is reported as the reference's own noise, not used as a bound.
    full = prompt_ids + gen["generated_ids"]
    p = len(prompt_ids)
    tf = {r["pos"]: r for r in peer_result["teacher_forced"]}
    ref = [tf[p + k - 1] for k in range(len(steps))]
    alternatives = [[s["logprob"] for s in steps]]
    if peer_result.get("teacher_forced_sequential"):
        sq = {r["pos"]: r for r in peer_result["teacher_forced_sequential"]}
        alternatives.append([sq[p + k - 1]["next_logprob"] for k in range(len(steps))])
    row["noise_mean"] = peer_noise_mean(alternatives, ref, len(ref))
    row["noise_max"] = max((abs(a - r["next_logprob"]) for alt in alternatives
                            for a, r in zip(alt, ref)
                            if a is not None and r["next_logprob"] is not None), default=0.0)
    row["rule"], tol_eff, row["rule_why"] = tolerance_rule(types, tol, variants[0], variants[1],
                                                           row["noise_mean"])
    margin_eff = max(args.margin, row["noise_max"]) if row["rule"] == "noise" else args.margin
    row["tol_eff"], row["margin_eff"] = tol_eff, margin_eff

    # 2./3. Teacher-forced scoring over prompt + the peer's continuation.
    row.update(decided=0, agree_decided=0, agree_all=0, mean_abs=None, max_abs=None)
    try:
        scored = ours_score(args, model_path, full)
        deltas = []
        worst = None
        for k, (step, r) in enumerate(zip(steps, ref)):
            ours_row = scored[p + k - 1]  # distribution after consuming full[0..p+k-1]
            ours_top1 = ours_row["top_logprobs"][0][0]
            ours_lp = ours_row["next_logprob"]
            peer_top1 = r["top_logprobs"][0][0]
            if ours_top1 == peer_top1:
                row["agree_all"] += 1
            if r["margin"] is None or r["margin"] > margin_eff:
                row["decided"] += 1
                if ours_top1 == peer_top1:
                    row["agree_decided"] += 1
                else:
                    fail(f"step {k} (position {p + k - 1}): peer top-1 {peer_top1} lp "
                         f"{r['top_logprobs'][0][1]:.5f} margin {r['margin']:.4f} (threshold "
                         f"{margin_eff:.3g}); ours top-1 {ours_top1} lp "
                         f"{ours_row['top_logprobs'][0][1]:.5f}")
            if ours_lp is None or r["next_logprob"] is None:
                fail(f"step {k}: missing log-prob (ours {ours_lp}, peer {r['next_logprob']})")
                continue
            d = abs(ours_lp - r["next_logprob"])
            deltas.append(d)
            if worst is None or d > worst[0]:
                worst = (d, k, ours_lp, r["next_logprob"], step["id"])
        if deltas:
            row["mean_abs"] = sum(deltas) / len(deltas)
            row["max_abs"] = max(deltas)
            if not row["mean_abs"] <= tol_eff:
                fail(f"mean |Δlogprob| {row['mean_abs']:.3g} > tolerance {tol_eff:.3g} (worst at "
                     f"step {worst[1]}, position {p + worst[1] - 1}, token {worst[4]}: ours "
                     f"{worst[2]:.6f} peer {worst[3]:.6f})")
    except Exception as e:  # noqa: BLE001
        fail(f"score: {e}")

    # 4. Free-running greedy generation, compared with the peer's generation.
    row.update(free_match=None, free_mean_abs=None, free_total=len(steps))
    try:
        tokens, finished = ours_run(args, model_path, prompt_ids)
        row["kv_cache_bytes"] = finished.get("kv_cache_bytes")
        ours_ids = [t["id"] for t in tokens]
        peer_ids = gen["generated_ids"]
        match = 0
        while match < min(len(ours_ids), len(peer_ids)) and ours_ids[match] == peer_ids[match]:
            match += 1
        # Our engine may end on EOS without printing the EOS token itself.
        if (match == len(ours_ids) and finished.get("reason") == "eos"
                and gen["finish_reason"] == "eog" and match == len(peer_ids) - 1):
            match += 1
        row["free_match"] = match
        if match < len(peer_ids):
            step = steps[match]
            ours_tok = ours_ids[match] if match < len(ours_ids) else f"end ({finished.get('reason')})"
            what = (f"free-running diverges at step {match}: peer {step['id']} "
                    f"{fmt_tok(step['text'])} margin {step['margin']:.4f}, ours {ours_tok}")
            if step["margin"] is None or step["margin"] > margin_eff:
                fail(what + f" (threshold {margin_eff:.3g})")
            else:
                row["notes"].append(what + f" (near tie, threshold {margin_eff:.3g}: allowed)")
        elif len(ours_ids) > len(peer_ids) and gen["finish_reason"] == "eog":
            fail(f"free-running: peer ended with EOG after {len(peer_ids)} tokens, ours went on "
                 f"to {len(ours_ids)}")
        deltas = [abs(tokens[k]["logprob"] - steps[k]["logprob"])
                  for k in range(min(match, len(tokens)))
                  if tokens[k].get("logprob") is not None and steps[k]["logprob"] is not None]
        if deltas:
            row["free_mean_abs"] = sum(deltas) / len(deltas)
            free_tol = tol_eff
            if row["rule"] == "noise":
                # The peer's own spread over the positions compared here, uncapped:
                # a short prefix's mean varies more than the whole case's.
                free_tol = max(tol_eff, NOISE_FACTOR * peer_noise_mean(alternatives, ref,
                                                                       len(deltas)))
            if not row["free_mean_abs"] <= free_tol:
                fail(f"free-running mean |Δlogprob| {row['free_mean_abs']:.3g} over "
                     f"{len(deltas)} tokens > tolerance {free_tol:.3g}")
    except Exception as e:  # noqa: BLE001
        fail(f"run: {e}")
    return row


def print_table(rows):
    headers = ["model", "prompt", "ptok", "pos", "tokenize", "argmax(m>thr)", "argmax(all)",
               "mean|Δlp|", "max|Δlp|", "peer-noise", "rule", "tol", "thr", "free-run", "free|Δlp|",
               "KV MiB", "status"]

    def g(x):
        return "-" if x is None else f"{x:.2e}"

    lines = []
    for r in rows:
        free = "-" if r.get("free_match") is None else f"{r['free_match']}/{r['free_total']}"
        lines.append([r["model"], r["prompt"], str(r["prompt_tokens"]), str(r["positions"]),
                      r.get("tokenize", "-"), f"{r.get('agree_decided', 0)}/{r.get('decided', 0)}",
                      f"{r.get('agree_all', 0)}/{r['positions']}", g(r.get("mean_abs")),
                      g(r.get("max_abs")), g(r.get("noise_mean")), r.get("rule", "-"),
                      f"{r['tol_eff']:.2g}",
                      f"{r['margin_eff']:.2g}", free, g(r.get("free_mean_abs")),
                      "-" if r.get("kv_cache_bytes") is None
                      else f"{r['kv_cache_bytes'] / 2**20:.1f}",
                      "FAIL" if r["failures"] else "ok"])
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h)
              for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for l in lines:
        print("  ".join(c.ljust(w) for c, w in zip(l, widths)))
    print("argmax(m>thr): our top-1 == peer top-1 where the peer's margin > thr. peer-noise: "
          "largest mean |Δlogprob| between llama.cpp's own evaluation paths. rule: how tol was "
          "set (float | exact | noise, below). free-run: our greedy tokens equal to the peer's before the "
          "first divergence. KV MiB: the KV cache llorch allocated for the free run.")
    seen = set()
    for r in rows:
        if (r["model"], r.get("rule")) not in seen:
            seen.add((r["model"], r.get("rule")))
            print(f"rule {r['model']}: {r.get('rule')}: {r.get('rule_why')}")
    for r in rows:
        for n in r["notes"]:
            print(f"note {r['model']}/{r['prompt']}: {n}")
        for f in r["failures"]:
            print(f"FAIL {r['model']}/{r['prompt']}: {f}")
    sys.stdout.flush()


# ---------------------------------------------------------------- cases


def load_prompts(prompts_dir):
    prompts = {}
    for fname in sorted(os.listdir(prompts_dir)):
        if fname.endswith(".txt"):
            with open(os.path.join(prompts_dir, fname), encoding="utf-8") as f:
                prompts[fname[:-4]] = f.read()
    if not prompts:
        raise SetupError(f"no prompts (*.txt) in {prompts_dir}")
    return prompts


def random_models(args):
    if args.random_models_dir is None:
        args.random_models_dir = os.path.join(args.work_dir, "models")
    pattern = re.compile(r"^tiny-.*\.gguf$")

    def listed():
        if not os.path.isdir(args.random_models_dir):
            return []
        return sorted(os.path.join(args.random_models_dir, f)
                      for f in os.listdir(args.random_models_dir) if pattern.match(f))

    models = listed()
    if not models:
        log(f"generating random-weight models into {args.random_models_dir}")
        run_cmd(["bash", MAKE_TEST_MODELS, args.random_models_dir], timeout=900)
        models = listed()
    if not models:
        raise SetupError(f"no tiny-*.gguf random-weight models in {args.random_models_dir}")
    return models


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("llorch", help="path to the llorch binary")
    ap.add_argument("--model", default=os.environ.get("LLORCH_DEFAULT_MODEL"),
                    help="the real model, run on every prompt (default $LLORCH_DEFAULT_MODEL)")
    ap.add_argument("--prompts-dir", default=os.path.join(HERE, "prompts"))
    ap.add_argument("--random-models-dir", default=None,
                    help="folder with tiny-*.gguf (made with tests/make_test_models.sh if empty; "
                         "default WORK_DIR/models)")
    ap.add_argument("--random-prompts", default="english_prose,chat_template",
                    help="prompts run on the random-weight models (comma-separated names)")
    ap.add_argument("--skip-random", action="store_true", help="only the real model")
    ap.add_argument("--skip-real", action="store_true", help="only the random-weight models")
    ap.add_argument("--only", default=None, help="regex on 'model/prompt' selecting cases")
    ap.add_argument("--work-dir", default=None, help="peer cache and models (default: a temp dir)")
    ap.add_argument("--no-cache", action="store_true", help="ignore cached peer outputs")
    ap.add_argument("--n", type=int, default=64, help="tokens to generate per case")
    ap.add_argument("--margin", type=float, default=0.1,
                    help="peer top-1/top-2 log-prob margin above which argmax must agree")
    ap.add_argument("--long-prompt", default="long_essay",
                    help="prompt that must have more than --long-min-tokens tokens")
    ap.add_argument("--long-min-tokens", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--node", default=shutil.which("node") or "node")
    ap.add_argument("--peer-timeout", type=int, default=900)
    ap.add_argument("--engine-timeout", type=int, default=300)
    ap.add_argument("--json-out", default=None, help="also write the rows as JSON here")
    ap.add_argument("--kv-type", default="f32",
                    help="llorch's KV cache type: measures what a 16-bit or q8_0 cache costs "
                         "in agreement; the tolerances are F32's")
    ap.add_argument("--peer-kv-type", default="f32",
                    help="llama.cpp's KV cache type (q8_0 with flash attention, as llama.cpp "
                         "needs): with --kv-type f32, what its own cache type costs")
    args = ap.parse_args(argv)
    args.min_prompt_tokens = {args.long_prompt: args.long_min_tokens + 1}
    return args


def main(argv):
    args = parse_args(argv)
    if not os.access(args.llorch, os.X_OK):
        raise SetupError(f"llorch binary not executable: {args.llorch}")
    if not os.path.exists(PEER_SCRIPT) or not os.path.isdir(os.path.join(ROOT, "tests", "peer", "node_modules")):
        raise SetupError("tests/peer/node_modules missing: run tools/setup.sh")
    temp_dir = None
    if args.work_dir is None:
        temp_dir = tempfile.mkdtemp(prefix="llamacpp_conformance.")
        args.work_dir = temp_dir
    os.makedirs(args.work_dir, exist_ok=True)
    prompts = load_prompts(args.prompts_dir)
    only = re.compile(args.only) if args.only else None

    plan = []  # (model path, [prompt names])
    if not args.skip_real:
        if not args.model or not os.path.exists(args.model):
            raise SetupError(f"real model not found: {args.model!r} (set LLORCH_DEFAULT_MODEL)")
        plan.append((args.model, list(prompts)))
    if not args.skip_random:
        wanted = [p for p in args.random_prompts.split(",") if p]
        for p in wanted:
            if p not in prompts:
                raise SetupError(f"--random-prompts: no prompt named {p} in {args.prompts_dir}")
        for m in random_models(args):
            plan.append((m, wanted))

    rows = []
    started = time.time()
    for model_path, names in plan:
        base = os.path.basename(model_path)
        names = [n for n in names if only is None or only.search(f"{base}/{n}")]
        if not names:
            continue
        tol, types = weight_tolerance(model_path)
        jobs = [{"name": n, "text": prompts[n]} for n in names]
        t0 = time.time()
        quantized = tol > TOLERANCE_F16
        peer, cached = peer_batch(args, model_path, jobs, sequential=quantized)
        log(f"{base} ({'/'.join(types)}, tol {tol:g}): peer {'cached' if cached else 'ran'} "
            f"in {time.time() - t0:.1f}s")
        by_name = {r["name"]: r for r in peer["results"]}
        variants = (peer.get("system_info"), ours_variant(args, model_path))
        log(f"  llama.cpp's CPU library: {peer_variant(variants[0])} order; "
            f"llorch follows {variants[1]}")
        for job in jobs:
            t1 = time.time()
            row = compare_case(args, model_path, tol, types, variants, job["name"], job,
                               by_name[job["name"]])
            rows.append(row)
            log(f"  {job['name']}: {'FAIL' if row['failures'] else 'ok'} ({time.time() - t1:.1f}s)")
    if not rows:
        raise SetupError("no case selected")
    print_table(rows)
    failed = sum(1 for r in rows if r["failures"])
    print(f"{len(rows) - failed}/{len(rows)} cases passed in {time.time() - started:.0f}s")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1, ensure_ascii=False)
    if temp_dir is not None:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except SetupError as e:
        log(f"llamacpp_conformance: {e}")
        sys.exit(2)
