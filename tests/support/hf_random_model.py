"""Random-weight Hugging Face model directories around a genuine tokenizer.

make_hf_model(out_dir, tokenizer_dir, seed) writes a small LlamaForCausalLM
(config.json, model.safetensors) next to copies of tokenizer_dir's
tokenizer.json and tokenizer_config.json: a model llorch reads as a directory
whose text behaviour is the real tokenizer's. Needs numpy and safetensors.
"""
import json
import os

import numpy as np
import safetensors.numpy


def token_ids(tokenizer_json):
    """Token text -> id over the BPE vocabulary and the added tokens."""
    with open(tokenizer_json, encoding="utf-8") as f:
        tok = json.load(f)
    ids = dict(tok["model"]["vocab"])
    for added in tok.get("added_tokens", []):
        ids[added["content"]] = added["id"]
    return ids


def make_hf_model(out_dir, tokenizer_dir, seed):
    """A random-weight LlamaForCausalLM directory around a genuine tokenizer."""
    if os.path.exists(os.path.join(out_dir, "model.safetensors")):
        return
    os.makedirs(out_dir, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        with open(os.path.join(tokenizer_dir, name), "rb") as src, \
                open(os.path.join(out_dir, name), "wb") as dst:
            dst.write(src.read())
    ids = token_ids(os.path.join(tokenizer_dir, "tokenizer.json"))
    vocab = max(ids.values()) + 1
    hidden, ffn, heads, kv_heads, layers = 64, 128, 4, 2, 2
    head_dim = hidden // heads
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": hidden, "intermediate_size": ffn, "num_hidden_layers": layers,
              "num_attention_heads": heads, "num_key_value_heads": kv_heads,
              "vocab_size": vocab, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
              "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": True,
              "torch_dtype": "float32"}
    config_tok = json.load(open(os.path.join(tokenizer_dir, "tokenizer_config.json")))
    for key in ("bos_token", "eos_token"):
        text = config_tok.get(key)
        text = text.get("content") if isinstance(text, dict) else text
        if text is not None and text in ids:
            config[f"{key}_id"] = ids[text]
    json.dump(config, open(os.path.join(out_dir, "config.json"), "w"), indent=1)
    rng = np.random.default_rng(seed)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    tensors = {"model.embed_tokens.weight": w(vocab, hidden),
               "model.norm.weight": np.ones(hidden, np.float32)}
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors.update({
            p + "input_layernorm.weight": np.ones(hidden, np.float32),
            p + "post_attention_layernorm.weight": np.ones(hidden, np.float32),
            p + "self_attn.q_proj.weight": w(heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": w(kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": w(kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": w(hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": w(ffn, hidden),
            p + "mlp.up_proj.weight": w(ffn, hidden),
            p + "mlp.down_proj.weight": w(hidden, ffn),
        })
    safetensors.numpy.save_file(tensors, os.path.join(out_dir, "model.safetensors"),
                                metadata={"format": "pt"})
