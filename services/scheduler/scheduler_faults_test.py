#!/usr/bin/env python3
"""Faults under load, over real processes on loopback (issue 13, "Faults").

One llorch-scheduler in front of two llorch-workers on SmolLM2 (one thread
each); `llorch soak` is the load (its mix of prompts, sampling settings,
cancels, drops and deadlines; a request that hangs or ends without a clear
status is "lost"). Each scenario:

  kill9      ten times, at random moments, SIGKILL a random worker and start it
             again on its port: no request is lost, the only failures are
             UNAVAILABLE (a stream that had tokens) and retries happen; the
             killed worker is shown DOWN and, once back, gets jobs again;
  restart    SIGKILL the scheduler under load and start it again on its port:
             clients get UNAVAILABLE, never a hang; the workers (registered
             with --scheduler) register again and serving resumes; KV empties;
  flood      64 streams against --max_queue 4: RESOURCE_EXHAUSTED within a
             second, nothing lost, the scheduler's idle heap flat;
  sigstop    a hung worker (SIGSTOP): a request on it ends at its deadline,
             the worker is shown DOWN, waiting requests go to the other one;
             SIGCONT brings it back UP with its KV freed;
  unread     an HTTP client that asks for a long stream and never reads it is
             cut off: its job is cancelled and the scheduler's heap stays flat.

Usage: scheduler_faults_test.py LLORCH_SCHEDULER LLORCH_WORKER LLORCH_CLI SCENARIO...
"""
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "support"))
from processes import Processes, TestFailure, check  # noqa: E402

MODEL = "smollm2"


class Cluster:
    """A scheduler and two workers; workers restartable on their ports."""

    def __init__(self, bins, tmp, scheduler_args=(), register=False, cli_args=()):
        self.scheduler_bin, self.worker_bin, self.cli = bins
        self.procs = Processes(tmp)
        self.scheduler_args = list(scheduler_args)
        self.register = register
        self.cli_args = list(cli_args)  # e.g. --token-file, for `llorch workers`
        self.worker_ports = [0, 0]
        self.worker_metrics_ports = [0, 0]
        self.generation = {0: 0, 1: 0}
        self.scheduler_port = 0
        self.start_scheduler()
        for i in range(2):
            self.start_worker(i)
        if not register:
            self.stop_scheduler(signal.SIGKILL)  # again, now with --workers
            self.start_scheduler()
        self.wait_states({0: "UP", 1: "UP"}, 60)

    def start_scheduler(self):
        args = [self.scheduler_bin, "--listen", f"127.0.0.1:{self.scheduler_port}",
                "--metrics_host", "127.0.0.1", "--metrics_port", "0",
                "--http_listen", "127.0.0.1:0", *self.scheduler_args]
        if not self.register and all(self.worker_ports):
            args += ["--workers", ",".join(f"127.0.0.1:{p}" for p in self.worker_ports)]
        self.generation["scheduler"] = self.generation.get("scheduler", -1) + 1
        ports = self.procs.start(args, f"scheduler-{self.generation['scheduler']}", "serving",
                                 ports=("grpc", "metrics", "http"))
        self.scheduler_port, self.metrics_port, self.http_port = (
            ports["grpc"], ports["metrics"], ports["http"])

    def stop_scheduler(self, sig):
        process = self.procs.process(f"scheduler-{self.generation['scheduler']}")
        process.send_signal(sig)
        process.wait(timeout=30)

    def start_worker(self, i):
        self.generation[i] += 1
        args = [self.worker_bin, "--model", os.environ["LLORCH_DEFAULT_MODEL"],
                "--served_model_name", MODEL, "--threads", "1",
                "--listen", f"127.0.0.1:{self.worker_ports[i]}",
                "--metrics_host", "127.0.0.1", "--metrics_port", "0"]
        if self.register:
            args += ["--scheduler", f"127.0.0.1:{self.scheduler_port}",
                     "--heartbeat_interval", "500ms"]
        ports = self.procs.start(args, f"worker{i}-{self.generation[i]}", "serving",
                                 ports=("grpc", "metrics"))
        self.worker_ports[i] = ports["grpc"]
        self.worker_metrics_ports[i] = ports["metrics"]

    def worker_process(self, i):
        return self.procs.process(f"worker{i}-{self.generation[i]}")

    def address(self):
        return f"127.0.0.1:{self.scheduler_port}"

    def workers(self):
        result = subprocess.run([self.cli, "workers", "--scheduler", self.address(),
                                 "--format", "json", *self.cli_args],
                                capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            return None
        return {int(w["address"].rsplit(":", 1)[1]): w for w in json.loads(result.stdout)}

    def state(self, i, workers=None):
        workers = workers if workers is not None else self.workers()
        w = (workers or {}).get(self.worker_ports[i])
        return w.get("state", "").upper() if w else None

    def wait_states(self, want, timeout):
        deadline = time.monotonic() + timeout
        start = time.monotonic()
        while time.monotonic() < deadline:
            workers = self.workers()
            if workers and all(self.state(i, workers) == s for i, s in want.items()):
                return time.monotonic() - start
            time.sleep(0.05)
        raise TestFailure(f"workers not {want} within {timeout} s: {self.workers()}")

    def metric(self, name):
        text = urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def soak(self, *args):
        """Starts `llorch soak` in the background; .result() waits for it."""
        out = os.path.join(self.procs.tmp, f"soak-{time.monotonic_ns()}.out")
        argv = [self.cli, "soak", "--scheduler", self.address(), "--model", MODEL, *args]
        handle = open(out, "w")
        process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT)

        class Soak:
            def result(self_, timeout=600):
                process.wait(timeout=timeout)
                text = open(out).read()
                print(text)
                return process.returncode, text
        return Soak()


