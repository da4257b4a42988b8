#!/usr/bin/env python3
"""llorch-scheduler's OpenAI-compatible HTTP API (--http_listen) through the
official `openai` Python client and curl, over real processes.

Starts two llorch-workers (a random-weight tiny model, and SmolLM2 from
$LLORCH_DEFAULT_MODEL) and a llorch-scheduler with --http_listen
127.0.0.1:0 in front of both, then:
  - /v1/models lists both; /health is 200;
  - greedy chat and completions, streamed and not, give the text, finish
    reason and token counts of gRPC Generate for the same request
    (`llorch generate --scheduler ... --temperature 0 --format jsonl`), and
    log-probs equal to gRPC's;
  - streamed chunks arrive as they are generated (several chunks spread over
    the generation; their concatenation is the text); include_usage gives a
    last chunk with the usage;
  - a conversation's second turn reports the prompt tokens it found in the
    worker's prefix cache (usage.prompt_tokens_details.cached_tokens);
  - curl -N sees the server-sent events as they come;
  - an unknown model raises openai.NotFoundError, streaming or not;
  - malformed bodies, wrong methods and unknown routes get their documented
    status and an OpenAI error body;
  - a client that closes its stream, or times out before a non-streaming
    answer, gets its job cancelled: the worker's active_jobs (ListWorkers
    through `llorch workers --format json`) drops to 0 within seconds;
then a second scheduler with --tls_cert/--tls_key and --auth_tokens_file:
HTTPS, 401 (openai.AuthenticationError) without a valid bearer token, /health
without one. On SIGTERM the first scheduler answers 503 to /health and new
completions while a running stream finishes. Every process exits 0 on SIGTERM.

Usage: openai_api_test.py LLORCH_SCHEDULER LLORCH_WORKER LLORCH_CLI TINY.gguf
"""
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "support"))
from processes import Processes, TestFailure, check, served_name  # noqa: E402

import httpx2  # noqa: E402  (the openai client's HTTP library)
import openai  # noqa: E402

TINY = "tiny-f32-gqa"


