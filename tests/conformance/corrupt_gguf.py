#!/usr/bin/env python3
"""Corrupt models must be refused cleanly by the llorch CLI.

  tools/venv-python tests/conformance/corrupt_gguf.py build/bin/llorch [--keep DIR]

Writes a small valid random model with tools/make-test-model.py, fabricates
corrupt variants of it in a temporary directory (truncations, bad magic,
unknown tensor type, a tensor whose shape contradicts the metadata, missing
keys and tensors, impossible hyper-parameters), and runs

  llorch inspect --model F
  llorch run --model F --prompt hi --max-tokens 1

on each. Every run must exit with status 2 (not a signal), print exactly one
line on stderr, and name the file in it. The valid model itself must pass both
commands with status 0, so that a broken command line cannot pass as "refused".
Exit status: 0 if every check passed, 1 otherwise.
"""
import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import gguf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAKE_TEST_MODEL = os.path.join(REPO, "tools", "make-test-model.py")
TIMEOUT_S = 120


def make_base(path):
    subprocess.run([sys.executable, MAKE_TEST_MODEL, "--out", path, "--type", "f32",
                    "--layers", "2", "--hidden", "64", "--heads", "4", "--kv-heads", "2",
                    "--ffn", "128", "--quiet"], check=True)


def field_value(field):
    """(value, type, sub_type) of a GGUFReader field for GGUFWriter.add_key_value."""
    vtype = field.types[0]
    if vtype == gguf.GGUFValueType.ARRAY:
        sub_type = field.types[1]
        if sub_type == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]) for i in field.data], vtype, sub_type
        return [field.parts[i].tolist()[0] for i in field.data], vtype, sub_type
    if vtype == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]), vtype, None
    return field.parts[field.data[0]].tolist()[0], vtype, None


