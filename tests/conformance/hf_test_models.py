"""Random-weight Hugging Face checkpoints of every architecture llorch runs,
built with transformers (and a byte-level BPE trained by tokenizers), for
tests/conformance/transformers_conformance.py and tools/test-multi-model.sh.

    python hf_test_models.py OUT_DIR [--only NAME]   # writes OUT_DIR/<case>/
"""
import argparse
import glob
import math
import os
import shutil
import subprocess
import sys
import tempfile

import tokenizers
import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
SPECIAL = ["<|endoftext|>", "<|end|>", "<|user|>", "<|assistant|>"]
VOCAB = 384
BASE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            vocab_size=VOCAB, max_position_embeddings=512)


def cases():
    T = transformers
    return [
        ("llama-gqa", T.LlamaConfig(**BASE, num_key_value_heads=2, tie_word_embeddings=False),
         T.LlamaForCausalLM, {}),
        ("llama3-rope-tied", T.LlamaConfig(**BASE, num_key_value_heads=4, tie_word_embeddings=True,
                                           rope_theta=50000.0,
                                           rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                         "low_freq_factor": 1.0,
                                                         "high_freq_factor": 4.0,
                                                         "original_max_position_embeddings": 32}),
         T.LlamaForCausalLM, {}),
        ("llama-linear-rope", T.LlamaConfig(**BASE, num_key_value_heads=1,
                                            rope_scaling={"type": "linear", "factor": 2.0}),
         T.LlamaForCausalLM, {}),
        ("mistral-window", T.MistralConfig(**BASE, num_key_value_heads=2, sliding_window=8),
         T.MistralForCausalLM, {"window": True}),
        ("qwen2-tied", T.Qwen2Config(**BASE, num_key_value_heads=2, tie_word_embeddings=True),
         T.Qwen2ForCausalLM, {}),
        ("phi3", T.Phi3Config(**BASE, num_key_value_heads=4, pad_token_id=0, sliding_window=None),
         T.Phi3ForCausalLM, {}),
        ("phi2", T.PhiConfig(**BASE, num_key_value_heads=4, partial_rotary_factor=0.5),
         T.PhiForCausalLM, {}),
        ("llama-spm", T.LlamaConfig(**BASE, num_key_value_heads=2),
         T.LlamaForCausalLM, {"spm": True}),
        ("phi3-spm", T.Phi3Config(**BASE, num_key_value_heads=4, pad_token_id=0,
                                  sliding_window=None),
         T.Phi3ForCausalLM, {"spm": True}),
        ("llama-bf16", T.LlamaConfig(**BASE, num_key_value_heads=2),
         T.LlamaForCausalLM, {"dtype": torch.bfloat16}),
        ("qwen2-sharded", T.Qwen2Config(**BASE, num_key_value_heads=2, tie_word_embeddings=False),
         T.Qwen2ForCausalLM, {"shard": "100KB"}),
    ]


def train_tokenizer():
    """A small byte-level BPE trained by Hugging Face tokenizers on the
    conformance prompts: a genuine tokenizer.json for the checkpoints."""
    corpus = []
    for name in sorted(os.listdir(os.path.join(HERE, "prompts"))):  # the conformance prompts
        with open(os.path.join(HERE, "prompts", name), encoding="utf-8") as f:
            corpus.append(f.read())
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=SPECIAL,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL[0],
                                                eos_token=SPECIAL[0])


def randomize(model, generator):
    """Weights with structure: matrices ~ N(0, 1/in), embeddings ~ N(0, 1),
    norm scales ~ 1 + N(0, 0.05), biases ~ N(0, 0.1)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                std = 1.0 if "embed" in name else 1.0 / math.sqrt(p.shape[1])
                p.copy_(torch.randn(p.shape, generator=generator) * std)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.05 * torch.randn(p.shape, generator=generator))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=generator))


SPM_VOCAB = 512


def train_sentencepiece(model_dir):
    """A Llama-style SentencePiece BPE tokenizer.model (Debian's spm_train)."""
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as out:
            for path in sorted(glob.glob(os.path.join(HERE, "prompts", "*.txt"))):
                with open(path, encoding="utf-8") as f:
                    out.write(f.read() + "\n")
        subprocess.run([shutil.which("spm_train") or "spm_train", f"--input={corpus}",
                        f"--model_prefix={os.path.join(tmp, 'tokenizer')}",
                        f"--vocab_size={SPM_VOCAB}", "--model_type=bpe", "--byte_fallback=true",
                        "--character_coverage=0.9995", "--normalization_rule_name=identity",
                        "--remove_extra_whitespaces=false", "--add_dummy_prefix=true",
                        "--split_digits=true", "--minloglevel=2",
                        # As Phi-3's vocabulary has them (llama.cpp looks them up
                        # for models named phi3).
                        "--user_defined_symbols=<|endoftext|>,<|end|>,<|user|>,<|assistant|>"],
                       check=True, capture_output=True)
        os.makedirs(model_dir, exist_ok=True)
        shutil.copy(os.path.join(tmp, "tokenizer.model"), model_dir)


def save_case(name, config, cls, opts, seed, tokenizer, out_dir):
    """Writes checkpoint `name` into out_dir/name; returns its directory and
    the torch generator, seeded, for the caller's prompts."""
    generator = torch.Generator().manual_seed(seed)
    if opts.get("spm"):  # SentencePiece ids: <unk> 0, <s> 1, </s> 2
        config.vocab_size, config.bos_token_id, config.eos_token_id = SPM_VOCAB, 1, 2
    else:
        config.vocab_size = len(tokenizer)
        config.eos_token_id = tokenizer.eos_token_id
        config.bos_token_id = tokenizer.bos_token_id
    config._attn_implementation = "eager"
    model = cls(config).eval()
    randomize(model, generator)
    if model.config.tie_word_embeddings:
        model.tie_weights()
    model_dir = os.path.join(out_dir, name)
    dtype = opts.get("dtype", torch.float32)
    model.to(dtype).save_pretrained(model_dir, safe_serialization=True,
                                    max_shard_size=opts.get("shard", "10GB"))
    if opts.get("spm"):
        train_sentencepiece(model_dir)
    else:
        tokenizer.save_pretrained(model_dir)
    return model_dir, generator


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--only", action="append", help="case names to write (default: all)")
    args = ap.parse_args()
    transformers.logging.set_verbosity_error()
    tokenizer = train_tokenizer()
    for seed, (name, config, cls, opts) in enumerate(cases()):
        if args.only and name not in args.only:
            continue
        model_dir, _ = save_case(name, config, cls, opts, seed + 1, tokenizer, args.out_dir)
        print(model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