def grpc_generate(cli, address, model, max_tokens, prompt=None, chat=None, extra=()):
    """The reference: gRPC Generate through `llorch generate`; (text, tokens, finished)."""
    argv = [cli, "generate", "--scheduler", address, "--model", model,
            "--max-tokens", str(max_tokens), "--temperature", "0", "--format", "jsonl", *extra]
    argv += ["--prompt", prompt] if prompt is not None else ["--chat", f"user:{chat}"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    check(result.returncode == 0, f"{argv} failed:\n{result.stdout}{result.stderr}")
    events = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    tokens = [e for e in events if e["event"] == "token"]
    finished = events[-1]
    check(finished["event"] == "finished", f"no finished line: {events}")
    return "".join(t["text"] for t in tokens), tokens, finished


def openai_reason(finished):
    return {"eos": "stop", "stop": "stop", "length": "length"}[finished["reason"]]


def check_same(what, got_text, got_reason, got_usage, ref):
    text, _, finished = ref
    check(got_text == text, f"{what}: text {got_text!r}, gRPC gave {text!r}")
    check(got_reason == openai_reason(finished),
          f"{what}: finish_reason {got_reason!r}, gRPC finished {finished['reason']!r}")
    if got_usage is not None:
        check(got_usage.prompt_tokens == finished["prompt_tokens"] and
              got_usage.completion_tokens == finished["completion_tokens"] and
              got_usage.total_tokens == finished["prompt_tokens"] + finished["completion_tokens"],
              f"{what}: usage {got_usage}, gRPC finished {finished}")


def stream_chunks(stream):
    """(arrival time, chunk) of every chunk of an openai stream."""
    return [(time.monotonic(), chunk) for chunk in stream]


def check_streamed_chat(what, chunks, ref, include_usage):
    check(len(chunks) >= 3, f"{what}: {len(chunks)} chunks")
    first = chunks[0][1]
    check(first.object == "chat.completion.chunk", f"{what}: first chunk {first}")
    check(first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == "",
          f"{what}: first chunk's delta {first.choices[0].delta}")
    usage_chunk = chunks[-1][1] if include_usage else None
    body = chunks[1:-1] if include_usage else chunks[1:]
    check(all(c.id == first.id and c.id.startswith("chatcmpl-job-") for _, c in chunks),
          f"{what}: ids {[c.id for _, c in chunks]}")
    content = [c.choices[0].delta.content for _, c in body[:-1]]
    check(all(piece for piece in content), f"{what}: an empty content chunk: {content}")
    final = body[-1][1].choices[0]
    check(final.finish_reason is not None and not final.delta.content,
          f"{what}: last chunk {body[-1][1]}")
    check(all(c.choices[0].finish_reason is None for _, c in body[:-1]),
          f"{what}: finish_reason before the end")
    usage = None
    if include_usage:
        check(usage_chunk.choices == [] and usage_chunk.usage is not None,
              f"{what}: usage chunk {usage_chunk}")
        check(all(c.usage is None for _, c in chunks[:-1]), f"{what}: usage before the end")
        usage = usage_chunk.usage
    check_same(what, "".join(content), final.finish_reason, usage, ref)
    return [t for t, _ in body[:-1]]


def check_arrival_spread(what, request_time, arrivals):
    """Chunks came as the tokens were generated, not all at the end."""
    check(len(arrivals) >= 8, f"{what}: only {len(arrivals)} content chunks")
    spread = arrivals[-1] - arrivals[0]
    total = arrivals[-1] - request_time
    check(spread >= 0.4 * total,
          f"{what}: {len(arrivals)} chunks arrived within {spread * 1000:.1f} ms of a "
          f"{total * 1000:.1f} ms answer: buffered, not streamed")
    return spread, total


def raw_request(port, method, path, body=None, headers=None):
    """(status, headers, parsed JSON body) of one request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    payload = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    conn.request(method, path, body=payload,
                 headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        raise TestFailure(f"{method} {path}: body is not JSON: {data[:200]!r}")
    return response.status, dict(response.getheaders()), parsed


def check_error_body(what, body):
    check(isinstance(body, dict) and isinstance(body.get("error"), dict), f"{what}: body {body}")
    error = body["error"]
    check(isinstance(error.get("message"), str) and error["message"], f"{what}: {error}")
    check(isinstance(error.get("type"), str) and error["type"], f"{what}: {error}")
    check("param" in error and "code" in error, f"{what}: {error}")
    return error


def worker_active_jobs(cli, address, worker_address):
    result = subprocess.run([cli, "workers", "--scheduler", address, "--format", "json"],
                            capture_output=True, text=True, timeout=30)
    check(result.returncode == 0, f"llorch workers failed: {result.stdout}{result.stderr}")
    for w in json.loads(result.stdout):
        if w["address"] == worker_address:
            return w.get("active_jobs", 0) + w.get("waiting_jobs", 0), w.get("dispatched_jobs", 0)
    raise TestFailure(f"{worker_address} not in {result.stdout}")


def wait_jobs(cli, address, worker_address, want_busy, timeout):
    """Waits until the worker runs a job (want_busy) or none, and the
    scheduler has none on it; returns the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        jobs, dispatched = worker_active_jobs(cli, address, worker_address)
        if (jobs > 0) == want_busy and (dispatched > 0) == want_busy:
            return time.monotonic() - start
        time.sleep(0.1)
    raise TestFailure(f"worker {worker_address}: jobs {jobs}, dispatched {dispatched} after "
                      f"{timeout} s (wanted {'some' if want_busy else 'none'})")


def test_models_and_health(client, http_port, models):
    listed = client.models.list()
    ids = sorted(m.id for m in listed.data)
    check(ids == sorted(models), f"/v1/models: {ids}, expected {sorted(models)}")
    for m in listed.data:
        check(m.object == "model" and m.owned_by == "llorch" and isinstance(m.created, int),
              f"/v1/models entry {m}")
    check(client.models.retrieve(models[0]).id == models[0], "GET /v1/models/ID")
    status, _, body = raw_request(http_port, "GET", "/health")
    check(status == 200 and body["status"] == "ok" and body["workers_up"] == 2,
          f"/health: {status} {body}")
    print(f"models: {ids}; health: {body}")


def test_same_as_grpc(client, cli, address, model, chat, prompt, max_tokens):
    # Not streamed.
    ref = grpc_generate(cli, address, model, max_tokens, chat=chat)
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": chat}],
                                       max_tokens=max_tokens, temperature=0)
    check(r.object == "chat.completion" and r.id.startswith("chatcmpl-job-") and r.model == model,
          f"chat: {r}")
    check(r.choices[0].message.role == "assistant", f"chat: {r.choices[0]}")
    check_same(f"{model} chat", r.choices[0].message.content, r.choices[0].finish_reason,
               r.usage, ref)
    print(f"{model} chat = gRPC: {r.choices[0].message.content!r} ({r.choices[0].finish_reason}, "
          f"{r.usage.prompt_tokens}+{r.usage.completion_tokens} tokens)")

    # Streamed, with usage.
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": chat}], max_tokens=max_tokens,
        temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = stream_chunks(stream)
    check_streamed_chat(f"{model} streamed chat", chunks, ref, include_usage=True)
    print(f"{model} streamed chat = gRPC: {len(chunks)} chunks, usage {chunks[-1][1].usage}")

    # Completions, both ways, with a content part form of the prompt too.
    ref = grpc_generate(cli, address, model, max_tokens, prompt=prompt)
    r = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens,
                                  temperature=0)
    check(r.object == "text_completion" and r.id.startswith("cmpl-job-"), f"completion: {r}")
    check_same(f"{model} completion", r.choices[0].text, r.choices[0].finish_reason, r.usage, ref)
    r = client.completions.create(model=model, prompt=[prompt], max_tokens=max_tokens,
                                  temperature=0)
    check_same(f"{model} completion [prompt]", r.choices[0].text, r.choices[0].finish_reason,
               r.usage, ref)
    stream = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens,
                                       temperature=0, stream=True)
    chunks = [c for _, c in stream_chunks(stream)]
    check(all(c.object == "text_completion" for c in chunks), f"completion chunks: {chunks}")
    texts = [c.choices[0].text for c in chunks[:-1]]
    check(all(texts), f"an empty completion chunk: {texts}")
    check(chunks[-1].choices[0].text == "", f"last completion chunk: {chunks[-1]}")
    check_same(f"{model} streamed completion", "".join(texts),
               chunks[-1].choices[0].finish_reason, None, ref)
    print(f"{model} completion = gRPC: {r.choices[0].text!r}; streamed in {len(chunks)} chunks")


