#!/usr/bin/env python3
"""Writes a random-weight decoder as GGUF that llama.cpp (and llorch) load.

Architectures (--arch): llama; qwen2 (q/k/v biases); phi3 (fused attn_qkv and
gate+up ffn_up); phi2 (LayerNorm with biases, fused attn_qkv, GELU FFN,
parallel residual, partial rotary, output bias), laid out as llama.cpp's
converter writes them.

The weights are random, the tokenizer is real: tokenizer.* metadata is copied
from an existing GGUF (by default $LLORCH_DEFAULT_MODEL, SmolLM2's 49152-token
byte-level BPE), so prompts tokenize and the vocabulary size follows it.

Run with the project's pinned Python:
  tools/venv-python tools/make-test-model.py --out /tmp/tiny.gguf --type q8_0
  tools/venv-python tools/make-test-model.py --out /tmp/tl.gguf --shape tinyllama --type f32

Tensors are generated and written one at a time (GGUFWriter's tensor-info /
write_tensor_data streaming API), so even the ~4.7 GB F32 TinyLlama shape
needs well under 2 GB of RAM.
"""
import argparse
import math
import os
import sys
import time

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from gguf import LlamaFileType

WEIGHT_TYPES = {
    "f32": (QT.F32, LlamaFileType.ALL_F32),
    "f16": (QT.F16, LlamaFileType.MOSTLY_F16),
    "bf16": (QT.BF16, LlamaFileType.MOSTLY_BF16),
    "q8_0": (QT.Q8_0, LlamaFileType.MOSTLY_Q8_0),
    "q4_0": (QT.Q4_0, LlamaFileType.MOSTLY_Q4_0),
    "q4_1": (QT.Q4_1, LlamaFileType.MOSTLY_Q4_1),
}

ARCHS = ["llama", "qwen2", "phi3", "phi2"]