def summary_counts(text):
    found = re.search(r"allowed (\d+), failures (\d+), lost (\d+), KV left (\d+) B", text)
    check(found, f"no soak summary:\n{text}")
    return tuple(int(g) for g in found.groups())


def kill9(cluster):
    soak = cluster.soak("--requests", "100000", "--duration", "100", "--concurrency", "6",
                        "--checkpoint_every", "100000", "--allow_codes", "UNAVAILABLE",
                        "--max_tokens", "48")
    rng = random.Random(13)
    dispatched_again = 0
    for trial in range(10):
        time.sleep(rng.uniform(1.0, 3.0))
        i = rng.randrange(2)
        cluster.worker_process(i).send_signal(signal.SIGKILL)
        cluster.worker_process(i).wait(timeout=10)
        down = cluster.wait_states({i: "DOWN"}, 5)
        address = f"127.0.0.1:{cluster.worker_ports[i]}"
        series = f'llorch_scheduler_dispatches_total{{worker="{address}"}}'
        before = cluster.metric(series)
        cluster.start_worker(i)
        up = cluster.wait_states({i: "UP"}, 30)
        print(f"trial {trial + 1}: worker{i} killed, DOWN after {down:.2f} s, "
              f"back UP {up:.2f} s after its restart")
        # It gets jobs again: the soak's, or else (the load may be over) the
        # next one, since an idle worker is the least loaded.
        went = []
        for _ in range(8):
            if cluster.metric(series) > before:
                dispatched_again += 1
                break
            results = {}
            generate(cluster, "Hello", 2, 120, results, "probe")
            code, _, worker, stderr = results["probe"]
            check(code == 0, f"a request after the restart failed: {stderr}")
            went.append(worker)
        else:
            print(f"trial {trial + 1}: the restarted worker got none of {went}; workers: "
                  f"{cluster.workers()}")
    code, text = soak.result()
    allowed, failures, lost, kv_left = summary_counts(text)
    retries = cluster.metric("llorch_scheduler_retries_total")
    print(f"kill9: 10 trials, {allowed} UNAVAILABLE (streams with tokens), {retries:.0f} "
          f"retried before their first token, restarted workers dispatched again in "
          f"{dispatched_again} of 10 trials")
    check(code == 0 and (failures, lost, kv_left) == (0, 0, 0), f"soak failed:\n{text}")
    check(allowed + retries > 0, "no request was hit by 10 kills: the load is too light")
    check(dispatched_again == 10, "a restarted worker got no jobs")
    check(re.search(r"ok \d+", text), "no request finished normally")