def test_prefix_cache(client, model):
    """A conversation's second turn maps the blocks its first turn computed:
    usage.prompt_tokens_details.cached_tokens counts them (whole 16-token
    blocks), and the same request twice gives the same greedy text."""
    system = (f"Session {time.time_ns()}. You are a concise assistant who answers questions "
              "about geography in one short sentence, without lists or greetings.")
    turn1 = [{"role": "system", "content": system},
             {"role": "user", "content": "What is the capital of Italy?"}]
    first = client.chat.completions.create(model=model, messages=turn1, max_tokens=16,
                                           temperature=0)
    check(first.usage.prompt_tokens_details.cached_tokens == 0,
          f"a new conversation found cached tokens: {first.usage}")
    turn2 = turn1 + [{"role": "assistant", "content": first.choices[0].message.content},
                     {"role": "user", "content": "And of Spain?"}]
    answers = []
    for attempt in range(2):
        r = client.chat.completions.create(model=model, messages=turn2, max_tokens=16,
                                           temperature=0)
        cached = r.usage.prompt_tokens_details.cached_tokens
        check(0 < cached < r.usage.prompt_tokens and cached % 16 == 0,
              f"turn 2 (attempt {attempt}): cached_tokens {cached} of {r.usage.prompt_tokens}")
        answers.append((r.choices[0].message.content, cached))
    check(answers[0][0] == answers[1][0] and answers[1][1] >= answers[0][1],
          f"the same turn twice: {answers}")
    print(f"{model} prefix cache: turn 2 reused {answers[0][1]} then {answers[1][1]} of "
          f"{r.usage.prompt_tokens} prompt tokens; answer {answers[0][0]!r}")


