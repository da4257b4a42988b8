#!/usr/bin/env python3
"""The chat page at GET / of llorch-scheduler --http_listen, driven in
headless Chromium (Debian's `chromium`) over the Chrome DevTools Protocol
(a small standard-library websocket client: no extra package).

Starts one llorch-worker (MODEL.gguf, else $LLORCH_DEFAULT_MODEL, else
build/testdata/tiny-f32-gqa.gguf) and a llorch-scheduler with --http_listen
127.0.0.1:0 in front of it, then:
  - GET / is 200 text/html, byte for byte services/openai/static/index.html;
  - the page's model picker lists the worker's model (GET /v1/models);
  - a question typed and sent streams its answer into the transcript: the
    text grows over several observations (a MutationObserver's log) and,
    greedy (temperature 0), equals the API's non-streaming answer to the
    same request; a second turn carries the conversation (equal to the
    API's answer to [user, assistant, user]);
  - an unknown model shows the OpenAI error body's message;
  - Stop during a long answer (ignore_eos, max_tokens 4000) aborts the fetch
    and the worker's job is cancelled (`llorch workers --format json`: no
    active or dispatched job within seconds);
  - CORS: a page of another origin (a blank page on its own port, named in
    --http_cors_origins) streams an answer through fetch() with a JSON body
    and an Authorization header (a preflight first), equal to the API's;
    the same page under an origin not named (localhost for 127.0.0.1) is
    refused by the browser;
  - with --screenshot PATH, a PNG of the page with a real answer.
Exits 77 (skipped) when chromium is not installed, or when GET / is not the
page yet (the route is not wired into services/openai/http_server.cc).

Usage: chat_page_test.py LLORCH_SCHEDULER LLORCH_WORKER LLORCH_CLI [MODEL.gguf]
                         [--screenshot PATH]
"""
import base64
import http.server
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
from processes import Processes, TestFailure, check, die_with_parent, served_name  # noqa: E402

PAGE_SOURCE = os.path.join(HERE, "static", "index.html")
SKIP = 77


class Skip(Exception):
    pass


def worker_jobs(cli, address, worker_address):
    result = subprocess.run([cli, "workers", "--scheduler", address, "--format", "json"],
                            capture_output=True, text=True, timeout=30)
    check(result.returncode == 0, f"llorch workers failed: {result.stdout}{result.stderr}")
    for w in json.loads(result.stdout):
        if w["address"] == worker_address:
            return w.get("active_jobs", 0) + w.get("waiting_jobs", 0), w.get("dispatched_jobs", 0)
    raise TestFailure(f"{worker_address} not in {result.stdout}")


def wait_jobs(cli, address, worker_address, want_busy, timeout):
    start = time.monotonic()
    while True:
        jobs, dispatched = worker_jobs(cli, address, worker_address)
        if (jobs > 0) == want_busy and (dispatched > 0) == want_busy:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TestFailure(f"worker {worker_address}: jobs {jobs}, dispatched {dispatched} "
                              f"after {timeout} s (wanted {'some' if want_busy else 'none'})")
        time.sleep(0.1)


def api_chat(http_port, body):
    request = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/v1/chat/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.load(response)["choices"][0]["message"]["content"]