def restart(cluster):
    soak = cluster.soak("--requests", "100000", "--duration", "30", "--concurrency", "6",
                        "--checkpoint_every", "100000", "--allow_codes", "UNAVAILABLE",
                        "--max_tokens", "48")
    time.sleep(6)
    cluster.stop_scheduler(signal.SIGKILL)
    down_at = time.monotonic()
    time.sleep(1)
    cluster.start_scheduler()  # the same port
    took = cluster.wait_states({0: "UP", 1: "UP"}, 20)
    print(f"restart: scheduler killed; restarted 1 s later; both workers registered and UP "
          f"{time.monotonic() - down_at:.2f} s after the kill ({took:.2f} s after the restart)")
    for w in cluster.workers().values():
        check(w.get("source") == "registered", f"not a registered worker: {w}")
    results = {}
    generate(cluster, "Hello", 4, 60, results, "after")
    check(results["after"][0] == 0, f"no answer after the restart: {results['after']}")
    code, text = soak.result()
    allowed, failures, lost, kv_left = summary_counts(text)
    check(code == 0 and (failures, lost, kv_left) == (0, 0, 0), f"soak failed:\n{text}")
    check(allowed > 0, "no client saw the scheduler go (UNAVAILABLE)")
    ok = int(re.search(r"\bok (\d+)", text).group(1))
    check(ok >= 10, f"only {ok} requests finished normally: serving did not resume")


def flood(cluster):
    watch = f"scheduler=http://127.0.0.1:{cluster.metrics_port}/metrics"
    code, text = cluster.soak("--requests", "640", "--concurrency", "64",
                              "--checkpoint_every", "64", "--allow_codes", "RESOURCE_EXHAUSTED",
                              "--max_tokens", "16", "--watch", watch).result()
    allowed, failures, lost, kv_left = summary_counts(text)
    check(code == 0 and (failures, lost, kv_left) == (0, 0, 0), f"soak failed:\n{text}")
    check(allowed > 100, f"too few refusals for 64 streams against 4 queue places: {allowed}")
    slowest = float(re.search(r"RESOURCE_EXHAUSTED \d+ \(slowest ([\d.]+) s\)", text).group(1))
    print(f"flood: {allowed} refused, the slowest refusal after {slowest:.3f} s")
    check(slowest < 1.0, f"a refusal took {slowest} s")


def generate(cluster, text, max_tokens, timeout, results, key):
    argv = [cluster.cli, "generate", "--scheduler", cluster.address(), "--model", MODEL,
            "--prompt", text, "--max-tokens", str(max_tokens), "--temperature", "0",
            "--ignore-eos", "--format", "jsonl", "--timeout", str(timeout)]
    start = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 60)
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    started = next((e for e in events if e["event"] == "started"), {})
    results[key] = (result.returncode, time.monotonic() - start, started.get("worker", ""),
                    result.stderr.strip())


HUNG_DEADLINE = 15  # seconds: the CLI's start, the job's prefill, then the hang