def test_logprobs(client, cli, address, model):
    _, tokens, _ = grpc_generate(cli, address, model, 6, prompt="Hello there",
                                 extra=["--logprobs", "2", "--ignore-eos"])
    r = client.completions.create(model=model, prompt="Hello there", max_tokens=6, temperature=0,
                                  logprobs=2, extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    check(lp.tokens == [t["text"] for t in tokens], f"logprobs tokens {lp.tokens}")
    check(all(abs(a - t["logprob"]) < 1e-6 for a, t in zip(lp.token_logprobs, tokens)),
          f"token_logprobs {lp.token_logprobs} vs {[t['logprob'] for t in tokens]}")
    check(all(len(top) >= 1 for top in lp.top_logprobs), f"top_logprobs {lp.top_logprobs}")
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                       max_tokens=4, temperature=0, logprobs=True,
                                       top_logprobs=2, extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    check(len(content) == r.usage.completion_tokens == 4, f"chat logprobs {content}")
    check(all(len(c.top_logprobs) == 2 and c.logprob <= 0 for c in content),
          f"chat logprobs {content}")
    print(f"logprobs = gRPC's: {lp.token_logprobs}")


def test_streaming_is_live(client, model):
    started = time.monotonic()
    stream = client.completions.create(model=model, prompt="Once upon a time", max_tokens=48,
                                       temperature=0, stream=True, extra_body={"ignore_eos": True})
    arrivals = [t for t, c in stream_chunks(stream) if c.choices and c.choices[0].text]
    spread, total = check_arrival_spread("openai stream", started, arrivals)
    print(f"streaming is live: {len(arrivals)} chunks over {spread * 1000:.0f} ms of a "
          f"{total * 1000:.0f} ms answer")


def test_curl(http_port, model, ref_text):
    body = {"model": model, "prompt": "Once upon a time", "max_tokens": 32, "temperature": 0,
            "stream": True, "ignore_eos": True}
    started = time.monotonic()
    curl = subprocess.Popen(["curl", "-sS", "-N", "-i", "-H", "Content-Type: application/json",
                             "-d", json.dumps(body),
                             f"http://127.0.0.1:{http_port}/v1/completions"],
                            stdout=subprocess.PIPE, text=True)
    headers, events, arrivals = [], [], []
    in_headers = True
    for line in curl.stdout:
        line = line.rstrip("\r\n")
        if in_headers:
            if not line:
                in_headers = False
            else:
                headers.append(line.lower())
            continue
        if line.startswith("data: "):
            events.append(line[len("data: "):])
            arrivals.append(time.monotonic())
        else:
            check(line == "", f"curl: unexpected line {line!r}")
    check(curl.wait(timeout=60) == 0, f"curl exited {curl.returncode}")
    check(headers[0].startswith("http/1.1 200"), f"curl: {headers}")
    check("content-type: text/event-stream" in headers, f"curl headers: {headers}")
    check("transfer-encoding: chunked" in headers, f"curl headers: {headers}")
    check(events[-1] == "[DONE]", f"curl: last event {events[-1]!r}")
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["text"] for c in chunks)
    check(text == ref_text, f"curl text {text!r}, gRPC gave {ref_text!r}")
    check_arrival_spread("curl -N", started, arrivals[:-2])  # the tokens: not the end, [DONE]
    print(f"curl -N: {len(events)} events, text = gRPC's")


