#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz (corpus/<target>/): a few small valid
inputs and edge cases per fuzzer. Deterministic; the output is committed, so
run it again only to change the seeds:

    python3 tests/fuzz/make_corpus.py            # rewrites tests/fuzz/corpus/
    python3 tests/fuzz/make_corpus.py OUT_DIR

Inputs that once crashed a fuzzer are seeds too: regress-* (written here, in
their smallest form) and crash-* (libFuzzer's own files, committed as they
are; this script leaves them alone).
"""
import hashlib
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SEP = b"\n--8<--\n"  # fuzz_support.h SplitParts


def pseudo_random(n, seed):
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return out[:n]


# --- GGUF --------------------------------------------------------------------

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
              BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
GGML = {"F32": (0, 1, 4), "F16": (1, 1, 2), "Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20),
        "Q5_0": (6, 32, 22), "Q5_1": (7, 32, 24), "Q8_0": (8, 32, 34), "Q2_K": (10, 256, 84),
        "Q4_K": (12, 256, 144), "Q6_K": (14, 256, 210), "IQ4_NL": (20, 32, 18),
        "BF16": (30, 1, 2), "I32": (26, 1, 4)}


def gguf_string(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gguf_value(vtype, value, sub=None):
    if vtype == STR:
        return gguf_string(value)
    if vtype == ARR:
        out = struct.pack("<IQ", sub, len(value))
        for v in value:
            if isinstance(v, tuple):  # nested array: (sub_type, values)
                out += gguf_value(ARR, v[1], v[0])
            else:
                out += gguf_value(sub, v)
        return out
    return struct.pack(SCALAR_FMT[vtype], value)


def tensor_bytes(type_name, shape, seed):
    _, block, block_bytes = GGML[type_name]
    n = 1
    for d in shape:
        n *= d
    if type_name == "F32":
        return b"".join(struct.pack("<f", ((i * 7919) % 200 - 100) / 64.0) for i in range(n))
    if type_name == "F16":
        return b"".join(struct.pack("<e", ((i * 31) % 64 - 32) / 16.0) for i in range(n))
    raw = bytearray(pseudo_random(n // block * block_bytes, seed))
    # Keep the f16 block scales of the legacy quants small and finite.
    if block == 32 and type_name != "IQ4_NL":
        for b in range(n // block):
            raw[b * block_bytes:b * block_bytes + 2] = struct.pack("<e", 0.01 * (b % 7 + 1))
    return bytes(raw)


def gguf(kvs, tensors, version=3, alignment=32):
    """kvs: [(key, type, value[, sub_type])]; tensors: [(name, shape, type_name)]."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for kv in kvs:
        key, vtype, value = kv[0], kv[1], kv[2]
        out += gguf_string(key) + struct.pack("<I", vtype) + gguf_value(vtype, value, *kv[3:])
    datas, offset = [], 0
    for name, shape, type_name in tensors:
        data = tensor_bytes(type_name, shape, name)
        out += gguf_string(name) + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", d) for d in shape)
        out += struct.pack("<IQ", GGML[type_name][0], offset)
        datas.append((offset, data))
        offset += (len(data) + alignment - 1) // alignment * alignment
    out += b"\0" * ((-len(out)) % alignment)
    data_start = len(out)
    for off, data in datas:
        out += b"\0" * (data_start + off - len(out)) + data
    return out


def byte_to_unicode():
    direct = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in direct:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def gpt2_vocab():
    b2u = byte_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    sp = b2u[ord(" ")]
    merges = ["h e", "l l", "he ll", "hell o", f"{sp} w", "o r", "l d", f"{sp}w or", f"{sp}wor ld",
              "1 2", "12 3", f"{sp} t", "t h", f"{sp}t h", "e r", "i n", f"{sp} a"]
    for m in merges:
        a, b = m.split(" ")
        if a + b not in tokens:
            tokens.append(a + b)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [1] * len(tokens) + [3, 3, 3]
    tokens += specials
    return tokens, types, merges


def spm_vocab():
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    pieces = ["\u2581", "\u2581t", "he", "\u2581the", "ll", "llo", "\u2581he", "\u2581hello",
              "or", "ld", "\u2581w", "\u2581wor", "\u2581world", "in", "\u2581a", "\u00e9",
              "\u2581\u2581", "\u2581\u2581\u2581\u2581", "12", "3"]
    tokens += pieces
    types += [1] * len(pieces)
    tokens.append("<|user|>")
    types.append(4)
    scores = [0.0] * (3 + 256) + [-float(i) for i in range(len(pieces))] + [0.0]
    return tokens, types, scores


CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def tiny_model():
    """A GGUF ModelConfigFromGguf accepts: llama, 1 layer, hidden 32, gpt2 vocab."""
    tokens, types, merges = gpt2_vocab()
    v, h, ffn = len(tokens), 32, 64
    kvs = [("general.architecture", STR, "llama"), ("general.name", STR, "tiny fuzz seed"),
           ("llama.block_count", U32, 1), ("llama.context_length", U32, 64),
           ("llama.embedding_length", U32, h), ("llama.feed_forward_length", U32, ffn),
           ("llama.attention.head_count", U32, 2), ("llama.attention.head_count_kv", U32, 1),
           ("llama.rope.dimension_count", U32, 16), ("llama.rope.freq_base", F32, 10000.0),
           ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5), ("llama.vocab_size", U32, v),
           ("tokenizer.ggml.model", STR, "gpt2"), ("tokenizer.ggml.pre", STR, "smollm"),
           ("tokenizer.ggml.tokens", ARR, tokens, STR),
           ("tokenizer.ggml.token_type", ARR, types, I32),
           ("tokenizer.ggml.merges", ARR, merges, STR),
           ("tokenizer.ggml.bos_token_id", U32, v - 3), ("tokenizer.ggml.eos_token_id", U32, v - 1),
           ("tokenizer.ggml.add_bos_token", BOOL, False),
           ("tokenizer.chat_template", STR, CHATML)]
    t = [("token_embd.weight", [h, v], "Q8_0"), ("output_norm.weight", [h], "F32"),
         ("blk.0.attn_norm.weight", [h], "F32"), ("blk.0.attn_q.weight", [h, h], "Q8_0"),
         ("blk.0.attn_k.weight", [h, 16], "Q8_0"), ("blk.0.attn_v.weight", [h, 16], "Q8_0"),
         ("blk.0.attn_output.weight", [h, h], "Q4_0"), ("blk.0.ffn_norm.weight", [h], "F32"),
         ("blk.0.ffn_gate.weight", [h, ffn], "Q4_1"), ("blk.0.ffn_up.weight", [h, ffn], "Q5_0"),
         ("blk.0.ffn_down.weight", [ffn, h], "F16"), ("rope_freqs.weight", [8], "F32")]
    return gguf(kvs, t)


def gguf_seeds():
    seeds = {}
    seeds["header_only.gguf"] = gguf([], [])
    seeds["metadata_types_v2.gguf"] = gguf(
        [("general.alignment", U32, 64), ("t.u8", U8, 255), ("t.i8", I8, -128),
         ("t.u16", U16, 65535), ("t.i16", I16, -32768), ("t.u32", U32, 4294967295),
         ("t.i32", I32, -2147483648), ("t.u64", U64, 2**64 - 1), ("t.i64", I64, -2**63),
         ("t.f32", F32, 0.1), ("t.f64", F64, -1.5e300), ("t.bool", BOOL, True),
         ("t.str", STR, "h\u00e9llo \U0001f999 nul\0in"), ("t.empty", ARR, [], I32),
         ("t.floats", ARR, [0.5, -2.0], F32), ("t.strings", ARR, ["a", "", "\u2581b"], STR),
         ("t.nested", ARR, [(I32, [1, 2]), (STR, ["x"])], ARR)],
        [("scalar", [], "F32"), ("zero", [0, 4], "F32"), ("ints", [4], "I32")],
        version=2, alignment=64)
    seeds["tiny_llama_gpt2.gguf"] = tiny_model()
    tokens, types, scores = spm_vocab()
    seeds["spm_vocab_quants.gguf"] = gguf(
        [("general.architecture", STR, "llama"), ("general.name", STR, "Phi-3 seed"),
         ("tokenizer.ggml.model", STR, "llama"), ("tokenizer.ggml.tokens", ARR, tokens, STR),
         ("tokenizer.ggml.scores", ARR, scores, F32),
         ("tokenizer.ggml.token_type", ARR, types, I32),
         ("tokenizer.ggml.add_space_prefix", BOOL, True),
         ("tokenizer.ggml.unknown_token_id", U32, 0), ("tokenizer.ggml.eot_token_id", U32, 2)],
        [("q4_0", [32], "Q4_0"), ("q4_1", [32], "Q4_1"), ("q5_0", [32], "Q5_0"),
         ("q5_1", [32], "Q5_1"), ("q8_0", [32, 2], "Q8_0"), ("q2_k", [256], "Q2_K"),
         ("q4_k", [256], "Q4_K"), ("q6_k", [256], "Q6_K"), ("iq4_nl", [32], "IQ4_NL"),
         ("bf16", [3, 1], "BF16")])
    seeds["truncated.gguf"] = seeds["tiny_llama_gpt2.gguf"][:1500]
    # feed_forward_length 2^62: 2 * ffn overflowed in ModelConfigFromGguf.
    seeds["regress-huge-ffn.gguf"] = gguf(
        [("general.architecture", STR, "llama"), ("llama.block_count", U32, 1),
         ("llama.context_length", U32, 64), ("llama.embedding_length", U32, 32),
         ("llama.feed_forward_length", U64, 2**62), ("llama.attention.head_count", U32, 2),
         ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5)],
        [("token_embd.weight", [32, 8], "Q8_0"), ("output_norm.weight", [32], "F32")])
    # A byte token whose text is not <0xXX>: decoding it threw out of std::stoi.
    seeds["regress-byte-token-text.gguf"] = gguf(
        [("tokenizer.ggml.model", STR, "llama"),
         ("tokenizer.ggml.tokens", ARR, ["<unk>", "<s>", "</s>", "<0xZZ>", "<0x41"], STR),
         ("tokenizer.ggml.token_type", ARR, [2, 3, 3, 6, 6], I32)], [])
    return seeds


