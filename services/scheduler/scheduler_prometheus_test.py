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

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "support"))
from processes import Processes, TestFailure, check  # noqa: E402
from prometheus_server import PrometheusServer, check_exposition  # noqa: E402

REQUIRED = [
    "llorch_scheduler_requests_total", "llorch_scheduler_queue_depth",
    "llorch_scheduler_queue_wait_seconds", "llorch_scheduler_time_to_first_token_seconds",
    "llorch_scheduler_request_duration_seconds", "llorch_scheduler_workers",
    "llorch_scheduler_dispatches_total", "llorch_scheduler_retries_total",
    "llorch_scheduler_relayed_tokens_total", "llorch_scheduler_serving",
    "llorch_scheduler_build_info",
    # the process collector every llorch server exposes (common/metrics)
    "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds",
    "llorch_process_heap_bytes",
]


def run(scheduler_bin, worker_bin, cli_bin, model, tmp):
    model_name = os.path.splitext(os.path.basename(model))[0]
    procs = Processes(tmp)
    try:
        worker_ports = [
            procs.start([worker_bin, "--model", model, "--listen", "127.0.0.1:0",
                         "--metrics_port", "-1"],
                        f"worker{i}", "llorch-worker: serving", timeout=60)["grpc"]
            for i in range(2)]
        addresses = ",".join(f"127.0.0.1:{port}" for port in worker_ports)
        ports = procs.start(
            [scheduler_bin, "--listen", "127.0.0.1:0", "--workers", addresses,
             "--metrics_host", "127.0.0.1", "--metrics_port", "0"],
            "scheduler", "llorch-scheduler: serving", ports=("grpc", "metrics"), timeout=60)
        up = re.escape(f"up (model {model_name})")
        procs.wait_log("scheduler", rf"{up}[\s\S]*{up}", "second worker up line", timeout=60)
        grpc_port, metrics_port = ports["grpc"], ports["metrics"]
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

        check_exposition(metrics_port, REQUIRED)

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
            procs.process("worker0").kill()
            procs.process("worker0").wait()
            prom.query_scalar('llorch_scheduler_workers{state="down"}', 1)
            prom.query_scalar('llorch_scheduler_workers{state="up"}', 1)
            print(f"OK: Prometheus read {num_requests} requests, {completion_tokens} relayed "
                  "tokens, dispatches on both workers, and the killed worker as down")
    finally:
        codes = procs.stop_all(timeout=30)
    # worker0 was killed above; only the scheduler's exit code is checked.
    stuck = [name for name, code in codes.items() if isinstance(code, str)]
    check(not stuck, f"{stuck} did not exit on SIGTERM")
    check(codes["scheduler"] == 0, f"scheduler exited with {codes['scheduler']} on SIGTERM")


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