def test_malformed(http_port, model):
    chat = "/v1/chat/completions"
    completions = "/v1/completions"
    msgs = [{"role": "user", "content": "hi"}]
    cases = [
        ("POST", chat, "{not json", 400, None, None),
        ("POST", chat, "[1, 2]", 400, None, None),
        ("POST", chat, {"messages": msgs}, 400, "model", None),
        ("POST", chat, {"model": model}, 400, "messages", None),
        ("POST", chat, {"model": model, "messages": "hi"}, 400, "messages", None),
        ("POST", chat, {"model": model, "messages": [{"role": "user", "content": 42}]}, 400,
         "messages[0].content", None),
        ("POST", chat, {"model": model, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "x"}}]}]}, 400,
         "messages[0].content[0].type", None),
        ("POST", chat, {"model": model, "messages": msgs, "max_tokens": "ten"}, 400, "max_tokens",
         None),
        ("POST", chat, {"model": model, "messages": msgs, "temperature": -1}, 400, "temperature",
         None),
        ("POST", chat, {"model": model, "messages": msgs, "top_p": 1.5}, 400, "top_p", None),
        ("POST", chat, {"model": model, "messages": msgs, "n": 3}, 400, "n", None),
        ("POST", chat, {"model": model, "messages": msgs, "logprobs": True, "top_logprobs": 50},
         400, "top_logprobs", None),
        ("POST", chat, {"model": model, "messages": msgs, "stream": "yes"}, 400, "stream", None),
        ("POST", completions, {"model": model, "prompt": ""}, 400, "prompt", None),
        ("POST", completions, {"model": model, "prompt": ["a", "b"]}, 400, "prompt", None),
        ("POST", completions, {"model": model, "prompt": "x", "stop": ["s"] * 17}, 400, "stop",
         None),
        ("POST", completions, {"model": model, "prompt": "x", "stop": 7}, 400, "stop", None),
        ("POST", completions, {"model": "no-such-model", "prompt": "x"}, 404, "model",
         "model_not_found"),
        ("POST", completions, {"model": TINY, "prompt": [10 ** 9]}, 400, None, None),
        ("GET", chat, None, 405, None, "method_not_allowed"),
        ("PUT", "/v1/models", "", 405, None, "method_not_allowed"),
        ("GET", "/v1/engines", None, 404, None, None),
        ("POST", "/v2/chat/completions", "{}", 404, None, None),
    ]
    for method, path, body, status, param, code in cases:
        what = f"{method} {path} {str(body)[:60]}"
        got, headers, parsed = raw_request(http_port, method, path, body)
        check(got == status, f"{what}: status {got}, expected {status}: {parsed}")
        check(headers.get("Content-Type") == "application/json", f"{what}: headers {headers}")
        error = check_error_body(what, parsed)
        if param is not None:
            check(error["param"] == param, f"{what}: param {error['param']!r}, expected {param!r}")
        if code is not None:
            check(error["code"] == code, f"{what}: code {error['code']!r}, expected {code!r}")
        if status == 400:
            check(error["type"] == "invalid_request_error", f"{what}: {error}")
    print(f"malformed: {len(cases)} requests got their status and an OpenAI error body")


def test_not_found(client):
    for stream in (False, True):
        try:
            client.chat.completions.create(model="no-such-model",
                                           messages=[{"role": "user", "content": "hi"}],
                                           stream=stream)
        except openai.NotFoundError as error:
            check(error.status_code == 404 and error.code == "model_not_found",
                  f"NotFoundError {error}")
        else:
            raise TestFailure(f"no NotFoundError for an unknown model (stream={stream})")
    try:
        client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "hi"}],
                                       n=2)
    except openai.BadRequestError as error:
        check(error.param == "n", f"BadRequestError {error}")
    else:
        raise TestFailure("no BadRequestError for n=2")
    print("unknown model: openai.NotFoundError; n=2: openai.BadRequestError")


def test_disconnects(client, cli, address, model, worker_address, base_url):
    # Streaming: the client reads a few chunks and closes the stream.
    stream = client.completions.create(model=model, prompt="Once upon a time", max_tokens=3000,
                                       temperature=0, stream=True, extra_body={"ignore_eos": True})
    read = 0
    for _ in stream:
        read += 1
        if read == 5:
            break
    wait_jobs(cli, address, worker_address, want_busy=True, timeout=10)
    stream.close()
    took = wait_jobs(cli, address, worker_address, want_busy=False, timeout=5)
    print(f"closed stream after {read} chunks: the job ended on the worker within {took:.1f} s")

    # Not streaming: the client gives up waiting (its timeout) and hangs up.
    impatient = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=2.0)
    try:
        impatient.completions.create(model=model, prompt="Once upon a time", max_tokens=3000,
                                     temperature=0, extra_body={"ignore_eos": True})
        raise TestFailure("a 3000-token completion answered within 2 s")
    except openai.APITimeoutError:
        pass
    took = wait_jobs(cli, address, worker_address, want_busy=False, timeout=5)
    print(f"client timeout before a non-streaming answer: the job ended within {took:.1f} s")

    # Raw socket: hang up while the job still streams.
    sock = socket.create_connection(("127.0.0.1", int(base_url.split(":")[2].split("/")[0])))
    body = json.dumps({"model": model, "prompt": "Once upon a time", "max_tokens": 3000,
                       "stream": True, "ignore_eos": True})
    sock.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  f"\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode())
    got = b""
    while got.count(b"data: ") < 3:
        got += sock.recv(4096)
    sock.close()
    took = wait_jobs(cli, address, worker_address, want_busy=False, timeout=5)
    print(f"socket closed mid-stream: the job ended within {took:.1f} s")


