#!/usr/bin/env python3
"""Test data for gguf_test, written with llama.cpp's own GGUF code (gguf-py).

  testdata_gen.py files OUT_DIR
      Writes GGUF files with gguf.GGUFWriter plus JSON/raw-float32 references:
        metadata.gguf + metadata.json   one key of every value type (nested arrays too)
        tensors.gguf  + tensors.json    tensors of each type; <name>.f32 holds the
                                        float32 values from gguf.quants.dequantize
        aligned64.gguf                  general.alignment = 64
        corrupt/*.gguf + corrupt/manifest.json   patched copies and the status
                                        code / message fragment each must produce
        quant_sizes.json                gguf.GGML_QUANT_SIZES (name: [number, block, bytes])
  testdata_gen.py describe MODEL OUT_DIR
      Dumps what gguf.GGUFReader sees in MODEL (metadata, tensor directory) to
      OUT_DIR/describe.json, and dequantised references of a few tensors.
"""
import json
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT


def f32(x):
    """The double that a float32 written by the writer reads back as."""
    return float(np.float32(x))


def write_metadata(out_dir):
    w = gguf.GGUFWriter(os.path.join(out_dir, "metadata.gguf"), arch="testarch")
    expected = {"general.architecture": {"type": "STRING", "value": "testarch"}}

    def add(key, value, vtype, sub_type=None, expect=None):
        w.add_key_value(key, value, vtype, sub_type=sub_type)
        entry = {"type": vtype.name, "value": value if expect is None else expect}
        if vtype == VT.ARRAY:
            element_type = sub_type if sub_type is not None else VT.get_type(value[0])
            entry["array_type"] = element_type.name
        expected[key] = entry

    add("t.u8", 255, VT.UINT8)
    add("t.i8", -128, VT.INT8)
    add("t.u16", 65535, VT.UINT16)
    add("t.i16", -32768, VT.INT16)
    add("t.u32", 4294967295, VT.UINT32)
    add("t.i32", -2147483648, VT.INT32)
    add("t.u64", 18446744073709551615, VT.UINT64)
    add("t.u64_small", 12345, VT.UINT64)
    add("t.i64", -9223372036854775808, VT.INT64)
    add("t.f32", 0.1, VT.FLOAT32, expect=f32(0.1))
    add("t.f32_tiny", 1e-40, VT.FLOAT32, expect=f32(1e-40))  # float32 subnormal
    add("t.f64", 0.1, VT.FLOAT64)
    add("t.f64_big", -1.5e300, VT.FLOAT64)
    add("t.bool_true", True, VT.BOOL)
    add("t.bool_false", False, VT.BOOL)
    add("t.str", "h\u00e9llo \u2603 \U0001f999 with\u0000nul", VT.STRING)
    add("t.str_empty", "", VT.STRING)
    for sub, values in [
        (VT.UINT8, [0, 1, 255]), (VT.INT8, [-128, 0, 127]),
        (VT.UINT16, [0, 65535]), (VT.INT16, [-32768, 32767]),
        (VT.UINT32, [0, 4294967295]), (VT.INT32, [-2147483648, 7]),
        (VT.UINT64, [0, 18446744073709551615]),
        (VT.INT64, [-9223372036854775808, 9223372036854775807]),
        (VT.BOOL, [True, False, True]), (VT.STRING, ["a", "", "\u00fcber"]),
    ]:
        add(f"t.arr_{sub.name.lower()}", values, VT.ARRAY, sub_type=sub)
    add("t.arr_float32", [0.5, -1.25, 3.3], VT.ARRAY, sub_type=VT.FLOAT32,
        expect=[f32(v) for v in [0.5, -1.25, 3.3]])
    add("t.arr_float64", [0.1, -2.5e-300], VT.ARRAY, sub_type=VT.FLOAT64)
    big = list(range(-5000, 5000, 3))
    add("t.arr_int32_big", big, VT.ARRAY, sub_type=VT.INT32)
    # Arrays of arrays: each inner array carries its own element type and count.
    add("t.arr_nested", [[1, 2, 3], [4], [5, 6]], VT.ARRAY)
    add("t.arr_nested_str", [["x", "yz"], ["w"]], VT.ARRAY)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(os.path.join(out_dir, "metadata.json"), "w") as f:
        json.dump(expected, f)


