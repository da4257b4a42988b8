#!/usr/bin/env python3
"""tools/device-check.sh's summary: per batch size, llorch's model_bench
decode tok/s against transformers' (hf_generate_bench.py) from the same run,
and llorch's weight reads per second against the device's copy bandwidth.
Usage: gpu_ratios.py LLORCH.jsonl TRANSFORMERS.jsonl"""
import json
import sys


def main():
    ours = {r["batch"]: r for r in map(json.loads, open(sys.argv[1]))}
    peer = {r["batch"]: r for r in map(json.loads, open(sys.argv[2]))}
    for batch in sorted(ours):
        o, p = ours[batch], peer.get(batch)
        line = f"batch {batch}: llorch {o['decode_tok_s']:.1f} tok/s"
        if p:
            bandwidth = p["copy_bandwidth_gb_s"]
            line += (f", transformers {p['decode_tok_s']:.1f} "
                     f"({o['decode_tok_s'] / p['decode_tok_s']:.2f}x); llorch's weight reads "
                     f"{o['weight_read_gb_s']:.0f} GB/s of the copy's {bandwidth:.0f} "
                     f"({100 * o['weight_read_gb_s'] / bandwidth:.0f}%)")
        print(line)


if __name__ == "__main__":
    main()