def test_tls_and_tokens(procs, scheduler_bin, cli, tmp, worker_ports):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    result = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
         "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        capture_output=True, text=True)
    check(result.returncode == 0, f"openssl: {result.stderr}")
    tokens = os.path.join(tmp, "tokens")
    with open(tokens, "w") as f:
        f.write("# test token\ns3cret-token\n")
    ports = procs.start(
        [scheduler_bin, "--listen", "127.0.0.1:0", "--metrics_port", "-1",
         "--workers", ",".join(f"127.0.0.1:{p}" for p in worker_ports),
         "--http_listen", "127.0.0.1:0", "--tls_cert", cert, "--tls_key", key,
         "--auth_tokens_file", tokens],
        "scheduler-tls", "llorch-scheduler: serving", ports=("grpc", "http"))
    log = procs.log("scheduler-tls")
    check(re.search(r"http listening on port \d+ \(tls on, 1 bearer tokens", log),
          f"no TLS http listening line:\n{log}")
    procs.wait_log("scheduler-tls", rf"up \(model {TINY}\)", "worker up line")
    base_url = f"https://127.0.0.1:{ports['http']}/v1"
    context = ssl.create_default_context(cafile=cert)

    def client(api_key):
        return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60,
                             http_client=httpx2.Client(verify=context))

    for bad in ("wrong-token", ""):
        try:
            client(bad or "x").completions.create(model=TINY, prompt="Hello", max_tokens=2)
            raise TestFailure(f"no 401 with token {bad!r}")
        except openai.AuthenticationError as error:
            check(error.status_code == 401, f"{error}")
    try:
        client("wrong-token").models.list()
        raise TestFailure("/v1/models without a valid token")
    except openai.AuthenticationError:
        pass
    r = client("s3cret-token").completions.create(model=TINY, prompt="Hello", max_tokens=3,
                                                  temperature=0)
    check(r.usage.completion_tokens == 3, f"with the token: {r}")
    stream = client("s3cret-token").chat.completions.create(
        model=TINY, messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True)
    check(len(list(stream)) >= 2, "TLS stream")

    # curl over HTTPS: no token 401 (OpenAI body), /health without one 200.
    def curl(path, *args):
        result = subprocess.run(["curl", "-sS", "--cacert", cert, "-w", "\n%{http_code}", *args,
                                 f"https://127.0.0.1:{ports['http']}{path}"],
                                capture_output=True, text=True, timeout=60)
        check(result.returncode == 0, f"curl {path}: {result.stderr}")
        body, status = result.stdout.rsplit("\n", 1)
        return int(status), json.loads(body)

    status, body = curl("/v1/completions", "-H", "Content-Type: application/json",
                        "-d", json.dumps({"model": TINY, "prompt": "x"}))
    check(status == 401, f"no token: {status} {body}")
    check(check_error_body("no token", body)["code"] == "invalid_api_key", f"{body}")
    status, body = curl("/health")
    check(status == 200 and body["status"] == "ok", f"/health over TLS: {status} {body}")
    # Plain HTTP on the TLS port is refused.
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/health", timeout=5).read()
        raise TestFailure("plain HTTP answered on the TLS port")
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, OSError):
        pass
    print("TLS + tokens: 401 without a valid token (openai.AuthenticationError), "
          "answers with it, /health needs none")


