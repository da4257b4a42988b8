#!/usr/bin/env python3
"""Corrupt models must be refused cleanly by the llorch CLI and worker.

  tools/venv-python tests/conformance/corrupt_gguf.py build/bin/llorch [--worker
      build/bin/llorch-worker] [--keep DIR] [--only SUBSTRING]

Writes a small valid random model with tools/make-test-model.py and a small
valid Hugging Face directory (config.json, tokenizer.json,
tokenizer_config.json, model.safetensors written byte by byte here), fabricates
corrupt variants of them in a temporary directory, and runs

  llorch inspect --model F
  llorch run --model F --prompt hi --max-tokens 1

on each. Every run must exit with status 2 (not a signal), print exactly one
line on stderr, name the file in it, and not be an "internal error" (an
exception such as std::bad_alloc that escaped the loader). The valid models
themselves must pass both commands (and `run --chat hi`) with status 0, so
that a broken command line cannot pass as "refused".

GGUF variants: truncations, bad magic and version, unknown tensor type,
shapes contradicting the metadata, missing keys and tensors, impossible
hyper-parameters; tensor data offsets past the end of the file, data running
past it, overlapping tensors, offsets off the alignment, bad general.alignment;
absurd dimensions (2^40, 5 or 2^32-1 of them, products past int64) and counts
(tensor_count, kv_count 2^40 and 2^60); a metadata array, string, key and
array element declaring 2^40 bytes; a named pipe. A chat template that is not Jinja: the
model still inspects and runs plain prompts, `run --chat` is refused naming
the template.

Hugging Face variants: bad JSON in config.json, tokenizer.json,
tokenizer_config.json and model.safetensors.index.json; config values of the
wrong type or absurd size (2^40 layers, a 2^31-wide llama3-scaled model);
SafeTensors with a header that is not JSON, a header length past the file,
data_offsets past the data, reversed or overlapping, an unknown dtype, a shape
that contradicts the byte range or overflows, truncated or empty files, a
named pipe; a broken chat template in tokenizer_config.json.

No giant allocation: every command runs with its address space limited to
AS_LIMIT (4 GiB; a healthy `llorch run` of the valid models peaks near 1 GiB
of virtual memory with --threads 2), so an attempt to allocate for an absurd
size fails loudly (std::bad_alloc -> "internal error", or a signal) instead of
passing.

With --worker, llorch-worker --model F must also exit with status 2 naming the
file for a sample of the variants, and refuse a --chat_template file that is
not Jinja. Exit status: 0 if every check passed, 1 otherwise.
"""
import argparse
import concurrent.futures
import json
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
AS_LIMIT = 4 << 30  # bytes of address space per command (see the docstring)
BAD_TEMPLATE = "{% for m in messages %}{{ m.content }"  # unclosed {{ ... }}


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