# --- SafeTensors -------------------------------------------------------------

def safetensors(header, data):
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds():
    f32 = struct.pack("<4f", 1, -2, 0.5, 3)
    f16 = struct.pack("<3e", 1, -1, 0.25)
    return {
        "two_tensors.safetensors": safetensors(
            {"__metadata__": {"format": "pt"},
             "a.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
             "b.bias": {"dtype": "F16", "shape": [3], "data_offsets": [16, 22]}},
            f32 + f16),
        "bf16_scalar_empty.safetensors": safetensors(
            {"s": {"dtype": "BF16", "shape": [], "data_offsets": [0, 2]},
             "e": {"dtype": "F32", "shape": [0, 5], "data_offsets": [2, 2]}},
            b"\x80\x3f"),
        "empty_header.safetensors": safetensors({}, b""),
        "bad_dtype.safetensors": safetensors(
            {"x": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8),
        # Shapes whose element count overflows int64 (undefined behaviour), or
        # whose dimensions read as -1 and pass: [-1, -1] F32 "is" 4 bytes.
        "regress-shape-overflow.safetensors": safetensors(
            {"x": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}},
            b"\0" * 4),
        "regress-shape-negative.safetensors": safetensors(
            {"x": {"dtype": "F32", "shape": [2**64 - 1, 2**64 - 1], "data_offsets": [0, 4]}},
            b"\0" * 4),
    }


# --- tokenizer.json ----------------------------------------------------------

LLAMA3_SPLIT = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?"
                "[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
QWEN2_SPLIT = LLAMA3_SPLIT.replace("\\p{N}{1,3}", "\\p{N}")


def byte_level(use_regex):
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
            "use_regex": use_regex}


def hf_bytelevel(pre, normalizer=None, merges_as_pairs=False):
    tokens, types, merges = gpt2_vocab()
    vocab = {t: i for i, t in enumerate(tokens) if types[i] == 1}
    added = [{"id": i, "content": t, "special": True, "normalized": False}
             for i, t in enumerate(tokens) if types[i] == 3]
    added.append({"id": len(tokens), "content": "<tool>", "special": False})
    return {"version": "1.0", "added_tokens": added, "normalizer": normalizer,
            "pre_tokenizer": pre, "decoder": byte_level(True),
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "vocab": vocab,
                      "merges": [m.split(" ") for m in merges] if merges_as_pairs else merges}}


def hf_sentencepiece(metaspace):
    tokens, types, _ = spm_vocab()
    vocab = {t: i for i, t in enumerate(tokens) if types[i] != 4}
    merges = ["\u2581 t", "h e", "\u2581t he", "l l", "ll o", "\u2581 w", "o r", "l d",
              "\u2581w or", "\u2581wor ld", "1 2"]
    if metaspace:
        normalizer = None
        pre = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first",
               "split": False}
    else:
        normalizer = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
        pre = None
    return {"version": "1.0",
            "added_tokens": [{"id": 0, "content": "<unk>", "special": True},
                             {"id": 1, "content": "<s>", "special": True},
                             {"id": 2, "content": "</s>", "special": True},
                             {"id": len(tokens) - 1, "content": "<|user|>", "special": False}],
            "normalizer": normalizer, "pre_tokenizer": pre,
            "model": {"type": "BPE", "byte_fallback": True, "unk_token": "<unk>",
                      "vocab": vocab, "merges": merges}}


