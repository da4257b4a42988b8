#!/usr/bin/env python3
"""The worker's /metrics through promtool and a real Prometheus server.

Starts llorch-worker on a tiny model, runs generations through the
`llorch generate` client, checks the exposition with `promtool check
metrics`, then lets Prometheus scrape the worker and reads back through its
HTTP API the tokens and requests the clients counted themselves.

Usage: worker_prometheus_test.py LLORCH_WORKER LLORCH_CLI MODEL.gguf
"""
import json
import os
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "support"))
from processes import Processes, TestFailure, check  # noqa: E402
from prometheus_server import PrometheusServer, check_exposition  # noqa: E402

REQUIRED = [
    "llorch_worker_requests_total", "llorch_worker_prompt_tokens_total",
    "llorch_worker_generated_tokens_total", "llorch_worker_time_to_first_token_seconds",
    "llorch_worker_inter_token_latency_seconds", "llorch_worker_request_duration_seconds",
    "llorch_worker_active_jobs", "llorch_worker_waiting_jobs",
    "llorch_worker_kv_cache_used_bytes", "llorch_worker_kv_cache_capacity_bytes",
    "llorch_worker_batch_size", "llorch_worker_model_load_seconds", "llorch_worker_build_info",
    # the process collector every llorch server exposes (common/metrics)
    "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds",
    "llorch_process_heap_bytes",
]


def run(worker_bin, cli_bin, model, tmp):
    procs = Processes(tmp)
    try:
        ports = procs.start([worker_bin, "--model", model, "--listen", "127.0.0.1:0",
                             "--metrics_host", "127.0.0.1", "--metrics_port", "0"],
                            "worker", "llorch-worker: serving", ports=("grpc", "metrics"),
                            timeout=60)
        grpc_port, metrics_port = ports["grpc"], ports["metrics"]
        # Generations through the real client; count what the clients saw.
        completion_tokens = prompt_tokens = 0
        num_requests = 5
        for i in range(num_requests):
            out = subprocess.run(
                [cli_bin, "generate", "--worker", f"127.0.0.1:{grpc_port}", "--format", "jsonl",
                 "--prompt", f"Request number {i}:", "--max-tokens", str(5 + i),
                 "--ignore-eos", "--seed", str(i)],
                check=True, capture_output=True, text=True, timeout=60).stdout
            finished = json.loads(out.strip().splitlines()[-1])
            check(finished["event"] == "finished" and finished["reason"] == "length",
                  f"unexpected end: {finished}")
            completion_tokens += finished["completion_tokens"]
            prompt_tokens += finished["prompt_tokens"]

        check_exposition(metrics_port, REQUIRED)

        with PrometheusServer(tmp, [f"127.0.0.1:{metrics_port}"], job="llorch_worker") as prom:
            prom.wait_targets_up()
            got = prom.query_scalar("llorch_worker_generated_tokens_total", completion_tokens)
            prom.query_scalar("llorch_worker_prompt_tokens_total", prompt_tokens)
            prom.query_scalar('llorch_worker_requests_total{outcome="length"}', num_requests)
            prom.query_scalar("llorch_worker_time_to_first_token_seconds_count", num_requests)
            prom.query_scalar("llorch_worker_kv_cache_used_bytes", 0)
            prom.query_scalar('llorch_worker_build_info{architecture="llama"}', 1)
            # The served model name: the file name without ".gguf", not general.name.
            served = os.path.splitext(os.path.basename(model))[0]
            prom.query_scalar(f'llorch_worker_build_info{{model="{served}"}}', 1)
            print(f"OK: Prometheus read {int(got)} generated tokens, {prompt_tokens} prompt "
                  f"tokens and {num_requests} requests back from the worker")
    finally:
        code = procs.stop_all(timeout=30)["worker"]
    check(code == 0, f"worker exited with {code} on SIGTERM")


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    with tempfile.TemporaryDirectory(prefix="llorch-worker-prom-") as tmp:
        try:
            run(*sys.argv[1:], tmp)
        except (TestFailure, subprocess.CalledProcessError) as error:
            print(f"FAIL: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
