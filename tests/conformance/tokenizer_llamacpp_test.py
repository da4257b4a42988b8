"""Our tokenizer (worker/tokenizer, via tokenize_tool) against llama.cpp
(node-llama-cpp, tests/peer/tokenize.mjs) on the same GGUF vocabulary.

Compares, for seeded generated strings (tokenizer_strings.py), the ids with
special-token parsing on and off, the detokenized text, and the set of
end-of-generation ids.

    tokenizer_llamacpp_test.py --tool build/bin/tokenize_tool [--model F.gguf]
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


def vocab_size(model):
    import gguf  # llama.cpp's own reader, from the pinned test venv
    reader = gguf.GGUFReader(model)
    return len(reader.fields["tokenizer.ggml.tokens"].data)


def run(cmd):
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"command failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr}")


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tool", required=True, help="tokenize_tool executable")
    parser.add_argument("--model", default=os.environ.get("LLORCH_DEFAULT_MODEL"))
    parser.add_argument("--node", default="node")
    parser.add_argument("--peer", default=os.path.join(HERE, "..", "peer", "tokenize.mjs"))
    parser.add_argument("--seed", type=int, default=20241105)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--skip-decoded", action="store_true",
                        help="do not compare decoded text: for vocabularies where llama.cpp "
                             "applies clean_up_tokenization_spaces (\" !\" -> \"!\"), which "
                             "our Decode deliberately does not (it must stay lossless)")
    args = parser.parse_args()
    if not args.model or not os.path.exists(args.model):
        sys.exit(f"model not found: {args.model!r} (set LLORCH_DEFAULT_MODEL)")

    strings = tokenizer_strings.generate(args.seed, args.count)
    n_vocab = vocab_size(args.model)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "strings.json")
        with open(inp, "w", encoding="utf-8") as f:
            json.dump(strings, f, ensure_ascii=True)
        for special in (True, False):
            mode = "parse_special" if special else "no_special"
            ours_path = os.path.join(tmp, f"ours_{mode}.json")
            peer_path = os.path.join(tmp, f"peer_{mode}.json")
            flag = [] if special else ["--no-special"]
            # node-llama-cpp's tokenize never adds BOS/EOS: neither do we here.
            run([args.tool, "--model", args.model, "--in", inp, "--out", ours_path, "--no-bos"]
                + flag)
            run([args.node, args.peer, "--model", args.model, "--in", inp, "--out", peer_path,
                 "--vocab-size", str(n_vocab)] + flag)
            ours, peer = load(ours_path), load(peer_path)

            id_matches = 0
            for text, a, b in zip(strings, ours["ids"], peer["ids"]):
                if a == b:
                    id_matches += 1
                elif failures < 15:
                    failures += 1
                    print(f"[{mode}] ids differ for {text!r}\n  ours:     {a}\n  llama.cpp: {b}")
            text_matches = 0
            for text, a, b in zip(strings, ours["decoded"], peer["decoded"]):
                if args.skip_decoded:
                    break
                if a == b:
                    text_matches += 1
                elif failures < 15:
                    failures += 1
                    print(f"[{mode}] decoded text differs for {text!r}\n  ours:     {a!r}\n"
                          f"  llama.cpp: {b!r}")
            print(f"[{mode}] token ids match llama.cpp: {id_matches}/{len(strings)}")
            if args.skip_decoded:
                print(f"[{mode}] decoded text: not compared (--skip-decoded)")
                text_matches = len(strings)
            else:
                print(f"[{mode}] decoded text matches llama.cpp: {text_matches}/{len(strings)}")
            if id_matches != len(strings) or text_matches != len(strings):
                failures += 1
            if special:
                ours_eog, peer_eog = sorted(ours["eog_ids"]), sorted(peer["eog_ids"])
                print(f"end-of-generation ids: ours {ours_eog}, llama.cpp {peer_eog}")
                if ours_eog != peer_eog:
                    failures += 1
    print("PASS" if failures == 0 else "FAIL")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