def dumps(obj):
    return json.dumps(obj, ensure_ascii=False, indent=1).encode()


def hf_tokenizer_seeds():
    tok_config = {"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"},
                  "add_bos_token": False, "chat_template": CHATML}
    spm_config = {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True,
                  "chat_template": [{"name": "default", "template": CHATML},
                                    {"name": "tool_use", "template": "{{ 1 }}"}]}
    config = {"bos_token_id": 256, "eos_token_id": [258, 257]}
    text = "Hello world! It's 123 \u00e9\U0001f999 <|im_end|>\n\n  x".encode()
    return {
        "gpt2.json": dumps(hf_bytelevel(byte_level(True))),
        "llama3_with_configs.json": SEP.join([
            dumps(hf_bytelevel({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated",
                 "invert": False}, byte_level(False)]})),
            dumps(tok_config), dumps(config), text]),
        "qwen2_nfc_pairs.json": SEP.join([
            dumps(hf_bytelevel({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated",
                 "invert": False}, byte_level(False)]}, {"type": "NFC"}, merges_as_pairs=True)),
            dumps({"eos_token": "<|endoftext|>"}), b"{}", "e\u0301 A\u030a".encode()]),
        "smollm_digits.json": dumps(hf_bytelevel({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level(True)]})),
        "sentencepiece_prepend.json": SEP.join([
            dumps(hf_sentencepiece(False)), dumps(spm_config), b"{}", b" hello  world 12\n"]),
        "sentencepiece_metaspace.json": dumps(hf_sentencepiece(True)),
        "unsupported_wordpiece.json": dumps({"model": {"type": "WordPiece", "vocab": {"a": 0}}}),
        # A float id: converting it to int64 was undefined behaviour (UBSan).
        "regress-float-id.json": b'{"model":{"type":"BPE","vocab":{"a":4.4e95},"merges":[]},'
                                 b'"pre_tokenizer":{"type":"ByteLevel"}}',
        # An id of 10^12: a vector of that many tokens was allocated.
        "regress-huge-id.json": b'{"model":{"type":"BPE","vocab":{"a":0},"merges":[]},'
                                b'"pre_tokenizer":{"type":"ByteLevel"},'
                                b'"added_tokens":[{"id":1000000000000,"content":"x"}]}',
        # Values of unexpected JSON types: nlohmann threw type_error (abort).
        "regress-type-errors.json": SEP.join([
            b'{"model":{"type":"BPE","vocab":{"a":0},"merges":[["a",1]]},'
            b'"pre_tokenizer":{"type":"Sequence","pretokenizers":{"x":1,"y":2}}}',
            b'{"bos_token":1,"add_bos_token":"yes","chat_template":[{"name":5}]}',
            b'{"eos_token_id":["x"]}']),
    }


# --- Texts for the fixed vocabularies ----------------------------------------

TEXTS = [
    "Hello world", " Hello World!", "Hello, world! How's it going? I'll see; we'd've gone.",
    "   leading and trailing spaces   ", "tabs\tand\nnew\r\nlines\n\n\n", "1234567890 3.14159 1e-5",
    "caf\u00e9 na\u00efve \u00c5ngstr\u00f6m A\u030a", "\u4f60\u597d\uff0c\u4e16\u754c \u3053\u3093\u306b\u3061\u306f",
    "\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd \u043f\u0440\u0438\u0432\u0435\u0442",
    "emoji \U0001f999\U0001f468\u200d\U0001f469\u200d\U0001f467 \u2764\ufe0f",
    "<s>[INST] hi [/INST]</s><|endoftext|><|im_start|>user\nhi<|im_end|><|user|> <unk>",
    "def f(x):\n    return x ** 2  # code\n", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "\u2581already\u2581marked\u2581spaces", "",
]
INVALID = [b"\xff\xfe\xfd", b"trunc\xe2\x82", b"surrogate \xed\xa0\x80 overlong \xc0\xaf",
           b"\xf4\x90\x80\x80 above U+10FFFF", b"nul\x00byte"]