SHAPES = {
    # Defaults: a few-MB model that loads and runs in milliseconds.
    "tiny": dict(layers=2, hidden=64, heads=4, kv_heads=2, ffn=192, ctx=512, tied=True),
    # TinyLlama-1.1B's shape (separate output matrix like TinyLlama).
    "tinyllama": dict(layers=22, hidden=2048, heads=32, kv_heads=4, ffn=5632, ctx=2048,
                      tied=False),
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output .gguf path")
    p.add_argument("--arch", default="llama", choices=ARCHS)
    p.add_argument("--type", default="f32", choices=sorted(WEIGHT_TYPES),
                   help="type of the 2-D weight matrices (norms stay F32)")
    p.add_argument("--shape", default="tiny", choices=sorted(SHAPES),
                   help="preset for the options below (explicit options win)")
    p.add_argument("--layers", type=int)
    p.add_argument("--hidden", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--kv-heads", type=int)
    p.add_argument("--ffn", type=int)
    p.add_argument("--ctx", type=int)
    p.add_argument("--rope-base", type=float, default=10000.0)
    p.add_argument("--rms-eps", type=float, default=1e-5, help="norm epsilon")
    p.add_argument("--rope-dim", type=int, help="rotated dimensions per head (default: all; "
                   "phi2 default: half)")
    tied = p.add_mutually_exclusive_group()
    tied.add_argument("--tied", dest="tied", action="store_true", default=None,
                      help="no output.weight: logits use token_embd")
    tied.add_argument("--untied", dest="tied", action="store_false",
                      help="write a separate output.weight")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-from", default=os.environ.get("LLORCH_DEFAULT_MODEL"),
                   help="GGUF whose tokenizer.* metadata is copied "
                        "(default: $LLORCH_DEFAULT_MODEL)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    for key, value in SHAPES[args.shape].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.arch == "phi2" and args.tied:
        p.error("phi2 has a separate output matrix: use --untied")
    if args.arch == "phi3" and args.tied:
        p.error("llama.cpp's phi3 requires output.weight: use --untied")
    if args.rope_dim is None:
        head_dim = args.hidden // args.heads
        args.rope_dim = head_dim // 2 if args.arch == "phi2" else head_dim
    if not args.vocab_from:
        p.error("--vocab-from is required when LLORCH_DEFAULT_MODEL is not set "
                "(source tools/env.sh)")
    if args.hidden % args.heads:
        p.error(f"--hidden {args.hidden} is not a multiple of --heads {args.heads}")
    if args.heads % args.kv_heads:
        p.error(f"--heads {args.heads} is not a multiple of --kv-heads {args.kv_heads}")
    if (args.hidden // args.heads) % 2:
        p.error("the head dimension must be even for RoPE")
    block = gguf.GGML_QUANT_SIZES[WEIGHT_TYPES[args.type][0]][0]
    for name in ("hidden", "ffn"):
        if getattr(args, name) % block:
            p.error(f"--{name} {getattr(args, name)} is not a multiple of {args.type}'s "
                    f"block size {block}")
    return args


def field_value(field):
    """A GGUFReader field as (value, type, sub_type) for GGUFWriter.add_key_value.
    Strings stay bytes so that tokens are copied byte for byte."""
    vtype = field.types[0]
    if vtype == VT.ARRAY:
        sub_type = field.types[1]
        if len(field.types) > 2:
            raise ValueError(f"{field.name}: nested arrays are not copied")
        if sub_type == VT.STRING:
            return [bytes(field.parts[i]) for i in field.data], vtype, sub_type
        return [field.parts[i].tolist()[0] for i in field.data], vtype, sub_type
    if vtype == VT.STRING:
        return bytes(field.parts[field.data[0]]), vtype, None
    return field.parts[field.data[0]].tolist()[0], vtype, None


def copy_tokenizer(writer, vocab_path):
    reader = gguf.GGUFReader(vocab_path)
    vocab_size = None
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        value, vtype, sub_type = field_value(field)
        writer.add_key_value(name, value, vtype, sub_type=sub_type)
        if name == "tokenizer.ggml.tokens":
            vocab_size = len(value)
    if vocab_size is None:
        raise SystemExit(f"{vocab_path}: no tokenizer.ggml.tokens to copy")
    return vocab_size


def tensor_plan(args, vocab_size):
    """(name, numpy shape [rows, row_length], kind) in llama.cpp's order.
    kind is 'matrix' (std 1/sqrt(row_length)), 'norm' (1 + small noise) or
    'bias' (small noise); norms and biases stay F32."""
    head_dim = args.hidden // args.heads
    kv_dim = head_dim * args.kv_heads
    h, f = args.hidden, args.ffn
    plan = [("token_embd.weight", (vocab_size, h), "matrix")]
    for i in range(args.layers):
        b = f"blk.{i}."
        plan.append((b + "attn_norm.weight", (h,), "norm"))
        if args.arch == "phi2":
            plan.append((b + "attn_norm.bias", (h,), "bias"))
        if args.arch in ("phi3", "phi2"):
            plan.append((b + "attn_qkv.weight", (h + 2 * kv_dim, h), "matrix"))
            if args.arch == "phi2":
                plan.append((b + "attn_qkv.bias", (h + 2 * kv_dim,), "bias"))
        else:
            plan += [
                (b + "attn_q.weight", (h, h), "matrix"),
                (b + "attn_k.weight", (kv_dim, h), "matrix"),
                (b + "attn_v.weight", (kv_dim, h), "matrix"),
            ]
            if args.arch == "qwen2":
                plan += [(b + "attn_q.bias", (h,), "bias"), (b + "attn_k.bias", (kv_dim,), "bias"),
                         (b + "attn_v.bias", (kv_dim,), "bias")]
        plan.append((b + "attn_output.weight", (h, h), "matrix"))
        if args.arch == "phi2":
            plan += [
                (b + "attn_output.bias", (h,), "bias"),
                (b + "ffn_up.weight", (f, h), "matrix"),
                (b + "ffn_up.bias", (f,), "bias"),
                (b + "ffn_down.weight", (h, f), "matrix"),
                (b + "ffn_down.bias", (h,), "bias"),
            ]
            continue
        plan.append((b + "ffn_norm.weight", (h,), "norm"))
        if args.arch == "phi3":
            plan.append((b + "ffn_up.weight", (2 * f, h), "matrix"))  # gate rows, then up rows
        else:
            plan += [(b + "ffn_gate.weight", (f, h), "matrix"), (b + "ffn_up.weight", (f, h), "matrix")]
        plan.append((b + "ffn_down.weight", (h, f), "matrix"))
    plan.append(("output_norm.weight", (h,), "norm"))
    if args.arch == "phi2":
        plan.append(("output_norm.bias", (h,), "bias"))
    if not args.tied:
        plan.append(("output.weight", (vocab_size, h), "matrix"))
        if args.arch == "phi2":
            plan.append(("output.bias", (vocab_size,), "bias"))
    return plan


def stored(qtype, shape):
    """(numpy dtype, byte count) of a tensor as GGUFWriter stores it."""
    if qtype == QT.F32:
        return np.float32, 4 * math.prod(shape)
    if qtype == QT.F16:
        return np.float16, 2 * math.prod(shape)
    block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    return np.uint8, math.prod(shape) // block * block_bytes


def make_tensor(rng, shape, kind, qtype):
    if kind == "norm":
        return (1.0 + 0.05 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    if kind == "bias":
        return (0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    # Rows in chunks: quantising a 100M-element embedding at once would need
    # several GB of numpy temporaries.
    std = 1.0 / math.sqrt(shape[-1])
    dtype, nbytes = stored(qtype, shape)
    out = np.empty(nbytes // np.dtype(dtype).itemsize, dtype=dtype)
    rows_per_chunk = max(1, (1 << 22) // shape[-1])
    row_units = out.size // shape[0]
    for start in range(0, shape[0], rows_per_chunk):
        rows = min(rows_per_chunk, shape[0] - start)
        chunk = rng.standard_normal((rows, shape[-1]), dtype=np.float32) * np.float32(std)
        if qtype == QT.F16:
            chunk = chunk.astype(np.float16)
        elif qtype != QT.F32:
            chunk = gguf.quants.quantize(chunk, qtype)
        out[start * row_units:(start + rows) * row_units] = chunk.reshape(-1)
    return out.reshape(shape[0], row_units)


def main(argv):
    args = parse_args(argv)
    qtype, file_type = WEIGHT_TYPES[args.type]
    head_dim = args.hidden // args.heads
    started = time.time()

    writer = gguf.GGUFWriter(args.out, arch=args.arch)
    writer.add_name(f"llorch random {args.arch} ({args.shape}, {args.type}, seed {args.seed})")
    writer.add_block_count(args.layers)
    writer.add_context_length(args.ctx)
    writer.add_embedding_length(args.hidden)
    writer.add_feed_forward_length(args.ffn)
    writer.add_head_count(args.heads)
    writer.add_head_count_kv(args.kv_heads)
    writer.add_rope_freq_base(args.rope_base)
    if args.arch == "phi2":
        writer.add_layer_norm_eps(args.rms_eps)
    else:
        writer.add_layer_norm_rms_eps(args.rms_eps)
    writer.add_rope_dimension_count(args.rope_dim)
    writer.add_file_type(file_type)
    vocab_size = copy_tokenizer(writer, args.vocab_from)
    writer.add_vocab_size(vocab_size)

    plan = tensor_plan(args, vocab_size)
    for name, shape, kind in plan:
        tensor_type = qtype if kind == "matrix" else QT.F32
        dtype, nbytes = stored(tensor_type, shape)
        if tensor_type in (QT.F32, QT.F16):
            writer.add_tensor_info(name, shape, np.dtype(dtype), nbytes)
        else:  # quantised: GGUFWriter takes the byte shape, as for add_tensor
            byte_shape = (*shape[:-1], nbytes // math.prod(shape[:-1]))
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes,
                                   raw_dtype=tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()

    rng = np.random.default_rng(args.seed)
    params = 0
    for name, shape, kind in plan:
        tensor_type = qtype if kind == "matrix" else QT.F32
        writer.write_tensor_data(make_tensor(rng, shape, kind, tensor_type))
        params += math.prod(shape)
    writer.close()
    if not args.quiet:
        size = os.path.getsize(args.out)
        print(f"{args.out}: {params / 1e6:.1f}M parameters, {len(plan)} tensors, "
              f"{size / 1e6:.1f} MB, vocab {vocab_size}, {time.time() - started:.1f} s",
              file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