def random_k_quant_blocks(rng, qtype, num_blocks):
    """Random K-quant blocks whose float16 scale fields are finite and sane."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(num_blocks, type_size), dtype=np.uint8)
    # Byte offsets of the ggml_half fields in ggml's block_* structs.
    half_fields = {QT.Q2_K: [80, 82], QT.Q3_K: [108], QT.Q4_K: [0, 2],
                   QT.Q5_K: [0, 2], QT.Q6_K: [208]}[qtype]
    for off in half_fields:
        scales = rng.uniform(-0.1, 0.1, size=num_blocks).astype(np.float16)
        blocks[:, off:off + 2] = scales.view(np.uint8).reshape(num_blocks, 2)
    return blocks


def write_tensors(out_dir, rng):
    path = os.path.join(out_dir, "tensors.gguf")
    w = gguf.GGUFWriter(path, arch="testarch")
    manifest = []

    def add(name, qtype, data, shape_numpy, reference):
        # shape_numpy is numpy order (rows last-dim fastest); GGUF stores it
        # reversed, which is what the C++ side sees as shape[0] = row length.
        if qtype in (QT.F32, QT.F16):
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, data, raw_dtype=qtype)
        reference.astype("<f4").tofile(os.path.join(out_dir, name + ".f32"))
        manifest.append({"name": name, "type": qtype.name,
                         "shape": list(reversed(shape_numpy))})

    x = rng.standard_normal((4, 64)).astype(np.float32)
    add("f32", QT.F32, x, x.shape, x)
    x3 = rng.standard_normal((2, 3, 32)).astype(np.float32)
    add("f32_3d", QT.F32, x3, x3.shape, x3)
    x4 = rng.standard_normal((2, 1, 3, 8)).astype(np.float32)
    add("f32_4d", QT.F32, x4, x4.shape, x4)
    # Every float16 and bfloat16 bit pattern: subnormals, infinities, NaNs.
    halves = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    h = halves.view(np.float16).reshape(256, 256)
    add("f16_all", QT.F16, h, h.shape, h.astype(np.float32))
    b = halves.reshape(256, 256).view(np.uint8).reshape(256, 512)
    add("bf16_all", QT.BF16, b, (256, 256), gguf.quants.dequantize(b, QT.BF16))
    for qtype in (QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1):
        values = (rng.standard_normal((8, 256)) * 0.05).astype(np.float32)
        values[0, :32] = 0  # an all-zero block (scale 0)
        q = gguf.quants.quantize(values, qtype)
        add(qtype.name.lower(), qtype, q, values.shape, gguf.quants.dequantize(q, qtype))
    for qtype in (QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K):
        q = random_k_quant_blocks(rng, qtype, 6).reshape(3, -1)
        shape = (3, 2 * 256)
        add(qtype.name.lower(), qtype, q, shape, gguf.quants.dequantize(q, qtype))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(os.path.join(out_dir, "tensors.json"), "w") as f:
        json.dump(manifest, f)


def write_aligned64(out_dir, rng):
    w = gguf.GGUFWriter(os.path.join(out_dir, "aligned64.gguf"), arch="testarch")
    w.add_custom_alignment(64)
    for name, n in [("a", 3), ("b", 40), ("c", 5)]:
        x = rng.standard_normal(n).astype(np.float32)
        w.add_tensor(name, x)
        x.tofile(os.path.join(out_dir, "aligned64_" + name + ".f32"))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_patch_base(path, extra=None):
    """A small valid file whose fields the corrupt variants patch."""
    w = gguf.GGUFWriter(path, arch="testarch")
    w.add_uint32("dup.key1", 1)
    w.add_uint32("dup.key2", 2)
    w.add_array("some.array", [1, 2, 3])
    if extra:
        extra(w)
    w.add_tensor("tensor_one", gguf.quants.quantize(np.ones((2, 64), np.float32), QT.Q8_0),
                 raw_dtype=QT.Q8_0)
    w.add_tensor("tensor_two", np.ones((3, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(path, "rb") as f:
        return bytearray(f.read())


def tensor_field_offsets(data, name):
    """Offsets of (n_dims, dims[0], type, offset) in the tensor-info entry of `name`."""
    encoded = name.encode()
    at = data.index(struct.pack("<Q", len(encoded)) + encoded) + 8 + len(encoded)
    n_dims = struct.unpack_from("<I", data, at)[0]
    return at, at + 4, at + 4 + 8 * n_dims, at + 4 + 8 * n_dims + 4


def key_offset(data, key):
    """Offset of the length field of metadata key `key`."""
    encoded = key.encode()
    return data.index(struct.pack("<Q", len(encoded)) + encoded)


def write_corrupt(out_dir):
    corrupt_dir = os.path.join(out_dir, "corrupt")
    os.makedirs(corrupt_dir, exist_ok=True)
    base = write_patch_base(os.path.join(corrupt_dir, "base.gguf"))
    manifest = []

    def variant(name, code, contains, patch=None, data=None):
        d = bytearray(base) if data is None else data
        if patch:
            patch(d)
        with open(os.path.join(corrupt_dir, name), "wb") as f:
            f.write(d)
        manifest.append({"file": name, "code": code, "contains": contains})

    n_dims_at, dim0_at, type_at, offset_at = tensor_field_offsets(base, "tensor_one")
    two = tensor_field_offsets(base, "tensor_two")
    variant("unknown_type.gguf", "INVALID_ARGUMENT", "99",
            lambda d: struct.pack_into("<I", d, type_at, 99))
    variant("removed_type.gguf", "INVALID_ARGUMENT", "tensor_one",
            lambda d: struct.pack_into("<I", d, type_at, 4))  # Q4_2, removed
    variant("five_dims.gguf", "INVALID_ARGUMENT", "dimensions",
            lambda d: struct.pack_into("<I", d, n_dims_at, 5))
    variant("not_block_multiple.gguf", "INVALID_ARGUMENT", "block size",
            lambda d: struct.pack_into("<Q", d, dim0_at, 48))
    variant("misaligned_offset.gguf", "INVALID_ARGUMENT", "alignment",
            lambda d: struct.pack_into("<Q", d, two[3], 8))
    variant("data_past_eof.gguf", "DATA_LOSS", "tensor_two",
            lambda d: struct.pack_into("<Q", d, two[3], 1 << 20))
    variant("absurd_offset.gguf", "DATA_LOSS", "tensor_two",
            lambda d: struct.pack_into("<Q", d, two[3], (1 << 64) - 32))
    # tensor_one (Q8_0, 2 x 64) fills bytes [0, 136) of the data section.
    variant("overlapping_tensors.gguf", "INVALID_ARGUMENT", "overlap",
            lambda d: struct.pack_into("<Q", d, two[3], 128))
    variant("same_offset_tensors.gguf", "INVALID_ARGUMENT", "overlap",
            lambda d: struct.pack_into("<Q", d, two[3], 0))
    variant("huge_dims.gguf", "INVALID_ARGUMENT", "tensor_two",
            lambda d: struct.pack_into("<Q", d, two[1], 1 << 62))
    variant("dup_tensor.gguf", "INVALID_ARGUMENT", "duplicate tensor",
            lambda d: d.__setitem__(slice(two[0] - 3, two[0]), b"one"))
    k2 = key_offset(base, "dup.key2")
    variant("dup_key.gguf", "INVALID_ARGUMENT", "duplicate metadata key",
            lambda d: d.__setitem__(slice(k2 + 8 + 7, k2 + 8 + 8), b"1"))
    variant("huge_key_length.gguf", "INVALID_ARGUMENT", "implausible",
            lambda d: struct.pack_into("<Q", d, k2, 1 << 60))
    variant("key_length_past_eof.gguf", "DATA_LOSS", "truncated",
            lambda d: struct.pack_into("<Q", d, k2, 1 << 30))
    variant("bad_value_type.gguf", "INVALID_ARGUMENT", "unknown value type",
            lambda d: struct.pack_into("<I", d, k2 + 8 + 8, 13))
    arr = key_offset(base, "some.array") + 8 + len("some.array") + 4
    variant("bad_array_type.gguf", "INVALID_ARGUMENT", "element type",
            lambda d: struct.pack_into("<I", d, arr, 77))
    variant("huge_array.gguf", "INVALID_ARGUMENT", "implausible",
            lambda d: struct.pack_into("<Q", d, arr + 4, 1 << 62))
    variant("huge_tensor_count.gguf", "INVALID_ARGUMENT", "implausible",
            lambda d: struct.pack_into("<Q", d, 8, 1 << 60))
    variant("huge_kv_count.gguf", "INVALID_ARGUMENT", "implausible",
            lambda d: struct.pack_into("<Q", d, 16, 1 << 60))
    variant("bad_magic.gguf", "INVALID_ARGUMENT", "bad magic",
            lambda d: d.__setitem__(slice(0, 4), b"GGML"))
    variant("version1.gguf", "INVALID_ARGUMENT", "version 1",
            lambda d: struct.pack_into("<I", d, 4, 1))
    variant("version4.gguf", "INVALID_ARGUMENT", "version 4",
            lambda d: struct.pack_into("<I", d, 4, 4))
    variant("big_endian_version.gguf", "INVALID_ARGUMENT", "big-endian",
            lambda d: struct.pack_into(">I", d, 4, 3))
    variant("empty.gguf", "DATA_LOSS", "truncated", data=bytearray())
    bad_alignment = write_patch_base(os.path.join(corrupt_dir, "tmp.gguf"),
                                     lambda w: w.add_uint32("general.alignment", 48))
    os.remove(os.path.join(corrupt_dir, "tmp.gguf"))
    variant("bad_alignment.gguf", "INVALID_ARGUMENT", "general.alignment",
            data=bad_alignment)
    with open(os.path.join(corrupt_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f)


def describe(model, out_dir):
    reader = gguf.GGUFReader(model)
    metadata = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue  # reader's pseudo-fields for the header
        vtype = field.types[0]
        entry = {"type": vtype.name}
        if vtype == VT.ARRAY:
            entry["array_type"] = field.types[1].name
            if len(field.types) > 2:
                entry["nested"] = True  # not expected in a model file
            elif field.types[1] == VT.STRING:
                entry["hex"] = [bytes(field.parts[i]).hex() for i in field.data]
            else:
                entry["value"] = [field.parts[i].tolist()[0] for i in field.data]
        elif vtype == VT.STRING:
            entry["hex"] = bytes(field.parts[field.data[0]]).hex()
        else:
            entry["value"] = field.parts[field.data[0]].tolist()[0]
        metadata[name] = entry
    tensors = []
    for t in reader.tensors:
        tensors.append({"name": t.name, "type": int(t.tensor_type),
                        "shape": [int(d) for d in t.shape],
                        "data_offset": int(t.data_offset), "n_bytes": int(t.n_bytes)})
    # Dequantised references of the first tensor of each type.
    references = {}
    for t in reader.tensors:
        type_name = t.tensor_type.name
        if type_name in references:
            continue
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype("<f4")
        file_name = "ref_" + type_name + ".f32"
        values.tofile(os.path.join(out_dir, file_name))
        references[type_name] = {"tensor": t.name, "file": file_name}
    with open(os.path.join(out_dir, "describe.json"), "w") as f:
        json.dump({"version": int(reader.fields["GGUF.version"].parts[-1][0]),
                   "alignment": reader.alignment, "data_offset": reader.data_offset,
                   "metadata": metadata, "tensors": tensors,
                   "references": references}, f)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "files":
        out_dir = sys.argv[2]
        rng = np.random.default_rng(1234)
        write_metadata(out_dir)
        write_tensors(out_dir, rng)
        write_aligned64(out_dir, rng)
        write_corrupt(out_dir)
        with open(os.path.join(out_dir, "quant_sizes.json"), "w") as f:
            json.dump({t.name: [int(t), b, n] for t, (b, n) in gguf.GGML_QUANT_SIZES.items()}, f)
    elif len(sys.argv) == 4 and sys.argv[1] == "describe":
        describe(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