def text_seeds(num_vocabs):
    seeds = {}
    texts = [t.encode() for t in TEXTS] + INVALID
    for i, text in enumerate(texts):
        vocab = i % num_vocabs
        flags = (i // num_vocabs) % 4  # add_special (1), parse_special (2)
        seeds[f"text{i:02d}"] = bytes([vocab, flags]) + text
    for vocab in range(num_vocabs):  # special tokens parsed, every vocabulary
        seeds[f"special{vocab}"] = bytes([vocab, 3]) + texts[10]
    return seeds


# --- Chat templates ----------------------------------------------------------

LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
          "{% set system_message = messages[0]['content'] %}{% else %}"
          "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
          "{% for message in loop_messages %}"
          "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
          "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
          "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
          "{% else %}{% set content = message['content'] %}{% endif %}"
          "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
          "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}"
          "{% endif %}{% endfor %}")
TOOLS = ("{%- macro render(m) -%}{{ m.role | upper }}: {{ m.content | trim }}{%- endmacro -%}\n"
         "{%- set ns = namespace(n=0) -%}\n"
         "{%- if tools is not none %}Tools: {{ tools | tojson(indent=2) }}\n{% endif -%}\n"
         "{%- for m in messages %}{% set ns.n = ns.n + 1 %}{{ render(m) }}\n"
         "{%- if m.content.startswith('!') %}{% break %}{% endif %}{% endfor -%}\n"
         "{{ ns.n }} {{ messages | length }} {{ 'a,b,,c'.split(',') }} {{ enable_thinking | default(true) }}"
         "{% generation %}{{ '%05.1f' | format(3.14159) }}{% endgeneration %}"
         "{{ strftime_now('%Y') | length }}{{ messages[-1].content | wordcount }}"
         "{{ 'x' * 3 }}{{ range(3) | list }}{{ {'k': 1}.items() | list }}")


def chat_template_seeds():
    msgs = b"system:You are helpful.\nuser:Hi \\n there \xc3\xa9\nassistant:Hello!\nuser:2+2?"
    return {
        "chatml": CHATML.encode(),
        "chatml_messages": SEP.join([CHATML.encode(), msgs]),
        "llama2": SEP.join([LLAMA2.encode(), msgs]),
        "llama2_raises": SEP.join([LLAMA2.encode(), b"user:a\nuser:b"]),
        "tools_extra": SEP.join([TOOLS.encode(), b"user:hi\nassistant:!stop\nuser:x",
                                 b'{"tools": [{"type": "function", "function": {"name": "f"}}],'
                                 b' "enable_thinking": false}']),
        "syntax_error": b"{% for m in messages %}{{ m.content }",
        "reserved_extra": SEP.join([b"{{ x }}", b"user:u", b'{"messages": 1}']),
    }


# --- Requests ----------------------------------------------------------------

def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(number, value):
    """int -> varint; float -> fixed32; bytes/str -> length-delimited."""
    if isinstance(value, bool) or isinstance(value, int):
        return varint(number << 3) + varint(int(value))
    if isinstance(value, float):
        return varint(number << 3 | 5) + struct.pack("<f", value)
    b = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(b)) + b


def sampling(temperature=None, top_k=None, top_p=None, min_p=None, rep=None, seed=None):
    out = b""
    for n, v in ((1, temperature), (2, top_k), (3, top_p), (4, min_p), (5, rep), (6, seed)):
        if v is not None:
            out += field(n, v)
    return out


def messages(pairs, add_generation_prompt=None):
    out = b"".join(field(1, field(1, r) + field(2, c)) for r, c in pairs)
    if add_generation_prompt is not None:
        out += field(2, add_generation_prompt)
    return out


def generate_request_seeds():
    # llorch.v1.GenerateRequest: model 1, job_id 2, text 3, token_ids 4,
    # messages 5, sampling 6, max_tokens 7, stop 8, stop_token_ids 9,
    # logprobs 10, ignore_eos 11, parse_special 12.
    chat = messages([("system", "Be brief."), ("user", "Hi \u00e9")], True)
    return {
        "text": field(1, "smollm2") + field(3, "Hello") + field(7, 16),
        "token_ids": field(1, "m") + field(2, "job-1") + field(4, field(1, b"".join(varint(i) for i in (1, 2, 3)))),
        "token_ids_unpacked": field(1, "m") + field(4, field(1, 5) + field(1, 6)),
        "messages_sampling": field(1, "m") + field(5, chat) + field(6, sampling(0.7, 40, 0.9, 0.05, 1.1, 42))
                             + field(8, "\n\n") + field(8, "END") + field(9, 2) + field(10, 5)
                             + field(11, True) + field(12, False),
        "invalid_utf8": field(1, b"m\xff") + field(3, b"\xc0\xaf"),
        "out_of_range": field(1, "m") + field(3, "x") + field(6, sampling(-1.0, -5, 2.0)) + field(7, -3)
                        + field(10, 99) + field(9, -1),
        "empty": b"",
    }


