#!/usr/bin/env python3
"""A real Prometheus server scrapes llorch_metrics_test_exporter on loopback.

Checks, through Prometheus' HTTP API, that the counter total it stored equals
what the exporter counted, that histogram _count/_sum match the observations,
that histogram_quantile() lands in the bucket holding the exact sample
quantile, and that a label value needing escaping arrives unchanged.

Usage: prometheus_scrape_test.py path/to/llorch_metrics_test_exporter
"""
import math
import os
import random
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "support"))
from prometheus_server import PrometheusServer, TestFailure, die_with_parent  # noqa: E402

# Must equal kLatencyBuckets in metrics_test_exporter.cc.
BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]


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

        prom = PrometheusServer(tmp, [target], job="llorch_metrics_test")
        prom.__enter__()
        processes.append(prom)
        prom.wait_targets_up()

        total = prom.query_scalar("llorch_test_events_total")
        check(total == count, f"counter via Prometheus {total} != {count} counted")
        n = prom.query_scalar("llorch_test_latency_seconds_count")
        check(n == len(observations), f"_count {n} != {len(observations)}")
        total_sum = prom.query_scalar("llorch_test_latency_seconds_sum")
        check(math.isclose(total_sum, math.fsum(observations), rel_tol=1e-9),
              f"_sum {total_sum} != {math.fsum(observations)}")

        # Prometheus interpolates inside the bucket where the cumulative count
        # reaches q*n; the exact sample quantile lies in that same bucket.
        ordered = sorted(observations)
        for q in (0.5, 0.9, 0.99):
            exact = ordered[math.ceil(q * len(ordered)) - 1]
            index = next(i for i, b in enumerate(BUCKETS) if exact <= b)
            lower = BUCKETS[index - 1] if index > 0 else 0.0
            estimate = prom.query_scalar(
                f"histogram_quantile({q}, llorch_test_latency_seconds_bucket)")
            check(lower <= estimate <= BUCKETS[index],
                  f"histogram_quantile({q}) = {estimate}, but the exact "
                  f"quantile {exact} is in bucket ({lower}, {BUCKETS[index]}]")
            print(f"histogram_quantile({q}) = {estimate:.4f} "
                  f"(exact {exact:.4f}, bucket ({lower}, {BUCKETS[index]}])")

        series = prom.api("/api/v1/series",
                     **{"match[]": "llorch_test_label_echo"})
        check(len(series) == 1 and series[0].get("value") == label_value,
              f"label value came back as {series!r}, sent {label_value!r}")
        print(f"OK: Prometheus read {int(total)} events, {int(n)} observations "
              f"and the escaped label value back from {target}")
    finally:
        for process in reversed(processes):
            if isinstance(process, PrometheusServer):
                process.__exit__(*sys.exc_info())
                continue
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
    # Turn SIGTERM into an exception so that the cleanup below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    with tempfile.TemporaryDirectory(prefix="llorch-prometheus-") as tmp:
        try:
            run(sys.argv[1], tmp)
        except TestFailure as error:
            print(f"FAIL: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
