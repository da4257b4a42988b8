#!/usr/bin/env python3
"""tools/device-check.sh's summary: per batch size, llorch's model_bench
decode tok/s against transformers' (hf_generate_bench.py) from the same run,
and llorch's weight reads per second against the device's copy bandwidth,
with CUDA graphs on and off and llorch's CUDA kernels on and off where the
LLORCH files have them.
Usage: gpu_ratios.py LLORCH.jsonl [LLORCH2.jsonl ...] TRANSFORMERS.jsonl"""
import json
import sys


def main():
    ours = {}
    for path in sys.argv[1:-1]:
        for r in map(json.loads, open(path)):
            ours[(r.get("cuda_graphs", False), r.get("cuda_kernels", False), r["batch"])] = r
    peer = {r["batch"]: r for r in map(json.loads, open(sys.argv[-1]))}
    # The device's copy bandwidth: the same in every row of the peer's run.
    bandwidth = next((r["copy_bandwidth_gb_s"] for r in peer.values()), None)
    for graphs, kernels, batch in sorted(ours, reverse=True):
        o, p = ours[(graphs, kernels, batch)], peer.get(batch)
        line = (f"batch {batch}, CUDA graphs {'on' if graphs else 'off'}, "
                f"llorch's kernels {'on' if kernels else 'off'}: "
                f"llorch {o['decode_tok_s']:.1f} tok/s")
        if p:
            line += (f", transformers {p['decode_tok_s']:.1f} "
                     f"({o['decode_tok_s'] / p['decode_tok_s']:.2f}x)")
        if bandwidth:
            line += (f"; llorch's weight reads {o['weight_read_gb_s']:.0f} GB/s of the copy's "
                     f"{bandwidth:.0f} ({100 * o['weight_read_gb_s'] / bandwidth:.0f}%)")
        print(line)
    for batch in sorted(peer):
        steps = peer[batch].get("linear_only_steps_s")
        if steps:
            reads = peer[batch]["weight_bytes"] * steps / 1e9
            print(f"batch {batch}: the weight products alone (cuBLAS, one CUDA graph) "
                  f"{steps:.0f} steps/s, {reads:.0f} GB/s of weights "
                  f"({100 * reads / peer[batch]['copy_bandwidth_gb_s']:.0f}% of the copy's)")


if __name__ == "__main__":
    main()