def execute_request_seeds():
    # llorch.worker.v1.ExecuteRequest: job_id 1, text 2, token_ids 3,
    # sampling 4, max_tokens 5, stop 6, stop_token_ids 7, logprobs 8,
    # ignore_eos 9, messages 10, parse_special 11.
    chat = messages([("system", "You are a fuzzer."), ("user", "Hi <|im_end|>"),
                     ("assistant", "Hello."), ("user", "2+2?")], False)
    return {
        "text": field(1, "j1") + field(2, "Hello <|im_start|>world") + field(5, 8),
        "text_plain": field(1, "j2") + field(2, "<|im_end|> as text") + field(11, False),
        "messages": field(1, "j3") + field(10, chat) + field(4, sampling(0.0, 1, seed=7))
                    + field(6, "stop") + field(7, 0) + field(8, 20) + field(9, True),
        "token_ids": field(1, "j4") + field(3, field(1, b"".join(varint(i) for i in (1, 9999999, 3)))),
        "invalid_utf8": field(1, "j5") + field(10, messages([("user", b"\xff")])),
        "empty_role": field(1, "j6") + field(10, messages([("", "x")])),
        "no_prompt": field(1, "j7"),
    }


def openai_request_seeds():
    chat = {"model": "smollm2", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": None}],
        "temperature": 0.7, "top_p": 0.9, "top_k": -1, "min_p": 0.05, "repetition_penalty": 1.1,
        "seed": -42, "max_completion_tokens": 16, "stop": ["\n\n", "END"], "stop_token_ids": [2],
        "stream": True, "stream_options": {"include_usage": True}, "logprobs": True,
        "top_logprobs": 3, "n": 1, "response_format": {"type": "text"},
        "add_generation_prompt": False, "ignore_eos": False, "user": "ignored"}
    return {
        "chat.json": json.dumps(chat, indent=1).encode(),
        "chat_minimal.json": b'{"model":"m","messages":[{"role":"user","content":"hi"}]}',
        "completion.json": json.dumps({"model": "m", "prompt": "Once upon", "max_tokens": 8.0,
                                       "logprobs": 2, "echo": False, "suffix": None,
                                       "best_of": 1, "stop": "."}).encode(),
        "completion_ids.json": b'{"model":"m","prompt":[[1,2,3]],"seed":18446744073709551615}',
        "unsupported.json": b'{"model":"m","prompt":["a","b"],"n":2,"tools":[{}],"logit_bias":{"1":5}}',
        "wrong_types.json": b'{"model":7,"messages":"hi","temperature":"hot","stop":[1]}',
        "not_json": b'{"model": "m", "messages": [\xff',
        "deep.json": b"[" * 64 + b"]" * 64,
    }


def write(out_dir):
    corpora = {
        "gguf": gguf_seeds(),
        "safetensors": safetensors_seeds(),
        "hf_tokenizer": hf_tokenizer_seeds(),
        "bpe_encode": text_seeds(4),
        # BOS added and "<s>" parsed: [BOS, BOS, ...] streamed without the
        # space that Decode keeps.
        "spm_encode": dict(text_seeds(2), **{"regress-double-bos": bytes([0, 3]) + b"<s> hi"}),
        "chat_template": chat_template_seeds(),
        "generate_request": generate_request_seeds(),
        "execute_request": execute_request_seeds(),
        "openai_request": openai_request_seeds(),
    }
    total = 0
    for target, seeds in corpora.items():
        d = os.path.join(out_dir, target)
        os.makedirs(d, exist_ok=True)
        for name in os.listdir(d):  # keep committed crash inputs
            if not name.startswith("crash-"):
                os.remove(os.path.join(d, name))
        for name, data in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
            total += len(data)
    print(f"wrote {sum(len(s) for s in corpora.values())} seeds, {total} bytes, to {out_dir}")


if __name__ == "__main__":
    write(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus"))