class BlankPage(http.server.BaseHTTPRequestHandler):
    """Another origin for the CORS checks: an empty page."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = b"<!doctype html><title>another origin</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


# fetch() of a streamed chat answer from the current page: "STATUS BODY", or
# "blocked: ERROR" when the browser refuses the cross-origin call.
FETCH = """(async () => {
  try {
    const r = await fetch(%s, {method: 'POST',
        headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer unused'},
        body: JSON.stringify(%s)});
    return r.status + ' ' + await r.text();
  } catch (e) { return 'blocked: ' + e; }
})()"""


def streamed_content(sse):
    """The concatenated deltas of an SSE chat answer."""
    text = ""
    for line in sse.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:]).get("choices", []):
                text += choice.get("delta", {}).get("content") or ""
    return text


def check_cors(browser, page_port, http_port, name):
    body = {"model": name, "temperature": 0, "max_tokens": 16, "stream": True,
            "messages": [{"role": "user", "content": "Name a colour."}]}
    reference = api_chat(http_port, dict(body, stream=False))
    expression = FETCH % (json.dumps(f"http://127.0.0.1:{http_port}/v1/chat/completions"),
                          json.dumps(body))
    for host, allowed in (("127.0.0.1", True), ("localhost", False)):
        browser.call("Page.navigate", url=f"http://{host}:{page_port}/")
        browser.wait(f"document.readyState === 'complete' && location.hostname === '{host}'",
                     f"the page at {host}")
        result = browser.js(expression)
        if allowed:
            check(result.startswith("200 ") and result.rstrip().endswith("data: [DONE]"),
                  f"cross-origin fetch from an allowed origin: {result[:300]!r}")
            text = streamed_content(result[4:])
            check(text == reference, f"cross-origin stream {text!r}, API {reference!r}")
            print(f"CORS: http://{host}:{page_port} streamed {text!r} (= the API's)")
        else:
            check(result.startswith("blocked: "), f"fetch from an origin not allowed: {result[:300]!r}")
            print(f"CORS: http://{host}:{page_port} (not allowed) refused by the browser")


# --- Chrome DevTools Protocol over a minimal websocket client ---------------

class WebSocket:
    """RFC 6455 client: masked text frames out; text/continuation/ping/close in."""

    def __init__(self, url):
        m = re.match(r"ws://([^/:]+):(\d+)(/.*)", url)
        check(m, f"websocket url {url}")
        self.sock = socket.create_connection((m.group(1), int(m.group(2))), timeout=120)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {m.group(3)} HTTP/1.1\r\nHost: {m.group(1)}:{m.group(2)}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            check(chunk, "websocket handshake: connection closed")
            head += chunk
        check(head.startswith(b"HTTP/1.1 101"), f"websocket handshake: {head!r}")

    def _exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            check(chunk, "websocket closed")
            data += chunk
        return data

    def _send_frame(self, opcode, payload):
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send(self, text):
        self._send_frame(0x1, text.encode())

    def recv(self):
        message = b""
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            payload = self._exact(n)
            opcode = b0 & 0x0F
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode == 0x8:
                raise TestFailure("websocket closed by chromium")
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if b0 & 0x80:
                    return message.decode()

    def close(self):
        self.sock.close()


class Browser:
    def __init__(self, chromium, tmp):
        self.process = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-dev-shm-usage", "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--user-data-dir={os.path.join(tmp, 'chromium')}", "--window-size=960,900",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            preexec_fn=die_with_parent)
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                raise TestFailure(f"chromium exited ({self.process.returncode})")
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if m:
                port = int(m.group(1))
        check(port, "chromium: no DevTools port")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        check(pages, "chromium: no page target")
        self.ws = WebSocket(pages[0]["webSocketDebuggerUrl"])
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                check("error" not in message, f"{method}: {message.get('error')}")
                return message["result"]

    def js(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        check("exceptionDetails" not in result, f"{expression}: {result.get('exceptionDetails')}")
        return result["result"].get("value")

    def wait(self, expression, what, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.05)
        raise TestFailure(f"timed out waiting for {what} ({expression})")

    def close(self):
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001
            pass
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


# The page's transcript, watched from inside: the last assistant message's
# text length at each mutation, with its time.
OBSERVE = """(() => {
  window.__log = [];
  const t = document.getElementById('transcript');
  new MutationObserver(() => {
    const last = [...t.querySelectorAll('.msg.assistant .content')].pop();
    if (last) window.__log.push([performance.now(), last.textContent.length]);
  }).observe(t, {childList: true, subtree: true, characterData: true});
  return true;
})()"""

LAST = "[...document.querySelectorAll('#transcript .msg.assistant')].pop()"


def send(browser, text, temperature, max_tokens, ignore_eos=False):
    browser.js(f"""(() => {{
      document.getElementById('temperature').value = {json.dumps(str(temperature))};
      document.getElementById('max_tokens').value = {json.dumps(str(max_tokens))};
      document.getElementById('ignore_eos').checked = {json.dumps(ignore_eos)};
      document.getElementById('message').value = '';
      document.getElementById('message').focus();
      window.__log = [];
      window.__count = document.querySelectorAll('#transcript .msg.assistant').length;
      return true; }})()""")
    browser.call("Input.insertText", text=text)
    check(browser.js("document.getElementById('message').value") == text, "message box text")
    browser.js("document.getElementById('send').click(), true")
    browser.wait("document.querySelectorAll('#transcript .msg.assistant').length > window.__count"
                 " || !!document.getElementById('error').textContent", "the answer to start")


def wait_answer(browser, timeout=300):
    state = browser.wait(f"(() => {{ const m = {LAST}; return m && m.dataset.state !== 'streaming'"
                         " && m.dataset.state; })()", "the answer to end", timeout)
    text = browser.js(f"{LAST}.querySelector('.content').textContent")
    return state, text


def run(scheduler_bin, worker_bin, cli, model, screenshot, tmp):
    chromium = os.environ.get("LLORCH_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        raise Skip("chromium is not installed (Debian package `chromium`, tools/setup.sh)")
    name = served_name(model)
    procs = Processes(tmp)
    browser = None
    page_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), BlankPage)
    threading.Thread(target=page_server.serve_forever, daemon=True).start()
    page_port = page_server.server_address[1]
    try:
        wport = procs.start([worker_bin, "--model", model, "--listen", "127.0.0.1:0",
                             "--metrics_port", "-1", "--threads", "1"],
                            "worker", "llorch-worker: serving")["grpc"]
        ports = procs.start([scheduler_bin, "--listen", "127.0.0.1:0", "--metrics_port", "-1",
                             "--workers", f"127.0.0.1:{wport}", "--http_listen", "127.0.0.1:0",
                             "--http_cors_origins", f"http://127.0.0.1:{page_port}"],
                            "scheduler", "llorch-scheduler: serving", ports=("grpc", "http"))
        procs.wait_log("scheduler", rf"up \(model {re.escape(name)}\)", f"{name} up line",
                       timeout=60)
        address, worker_address = f"127.0.0.1:{ports['grpc']}", f"127.0.0.1:{wport}"
        url = f"http://127.0.0.1:{ports['http']}/"

        # GET /: the page, byte for byte.
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                status, ctype, body = r.status, r.headers.get("Content-Type", ""), r.read()
        except urllib.error.HTTPError as error:
            status, ctype, body = error.code, error.headers.get("Content-Type", ""), error.read()
        page = open(PAGE_SOURCE, "rb").read()
        if status != 200 or not ctype.startswith("text/html"):
            raise Skip(f"GET / is not the chat page yet ({status} {ctype}: {body[:200]!r}); "
                       "wire ChatPageHtml() into services/openai/http_server.cc")
        check(ctype.replace(" ", "").lower() == "text/html;charset=utf-8", f"GET /: {ctype}")
        check(body == page, "GET /: not services/openai/static/index.html as built "
                            "(rebuild llorch-scheduler?)")
        print("GET /: 200 text/html; charset=utf-8, static/index.html")

        browser = Browser(chromium, tmp)
        browser.call("Page.navigate", url=url)
        options = browser.wait("(() => { const o = [...document.querySelectorAll('#model option')]"
                               ".map(o => o.value).filter(v => v); return o.length && o; })()",
                               "the model list")
        check(options == [name], f"model picker: {options}, expected [{name!r}]")
        check(browser.js("document.getElementById('error').textContent") == "", "error at load")
        print(f"model picker: {options}")
        browser.js(OBSERVE)

        # A greedy answer, streamed, equal to the API's.
        question = "What is the capital of France? Answer in one sentence."
        send(browser, question, temperature=0, max_tokens=48)
        state, text = wait_answer(browser)
        shown = browser.js("document.getElementById('error').textContent")
        check(state == "done", f"first answer ended {state!r}: {shown}")
        log = browser.js("window.__log")
        lengths = []
        for _, n in log:
            if n and (not lengths or n != lengths[-1]):
                lengths.append(n)
        check(lengths == sorted(lengths) and len(lengths) >= 3,
              f"the text did not grow over several observations: {lengths}")
        check(log[-1][0] - log[0][0] > 0, f"all at once: {log}")
        reference = api_chat(ports["http"], {"model": name, "temperature": 0, "max_tokens": 48,
                                             "messages": [{"role": "user", "content": question}]})
        check(text == reference, f"page: {text!r}, API: {reference!r}")
        print(f"streamed answer grew over {len(lengths)} observations to {text!r} (= the API's)")

        # The next turn carries the conversation.
        follow = "And of Italy?"
        send(browser, follow, temperature=0, max_tokens=24)
        state, text2 = wait_answer(browser)
        check(state == "done", f"second answer ended {state!r}")
        reference = api_chat(ports["http"], {
            "model": name, "temperature": 0, "max_tokens": 24,
            "messages": [{"role": "user", "content": question},
                         {"role": "assistant", "content": text},
                         {"role": "user", "content": follow}]})
        check(text2 == reference, f"second turn: page {text2!r}, API with history {reference!r}")
        print(f"second turn with the conversation: {text2!r} (= the API's)")
        if screenshot:
            png = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
            with open(screenshot, "wb") as f:
                f.write(png)
            print(f"screenshot: {screenshot} ({len(png)} bytes)")

        # An error: the OpenAI error body's message is shown.
        browser.js("(() => { const s = document.getElementById('model');"
                   " s.add(new Option('no-such-model', 'no-such-model')); s.value = 'no-such-model';"
                   " return true; })()")
        send(browser, "Hello", temperature=0, max_tokens=4)
        error = browser.wait("document.getElementById('error').textContent", "an error")
        try:
            api_chat(ports["http"], {"model": "no-such-model", "max_tokens": 4,
                                     "messages": [{"role": "user", "content": "Hello"}]})
            raise TestFailure("no error from the API for an unknown model")
        except urllib.error.HTTPError as http_error:
            message = json.loads(http_error.read())["error"]["message"]
        check(error == f"Error: {message}", f"error shown: {error!r}, API's message {message!r}")
        check(browser.js("document.getElementById('send').disabled") is False, "Send after error")
        print(f"unknown model: {error!r}")
        browser.js(f"document.getElementById('model').value = {json.dumps(name)}, true")

        # Stop mid-answer: the fetch is aborted, the job cancelled.
        send(browser, "Tell me a very long story about a dragon.", temperature=0.7,
             max_tokens=4000, ignore_eos=True)
        browser.wait(f"(() => {{ const m = {LAST}; return m && m.dataset.state === 'streaming'"
                     " && m.querySelector('.content').textContent.length > 20; })()",
                     "a long answer to stream")
        # A model with a small context (the tiny test model: 256) may end first.
        deadline = time.monotonic() + 30
        ended_first = False
        while not ended_first:
            jobs, dispatched = worker_jobs(cli, address, worker_address)
            if jobs and dispatched:
                break
            if browser.js(f"{LAST}.dataset.state") != "streaming":
                finish = browser.js(f"{LAST}.dataset.finish")
                check(finish == "length", f"the long answer ended ({finish!r}) before Stop")
                print("Stop: not checked: the answer reached the model's context before the job "
                      "was seen running (use SmolLM2, $LLORCH_DEFAULT_MODEL)")
                ended_first = True
                break
            check(time.monotonic() < deadline, "the long answer's job was never seen running")
            time.sleep(0.05)
        if not ended_first:
            before = browser.js(f"{LAST}.querySelector('.content').textContent.length")
            browser.js("document.getElementById('stop').click(), true")
            state, partial = wait_answer(browser, timeout=10)
            check(state == "stopped", f"after Stop: {state!r}")
            check(len(partial) >= before, "partial answer lost")
            took = wait_jobs(cli, address, worker_address, want_busy=False, timeout=5)
            check(browser.js("document.getElementById('send').disabled") is False, "Send after Stop")
            print(f"Stop after {len(partial)} characters: the job ended within {took:.1f} s")
        check_cors(browser, page_port, ports["http"], name)
    finally:
        page_server.shutdown()
        if browser:
            browser.close()
        codes = procs.stop_all()
    for pname, code in codes.items():
        check(code == 0, f"{pname} exited with {code} on SIGTERM:\n{procs.log(pname)[-3000:]}")


def main():
    args = sys.argv[1:]
    screenshot = None
    if "--screenshot" in args:
        i = args.index("--screenshot")
        screenshot = os.path.abspath(args[i + 1])
        del args[i:i + 2]
    if len(args) not in (3, 4):
        sys.exit(__doc__)
    model = args[3] if len(args) == 4 else ""
    if not model:
        model = os.environ.get("LLORCH_DEFAULT_MODEL", "")
        if not os.path.isfile(model):
            model = os.path.join(ROOT, "build", "testdata", "tiny-f32-gqa.gguf")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    with tempfile.TemporaryDirectory(prefix="llorch-chat-page-") as tmp:
        try:
            run(*args[:3], model, screenshot, tmp)
        except Skip as skip:
            print(f"SKIP: {skip}")
            return SKIP
        except (TestFailure, subprocess.SubprocessError, ValueError, OSError) as error:
            print(f"FAIL: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