def test_drain(procs, http_port, model):
    """SIGTERM: /health and new completions answer 503 while a running stream
    finishes, then the scheduler exits 0."""
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{http_port}/v1", api_key="unused",
                           max_retries=0, timeout=120)
    stream = client.completions.create(model=model, prompt="Once upon a time", max_tokens=40,
                                       temperature=0, stream=True, extra_body={"ignore_eos": True},
                                       stream_options={"include_usage": True})
    chunks = iter(stream)
    next(chunks)  # the answer started
    scheduler = procs.process("scheduler")
    scheduler.send_signal(signal.SIGTERM)
    procs.wait_log("scheduler", "signal 15: draining", "draining line")
    status, _, body = raw_request(http_port, "GET", "/health")
    check(status == 503 and body["status"] == "unavailable", f"/health draining: {status} {body}")
    status, _, body = raw_request(http_port, "POST", "/v1/completions",
                                  {"model": model, "prompt": "x"})
    check(status == 503, f"a completion while draining: {status} {body}")
    rest = list(chunks)
    check(rest[-1].usage is not None and rest[-1].usage.completion_tokens == 40,
          f"the stream did not finish during the drain: {rest[-2:]}")
    check(rest[-2].choices[0].finish_reason == "length", f"last chunk {rest[-2]}")
    code = scheduler.wait(timeout=30)
    check(code == 0, f"llorch-scheduler exited {code} after the drain")
    print("drain: /health and new completions 503, the running stream finished, exit 0")


def run(scheduler_bin, worker_bin, cli, tiny_model, tmp):
    smol_model = os.environ.get("LLORCH_DEFAULT_MODEL", "")
    check(os.path.isfile(smol_model),
          f"SmolLM2 not found at LLORCH_DEFAULT_MODEL={smol_model!r} (tools/setup.sh)")
    smol = served_name(smol_model)
    procs = Processes(tmp)
    try:
        worker_ports = []
        for name, model in (("worker-tiny", tiny_model), ("worker-smol", smol_model)):
            ports = procs.start([worker_bin, "--model", model, "--listen", "127.0.0.1:0",
                                 "--metrics_port", "-1", "--threads", "1"],
                                name, "llorch-worker: serving")
            worker_ports.append(ports["grpc"])
        ports = procs.start(
            [scheduler_bin, "--listen", "127.0.0.1:0", "--metrics_port", "-1",
             "--workers", ",".join(f"127.0.0.1:{p}" for p in worker_ports),
             "--http_listen", "127.0.0.1:0"],
            "scheduler", "llorch-scheduler: serving", ports=("grpc", "http"))
        check(re.search(r"llorch-scheduler: http listening on port \d+ \(tls off",
                        procs.log("scheduler")), procs.log("scheduler"))
        for model in (TINY, smol):
            procs.wait_log("scheduler", rf"up \(model {re.escape(model)}\)", f"{model} up line")
        address = f"127.0.0.1:{ports['grpc']}"
        base_url = f"http://127.0.0.1:{ports['http']}/v1"
        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)

        test_models_and_health(client, ports["http"], [TINY, smol])
        test_same_as_grpc(client, cli, address, TINY, chat="Hello there", prompt="Hello",
                          max_tokens=12)
        test_same_as_grpc(client, cli, address, smol,
                          chat="What is the capital of France? Answer in one sentence.",
                          prompt="The capital of France is", max_tokens=40)
        test_logprobs(client, cli, address, TINY)
        test_prefix_cache(client, smol)
        test_streaming_is_live(client, smol)
        ref_text, _, _ = grpc_generate(cli, address, smol, 32, prompt="Once upon a time",
                                       extra=["--ignore-eos"])
        test_curl(ports["http"], smol, ref_text)
        test_malformed(ports["http"], smol)
        test_not_found(client)
        test_disconnects(client, cli, address, smol, f"127.0.0.1:{worker_ports[1]}", base_url)
        test_tls_and_tokens(procs, scheduler_bin, cli, tmp, worker_ports)
        test_drain(procs, ports["http"], smol)
    finally:
        codes = procs.stop_all()
    for name, code in codes.items():
        check(code == 0, f"{name} exited with {code} on SIGTERM:\n{procs.log(name)[-3000:]}")


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    with tempfile.TemporaryDirectory(prefix="llorch-openai-") as tmp:
        try:
            run(*sys.argv[1:], tmp)
        except (TestFailure, subprocess.SubprocessError, ValueError, openai.OpenAIError) as error:
            print(f"FAIL: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
