#!/usr/bin/env python3
"""llorch-scheduler through grpcurl, a generic gRPC client that knows the API
only from the scheduler's server reflection.

Starts llorch-worker on a tiny model and llorch-scheduler in front of it,
then with grpcurl: lists the services (llorch.v1.Scheduler, grpc.health.v1.
Health, grpc.reflection...), describes llorch.v1.Scheduler.Generate, calls
grpc.health.v1.Health/Check, and streams a Generate whose JSON output holds
a started event, the tokens and a finished event.

grpcurl: $LLORCH_GRPCURL (tools/env.sh; built by tools/setup.sh). Exits 77
(skipped) when it is missing.

Usage: grpcurl_test.py LLORCH_SCHEDULER LLORCH_WORKER MODEL.gguf
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

SKIPPED = 77
MODEL_NAME = "tiny-f32-gqa"  # the worker's default served name: the file's name


def grpcurl(grpcurl_bin, address, *args, data=None):
    argv = [grpcurl_bin, "-plaintext"]
    if data is not None:
        argv += ["-d", json.dumps(data)]
    argv += [address, *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    check(result.returncode == 0,
          f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


def json_stream(text):
    """The JSON objects grpcurl prints one after another."""
    decoder = json.JSONDecoder()
    objects, at = [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return objects
        obj, at = decoder.raw_decode(text, at)
        objects.append(obj)


def field(message, name):
    """A field by its proto name or its JSON (lowerCamelCase) name."""
    camel = re.sub(r"_(\w)", lambda m: m.group(1).upper(), name)
    return message.get(name, message.get(camel))


def run(scheduler_bin, worker_bin, model, grpcurl_bin, tmp):
    procs = Processes(tmp)
    try:
        worker_port = procs.start(
            [worker_bin, "--model", model, "--listen", "127.0.0.1:0", "--metrics_port", "-1",
             "--threads", "1"],
            "llorch-worker", "llorch-worker: serving", timeout=60)["grpc"]
        port = procs.start(
            [scheduler_bin, "--listen", "127.0.0.1:0", "--metrics_port", "-1",
             "--workers", f"127.0.0.1:{worker_port}"],
            "llorch-scheduler", "llorch-scheduler: serving", timeout=60)["grpc"]
        address = f"127.0.0.1:{port}"
        procs.wait_log("llorch-scheduler",
                       rf"worker 127\.0\.0\.1:{worker_port} up \(model {MODEL_NAME}\)",
                       "worker up line", timeout=15)

        services = grpcurl(grpcurl_bin, address, "list").split()
        for expected in ["llorch.v1.Scheduler", "grpc.health.v1.Health"]:
            check(expected in services, f"{expected} not listed: {services}")
        check(any(s.startswith("grpc.reflection.") for s in services),
              f"no reflection service listed: {services}")
        print(f"list: {' '.join(services)}")

        described = grpcurl(grpcurl_bin, address, "describe", "llorch.v1.Scheduler.Generate")
        signature = ("rpc Generate ( .llorch.v1.GenerateRequest ) returns "
                     "( stream .llorch.v1.GenerateResponse )")
        check(signature in described, f"describe gave:\n{described}")
        print(f"describe: {described.strip().splitlines()[-1]}")

        for body in [None, {"service": "llorch.v1.Scheduler"}]:
            health = json.loads(grpcurl(grpcurl_bin, address, "grpc.health.v1.Health/Check",
                                        data=body))
            check(health.get("status") == "SERVING", f"health {body}: {health}")
        print("health: SERVING")

        request = {"model": MODEL_NAME, "job_id": "grpcurl-1", "text": "Hello there",
                   "max_tokens": 5, "ignore_eos": True, "sampling": {"temperature": 0}}
        events = json_stream(grpcurl(grpcurl_bin, address, "llorch.v1.Scheduler/Generate",
                                     data=request))
        kinds = [next(iter(e)) for e in events]
        check(kinds == ["started"] + ["token"] * 5 + ["finished"],
              f"events: {kinds}\n{json.dumps(events, indent=1)}")
        started, finished = events[0]["started"], events[-1]["finished"]
        check(field(started, "job_id") == "grpcurl-1", f"started: {started}")
        check(started.get("model") == MODEL_NAME, f"started: {started}")
        check(started.get("worker", "").endswith(f":{worker_port}"), f"started: {started}")
        check(int(field(started, "prompt_tokens") or 0) > 0, f"started: {started}")
        indexes = [int(e["token"].get("index", 0)) for e in events[1:-1]]
        check(indexes == list(range(5)), f"token indexes: {indexes}")
        check(all("id" in e["token"] for e in events[1:-1]), f"tokens: {events[1:-1]}")
        check(finished.get("reason") == "FINISH_REASON_LENGTH", f"finished: {finished}")
        check(int(field(finished, "completion_tokens") or 0) == 5, f"finished: {finished}")
        text = "".join(e["token"].get("text", "") for e in events[1:-1])
        print(f"Generate: started on {started['worker']}, 5 tokens {text!r}, "
              f"finished {finished['reason']}")
    finally:
        codes = procs.stop_all(timeout=30)
    for name, code in codes.items():
        check(code == 0, f"{name} exited with {code} on SIGTERM")


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    grpcurl_bin = os.environ.get("LLORCH_GRPCURL", "")
    if not grpcurl_bin or not os.access(grpcurl_bin, os.X_OK):
        print(f"SKIP: grpcurl not found (LLORCH_GRPCURL={grpcurl_bin!r}; tools/setup.sh "
              "builds it)")
        return SKIPPED
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    with tempfile.TemporaryDirectory(prefix="llorch-scheduler-grpcurl-") as tmp:
        try:
            run(*sys.argv[1:], grpcurl_bin, tmp)
        except (TestFailure, subprocess.SubprocessError, ValueError) as error:
            print(f"FAIL: {error}", file=sys.stderr)
            return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
