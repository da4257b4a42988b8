#!/usr/bin/env python3
"""The hostile-input catalogue, HTTP half (issue 13): bad requests to the
scheduler's OpenAI-compatible API (--http_listen), over a real
llorch-scheduler in front of a real llorch-worker serving the tiny model.

CASES is the catalogue: each row is a request and the answer it must get,
either an error (HTTP status; OpenAI's body {"error": {message, type, param,
code}} with the documented type, `param` the field, `code`; a message that
names the field) or OK (a completion: what the API documents it accepts).
After every row the scheduler serves a good request (greedy, 2 tokens), and
both processes still run. The table is printed; any difference fails the test.

The gRPC half (scheduler and worker) is hostile_grpc_test.cc.

Usage: hostile_http_test.py LLORCH_SCHEDULER LLORCH_WORKER TINY.gguf
"""
import http.client
import json
import os
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from processes import Processes, TestFailure, check, served_name  # noqa: E402

CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
VOCAB = 49152    # the tiny model's (llorch inspect)
CONTEXT = 256
BAD = b"@@BAD@@"  # where raw bytes replace a JSON string's text
MIB = 1 << 20


class Request:
    """One HTTP request: a JSON value (dumped), text, or bytes as the body."""

    def __init__(self, method, path, body=None, headers=None, raw=None):
        self.method, self.path, self.body, self.headers, self.raw = (
            method, path, body, headers or {}, raw)

    def payload(self):
        if self.body is None or isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


class Expect:
    """An error answer: status, `param` (None: null), `code` (None: null) and a
    text the message must contain (the field's name: `param` unless given)."""

    def __init__(self, status, param=None, code=None, names=None):
        self.status, self.param, self.code = status, param, code
        self.names = names if names is not None else param

    def describe(self):
        return (f"{self.status} param={self.param} code={self.code}"
                + (f" '{self.names}'" if self.names and self.names != self.param else ""))


class Ok:
    """A completion (200), optionally with this finish_reason."""

    def __init__(self, finish_reason=None):
        self.status, self.finish_reason = 200, finish_reason

    def describe(self):
        return "200 completion" + (f" ({self.finish_reason})" if self.finish_reason else "")


def bad(status_param, names=None):
    """400 invalid_request_error naming `param`."""
    return Expect(400, status_param, None, names)


def chat(model=None, messages=None, **fields):
    body = {"model": model or TINY, "messages": messages or [{"role": "user", "content": "Hi"}],
            "max_tokens": 2, "temperature": 0}
    body.update(fields)
    return Request("POST", CHAT, {k: v for k, v in body.items() if v is not Absent})


def comp(prompt="Hello", **fields):
    body = {"model": TINY, "prompt": prompt, "max_tokens": 2, "temperature": 0}
    body.update(fields)
    return Request("POST", COMP, {k: v for k, v in body.items() if v is not Absent})


def with_bytes(request, raw):
    """The request's JSON with the string "@@BAD@@" replaced by `raw`
    (bytes that json.dumps cannot write: invalid UTF-8)."""
    request.body = request.payload().replace(BAD, raw)
    return request


class Absent:
    """A field left out of the body."""


def words(n):
    return "word " * n


TINY = "tiny-f32-gqa"
STRAY = b"ok \xc3\x28 not"      # a lead byte, then ASCII
TRUNCATED = b"ok \xe2\x82"      # a 3-byte sequence cut short
SURROGATE = b"ok \xed\xa0\x80"  # U+D800 encoded
OVERLONG = b"ok \xc0\xaf"       # "/" in two bytes
MSG = [{"role": "user", "content": "Hi"}]