def rewrite(base, out, drop_keys=(), set_keys=None, drop_tensors=(), replace_tensors=None,
            alignment=None, add_tensors=None):
    """Re-writes `base` with gguf.GGUFWriter, with keys/tensors dropped or changed.
    set_keys: {key: (value, GGUFValueType)}; replace_tensors, add_tensors: {name:
    float32 array in numpy order}; alignment: general.alignment, honoured by the
    layout."""
    reader = gguf.GGUFReader(base)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    writer = gguf.GGUFWriter(out, arch=arch)
    if alignment is not None:
        writer.add_custom_alignment(alignment)
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
    for name, value in (add_tensors or {}).items():
        writer.add_tensor(name, value.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def patch_tensor_type(data, name, new_type):
    encoded = name.encode()
    at = data.index(struct.pack("<Q", len(encoded)) + encoded) + 8 + len(encoded)
    n_dims = struct.unpack_from("<I", data, at)[0]
    struct.pack_into("<I", data, at + 4 + 8 * n_dims, new_type)


# Fixed-size GGUF value types (GGUFValueType) and their sizes in bytes.
VALUE_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY = 8, 9


class Layout:
    """Where the fields of a GGUF v2/v3 file lie: magic, u32 version, u64
    tensor_count, u64 kv_count, the KVs (u64 key length + key, u32 type,
    value; strings u64 length + bytes; arrays u32 element type + u64 count +
    items), the tensor infos (u64 name length + name, u32 n_dims, u64
    dims[n_dims], u32 type, u64 offset), padding to general.alignment, data."""

    def __init__(self, data):
        self.data = bytes(data)
        at = 24
        self.kvs = {}  # key -> {"at": key length, "type": value type at, "value": value at}
        for _ in range(struct.unpack_from("<Q", data, 16)[0]):
            start = at
            key, at = self._string(at)
            vtype = struct.unpack_from("<I", data, at)[0]
            self.kvs[key.decode()] = {"at": start, "type": at, "value": at + 4}
            at = self._skip(at + 4, vtype)
            self.kvs[key.decode()]["end"] = at
        self.kv_end = at
        self.tensors = {}  # name -> positions ("at", "n_dims_at", "offset_at") and values
        for _ in range(struct.unpack_from("<Q", data, 8)[0]):
            start = at
            name, at = self._string(at)
            n_dims = struct.unpack_from("<I", data, at)[0]
            dims = list(struct.unpack_from(f"<{n_dims}Q", data, at + 4))
            at += 4 + 8 * n_dims
            ggml_type, offset = struct.unpack_from("<IQ", data, at)
            self.tensors[name.decode()] = {"at": start, "n_dims_at": start + 8 + len(name),
                                           "dims": dims, "ggml_type": ggml_type,
                                           "offset": offset, "offset_at": at + 4}
            at += 12
        self.header_end = at
        alignment = 32
        if "general.alignment" in self.kvs:
            alignment = struct.unpack_from("<I", data, self.kvs["general.alignment"]["value"])[0]
        self.alignment = alignment
        self.data_start = (at + alignment - 1) // alignment * alignment

    def _string(self, at):
        length = struct.unpack_from("<Q", self.data, at)[0]
        return self.data[at + 8:at + 8 + length], at + 8 + length

    def _skip(self, at, vtype):
        if vtype == STRING:
            return self._string(at)[1]
        if vtype == ARRAY:
            element_type, count = struct.unpack_from("<IQ", self.data, at)
            at += 12
            for _ in range(count):
                at = self._skip(at, element_type)
            return at
        return at + VALUE_SIZES[vtype]

    def rebuilt(self, change_tensor=None):
        """The file with the tensor infos re-encoded (change_tensor(name, info)
        may alter "dims" and "n_dims"), the data re-aligned after them."""
        out = bytearray(self.data[:self.kv_end])
        for name, info in self.tensors.items():
            info = dict(info)
            if change_tensor:
                change_tensor(name, info)
            dims = info["dims"]
            encoded = name.encode()
            out += struct.pack("<Q", len(encoded)) + encoded
            out += struct.pack("<I", info.get("n_dims", len(dims)))
            out += struct.pack(f"<{len(dims)}Q", *dims)
            out += struct.pack("<IQ", info["ggml_type"], info["offset"])
        out += bytes(-len(out) % self.alignment)
        return bytes(out + self.data[self.data_start:])


def patched(data, *patches):
    """A copy of `data` with struct.pack_into(fmt, at, value) applied for
    each (fmt, at, value)."""
    out = bytearray(data)
    for fmt, at, value in patches:
        struct.pack_into(fmt, out, at, value)
    return bytes(out)


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
    f32 = gguf.GGUFValueType.FLOAT32
    rewritten("rope_freq_base_zero", set_keys={"llama.rope.freq_base": (0.0, f32)})
    rewritten("rope_freq_base_nan", set_keys={"llama.rope.freq_base": (float("nan"), f32)})
    rewritten("rms_epsilon_negative", set_keys={
        "llama.attention.layer_norm_rms_epsilon": (-1e-5, f32)})
    rewritten("rope_scaling_factor_1e-45", set_keys={
        "llama.rope.scaling.type": ("linear", gguf.GGUFValueType.STRING),
        "llama.rope.scaling.factor": (1e-45, f32)})
    rewritten("rope_freq_base_string", set_keys={
        "llama.rope.freq_base": ("10000", gguf.GGUFValueType.STRING)})
    rewritten("rms_epsilon_string", set_keys={
        "llama.attention.layer_norm_rms_epsilon": ("1e-5", gguf.GGUFValueType.STRING)})
    rows_of = {t.name: int(t.data.shape[0]) for t in reader.tensors}  # numpy order: rows first
    q_rows, k_rows = rows_of["blk.0.attn_q.weight"], rows_of["blk.0.attn_k.weight"]
    if q_rows > 16:  # Q narrower and K wider by the same rows: the right total
        rewritten("q_narrower_k_wider", replace_tensors={
            "blk.0.attn_q.weight": np.zeros((q_rows - 16, hidden), np.float32),
            "blk.0.attn_k.weight": np.zeros((k_rows + 16, hidden), np.float32)})
    ffn = int(reader.fields["llama.feed_forward_length"].parts[-1][0])
    rewritten("gated_ffn_up_bias", add_tensors={"blk.0.ffn_up.bias": np.zeros(ffn, np.float32)})

    # Tensor data offsets (relative to the data section, a multiple of the
    # alignment) and the bytes they name.
    layout = Layout(original)
    assert layout.rebuilt() == original, "Layout misreads the base model"
    tensors = layout.tensors
    data_size = len(original) - layout.data_start
    biggest = max(tensors, key=lambda n: int(np.prod(tensors[n]["dims"])))
    past_end = (data_size + 31) // 32 * 32
    write("offset_past_end", patched(original, ("<Q", tensors["output_norm.weight"]["offset_at"],
                                                past_end)))
    write("offset_2pow60", patched(original, ("<Q", tensors["output_norm.weight"]["offset_at"],
                                              1 << 60)))
    write("offset_max", patched(original, ("<Q", tensors["output_norm.weight"]["offset_at"],
                                           (1 << 64) - 32)))
    write("data_runs_past_end", patched(original, ("<Q", tensors[biggest]["offset_at"],
                                                   past_end - 64)))
    write("tensors_same_offset", patched(original, (
        "<Q", tensors["blk.0.attn_k.weight"]["offset_at"],
        tensors["blk.0.attn_v.weight"]["offset"])))
    write("tensors_overlap", patched(original, (
        "<Q", tensors["output_norm.weight"]["offset_at"],
        tensors["token_embd.weight"]["offset"] + 1024)))
    write("offset_misaligned", patched(original, ("<Q", tensors["output_norm.weight"]["offset_at"],
                                                  tensors["output_norm.weight"]["offset"] + 16)))
    aligned64 = os.path.join(out_dir, "aligned64.gguf")
    rewrite(base, aligned64, alignment=64)
    with open(aligned64, "rb") as f:
        data64 = f.read()
    os.remove(aligned64)
    layout64 = Layout(data64)
    first = layout64.tensors["token_embd.weight"]  # moved by 32: aligned to 32, not to 64
    write("offset_misaligned_alignment_64", patched(data64, (
        "<Q", first["offset_at"], first["offset"] + 32)))
    rewritten("alignment_not_power_of_two", set_keys={
        "general.alignment": (48, gguf.GGUFValueType.UINT32)})
    rewritten("alignment_zero", set_keys={
        "general.alignment": (0, gguf.GGUFValueType.UINT32)})

    # Absurd dimensions and counts.
    embd = tensors["token_embd.weight"]
    write("dim_2pow40", patched(original, ("<Q", embd["n_dims_at"] + 4 + 8, 1 << 40)))
    write("dim_2pow63", patched(original, ("<Q", embd["n_dims_at"] + 4 + 8, 1 << 63)))

    def five_dims(name, info):
        if name == "output_norm.weight":
            info["dims"] = info["dims"] + [1, 1, 1, 1]
    write("n_dims_5", layout.rebuilt(five_dims))
    write("n_dims_2pow32_minus_1", patched(original, ("<I", embd["n_dims_at"], (1 << 32) - 1)))

    def overflowing(name, info):
        if name == "output_norm.weight":
            info["dims"] = [1 << 32, 1 << 32, 1 << 32]
    write("dims_product_overflows_int64", layout.rebuilt(overflowing))
    write("tensor_count_2pow40", patched(original, ("<Q", 8, 1 << 40)))
    write("tensor_count_2pow60", patched(original, ("<Q", 8, 1 << 60)))
    write("kv_count_2pow40", patched(original, ("<Q", 16, 1 << 40)))
    write("kv_count_2pow60", patched(original, ("<Q", 16, 1 << 60)))

    # Metadata that declares more bytes than the file has.
    kvs = layout.kvs
    tokens = kvs["tokenizer.ggml.tokens"]["value"]  # u32 element type, u64 count
    write("array_length_2pow40", patched(original, ("<Q", tokens + 4, 1 << 40)))
    write("array_length_2pow60", patched(original, ("<Q", tokens + 4, 1 << 60)))
    write("array_string_length_2pow40", patched(original, ("<Q", tokens + 12, 1 << 40)))
    write("string_length_2pow40", patched(original, ("<Q", kvs["general.name"]["value"],
                                                     1 << 40)))
    write("key_length_2pow40", patched(original, ("<Q", kvs["general.name"]["at"], 1 << 40)))
    # A named pipe is refused at once, not waited on for a writer.
    fifo = os.path.join(out_dir, "fifo.gguf")
    os.mkfifo(fifo)
    models["fifo"] = fifo
    return models


def fabricate_template_variants(base, out_dir):
    """A GGUF whose chat template is not Jinja: {name: path}."""
    path = os.path.join(out_dir, "bad_chat_template.gguf")
    rewrite(base, path, set_keys={
        "tokenizer.chat_template": (BAD_TEMPLATE, gguf.GGUFValueType.STRING)})
    return {"bad_chat_template": path}


def bytes_to_unicode():
    """GPT-2's byte -> printable character map (byte-level BPE tokens)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1))
                 + list(range(ord("\xae"), ord("\xff") + 1)))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def safetensors_bytes(tensors, header_changes=None):
    """A .safetensors file of float32 numpy arrays; header_changes(header)
    may edit the parsed header before it is written."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array, np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if header_changes:
        header_changes(header)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs)


