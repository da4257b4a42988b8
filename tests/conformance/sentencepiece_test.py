"""tokenizer.model (SentencePiece) against libsentencepiece.

Trains a Llama-style SentencePiece BPE model (byte fallback, identity
normalisation, dummy prefix, split digits) with Debian's spm_train on the
conformance prompts, then encodes 2000 seeded generated strings
(tokenizer_strings.py) with llorch (tokenize_tool on a folder holding only
tokenizer.model: pieces read through the dlopen'ed sentencepiece shim,
tokenised by llorch's SentencePiece-BPE tokenizer) and with libsentencepiece
(PyPI sentencepiece, pinned). The ids must be equal.

    sentencepiece_test.py --tool build/bin/tokenize_tool
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

import sentencepiece

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tokenizer_strings  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tool", required=True)
    parser.add_argument("--seed", type=int, default=20261126)  # the strings of tokenizer_hf_test
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    spm_train = shutil.which("spm_train")
    if spm_train is None:
        sys.exit("spm_train not found: install the Debian package 'sentencepiece' (tools/setup.sh)")
    strings = tokenizer_strings.generate(args.seed, args.count)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as out:
            for path in sorted(glob.glob(os.path.join(HERE, "prompts", "*.txt"))):
                with open(path, encoding="utf-8") as f:
                    out.write(f.read() + "\n")
        model_dir = os.path.join(tmp, "model")
        os.makedirs(model_dir)
        subprocess.run([spm_train, f"--input={corpus}",
                        f"--model_prefix={os.path.join(model_dir, 'tokenizer')}",
                        "--vocab_size=1000", "--model_type=bpe", "--byte_fallback=true",
                        "--character_coverage=1.0", "--normalization_rule_name=identity",
                        "--remove_extra_whitespaces=false", "--add_dummy_prefix=true",
                        "--split_digits=true", "--allow_whitespace_only_pieces=true",
                        "--minloglevel=2"], check=True, capture_output=True)
        os.remove(os.path.join(model_dir, "tokenizer.vocab"))
        inp = os.path.join(tmp, "strings.json")
        with open(inp, "w", encoding="utf-8") as f:
            json.dump(strings, f, ensure_ascii=True)
        ours_path = os.path.join(tmp, "ours.json")
        result = subprocess.run([args.tool, "--tokenizer-dir", model_dir, "--in", inp,
                                 "--out", ours_path, "--no-bos", "--no-special"],
                                capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"tokenize_tool failed: {result.stderr}")
        with open(ours_path, encoding="utf-8") as f:
            ours = json.load(f)["ids"]
        reference = sentencepiece.SentencePieceProcessor(
            model_file=os.path.join(model_dir, "tokenizer.model"))
        theirs = [reference.encode(s) for s in strings]
    mismatches = [(s, a, b) for s, a, b in zip(strings, ours, theirs) if a != b]
    for text, a, b in mismatches[:10]:
        print(f"ids differ for {text!r}\n  ours:          {a}\n  sentencepiece: {b}")
    print(f"sentencepiece {sentencepiece.__version__}: {len(strings) - len(mismatches)}/"
          f"{len(strings)} strings give the same ids")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
