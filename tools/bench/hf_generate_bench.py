#!/usr/bin/env python3
"""Hugging Face transformers' generate as the GPU peer (issue 14): a random
TinyLlama-shaped LlamaForCausalLM (the shape of `make-test-model.py --shape
tinyllama`, vocabulary 32000, untied) in BF16 on one device, greedy, with
transformers' defaults (its attention implementation, its dynamic cache);
the same load as llorch's
`model_bench --prompt-tokens P --gen-tokens G --batch B`. One JSON line per
batch size: decode tokens/s of all jobs over the generated tokens after the
first (prefill timed apart), and the device's copy bandwidth measured in the
same process (bytes read + written per second by a large device-to-device
copy), the ceiling a decode step that reads every weight once can reach,
and on CUDA the steps per second of the model's weight products alone
(every nn.Linear once at that batch, cuBLAS, replayed as one CUDA graph):
what any engine built on these products can reach at best.

Usage: hf_generate_bench.py [--device cuda] [--batch 1,16,64] [--prompt-tokens 16]
                            [--gen-tokens 64]
"""
import argparse
import contextlib
import json
import time

import torch
import transformers


def copy_bandwidth(device):
    """Device memory bandwidth: bytes read plus written per second by a copy."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync(device)
    start, reps = time.perf_counter(), 20
    for _ in range(reps):
        dst.copy_(src)
    sync(device)
    return 2 * src.numel() * reps / (time.perf_counter() - start)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def linear_only_steps_per_s(model, device, batch):
    """Steps/s of every nn.Linear's product once per step, as one CUDA graph."""
    if not device.startswith("cuda"):
        return None
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = {w.shape[1]: torch.randn(batch, w.shape[1], device=device, dtype=w.dtype)
              for w in weights}

    def step():
        for w in weights:
            torch.nn.functional.linear(inputs[w.shape[1]], w)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    graph.replay()
    torch.cuda.synchronize()
    start, reps = time.perf_counter(), 50
    for _ in range(reps):
        graph.replay()
    torch.cuda.synchronize()
    return reps / (time.perf_counter() - start)


def timed_generate(model, ids, new_tokens, device):
    sync(device)
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
                         eos_token_id=None)
    sync(device)
    assert out.shape[1] == ids.shape[1] + new_tokens
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", default="1,16,64")
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--gen-tokens", type=int, default=64)
    args = ap.parse_args()
    config = transformers.LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                                      num_hidden_layers=22, num_attention_heads=32,
                                      num_key_value_heads=4, max_position_embeddings=2048,
                                      rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(0)
    # Built on the device where torch can (2.0 on), else moved there.
    on_device = torch.device(args.device) if hasattr(torch.device, "__enter__") \
        else contextlib.nullcontext()
    with on_device:
        model = transformers.LlamaForCausalLM(config)
    model = model.to(device=args.device, dtype=torch.bfloat16).eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bandwidth = copy_bandwidth(args.device)
    generator = torch.Generator().manual_seed(1)
    for batch in map(int, args.batch.split(",")):
        ids = torch.randint(0, config.vocab_size, (batch, args.prompt_tokens),
                            generator=generator).to(args.device)
        with torch.no_grad():
            timed_generate(model, ids, 2, args.device)  # warm-up
            prefill_s = timed_generate(model, ids, 1, args.device)
            total_s = timed_generate(model, ids, args.gen_tokens, args.device)
        decode_tok_s = batch * (args.gen_tokens - 1) / max(total_s - prefill_s, 1e-9)
        try:
            linear_steps = linear_only_steps_per_s(model, args.device, batch)
        except Exception as e:  # a figure less, not the run
            print(f"linear-only timing failed: {e}", flush=True)
            linear_steps = None
        print(json.dumps({
            "engine": "transformers", "transformers": transformers.__version__,
            "torch": torch.__version__, "device": args.device,
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else "",
            "dtype": "bf16", "batch": batch, "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens, "decode_tok_s": round(decode_tok_s, 1),
            "weight_bytes": weight_bytes, "copy_bandwidth_gb_s": round(bandwidth / 1e9, 1),
            "weight_read_gb_s": round(weight_bytes * decode_tok_s / batch / 1e9, 1),
            "linear_only_steps_s": linear_steps and round(linear_steps, 1)}),
            flush=True)


if __name__ == "__main__":
    main()