HF_LAYERS, HF_HIDDEN, HF_FFN, HF_HEADS, HF_KV_HEADS = 2, 64, 128, 4, 2


def hf_files(vocab_size):
    """The files of a small valid Hugging Face llama directory: {name: bytes}
    (model.safetensors as numpy arrays, for safetensors_bytes)."""
    byte_chars = bytes_to_unicode()
    vocab = {byte_chars[b]: i for i, b in enumerate(sorted(byte_chars))}
    vocab["hi"] = len(vocab)
    special = ["<|im_start|>", "<|im_end|>"]
    added = [{"id": len(vocab) + i, "content": text, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True}
             for i, text in enumerate(special)]
    assert len(vocab) + len(added) == vocab_size
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                  "merges": ["h i"]}}
    template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tokenizer_config = {"add_bos_token": False, "bos_token": None, "eos_token": "<|im_end|>",
                        "chat_template": template, "tokenizer_class": "GPT2Tokenizer"}
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": HF_HIDDEN, "intermediate_size": HF_FFN,
              "num_hidden_layers": HF_LAYERS, "num_attention_heads": HF_HEADS,
              "num_key_value_heads": HF_KV_HEADS, "vocab_size": vocab_size,
              "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
              "hidden_act": "silu", "tie_word_embeddings": True, "torch_dtype": "float32",
              "eos_token_id": vocab_size - 1}
    rng = np.random.default_rng(0)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    head_dim = HF_HIDDEN // HF_HEADS
    weights = {"model.embed_tokens.weight": w(vocab_size, HF_HIDDEN),
               "model.norm.weight": np.ones(HF_HIDDEN, np.float32)}
    for i in range(HF_LAYERS):
        p = f"model.layers.{i}."
        weights.update({
            p + "input_layernorm.weight": np.ones(HF_HIDDEN, np.float32),
            p + "post_attention_layernorm.weight": np.ones(HF_HIDDEN, np.float32),
            p + "self_attn.q_proj.weight": w(HF_HEADS * head_dim, HF_HIDDEN),
            p + "self_attn.k_proj.weight": w(HF_KV_HEADS * head_dim, HF_HIDDEN),
            p + "self_attn.v_proj.weight": w(HF_KV_HEADS * head_dim, HF_HIDDEN),
            p + "self_attn.o_proj.weight": w(HF_HIDDEN, HF_HEADS * head_dim),
            p + "mlp.gate_proj.weight": w(HF_FFN, HF_HIDDEN),
            p + "mlp.up_proj.weight": w(HF_FFN, HF_HIDDEN),
            p + "mlp.down_proj.weight": w(HF_HIDDEN, HF_FFN),
        })
    return {"config.json": json.dumps(config, indent=1).encode(),
            "tokenizer.json": json.dumps(tokenizer, ensure_ascii=False).encode(),
            "tokenizer_config.json": json.dumps(tokenizer_config, indent=1).encode(),
            "model.safetensors": weights}


