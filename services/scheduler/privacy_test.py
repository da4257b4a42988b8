#!/usr/bin/env python3
"""Logs and /metrics never carry prompt or output text, nor bearer tokens
(docs/security.md), over real processes: a scheduler with --http_listen and
--auth_tokens_file in front of two SmolLM2 workers.

Requests carry marker strings in every text field (prompt, chat messages,
stop strings) over gRPC (`llorch generate`) and HTTP (/v1/completions,
/v1/chat/completions), good and malformed ones (so error paths run too), and
HTTP calls with a wrong token. Then every process's log (stdout and stderr)
and every /metrics page must contain no marker, no generated text and no
token, while the requests themselves succeeded (or failed as they should).

Usage: privacy_test.py LLORCH_SCHEDULER LLORCH_WORKER LLORCH_CLI
"""
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scheduler_faults_test import MODEL, Cluster  # noqa: E402
from processes import TestFailure, check  # noqa: E402

MARKERS = [f"QX{n}ZEBRA{n * 7919}" for n in range(1, 9)]
TOKEN = "tok-secret-4f7e9a1c2b"
WRONG_TOKEN = "tok-wrong-88d1e0c3aa"


def http(cluster, path, body, token=TOKEN):
    request = urllib.request.Request(
        f"http://127.0.0.1:{cluster.http_port}{path}", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def grpc_generate(cluster, token_file, *args):
    argv = [cluster.cli, "generate", "--scheduler", cluster.address(), "--model", MODEL,
            "--token-file", token_file, "--max-tokens", "24", "--temperature", "0",
            "--ignore-eos", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def run(cluster, token_file):
    outputs = []
    ok = grpc_generate(cluster, token_file, "--prompt", f"Repeat after me: {MARKERS[0]}",
                       "--stop", MARKERS[1])
    check(ok.returncode == 0, f"gRPC generate failed: {ok.stderr}")
    outputs.append(ok.stdout)
    ok = grpc_generate(cluster, token_file, "--system", MARKERS[2], "--chat",
                       f"user:Say {MARKERS[3]}")
    check(ok.returncode == 0, f"gRPC chat failed: {ok.stderr}")
    outputs.append(ok.stdout)
    bad = grpc_generate(cluster, token_file, "--prompt", MARKERS[4], "--top-p", "0.5",
                        "--stop", "x" * 300)
    check(bad.returncode != 0 and "INVALID_ARGUMENT" in bad.stderr, f"not refused: {bad.stderr}")

    status, body = http(cluster, "/v1/completions",
                        {"model": MODEL, "prompt": f"Echo {MARKERS[5]}", "max_tokens": 24,
                         "temperature": 0, "ignore_eos": True})
    check(status == 200, f"completion: {status} {body}")
    outputs.append(body["choices"][0]["text"])
    status, body = http(cluster, "/v1/chat/completions",
                        {"model": MODEL, "messages": [{"role": "user", "content": MARKERS[6]}],
                         "max_tokens": 24, "temperature": 0})
    check(status == 200, f"chat: {status} {body}")
    outputs.append(body["choices"][0]["message"]["content"])
    status, body = http(cluster, "/v1/chat/completions",
                        {"model": MODEL, "temperature": -1,
                         "messages": [{"role": MARKERS[7], "content": MARKERS[6]}]})
    check(status == 400, f"a negative temperature was not refused: {status} {body}")
    status, body = http(cluster, "/v1/completions", {"model": MODEL, "prompt": MARKERS[0]},
                        token=WRONG_TOKEN)
    check(status == 401, f"a wrong token was not refused: {status} {body}")

    texts = {"scheduler metrics": urllib.request.urlopen(
        f"http://127.0.0.1:{cluster.metrics_port}/metrics", timeout=10).read().decode()}
    for i in range(2):
        texts[f"worker{i} metrics"] = urllib.request.urlopen(
            f"http://127.0.0.1:{cluster.worker_metrics_ports[i]}/metrics",
            timeout=10).read().decode()
    for name, _, path in cluster.procs.started:
        texts[f"{name} log"] = open(path).read()
    secrets = MARKERS + [TOKEN, WRONG_TOKEN]
    # Generated text: each output's 12-character pieces (a log line would hold
    # at least one of them whole).
    for output in outputs:
        output = output.strip()
        check(len(output) >= 24, f"an output too short to look for: {output!r}")
        secrets += [output[i:i + 12] for i in range(0, len(output) - 12, 6)]
    leaks = [(name, secret) for name, text in texts.items() for secret in secrets
             if secret in text]
    check(not leaks, f"found in logs or metrics: {leaks[:10]}")
    print(f"privacy: {len(MARKERS)} markers, 2 tokens and {len(secrets) - len(MARKERS) - 2} "
          f"pieces of generated text absent from {len(texts)} logs and /metrics pages "
          f"({sum(len(t) for t in texts.values())} bytes)")


def main():
    bins = sys.argv[1:4]
    with tempfile.TemporaryDirectory(prefix="llorch-privacy-") as tmp:
        tokens = os.path.join(tmp, "tokens.txt")
        with open(tokens, "w") as f:
            f.write(TOKEN + "\n")
        token_file = os.path.join(tmp, "client-token.txt")
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        cluster = None
        try:
            cluster = Cluster(bins, tmp, scheduler_args=["--auth_tokens_file", tokens],
                              cli_args=["--token-file", token_file])
            run(cluster, token_file)
        except TestFailure as failure:
            print(f"FAIL: {failure}", file=sys.stderr)
            return 1
        finally:
            if cluster is not None:
                cluster.procs.stop_all()
    print("privacy: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
