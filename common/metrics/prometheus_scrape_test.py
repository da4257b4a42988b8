#!/usr/bin/env python3
"""A real Prometheus server scrapes llorch_metrics_test_exporter on loopback.

Checks, through Prometheus' HTTP API, that the counter total it stored equals
what the exporter counted, that histogram _count/_sum match the observations,
that histogram_quantile() lands in the bucket holding the exact sample
quantile, and that a label value needing escaping arrives unchanged.

Usage: prometheus_scrape_test.py path/to/llorch_metrics_test_exporter
"""
import ctypes
import json
import math
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

DEADLINE_S = 45  # CTest's limit is 60 s.
# Must equal kLatencyBuckets in metrics_test_exporter.cc.
BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]


class TestFailure(Exception):
    pass


def die_with_parent():
    # Children get SIGTERM if this script is killed (e.g. by CTest's timeout),
    # so no Prometheus outlives the test.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api(base_url, path, **params):
    url = f"{base_url}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise TestFailure(f"{url}: {body}")
    return body["data"]


def wait_for(what, poll, prometheus):
    """Calls poll() until it returns a value other than None."""
    while time.monotonic() < start + DEADLINE_S:
        if prometheus.poll() is not None:
            raise TestFailure(f"prometheus exited with {prometheus.returncode} "
                              f"while waiting for {what}")
        try:
            result = poll()
            if result is not None:
                return result
        except OSError:
            pass  # Not listening yet.
        time.sleep(0.2)
    raise TestFailure(f"timed out waiting for {what}")


def query_scalar(base_url, expression, prometheus):
    def poll():
        data = api(base_url, "/api/v1/query", query=expression)
        return float(data["result"][0]["value"][1]) if data["result"] else None
    return wait_for(f"a result for {expression}", poll, prometheus)


def run(exporter, tmp):
    rng = random.Random(20240611)
    count = rng.randint(1000, 5000)
    # Log-normal latencies: a median near 0.14 s, the tail within 10 s.
    observations = [round(rng.lognormvariate(-2.0, 1.0), 6) for _ in range(500)]
    label_value = 'quote" backslash\\ newline\n unicode é 漢字 {},= #'
    processes = []
    try:
        server = subprocess.Popen(
            [exporter, "--serve", f"--count={count}",
             "--observe=" + ",".join(repr(v) for v in observations),
             f"--label_value={label_value}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            preexec_fn=die_with_parent)
        processes.append(server)
        line = server.stdout.readline().strip()
        if not line.startswith("port="):
            raise TestFailure(f"exporter printed {line!r}, not port=<port>")
        target = f"127.0.0.1:{int(line[5:])}"

        config = f"{tmp}/prometheus.yml"
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: llorch_metrics_test\n"
                    f"    static_configs:\n      - targets: ['{target}']\n")
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        log = open(f"{tmp}/prometheus.log", "w")
        prometheus = subprocess.Popen(
            [shutil.which("prometheus"), f"--config.file={config}",
             f"--storage.tsdb.path={tmp}/data",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        processes.append(prometheus)

        def target_up():
            targets = api(base_url, "/api/v1/targets")["activeTargets"]
            errors = [t.get("lastError") for t in targets if t.get("lastError")]
            if errors:
                raise TestFailure(f"scrape of {target} failed: {errors}")
            return True if any(t["health"] == "up" for t in targets) else None
        wait_for(f"target {target} to be up", target_up, prometheus)

        total = query_scalar(base_url, "llorch_test_events_total", prometheus)
        check(total == count, f"counter via Prometheus {total} != {count} counted")
        n = query_scalar(base_url, "llorch_test_latency_seconds_count", prometheus)
        check(n == len(observations), f"_count {n} != {len(observations)}")
        total_sum = query_scalar(base_url, "llorch_test_latency_seconds_sum",
                                 prometheus)
        check(math.isclose(total_sum, math.fsum(observations), rel_tol=1e-9),
              f"_sum {total_sum} != {math.fsum(observations)}")

        # Prometheus interpolates inside the bucket where the cumulative count
        # reaches q*n; the exact sample quantile lies in that same bucket.
        ordered = sorted(observations)
        for q in (0.5, 0.9, 0.99):
            exact = ordered[math.ceil(q * len(ordered)) - 1]
            index = next(i for i, b in enumerate(BUCKETS) if exact <= b)
            lower = BUCKETS[index - 1] if index > 0 else 0.0
            estimate = query_scalar(
                base_url,
                f"histogram_quantile({q}, llorch_test_latency_seconds_bucket)",
                prometheus)
            check(lower <= estimate <= BUCKETS[index],
                  f"histogram_quantile({q}) = {estimate}, but the exact "
                  f"quantile {exact} is in bucket ({lower}, {BUCKETS[index]}]")
            print(f"histogram_quantile({q}) = {estimate:.4f} "
                  f"(exact {exact:.4f}, bucket ({lower}, {BUCKETS[index]}])")

        series = api(base_url, "/api/v1/series",
                     **{"match[]": "llorch_test_label_echo"})
        check(len(series) == 1 and series[0].get("value") == label_value,
              f"label value came back as {series!r}, sent {label_value!r}")
        print(f"OK: Prometheus read {int(total)} events, {int(n)} observations "
              f"and the escaped label value back from {target}")
    except TestFailure:
        log_path = f"{tmp}/prometheus.log"
        try:
            with open(log_path) as f:
                print("--- prometheus log (tail) ---\n" + "".join(f.readlines()[-20:]),
                      file=sys.stderr)
        except OSError:
            pass
        raise
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def check(condition, message):
    if not condition:
        raise TestFailure(message)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    if shutil.which("prometheus") is None:
        print("FAIL: prometheus not found; install the Debian package "
              "'prometheus' (tools/setup.sh does)", file=sys.stderr)
        return 1
    # Turn SIGTERM into an exception so that the cleanup below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    with tempfile.TemporaryDirectory(prefix="llorch-prometheus-") as tmp:
        try:
            run(sys.argv[1], tmp)
        except TestFailure as error:
            print(f"FAIL: {error}", file=sys.stderr)
            return 1
    return 0


start = time.monotonic()
if __name__ == "__main__":
    sys.exit(main())