# What the one error line of these variants must also name.
REFUSAL_MENTIONS = {
    "fifo": "not a regular file",
    "hf_safetensors_fifo": "not a regular file",
    "hf_config_llama3_rope_equal_factors": "high_freq_factor",
    "hf_tokenizer_merges_not_a_list": "merges",
}


def fabricate_hf(out_dir):
    """Writes the valid Hugging Face directory ("hf_valid") and its corrupt
    variants; returns {name: directory}, the valid one first."""
    valid = hf_files(vocab_size=256 + 1 + 2)
    weights = valid["model.safetensors"]
    models = {}

    def directory(name, files=None, safetensors=None, drop=()):
        path = os.path.join(out_dir, name)
        os.makedirs(path, exist_ok=True)
        contents = dict(valid, **(files or {}))
        contents["model.safetensors"] = (safetensors if safetensors is not None
                                         else safetensors_bytes(weights))
        for file_name, data in contents.items():
            if file_name not in drop:
                with open(os.path.join(path, file_name), "wb") as f:
                    f.write(data)
        models[name] = path

    def config(**changes):
        c = json.loads(valid["config.json"])
        c.update(changes)
        return {"config.json": json.dumps(c).encode()}

    def header(change):
        return safetensors_bytes(weights, change)

    def set_entry(name, **fields):
        return lambda h: h[name].update(fields)

    embed, norm = "model.embed_tokens.weight", "model.norm.weight"
    q0, k0 = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"
    good = safetensors_bytes(weights)
    header_size = struct.unpack_from("<Q", good)[0]
    data_size = len(good) - 8 - header_size

    directory("hf_valid")
    directory("hf_config_bad_json", {"config.json": valid["config.json"][:-7]})
    directory("hf_config_not_an_object", {"config.json": b"[1, 2, 3]"})
    directory("hf_config_hidden_size_string", config(hidden_size="64"))
    directory("hf_config_head_dim_string", config(head_dim="sixteen"))
    directory("hf_config_rope_scaling_list", config(rope_scaling=["llama3", 8.0]))
    directory("hf_config_tie_embeddings_string", config(tie_word_embeddings="yes"))
    directory("hf_config_layers_2pow40", config(num_hidden_layers=1 << 40))
    directory("hf_config_huge_llama3_rope", config(
        hidden_size=1 << 31, num_attention_heads=1, num_key_value_heads=1,
        rope_scaling={"rope_type": "llama3", "factor": 8.0}))
    directory("hf_config_vocab_2pow40", config(vocab_size=1 << 40))
    # The blend between llama3's factors divides by high - low.
    directory("hf_config_llama3_rope_equal_factors", config(rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 2.0, "high_freq_factor": 2.0,
        "original_max_position_embeddings": 64}))
    tokenizer = json.loads(valid["tokenizer.json"])
    tokenizer["model"]["merges"] = "h i"
    directory("hf_tokenizer_merges_not_a_list",
              {"tokenizer.json": json.dumps(tokenizer, ensure_ascii=False).encode()})
    directory("hf_tokenizer_bad_json", {"tokenizer.json": valid["tokenizer.json"][:-1]})
    directory("hf_tokenizer_not_an_object", {"tokenizer.json": b"[]"})
    directory("hf_tokenizer_config_bad_json",
              {"tokenizer_config.json": valid["tokenizer_config.json"] + b"}"})
    directory("hf_index_bad_json", {"model.safetensors.index.json": b'{"weight_map": {'})
    directory("hf_safetensors_header_bad_json", safetensors=good[:8] + b"{" + b"x" * (
        header_size - 1) + good[8 + header_size:])
    directory("hf_safetensors_header_not_an_object", safetensors=struct.pack("<Q", 8) + b"[1, 2] "
              + b" " + good[8 + header_size:])
    directory("hf_safetensors_header_length_past_end",
              safetensors=struct.pack("<Q", len(good) - 7) + good[8:])
    directory("hf_safetensors_header_length_2pow63",
              safetensors=struct.pack("<Q", 1 << 63) + good[8:])
    directory("hf_safetensors_offsets_past_end",
              safetensors=header(set_entry(norm, data_offsets=[data_size - 256, data_size + 4])))
    directory("hf_safetensors_offsets_2pow63", safetensors=header(
        set_entry(norm, data_offsets=[1 << 63, (1 << 63) + 256])))
    directory("hf_safetensors_offsets_reversed", safetensors=header(lambda h: h[norm].update(
        data_offsets=list(reversed(h[norm]["data_offsets"])))))
    directory("hf_safetensors_overlap", safetensors=header(lambda h: h[k0].update(
        data_offsets=[h[q0]["data_offsets"][0],
                      h[q0]["data_offsets"][0] + 4 * int(np.prod(h[k0]["shape"]))])))
    directory("hf_safetensors_dtype_unknown", safetensors=header(set_entry(norm, dtype="F7")))
    directory("hf_safetensors_dtype_not_a_string", safetensors=header(set_entry(norm, dtype=4)))
    directory("hf_safetensors_shape_mismatch", safetensors=header(set_entry(norm, shape=[65])))
    directory("hf_safetensors_shape_2pow40", safetensors=header(
        set_entry(embed, shape=[1 << 40, HF_HIDDEN])))
    directory("hf_safetensors_shape_overflow", safetensors=header(
        set_entry(norm, shape=[1 << 32, 1 << 32, 1 << 32])))
    directory("hf_safetensors_truncated", safetensors=good[:len(good) // 2])
    directory("hf_safetensors_empty", safetensors=b"")
    directory("hf_safetensors_missing", drop=("model.safetensors",))
    directory("hf_safetensors_q_zero_rows", safetensors=header(lambda h: h[q0].update(
        shape=[0, HF_HIDDEN], data_offsets=[h[q0]["data_offsets"][0]] * 2)))
    directory("hf_safetensors_fifo", drop=("model.safetensors",))
    os.mkfifo(os.path.join(models["hf_safetensors_fifo"], "model.safetensors"))
    return models


def fabricate_hf_template_variants(out_dir):
    """A Hugging Face directory whose chat template is not Jinja."""
    valid = hf_files(vocab_size=256 + 1 + 2)
    path = os.path.join(out_dir, "hf_bad_chat_template")
    os.makedirs(path, exist_ok=True)
    tokenizer_config = json.loads(valid["tokenizer_config.json"])
    tokenizer_config["chat_template"] = BAD_TEMPLATE
    valid["tokenizer_config.json"] = json.dumps(tokenizer_config).encode()
    valid["model.safetensors"] = safetensors_bytes(valid["model.safetensors"])
    for file_name, data in valid.items():
        with open(os.path.join(path, file_name), "wb") as f:
            f.write(data)
    return {"hf_bad_chat_template": path}


# Runs argv[1:] with the address space limited to argv[0] bytes.
LIMITED = ("import os, resource, sys; limit = int(sys.argv[1]); "
           "resource.setrlimit(resource.RLIMIT_AS, (limit, limit)); "
           "os.execv(sys.argv[2], sys.argv[2:])")


def run_limited(argv):
    """(exit status, stdout, stderr) of argv under AS_LIMIT; status None on a
    timeout, negative for a signal."""
    try:
        proc = subprocess.run([sys.executable, "-c", LIMITED, str(AS_LIMIT)] + argv,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, "", f"timed out after {TIMEOUT_S} s"
    return proc.returncode, proc.stdout.decode(errors="replace"), \
        proc.stderr.decode(errors="replace")


def cli_argv(binary, command, model):
    """`command` is inspect, run (a text prompt) or chat (`run --chat hi`)."""
    if command == "inspect":
        return [binary, "inspect", "--model", model]
    prompt = ["--chat", "hi"] if command == "chat" else ["--prompt", "hi"]
    return [binary, "run", "--model", model, "--max-tokens", "1", "--threads", "2"] + prompt


def worker_argv(binary, model, extra=()):
    return [binary, "--model", model, "--listen", "127.0.0.1:0", "--metrics_port", "-1",
            "--threads", "2", "--kv_budget", "16MiB"] + list(extra)


def check(label, argv, expect, names=None, mentions=None):
    """Runs argv and returns (label, problems, first stderr line). expect:
    "ok" (exit 0), "refuse" (exit 2, one stderr line naming `names`) or
    "worker" (exit 2, the last stderr line naming `names`: a worker logs its
    start-up first). `mentions`: a word the error line must also hold."""
    rc, _, err = run_limited(argv)
    lines = err.rstrip("\n").split("\n") if err.strip() else []
    problems = []
    if rc is None:
        problems.append(err)
    elif rc < 0:
        problems.append(f"killed by signal {-rc}")
    elif expect == "ok":
        if rc != 0:
            problems.append(f"exit {rc}, wanted 0")
        return label, problems, lines[-1] if lines and problems else ""
    elif rc != 2:
        problems.append(f"exit {rc}, wanted 2")
    line = lines[-1] if lines else ""
    if expect == "refuse" and len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines, wanted 1")
    if names not in line:
        problems.append("the error does not name the file")
    if mentions and mentions not in line:
        problems.append(f"the error does not mention {mentions!r}")
    if "internal error" in err or "bad_alloc" in err:
        problems.append("an exception escaped the loader")
    return label, problems, line


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", help="path of the llorch CLI (build/bin/llorch)")
    parser.add_argument("--worker", help="path of llorch-worker, to check it refuses too")
    parser.add_argument("--keep", help="write the models here and keep them")
    parser.add_argument("--only", help="run only the variants whose name holds this")
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1),
                        help="commands run at once")
    args = parser.parse_args()
    binary = os.path.abspath(args.binary)
    worker = os.path.abspath(args.worker) if args.worker else None
    for program in filter(None, (binary, worker)):
        if not os.access(program, os.X_OK):
            sys.exit(f"{program}: not an executable")

    out_dir = args.keep or tempfile.mkdtemp(prefix="llorch_corrupt_gguf.")
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    failures = 0
    try:
        base = os.path.join(out_dir, "valid.gguf")
        make_base(base)
        hf = fabricate_hf(out_dir)
        hf_valid = hf.pop("hf_valid")
        checks = []  # (label, argv, expect, names, mentions)
        # A context of 2^28 positions is no reason for memory: nothing is
        # sized by it until a job asks for the positions.
        huge_context = os.path.join(out_dir, "context_2pow28.gguf")
        rewrite(base, huge_context, set_keys={
            "llama.context_length": (1 << 28, gguf.GGUFValueType.UINT32)})
        for name, path in (("valid model", base), ("hf_valid", hf_valid),
                           ("context_2pow28", huge_context)):
            for command in ("inspect", "run", "chat"):
                checks.append((f"{name}, {command}", cli_argv(binary, command, path), "ok",
                               None, None))
        refused = dict(fabricate(base, out_dir), **hf)
        for name, path in refused.items():
            for command in ("inspect", "run"):
                checks.append((f"{name}, {command}", cli_argv(binary, command, path), "refuse",
                               path, REFUSAL_MENTIONS.get(name)))
        # A template that does not compile leaves text prompts working; chat
        # is refused, naming the model and its template.
        templates = dict(fabricate_template_variants(base, out_dir),
                         **fabricate_hf_template_variants(out_dir))
        for name, path in templates.items():
            for command in ("inspect", "run"):
                checks.append((f"{name}, {command}", cli_argv(binary, command, path), "ok",
                               None, None))
            checks.append((f"{name}, chat", cli_argv(binary, "chat", path), "refuse", path,
                           "chat template"))
        if worker:
            for name in ("truncated_data", "wrong_attn_q_shape", "offset_past_end",
                         "tensors_overlap", "dim_2pow40", "kv_count_2pow40",
                         "array_length_2pow40", "hf_config_bad_json", "hf_config_layers_2pow40",
                         "hf_tokenizer_bad_json", "hf_safetensors_header_length_2pow63",
                         "hf_safetensors_overlap", "fifo"):
                checks.append((f"{name}, worker", worker_argv(worker, refused[name]), "worker",
                               refused[name], None))
            template_file = os.path.join(out_dir, "bad_template.jinja")
            with open(template_file, "w", encoding="utf-8") as f:
                f.write(BAD_TEMPLATE)
            checks.append(("bad --chat_template file, worker",
                           worker_argv(worker, base, ["--chat_template", template_file]),
                           "worker", template_file, "chat_template"))
        if args.only:
            checks = [c for c in checks if args.only in c[0]]
        print(f"{len(checks)} commands, address space limited to {AS_LIMIT >> 30} GiB each")
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for label, problems, line in pool.map(lambda c: check(*c), checks):
                failures += bool(problems)
                status = "ok  " if not problems else "FAIL"
                detail = "; ".join(problems)
                print(f"{status} {label}" + (f" ({detail})" if detail else "")
                      + (f" | {line}"[:300] if line else ""), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(out_dir, ignore_errors=True)
    print(f"{failures} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