def sigstop(cluster):
    results = {}
    hung_job = threading.Thread(target=generate, args=(cluster, "Tell me a story.", 4000,
                                                       HUNG_DEADLINE, results, "hung"))
    hung_job.start()
    deadline = time.monotonic() + 60
    victim = None
    while victim is None and time.monotonic() < deadline:
        for i in range(2):
            w = cluster.workers().get(cluster.worker_ports[i], {})
            if w.get("active_jobs", 0) > 0:
                victim = i
        time.sleep(0.05)
    check(victim is not None, "the job never ran")
    other = 1 - victim
    cluster.worker_process(victim).send_signal(signal.SIGSTOP)
    try:
        down = cluster.wait_states({victim: "DOWN"}, 5)
        print(f"sigstop: worker{victim} stopped, shown DOWN after {down:.2f} s")
        waiting = [threading.Thread(target=generate, args=(cluster, f"Count to {n}:", 12, 120,
                                                          results, f"w{n}")) for n in range(4)]
        for t in waiting:
            t.start()
        for t in waiting:
            t.join()
        hung_job.join()
    finally:
        cluster.worker_process(victim).send_signal(signal.SIGCONT)
    code, took, _, stderr = results["hung"]
    print(f"sigstop: the job on the hung worker ended after {took:.1f} s: {stderr}")
    check(code != 0 and "DEADLINE_EXCEEDED" in stderr, f"not a deadline: {results['hung']}")
    # Hung until SIGCONT would be forever; the margin is the CLI's own start
    # (it loads libtorch) on a busy 2-core machine.
    check(took < HUNG_DEADLINE + 4, f"the deadline of {HUNG_DEADLINE} s fired after {took:.1f} s")
    for n in range(4):
        code, took, worker, stderr = results[f"w{n}"]
        check(code == 0, f"waiting request {n} failed: {stderr}")
        check(worker.endswith(f":{cluster.worker_ports[other]}"),
              f"waiting request {n} ran on {worker}, not the live worker")
    up = cluster.wait_states({victim: "UP"}, 10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        w = cluster.workers()[cluster.worker_ports[victim]]
        if w.get("active_jobs", 0) == 0 and int(w.get("kv_used_bytes", 0)) == 0:
            break
        time.sleep(0.1)
    check(w.get("active_jobs", 0) == 0 and int(w.get("kv_used_bytes", 0)) == 0,
          f"the resumed worker still holds the expired job: {w}")
    print(f"sigstop: SIGCONT -> UP after {up:.2f} s, its expired job gone, KV 0")


def unread(cluster):
    heap_before = cluster.metric("llorch_process_heap_bytes")
    body = json.dumps({"model": MODEL, "prompt": "Tell me a very long story.",
                       "max_tokens": 4000, "ignore_eos": True, "stream": True,
                       "temperature": 0, "logprobs": 5}).encode()
    # A small receive window, set before connecting, so that the server's
    # writes block soon after the client stops reading.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", cluster.http_port))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    start = time.monotonic()
    busy_seen = False
    while time.monotonic() - start < 120:
        busy = sum(w.get("active_jobs", 0) for w in cluster.workers().values())
        busy_seen = busy_seen or busy > 0
        if busy_seen and busy == 0:
            break
        time.sleep(0.2)
    took = time.monotonic() - start
    heap_after = cluster.metric("llorch_process_heap_bytes")
    sock.close()
    print(f"unread: job cancelled {took:.1f} s after the request while its client read nothing; "
          f"scheduler heap {heap_before / 2**20:.2f} -> {heap_after / 2**20:.2f} MiB")
    check(busy_seen and took < 120, "the unread stream's job was never cancelled")
    check(heap_after - heap_before < 2 * 2**20, "the scheduler's heap grew by 2 MiB or more")


SCENARIOS = {
    "kill9": (kill9, {}),
    "restart": (restart, {"register": True}),
    "flood": (flood, {"scheduler_args": ["--max_queue", "4", "--max_jobs_per_worker", "2"]}),
    "sigstop": (sigstop, {"scheduler_args": ["--max_jobs_per_worker", "1"]}),
    "unread": (unread, {}),
}


def main():
    bins, scenarios = sys.argv[1:4], sys.argv[4:]
    failed = []
    for name in scenarios:
        run, options = SCENARIOS[name]
        with tempfile.TemporaryDirectory(prefix=f"llorch-faults-{name}-") as tmp:
            cluster = None
            try:
                cluster = Cluster(bins, tmp, **options)
                run(cluster)
                codes = cluster.procs.stop_all()
                bad = {n: c for n, c in codes.items() if c not in (0, -9)}
                check(not bad, f"processes did not exit cleanly: {bad}")
                print(f"{name}: OK")
            except TestFailure as failure:
                print(f"{name}: FAIL: {failure}", file=sys.stderr)
                if cluster is not None:
                    for n, _, path in cluster.procs.started:
                        print(f"--- {n}:\n{open(path).read()[-2000:]}", file=sys.stderr)
                    cluster.procs.stop_all()
                failed.append(name)
    if failed:
        print(f"FAILED: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