def rewrite(base, out, drop_keys=(), set_keys=None, drop_tensors=(), replace_tensors=None):
    """Re-writes `base` with gguf.GGUFWriter, with keys/tensors dropped or changed.
    set_keys: {key: (value, GGUFValueType)}; replace_tensors: {name: float32 array
    in numpy order}."""
    reader = gguf.GGUFReader(base)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    writer = gguf.GGUFWriter(out, arch=arch)
    set_keys = set_keys or {}
    replace_tensors = replace_tensors or {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture" or name in drop_keys:
            continue
        if name in set_keys:
            continue
        value, vtype, sub_type = field_value(field)
        writer.add_key_value(name, value, vtype, sub_type=sub_type)
    for name, (value, vtype) in set_keys.items():
        writer.add_key_value(name, value, vtype)
    for t in reader.tensors:
        if t.name in drop_tensors:
            continue
        if t.name in replace_tensors:
            writer.add_tensor(t.name, replace_tensors[t.name].astype(np.float32))
        elif t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            writer.add_tensor(t.name, np.array(t.data))
        else:
            writer.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def patch_tensor_type(data, name, new_type):
    encoded = name.encode()
    at = data.index(struct.pack("<Q", len(encoded)) + encoded) + 8 + len(encoded)
    n_dims = struct.unpack_from("<I", data, at)[0]
    struct.pack_into("<I", data, at + 4 + 8 * n_dims, new_type)


def fabricate(base, out_dir):
    """Writes the corrupt variants; returns {name: path}."""
    with open(base, "rb") as f:
        original = f.read()
    reader = gguf.GGUFReader(base)
    hidden = int(reader.fields["llama.embedding_length"].parts[-1][0])
    layers = int(reader.fields["llama.block_count"].parts[-1][0])
    models = {}

    def write(name, data):
        path = os.path.join(out_dir, name + ".gguf")
        with open(path, "wb") as f:
            f.write(data)
        models[name] = path

    def rewritten(name, **changes):
        path = os.path.join(out_dir, name + ".gguf")
        rewrite(base, path, **changes)
        models[name] = path

    write("truncated_header", original[:100])
    write("truncated_data", original[:len(original) // 2])
    data_end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    write("truncated_last_byte", original[:data_end - 1])
    write("empty", b"")
    write("bad_magic", b"GGML" + original[4:])
    write("version_1", original[:4] + struct.pack("<I", 1) + original[8:])
    unknown = bytearray(original)
    patch_tensor_type(unknown, "blk.0.attn_q.weight", 99)
    write("unknown_tensor_type", bytes(unknown))
    rewritten("wrong_attn_q_shape", replace_tensors={
        "blk.0.attn_q.weight": np.zeros((hidden - 32, hidden), np.float32)})
    rewritten("wrong_token_embd_width", replace_tensors={
        "token_embd.weight": np.zeros((100, hidden + 32), np.float32)})
    rewritten("missing_block_count", drop_keys=("llama.block_count",))
    rewritten("missing_embedding_length", drop_keys=("llama.embedding_length",))
    rewritten("missing_tensor", drop_tensors=("blk.1.ffn_down.weight",))
    rewritten("missing_output_norm", drop_tensors=("output_norm.weight",))
    rewritten("zero_heads", set_keys={
        "llama.attention.head_count": (0, gguf.GGUFValueType.UINT32)})
    rewritten("heads_not_dividing_hidden", set_keys={
        "llama.attention.head_count": (hidden - 1, gguf.GGUFValueType.UINT32)})
    rewritten("block_count_too_large", set_keys={
        "llama.block_count": (layers + 1, gguf.GGUFValueType.UINT32)})
    rewritten("block_count_huge", set_keys={
        "llama.block_count": (1 << 31, gguf.GGUFValueType.UINT32)})
    rewritten("block_count_wrong_type", set_keys={
        "llama.block_count": ("two", gguf.GGUFValueType.STRING)})
    return models


def run_cli(binary, command, model):
    argv = [binary, command, "--model", model]
    if command == "run":
        argv += ["--prompt", "hi", "--max-tokens", "1"]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, "", f"timed out after {TIMEOUT_S} s"
    return proc.returncode, proc.stdout.decode(errors="replace"), \
        proc.stderr.decode(errors="replace")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", help="path of the llorch CLI (build/bin/llorch)")
    parser.add_argument("--keep", help="write the models here and keep them")
    args = parser.parse_args()
    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary}: not an executable")

    out_dir = args.keep or tempfile.mkdtemp(prefix="llorch_corrupt_gguf.")
    os.makedirs(out_dir, exist_ok=True)
    failures = 0
    try:
        base = os.path.join(out_dir, "valid.gguf")
        make_base(base)
        for command in ("inspect", "run"):
            rc, _, err = run_cli(binary, command, base)
            ok = rc == 0
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} valid model, {command}: exit {rc}"
                  + ("" if ok else f", stderr: {err.strip()!r}"))
        for name, path in fabricate(base, out_dir).items():
            for command in ("inspect", "run"):
                rc, _, err = run_cli(binary, command, path)
                lines = err.rstrip("\n").split("\n") if err.strip() else []
                problems = []
                if rc is None:
                    problems.append(err)
                elif rc < 0:
                    problems.append(f"killed by signal {-rc}")
                elif rc != 2:
                    problems.append(f"exit {rc}, wanted 2")
                if len(lines) != 1:
                    problems.append(f"{len(lines)} stderr lines, wanted 1")
                if path not in err:
                    problems.append("stderr does not name the file")
                failures += bool(problems)
                status = "ok  " if not problems else "FAIL"
                detail = "; ".join(problems)
                print(f"{status} {name}, {command}: exit {rc}"
                      + (f" ({detail})" if detail else "")
                      + f" | {lines[0] if lines else ''}"[:300])
    finally:
        if not args.keep:
            shutil.rmtree(out_dir, ignore_errors=True)
    print(f"{failures} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