# name, request, expected answer
CASES = [
    # Routes and HTTP itself.
    ("GET on a POST route", Request("GET", CHAT), Expect(405, None, "method_not_allowed", "GET")),
    ("DELETE on a POST route", Request("DELETE", COMP), Expect(405, None, "method_not_allowed",
                                                               "DELETE")),
    ("POST on a GET route", Request("POST", "/v1/models", "{}"),
     Expect(405, None, "method_not_allowed", "POST")),
    ("PUT /health", Request("PUT", "/health", "{}"), Expect(405, None, "method_not_allowed", "PUT")),
    ("an unknown route", Request("GET", "/v1/embeddings"),
     Expect(404, None, "not_found", "/v1/embeddings")),
    ("an unknown version", Request("POST", "/v2/chat/completions", "{}"),
     Expect(404, None, "not_found", "/v2/chat/completions")),
    ("GET /v1/models/ an unknown model", Request("GET", "/v1/models/no-such-model"),
     Expect(404, "model", "model_not_found", "no-such-model")),
    ("a request line that is no HTTP", Request("RAW", "", raw=b"GARBAGE\r\n\r\n"),
     Expect(400, None, None, "Malformed HTTP request")),
    ("a header of 100 KB", Request("GET", "/v1/models", headers={"X-Big": "a" * 100000}),
     Expect(400, None, None, "Malformed HTTP request")),
    ("a body over 16 MiB", Request("POST", COMP, b"{" + b" " * (16 * MIB) + b"}"),
     Expect(413, None, None, "larger than 16777216 bytes")),
    ("Authorization not ASCII", Request("GET", "/v1/models", headers={"Authorization":
                                                                       "Bearer t\u00e9"}),
     Expect(401, None, "invalid_api_key", "bearer token")),
    # The body as a whole.
    ("an empty body", Request("POST", COMP, ""), Expect(400, None, None, "not valid JSON")),
    ("malformed JSON", Request("POST", CHAT, "{not json"), Expect(400, None, None,
                                                                  "not valid JSON")),
    ("JSON and then more", Request("POST", COMP, '{"model": "x", "prompt": "y"} {}'),
     Expect(400, None, None, "not valid JSON")),
    ("a JSON array", Request("POST", CHAT, "[1, 2]"), Expect(400, None, None,
                                                             "must be a JSON object")),
    ("JSON null", Request("POST", COMP, "null"), Expect(400, None, None, "must be a JSON object")),
    ("a form instead of JSON", Request("POST", COMP, "model=tiny&prompt=hi",
                                       {"Content-Type": "application/x-www-form-urlencoded"}),
     Expect(400, None, None, "not valid JSON")),
    ("Content-Type text/plain (the body is read as JSON)",
     Request("POST", COMP, comp().payload(), {"Content-Type": "text/plain"}), Ok()),
    ("unknown fields (ignored)", comp(foo=1, bar={"x": [1]}, user="me"), Ok()),
    ("null fields (absent)", comp(temperature=None, stop=None, n=None, seed=None), Ok()),
    ("a prompt nested 100,000 arrays deep",
     Request("POST", COMP, '{"model": "%s", "prompt": %s%s}' % (TINY, "[" * 100000, "]" * 100000)),
     bad("prompt")),
    # model
    ("model missing", comp(model=Absent), bad("model")),
    ("model a number", comp(model=123), bad("model")),
    ("model empty", comp(model=""), bad("model")),
    ("model of 257 bytes", comp(model="m" * 257), bad("model")),
    ("model invalid UTF-8", with_bytes(comp(model="@@BAD@@"), STRAY), bad("model")),
    ("model unknown", comp(model="no-such-model"), Expect(404, "model", "model_not_found",
                                                          "no-such-model")),
    # messages (chat)
    ("messages missing", chat(messages=Absent), bad("messages")),
    ("messages a string", chat(messages="hi"), bad("messages")),
    ("messages empty", Request("POST", CHAT, {"model": TINY, "messages": []}), bad("messages")),
    ("messages[0] a string", chat(messages=["hi"]), bad("messages[0]")),
    ("role missing", chat(messages=[{"content": "hi"}]), bad("messages[0].role")),
    ("role a number", chat(messages=[{"role": 7, "content": "hi"}]), bad("messages[0].role")),
    ("role empty", chat(messages=[{"role": "", "content": "hi"}]), bad("messages[0].role")),
    ("role invalid UTF-8", with_bytes(chat(messages=[{"role": "@@BAD@@", "content": "hi"}]), STRAY),
     bad("messages[0].role")),
    ("content invalid UTF-8",
     with_bytes(chat(messages=[MSG[0], {"role": "user", "content": "@@BAD@@"}]), TRUNCATED),
     bad("messages[1].content")),
    ("content a number", chat(messages=[{"role": "user", "content": 42}]),
     bad("messages[0].content")),
    ("content an image part", chat(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x"}}]}]),
     bad("messages[0].content[0].type")),
    ("role unknown (the template decides)", chat(messages=[{"role": "wizard", "content": "hi"}]),
     Ok()),
    ("1025 messages", chat(messages=MSG * 1025), bad("messages")),
    ("content of 2 MiB", chat(messages=[{"role": "user", "content": "a" * (2 * MIB)}]),
     bad("messages")),
    ("content of 5 MiB (over gRPC's 4 MiB)",
     chat(messages=[{"role": "user", "content": "a" * (5 * MIB)}]), bad("messages")),
    ("messages over the context", chat(messages=[{"role": "user", "content": words(300)}]),
     bad("messages", "prompt of")),
    ("add_generation_prompt a number", chat(add_generation_prompt=1),
     bad("add_generation_prompt")),
    # prompt (completions)
    ("prompt missing", comp(prompt=Absent), bad("prompt")),
    ("prompt empty", comp(prompt=""), bad("prompt")),
    ("prompt an empty list", comp(prompt=[]), bad("prompt")),
    ("prompt two prompts", comp(prompt=["a", "b"]), bad("prompt")),
    ("prompt [[]]", comp(prompt=[[]]), bad("prompt")),
    ("prompt an object", comp(prompt={"text": "hi"}), bad("prompt")),
    ("prompt token id negative", comp(prompt=[-1]), bad("prompt[0]")),
    ("prompt token id = vocab size", comp(prompt=[1, VOCAB]), bad("prompt", "token_ids")),
    ("prompt token id 2^31", comp(prompt=[2 ** 31]), bad("prompt[0]")),
    ("prompt token id 1.5", comp(prompt=[1.5]), bad("prompt[0]")),
    ("prompt invalid UTF-8", with_bytes(comp(prompt="@@BAD@@"), OVERLONG), bad("prompt")),
    ("prompt a lone surrogate (\\ud800)", Request("POST", COMP, '{"model": "%s", "prompt": '
                                                  '"\\ud800"}' % TINY), bad("prompt")),
    ("prompt of 2 MiB", comp(prompt="a" * (2 * MIB)), bad("prompt")),
    ("prompt of 5 MiB (over gRPC's 4 MiB)", comp(prompt="a" * (5 * MIB)), bad("prompt")),
    ("prompt of 1,048,577 token ids", comp(prompt=[5] * (MIB + 1)), bad("prompt", "token_ids")),
    ("prompt of 10^6 large ids (over gRPC's 4 MiB)", comp(prompt=[10 ** 9] * 10 ** 6),
     bad("prompt")),
    ("prompt over the context", comp(prompt=words(300)), bad("prompt", "prompt of")),
    ("prompt ids over the context", comp(prompt=[5] * CONTEXT), bad("prompt", "prompt of")),
    # sampling
    ("temperature -1", comp(temperature=-1), bad("temperature")),
    ("temperature a string", comp(temperature="hot"), bad("temperature")),
    ("temperature 1e999", Request("POST", COMP, '{"model": "%s", "prompt": "x", '
                                  '"temperature": 1e999}' % TINY), bad("temperature")),
    ("temperature NaN", Request("POST", COMP, '{"model": "%s", "prompt": "x", '
                                '"temperature": NaN}' % TINY), bad("temperature")),
    ("temperature 1e300 (inf as a float)", comp(temperature=1e300), bad("temperature")),
    ("top_p 0", comp(top_p=0), bad("top_p")),
    ("top_p 1.5", comp(top_p=1.5), bad("top_p")),
    ("top_k -2", comp(top_k=-2), bad("top_k")),
    ("top_k 2^31", comp(top_k=2 ** 31), bad("top_k")),
    ("top_k -1 (off, as vLLM's)", comp(top_k=-1), Ok()),
    ("min_p 1.5", comp(min_p=1.5), bad("min_p")),
    ("min_p -0.5", comp(min_p=-0.5), bad("min_p")),
    ("repetition_penalty 0", comp(repetition_penalty=0), bad("repetition_penalty")),
    ("seed a string", comp(seed="x"), bad("seed")),
    ("seed 2^64", comp(seed=2 ** 64), bad("seed")),
    # lengths
    ("max_tokens 0", comp(max_tokens=0), bad("max_tokens")),
    ("max_tokens -1", comp(max_tokens=-1), bad("max_tokens")),
    ("max_tokens a string", comp(max_tokens="ten"), bad("max_tokens")),
    ("max_tokens 1.5", comp(max_tokens=1.5), bad("max_tokens")),
    ("max_tokens 2^31", comp(max_tokens=2 ** 31), bad("max_tokens")),
    ("max_tokens 2^31-1 (the context bounds it)", comp(max_tokens=2 ** 31 - 1), Ok("length")),
    ("max_completion_tokens 0", chat(max_tokens=Absent, max_completion_tokens=0),
     bad("max_completion_tokens")),
    # stop
    ("stop a number", comp(stop=7), bad("stop")),
    ("stop [1]", comp(stop=[1]), bad("stop[0]")),
    ("stop 17 strings", comp(stop=["s"] * 17), bad("stop")),
    ("stop an empty string", comp(stop=[""]), bad("stop")),
    ("stop of 257 bytes", comp(stop="s" * 257), bad("stop")),
    ("stop invalid UTF-8", with_bytes(comp(stop="@@BAD@@"), SURROGATE), bad("stop")),
    ("stop[1] invalid UTF-8", with_bytes(comp(stop=["fine", "@@BAD@@"]), STRAY), bad("stop[1]")),
    ("stop_token_ids 65 ids", comp(stop_token_ids=list(range(65))), bad("stop_token_ids")),
    ("stop_token_ids negative", comp(stop_token_ids=[-1]), bad("stop_token_ids[0]")),
    ("stop_token_ids = vocab size", comp(stop_token_ids=[VOCAB]), bad("stop_token_ids")),
    ("stop_token_ids a string", comp(stop_token_ids="1"), bad("stop_token_ids")),
    ("stop_token_ids 10^6 large ids (over gRPC's 4 MiB)",
     comp(stop_token_ids=[10 ** 9] * 10 ** 6), bad("stop_token_ids")),
    # log-probs
    ("chat logprobs a string", chat(logprobs="yes"), bad("logprobs")),
    ("chat top_logprobs 21", chat(logprobs=True, top_logprobs=21), bad("top_logprobs")),
    ("chat top_logprobs without logprobs", chat(top_logprobs=5), bad("top_logprobs")),
    ("chat top_logprobs -1", chat(logprobs=True, top_logprobs=-1), bad("top_logprobs")),
    ("completions logprobs 21", comp(logprobs=21), bad("logprobs")),
    ("completions logprobs -1", comp(logprobs=-1), bad("logprobs")),
    ("completions logprobs true", comp(logprobs=True), bad("logprobs")),
    # one choice, no unsupported features
    ("n 2", chat(n=2), bad("n")),
    ("n 0", comp(n=0), bad("n")),
    ("n a string", comp(n="1"), bad("n")),
    ("best_of 2", comp(best_of=2), bad("best_of")),
    ("echo true", comp(echo=True), bad("echo")),
    ("suffix", comp(suffix="x"), bad("suffix")),
    ("presence_penalty 0.5", chat(presence_penalty=0.5), bad("presence_penalty")),
    ("frequency_penalty 1", comp(frequency_penalty=1), bad("frequency_penalty")),
    ("logit_bias", chat(logit_bias={"5": 10}), bad("logit_bias")),
    ("tools", chat(tools=[{"type": "function", "function": {"name": "f"}}]), bad("tools")),
    ("functions", chat(functions=[{"name": "f"}]), bad("functions")),
    ("response_format json_object", chat(response_format={"type": "json_object"}),
     bad("response_format")),
    ("response_format a string", chat(response_format="text"), bad("response_format")),
    # streaming
    ("stream a string", chat(stream="yes"), bad("stream")),
    ("stream a number", comp(stream=1), bad("stream")),
    ("stream_options a number", comp(stream=True, stream_options=1), bad("stream_options")),
    ("stream_options.include_usage a string",
     comp(stream=True, stream_options={"include_usage": "x"}),
     bad("stream_options.include_usage")),
    ("stream with top_p 0 (refused before the stream)", comp(stream=True, top_p=0), bad("top_p")),
    ("ignore_eos a string", comp(ignore_eos="yes"), bad("ignore_eos")),
]


def raw_exchange(port, data):
    """Sends bytes as they are; (status, headers, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered before reading it all
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    answer = b"".join(chunks)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    check(lines and lines[0].startswith("HTTP/1.1 "), f"no HTTP answer: {answer[:200]!r}")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


def exchange(port, request):
    """(status, headers, body bytes) of one request, each on its own connection."""
    if request.raw is not None:
        return raw_exchange(port, request.raw)
    payload = request.payload()
    headers = {"Connection": "close"}
    if payload is not None:
        headers["Content-Type"] = "application/json"
    headers.update(request.headers)
    lines = [f"{request.method} {request.path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if payload is not None:
        lines.append(f"Content-Length: {len(payload)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    return raw_exchange(port, head + (payload or b""))


def judge(request, expect, status, headers, body):
    """'' when the answer is the expected one, else what differs; and a
    one-line account of the answer."""
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        return f"the body is not JSON: {body[:100]!r}", f"{status} {body[:60]!r}"
    if isinstance(expect, Ok):
        if status != 200 or not isinstance(parsed, dict) or not parsed.get("choices"):
            return f"expected a completion, got {status} {parsed}", f"{status} {parsed}"[:100]
        reason = parsed["choices"][0].get("finish_reason")
        got = f"200 completion ({reason}, {parsed['usage']['completion_tokens']} tokens)"
        if expect.finish_reason and reason != expect.finish_reason:
            return f"finish_reason {reason}, expected {expect.finish_reason}", got
        return "", got
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        return f"not an OpenAI error body: {parsed}", f"{status} {parsed}"[:100]
    got = f"{status} param={error['param']} code={error['code']}: {error['message']}"
    problems = []
    if status != expect.status:
        problems.append(f"status {status}, expected {expect.status}")
    want_type = ("rate_limit_error" if status == 429 else
                 "server_error" if status >= 500 else "invalid_request_error")
    if error["type"] != want_type:
        problems.append(f"type {error['type']}, expected {want_type}")
    if error["param"] != expect.param:
        problems.append(f"param {error['param']!r}, expected {expect.param!r}")
    if error["code"] != expect.code:
        problems.append(f"code {error['code']!r}, expected {expect.code!r}")
    if expect.names and expect.names not in error["message"]:
        problems.append(f"the message does not name {expect.names!r}")
    if headers.get("Content-Type") != "application/json":
        problems.append(f"Content-Type {headers.get('Content-Type')}")
    if status == 405 and not headers.get("Allow"):
        problems.append("no Allow header")
    return "; ".join(problems), got


def good_request(port):
    """The next request after a bad one: greedy, 2 tokens."""
    status, _, body = exchange(port, comp("Hello there"))
    try:
        parsed = json.loads(body)
        tokens = parsed["usage"]["completion_tokens"]
    except (ValueError, KeyError, TypeError):
        return f"{status} {body[:200]!r}"
    return "" if status == 200 and tokens == 2 else f"{status} {parsed}"


def printable(text, n):
    text = "".join(c if " " <= c < "\x7f" else "?" for c in text)
    return text if len(text) <= n else text[:n - 3] + "..."


def run(procs, port):
    print(f"\n{'case':<48} {'API':<26} {'expected':<44} got")
    print("-" * 170)
    failures = []
    for name, request, expect in CASES:
        status, headers, body = exchange(port, request)
        problem, got = judge(request, expect, status, headers, body)
        after = good_request(port)
        if after:
            problem = (problem + "; " if problem else "") + f"the next good request got {after}"
        dead = [n for n in ("worker", "scheduler") if procs.process(n).poll() is not None]
        if dead:
            problem = (problem + "; " if problem else "") + f"{dead} died"
        api = "RAW" if request.raw is not None else f"{request.method} {request.path}"
        print(f"{printable(name, 48):<48} {printable(api, 26):<26} "
              f"{printable(expect.describe(), 44):<44} {'FAIL ' if problem else ''}"
              f"{printable(got, 120)}")
        if problem:
            failures.append(f"{name}: {problem}")
        if dead:
            break
    print("-" * 170)
    print(f"{len(CASES)} HTTP cases, {len(failures)} failed; each followed by a good request")
    return failures


def main():
    scheduler, worker, model = sys.argv[1:4]
    check(served_name(model) == TINY, f"{model} is not the tiny model")
    procs = Processes(tempfile.mkdtemp(prefix="hostile-http-"))
    failures = []
    try:
        w = procs.start([worker, "--model", model, "--listen", "127.0.0.1:0", "--metrics_port",
                         "-1", "--threads", "1"], "worker", "llorch-worker: serving")
        s = procs.start([scheduler, "--listen", "127.0.0.1:0", "--metrics_port", "-1",
                         "--http_listen", "127.0.0.1:0", "--workers", f"127.0.0.1:{w['grpc']}"],
                        "scheduler", "llorch-scheduler: serving", ports=("grpc", "http"))
        port = s["http"]
        deadline = time.monotonic() + 30
        while exchange(port, Request("GET", "/health"))[0] != 200:
            check(time.monotonic() < deadline, "the worker never came up")
            time.sleep(0.05)
        check(len(CASES) >= 40, f"only {len(CASES)} cases")
        failures = run(procs, port)
    finally:
        codes = procs.stop_all()
    for name, code in codes.items():
        if code != 0:
            failures.append(f"{name} exited {code} on SIGTERM:\n{procs.log(name)[-3000:]}")
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("hostile HTTP catalogue: OK")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TestFailure as error:
        print(f"FAILED: {error}")
        sys.exit(1)
