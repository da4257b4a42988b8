#!/usr/bin/env python3
"""The scheduler's /metrics through promtool and a real Prometheus server.

Starts two llorch-worker processes on a tiny model and llorch-scheduler in
front of them, runs generations through `llorch generate --scheduler` (and
one request for a model nobody serves), checks the exposition with `promtool
check metrics`, lets Prometheus scrape the scheduler and reads back through
its HTTP API what the clients counted themselves; then kills a worker and
reads the workers gauge move from up to down.

Usage: scheduler_prometheus_test.py LLORCH_SCHEDULER LLORCH_WORKER LLORCH_CLI MODEL.gguf
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "support"))
from prometheus_server import PrometheusServer, TestFailure, die_with_parent  # noqa: E402

REQUIRED = [
    "llorch_scheduler_requests_total", "llorch_scheduler_queue_depth",
    "llorch_scheduler_queue_wait_seconds", "llorch_scheduler_time_to_first_token_seconds",
    "llorch_scheduler_request_duration_seconds", "llorch_scheduler_workers",
    "llorch_scheduler_dispatches_total", "llorch_scheduler_retries_total",
    "llorch_scheduler_relayed_tokens_total", "llorch_scheduler_serving",
    "llorch_scheduler_build_info",
]


def check(condition, message):
    if not condition:
        raise TestFailure(message)


def start(argv, log_path, ready, ports):
    """Starts a process; returns it and the ports named by `ports` (regexes) once ready(log)."""
    log = open(log_path, "w")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                               preexec_fn=die_with_parent)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = open(log_path).read()
        found = [re.search(p, text) for p in ports]
        if all(found) and ready(text):
            return process, [int(m.group(1)) for m in found]
        if process.poll() is not None:
            raise TestFailure(f"{argv[0]} exited:\n{text}")
        time.sleep(0.05)
    raise TestFailure(f"{argv[0]} did not start:\n{open(log_path).read()}")


def stop(process):
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise TestFailure(f"pid {process.pid} did not exit on SIGTERM")


def run(scheduler_bin, worker_bin, cli_bin, model, tmp):
    model_name = os.path.splitext(os.path.basename(model))[0]
    workers = []
    for i in range(2):
        process, (port,) = start(
            [worker_bin, "--model", model, "--listen", "127.0.0.1:0", "--metrics_port", "-1"],
            f"{tmp}/worker{i}.log", lambda log: "llorch-worker: serving" in log, [r"grpc listening on port (\d+)"])
        workers.append((process, port))
    addresses = ",".join(f"127.0.0.1:{port}" for _, port in workers)
    scheduler, (grpc_port, metrics_port) = start(
        [scheduler_bin, "--listen", "127.0.0.1:0", "--workers", addresses,
         "--metrics_host", "127.0.0.1", "--metrics_port", "0"],
        f"{tmp}/scheduler.log", lambda log: log.count(f"up (model {model_name})") == 2,
        [r"grpc listening on port (\d+)", r"metrics listening on port (\d+)"])
    try:
        completion_tokens = 0
        num_requests = 6
        for i in range(num_requests):
            out = subprocess.run(
                [cli_bin, "generate", "--scheduler", f"127.0.0.1:{grpc_port}", "--model",
                 model_name, "--format", "jsonl", "--prompt", f"Request number {i}:",
                 "--max-tokens", str(4 + i), "--ignore-eos", "--seed", str(i)],
                check=True, capture_output=True, text=True, timeout=60).stdout
            finished = json.loads(out.strip().splitlines()[-1])
            check(finished["event"] == "finished" and finished["reason"] == "length",
                  f"unexpected end: {finished}")
            completion_tokens += finished["completion_tokens"]
        missing = subprocess.run(
            [cli_bin, "generate", "--scheduler", f"127.0.0.1:{grpc_port}", "--model", "no-such-model",
             "--prompt", "hi"], capture_output=True, text=True, timeout=60)
        check(missing.returncode != 0 and "NOT_FOUND" in missing.stderr,
              f"unknown model: expected NOT_FOUND, got {missing.returncode}: {missing.stderr}")

        exposition = urllib.request.urlopen(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        promtool = subprocess.run(["promtool", "check", "metrics"], input=exposition,
                                  capture_output=True, text=True)
        check(promtool.returncode == 0 and not (promtool.stdout + promtool.stderr).strip(),
              f"promtool check metrics complained:\n{promtool.stdout}{promtool.stderr}")
        for name in REQUIRED:
            check(f"# TYPE {name} " in exposition, f"{name} missing from /metrics")
        print(f"promtool check metrics: OK ({len(REQUIRED)} required families present)")

        with PrometheusServer(tmp, [f"127.0.0.1:{metrics_port}"], job="llorch_scheduler") as prom:
            prom.wait_targets_up()
            prom.query_scalar(
                f'llorch_scheduler_requests_total{{model="{model_name}",outcome="length"}}',
                num_requests)
            prom.query_scalar('llorch_scheduler_requests_total{model="",outcome="not_found"}', 1)
            prom.query_scalar("llorch_scheduler_relayed_tokens_total", completion_tokens)
            prom.query_scalar("sum(llorch_scheduler_dispatches_total)", num_requests)
            prom.query_scalar("llorch_scheduler_time_to_first_token_seconds_count", num_requests)
            prom.query_scalar('llorch_scheduler_workers{state="up"}', 2)
            prom.query_scalar("llorch_scheduler_serving", 1)
            # Both workers got work: placement spreads sequential requests too
            # (round robin among equally loaded workers).
            prom.query_scalar("count(llorch_scheduler_dispatches_total > 0)", 2)
            workers[0][0].kill()
            workers[0][0].wait()
            prom.query_scalar('llorch_scheduler_workers{state="down"}', 1)
            prom.query_scalar('llorch_scheduler_workers{state="up"}', 1)
            print(f"OK: Prometheus read {num_requests} requests, {completion_tokens} relayed "
                  "tokens, dispatches on both workers, and the killed worker as down")
    finally:
        code = stop(scheduler)
        for process, _ in workers:
            if process.poll() is None:
                stop(process)
    check(code == 0, f"scheduler exited with {code} on SIGTERM")


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    with tempfile.TemporaryDirectory(prefix="llorch-scheduler-prom-") as tmp:
        try:
            run(*sys.argv[1:], tmp)
        except (TestFailure, subprocess.CalledProcessError) as error:
            print(f"FAIL: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
